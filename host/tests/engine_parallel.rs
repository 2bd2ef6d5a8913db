//! The parallel engine through the real binary: its Python-level test suite
//! (tests/python/parallel/), its absence elsewhere, and a clean exit with work still queued.

mod common;

use common::*;

#[test]
fn parallel_python_tests_pass_under_the_parallel_engine() {
    let scripts = python_test_scripts("tests/python/parallel");
    assert!(scripts.len() >= 6, "{scripts:?}");
    let mut failures = Vec::new();
    for script in &scripts {
        let out = run(pyhost().args(["--engine", "parallel"]).arg(script));
        let stderr = text(&out.stderr);
        if !out.status.success() || !stderr.contains("\nOK") {
            failures.push(format!("{}:\n{stderr}", script.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn importing_parallel_under_another_engine_names_the_parallel_engine() {
    let out = run(pyhost().args(["--engine", "stock", "-c", "import parallel"]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "ModuleNotFoundError: No module named 'parallel': it is provided by the 'parallel' engine"
        ),
        "{err}"
    );
}

#[test]
fn serving_under_another_engine_names_the_parallel_engine() {
    let out = run(pyhost().args(["--engine", "stock", "-m", "parallel.serve", "app:app"]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("No module named 'parallel': it is provided by the 'parallel' engine")
            && err.contains("pyhost --engine parallel"),
        "{err}"
    );
}

#[test]
fn code_that_does_not_use_a_pool_or_a_server_runs_with_no_thread_and_no_monitoring() {
    // share() and protect() included: the one thread is main's, no sys.monitoring tool is
    // set, until a pool or a server starts.
    let program = "import os, sys, parallel\n\
        T = parallel.share({'a': 1}); H = parallel.protect(0)\n\
        print(len(os.listdir('/proc/self/task')), [sys.monitoring.get_tool(i) for i in range(6)])\n\
        parallel.map(abs, [-1])\n\
        print(len(os.listdir('/proc/self/task')) > 1)";
    let out = run(pyhost().args(["--engine", "parallel", "-c", program]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1 [None, None, None, None, None, None]\nTrue\n");
}

#[test]
fn submitted_work_finishes_before_exit_and_the_exit_status_is_kept() {
    // Futures nobody waited for still run (as with concurrent.futures); the interpreter then
    // ends every worker's sub-interpreter before it finalizes.
    let program = r#"
import parallel, sys, time
futures = [parallel.submit(time.sleep, 0.05) for _ in range(6)]
futures[-1].add_done_callback(lambda f: print("last done", flush=True))
sys.exit(4)
"#;
    let out = run(pyhost().args(["--engine", "parallel", "-c", program]));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "last done\n");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn a_lambda_from_a_command_line_program_runs_in_the_workers() {
    // No script file: the function and the globals it names travel by value.
    let program = "import parallel\nbase = 10\nprint(parallel.map(lambda x: x + base, range(5)))";
    let out = run(pyhost().args(["--engine", "parallel", "-c", program]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "[10, 11, 12, 13, 14]\n");
}

#[test]
fn engines_lists_the_parallel_engine_for_cpython_3_13() {
    let out = run(pyhost().args(["engines"]));
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    let line = stdout.lines().find(|l| l.contains("parallel")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("cp313"), "{line}");
}

#[test]
fn engine_statistics_count_tasks_pools_and_workers() {
    let program = "import parallel, pyhost\nparallel.map(abs, range(10), chunksize=2)\nparallel.submit(abs, 1).result()\nprint(pyhost.engine_statistics())";
    let out = run(pyhost().args(["--engine", "parallel", "-c", program]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Five chunks and one submitted task; one default pool.
    assert!(stdout.contains("'tasks_done': 6.0"), "{stdout}");
    assert!(stdout.contains("'pools_started': 1.0"), "{stdout}");
}
