//! The management commands: `pyhost engines`, `pyhost info` (and `pyhost bench`, in `bench/`;
//! `pyhost new-engine`, in `scaffold`).

use crate::cli::{Command, HostOptions, ENGINE_ENV};
use crate::discovery::{self, ENGINE_PATH_ENV};
use crate::loader::{self, HOST_PYTHON};
use crate::services::HOST_VERSION;
use pyhost_abi::ABI_VERSION;
use serde::Serialize;

pub fn run(command: Command, options: &HostOptions) -> i32 {
    match command {
        Command::Engines { json } => engines(json),
        Command::Info { json } => info(json),
        Command::Bench(args) => crate::bench::run(*args, options.engine.clone()),
        Command::NewEngine(args) => crate::scaffold::run(&args),
    }
}

/// One row of `pyhost engines`.
#[derive(Serialize)]
struct EngineRow {
    name: String,
    version: Option<String>,
    python: Option<String>,
    description: Option<String>,
    path: String,
    /// `ok`, or why the host refuses this engine.
    status: String,
}

fn engines(json: bool) -> i32 {
    let dirs = discovery::search_path();
    let candidates = discovery::candidates(&dirs);
    let builtin = (!candidates.iter().any(|c| c.name == loader::DEFAULT_ENGINE)).then(|| {
        let engine = loader::builtin_stock();
        EngineRow {
            name: engine.name().to_string(),
            version: Some(engine.descriptor.version.to_string()),
            python: Some(engine.descriptor.python.tag()),
            description: Some(engine.descriptor.description.to_string()),
            path: engine.location(),
            status: "ok".to_string(),
        }
    });
    let rows: Vec<EngineRow> = candidates
        .into_iter()
        .map(|candidate| {
            let path = candidate.path.display().to_string();
            match loader::load(&candidate.path, Some(&candidate.name)) {
                Ok(engine) => EngineRow {
                    name: candidate.name,
                    version: Some(engine.descriptor.version.to_string()),
                    python: Some(engine.descriptor.python.tag()),
                    description: Some(engine.descriptor.description.to_string()),
                    path,
                    status: "ok".to_string(),
                },
                Err(err) => EngineRow {
                    name: candidate.name,
                    version: None,
                    python: None,
                    description: None,
                    path,
                    status: format!("refused: {err}"),
                },
            }
        })
        .chain(builtin)
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("rows serialize"));
        return 0;
    }
    if rows.is_empty() {
        println!("No engines found. Searched:");
        for dir in &dirs {
            println!("  {}", dir.path.display());
        }
        return 0;
    }
    let name_width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let version_width =
        rows.iter().map(|r| r.version.as_deref().unwrap_or("-").len()).max().unwrap_or(7).max(7);
    println!("{:name_width$}  {:version_width$}  {:6}  PATH", "NAME", "VERSION", "PYTHON");
    for row in &rows {
        println!(
            "{:name_width$}  {:version_width$}  {:6}  {}",
            row.name,
            row.version.as_deref().unwrap_or("-"),
            row.python.as_deref().unwrap_or("-"),
            row.path
        );
        match (&row.description, row.status.as_str()) {
            (Some(description), "ok") => println!("{:name_width$}  {description}", ""),
            (_, status) => println!("{:name_width$}  {status}", ""),
        }
    }
    0
}

#[derive(Serialize)]
struct Info {
    host_version: &'static str,
    abi_version: &'static str,
    python_version: String,
    python_build: String,
    python_library: String,
    executable: Option<String>,
    default_engine: String,
    engine_search_path: Vec<discovery::SearchDir>,
}

/// The libpython file this process runs on (the launcher chose it: the venv's Python, or the one
/// pyhost was built against).
fn loaded_libpython() -> String {
    let mut found = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only reads the dynamic loader's tables; Py_GetVersion is a function of the
    // loaded libpython, and dli_fname (when set) is a NUL-terminated string owned by the loader.
    unsafe {
        if libc::dladdr(pyo3_ffi::Py_GetVersion as *const std::ffi::c_void, found.as_mut_ptr()) == 0 {
            return "?".into();
        }
        let found = found.assume_init();
        if found.dli_fname.is_null() {
            return "?".into();
        }
        std::ffi::CStr::from_ptr(found.dli_fname).to_string_lossy().into_owned()
    }
}

fn info(json: bool) -> i32 {
    // SAFETY: Py_GetVersion returns a pointer to a static NUL-terminated string and may be called
    // before the interpreter is initialized.
    let build = unsafe { std::ffi::CStr::from_ptr(pyo3_ffi::Py_GetVersion()) }.to_string_lossy().into_owned();
    let info = Info {
        host_version: HOST_VERSION,
        abi_version: ABI_VERSION,
        python_version: build.split_whitespace().next().unwrap_or("?").to_string(),
        python_build: build.clone(),
        python_library: loaded_libpython(),
        executable: std::env::current_exe().ok().map(|p| p.display().to_string()),
        default_engine: std::env::var(ENGINE_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "stock".into()),
        engine_search_path: discovery::search_path(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&info).expect("info serializes"));
        return 0;
    }
    println!("pyhost {}", info.host_version);
    println!("engine ABI:     {}", info.abi_version);
    println!(
        "CPython:        {} (built for {}.{}; {})",
        info.python_version, HOST_PYTHON.0, HOST_PYTHON.1, info.python_library
    );
    println!("executable:     {}", info.executable.as_deref().unwrap_or("?"));
    println!("default engine: {} (set {ENGINE_ENV} or pass --engine)", info.default_engine);
    println!("engine search path ({ENGINE_PATH_ENV}, then next to the binary):");
    for dir in &info.engine_search_path {
        let note = if dir.path.is_dir() { "" } else { "  (missing)" };
        println!("  {}{note}", dir.path.display());
    }
    0
}
