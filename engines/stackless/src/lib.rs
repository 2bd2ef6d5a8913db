//! The `stackless` engine: Stackless Python's tasklets, channels and scheduler on stock CPython.
//!
//! - [`cpython_state`]: the CPython 3.13 thread-state fields a tasklet switch carries.
//! - [`fiber`]: `_stackless_core.Fiber`, a callable on its own C stack (corosensei), and the
//!   switch between the fibers of one OS thread.
//! - [`stack`]: the tasklets' C stacks: a few guarded stacks per thread, shared by copying a
//!   suspended tasklet's live bytes to the heap when another needs its stack.
//! - [`valgrind`]: client requests telling Valgrind's memcheck about the stack copying.
//! - [`sched`]: the scheduler's data (tasklet, thread-state and channel slots, the run queue)
//!   and the Rust fast paths of `schedule()`, `channel.send()` and `channel.receive()`.
//! - `stackless.py`: the `stackless` module (tasklet, channel, scheduler) built on fibers.
//! - this file: the engine (descriptor, hooks: register both built-in modules before init) and
//!   the two module definitions.
//!
//! It installs no PEP 523 hook: code that does not use tasklets runs at stock speed.

use pyhost_abi::{export_engine, Engine, EngineDescriptor, HostServices, PythonTarget};

#[cfg(stackless_supported)]
mod cpython_state;
#[cfg(stackless_supported)]
mod fiber;
#[cfg(stackless_supported)]
mod frames;
#[cfg(stackless_supported)]
mod modules;
#[cfg(stackless_supported)]
mod pool;
#[cfg(stackless_supported)]
mod reactor;
#[cfg(stackless_supported)]
mod sched;
#[cfg(stackless_supported)]
mod sockio;
#[cfg(stackless_supported)]
mod stack;
#[cfg(stackless_supported)]
mod valgrind;
#[cfg(stackless_supported)]
mod watchdog;

pub struct StacklessEngine;

impl Engine for StacklessEngine {
    fn descriptor() -> EngineDescriptor {
        EngineDescriptor {
            name: "stackless".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Stackless Python's tasklets, channels and scheduler (import stackless)".into(),
            // The switch mirrors CPython 3.13's private thread-state layout.
            python: PythonTarget::exact(3, 13),
        }
    }

    fn before_init(_host: &HostServices) -> Result<(), String> {
        #[cfg(stackless_supported)]
        {
            modules::register()
        }
        #[cfg(not(stackless_supported))]
        {
            Err(format!(
                "the stackless engine supports CPython 3.13 only (built against 3.{})",
                env!("PYHOST_STACKLESS_PYTHON_MINOR")
            ))
        }
    }

    fn at_exit(_host: &HostServices) -> Result<(), String> {
        // As in Stackless: tasklets still suspended are killed after the program's own atexit
        // functions (the host calls this hook after them), so their finally blocks run.
        #[cfg(stackless_supported)]
        {
            modules::kill_tasklets_at_exit()
        }
        #[cfg(not(stackless_supported))]
        {
            Ok(())
        }
    }

    fn statistics() -> Vec<(String, f64)> {
        #[cfg(stackless_supported)]
        {
            use std::sync::atomic::Ordering;
            vec![
                ("switches".to_string(), fiber::SWITCHES.load(Ordering::Relaxed) as f64),
                ("tasklets_started".to_string(), fiber::FIBERS_STARTED.load(Ordering::Relaxed) as f64),
                ("tasklets_leaked".to_string(), fiber::FIBERS_LEAKED.load(Ordering::Relaxed) as f64),
                ("stack_evictions".to_string(), stack::EVICTIONS.load(Ordering::Relaxed) as f64),
                ("stack_bytes_copied".to_string(), stack::BYTES_COPIED.load(Ordering::Relaxed) as f64),
            ]
        }
        #[cfg(not(stackless_supported))]
        {
            Vec::new()
        }
    }
}

export_engine!(StacklessEngine);
