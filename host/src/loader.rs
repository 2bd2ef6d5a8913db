//! Loading an engine library and the checks it must pass before any of its code runs on our
//! interpreter: the ABI version (semver-compatible with the host's), the root-module layout
//! (abi_stable's check), and the CPython target (`cp3XY` exactly, or `abi3` at most the host's).

use crate::discovery::{self, SearchDir};
use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::std_types::RResult;
use pyhost_abi::{EngineDescriptor, EngineModuleRef, EngineStat, HostServices, ABI_VERSION};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The engine used when neither `--engine` nor `$PYHOST_ENGINE` names one.
pub const DEFAULT_ENGINE: &str = "stock";

/// The CPython this host embeds (fixed at build time).
pub const HOST_PYTHON: (u8, u8) =
    (parse_u8(env!("PYHOST_PYTHON_MAJOR")), parse_u8(env!("PYHOST_PYTHON_MINOR")));

const fn parse_u8(s: &str) -> u8 {
    let bytes = s.as_bytes();
    let mut value = 0u8;
    let mut i = 0;
    while i < bytes.len() {
        value = value * 10 + (bytes[i] - b'0');
        i += 1;
    }
    value
}

/// The loader's message, plus what it most likely means when the engine needs a part of the C
/// API (or a libpython) that this pyhost's CPython does not have.
fn explain_open_error(reason: &str) -> String {
    let embedded = format!("CPython {}.{}", env!("PYHOST_PYTHON_MAJOR"), env!("PYHOST_PYTHON_MINOR"));
    if reason.contains("undefined symbol") {
        format!(
            "{reason} (the engine uses a CPython C API function that this pyhost's {embedded} lacks: \
             it was most likely built for another CPython version)"
        )
    } else if reason.contains("libpython") {
        format!("{reason} (the engine links a libpython other than this pyhost's {embedded})")
    } else {
        reason.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open engine library {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path} is not a pyhost engine (it exports no pyhost engine module): {reason}")]
    NotAnEngine { path: PathBuf, reason: String },
    #[error(
        "engine {path} was built against pyhost engine ABI {engine_abi}, but this pyhost speaks ABI {host_abi}; \
         rebuild the engine against pyhost-abi {host_abi}"
    )]
    AbiVersion { path: PathBuf, engine_abi: String, host_abi: &'static str },
    #[error("engine {path} has an incompatible ABI layout (pyhost ABI {host_abi}):\n{details}")]
    AbiLayout { path: PathBuf, host_abi: &'static str, details: String },
    #[error("engine {path} failed to initialize: {reason}")]
    Init { path: PathBuf, reason: String },
    #[error(
        "engine '{name}' ({path}) targets {target}, but this pyhost embeds CPython {}.{}; \
         use a pyhost built for that CPython or an engine built for this one",
        host.0, host.1
    )]
    PythonMismatch { name: String, path: PathBuf, target: String, host: (u8, u8) },
    #[error("engine {path} is named '{found}', not '{wanted}' as its file name says")]
    NameMismatch { path: PathBuf, found: String, wanted: String },
}

/// Why `--engine VALUE` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No engine of that name on the search path; the message lists what was found and where.
    #[error("{0}")]
    Unknown(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Finds and loads the engine `spec` names: a library path (see [`discovery::is_path`]) or an
/// engine name searched on the search path. `stock` is also built into pyhost, and used when no
/// stock library is found, so that a pyhost binary copied alone (`venv --copies`, a test that
/// copies `sys.executable`) still runs like python.
pub fn resolve(spec: &str) -> Result<LoadedEngine, ResolveError> {
    if discovery::is_path(spec) {
        return Ok(load(Path::new(spec), None)?);
    }
    let dirs = discovery::search_path();
    match discovery::find(spec, &dirs) {
        Some(path) => Ok(load(&path, Some(spec))?),
        None if spec == DEFAULT_ENGINE => Ok(builtin_stock()),
        None => Err(ResolveError::Unknown(unknown_engine_message(spec, &dirs))),
    }
}

/// Names of the engines `--engine NAME` can select: those on the search path, and `stock`
/// (always available, built in when no library provides it). Sorted.
pub fn available_engine_names() -> Vec<String> {
    let mut names: Vec<String> =
        discovery::candidates(&discovery::search_path()).into_iter().map(|c| c.name).collect();
    if !names.iter().any(|n| n == DEFAULT_ENGINE) {
        names.push(DEFAULT_ENGINE.to_string());
        names.sort();
    }
    names
}

/// The stock engine compiled into the host: CPython's own loop, no hooks.
struct BuiltinStock;

impl pyhost_abi::Engine for BuiltinStock {
    fn descriptor() -> EngineDescriptor {
        EngineDescriptor {
            name: DEFAULT_ENGINE.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "CPython's own evaluation loop, no hooks (built into pyhost)".into(),
            python: pyhost_abi::PythonTarget::exact(HOST_PYTHON.0, HOST_PYTHON.1),
        }
    }
}

/// The built-in stock engine.
pub fn builtin_stock() -> LoadedEngine {
    let module = pyhost_abi::sdk::engine_module::<BuiltinStock>();
    tracing::debug!("no stock engine library found; using the stock engine built into pyhost");
    LoadedEngine {
        module,
        descriptor: <BuiltinStock as pyhost_abi::Engine>::descriptor(),
        source: EngineSource::BuiltIn,
    }
}

fn unknown_engine_message(spec: &str, dirs: &[SearchDir]) -> String {
    let found = discovery::candidates(dirs);
    let mut message = format!("no engine named '{spec}'");
    if found.is_empty() {
        message.push_str("; no engines were found at all.");
    } else {
        let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
        message.push_str(&format!("; engines found: {}.", names.join(", ")));
    }
    message.push_str("\nSearched (engine NAME is the file libpyhost_engine_NAME.so):");
    for dir in dirs {
        let note = if dir.path.is_dir() { "" } else { " (missing)" };
        message.push_str(&format!("\n  {}{note}", dir.path.display()));
    }
    message.push_str(&format!(
        "\nSet {} (colon-separated folders) or pass --engine PATH/TO/lib….so.",
        discovery::ENGINE_PATH_ENV
    ));
    message
}

/// Where an engine's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineSource {
    /// A library file (canonical path).
    Library(PathBuf),
    /// Compiled into the host (the stock engine's fallback).
    BuiltIn,
}

/// A loaded, checked engine. Libraries are never unloaded (abi_stable keeps them mapped).
#[derive(Clone)]
pub struct LoadedEngine {
    pub module: EngineModuleRef,
    pub descriptor: EngineDescriptor,
    pub source: EngineSource,
}

/// The semver-compatibility key of an ABI version: `0.x` for 0.x, the major number otherwise.
fn compat_key(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    Some(if major == 0 { (0, minor) } else { (major, 0) })
}

/// Loads and checks the engine library at `path`. With `expected_name`, the engine must call
/// itself that (the name its file name carries).
pub fn load(path: &Path, expected_name: Option<&str>) -> Result<LoadedEngine, LoadError> {
    let started = Instant::now();
    let path = path.to_path_buf();
    let header = lib_header_from_path(&path).map_err(|err| match err {
        LibraryError::OpenError { err, .. } => {
            LoadError::Open { path: path.clone(), reason: explain_open_error(&err.to_string()) }
        }
        other => LoadError::NotAnEngine { path: path.clone(), reason: other.to_string() },
    })?;
    let engine_abi = header.version_strings().version.as_str().to_string();
    tracing::debug!(path = %path.display(), engine_abi, host_abi = ABI_VERSION, "checking engine ABI");
    if compat_key(&engine_abi).is_none() || compat_key(&engine_abi) != compat_key(ABI_VERSION) {
        return Err(LoadError::AbiVersion { path, engine_abi, host_abi: ABI_VERSION });
    }
    let module = header.init_root_module::<EngineModuleRef>().map_err(|err| match err {
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => LoadError::AbiVersion {
            path: path.clone(),
            engine_abi: actual_version.to_string(),
            host_abi: ABI_VERSION,
        },
        LibraryError::AbiInstability(details) => {
            LoadError::AbiLayout { path: path.clone(), host_abi: ABI_VERSION, details: details.to_string() }
        }
        other => LoadError::Init { path: path.clone(), reason: other.to_string() },
    })?;
    let descriptor = match (module.descriptor())() {
        RResult::ROk(descriptor) => descriptor,
        RResult::RErr(reason) => return Err(LoadError::Init { path, reason: reason.into() }),
    };
    if let Some(wanted) = expected_name {
        if descriptor.name.as_str().replace('-', "_") != wanted.replace('-', "_") {
            return Err(LoadError::NameMismatch {
                path,
                found: descriptor.name.into(),
                wanted: wanted.into(),
            });
        }
    }
    if !descriptor.python.accepts(HOST_PYTHON.0, HOST_PYTHON.1) {
        return Err(LoadError::PythonMismatch {
            name: descriptor.name.into(),
            path,
            target: descriptor.python.to_string(),
            host: HOST_PYTHON,
        });
    }
    tracing::debug!(
        engine = descriptor.name.as_str(),
        version = descriptor.version.as_str(),
        target = %descriptor.python,
        elapsed_us = started.elapsed().as_micros() as u64,
        "engine loaded"
    );
    Ok(LoadedEngine { module, descriptor, source: EngineSource::Library(discovery::normalize(&path)) })
}

/// A lifecycle phase, for hook calls and messages.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    BeforeInit,
    AfterInit,
    BeforeRun,
    AtExit,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::BeforeInit => "before_init",
            Phase::AfterInit => "after_init",
            Phase::BeforeRun => "before_run",
            Phase::AtExit => "at_exit",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("engine '{engine}' failed in {phase}: {message}")]
pub struct HookError {
    pub engine: String,
    pub phase: &'static str,
    pub message: String,
}

impl LoadedEngine {
    pub fn name(&self) -> &str {
        self.descriptor.name.as_str()
    }

    /// The library file, or `None` for a built-in engine.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            EngineSource::Library(path) => Some(path),
            EngineSource::BuiltIn => None,
        }
    }

    /// What `--engine` must say to get this very engine again (in a child process).
    pub fn spec(&self) -> String {
        match &self.source {
            EngineSource::Library(path) => path.display().to_string(),
            EngineSource::BuiltIn => self.name().to_string(),
        }
    }

    /// The path for people: the library file, or `(built into pyhost)`.
    pub fn location(&self) -> String {
        self.path().map(|p| p.display().to_string()).unwrap_or_else(|| "(built into pyhost)".to_string())
    }

    /// Calls the engine's hook for `phase`, timing it.
    pub fn run_hook(&self, phase: Phase, services: &HostServices) -> Result<(), HookError> {
        let hook = match phase {
            Phase::BeforeInit => self.module.before_init(),
            Phase::AfterInit => self.module.after_init(),
            Phase::BeforeRun => self.module.before_run(),
            Phase::AtExit => self.module.at_exit(),
        };
        let started = Instant::now();
        let result = hook(services);
        tracing::debug!(
            engine = self.name(),
            phase = phase.name(),
            elapsed_us = started.elapsed().as_micros() as u64,
            ok = result.is_ok(),
            "lifecycle hook"
        );
        result.into_result().map_err(|message| HookError {
            engine: self.name().to_string(),
            phase: phase.name(),
            message: message.into(),
        })
    }

    /// The engine's statistics, or the error it reported.
    pub fn statistics(&self) -> Result<Vec<EngineStat>, String> {
        (self.module.statistics())().into_result().map(|stats| stats.into_vec()).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_errors_say_what_a_missing_symbol_or_libpython_means() {
        let missing = super::explain_open_error("x.so: undefined symbol: _PyFoo");
        assert!(missing.contains("built for another CPython version"), "{missing}");
        let libpython = super::explain_open_error("libpython3.13.so.1.0: cannot open shared object file");
        assert!(libpython.contains("links a libpython other than"), "{libpython}");
        assert_eq!(super::explain_open_error("no such file"), "no such file");
    }

    use super::*;

    #[test]
    fn abi_versions_are_compared_like_semver() {
        assert_eq!(compat_key("0.1.0"), compat_key("0.1.7"));
        assert_ne!(compat_key("0.1.0"), compat_key("0.2.0"));
        assert_eq!(compat_key("1.2.0"), compat_key("1.5.3"));
        assert_ne!(compat_key("1.0.0"), compat_key("2.0.0"));
        assert_eq!(compat_key("garbage"), None);
    }

    #[test]
    fn host_python_is_the_build_time_python() {
        assert_eq!(HOST_PYTHON.0, 3);
        assert!(HOST_PYTHON.1 >= 12);
    }
}
