//! Shared helpers for the integration tests: run the real `pyhost` binary and the `python3.13`
//! it was built against, side by side, and build the fixture engines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub fn pyhost_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pyhost"))
}

/// The python3.13 the host was built against (the reference implementation).
pub fn python_bin() -> PathBuf {
    PathBuf::from(env!("PYHOST_PYTHON_EXECUTABLE"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// The Python test scripts (`test_*.py`) directly in `dir` below the workspace root, sorted.
pub fn python_test_scripts(dir: &str) -> Vec<PathBuf> {
    let dir = workspace_root().join(dir);
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("test_") && n.ends_with(".py"))
        })
        .collect();
    scripts.sort();
    scripts
}

/// A `pyhost` command with a clean pyhost environment.
pub fn pyhost() -> Command {
    let mut cmd = Command::new(pyhost_bin());
    clean_env(&mut cmd);
    cmd
}

pub fn python() -> Command {
    let mut cmd = Command::new(python_bin());
    clean_env(&mut cmd);
    cmd
}

fn clean_env(cmd: &mut Command) {
    for var in ["PYHOST_ENGINE", "PYHOST_ENGINE_PATH", "PYHOST_LOG", "RUST_BACKTRACE", "PYTHONPATH"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"))
}

pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    child.stdin.take().expect("piped").write_all(input.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Replaces the two executables' paths and names with `<exe>`, so outputs compare.
pub fn normalize(output: &str) -> String {
    let pyhost = pyhost_bin();
    let python = python_bin();
    let mut out = output.to_string();
    for path in [&pyhost, &python] {
        out = out.replace(&*path.display().to_string(), "<exe>");
    }
    for name in [pyhost.file_name(), python.file_name()].into_iter().flatten() {
        out = out.replace(&*name.to_string_lossy(), "<exe>");
    }
    out
}

/// Builds a fixture engine crate (outside the workspace) and returns its library path.
pub fn build_fixture(manifest_dir: &Path, lib_name: &str) -> PathBuf {
    let target_dir = workspace_root().join("target").join("fixtures");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(manifest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building fixture {} failed", manifest_dir.display());
    let lib = target_dir.join("debug").join(format!("lib{lib_name}.so"));
    assert!(lib.is_file(), "fixture library {} missing", lib.display());
    lib
}

/// The misbehaving test engine (tests/fixtures/misbehaving-engine).
pub fn misbehaving_engine() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        build_fixture(
            &workspace_root().join("tests/fixtures/misbehaving-engine"),
            "pyhost_engine_misbehaving",
        )
    })
    .clone()
}

/// The stock engine as cargo built it next to the binary.
pub fn stock_engine() -> PathBuf {
    pyhost_bin().parent().expect("bin dir").join("libpyhost_engine_stock.so")
}

/// A venv made by pyhost itself (`pyhost -m venv`), with the real pyperf from PyPI installed:
/// its `bin/python` is pyhost. Created once under target/ and shared by tests (file lock).
pub fn pyperf_venv() -> PathBuf {
    pyhost_venv("pyperf", &["pyperf==2.11.0"], "import pyperf, pyhost")
}

/// A venv made by pyhost with Flask, Bottle and Django from PyPI (`bin/python` is pyhost).
pub fn wsgi_apps_venv() -> PathBuf {
    pyhost_venv(
        "wsgi-apps",
        &["flask==3.1.3", "bottle==0.13.5", "django==6.1.3"],
        "import flask, bottle, django",
    )
}

/// A venv with Dask's scheduler and workers (tests/python/cluster/).
pub fn dask_venv() -> PathBuf {
    pyhost_venv("dask", &["dask==2026.11.0", "distributed==2026.11.0"], "import distributed")
}

/// Runs `cmd` to its end, or kills it after `limit` (the output then says so).
pub fn run_with_limit(cmd: &mut Command, limit: std::time::Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    // Drained on threads, so that a full pipe cannot stall the child.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = stderr.join().expect("stderr");
    if !status.success() && std::time::Instant::now() > deadline {
        stderr.extend_from_slice(format!("\n(killed after {limit:?})").as_bytes());
    }
    Output { status, stdout: stdout.join().expect("stdout"), stderr }
}

/// A venv with requests and redis-py (tests/python/stackless_clients/).
pub fn stackless_clients_venv() -> PathBuf {
    pyhost_venv("stackless-clients", &["requests==2.34.2", "redis==8.2.0"], "import requests, redis")
}

/// Whether the program `name` is on PATH; false (the test skips) unless PYHOST_TEST_REQUIRE
/// names it, which makes its absence a failure (CI installs it).
pub fn tool_available(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()));
    let required =
        std::env::var("PYHOST_TEST_REQUIRE").is_ok_and(|names| names.split_whitespace().any(|n| n == name));
    assert!(found || !required, "{name} is required (PYHOST_TEST_REQUIRE) and not installed");
    if !found {
        eprintln!("skipped: no {name} on PATH");
    }
    found
}

/// `target/test-venv-NAME`, made by `pyhost -m venv` with `packages` installed from PyPI unless
/// `check` already runs there; created once and shared by tests (file lock). Returns its python.
fn pyhost_venv(name: &str, packages: &[&str], check: &str) -> PathBuf {
    let venv = workspace_root().join("target").join(format!("test-venv-{name}"));
    let lock_path = workspace_root().join("target").join(format!("test-venv-{name}.lock"));
    let lock = std::fs::File::create(&lock_path).expect("create lock file");
    lock.lock().expect("lock the test venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let _ = std::fs::remove_dir_all(&venv);
        let out = run(pyhost().arg("-m").arg("venv").arg(&venv));
        assert!(out.status.success(), "pyhost -m venv failed: {}", text(&out.stderr));
        let out = run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(packages));
        assert!(out.status.success(), "installing {packages:?} from PyPI failed: {}", text(&out.stderr));
    }
    python
}
