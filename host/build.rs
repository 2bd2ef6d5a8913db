//! Links the host against the CPython that pyo3-ffi was configured for (PYO3_PYTHON, or
//! tools/find-python313 through .cargo/config.toml), and bakes its facts into the binary:
//! its version, library name and folder (where the launcher looks for libpython outside a venv).

fn main() {
    let config = pyo3_build_config::get();
    pyo3_build_config::use_pyo3_cfgs();

    let version = config.version();
    if (version.major, version.minor) < (3, 12) {
        fail(&format!(
            "pyhost needs CPython 3.12 or 3.13, but the build found {version} ({}). \
             Point PYO3_PYTHON at a python3.13 shared build.",
            config.executable().unwrap_or("unknown interpreter")
        ));
    }
    if !config.shared() {
        fail(&format!(
            "pyhost embeds CPython as a shared library, but {} is a static build. \
             Install a shared build (PYTHON_CONFIGURE_OPTS=--enable-shared) and point PYO3_PYTHON at it.",
            config.executable().unwrap_or("the interpreter")
        ));
    }
    let Some(lib_dir) = config.lib_dir() else {
        fail("pyo3-build-config did not report CPython's library folder; cannot set the rpath");
    };
    // pyo3-ffi is built with `extension-module` (no libpython link, for the engines' sake):
    // the host links the shared libpython itself.
    let Some(lib_name) = config.lib_name() else {
        fail("pyo3-build-config did not report CPython's library name; cannot link libpython");
    };
    // The host library (and the unit tests) link libpython; the launcher references none of its
    // symbols, so --as-needed (rustc's default) leaves it out of the launcher's NEEDED list.
    // The rpath is for test executables; the launcher loads libpython before the host library.
    println!("cargo:rustc-link-search=native={lib_dir}");
    println!("cargo:rustc-link-lib=dylib={lib_name}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:rustc-env=PYHOST_PYTHON_SONAME=lib{lib_name}.so.1.0");
    // The folder cargo puts this build's outputs in (OUT_DIR is <it>/build/pyhost-<hash>/out):
    // a launcher copied alone still finds the host library there, as the single binary it
    // replaced found libpython through its rpath.
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        println!("cargo:rustc-env=PYHOST_BUILD_DIR={}", profile_dir.display());
    }
    println!("cargo:rustc-env=PYHOST_PYTHON_MAJOR={}", version.major);
    println!("cargo:rustc-env=PYHOST_PYTHON_MINOR={}", version.minor);
    println!("cargo:rustc-env=PYHOST_PYTHON_LIBDIR={lib_dir}");
    println!("cargo:rustc-env=PYHOST_PYTHON_EXECUTABLE={}", config.executable().unwrap_or(""));
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
