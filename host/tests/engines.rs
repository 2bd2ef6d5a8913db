//! Engine selection, discovery, loading checks and failure reporting, through the real binary.

mod common;

use common::*;
use pyhost_abi::ABI_VERSION;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

const SHOW_ENGINE: &str = "import pyhost; print(pyhost.engine, pyhost.engine_path)";

fn stdout_of(cmd: &mut std::process::Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out.stderr));
    text(&out.stdout)
}

/// A folder holding a copy of the stock engine, to tell it apart from the one next to the binary.
fn engine_dir_with_stock_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libpyhost_engine_stock.so");
    std::fs::copy(stock_engine(), &copy).unwrap();
    let copy = std::fs::canonicalize(copy).unwrap();
    (dir, copy)
}

#[test]
fn default_engine_is_stock_from_next_to_the_binary() {
    let out = stdout_of(pyhost().args(["-c", SHOW_ENGINE]));
    let expected = std::fs::canonicalize(stock_engine()).unwrap();
    assert_eq!(out.trim(), format!("stock {}", expected.display()));
}

#[test]
fn engine_path_env_is_searched_first_and_pyhost_engine_env_selects() {
    let (dir, copy) = engine_dir_with_stock_copy();
    let out = stdout_of(
        pyhost()
            .env("PYHOST_ENGINE_PATH", dir.path())
            .env("PYHOST_ENGINE", "stock")
            .args(["-c", SHOW_ENGINE]),
    );
    assert_eq!(out.trim(), format!("stock {}", copy.display()));
}

#[test]
fn engine_flag_accepts_a_library_path() {
    let (_dir, copy) = engine_dir_with_stock_copy();
    let out = stdout_of(pyhost().arg("--engine").arg(&copy).args(["-c", SHOW_ENGINE]));
    assert_eq!(out.trim(), format!("stock {}", copy.display()));
}

#[test]
fn children_started_with_sys_executable_keep_the_engine() {
    let (_dir, copy) = engine_dir_with_stock_copy();
    let program = r#"
import subprocess, sys, multiprocessing, pyhost
def where():
    import pyhost
    return pyhost.engine_path
if __name__ == "__main__":
    child = subprocess.run([sys.executable, "-c", "import pyhost; print(pyhost.engine_path)"],
                           capture_output=True, text=True, check=True)
    print("subprocess", child.stdout.strip() == pyhost.engine_path)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        print("spawn", pool.apply(where) == pyhost.engine_path)
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reexec.py"), program).unwrap();
    let out = stdout_of(pyhost().current_dir(dir.path()).arg("--engine").arg(&copy).arg("reexec.py"));
    assert_eq!(out, "subprocess True\nspawn True\n");
}

#[test]
fn unknown_engine_lists_engines_and_folders_and_exits_2() {
    let out = run(pyhost().args(["--engine", "nosuch", "-c", "print('must not run')"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("no engine named 'nosuch'"), "{err}");
    assert!(err.contains("engines found: ") && err.contains("stock"), "{err}");
    assert!(err.contains(&pyhost_bin().parent().unwrap().display().to_string()), "{err}");
    let out = run(pyhost().env("PYHOST_ENGINE", "nosuch").args(["-c", "pass"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_or_foreign_library_is_refused_with_exit_2() {
    let out = run(pyhost().args(["--engine", "/no/such/libpyhost_engine_x.so", "-c", "pass"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot open engine library /no/such/libpyhost_engine_x.so"));
    let libpython = Path::new(env!("PYHOST_PYTHON_LIBDIR")).join("libpython3.so");
    let out = run(pyhost().arg("--engine").arg(&libpython).args(["-c", "pass"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a pyhost engine"), "{}", text(&out.stderr));
}

#[test]
fn engine_whose_name_differs_from_its_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(misbehaving_engine(), dir.path().join("libpyhost_engine_other.so")).unwrap();
    let out = run(pyhost().env("PYHOST_ENGINE_PATH", dir.path()).args(["--engine", "other", "-c", "pass"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is named 'misbehaving', not 'other'"), "{}", text(&out.stderr));
}

#[test]
fn engine_for_another_cpython_is_refused_naming_both() {
    let out = run(pyhost()
        .env("FIXTURE_ENGINE_MODE", "cp312")
        .arg("--engine")
        .arg(misbehaving_engine())
        .args(["-c", "pass"]));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("targets cp312 (CPython 3.12 only)") && err.contains("embeds CPython 3.13"),
        "{err}"
    );
}

#[test]
fn engine_panics_and_errors_are_reported_never_fatal() {
    for (mode, expected_code, program_runs) in [
        ("panic-descriptor", 2, false),
        ("panic-before_init", 1, false),
        ("panic-after_init", 1, false),
        ("panic-before_run", 1, false),
        ("fail-before_run", 1, false),
        ("panic-at_exit", 1, true),
        ("fail-at_exit", 1, true),
    ] {
        let out = run(pyhost()
            .env("FIXTURE_ENGINE_MODE", mode)
            .arg("--engine")
            .arg(misbehaving_engine())
            .args(["-c", "print('ran')"]));
        let err = text(&out.stderr);
        assert_eq!(out.status.signal(), None, "{mode}: killed by a signal: {err}");
        assert_eq!(out.status.code(), Some(expected_code), "{mode}: {err}");
        assert_eq!(text(&out.stdout) == "ran\n", program_runs, "{mode}");
        let hook = mode.split_once('-').unwrap().1;
        assert!(
            err.contains(&format!(
                "deliberate {} in {hook}",
                if mode.starts_with("panic") { "panic" } else { "failure" }
            )),
            "{mode}: {err}"
        );
    }
}

#[test]
fn engine_statistics_reach_python_and_a_panic_there_is_a_python_error() {
    let program = "import pyhost; print(pyhost.engine_statistics())";
    let out = stdout_of(pyhost().arg("--engine").arg(misbehaving_engine()).args(["-c", program]));
    assert_eq!(out.trim(), "{'hooks_called': 4.0}");
    let program = "import pyhost\ntry:\n    pyhost.engine_statistics()\nexcept RuntimeError as e:\n    print('caught', e)";
    let out = stdout_of(
        pyhost()
            .env("FIXTURE_ENGINE_MODE", "panic-statistics")
            .arg("--engine")
            .arg(misbehaving_engine())
            .args(["-c", program]),
    );
    assert!(out.starts_with("caught engine statistics failed: engine panicked in statistics"), "{out}");
}

/// Builds an engine against a copy of pyhost-abi that claims ABI version 0.0.9.
fn engine_built_against_other_abi() -> PathBuf {
    let root = workspace_root();
    let dir = root.join("target").join("fixtures").join("other-abi");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("abi/src")).unwrap();
    std::fs::create_dir_all(dir.join("engine/src")).unwrap();
    for entry in std::fs::read_dir(root.join("abi/src")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join("abi/src").join(entry.file_name())).unwrap();
    }
    std::fs::write(
        dir.join("abi/Cargo.toml"),
        "[package]\nname = \"pyhost-abi\"\nversion = \"0.0.9\"\nedition = \"2021\"\n\n[dependencies]\nabi_stable = \"0.11.3\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("engine/Cargo.toml"),
        "[package]\nname = \"pyhost-engine-oldabi\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\npyhost-abi = { path = \"../abi\" }\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("engine/src/lib.rs"),
        "use pyhost_abi::{export_engine, Engine, EngineDescriptor, PythonTarget};\npub struct Old;\nimpl Engine for Old {\n    \
         fn descriptor() -> EngineDescriptor {\n        EngineDescriptor { name: \"oldabi\".into(), version: \"0.1.0\".into(), \
         description: \"built against another ABI\".into(), python: PythonTarget::abi3(3, 12) }\n    }\n}\nexport_engine!(Old);\n",
    )
    .unwrap();
    // Same dependency versions as the workspace, so the build needs nothing new.
    std::fs::copy(root.join("Cargo.lock"), dir.join("engine/Cargo.lock")).unwrap();
    build_fixture(&dir.join("engine"), "pyhost_engine_oldabi")
}

#[test]
fn engine_built_against_another_abi_version_is_refused_naming_both() {
    let lib = engine_built_against_other_abi();
    let out = run(pyhost().arg("--engine").arg(&lib).args(["-c", "print('must not run')"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    let expected = format!("built against pyhost engine ABI 0.0.9, but this pyhost speaks ABI {ABI_VERSION}");
    assert!(err.contains(&expected), "{err}");
    // `pyhost engines` shows it as refused instead of failing.
    let dir = lib.parent().unwrap();
    let out = stdout_of(pyhost().env("PYHOST_ENGINE_PATH", dir).args(["engines"]));
    assert!(out.contains("refused: engine") && out.contains("ABI 0.0.9"), "{out}");
}

#[test]
fn engines_command_lists_engines_as_text_and_json() {
    let out = stdout_of(pyhost().args(["engines"]));
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains("stock") && out.contains("abi3"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout_of(pyhost().args(["engines", "--json"]))).unwrap();
    let stock = json.as_array().unwrap().iter().find(|e| e["name"] == "stock").expect("stock listed");
    assert_eq!(stock["status"], "ok");
    assert_eq!(stock["python"], "abi3");
}

#[test]
fn info_command_reports_versions_and_search_path() {
    let out = stdout_of(pyhost().args(["info"]));
    assert!(
        out.contains(&format!("engine ABI:     {ABI_VERSION}")) && out.contains("CPython:        3.13"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout_of(pyhost().args(["info", "--json"]))).unwrap();
    assert_eq!(json["abi_version"], ABI_VERSION);
    assert!(json["engine_search_path"].as_array().unwrap().len() >= 3);
}

#[test]
fn a_script_named_like_a_command_runs_with_a_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("engines"), "print('the script ran')\n").unwrap();
    let out = stdout_of(pyhost().current_dir(dir.path()).args(["./engines"]));
    assert_eq!(out, "the script ran\n");
    let out = run(pyhost().current_dir(dir.path()).args(["engines"]));
    assert!(text(&out.stdout).contains("stock"));
    assert!(text(&out.stderr).contains("to run the file ./engines, use `pyhost ./engines`"));
}

#[test]
fn logs_show_loading_and_hooks_only_when_asked() {
    let out = run(pyhost().env("PYHOST_LOG", "debug").args(["-c", "pass"]));
    let err = text(&out.stderr);
    for needle in
        ["checking engine ABI", "engine loaded", "lifecycle hook", "CPython initialized", "before_run"]
    {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    let out = run(pyhost().args(["--verbose", "-c", "pass"]));
    assert!(text(&out.stderr).contains("engine loaded"));
    let out = run(pyhost().args(["-c", "pass"]));
    assert!(out.stderr.is_empty());
}

#[test]
fn engine_at_exit_runs_after_the_programs_own_atexit_handlers() {
    let program =
        "import atexit, sys\natexit.register(lambda: print('program atexit', file=sys.stderr, flush=True))";
    let out = run(pyhost()
        .env("PYHOST_LOG", "debug")
        .arg("--engine")
        .arg(misbehaving_engine())
        .args(["-c", program]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let program_at = err.find("program atexit").expect("program's handler ran");
    let engine_at = err.find("misbehaving engine: at_exit").expect("engine's hook ran");
    assert!(program_at < engine_at, "{err}");
}

#[test]
fn a_venv_made_by_pyhost_runs_pyhost_with_the_venvs_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let out = run(pyhost().args(["-m", "venv", "--without-pip"]).arg(&venv));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let program = "import sys, pyhost; print(sys.prefix); print(sys.executable); print(sys._base_executable); print(pyhost.engine)";
    let out = stdout_of(
        std::process::Command::new(venv.join("bin/python")).env_remove("PYHOST_ENGINE").args(["-c", program]),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], venv.display().to_string());
    assert_eq!(lines[1], venv.join("bin/python").display().to_string());
    assert_eq!(lines[2], pyhost_bin().display().to_string());
    assert_eq!(lines[3], "stock");
}

#[test]
fn a_pyhost_copied_into_a_venv_falls_back_to_its_built_in_stock_engine() {
    // As `venv --copies` makes it: the launcher copied into the venv's bin/, whose pyvenv.cfg
    // names the folder of the pyhost that made it (where the host library is).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    let home = pyhost_bin().parent().unwrap().to_path_buf();
    std::fs::write(dir.path().join("pyvenv.cfg"), format!("home = {}\n", home.display())).unwrap();
    let copy = dir.path().join("bin/pyhost");
    std::fs::copy(pyhost_bin(), &copy).unwrap();
    let mut cmd = std::process::Command::new(&copy);
    cmd.env_remove("PYHOST_ENGINE").env_remove("PYHOST_ENGINE_PATH");
    let out = stdout_of(cmd.args(["-c", "import pyhost, os; print(pyhost.engine, pyhost.engine_path, os.environ['PYHOST_ENGINE'], pyhost.engines())"]));
    assert_eq!(out.trim(), "stock None stock ['stock']");
    let out = stdout_of(std::process::Command::new(&copy).env_remove("PYHOST_ENGINE_PATH").args(["engines"]));
    assert!(out.contains("(built into pyhost)"), "{out}");
    // Other engines are not built in: naming one that is missing is still an error.
    let out = run(std::process::Command::new(&copy).args(["--engine", "parallel", "-c", "pass"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_pyhost_copied_alone_falls_back_to_its_built_in_stock_engine() {
    // The launcher finds the host library where it was built (CPython's test_venv copies
    // sys.executable alone and runs the copy).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pyhost");
    std::fs::copy(pyhost_bin(), &copy).unwrap();
    let mut cmd = std::process::Command::new(&copy);
    cmd.env_remove("PYHOST_ENGINE").env_remove("PYHOST_ENGINE_PATH");
    let out = stdout_of(
        cmd.args(["-c", "import pyhost, sys; print(pyhost.engine, pyhost.engine_path, sys.executable)"]),
    );
    assert_eq!(out.trim(), format!("stock None {}", copy.display()));
}

#[test]
fn importing_another_engines_module_names_the_engine_to_use() {
    let dir = tempfile::tempdir().unwrap();
    // Any library named like an engine makes its name known; a copy of stock will do.
    std::fs::copy(stock_engine(), dir.path().join("libpyhost_engine_othereng.so")).unwrap();
    let program = "try:\n    import othereng\nexcept ModuleNotFoundError as e:\n    print(e.name, '|', e)";
    let out = stdout_of(pyhost().env("PYHOST_ENGINE_PATH", dir.path()).args(["-c", program]));
    assert!(
        out.starts_with("othereng | No module named 'othereng': it is provided by the 'othereng' engine"),
        "{out}"
    );
    assert!(out.contains("pyhost --engine othereng"), "{out}");
    // Unrelated missing modules keep python's plain message.
    let out = stdout_of(
        pyhost().args(["-c", "try:\n    import no_such_mod_x\nexcept ImportError as e:\n    print(e)"]),
    );
    assert_eq!(out.trim(), "No module named 'no_such_mod_x'");
}
