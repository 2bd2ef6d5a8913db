//! Running a program: pick and load the engine, initialize CPython with python's own command-line
//! parsing, call the engine's hooks, and hand over to `Py_RunMain`, which gives python's exact
//! behaviour for `-c`, `-m`, files, stdin, the REPL, exit statuses and KeyboardInterrupt.

use crate::bench::executor::BENCH_OUTPUT_ENV;
use crate::cli::{HostOptions, PythonCommandLine, ENGINE_ENV, HELP_PREAMBLE};
use crate::loader::{self, LoadedEngine, Phase};
use crate::python::pyhost_module;
use crate::services::host_services;
use pyo3_ffi as ffi;
use std::ffi::{CString, OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;
use std::time::Instant;

/// Exit status when pyhost cannot set up the requested engine (as python's usage errors).
pub const EXIT_ENGINE_UNAVAILABLE: i32 = 2;
/// Exit status when an engine hook fails before the program could run.
pub const EXIT_ENGINE_FAILED: i32 = 1;

/// Resolves `--engine`, `$PYHOST_ENGINE`, or the default `stock`, and loads it; on failure
/// prints why and returns the exit status.
pub fn resolve_engine(options: &HostOptions) -> Result<LoadedEngine, i32> {
    let spec = options
        .engine
        .clone()
        .or_else(|| std::env::var(ENGINE_ENV).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| loader::DEFAULT_ENGINE.to_string());
    loader::resolve(&spec).map_err(|err| {
        eprintln!("pyhost: error: {err}");
        EXIT_ENGINE_UNAVAILABLE
    })
}

/// `-h`/`--help`/`-?` among python's leading options: pyhost prints its own part first.
fn asks_for_help(args: &[OsString]) -> bool {
    for arg in args {
        let arg = arg.as_bytes();
        if !arg.starts_with(b"-") || arg == b"-" || arg == b"-c" || arg == b"-m" || arg == b"--" {
            return false;
        }
        if arg == b"-h" || arg == b"--help" || arg == b"-?" {
            return true;
        }
    }
    false
}

/// Runs the program described by `program` and returns its exit status.
pub fn run(options: &HostOptions, program: PythonCommandLine) -> i32 {
    let engine = match resolve_engine(options) {
        Ok(engine) => engine,
        Err(code) => return code,
    };
    // Children started through sys.executable (subprocess, multiprocessing, pyperf) inherit the
    // environment, so they load this very engine file.
    // SAFETY (std): no other thread exists yet, so nothing reads the environment concurrently.
    std::env::set_var(ENGINE_ENV, engine.spec());
    // The report file of `pyhost bench` is this process's alone: a child pyhost the program
    // starts must not append its own values and engine statistics to it.
    let bench_output = std::env::var_os(BENCH_OUTPUT_ENV).filter(|path| !path.is_empty());
    // SAFETY (std): as above, no other thread exists yet.
    std::env::remove_var(BENCH_OUTPUT_ENV);
    if asks_for_help(&program.args) {
        print!("{HELP_PREAMBLE}");
    }
    let services = host_services(engine.name());
    pyhost_module::install(engine.clone(), bench_output.map(PathBuf::from));
    if let Err(err) = engine.run_hook(Phase::BeforeInit, services) {
        eprintln!("pyhost: error: {err}");
        return EXIT_ENGINE_FAILED;
    }
    let started = Instant::now();
    if let Err(code) = initialize(&program) {
        return code;
    }
    tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "CPython initialized");
    if let Err(err) = engine.run_hook(Phase::AfterInit, services) {
        eprintln!("pyhost: error: {err}");
        return finalize_with(EXIT_ENGINE_FAILED);
    }
    if let Err(message) = pyhost_module::prepare_main_interpreter() {
        eprintln!("pyhost: error: {message}");
        return finalize_with(EXIT_ENGINE_FAILED);
    }
    if let Err(err) = engine.run_hook(Phase::BeforeRun, services) {
        eprintln!("pyhost: error: {err}");
        return finalize_with(EXIT_ENGINE_FAILED);
    }
    // SAFETY: the interpreter was initialized above by this thread, which holds the GIL;
    // Py_RunMain runs the configured program and finalizes the interpreter.
    let code = unsafe { ffi::Py_RunMain() };
    tracing::debug!(code, "program finished");
    report_engine_statistics(&engine);
    if pyhost_module::at_exit_failed() && code == 0 {
        EXIT_ENGINE_FAILED
    } else {
        code
    }
}

/// Under `pyhost bench`, appends the engine's statistics to the parent's report file.
fn report_engine_statistics(engine: &LoadedEngine) {
    let Some(path) = pyhost_module::bench_output() else { return };
    let stats = match engine.statistics() {
        Ok(stats) => stats,
        Err(message) => {
            eprintln!("pyhost: warning: engine statistics failed: {message}");
            return;
        }
    };
    let map: serde_json::Map<String, serde_json::Value> =
        stats.into_iter().map(|s| (s.name.into(), serde_json::json!(s.value))).collect();
    let line = serde_json::json!({ "engine_statistics": map }).to_string();
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()));
    if let Err(err) = written {
        eprintln!("pyhost: warning: cannot write engine statistics to {}: {err}", path.display());
    }
}

/// Finalizes an interpreter whose program will not run, returning `code`.
fn finalize_with(code: i32) -> i32 {
    // SAFETY: called on the thread that initialized the interpreter, GIL held.
    unsafe { ffi::Py_FinalizeEx() };
    code
}

fn c_string(value: &OsStr) -> CString {
    // Command-line arguments and paths on Unix never contain NUL bytes.
    CString::new(value.as_bytes()).unwrap_or_else(|_| CString::new("?").expect("literal has no NUL"))
}

/// Turns a failed `PyStatus` into the exit status python would give.
///
/// SAFETY: `status` must come from a CPython configuration call.
unsafe fn check(status: ffi::PyStatus) -> Result<(), i32> {
    if ffi::PyStatus_Exception(status) == 0 {
        return Ok(());
    }
    if ffi::PyStatus_IsExit(status) != 0 {
        // `-V`, `-h`, or a usage error: CPython already printed what it had to say.
        return Err(status.exitcode);
    }
    // Prints "Fatal Python error: …" and exits, as python does.
    ffi::Py_ExitStatusException(status)
}

/// Configures CPython as python's `main()` does (python config, `argv` parsed by CPython), with
/// `sys.orig_argv` set to pyhost's whole command line. `sys.executable` is left for CPython to
/// compute from `argv[0]`, as python does: it is then the pyhost binary as invoked, and inside a
/// venv made with `pyhost -m venv` it is the venv's `bin/python` (a link to pyhost).
fn initialize(program: &PythonCommandLine) -> Result<(), i32> {
    let mut argv: Vec<CString> = vec![c_string(&program.argv0)];
    argv.extend(program.args.iter().map(|a| c_string(a)));
    let mut argv_ptrs: Vec<*const std::ffi::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    let orig_argv: Vec<CString> = program.orig_argv.iter().map(|a| c_string(a)).collect();

    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    let config = config.as_mut_ptr();
    // SAFETY (CPython 3.12/3.13 initialization API): `config` is initialized by
    // PyConfig_InitPythonConfig before any other use and cleared exactly once; every string
    // passed outlives the call that copies it; Py_DecodeLocale results are freed with
    // PyMem_RawFree as documented.
    unsafe {
        ffi::PyConfig_InitPythonConfig(config);
        let result = (|| {
            // Nothing may pre-initialize CPython before argv is set: preconfig options
            // (-X dev, -X utf8, -E, -I) are read from it only then.
            check(ffi::PyConfig_SetBytesArgv(
                config,
                argv_ptrs.len() as ffi::Py_ssize_t,
                argv_ptrs.as_mut_ptr(),
            ))?;
            for arg in &orig_argv {
                let wide = ffi::Py_DecodeLocale(arg.as_ptr(), ptr::null_mut());
                if wide.is_null() {
                    eprintln!("pyhost: error: cannot decode argument {arg:?} with the locale encoding");
                    return Err(EXIT_ENGINE_UNAVAILABLE);
                }
                let status = ffi::PyWideStringList_Append(&raw mut (*config).orig_argv, wide);
                ffi::PyMem_RawFree(wide.cast());
                check(status)?;
            }
            check(ffi::Py_InitializeFromConfig(config))
        })();
        ffi::PyConfig_Clear(config);
        result
    }
}
