//! `pyhost new-engine`: the crate it writes builds as it is, loads by path and by name, and is
//! rustfmt- and clippy-clean; bad names, used folders and a missing pyhost-abi are refused with
//! exit status 2 and nothing written.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn new_engine(args: &[&str], dir: Option<&Path>) -> Output {
    let mut cmd = pyhost();
    cmd.arg("new-engine").args(args);
    if let Some(dir) = dir {
        cmd.arg(dir);
    }
    run(&mut cmd)
}

fn assert_created(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "new-engine failed: {}", text(&out.stderr));
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

#[test]
fn generated_engine_builds_and_loads_by_path_and_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let crate_dir = tmp.path().join("demo");
    let out = new_engine(&["demo"], Some(&crate_dir));
    assert_created(&out);
    let said = text(&out.stdout);
    assert!(said.contains(&format!("cargo build --manifest-path {}", crate_dir.join("Cargo.toml").display())));
    for file in ["Cargo.toml", "src/lib.rs", "README.md", ".gitignore"] {
        assert!(crate_dir.join(file).is_file(), "{file} missing");
    }

    // Built as the other fixtures are, into target/fixtures, so dependencies compile once.
    let lib = build_fixture(&crate_dir, "pyhost_engine_demo");

    let show = "import pyhost; print(pyhost.engine, pyhost.engine_python, pyhost.engine_statistics())";
    let out = run(pyhost().arg("--engine").arg(&lib).args(["-c", show, "x"]));
    assert!(out.status.success(), "loading by path failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "demo abi3 {'hooks_called': 2.0, 'program_args': 2.0}\n");

    // Its log lines go through the host.
    let out = run(pyhost().arg("--verbose").arg("--engine").arg(&lib).args(["-c", "pass"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("demo: the program starts with 1 argument(s)"),
        "{}",
        text(&out.stderr)
    );

    // Installed in a folder of PYHOST_ENGINE_PATH, it is found by name.
    let engines = tempfile::tempdir().unwrap();
    let installed = engines.path().join("libpyhost_engine_demo.so");
    std::fs::copy(&lib, &installed).unwrap();
    let installed = std::fs::canonicalize(installed).unwrap();
    let out = run(pyhost().env("PYHOST_ENGINE_PATH", engines.path()).args([
        "--engine",
        "demo",
        "-c",
        "import pyhost; print(pyhost.engine == 'demo', pyhost.engine_path)",
    ]));
    assert!(out.status.success(), "loading by name failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("True {}\n", installed.display()));
    let out = run(pyhost().env("PYHOST_ENGINE_PATH", engines.path()).args(["engines", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let demo = rows.as_array().unwrap().iter().find(|row| row["name"] == "demo").expect("demo listed");
    assert_eq!(demo["status"], "ok");
    assert_eq!(demo["python"], "abi3");
}

#[test]
fn generated_code_is_rustfmt_and_clippy_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let target_dir = workspace_root().join("target").join("fixtures");
    for (name, python) in [("tidy", "abi3"), ("tidy13", "cp313")] {
        let crate_dir = tmp.path().join(name);
        assert_created(&new_engine(&[name, "--python", python], Some(&crate_dir)));
        let mut sources = vec![crate_dir.join("src/lib.rs")];
        if python == "cp313" {
            sources.push(crate_dir.join("build.rs"));
        }
        // rustfmt's defaults: the crate lives outside any tree with a rustfmt.toml.
        let out = run(Command::new("rustfmt").args(["--check", "--edition", "2021"]).args(&sources));
        assert!(
            out.status.success(),
            "{python}: generated code is not rustfmt-formatted:\n{}",
            text(&out.stdout)
        );
        let mut clippy = cargo();
        clippy.args(["clippy", "--quiet", "--manifest-path"]).arg(crate_dir.join("Cargo.toml"));
        clippy.arg("--target-dir").arg(&target_dir).args(["--", "-D", "warnings"]);
        if python == "cp313" {
            // Its build.rs insists on a CPython 3.13: the one pyhost embeds.
            clippy.env("PYO3_PYTHON", python_bin());
        }
        let out = run(&mut clippy);
        assert!(out.status.success(), "{python}: clippy found problems:\n{}", text(&out.stderr));
    }
}

#[test]
fn dir_defaults_to_name_and_an_empty_folder_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let out =
        run(pyhost().current_dir(tmp.path()).env_remove("CARGO_TARGET_DIR").args(["new-engine", "here"]));
    assert_created(&out);
    let manifest = std::fs::read_to_string(tmp.path().join("here/Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"pyhost_engine_here\""));
    let abi = std::fs::canonicalize(workspace_root().join("abi")).unwrap();
    assert!(manifest.contains(&format!("pyhost-abi = {{ path = \"{}\" }}", abi.display())), "{manifest}");
    assert!(text(&out.stdout).contains("pyhost --engine here/target/debug/libpyhost_engine_here.so"));

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_created(&new_engine(&["other", "--abi-path", abi.to_str().unwrap()], Some(&empty)));
    assert!(empty.join("src/lib.rs").is_file());

    // The library path it suggests follows CARGO_TARGET_DIR, where cargo will put it.
    let shared = tmp.path().join("shared-target");
    let out =
        run(pyhost().current_dir(tmp.path()).env("CARGO_TARGET_DIR", &shared).args(["new-engine", "third"]));
    assert_created(&out);
    let expected = shared.join("debug/libpyhost_engine_third.so");
    assert!(
        text(&out.stdout).contains(&format!("pyhost --engine {} ", expected.display())),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn refusals_exit_2_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("x");
    let refused = |args: &[&str], dir: Option<&Path>, message: &str| {
        let out = new_engine(args, dir);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(message), "{args:?}: expected {message:?} in: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
    };
    refused(&["My-Engine"], Some(&target), "invalid engine name 'My-Engine'");
    refused(&["my-engine"], Some(&target), "use 'my_engine'");
    refused(&["9lives"], Some(&target), "must start with a lowercase letter");
    refused(&["stock"], Some(&target), "pyhost ships an engine called 'stock'");
    refused(&["demo", "--python", "cp312"], Some(&target), "invalid value 'cp312'");
    refused(&[], None, "NAME");
    let nowhere = tmp.path().join("no-abi-here");
    refused(&["demo", "--abi-path", nowhere.to_str().unwrap()], Some(&target), "no pyhost-abi crate there");
    assert!(!target.exists(), "a refused new-engine wrote {}", target.display());

    let used = tmp.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("keep.txt"), "mine").unwrap();
    refused(&["demo"], Some(&used), "already exists and is not empty");
    let left: Vec<_> = std::fs::read_dir(&used).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["keep.txt"]);
    refused(&["demo"], Some(&used.join("keep.txt")), "already exists and is not a folder");
}
