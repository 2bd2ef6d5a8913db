//! Everything that calls into CPython. The `unsafe` code touching CPython lives here only.
//!
//! - [`embed`]: configures and initializes the interpreter, runs the engine's lifecycle hooks
//!   around `Py_RunMain`.
//! - [`pyhost_module`]: the built-in `pyhost` module Python code imports.

pub mod embed;
pub mod pyhost_module;
