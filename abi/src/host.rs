//! Services the host offers to an engine's lifecycle hooks.

use abi_stable::{std_types::RStr, StableAbi};

/// Severity of a message an engine logs through the host (shown with `PYHOST_LOG`).
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Handed by reference to every lifecycle hook; valid for the duration of the call.
#[repr(C)]
#[derive(StableAbi)]
pub struct HostServices {
    /// The pyhost host version.
    pub host_version: RStr<'static>,
    /// The ABI version the host speaks.
    pub abi_version: RStr<'static>,
    /// The CPython the host embeds.
    pub python_major: u8,
    pub python_minor: u8,
    /// Log through the host's `tracing` subscriber, tagged with the engine's name.
    pub log: extern "C" fn(level: LogLevel, message: RStr<'_>),
}

impl HostServices {
    /// Log a message through the host.
    pub fn log(&self, level: LogLevel, message: &str) {
        (self.log)(level, RStr::from(message))
    }
}
