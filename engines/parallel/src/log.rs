//! The engine's messages go through the host's logging (`PYHOST_LOG`), from any thread: the
//! servers' start-up lines, access logs and application tracebacks, and the network side's
//! own troubles. `before_init` connects it; until then (never, under a host) messages go to
//! stderr so that none is lost.

use crate::core::{arg_count, arg_str, guarded, set_error};
use abi_stable::std_types::RStr;
use pyhost_abi::LogLevel;
use pyo3_ffi as ffi;
use std::ptr;
use std::sync::OnceLock;

type HostLog = extern "C" fn(LogLevel, RStr<'_>);

static HOST_LOG: OnceLock<HostLog> = OnceLock::new();

/// Sends the engine's messages to the host from now on.
pub fn connect(host_log: HostLog) {
    let _ = HOST_LOG.set(host_log);
}

pub fn log(level: LogLevel, message: &str) {
    match HOST_LOG.get() {
        Some(host_log) => host_log(level, RStr::from(message)),
        None => eprintln!("parallel: {message}"),
    }
}

/// The levels by the names Python code uses for them (`logging`'s, lower-cased).
fn level_named(name: &str) -> Option<LogLevel> {
    Some(match name {
        "error" => LogLevel::Error,
        "warning" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        _ => return None,
    })
}

/// `log(level, message)`: a message through the host's logging; `level` is "error",
/// "warning", "info", "debug" or "trace".
pub unsafe extern "C" fn py_log(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "log") {
            return ptr::null_mut();
        }
        let (Some(level), Some(message)) = (arg_str(*args), arg_str(*args.add(1))) else {
            return ptr::null_mut();
        };
        let Some(level) = level_named(&level) else {
            return set_error(ffi::PyExc_ValueError, &format!("unknown log level {level:?}"));
        };
        // The host writes to stderr: let the other threads of this interpreter run meanwhile.
        crate::core::without_gil(|| log(level, &message));
        ffi::Py_NewRef(ffi::Py_None())
    })
}
