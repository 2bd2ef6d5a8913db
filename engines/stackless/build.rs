//! Emits pyo3's `Py_3_x` cfgs for the CPython the workspace builds against: the tasklet switch
//! mirrors CPython 3.13's private thread-state layout and is compiled only for 3.13.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    let version = pyo3_build_config::get().version();
    println!("cargo:rustc-env=PYHOST_STACKLESS_PYTHON_MINOR={}", version.minor);
    println!("cargo:rustc-check-cfg=cfg(stackless_supported)");
    if (version.major, version.minor) == (3, 13) {
        println!("cargo:rustc-cfg=stackless_supported");
    }
}
