//! One ABI across CPython 3.12 and 3.13: engines built once by the (3.13) workspace build,
//! loaded by a pyhost built for CPython 3.12 as well. That second host is built by
//! tools/test-all (`PYO3_PYTHON=<python3.12> cargo build -p pyhost --target-dir target/py312`)
//! and named by `PYHOST_PY312_BIN`; without it these tests say so and pass, except under CI,
//! where a missing 3.12 host is a failure.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

fn host_312() -> Option<Command> {
    match std::env::var_os("PYHOST_PY312_BIN") {
        Some(path) => {
            let mut cmd = Command::new(PathBuf::from(path));
            for var in ["PYHOST_ENGINE", "PYHOST_ENGINE_PATH", "PYHOST_LOG", "PYTHONPATH"] {
                cmd.env_remove(var);
            }
            Some(cmd)
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("CI runs the 3.12 host tests: PYHOST_PY312_BIN must name a pyhost built for CPython 3.12")
        }
        None => {
            eprintln!(
                "skipped: set PYHOST_PY312_BIN to a pyhost built for CPython 3.12 (tools/test-all does)"
            );
            None
        }
    }
}

const VERSION_PROGRAM: &str = "import pyhost, sys; print(pyhost.engine, '%d.%d' % sys.version_info[:2])";

#[test]
fn the_312_host_embeds_cpython_312() {
    let Some(mut host) = host_312() else { return };
    let out = run(host.args(["-c", "import sys; print(sys.version_info[:2])"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "(3, 12)\n");
}

#[test]
fn an_abi3_engine_built_once_runs_in_both_hosts() {
    let Some(mut host) = host_312() else { return };
    // Built by the 3.13 workspace build; tagged abi3 (3.12).
    let engine = stock_engine();
    let old = run(host.arg("--engine").arg(&engine).args(["-c", VERSION_PROGRAM]));
    assert!(old.status.success(), "{}", text(&old.stderr));
    assert_eq!(text(&old.stdout), "stock 3.12\n");
    let new = run(pyhost().arg("--engine").arg(&engine).args(["-c", VERSION_PROGRAM]));
    assert!(new.status.success(), "{}", text(&new.stderr));
    assert_eq!(text(&new.stdout), "stock 3.13\n");
}

#[test]
fn cp313_engines_are_refused_by_the_312_host_with_both_sides_named() {
    let Some(_) = host_312() else { return };
    let bin_dir = pyhost_bin().parent().expect("bin dir").to_path_buf();
    for name in ["parallel", "stackless"] {
        let engine = bin_dir.join(format!("libpyhost_engine_{name}.so"));
        let mut host = host_312().expect("checked above");
        let out = run(host.arg("--engine").arg(&engine).args(["-c", "pass"]));
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        // The host's tag check refuses them (stackless looks its one 3.13-only C function up
        // at run time, so the dynamic loader no longer refuses it first).
        assert!(
            err.contains("targets cp313 (CPython 3.13 only), but this pyhost embeds CPython 3.12"),
            "{name}: {err}"
        );
    }
}

#[test]
fn engines_lists_what_the_312_host_can_load() {
    let Some(mut host) = host_312() else { return };
    let bin_dir = pyhost_bin().parent().expect("bin dir").to_path_buf();
    let out = run(host.env("PYHOST_ENGINE_PATH", &bin_dir).args(["engines", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let engines: serde_json::Value = serde_json::from_str(&listing).expect("json");
    let status = |name: &str| {
        engines
            .as_array()
            .expect("a list")
            .iter()
            .find(|e| {
                e["name"] == name
                    && e["path"].as_str().is_some_and(|p| p.starts_with(bin_dir.to_str().unwrap()))
            })
            .map(|e| e["status"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(status("stock").as_deref(), Some("ok"), "{listing}");
    assert_ne!(status("parallel").as_deref(), Some("ok"), "{listing}");
}

#[test]
fn a_scaffolded_abi3_engine_built_once_runs_in_both_hosts() {
    let Some(mut host) = host_312() else { return };
    let tmp = tempfile::tempdir().expect("temp dir");
    let crate_dir = tmp.path().join("crossdemo");
    let out = run(pyhost().arg("new-engine").arg("crossdemo").arg(&crate_dir));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // One build (the workspace's CPython, 3.13); the library goes to both hosts.
    let engine = build_fixture(&crate_dir, "pyhost_engine_crossdemo");
    let old = run(host.arg("--engine").arg(&engine).args(["-c", VERSION_PROGRAM]));
    assert!(old.status.success(), "{}", text(&old.stderr));
    assert_eq!(text(&old.stdout), "crossdemo 3.12\n");
    let new = run(pyhost().arg("--engine").arg(&engine).args(["-c", VERSION_PROGRAM]));
    assert!(new.status.success(), "{}", text(&new.stderr));
    assert_eq!(text(&new.stdout), "crossdemo 3.13\n");
}

#[test]
fn the_example_engine_built_once_runs_in_both_hosts() {
    let Some(mut host) = host_312() else { return };
    // Built once by the workspace's CPython (3.13); tagged cp312.cp313.
    let engine =
        build_fixture(&workspace_root().join("examples/engines/calltrace"), "pyhost_engine_calltrace");
    let program = "def seven():\n    pass\nfor _ in range(7):\n    seven()\nimport sys\nprint('%d.%d' % sys.version_info[:2])";
    for (host, version) in [(&mut host, "3.12"), (&mut pyhost(), "3.13")] {
        let out = run(host.arg("--engine").arg(&engine).env("CALLTRACE_TOP", "1000").args(["-c", program]));
        assert!(out.status.success(), "{version}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{version}\n"));
        let table = text(&out.stderr);
        let row = table
            .lines()
            .find(|line| line.contains(" seven "))
            .unwrap_or_else(|| panic!("{version}: {table}"));
        assert!(row.trim_start().starts_with("7 "), "{version}: {row}");
    }
}
