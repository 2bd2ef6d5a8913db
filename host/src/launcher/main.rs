//! `pyhost`, the launcher: finds the libpython to run on, loads it for everyone (engines and C
//! extensions resolve the C API from it), then loads the host proper (`libpyhost_host.so`, whose
//! own need for libpython is met by the copy already loaded) and hands over to it.
//!
//! The launcher itself links no libpython: that is what lets one installed pyhost run on the
//! Python of the venv it is in (`libpython`), instead of on a path fixed when it was built.

// The C `main` is ours, as in CPython's python: Rust's runtime start-up would reopen closed
// standard fds 0-2 on /dev/null (python must see them closed), install SIGSEGV/SIGBUS handlers
// that swallow a re-raised crash signal, and ignore SIGPIPE (CPython decides that itself).
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

mod libpython;

use libloading::os::unix::{Library, Symbol, RTLD_GLOBAL, RTLD_NOW};
use std::ffi::c_int;
use std::path::{Path, PathBuf};

/// Exit status when pyhost cannot start (as python's usage errors and the host's own).
const EXIT_CANNOT_START: c_int = 2;
/// The host library's file name, looked for next to the launcher, then where a wheel puts it.
const HOST_LIBRARY: &str = "libpyhost_host.so";
/// Where cargo built this launcher (and the host library beside it).
const BUILD_DIR: &str = env!("PYHOST_BUILD_DIR");

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const std::ffi::c_char) -> c_int {
    // Panics must not unwind out of this C entry point.
    std::panic::catch_unwind(|| match launch() {
        Ok(code) => code,
        Err(message) => {
            eprintln!("pyhost: error: {message}");
            EXIT_CANNOT_START
        }
    })
    .unwrap_or_else(|_| {
        eprintln!("pyhost: internal error (panic) in the launcher; please report it");
        70 // EX_SOFTWARE
    })
}

fn launch() -> Result<c_int, String> {
    let own =
        std::env::current_exe().map_err(|err| format!("cannot tell where pyhost is installed: {err}"))?;
    let own_dir = own.parent().unwrap_or(Path::new("/")).to_path_buf();
    let invoked = invoked_path(&own);
    // A venv whose home is this launcher's folder (made by it, or by a copy of it) or another
    // pyhost's runs on that pyhost's Python.
    let python =
        libpython::locate(&invoked, |dir| libpython::same_folder(dir, &own_dir) || holds_pyhost(dir))?;
    // SAFETY: loading libpython runs only its ELF initializers, which set up nothing that needs
    // CPython to be initialized. RTLD_GLOBAL makes its symbols visible to the host library,
    // the engines and C extension modules, which all resolve the C API at load time.
    let libpython = unsafe { Library::open(Some(python.as_os_str()), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|err| format!("cannot load {}: {err}", python.display()))?;
    let host_path = host_library(&own_dir, &invoked)?;
    // SAFETY: the host library is ours, built with this launcher; its initializers are Rust's
    // (argument capture) and need only libpython, loaded above.
    let host = unsafe { Library::open(Some(host_path.as_os_str()), RTLD_NOW) }
        .map_err(|err| format!("cannot load {}: {err}", host_path.display()))?;
    // SAFETY: `pyhost_main` is defined by host/src/lib.rs with exactly this signature.
    let entry: Symbol<extern "C" fn() -> c_int> = unsafe { host.get(b"pyhost_main\0") }
        .map_err(|err| format!("{} is not a pyhost host library: {err}", host_path.display()))?;
    let code = entry();
    // The host exits the process itself; both libraries stay loaded until then.
    std::mem::forget(host);
    std::mem::forget(libpython);
    Ok(code)
}

/// The launcher as it was invoked (a venv's `bin/python` link to it, say), which is where
/// CPython looks for `pyvenv.cfg`, as opposed to the file it resolves to.
fn invoked_path(own: &Path) -> PathBuf {
    let Some(argv0) = std::env::args_os().next().filter(|a| !a.is_empty()) else {
        return own.to_path_buf();
    };
    let argv0 = PathBuf::from(argv0);
    if argv0.components().count() > 1 {
        return std::env::current_dir().map(|cwd| cwd.join(&argv0)).unwrap_or(argv0);
    }
    // A bare name was found on PATH, as the shell did.
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(&argv0)).find(|p| p.is_file()))
        .unwrap_or_else(|| own.to_path_buf())
}

/// The host library: beside the launcher (a cargo build), in `../lib/pyhost/` (a wheel
/// install), for a launcher copied into a venv (`venv --copies`) in those places of the pyhost
/// whose folder the venv's `home` names, and last where this launcher was built (a launcher
/// copied alone, as CPython's test_venv does with sys.executable).
fn host_library(own_dir: &Path, invoked: &Path) -> Result<PathBuf, String> {
    let mut folders = host_library_folders(own_dir).to_vec();
    if let Some(home) = libpython::venv_home(invoked) {
        folders.extend(host_library_folders(&home));
    }
    folders.push(PathBuf::from(BUILD_DIR));
    first_host_library(&folders)
}

fn first_host_library(folders: &[PathBuf]) -> Result<PathBuf, String> {
    folders.iter().map(|folder| folder.join(HOST_LIBRARY)).find(|path| path.is_file()).ok_or_else(|| {
        let searched: Vec<String> = folders.iter().map(|folder| folder.display().to_string()).collect();
        format!("the pyhost installation is incomplete: {HOST_LIBRARY} is in none of {}", searched.join(", "))
    })
}

/// Where the host library is, for a launcher in `bin_dir`.
fn host_library_folders(bin_dir: &Path) -> [PathBuf; 2] {
    [bin_dir.to_path_buf(), bin_dir.join("../lib/pyhost")]
}

/// Whether `bin_dir` holds a pyhost (a venv whose `home` it is was made by that pyhost).
fn holds_pyhost(bin_dir: &Path) -> bool {
    host_library_folders(bin_dir).iter().any(|folder| folder.join(HOST_LIBRARY).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_host_library_names_every_folder_searched() {
        let empty = tempfile::tempdir().unwrap();
        let folders = [empty.path().join("bin"), empty.path().join("lib/pyhost")];
        let message = first_host_library(&folders).unwrap_err();
        assert!(message.starts_with("the pyhost installation is incomplete: libpyhost_host.so"), "{message}");
        assert!(folders.iter().all(|folder| message.contains(&folder.display().to_string())), "{message}");
        std::fs::create_dir_all(&folders[1]).unwrap();
        std::fs::write(folders[1].join(HOST_LIBRARY), b"").unwrap();
        assert_eq!(first_host_library(&folders).unwrap(), folders[1].join(HOST_LIBRARY));
    }
}
