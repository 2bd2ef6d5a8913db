//! The pyhost host proper, built as `libpyhost_host.so` and started by the `pyhost` launcher
//! (`launcher/`), which first loads the right libpython: this library links libpython, the
//! launcher does not, so an installed pyhost can pick the Python of the venv it runs in.
//!
//! - [`cli`]: splits pyhost's own options from python's command line; the management commands.
//! - [`discovery`]: where engines are searched for and how they are named.
//! - [`loader`]: loading an engine library and the checks made before it may run.
//! - [`services`]: what the host offers engines (logging, versions).
//! - [`python`]: embedding CPython (`embed`) and the built-in `pyhost` module (`pyhost_module`).
//! - [`commands`]: `pyhost engines`, `pyhost info`; [`bench`]: `pyhost bench`;
//!   [`scaffold`]: `pyhost new-engine`.
//! - [`logging`]: `tracing` output, controlled by `PYHOST_LOG` or `--verbose`.

// Unit-test builds use the test harness's main, so `run` and what only it reaches look unused.
#![cfg_attr(test, allow(dead_code, unused_imports))]

mod bench;
mod cli;
mod commands;
mod discovery;
mod loader;
mod logging;
mod python;
mod scaffold;
mod services;

use std::ffi::c_int;
use std::io::Write;

/// The launcher's call into the host, once libpython is loaded. It does not return: the process
/// exits with the program's status. (Arguments come from `std::env::args_os`, which glibc's
/// init hooks give this library as they give an executable.)
#[no_mangle]
pub extern "C" fn pyhost_main() -> c_int {
    // Panics must not unwind out of this C entry point.
    std::panic::catch_unwind(run).unwrap_or_else(|_| {
        eprintln!("pyhost: internal error (panic); please report it");
        70 // EX_SOFTWARE
    })
}

fn run() -> c_int {
    let invocation = match cli::Invocation::parse(std::env::args_os().collect()) {
        Ok(invocation) => invocation,
        Err(message) => {
            eprintln!("pyhost: {message}");
            eprintln!("Try `pyhost -h` for more information.");
            std::process::exit(2);
        }
    };
    logging::init(invocation.options.verbose);
    let code = match invocation.action {
        cli::Action::Command(command) => commands::run(command, &invocation.options),
        cli::Action::RunPython(program) => python::embed::run(&invocation.options, program),
    };
    let _ = std::io::stdout().flush();
    // An int like python's own exit status (Py_RunMain's result), not truncated by us.
    std::process::exit(code);
}
