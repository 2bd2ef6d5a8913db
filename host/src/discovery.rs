//! Where engines live and how they are named.
//!
//! An engine called `NAME` is the library `libpyhost_engine_NAME.so` (`-` in NAME becomes `_`).
//! The search path is `$PYHOST_ENGINE_PATH` (colon-separated, searched first), then the folders
//! installed next to the pyhost binary: the binary's own folder (a cargo build puts engines
//! there), `<bin>/engines/` and `<bin>/../lib/pyhost/engines/`. The first match wins.

use std::collections::BTreeMap;
use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::{Path, PathBuf};

pub const ENGINE_PATH_ENV: &str = "PYHOST_ENGINE_PATH";
const FILE_STEM_PREFIX: &str = "pyhost_engine_";

/// Why a folder is on the search path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    EnginePathEnv,
    NextToBinary,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchDir {
    pub path: PathBuf,
    pub origin: Origin,
}

/// An engine library found on the search path (not loaded yet).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    pub name: String,
    pub path: PathBuf,
}

/// The folders searched, in order.
pub fn search_path() -> Vec<SearchDir> {
    let mut dirs = Vec::new();
    if let Some(value) = std::env::var_os(ENGINE_PATH_ENV) {
        for path in std::env::split_paths(&value).filter(|p| !p.as_os_str().is_empty()) {
            dirs.push(SearchDir { path, origin: Origin::EnginePathEnv });
        }
    }
    if let Some(bin_dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        for path in [bin_dir.clone(), bin_dir.join("engines"), bin_dir.join("../lib/pyhost/engines")] {
            dirs.push(SearchDir { path, origin: Origin::NextToBinary });
        }
    }
    dirs
}

/// The library file name of engine `name`.
pub fn library_file_name(name: &str) -> String {
    format!("{DLL_PREFIX}{FILE_STEM_PREFIX}{}{DLL_SUFFIX}", name.replace('-', "_"))
}

/// The engine name a library file name stands for, if it names an engine.
pub fn engine_name_of(file_name: &str) -> Option<String> {
    let stem = file_name.strip_prefix(DLL_PREFIX)?.strip_suffix(DLL_SUFFIX)?;
    let name = stem.strip_prefix(FILE_STEM_PREFIX)?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Whether `--engine VALUE` names a library file rather than an engine.
pub fn is_path(spec: &str) -> bool {
    spec.contains(std::path::MAIN_SEPARATOR) || spec.ends_with(DLL_SUFFIX)
}

/// Finds engine `name` on the search path.
pub fn find(name: &str, dirs: &[SearchDir]) -> Option<PathBuf> {
    let file_name = library_file_name(name);
    dirs.iter().map(|dir| dir.path.join(&file_name)).find(|path| path.is_file())
}

/// Every engine on the search path, by name; an engine found twice keeps its first location.
pub fn candidates(dirs: &[SearchDir]) -> Vec<Candidate> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir.path) else { continue };
        let mut names: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|entry| {
                let name = engine_name_of(entry.file_name().to_str()?)?;
                entry.path().is_file().then(|| (name, entry.path()))
            })
            .collect();
        names.sort();
        for (name, path) in names {
            found.entry(name).or_insert_with(|| normalize(&path));
        }
    }
    found.into_iter().map(|(name, path)| Candidate { name, path }).collect()
}

/// `a/b/../c` → `a/c` when the file exists, so paths print readably.
pub fn normalize(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_round_trip() {
        assert_eq!(library_file_name("stock"), "libpyhost_engine_stock.so");
        assert_eq!(library_file_name("call-trace"), "libpyhost_engine_call_trace.so");
        assert_eq!(engine_name_of("libpyhost_engine_stock.so").as_deref(), Some("stock"));
        assert_eq!(engine_name_of("libpyhost_engine_.so"), None);
        assert_eq!(engine_name_of("libfoo.so"), None);
    }

    #[test]
    fn paths_and_names_are_told_apart() {
        assert!(is_path("./libx.so"));
        assert!(is_path("libpyhost_engine_stock.so"));
        assert!(!is_path("stock"));
    }

    #[test]
    fn first_folder_on_the_path_wins() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for dir in [&a, &b] {
            std::fs::write(dir.path().join("libpyhost_engine_x.so"), b"").unwrap();
        }
        std::fs::write(b.path().join("libpyhost_engine_y.so"), b"").unwrap();
        std::fs::write(b.path().join("notes.txt"), b"").unwrap();
        let dirs = vec![
            SearchDir { path: a.path().into(), origin: Origin::EnginePathEnv },
            SearchDir { path: b.path().into(), origin: Origin::EnginePathEnv },
        ];
        assert_eq!(find("x", &dirs).unwrap(), a.path().join("libpyhost_engine_x.so"));
        let names: Vec<_> = candidates(&dirs).into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["x", "y"]);
        assert!(find("z", &dirs).is_none());
    }
}
