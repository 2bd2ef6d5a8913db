//! `pip install pyhost`: the wheel built from this repository with `pythonX.Y -m pip wheel .`
//! (hatchling and tools/wheel/hatch_build.py), installed into a fresh venv made by that Python
//! (not by pyhost), runs there with no environment variables: its engines, a program under each
//! (with multiprocessing's spawn, which starts children through sys.executable), a package pip
//! installs into the venv, one clear line for a Python without its shared library, and
//! `pyhost new-engine` from the install (an abi3 engine, built and loaded).

mod common;

use common::{run_with_limit, text, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A cargo release build of the host and the three engines, from nothing, takes ~4 minutes here.
const BUILD_LIMIT: Duration = Duration::from_secs(1200);
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The CPython `minor` version (3.12 or 3.13) that tools/find-python3XX finds, if any.
fn find_python(minor: u8) -> Option<PathBuf> {
    let finder = workspace_root().join(format!("tools/find-python3{minor}"));
    let out = Command::new(finder).args(["-c", "import sys; print(sys.executable)"]).output().ok()?;
    out.status.success().then(|| PathBuf::from(text(&out.stdout).trim()))
}

/// A command with none of pyhost's or Python's variables: the install must find everything.
fn bare(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().env("PATH", "/usr/bin:/bin").env("HOME", std::env::var_os("HOME").unwrap_or_default());
    cmd
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Builds the wheel for `python` into `dir` and returns its path.
fn build_wheel(python: &Path, dir: &Path) -> PathBuf {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w"])
        .arg(dir)
        .arg(workspace_root())
        .current_dir(workspace_root())
        .env_remove("PYO3_PYTHON")
        .env_remove("CARGO_TARGET_DIR");
    ok("pip wheel .", run_with_limit(&mut cmd, BUILD_LIMIT));
    let wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "{wheels:?}");
    wheels[0].clone()
}

/// A venv made by `python` itself, with `wheel` installed (offline: the wheel has no
/// dependencies).
fn venv_with(python: &Path, root: &Path, wheel: &Path) -> PathBuf {
    let venv = root.join("venv");
    ok("python -m venv", run_with_limit(Command::new(python).args(["-m", "venv"]).arg(&venv), RUN_LIMIT));
    let mut pip = bare(&venv.join("bin/python"));
    pip.args(["-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check", "-q"])
        .arg(wheel);
    ok("pip install WHEEL", run_with_limit(&mut pip, RUN_LIMIT));
    venv
}

const SPAWN_PROGRAM: &str = r#"
import multiprocessing, sys
import pyhost

def where(x):
    import sys, pyhost
    return x * x, sys.executable, pyhost.engine

if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(where, range(3))
    assert [r[0] for r in results] == [0, 1, 4], results
    assert {r[1:] for r in results} == {(sys.executable, pyhost.engine)}, results
    print(pyhost.engine, sys.executable, sys.prefix, pyhost.engine_path)
"#;

/// What must hold for the wheel of `python` (3.`minor`), which ships `engines`.
fn check_wheel(python: &Path, minor: u8, engines: &[&str]) {
    let root = tempfile::tempdir().unwrap();
    let wheel = build_wheel(python, &root.path().join("wheels"));
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("pyhost-0.1.0-cp3{minor}-cp3{minor}-manylinux_")), "{name}");
    let venv = venv_with(python, root.path(), &wheel);
    let pyhost = venv.join("bin/pyhost");

    let listed = ok("pyhost engines", run_with_limit(bare(&pyhost).args(["engines", "--json"]), RUN_LIMIT));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let listed: Vec<(String, String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["path"].as_str().unwrap().into(),
                e["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = engines
        .iter()
        .map(|engine| {
            let path = venv.join(format!("lib/pyhost/engines/libpyhost_engine_{engine}.so"));
            (engine.to_string(), path.display().to_string(), "ok".to_string())
        })
        .collect();
    assert_eq!(listed, expected);
    for missing in ["stock", "stackless", "parallel"].iter().filter(|engine| !engines.contains(engine)) {
        let out = run_with_limit(bare(&pyhost).args(["--engine", missing, "-c", "pass"]), RUN_LIMIT);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    }
    let script = root.path().join("spawn.py");
    std::fs::write(&script, SPAWN_PROGRAM).unwrap();
    for engine in engines {
        let out =
            ok(engine, run_with_limit(bare(&pyhost).args(["--engine", engine]).arg(&script), RUN_LIMIT));
        let library = venv.join(format!("lib/pyhost/engines/libpyhost_engine_{engine}.so"));
        assert_eq!(
            out.trim(),
            format!("{engine} {} {} {}", pyhost.display(), venv.display(), library.display())
        );
    }

    // pip run by pyhost installs into the venv, and what it installs imports under pyhost.
    let mut pip = bare(&pyhost);
    pip.args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "six==1.17.0"]);
    ok("pyhost -m pip install six", run_with_limit(&mut pip, RUN_LIMIT));
    let out = ok(
        "import six",
        run_with_limit(bare(&pyhost).args(["-c", "import six; print(six.__file__)"]), RUN_LIMIT),
    );
    assert!(out.trim().starts_with(&venv.join("lib").display().to_string()), "{out}");

    // A Python whose prefix has no libpython (its interpreter copied alone): one line, status 2.
    let base = root.path().join("static-like");
    std::fs::create_dir_all(base.join("bin")).unwrap();
    let interpreter = base.join(format!("bin/python3.{minor}"));
    std::fs::copy(python, &interpreter).unwrap();
    let other = root.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let lacking = venv_with(&interpreter, &other, &wheel);
    let out = run_with_limit(bare(&lacking.join("bin/pyhost")).args(["-c", "pass"]), RUN_LIMIT);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("pyhost: error: the Python of the venv at "), "{stderr}");
    assert!(
        stderr.contains(&format!("libpython3.{minor}.so.1.0")) && stderr.contains("--enable-shared"),
        "{stderr}"
    );

    // `pyhost new-engine` from the install: the pyhost-abi crate comes with it.
    let name = format!("wheeleng3{minor}");
    let crate_dir = root.path().join(name.as_str());
    let out = ok(
        "new-engine",
        run_with_limit(bare(&pyhost).arg("new-engine").arg(name.as_str()).arg(&crate_dir), RUN_LIMIT),
    );
    assert!(out.contains(&format!("Created engine '{name}'")), "{out}");
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("share/pyhost/abi"), "{manifest}");
    let target = workspace_root().join("target/fixtures-wheel");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target);
    ok("cargo build of the new engine", run_with_limit(&mut cargo, BUILD_LIMIT));
    let library = target.join(format!("debug/libpyhost_engine_{name}.so"));
    let out = run_with_limit(
        bare(&pyhost).arg("--engine").arg(&library).args(["-c", "import pyhost; print(pyhost.engine)"]),
        RUN_LIMIT,
    );
    assert_eq!(ok("the new engine", out).trim(), name.as_str());
}

#[test]
fn the_wheel_for_python_3_13_installs_and_runs_in_its_venv() {
    let python = find_python(13).expect("the tests run with a CPython 3.13 shared build");
    check_wheel(&python, 13, &["parallel", "stackless", "stock"]);
}

#[test]
fn the_wheel_for_python_3_12_installs_and_runs_in_its_venv() {
    let Some(python) = find_python(12) else {
        assert!(std::env::var_os("CI").is_none(), "CI needs a CPython 3.12 shared build for the cp312 wheel");
        eprintln!("no CPython 3.12 found: the cp312 wheel is not checked");
        return;
    };
    // stackless and parallel are built for CPython 3.13's internals: the cp312 wheel has stock.
    check_wheel(&python, 12, &["stock"]);
}
