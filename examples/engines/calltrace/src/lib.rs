//! `calltrace`: an example pyhost engine that counts the calls of every Python function and their
//! cumulative time, through a PEP 523 frame-evaluation hook, and prints the busiest functions at
//! exit.
//!
//! - [`hook`]: the frame-evaluation function and its installation (all the CPython calls).
//! - [`registry`]: the counters, in plain Rust.
//! - this file: the engine (descriptor, hooks, statistics) and the exit table.
//!
//! Environment: `CALLTRACE_TOP=N` prints N functions instead of 20; `CALLTRACE_QUIET=1` prints
//! no table (the statistics are still there for `pyhost bench` and `pyhost.engine_statistics()`).

// The hook uses CPython's unstable frame API (`_PyInterpreterState_Get/SetEvalFrameFunc`,
// `PyUnstable_InterpreterFrame_GetCode/GetLasti`, `_PyEval_EvalFrameDefault`), which is not part
// of the Limited API and may change in any minor release. Every function it calls is exported,
// with the same signature and meaning, by CPython 3.12 and 3.13 (checked against both versions'
// headers and libpython exports), and the inline helpers it uses (Py_DECREF, PyCode_Check)
// compile to the same code for both: one build, from either, runs on both. Free-threaded
// builds are another matter (per-object locking): build for a regular 3.12 or 3.13 only.
#[cfg(any(not(Py_3_12), Py_3_14, Py_GIL_DISABLED))]
compile_error!("the calltrace engine needs a regular (GIL) CPython 3.12 or 3.13: point PYO3_PYTHON at one");

mod hook;
mod registry;

use pyhost_abi::{export_engine, Engine, EngineDescriptor, HostServices, LogLevel, PythonTarget};
use std::io::Write;
use std::time::Instant;

/// Functions in the exit table unless `CALLTRACE_TOP` says otherwise.
const DEFAULT_TOP: usize = 20;
/// Per-function counters in `statistics()`.
const STATISTICS_TOP: usize = 10;

/// `CALLTRACE_TOP`, checked.
fn table_size() -> Result<usize, String> {
    match std::env::var("CALLTRACE_TOP") {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_TOP),
        Ok(value) if value.trim().is_empty() => Ok(DEFAULT_TOP),
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("CALLTRACE_TOP must be a whole number of functions, not {value:?}")),
        Err(std::env::VarError::NotUnicode(value)) => {
            Err(format!("CALLTRACE_TOP must be a whole number of functions, not {value:?}"))
        }
    }
}

/// `CALLTRACE_QUIET` set to anything but empty or `0`.
fn quiet() -> bool {
    std::env::var_os("CALLTRACE_QUIET").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The exit table: a summary line, then calls, total ms, name, file:line per function.
fn table(top: usize) -> String {
    let now = Instant::now();
    let registry = hook::registry();
    let rows = registry.top(top, now);
    let mut out = format!(
        "calltrace: {} calls and {} generator/coroutine resumes of {} functions; top {} by cumulative time:\n",
        registry.calls_total,
        registry.resumes_total,
        registry.functions_seen(),
        rows.len()
    );
    let width = rows.iter().map(|(f, _)| f.qualname.chars().count()).max().unwrap_or(0).clamp(8, 60);
    out.push_str(&format!("{:>10}  {:>12}  {:<width$}  file:line\n", "calls", "total ms", "function"));
    for (function, total) in rows {
        out.push_str(&format!(
            "{:>10}  {:>12.3}  {:<width$}  {}:{}\n",
            function.calls,
            total.as_secs_f64() * 1e3,
            function.qualname,
            function.file,
            function.line
        ));
    }
    out
}

pub struct CallTraceEngine;

impl Engine for CallTraceEngine {
    fn descriptor() -> EngineDescriptor {
        EngineDescriptor {
            name: "calltrace".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "per-function call counts and cumulative time (PEP 523 hook), table at exit".into(),
            // Not abi3: the frame-evaluation API is outside the Limited API (see the top of this
            // file). It is the same in 3.12 and 3.13, so one build runs on both and no other.
            python: PythonTarget::exact_range(3, 12, 13),
        }
    }

    fn after_init(host: &HostServices) -> Result<(), String> {
        table_size()?;
        // SAFETY: the host calls `after_init` right after `Py_InitializeFromConfig`, on the main
        // thread, with the GIL held (pyhost-abi's `EngineModule::after_init` contract).
        unsafe { hook::install()? };
        host.log(LogLevel::Debug, "calltrace: frame-evaluation hook installed");
        Ok(())
    }

    fn at_exit(host: &HostServices) -> Result<(), String> {
        // SAFETY: the host calls `at_exit` from the main interpreter's `atexit` handlers with the
        // GIL held (pyhost-abi's `EngineModule::at_exit` contract).
        unsafe { hook::uninstall() };
        host.log(LogLevel::Debug, "calltrace: frame-evaluation hook removed");
        if !quiet() {
            let text = table(table_size()?);
            // stderr may be closed (`2>&-`): the table is then lost, which is no error.
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
        Ok(())
    }

    fn statistics() -> Vec<(String, f64)> {
        let now = Instant::now();
        let registry = hook::registry();
        let mut stats = vec![
            ("calls_total".to_string(), registry.calls_total as f64),
            ("resumes_total".to_string(), registry.resumes_total as f64),
            ("functions_seen".to_string(), registry.functions_seen() as f64),
        ];
        for (function, _) in registry.top(STATISTICS_TOP, now) {
            let mut name = format!("calls:{}", function.qualname);
            if stats.iter().any(|(n, _)| *n == name) {
                name = format!("calls:{} ({}:{})", function.qualname, function.file, function.line);
            }
            stats.push((name, function.calls as f64));
        }
        stats
    }
}

export_engine!(CallTraceEngine);
