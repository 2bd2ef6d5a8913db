//! `pyhost`: runs Python programs on the embedded CPython with an evaluation engine chosen at run
//! time, and manages engines.
//!
//! - [`cli`]: splits pyhost's own options from python's command line; the management commands.
//! - [`discovery`]: where engines are searched for and how they are named.
//! - [`loader`]: loading an engine library and the checks made before it may run.
//! - [`services`]: what the host offers engines (logging, versions).
//! - [`python`]: embedding CPython (`embed`) and the built-in `pyhost` module (`pyhost_module`).
//! - [`commands`]: `pyhost engines`, `pyhost info`; [`bench`]: `pyhost bench`.
//! - [`logging`]: `tracing` output, controlled by `PYHOST_LOG` or `--verbose`.

mod bench;
mod cli;
mod commands;
mod discovery;
mod loader;
mod logging;
mod python;
mod services;

use std::io::Write;

fn main() {
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
