//! Which libpython pyhost runs on.
//!
//! Run from a venv (a `pyvenv.cfg` next to the invoked executable or one folder up, as CPython
//! looks for it), pyhost runs on that venv's Python: `home` names the base interpreter's folder,
//! and its shared library is in the base's `lib/` (pyenv, python.org builds), its multiarch
//! folder (Debian, Ubuntu) or `lib64/` (Fedora). A venv that pyhost itself made has a pyhost's
//! folder as `home`: then the search starts over from there. Outside any venv, pyhost runs
//! on the Python it was built against, or on the system's library of the same name.

use std::path::{Path, PathBuf};

/// The shared library's name, as the host library's NEEDED entry has it.
pub const SONAME: &str = env!("PYHOST_PYTHON_SONAME");
/// The CPython version pyhost was built for.
pub const VERSION: (&str, &str) = (env!("PYHOST_PYTHON_MAJOR"), env!("PYHOST_PYTHON_MINOR"));
/// The library folder of the Python pyhost was built against.
const BUILD_LIBDIR: &str = env!("PYHOST_PYTHON_LIBDIR");
/// The multiarch library folder name, as Debian and Ubuntu install libpython.
#[cfg(target_arch = "x86_64")]
const MULTIARCH: &str = "x86_64-linux-gnu";
#[cfg(target_arch = "aarch64")]
const MULTIARCH: &str = "aarch64-linux-gnu";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const MULTIARCH: &str = "unknown-linux-gnu";
/// How many venvs made by a pyhost of another venv are followed before giving up.
const MAX_VENV_CHAIN: usize = 8;

/// The libpython to load for `invoked` (the executable as invoked), where `holds_pyhost` tells
/// whether a folder is a pyhost's. A path, or the bare soname for the loader's own search.
pub fn locate(invoked: &Path, holds_pyhost: impl Fn(&Path) -> bool) -> Result<PathBuf, String> {
    let mut dir = invoked.parent().unwrap_or(Path::new("/")).to_path_buf();
    for _ in 0..MAX_VENV_CHAIN {
        let Some(venv) = Venv::around(&dir)? else {
            return outside_a_venv();
        };
        venv.check_version()?;
        if holds_pyhost(&venv.home) || Venv::around(&venv.home)?.is_some() {
            // Made by a pyhost (or from another venv): its home is an executable's folder.
            if same_folder(&venv.home, &dir) {
                break;
            }
            dir = venv.home;
            continue;
        }
        return venv.base_library();
    }
    Err(format!("pyvenv.cfg files starting at {} lead back to where they started", invoked.display()))
}

/// The `home` of the venv `invoked` runs in, if it runs in one that says.
pub fn venv_home(invoked: &Path) -> Option<PathBuf> {
    let dir = invoked.parent()?;
    Venv::around(dir).ok().flatten().map(|venv| venv.home)
}

/// Not in a venv: the library LD_LIBRARY_PATH names (it comes before an rpath for the loader
/// too), else the Python pyhost was built against, else the system's library of that name.
fn outside_a_venv() -> Result<PathBuf, String> {
    if let Some(found) = std::env::var_os("LD_LIBRARY_PATH").and_then(|value| on_library_path(&value)) {
        return Ok(found);
    }
    let built_against = Path::new(BUILD_LIBDIR).join(SONAME);
    if built_against.is_file() {
        return Ok(built_against);
    }
    if system_has(SONAME) {
        return Ok(PathBuf::from(SONAME));
    }
    let (major, minor) = VERSION;
    Err(format!(
        "cannot find {SONAME}, the shared library of CPython {major}.{minor} that pyhost was built for (not in \
         {BUILD_LIBDIR}, not on the system's library path): run pyhost from a venv of a CPython {major}.{minor} \
         shared build, or install one ({})",
        install_hint()
    ))
}

/// The first folder of a LD_LIBRARY_PATH value that holds the library.
fn on_library_path(value: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(value)
        .filter(|folder| !folder.as_os_str().is_empty())
        .map(|folder| folder.join(SONAME))
        .find(|path| path.is_file())
}

/// How to get a CPython with its shared library.
fn install_hint() -> String {
    let (major, minor) = VERSION;
    format!(
        "pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install {major}.{minor}; \
         Debian and Ubuntu: apt install libpython{major}.{minor}"
    )
}

/// Whether the dynamic loader finds `soname` by itself (ld.so.cache, LD_LIBRARY_PATH).
fn system_has(soname: &str) -> bool {
    // SAFETY: RTLD_LAZY|RTLD_LOCAL only probes; a libpython's initializers need nothing from
    // us. The handle is closed again; the real load follows with RTLD_GLOBAL.
    unsafe { libloading::os::unix::Library::open(Some(soname), libloading::os::unix::RTLD_LAZY).is_ok() }
}

pub fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// What pyhost needs from a `pyvenv.cfg`.
#[derive(Debug, PartialEq)]
struct Venv {
    root: PathBuf,
    home: PathBuf,
    version: Option<String>,
    /// The interpreter that made the venv, as `venv` writes it (its real file, since 3.11).
    executable: Option<PathBuf>,
}

impl Venv {
    /// The venv whose `pyvenv.cfg` is in `dir` or its parent (CPython's two places).
    fn around(dir: &Path) -> Result<Option<Venv>, String> {
        for root in [Some(dir), dir.parent()].into_iter().flatten() {
            let cfg = root.join("pyvenv.cfg");
            match std::fs::read_to_string(&cfg) {
                Ok(text) => {
                    return Venv::parse(root, &text).map(Some).map_err(|e| format!("{}: {e}", cfg.display()))
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(err) => return Err(format!("cannot read {}: {err}", cfg.display())),
            }
        }
        Ok(None)
    }

    /// `key = value` lines, as CPython's getpath reads them.
    fn parse(root: &Path, text: &str) -> Result<Venv, String> {
        let mut home = None;
        let mut version = None;
        let mut executable = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            let value = value.trim();
            match key.trim() {
                "home" => home = Some(root.join(value)),
                "version" | "version_info" => version = Some(value.to_string()),
                "executable" => executable = Some(root.join(value)),
                _ => {}
            }
        }
        let home = home.ok_or("it has no `home = ` line naming the venv's Python")?;
        Ok(Venv { root: root.to_path_buf(), home, version, executable })
    }

    /// The shared library of the venv's base Python.
    ///
    /// The base is `home`'s parent, as CPython has it; when `home` holds only links to the
    /// interpreter (a `/usr/local/bin/python3.13` linked to `/opt/python/bin/python3.13`), the
    /// base of the real file counts too.
    fn base_library(&self) -> Result<PathBuf, String> {
        let (major, minor) = VERSION;
        let mut bases = vec![self.home.parent().unwrap_or(Path::new("/")).to_path_buf()];
        let interpreters = [self.executable.clone(), Some(self.home.join(format!("python{major}.{minor}")))];
        for interpreter in interpreters.into_iter().flatten() {
            let base =
                interpreter.canonicalize().ok().and_then(|real| Some(real.parent()?.parent()?.to_path_buf()));
            if let Some(base) = base.filter(|base| !bases.contains(base)) {
                bases.push(base);
            }
        }
        let folders: Vec<PathBuf> = bases
            .iter()
            .flat_map(|base| [base.join("lib"), base.join("lib").join(MULTIARCH), base.join("lib64")])
            .collect();
        if let Some(found) = folders.iter().map(|folder| folder.join(SONAME)).find(|path| path.is_file()) {
            return Ok(found);
        }
        let searched: Vec<String> = folders.iter().map(|folder| folder.display().to_string()).collect();
        Err(format!(
            "the Python of the venv at {} (home = {}) has no shared library {SONAME} in {}: pyhost embeds \
             CPython and needs its shared build ({})",
            self.root.display(),
            self.home.display(),
            searched.join(", "),
            install_hint()
        ))
    }

    fn check_version(&self) -> Result<(), String> {
        let Some(version) = &self.version else { return Ok(()) };
        let mut parts = version.split('.');
        if parts.next() == Some(VERSION.0) && parts.next() == Some(VERSION.1) {
            return Ok(());
        }
        Err(format!(
            "the venv at {} is CPython {version}, but this pyhost is built for CPython {}.{}: install the pyhost \
             built for {version} in it",
            self.root.display(),
            VERSION.0,
            VERSION.1
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyvenv_cfg_gives_home_and_version() {
        let text = "home = /opt/py/bin\ninclude-system-site-packages = false\nversion = 3.13.0\n";
        let venv = Venv::parse(Path::new("/v"), text).unwrap();
        let expected = Venv {
            root: "/v".into(),
            home: "/opt/py/bin".into(),
            version: Some("3.13.0".into()),
            executable: None,
        };
        assert_eq!(venv, expected);
        let venv =
            Venv::parse(Path::new("/v"), "home = base/bin\nexecutable = /opt/py/bin/python3.13\n").unwrap();
        assert_eq!(
            (venv.home, venv.executable),
            ("/v/base/bin".into(), Some("/opt/py/bin/python3.13".into()))
        );
        assert!(Venv::parse(Path::new("/v"), "version = 3.13.0\n").unwrap_err().contains("no `home = `"));
    }

    #[test]
    fn another_minor_version_is_refused_by_name() {
        let other = if VERSION.1 == "12" { "3.13.1" } else { "3.12.1" };
        let venv = Venv {
            root: "/v".into(),
            home: "/opt/py/bin".into(),
            version: Some(other.into()),
            executable: None,
        };
        let message = venv.check_version().unwrap_err();
        assert!(message.contains(other) && message.contains("/v"), "{message}");
        let same = format!("{}.{}.7", VERSION.0, VERSION.1);
        assert!(Venv { version: Some(same), ..venv }.check_version().is_ok());
    }

    #[test]
    fn a_venv_whose_python_has_no_shared_library_is_named_in_the_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("base/bin")).unwrap();
        std::fs::create_dir_all(root.path().join("venv/bin")).unwrap();
        let cfg = format!("home = {}\n", root.path().join("base/bin").display());
        std::fs::write(root.path().join("venv/pyvenv.cfg"), cfg).unwrap();
        let message = locate(&root.path().join("venv/bin/pyhost"), |_| false).unwrap_err();
        assert!(message.contains(SONAME) && message.contains("--enable-shared"), "{message}");

        std::fs::create_dir_all(root.path().join("base/lib").join(MULTIARCH)).unwrap();
        let library = root.path().join("base/lib").join(MULTIARCH).join(SONAME);
        std::fs::write(&library, b"").unwrap();
        assert_eq!(locate(&root.path().join("venv/bin/pyhost"), |_| false).unwrap(), library);
    }

    #[test]
    fn a_home_of_links_finds_the_library_beside_the_real_interpreter() {
        let root = tempfile::tempdir().unwrap();
        let (major, minor) = VERSION;
        let interpreter = format!("python{major}.{minor}");
        for folder in ["real/bin", "real/lib", "links/bin", "venv/bin"] {
            std::fs::create_dir_all(root.path().join(folder)).unwrap();
        }
        std::fs::write(root.path().join("real/bin").join(&interpreter), b"").unwrap();
        std::fs::write(root.path().join("real/lib").join(SONAME), b"").unwrap();
        std::os::unix::fs::symlink(
            root.path().join("real/bin").join(&interpreter),
            root.path().join("links/bin").join(&interpreter),
        )
        .unwrap();
        let cfg = format!("home = {}\n", root.path().join("links/bin").display());
        std::fs::write(root.path().join("venv/pyvenv.cfg"), cfg).unwrap();
        let found = locate(&root.path().join("venv/bin/pyhost"), |_| false).unwrap();
        assert_eq!(
            found.canonicalize().unwrap(),
            root.path().join("real/lib").join(SONAME).canonicalize().unwrap()
        );
    }

    #[test]
    fn ld_library_path_is_searched_in_order() {
        let root = tempfile::tempdir().unwrap();
        for folder in ["a", "b"] {
            std::fs::create_dir(root.path().join(folder)).unwrap();
        }
        std::fs::write(root.path().join("b").join(SONAME), b"").unwrap();
        let value = std::env::join_paths([root.path().join("a"), root.path().join("b")]).unwrap();
        assert_eq!(on_library_path(&value), Some(root.path().join("b").join(SONAME)));
        assert_eq!(on_library_path(std::ffi::OsStr::new(":")), None);
    }

    #[test]
    fn a_venv_made_by_pyhost_runs_on_pyhosts_own_python() {
        let root = tempfile::tempdir().unwrap();
        let own_dir = root.path().join("target/release");
        std::fs::create_dir_all(&own_dir).unwrap();
        std::fs::create_dir_all(root.path().join("venv/bin")).unwrap();
        std::fs::write(root.path().join("venv/pyvenv.cfg"), format!("home = {}\n", own_dir.display()))
            .unwrap();
        let found = locate(&root.path().join("venv/bin/python"), |dir| same_folder(dir, &own_dir));
        assert_eq!(found, outside_a_venv());
    }
}
