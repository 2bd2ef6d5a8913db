//! Emits pyo3's `Py_3_x` / `Py_GIL_DISABLED` cfgs for the CPython named by `PYO3_PYTHON`, so
//! that `src/lib.rs` can refuse to compile for any CPython but a regular (GIL) 3.13 build.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
