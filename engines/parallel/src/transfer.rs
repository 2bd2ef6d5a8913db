//! What may cross between interpreters by `marshal` (parallel.py's fast path for arguments and
//! results): marshal writes any object with a buffer (bytearray, array, memoryview, numpy
//! arrays) as bytes, so such a value would come back as `bytes`. Only data made of the types
//! marshal writes as themselves takes that path; everything else is pickled.

use crate::core::{arg_count, guarded};
use pyo3_ffi as ffi;

/// Containers deeper than this are left to pickle (marshal refuses deep nesting too).
const MAX_DEPTH: usize = 100;

/// `marshal_safe(obj) -> bool`: whether `obj` is None, bool, int, float, complex, str or
/// bytes (exact types), or a tuple, list or dict (exact types) of such data. (Sets go by
/// pickle: their members cannot be read without calling into the set's iterator.)
pub unsafe extern "C" fn py_marshal_safe(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "marshal_safe") {
            return std::ptr::null_mut();
        }
        ffi::PyBool_FromLong(marshal_safe(*args, 0) as std::ffi::c_long)
    })
}

/// GIL held; reads the containers without calling Python code.
unsafe fn marshal_safe(object: *mut ffi::PyObject, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let kind = ffi::Py_TYPE(object);
    let is = |t: *mut ffi::PyTypeObject| kind == t;
    if object == ffi::Py_None()
        || is(&raw mut ffi::PyBool_Type)
        || is(&raw mut ffi::PyLong_Type)
        || is(&raw mut ffi::PyFloat_Type)
        || is(&raw mut ffi::PyComplex_Type)
        || is(&raw mut ffi::PyUnicode_Type)
        || is(&raw mut ffi::PyBytes_Type)
    {
        return true;
    }
    if is(&raw mut ffi::PyTuple_Type) {
        return (0..ffi::PyTuple_GET_SIZE(object))
            .all(|i| marshal_safe(ffi::PyTuple_GET_ITEM(object, i), depth + 1));
    }
    if is(&raw mut ffi::PyList_Type) {
        // Items are read one by one: nothing here can change the list.
        return (0..ffi::PyList_GET_SIZE(object))
            .all(|i| marshal_safe(ffi::PyList_GET_ITEM(object, i), depth + 1));
    }
    if is(&raw mut ffi::PyDict_Type) {
        let (mut position, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
        while ffi::PyDict_Next(object, &mut position, &mut key, &mut value) != 0 {
            if !marshal_safe(key, depth + 1) || !marshal_safe(value, depth + 1) {
                return false;
            }
        }
        return true;
    }
    false
}
