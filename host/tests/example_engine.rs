//! The example engine `examples/engines/calltrace` (a crate outside the workspace, as a third-party
//! engine is), built on demand into target/fixtures and driven through the real `pyhost` binary:
//! loaded by path and by name, listed by `pyhost engines`, its statistics in `pyhost bench` and in
//! `pyhost.engine_statistics()`, and its exit table's counts.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The calltrace example engine's library (built once per test process).
fn calltrace_engine() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        build_fixture(&workspace_root().join("examples/engines/calltrace"), "pyhost_engine_calltrace")
    })
    .clone()
}

/// A temporary folder holding the engine as `libpyhost_engine_calltrace.so`, for
/// `PYHOST_ENGINE_PATH`; returns the folder and the copy's canonical path.
fn engine_folder() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libpyhost_engine_calltrace.so");
    std::fs::copy(calltrace_engine(), &copy).unwrap();
    let copy = std::fs::canonicalize(copy).unwrap();
    (dir, copy)
}

/// A program with known call counts: `seven` 7 times, `fib(10)` 177 calls, `nap` 3 × 20 ms,
/// a generator function called once and resumed 4 times.
const PROGRAM: &str = r#"import time

def seven(x):
    return x + 1

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def nap():
    time.sleep(0.02)

def three():
    yield 1
    yield 2
    yield 3

for i in range(7):
    seven(i)
print(fib(10))
for _ in range(3):
    nap()
print(list(three()))
"#;

/// One row of the exit table: calls, total ms, function, file:line.
#[derive(Debug)]
struct Row {
    calls: u64,
    total_ms: f64,
    function: String,
    location: String,
}

/// The exit table's rows in `stderr` (after the `calls  total ms …` header).
fn table_rows(stderr: &str) -> Vec<Row> {
    let mut lines = stderr.lines().skip_while(|l| !l.starts_with("calltrace: "));
    assert!(lines.next().is_some(), "no calltrace summary line in:\n{stderr}");
    let header = lines.next().unwrap_or_default();
    assert!(
        header.contains("calls") && header.contains("total ms") && header.contains("function"),
        "{stderr}"
    );
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 4, "bad table row {line:?} in:\n{stderr}");
            Row {
                calls: fields[0].parse().unwrap_or_else(|_| panic!("bad calls in {line:?}")),
                total_ms: fields[1].parse().unwrap_or_else(|_| panic!("bad total in {line:?}")),
                function: fields[2..fields.len() - 1].join(" "),
                location: fields[fields.len() - 1].to_string(),
            }
        })
        .collect()
}

fn row<'a>(rows: &'a [Row], function: &str, location_suffix: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.function == function && r.location.ends_with(location_suffix))
        .unwrap_or_else(|| panic!("no row for {function} at …{location_suffix} in {rows:#?}"))
}

fn write_program(dir: &Path) -> PathBuf {
    let path = dir.join("prog.py");
    std::fs::write(&path, PROGRAM).unwrap();
    path
}

#[test]
fn engine_by_path_prints_a_table_with_exact_call_counts() {
    let dir = tempfile::tempdir().unwrap();
    let prog = write_program(dir.path());
    let out = run(pyhost().env("CALLTRACE_TOP", "1000").arg("--engine").arg(calltrace_engine()).arg(&prog));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The program's own output is untouched.
    assert_eq!(text(&out.stdout), "55\n[1, 2, 3]\n");
    let rows = table_rows(&stderr);
    assert_eq!(row(&rows, "seven", "prog.py:3").calls, 7, "{stderr}");
    assert_eq!(row(&rows, "fib", "prog.py:6").calls, 177, "{stderr}");
    assert_eq!(row(&rows, "<module>", "prog.py:1").calls, 1, "{stderr}");
    // Resuming a generator is not another call.
    assert_eq!(row(&rows, "three", "prog.py:12").calls, 1, "{stderr}");
    let nap = row(&rows, "nap", "prog.py:9");
    assert_eq!(nap.calls, 3, "{stderr}");
    assert!(nap.total_ms >= 55.0, "3 naps of 20 ms took {} ms in all? {stderr}", nap.total_ms);
    // The table is sorted by cumulative time; the program's module comes first.
    assert!(rows.windows(2).all(|w| w[0].total_ms >= w[1].total_ms), "{stderr}");
    assert_eq!(rows[0].function, "<module>", "{stderr}");
    let summary = stderr.lines().find(|l| l.starts_with("calltrace: ")).unwrap();
    assert!(summary.contains("generator/coroutine resumes"), "{summary}");
}

#[test]
fn calltrace_top_and_quiet_change_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let prog = write_program(dir.path());
    let out = run(pyhost().env("CALLTRACE_TOP", "2").arg("--engine").arg(calltrace_engine()).arg(&prog));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(table_rows(&text(&out.stderr)).len(), 2, "{}", text(&out.stderr));

    let out = run(pyhost().env("CALLTRACE_QUIET", "1").arg("--engine").arg(calltrace_engine()).arg(&prog));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "55\n[1, 2, 3]\n");
    assert!(!text(&out.stderr).contains("calltrace"), "{}", text(&out.stderr));

    let out = run(pyhost()
        .env("CALLTRACE_TOP", "many")
        .arg("--engine")
        .arg(calltrace_engine())
        .args(["-c", "print('must not run')"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("engine 'calltrace' failed in after_init: CALLTRACE_TOP must be a whole number"),
        "{err}"
    );
}

#[test]
fn installed_on_the_engine_path_it_loads_by_name_and_is_listed() {
    let (dir, copy) = engine_folder();
    let out = run(pyhost().env("PYHOST_ENGINE_PATH", dir.path()).env("CALLTRACE_QUIET", "1").args([
        "--engine",
        "calltrace",
        "-c",
        "import pyhost; print(pyhost.engine, pyhost.engine_version, pyhost.engine_python, pyhost.engine_path)",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("calltrace 0.1.0 cp312.cp313 {}", copy.display()));

    // By name, without CALLTRACE_QUIET: the table is printed.
    let out =
        run(pyhost().env("PYHOST_ENGINE_PATH", dir.path()).args(["--engine", "calltrace", "-c", "pass"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("calltrace: "), "{}", text(&out.stderr));

    let out = run(pyhost().env("PYHOST_ENGINE_PATH", dir.path()).arg("engines"));
    let listing = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some("calltrace"))
        .unwrap_or_else(|| panic!("calltrace not listed:\n{listing}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields, ["calltrace", "0.1.0", "cp312.cp313", &*copy.display().to_string()], "{listing}");

    let out = run(pyhost().env("PYHOST_ENGINE_PATH", dir.path()).args(["engines", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let engines: serde_json::Value = serde_json::from_slice(&out.stdout).expect("engines --json is JSON");
    let entry = engines
        .as_array()
        .expect("a list of engines")
        .iter()
        .find(|e| e["name"] == "calltrace")
        .unwrap_or_else(|| panic!("calltrace not in {engines:#}"));
    assert_eq!(entry["version"], "0.1.0");
    assert_eq!(entry["python"], "cp312.cp313");
    assert_eq!(entry["path"], copy.display().to_string());
    assert_eq!(entry["status"], "ok");
}

#[test]
fn bench_reports_the_engines_statistics() {
    let (dir, _copy) = engine_folder();
    // `busy` dominates the run time, so it is among the top functions whose counts are reported.
    let program = "def busy():\n    return sum(range(300000))\nfor _ in range(7):\n    busy()\n";
    let out = run(pyhost().env("PYHOST_ENGINE_PATH", dir.path()).args([
        "bench",
        "-e",
        "stock",
        "-e",
        "calltrace",
        "--runs",
        "3",
        "-c",
        program,
    ]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert!(stdout.contains("(calltrace 0.1.0 cp312.cp313)"), "{stdout}");
    let stats = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("engine statistics:"))
        .unwrap_or_else(|| panic!("no engine statistics line:\n{stdout}"));
    for expected in ["calls:busy=7", "calls:<module>=1", "calls_total=", "functions_seen="] {
        assert!(stats.contains(expected), "{expected} missing from {stats}");
    }
    // The stock engine reports no statistics: the one line is calltrace's.
    assert_eq!(stdout.matches("engine statistics:").count(), 1, "{stdout}");
}

#[test]
fn statistics_are_visible_from_python() {
    let program = r#"
import pyhost

def hot():
    return sum(range(200000))

for _ in range(7):
    hot()
before = pyhost.engine_statistics()
hot()
after = pyhost.engine_statistics()
assert all(isinstance(v, float) for v in after.values()), after
assert after["calls_total"] > before["calls_total"], (before, after)
assert after["functions_seen"] >= 2, after
counts = [k for k in after if k.startswith("calls:")]
assert 1 <= len(counts) <= 10, counts
print(before["calls:hot"], after["calls:hot"], after["calls:<module>"])
"#;
    let out = run(pyhost()
        .env("CALLTRACE_QUIET", "1")
        .arg("--engine")
        .arg(calltrace_engine())
        .args(["-c", program]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "7.0 8.0 1.0\n");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn example_crate_unit_tests_pass() {
    // The example is outside the workspace, so `cargo test --workspace` does not run its unit tests
    // (the counters in src/registry.rs): run them here, in the fixtures' target directory.
    let manifest = workspace_root().join("examples/engines/calltrace/Cargo.toml");
    let out = run(std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(workspace_root().join("target").join("fixtures")));
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("test result: ok."), "{}", text(&out.stdout));
}
