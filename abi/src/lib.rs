//! `pyhost-abi`: the one crate the pyhost host and its evaluation engines share.
//!
//! An engine is a `cdylib` that exports one root module, [`EngineModule`], built with
//! [`abi_stable`] so that the host checks its layout and ABI version when it loads it.
//!
//! - [`descriptor`]: what an engine says about itself (name, version, targeted CPython).
//! - [`host`]: services the host hands to an engine's lifecycle hooks.
//! - [`sdk`]: the [`Engine`] trait and the [`export_engine!`] macro an engine author uses; they
//!   catch panics at the FFI boundary and turn them into errors the host reports.
//!
//! The ABI version is this crate's package version. Under abi_stable's rule, a host refuses an
//! engine whose ABI has another major version (or, before 1.0, an older minor version), and any
//! engine whose root-module layout differs from the host's.

pub mod descriptor;
pub mod host;
pub mod sdk;

pub use descriptor::{EngineDescriptor, EngineStat, PythonTarget, PythonTargetKind};
pub use host::{HostServices, LogLevel};
pub use sdk::Engine;

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RString, RVec},
    StableAbi,
};

/// The ABI version spoken by whoever compiles this crate (host or engine).
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a lifecycle hook returns: `RErr` carries a message the host shows to the user.
pub type HookResult = RResult<(), RString>;

/// The root module an engine exports. Fields after the last prefix field may be added in later
/// minor ABI versions without breaking engines built before them.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = EngineModuleRef)))]
#[sabi(missing_field(panic))]
pub struct EngineModule {
    /// Who the engine is and which CPython it needs. Called before anything else.
    pub descriptor: extern "C" fn() -> RResult<EngineDescriptor, RString>,
    /// Before the interpreter is initialized: register built-in modules, adjust the process.
    pub before_init: extern "C" fn(&HostServices) -> HookResult,
    /// Right after `Py_InitializeFromConfig` succeeded, with the GIL held.
    pub after_init: extern "C" fn(&HostServices) -> HookResult,
    /// Just before the program (`-c`, `-m`, file, stdin or REPL) runs, with the GIL held.
    pub before_run: extern "C" fn(&HostServices) -> HookResult,
    /// When the interpreter shuts down (after the program's own `atexit` handlers), GIL held.
    pub at_exit: extern "C" fn(&HostServices) -> HookResult,
    /// The engine's own counters, for `pyhost bench` and `pyhost.engine_statistics()`.
    #[sabi(last_prefix_field)]
    pub statistics: extern "C" fn() -> RResult<RVec<EngineStat>, RString>,
}

impl RootModule for EngineModuleRef {
    declare_root_module_statics! {EngineModuleRef}
    const BASE_NAME: &'static str = "pyhost_engine";
    const NAME: &'static str = "pyhost engine";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

#[doc(hidden)]
pub mod __private {
    pub use abi_stable;
}
