//! `pyhost bench` through the real binary: a clean run, its files, and the errors that must
//! stop it before it prints a table of bogus numbers.

mod common;

use common::*;

fn bench() -> std::process::Command {
    let mut cmd = pyhost();
    cmd.arg("bench");
    cmd
}

/// Whether the output holds a results table (it must not after an error).
fn has_table(stdout: &str) -> bool {
    stdout.contains("mean ") || stdout.contains("Against ")
}

#[test]
fn a_vs_a_run_prints_summaries_and_a_verdict_and_writes_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bench()
        .args(["-e", "stock", "-e", "stock", "--runs", "4", "--warmup", "1", "--seed", "7"])
        .arg("--json")
        .arg(dir.path().join("r.json"))
        .arg("--markdown")
        .arg(dir.path().join("r.md"))
        .arg("--plot")
        .arg(dir.path().join("r.svg"))
        .args(["-c", "sum(range(10000))"]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert!(stdout.contains("4 runs per engine after 1 warm-up run(s)"), "{stdout}");
    assert!(stdout.contains("stock#2"), "{stdout}");
    assert!(stdout.contains("Against stock (baseline)"), "{stdout}");
    // Four pairs can never reach p < 0.05 with the signed-rank test: the verdict says so
    // instead of claiming "no significant difference", and says how many runs would do.
    let inconclusive =
        "inconclusive: 4 runs cannot show any difference with the paired Wilcoxon signed-rank test; about";
    assert!(stdout.contains(inconclusive), "{stdout}");
    for file in ["r.json", "r-stock.json", "r-stock_2.json", "r.md", "r.svg"] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    let md = std::fs::read_to_string(dir.path().join("r.md")).unwrap();
    assert!(md.contains("| `stock#2` |"), "{md}");
    assert!(md.contains(inconclusive), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let other = &json["benchmarks"][1]["metadata"];
    assert!(other["pyhost_verdict"].as_str().unwrap().starts_with(inconclusive), "{other}");
    assert!(other["pyhost_runs_for_threshold"].as_u64().unwrap() >= 6, "{other}");
    assert!(json["benchmarks"][0]["metadata"].get("pyhost_verdict").is_none(), "the baseline has no verdict");
}

#[test]
fn unknown_engine_is_a_clear_error_before_any_run() {
    let out = run(bench().args(["-e", "stock", "-e", "nosuch", "--runs", "3", "-c", "pass"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no engine named 'nosuch'"), "{}", text(&out.stderr));
    assert!(!has_table(&text(&out.stdout)));
}

#[test]
fn a_program_that_exits_non_zero_stops_the_benchmark_with_its_stderr() {
    let out = run(bench().args([
        "-e",
        "stock",
        "--runs",
        "3",
        "-c",
        "import sys; print('bad input', file=sys.stderr); sys.exit(3)",
    ]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("engine 'stock', warm-up run 1: the program exited with status 3"), "{err}");
    assert!(err.contains("bad input"), "{err}");
    assert!(!has_table(&text(&out.stdout)));
}

#[test]
fn a_crashing_program_stops_the_benchmark() {
    let out =
        run(bench().args(["-e", "stock", "--runs", "3", "--warmup", "0", "-c", "import os; os.abort()"]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("measured run 1: the program was killed by signal 6"), "{err}");
    assert!(!has_table(&text(&out.stdout)));
}

#[test]
fn a_run_over_the_timeout_is_killed_and_reported() {
    let out = run(bench().args([
        "-e",
        "stock",
        "--runs",
        "2",
        "--timeout",
        "0.5",
        "-c",
        "import time; time.sleep(30)",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("longer than the --timeout of 0.5 s"), "{}", text(&out.stderr));
}

#[test]
fn bad_options_are_usage_errors() {
    for args in [
        &["-e", "stock", "--runs", "1", "-c", "pass"][..],
        &["-e", "stock", "--alpha", "2", "-c", "pass"],
        &["-e", "stock", "--timeout", "-1", "-c", "pass"],
        &["-e", "stock"],
        &["-c", "pass"],
        &["-e", "stock", "no_such_file.py"],
        &["-e", "stock", "--affinity", "0-", "-c", "pass"],
        &["-e", "stock", "--affinity", "4000", "-c", "pass"],
        &["-e", "stock", "--threshold", "0", "-c", "pass"],
        &["-e", "stock", "--threshold", "two", "-c", "pass"],
        &["-e", "stock", "--metric", "instructions", "--hash-seed", "-3", "-c", "pass"],
        &["-e", "stock", "--metric", "instructions", "--counter", "abacus", "-c", "pass"],
        &["-e", "stock", "--precision", "0%", "-c", "pass"],
        &["-e", "stock", "--precision", "2%", "--max-runs", "1", "-c", "pass"],
        &["-e", "stock", "--precision", "2%", "--runs", "3", "-c", "pass"],
        &["-e", "stock", "--precision", "2%", "--max-time", "0", "-c", "pass"],
    ] {
        let out = run(bench().args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("error"), "{args:?}");
    }
}

#[test]
fn precision_runs_until_the_interval_is_narrow_enough_or_says_why_not() {
    // A wide target is reached after the first few runs.
    let out = run(bench().args([
        "-e",
        "stock",
        "-e",
        "stock",
        "--precision",
        "90%",
        "--warmup",
        "0",
        "-c",
        "pass",
    ]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("stopped when the widest 95% interval reached ±"), "{stdout}");
    // An impossible one stops at --max-runs, and says so.
    let dir = tempfile::tempdir().unwrap();
    let out = run(bench()
        .args(["-e", "stock", "--precision", "0.0001%", "--max-runs", "3", "--warmup", "0"])
        .arg("--markdown")
        .arg(dir.path().join("p.md"))
        .args(["-c", "pass"]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("3 runs per engine"), "{stdout}");
    assert!(stdout.contains("stopped at --max-runs with the widest 95% interval at ±"), "{stdout}");
    assert!(stdout.contains("short of --precision"), "{stdout}");
    let md = std::fs::read_to_string(dir.path().join("p.md")).unwrap();
    assert!(md.contains("Stopped at --max-runs"), "{md}");
}

#[test]
fn cpu_metric_compares_cpu_seconds() {
    let out = run(bench().args([
        "-e",
        "stock",
        "-e",
        "stock",
        "--runs",
        "6",
        "--metric",
        "cpu",
        "-c",
        "sum(range(10**5))",
    ]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("user + system CPU time of the process tree"), "{stdout}");
    assert!(stdout.contains("ms") && stdout.contains("Against stock (baseline)"), "{stdout}");
}

/// The ratio printed after "ratio " on the line of `label` in the comparison section.
fn printed_ratio(stdout: &str, label: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(label) && l.contains(" ratio "))
        .unwrap_or_else(|| panic!("no comparison line for {label}: {stdout}"));
    let after = line.split(" ratio ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn instruction_counts_repeat_exactly_and_see_a_two_percent_loop() {
    if !tool_available("valgrind") {
        return;
    }
    let counted = ["--runs", "3", "--warmup", "0", "--metric", "instructions", "--counter", "valgrind"];
    let out = run(bench().args(["-e", "stock", "-e", "stock"]).args(counted).args(["-c", "pass"]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("instructions per process (Valgrind"), "{stdout}");
    assert!(stdout.contains("→ no significant difference (differences of 0.0"), "{stdout}");
    assert!(!stdout.contains("Warning"), "counts repeat: nothing to warn about: {stdout}");
    let ratio = printed_ratio(&stdout, "stock#2");
    assert!((ratio - 1.0).abs() < 1e-3, "A-vs-A ratio {ratio}: {stdout}");

    // The fixture engine runs a fixed loop of ~1M instructions (2% of a start-up) first.
    let out = run(bench()
        .args(["-e", "stock", "-e"])
        .arg(misbehaving_engine())
        .args(counted)
        .args(["-c", "pass"])
        .env("FIXTURE_ENGINE_MODE", "loop-before_run:12000"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("→ significantly slower"), "{stdout}");
    let ratio = printed_ratio(&stdout, "misbehaving");
    assert!(ratio > 1.005 && ratio < 1.1, "{ratio}: {stdout}");
}

#[test]
fn instructions_without_valgrind_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let out = run(bench()
        .args([
            "-e",
            "stock",
            "--runs",
            "2",
            "--metric",
            "instructions",
            "--counter",
            "valgrind",
            "-c",
            "pass",
        ])
        .env("PATH", empty.path()));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("or Valgrind, which is not on PATH"), "{stderr}");
    assert!(stderr.contains("apt-get install valgrind"), "{stderr}");
    assert!(!has_table(&text(&out.stdout)));
}

#[test]
fn the_hardware_counter_counts_where_there_is_one_and_says_so_where_not() {
    let out = run(bench().args([
        "-e",
        "stock",
        "-e",
        "stock",
        "--runs",
        "3",
        "--warmup",
        "0",
        "--metric",
        "instructions",
        "--counter",
        "hardware",
        "-c",
        "pass",
    ]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if out.status.success() {
        assert!(stdout.contains("instructions per process (the CPU's instruction counter)"), "{stdout}");
        assert!((printed_ratio(&stdout, "stock#2") - 1.0).abs() < 0.01, "{stdout}");
    } else {
        // This machine has no counter (virtual machines often have none).
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("instruction counter cannot be opened"), "{stderr}");
        assert!(stderr.contains("use --counter valgrind"), "{stderr}");
    }
}

#[test]
fn in_process_metric_uses_pyhost_bench_values() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("prog.py");
    std::fs::write(&program, "import pyhost\npyhost.bench(lambda: sum(range(1000)), loops=200, repeat=3)\n")
        .unwrap();
    let out = run(bench().args(["-e", "stock", "--runs", "3", "--metric", "in-process"]).arg(&program));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("seconds per call reported by pyhost.bench()"), "{stdout}");
    assert!(stdout.contains("n=9"), "3 runs × 3 values: {stdout}");
    assert!(stdout.contains("µs"), "{stdout}");
    // A program that never calls pyhost.bench() cannot be measured in-process.
    let out = run(bench().args(["-e", "stock", "--runs", "2", "--metric", "in-process", "-c", "pass"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("reported no values through pyhost.bench()"));
}

#[test]
fn child_processes_of_the_benchmarked_program_report_nothing() {
    // The program starts a child pyhost that calls pyhost.bench() too: its 5 values must not
    // reach the report (3 runs x 3 values of the program itself), and the variable naming the
    // report file is gone from the program's environment.
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("prog.py");
    std::fs::write(
        &program,
        "import os, subprocess, sys, pyhost\n\
         assert 'PYHOST_BENCH_OUTPUT' not in os.environ\n\
         subprocess.run([sys.executable, '-c', 'import pyhost; pyhost.bench(int, loops=1, repeat=5)'], check=True)\n\
         pyhost.bench(lambda: sum(range(1000)), loops=200, repeat=3)\n",
    )
    .unwrap();
    let out = run(bench().args(["-e", "stock", "--runs", "3", "--metric", "in-process"]).arg(&program));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("n=9"), "3 runs × 3 values, none from the child: {stdout}");
}

#[test]
fn engine_statistics_are_shown_beside_the_timings() {
    let out = run(bench().arg("-e").arg(misbehaving_engine()).args(["--runs", "2", "-c", "pass"]));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("engine statistics: hooks_called=4"), "{stdout}");
}

#[test]
fn suite_runs_every_program_and_prints_ratios_with_a_geometric_mean() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.py"), "sum(range(1000))\n").unwrap();
    std::fs::write(dir.path().join("b.py"), "'-'.join(map(str, range(1000)))\n").unwrap();
    std::fs::write(dir.path().join("_helper.py"), "raise SystemExit('helpers are not programs')\n").unwrap();
    let out = run(bench()
        .args(["-e", "stock", "-e", "stock", "--runs", "3", "--warmup", "0", "--suite"])
        .arg(dir.path()));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("Ratio to stock"), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("a ") || l.trim_start().starts_with("b "))
        .collect();
    assert!(rows.len() >= 2, "{stdout}");
    assert!(stdout.contains("geometric mean"), "{stdout}");
}

#[test]
fn json_output_opens_with_the_real_pyperf() {
    let python = pyperf_venv();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = run(bench()
        .args(["-e", "stock", "-e", "stock", "--runs", "5"])
        .arg("--json")
        .arg(&json)
        .args(["-c", "pass"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    for command in [&["stats"][..], &["show"], &["check"], &["dump"], &["hist"]] {
        let out = run(std::process::Command::new(&python).arg("-m").arg("pyperf").args(command).arg(&json));
        assert!(out.status.success(), "pyperf {command:?}: {}", text(&out.stderr));
    }
    let out = run(std::process::Command::new(&python).args(["-m", "pyperf", "show", "-q"]).arg(&json));
    let shown = text(&out.stdout);
    assert!(shown.contains("-c [stock]: Mean +- std dev") && shown.contains("-c [stock#2]"), "{shown}");
    let out = run(std::process::Command::new(&python)
        .args(["-m", "pyperf", "compare_to", "-v"])
        .arg(dir.path().join("r-stock.json"))
        .arg(dir.path().join("r-stock_2.json")));
    assert!(out.status.success(), "compare_to: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("[r-stock]"), "{}", text(&out.stdout));
    let out = run(std::process::Command::new(&python)
        .args(["-c", "import pyperf, sys; s = pyperf.BenchmarkSuite.load(sys.argv[1]); b = s.get_benchmarks()[0]; print(b.get_metadata()['engine'], b.get_nvalue())"])
        .arg(&json));
    assert_eq!(text(&out.stdout).trim(), "stock 5", "{}", text(&out.stderr));
}

#[test]
fn a_pyperf_runner_benchmark_runs_unmodified_under_pyhost() {
    let python = pyperf_venv();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bm.py");
    std::fs::write(
        &script,
        "import pyperf\nrunner = pyperf.Runner()\nrunner.timeit('sum', stmt='sum(range(100))')\n",
    )
    .unwrap();
    let json = dir.path().join("out.json");
    let out = run(std::process::Command::new(&python)
        .env_remove("PYHOST_ENGINE")
        .arg(&script)
        .args(["--fast", "--processes", "2", "--values", "2", "-o"])
        .arg(&json));
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("sum: Mean +- std dev"), "{}", text(&out.stdout));
    // The workers pyperf spawned through sys.executable ran under pyhost.
    let out = run(std::process::Command::new(&python)
        .args(["-c", "import pyperf, sys; b = pyperf.Benchmark.load(sys.argv[1]); print(b.get_metadata()['python_executable'], b.get_nrun())"])
        .arg(&json));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(&python.display().to_string()), "{stdout}");
    let runs: usize = stdout.split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(runs >= 2, "pyperf recorded runs from its worker processes: {stdout}");
}
