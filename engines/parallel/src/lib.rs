//! The `parallel` engine: Python callables on every core. A pool of worker threads, each owning
//! a sub-interpreter with its own GIL, runs tasks that cross by copy (pickles), in the spirit of
//! Trent Nelson's PyParallel.
//!
//! - [`pool`]: the pool's queues and result sinks, plain Rust (no Python object crosses).
//! - [`core`]: `_parallel_core`, the Python-facing functions and the worker threads.
//! - [`guard`]: PyParallel's PX/PY rule in workers (the main script's state is read-only).
//! - [`shared`], [`shared_api`]: the containers behind `protect()`, shared by every interpreter.
//! - [`frozen`]: `share()`, immutable data made immortal and read in place by every worker.
//! - [`log`]: the engine's messages, through the host's logging (`PYHOST_LOG`).
//! - [`transfer`]: which values may cross by marshal (the fast path of arguments and results).
//! - `parallel.py`: the `parallel` module (map, submit, Executor, transfer of functions).
//! - this file: the engine (descriptor; hooks: register the modules, join the pools at exit).
//!
//! It installs no PEP 523 hook and starts no thread until a program uses a pool: main-thread
//! code runs at stock speed.

use pyhost_abi::{export_engine, Engine, EngineDescriptor, HostServices, PythonTarget};

#[cfg(parallel_supported)]
mod core;
#[cfg(parallel_supported)]
mod frozen;
#[cfg(parallel_supported)]
mod guard;
#[cfg(parallel_supported)]
mod interpreter_threads;
#[cfg(parallel_supported)]
mod log;
#[cfg(parallel_supported)]
mod modules;
#[cfg(parallel_supported)]
mod pool;
#[cfg(parallel_supported)]
mod server;
#[cfg(parallel_supported)]
mod shared;
#[cfg(parallel_supported)]
mod shared_api;
#[cfg(parallel_supported)]
mod transfer;

pub struct ParallelEngine;

impl Engine for ParallelEngine {
    fn descriptor() -> EngineDescriptor {
        EngineDescriptor {
            name: "parallel".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Python callables on every core, in sub-interpreters with their own GIL (import parallel)"
                    .into(),
            // Own-GIL sub-interpreters are only safe enough from 3.13 on (see build.rs).
            python: PythonTarget::exact(3, 13),
        }
    }

    fn before_init(host: &HostServices) -> Result<(), String> {
        #[cfg(parallel_supported)]
        {
            log::connect(host.log);
            modules::register()
        }
        #[cfg(not(parallel_supported))]
        {
            let _ = host;
            Err(format!(
                "the parallel engine supports CPython 3.13 only (built against 3.{})",
                env!("PYHOST_PARALLEL_PYTHON_MINOR")
            ))
        }
    }

    fn at_exit(_host: &HostServices) -> Result<(), String> {
        // parallel.py shuts its pools down from atexit; this catches any left (the interpreter
        // must not finalize while workers run).
        #[cfg(parallel_supported)]
        core::shutdown_all_pools();
        Ok(())
    }

    fn statistics() -> Vec<(String, f64)> {
        #[cfg(parallel_supported)]
        {
            use std::sync::atomic::Ordering;
            vec![
                ("tasks_done".to_string(), pool::TASKS_DONE.load(Ordering::Relaxed) as f64),
                ("pools_started".to_string(), pool::POOLS_STARTED.load(Ordering::Relaxed) as f64),
                ("workers_started".to_string(), pool::WORKERS_STARTED.load(Ordering::Relaxed) as f64),
                ("workers_reused".to_string(), pool::WORKERS_REUSED.load(Ordering::Relaxed) as f64),
            ]
        }
        #[cfg(not(parallel_supported))]
        {
            Vec::new()
        }
    }
}

export_engine!(ParallelEngine);
