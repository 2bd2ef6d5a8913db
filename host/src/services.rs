//! The host services handed to engine hooks (`pyhost_abi::HostServices`).

use crate::loader::HOST_PYTHON;
use abi_stable::std_types::RStr;
use pyhost_abi::{HostServices, LogLevel, ABI_VERSION};
use std::sync::OnceLock;

pub const HOST_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name of the running engine, for tagging its log lines.
static ENGINE_NAME: OnceLock<String> = OnceLock::new();

extern "C" fn log_from_engine(level: LogLevel, message: RStr<'_>) {
    // A logging failure must never unwind into the engine.
    let _ = std::panic::catch_unwind(|| {
        let engine = ENGINE_NAME.get().map(String::as_str).unwrap_or("?");
        let message = message.as_str();
        // One target for every engine's messages, so that the default filter can show them
        // and a user can filter them (`PYHOST_LOG=engine=warn`); the engine's name leads.
        match level {
            LogLevel::Error => tracing::error!(target: "engine", "{engine}: {message}"),
            LogLevel::Warn => tracing::warn!(target: "engine", "{engine}: {message}"),
            LogLevel::Info => tracing::info!(target: "engine", "{engine}: {message}"),
            LogLevel::Debug => tracing::debug!(target: "engine", "{engine}: {message}"),
            LogLevel::Trace => tracing::trace!(target: "engine", "{engine}: {message}"),
        }
    });
}

/// The services for the engine called `engine_name` (set once per process).
pub fn host_services(engine_name: &str) -> &'static HostServices {
    static SERVICES: OnceLock<HostServices> = OnceLock::new();
    let _ = ENGINE_NAME.set(engine_name.to_string());
    SERVICES.get_or_init(|| HostServices {
        host_version: RStr::from_str(HOST_VERSION),
        abi_version: RStr::from_str(ABI_VERSION),
        python_major: HOST_PYTHON.0,
        python_minor: HOST_PYTHON.1,
        log: log_from_engine,
    })
}
