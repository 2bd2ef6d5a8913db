//! Emits pyo3's `Py_3_x` cfgs for the CPython the workspace builds against. Workers are
//! sub-interpreters that own their GIL; on 3.12.1 those crash at exit after importing common
//! stdlib extensions (hashlib, asyncio, datetime: single-phase init), so the engine is
//! compiled for 3.13 only.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    let version = pyo3_build_config::get().version();
    println!("cargo:rustc-env=PYHOST_PARALLEL_PYTHON_MINOR={}", version.minor);
    println!("cargo:rustc-check-cfg=cfg(parallel_supported)");
    if (version.major, version.minor) == (3, 13) {
        println!("cargo:rustc-cfg=parallel_supported");
    }
}
