//! The engine author's side of the ABI: implement [`Engine`], then `export_engine!(MyEngine);`.
//!
//! Every entry point the macro generates runs the engine's code under `catch_unwind`, so a panic
//! inside an engine becomes an error message for the host instead of unwinding across the FFI
//! boundary (which would abort the process).

use crate::{EngineDescriptor, EngineStat, HookResult, HostServices};
use abi_stable::std_types::{RErr, ROk, RResult, RString, RVec};
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// An evaluation engine. Every hook has a do-nothing default: an engine overrides only what its
/// job needs (the stock engine overrides nothing).
pub trait Engine {
    /// Name, version, description and targeted CPython.
    fn descriptor() -> EngineDescriptor;

    /// Before `Py_InitializeFromConfig`: only pre-initialization C API calls are allowed here
    /// (e.g. `PyImport_AppendInittab`).
    fn before_init(_host: &HostServices) -> Result<(), String> {
        Ok(())
    }

    /// After the interpreter is initialized; the GIL is held.
    fn after_init(_host: &HostServices) -> Result<(), String> {
        Ok(())
    }

    /// Just before the program runs; the GIL is held.
    fn before_run(_host: &HostServices) -> Result<(), String> {
        Ok(())
    }

    /// At interpreter shutdown, after the program's own `atexit` handlers; the GIL is held.
    fn at_exit(_host: &HostServices) -> Result<(), String> {
        Ok(())
    }

    /// Named counters describing the engine's work so far.
    fn statistics() -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// Text of a panic payload, for the error message.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `f`, turning an `Err` or a panic into an `RErr` message.
pub fn guard<T>(entry_point: &str, f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => ROk(value),
        Ok(Err(message)) => RErr(message.into()),
        Err(payload) => {
            RErr(format!("engine panicked in {entry_point}: {}", panic_message(&*payload)).into())
        }
    }
}

#[doc(hidden)]
pub mod shims {
    //! Monomorphized `extern "C"` entry points; `export_engine!` puts them in the root module.
    use super::*;

    pub extern "C" fn descriptor<E: Engine>() -> RResult<EngineDescriptor, RString> {
        guard("descriptor", || Ok(E::descriptor()))
    }
    pub extern "C" fn before_init<E: Engine>(host: &HostServices) -> HookResult {
        guard("before_init", || E::before_init(host))
    }
    pub extern "C" fn after_init<E: Engine>(host: &HostServices) -> HookResult {
        guard("after_init", || E::after_init(host))
    }
    pub extern "C" fn before_run<E: Engine>(host: &HostServices) -> HookResult {
        guard("before_run", || E::before_run(host))
    }
    pub extern "C" fn at_exit<E: Engine>(host: &HostServices) -> HookResult {
        guard("at_exit", || E::at_exit(host))
    }
    pub extern "C" fn statistics<E: Engine>() -> RResult<RVec<EngineStat>, RString> {
        guard("statistics", || {
            Ok(E::statistics()
                .into_iter()
                .map(|(name, value)| EngineStat { name: name.into(), value })
                .collect())
        })
    }
}

/// The root module of engine `E`, built in this process: what [`export_engine!`] exports, and
/// what a host uses for an engine compiled into it.
pub fn engine_module<E: Engine>() -> crate::EngineModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    crate::EngineModule {
        descriptor: shims::descriptor::<E>,
        before_init: shims::before_init::<E>,
        after_init: shims::after_init::<E>,
        before_run: shims::before_run::<E>,
        at_exit: shims::at_exit::<E>,
        statistics: shims::statistics::<E>,
    }
    .leak_into_prefix()
}

/// Exports `$engine` (a type implementing [`Engine`]) as this library's pyhost engine.
///
/// The library must be a `cdylib`. Only one engine per library.
#[macro_export]
macro_rules! export_engine {
    ($engine:ty) => {
        const _: () = {
            use $crate::__private::abi_stable;

            fn pyhost_engine_root_module() -> $crate::EngineModuleRef {
                $crate::sdk::engine_module::<$engine>()
            }

            extern "C" fn pyhost_erased_root_module() -> abi_stable::library::RootModuleResult {
                abi_stable::library::__call_root_module_loader(pyhost_engine_root_module)
            }

            // The symbol abi_stable's loader looks up (`ROOT_MODULE_LOADER_NAME`, checked by a
            // unit test in pyhost-abi).
            #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
            pub static PYHOST_ENGINE_LIB_HEADER: abi_stable::library::LibHeader = unsafe {
                // SAFETY: the constructor returns the `EngineModuleRef` named as `M` here.
                abi_stable::library::LibHeader::from_constructor::<$crate::EngineModuleRef>(
                    pyhost_erased_root_module,
                    abi_stable::library::CheckTypeLayout::Yes,
                )
            };
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_engine_uses_abi_stables_loader_symbol() {
        assert_eq!(abi_stable::library::ROOT_MODULE_LOADER_NAME, "_1as_0lib_1header_0root_bmodule_bloader");
    }

    #[test]
    fn guard_turns_panics_into_errors_naming_the_entry_point() {
        let result: RResult<(), RString> = guard("before_run", || panic!("boom"));
        assert_eq!(result.unwrap_err().as_str(), "engine panicked in before_run: boom");
    }

    #[test]
    fn guard_passes_errors_and_values_through() {
        assert_eq!(guard("x", || Ok(5)).unwrap(), 5);
        let err: RResult<(), RString> = guard("x", || Err("nope".to_string()));
        assert_eq!(err.unwrap_err().as_str(), "nope");
    }
}
