//! The stackless engine through the real binary: its Python-level test suite
//! (tests/python/stackless/, written from Stackless's documentation) and its absence elsewhere.

mod common;

use common::*;

#[test]
fn stackless_python_tests_pass_under_the_stackless_engine() {
    let scripts = python_test_scripts("tests/python/stackless");
    assert!(scripts.len() >= 7, "{scripts:?}");
    let mut failures = Vec::new();
    for script in &scripts {
        let out = run(pyhost().args(["--engine", "stackless"]).arg(script));
        let stderr = text(&out.stderr);
        if !out.status.success() || !stderr.contains("\nOK") {
            failures.push(format!("{}:\n{stderr}", script.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn importing_stackless_under_another_engine_names_the_stackless_engine() {
    let out = run(pyhost().args(["--engine", "stock", "-c", "import stackless"]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "ModuleNotFoundError: No module named 'stackless': it is provided by the 'stackless' engine"
        ),
        "{err}"
    );
}

#[test]
fn tasklets_left_at_exit_are_killed_and_the_exit_status_is_kept() {
    let program = r#"
import stackless, sys
ch = stackless.channel()
def blocked():
    try:
        ch.receive()
    finally:
        print("finally ran", flush=True)
stackless.tasklet(blocked)()
stackless.run()
import atexit
atexit.register(lambda: print("program atexit", flush=True))
sys.exit(3)
"#;
    let out = run(pyhost().args(["--engine", "stackless", "-c", program]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // As in Stackless: after the program's own atexit functions.
    assert_eq!(text(&out.stdout), "program atexit\nfinally ran\n");
}

#[test]
fn engine_statistics_count_switches() {
    let program = "import stackless, pyhost\nfor _ in range(10):\n    stackless.tasklet(lambda: None)()\nstackless.run()\nprint(pyhost.engine_statistics())";
    let out = run(pyhost().args(["--engine", "stackless", "-c", program]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("'tasklets_started': 10.0"), "{stdout}");
    assert!(stdout.contains("'tasklets_leaked': 0.0"), "{stdout}");
}

#[test]
fn memcheck_finds_nothing_wrong_with_copied_tasklet_stacks() {
    // A ring of 100 tasklets on 8 shared stacks copies stack bytes at nearly every switch;
    // under memcheck that must be neither a stack switch taken for an overflow nor an invalid
    // read or write (the copies tell Valgrind what they do: engines/stackless/src/valgrind.rs).
    if !tool_available("valgrind") {
        return;
    }
    let program = workspace_root().join("tests/python/valgrind/stackless_ring.py");
    let out = run(std::process::Command::new("valgrind")
        .args(["--tool=memcheck", "--error-exitcode=99", "--leak-check=no"])
        .arg(pyhost_bin())
        .args(["--engine", "stackless"])
        .arg(&program));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("ring ok") && stdout.contains("pipe ok"), "{stdout}");
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    assert!(!stderr.contains("switching stacks"), "{stderr}");
}
