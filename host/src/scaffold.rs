//! `pyhost new-engine NAME [DIR]`: writes a new engine crate that builds and loads as it is.
//!
//! The crate is a `cdylib` named `pyhost_engine_NAME` (so its library is the file discovery
//! looks for), with its own empty `[workspace]` (it builds wherever it is put), pyhost-abi by path
//! and pyo3-ffi. The templates are the files in `scaffold/`; `{{key}}` marks what is filled in.
//! Nothing is written unless every check passes.

use crate::cli::NewEngineArgs;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The pyhost-abi crate of the source tree this pyhost was built from.
const SOURCE_TREE_ABI_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../abi");
/// Where a wheel install puts the pyhost-abi crate (`cargo package`'s copy), from the folder
/// of the pyhost binary.
const INSTALLED_ABI_PATH: &str = "../share/pyhost/abi";

/// The python3.x the host was built with (suggested for version-specific engines).
const HOST_PYTHON_EXECUTABLE: &str = env!("PYHOST_PYTHON_EXECUTABLE");

/// Engines pyhost ships: a new engine with one of these names would shadow it.
const SHIPPED_ENGINES: [&str; 3] = ["stock", "stackless", "parallel"];

/// The longest engine name accepted (the crate, library and type names derive from it).
const MAX_NAME_LEN: usize = 64;

/// Minimum CPython of an `abi3` engine: the oldest CPython pyhost builds against.
const ABI3_MINIMUM: (u8, u8) = (3, 12);

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.in");
const LIB_RS: &str = include_str!("scaffold/lib.rs.in");
const BUILD_RS: &str = include_str!("scaffold/build.rs.in");
const README_MD: &str = include_str!("scaffold/README.md.in");
const README_ABI3: &str = include_str!("scaffold/python-abi3.md.in");
const README_EXACT: &str = include_str!("scaffold/python-exact.md.in");
const GITIGNORE: &str = include_str!("scaffold/gitignore.in");

/// `--python`: which CPython a new engine targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PythonChoice {
    /// Limited API: loads into any pyhost embedding CPython 3.12 or newer.
    Abi3,
    /// Full C API of CPython 3.13: loads into a pyhost embedding exactly 3.13.
    Cp313,
}

impl PythonChoice {
    /// `(major, minor)`: the minimum for abi3, the one version otherwise.
    fn version(self) -> (u8, u8) {
        match self {
            PythonChoice::Abi3 => ABI3_MINIMUM,
            PythonChoice::Cp313 => (3, 13),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            PythonChoice::Abi3 => "abi3",
            PythonChoice::Cp313 => "cp313",
        }
    }
}

/// Why `new-engine` refuses to run; shown as `pyhost: error: …`, exit status 2.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Checks an engine name: lowercase ASCII letters, digits and `_`, starting with a letter.
///
/// Discovery maps `-` to `_` in file names and the loader compares names that way, so a `-`
/// would give an engine whose `--engine` name and library name differ; the crate, library and
/// Rust type names all derive from NAME, so it must be a valid identifier piece too.
pub fn validate_name(name: &str) -> Result<(), Refusal> {
    let refuse = |why: String| Err(Refusal(format!("invalid engine name '{name}': {why}")));
    let Some(first) = name.chars().next() else {
        return Err(Refusal("the engine name is empty".to_string()));
    };
    if name.len() > MAX_NAME_LEN {
        return refuse(format!("longer than {MAX_NAME_LEN} characters"));
    }
    if !first.is_ascii_lowercase() {
        return refuse("it must start with a lowercase letter (a-z)".to_string());
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
        let hint = if bad == '-' {
            format!("; use '{}'", name.replace('-', "_"))
        } else if bad.is_ascii_uppercase() {
            format!("; use '{}'", name.to_ascii_lowercase())
        } else {
            String::new()
        };
        return refuse(format!(
            "'{bad}' is not allowed (lowercase letters, digits and '_', starting with a letter){hint}"
        ));
    }
    if SHIPPED_ENGINES.contains(&name) {
        return refuse(format!(
            "pyhost ships an engine called '{name}', and an engine of the same name would hide it \
             (pick another name)"
        ));
    }
    if name == "pyhost" {
        return refuse("'pyhost' is the name of pyhost's own Python module".to_string());
    }
    Ok(())
}

/// `my_engine2` → `MyEngine2Engine`; `fast_engine` → `FastEngine`.
pub fn type_name(name: &str) -> String {
    let mut out: String = name
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect::<String>()
        })
        .collect();
    if !out.ends_with("Engine") {
        out.push_str("Engine");
    }
    out
}

/// Everything the templates are filled with.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub python: PythonChoice,
    /// The pyhost-abi crate folder (absolute), written into Cargo.toml.
    pub abi_path: PathBuf,
    /// The pyhost source tree holding `tests/oracle/run.sh`, if the abi folder is in one.
    pub source_tree: Option<PathBuf>,
    /// The python3.13 to suggest for `PYO3_PYTHON` (version-specific engines).
    pub host_python: String,
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Fills `{{key}}` in `template`; every key must be known.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    debug_assert!(!out.contains("{{"), "template key left unfilled in:\n{out}");
    out
}

/// The files of the new crate: (path inside the crate folder, contents).
pub fn render(plan: &Plan) -> Vec<(&'static str, String)> {
    let name = plan.name.as_str();
    let (major, minor) = plan.python.version();
    let (major, minor) = (major.to_string(), minor.to_string());
    let abi3 = plan.python == PythonChoice::Abi3;
    let abi_display = plan.abi_path.display().to_string();
    let description = format!("{name}: a pyhost engine (say here what it does)");
    let pyo3_features = if abi3 {
        format!("\"abi3-py{major}{minor}\", \"extension-module\"")
    } else {
        "\"extension-module\"".to_string()
    };
    let pyo3_comment = if abi3 {
        format!("`abi3-py{major}{minor}`: the Limited API only, CPython {major}.{minor} or newer.")
    } else {
        format!("No `abi3`: the full C API of CPython {major}.{minor} (see build.rs).")
    };
    let build_dependencies = if abi3 {
        String::new()
    } else {
        "\n[build-dependencies]\n\
         # build.rs checks which CPython pyo3-ffi is configured for.\n\
         pyo3-build-config = { version = \"0.30\", features = [\"resolve-config\"] }\n"
            .to_string()
    };
    let (python_target, target_comment) = if abi3 {
        (
            format!("PythonTarget::abi3({major}, {minor})"),
            format!("abi3: Limited API only, so any pyhost embedding CPython >= {major}.{minor} loads it."),
        )
    } else {
        (
            format!("PythonTarget::exact({major}, {minor})"),
            format!("cp{major}{minor}: the full C API, so only a pyhost embedding CPython {major}.{minor} loads it."),
        )
    };
    let host_python =
        if plan.host_python.is_empty() { format!("python{major}.{minor}") } else { plan.host_python.clone() };
    let pyhost_source = match &plan.source_tree {
        Some(dir) => dir.display().to_string(),
        None => "PYHOST_SOURCE_TREE".to_string(),
    };
    let common: Vec<(&str, &str)> = vec![
        ("name", name),
        ("py_major", &major),
        ("py_minor", &minor),
        ("host_python_display", &host_python),
    ];
    let python_section = fill(if abi3 { README_ABI3 } else { README_EXACT }, &common).trim_end().to_string();
    let type_name = type_name(name);
    let abi_toml = toml_string(&abi_display);
    let description_toml = description.replace('\\', "\\\\").replace('"', "\\\"");
    let host_python_rust = format!("{host_python:?}");
    let mut values = common.clone();
    values.extend([
        ("type_name", type_name.as_str()),
        ("abi_path", abi_toml.as_str()),
        ("abi_path_display", abi_display.as_str()),
        ("description", description_toml.as_str()),
        ("pyo3_features", pyo3_features.as_str()),
        ("pyo3_comment", pyo3_comment.as_str()),
        ("build_dependencies", build_dependencies.as_str()),
        ("python_target", python_target.as_str()),
        ("target_comment", target_comment.as_str()),
        ("python_section", python_section.as_str()),
        ("pyhost_source", pyhost_source.as_str()),
        ("host_python", host_python_rust.as_str()),
    ]);
    let mut files = vec![
        ("Cargo.toml", fill(CARGO_TOML, &values)),
        ("src/lib.rs", fill(LIB_RS, &values)),
        ("README.md", fill(README_MD, &values)),
        (".gitignore", GITIGNORE.to_string()),
    ];
    if !abi3 {
        files.push(("build.rs", fill(BUILD_RS, &values)));
    }
    files
}

/// The pyhost-abi folder to use: `--abi-path`, else the copy installed with pyhost (a wheel
/// install), else the build tree's `abi/`; it must hold a `Cargo.toml` for the package
/// `pyhost-abi`.
fn resolve_abi_path(given: Option<&Path>) -> Result<PathBuf, Refusal> {
    let (path, from_option) = match given {
        Some(path) => (path.to_path_buf(), true),
        None => (installed_abi_path().unwrap_or_else(|| PathBuf::from(SOURCE_TREE_ABI_PATH)), false),
    };
    let manifest = path.join("Cargo.toml");
    let Ok(text) = std::fs::read_to_string(&manifest) else {
        let shown = crate::discovery::normalize(&path);
        return Err(Refusal(if from_option {
            format!("--abi-path {}: no pyhost-abi crate there (no Cargo.toml)", shown.display())
        } else {
            format!(
                "the pyhost-abi crate of the source tree this pyhost was built from ({}) is not there any \
                 more, and none is installed with it; pass --abi-path PATH, the abi/ folder of a pyhost \
                 source tree",
                shown.display()
            )
        }));
    };
    if !text.lines().any(|line| line.replace(' ', "") == "name=\"pyhost-abi\"") {
        return Err(Refusal(format!(
            "{} is not the pyhost-abi crate (its Cargo.toml names another package); pass --abi-path \
             PATH, the abi/ folder of a pyhost source tree",
            manifest.display()
        )));
    }
    std::fs::canonicalize(&path).map_err(|err| Refusal(format!("{}: {err}", path.display())))
}

/// The pyhost-abi crate installed with this pyhost, if there is one.
fn installed_abi_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join(INSTALLED_ABI_PATH);
    path.join("Cargo.toml").is_file().then_some(path)
}

/// The version a pyhost-abi `Cargo.toml` declares, when it is written out there.
fn declared_version(abi_path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(abi_path.join("Cargo.toml")).ok()?;
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("version")?.trim_start().strip_prefix('=')?.trim();
        Some(value.strip_prefix('"')?.strip_suffix('"')?.to_string())
    })
}

/// Refuses a DIR that exists and is not an empty folder.
fn check_target_dir(dir: &Path) -> Result<(), Refusal> {
    match std::fs::symlink_metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Refusal(format!("cannot use {}: {err}", dir.display()))),
        Ok(meta) if !meta.is_dir() => {
            Err(Refusal(format!("{} already exists and is not a folder", dir.display())))
        }
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir)
                .map_err(|err| Refusal(format!("cannot read {}: {err}", dir.display())))?;
            if entries.next().is_some() {
                Err(Refusal(format!(
                    "{} already exists and is not empty; choose another folder (pyhost new-engine NAME DIR)",
                    dir.display()
                )))
            } else {
                Ok(())
            }
        }
    }
}

/// Writes `files` under `dir` (created if missing). On failure, removes `dir` if it created it.
fn write_files(dir: &Path, files: &[(&str, String)], seed_lock: Option<&Path>) -> std::io::Result<()> {
    let created = !dir.exists();
    let result = (|| {
        std::fs::create_dir_all(dir.join("src"))?;
        for (path, contents) in files {
            std::fs::write(dir.join(path), contents)?;
        }
        if let Some(lock) = seed_lock {
            std::fs::copy(lock, dir.join("Cargo.lock"))?;
        }
        Ok(())
    })();
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// `pyhost new-engine`: 0 when the crate is written, 2 when refused, 1 when writing failed.
pub fn run(args: &NewEngineArgs) -> i32 {
    match new_engine(args) {
        Ok(()) => 0,
        Err((code, message)) => {
            eprintln!("pyhost: error: {message}");
            code
        }
    }
}

fn new_engine(args: &NewEngineArgs) -> Result<(), (i32, String)> {
    let refused = |Refusal(message)| (2, message);
    validate_name(&args.name).map_err(refused)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    check_target_dir(&dir).map_err(refused)?;
    let abi_path = resolve_abi_path(args.abi_path.as_deref()).map_err(refused)?;
    if let Some(version) = declared_version(&abi_path) {
        if version != pyhost_abi::ABI_VERSION {
            eprintln!(
                "pyhost: warning: {} is pyhost-abi {version}, this pyhost speaks ABI {}; it may refuse \
                 the engine",
                abi_path.display(),
                pyhost_abi::ABI_VERSION
            );
        }
    }
    let (major, minor) = crate::loader::HOST_PYTHON;
    if args.python == PythonChoice::Cp313 && (major, minor) != (3, 13) {
        eprintln!(
            "pyhost: warning: a cp313 engine loads only into a pyhost embedding CPython 3.13; this one \
             embeds {major}.{minor}"
        );
    }
    let source_tree =
        abi_path.parent().filter(|tree| tree.join("tests/oracle/run.sh").is_file()).map(Path::to_path_buf);
    // The source tree's lock file (or, installed from a wheel, the one `cargo package` wrote
    // beside the pyhost-abi crate) pins the dependency versions pyhost is built and tested with
    // (cargo drops the entries the engine does not need), and lets the engine build offline.
    let seed_lock = source_tree.as_deref().unwrap_or(&abi_path).join("Cargo.lock");
    let seed_lock = seed_lock.is_file().then_some(seed_lock);
    let plan = Plan {
        name: args.name.clone(),
        python: args.python,
        abi_path,
        source_tree,
        // A wheel was built by a python that may be gone (pip's build environment): then the
        // templates say `python3.X`, which a venv provides.
        host_python: if Path::new(HOST_PYTHON_EXECUTABLE).is_file() {
            HOST_PYTHON_EXECUTABLE.to_string()
        } else {
            String::new()
        },
    };
    let files = render(&plan);
    write_files(&dir, &files, seed_lock.as_deref())
        .map_err(|err| (1, format!("cannot write the engine crate in {}: {err}", dir.display())))?;

    let shown = dir.display().to_string();
    let manifest = dir.join("Cargo.toml");
    // Where `cargo build` puts the library: CARGO_TARGET_DIR (relative to where cargo runs, as
    // the next line is typed here), else the crate's own target/.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| dir.join("target"), PathBuf::from);
    let library = target_dir.join("debug").join(crate::discovery::library_file_name(&args.name));
    let mut library = library.display().to_string();
    if !library.contains('/') {
        library = format!("./{library}");
    }
    println!("Created engine '{}' ({}) in {shown}", args.name, args.python.tag());
    println!();
    println!("Build it and run a program with it:");
    let env = if plan.python == PythonChoice::Cp313 && !plan.host_python.is_empty() {
        format!("PYO3_PYTHON={} ", plan.host_python)
    } else {
        String::new()
    };
    println!("    {env}cargo build --manifest-path {}", manifest.display());
    println!("    pyhost --engine {library} -c \"import pyhost; print(pyhost.engine)\"");
    println!();
    println!("{shown}/README.md tells how to install, test and benchmark it.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, python: PythonChoice) -> Plan {
        Plan {
            name: name.to_string(),
            python,
            abi_path: PathBuf::from("/src/pyhost/abi"),
            source_tree: Some(PathBuf::from("/src/pyhost")),
            host_python: "/opt/python3.13/bin/python3.13".to_string(),
        }
    }

    fn file<'a>(files: &'a [(&str, String)], path: &str) -> &'a str {
        &files.iter().find(|(p, _)| *p == path).unwrap_or_else(|| panic!("no {path}")).1
    }

    #[test]
    fn good_names_pass() {
        for name in ["demo", "a", "my_engine", "x86", "fast_path_2", &"a".repeat(MAX_NAME_LEN)] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        let message = |name: &str| validate_name(name).unwrap_err().0;
        assert_eq!(message(""), "the engine name is empty");
        assert!(message("2fast").contains("must start with a lowercase letter"));
        assert!(message("_x").contains("must start with a lowercase letter"));
        assert!(message("Demo").contains("must start with a lowercase letter"));
        assert!(message("my-engine").contains("use 'my_engine'"), "{}", message("my-engine"));
        assert!(message("myEngine").contains("use 'myengine'"));
        assert!(message("a.b").contains("'.' is not allowed"));
        assert!(message("a/b").contains("'/' is not allowed"));
        assert!(message("héllo").contains("'é' is not allowed"));
        assert!(message(&"a".repeat(MAX_NAME_LEN + 1)).contains("longer than"));
        for shipped in SHIPPED_ENGINES {
            assert!(message(shipped).contains("pyhost ships an engine called"), "{shipped}");
        }
        assert!(message("pyhost").contains("pyhost's own Python module"));
    }

    #[test]
    fn names_match_what_discovery_looks_for() {
        // The library cargo builds from `[lib] name = "pyhost_engine_NAME"` is the file
        // discovery finds for `--engine NAME`, and the file name maps back to NAME.
        let file = crate::discovery::library_file_name("my_engine");
        assert_eq!(file, "libpyhost_engine_my_engine.so");
        assert_eq!(crate::discovery::engine_name_of(&file).as_deref(), Some("my_engine"));
        let files = render(&plan("my_engine", PythonChoice::Abi3));
        assert!(file_contains(&files, "Cargo.toml", "name = \"pyhost_engine_my_engine\""));
        assert!(file_contains(&files, "Cargo.toml", "name = \"pyhost-engine-my_engine\""));
    }

    fn file_contains(files: &[(&str, String)], path: &str, needle: &str) -> bool {
        file(files, path).contains(needle)
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("demo"), "DemoEngine");
        assert_eq!(type_name("my_engine2"), "MyEngine2Engine");
        assert_eq!(type_name("fast_engine"), "FastEngine");
        assert_eq!(type_name("a__b_"), "ABEngine");
    }

    #[test]
    fn abi3_crate_targets_the_limited_api() {
        let files = render(&plan("demo", PythonChoice::Abi3));
        let paths: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
        assert_eq!(paths, ["Cargo.toml", "src/lib.rs", "README.md", ".gitignore"]);
        for (path, contents) in &files {
            assert!(!contents.contains("{{") && !contents.contains("}}"), "{path} has an unfilled key");
        }
        let cargo = file(&files, "Cargo.toml");
        assert!(cargo.contains("crate-type = [\"cdylib\"]"));
        assert!(cargo.contains("pyhost-abi = { path = \"/src/pyhost/abi\" }"));
        assert!(cargo.contains("features = [\"abi3-py312\", \"extension-module\"]"));
        assert!(cargo.trim_end().ends_with("[workspace]"));
        assert!(!cargo.contains("build-dependencies"));
        let lib = file(&files, "src/lib.rs");
        assert!(lib.contains("const NAME: &str = \"demo\";"));
        assert!(lib.contains("pub struct DemoEngine;"));
        assert!(lib.contains("python: PythonTarget::abi3(3, 12),"));
        assert!(lib.contains("export_engine!(DemoEngine);"));
        let readme = file(&files, "README.md");
        assert!(readme.contains("## Which CPython: abi3"));
        assert!(readme.contains("pyhost --engine target/debug/libpyhost_engine_demo.so"));
        assert!(readme.contains("/src/pyhost/tests/oracle/run.sh pyhost --engine"));
        assert!(readme.contains("PYHOST_ENGINE_PATH"));
        assert!(readme.contains("pyhost bench -e stock -e target/release/libpyhost_engine_demo.so"));
        assert_eq!(file(&files, ".gitignore"), "/target/\n");
    }

    #[test]
    fn cp313_crate_is_version_specific_and_checks_its_python() {
        let files = render(&plan("demo", PythonChoice::Cp313));
        for (path, contents) in &files {
            assert!(!contents.contains("{{") && !contents.contains("}}"), "{path} has an unfilled key");
        }
        let cargo = file(&files, "Cargo.toml");
        assert!(cargo.contains("features = [\"extension-module\"]"));
        assert!(!cargo.contains("abi3-py"));
        assert!(cargo.contains("[build-dependencies]\n"));
        assert!(file(&files, "src/lib.rs").contains("python: PythonTarget::exact(3, 13),"));
        let build = file(&files, "build.rs");
        assert!(build.contains("const SUGGESTED_PYTHON: &str = \"/opt/python3.13/bin/python3.13\";"));
        assert!(build.contains("!= (3, 13)"));
        let readme = file(&files, "README.md");
        assert!(readme.contains("## Which CPython: cp313"));
        assert!(readme.contains("PYO3_PYTHON=/opt/python3.13/bin/python3.13 cargo build"));
    }

    #[test]
    fn paths_are_quoted_for_toml() {
        assert_eq!(toml_string("/a b/c"), "\"/a b/c\"");
        assert_eq!(toml_string("/a\"b\\c"), "\"/a\\\"b\\\\c\"");
        let mut p = plan("demo", PythonChoice::Abi3);
        p.abi_path = PathBuf::from("/x \"y\"/abi");
        let files = render(&p);
        assert!(file(&files, "Cargo.toml").contains("pyhost-abi = { path = \"/x \\\"y\\\"/abi\" }"));
    }

    #[test]
    fn without_a_source_tree_the_readme_says_where_to_look() {
        let mut p = plan("demo", PythonChoice::Abi3);
        p.source_tree = None;
        assert!(file(&render(&p), "README.md").contains("PYHOST_SOURCE_TREE/tests/oracle/run.sh"));
    }

    #[test]
    fn target_dir_must_be_missing_or_empty() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(check_target_dir(&tmp.path().join("new")), Ok(()));
        assert_eq!(check_target_dir(tmp.path()), Ok(()));
        std::fs::write(tmp.path().join("f"), "").unwrap();
        assert!(check_target_dir(tmp.path()).unwrap_err().0.contains("already exists and is not empty"));
        assert!(check_target_dir(&tmp.path().join("f")).unwrap_err().0.contains("is not a folder"));
    }

    #[test]
    fn abi_path_must_be_the_pyhost_abi_crate() {
        let default = resolve_abi_path(None).expect("this source tree has abi/");
        assert!(default.join("src/sdk.rs").is_file());
        assert_eq!(declared_version(&default).as_deref(), Some(pyhost_abi::ABI_VERSION));
        let tmp = tempfile::tempdir().unwrap();
        assert!(resolve_abi_path(Some(tmp.path())).unwrap_err().0.contains("no pyhost-abi crate there"));
        std::fs::write(tmp.path().join("Cargo.toml"), "[package]\nname = \"other\"\n").unwrap();
        assert!(resolve_abi_path(Some(tmp.path())).unwrap_err().0.contains("is not the pyhost-abi crate"));
    }
}
