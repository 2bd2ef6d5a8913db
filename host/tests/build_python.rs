//! The build's CPython finder (tools/find-python313, used as PYO3_PYTHON when none is set).

mod common;

use common::*;
use std::process::Command;

#[test]
fn finder_runs_a_cpython_3_13() {
    let out = run(Command::new(workspace_root().join("tools/find-python313"))
        .args(["-c", "import sys; print(sys.version_info[:2])"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "(3, 13)");
}

#[test]
fn finder_explains_what_is_missing_when_there_is_no_cpython_3_13() {
    let empty = tempfile::tempdir().unwrap();
    let out = run(Command::new("/bin/sh")
        .arg(workspace_root().join("tools/find-python313"))
        .arg("-c")
        .arg("pass")
        .env("PATH", empty.path())
        .env("PYENV_ROOT", empty.path())
        .env("HOME", empty.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no CPython 3.13 found"), "{err}");
    assert!(err.contains("PYO3_PYTHON=/path/to/python3.13 cargo build"), "{err}");
}
