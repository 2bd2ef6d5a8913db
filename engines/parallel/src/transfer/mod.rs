//! Arguments and results crossing between interpreters without pickle: builtin data (None,
//! bool, int, float, complex, str, bytes — exact types — and tuples, lists and dicts of them)
//! is written by the engine's own code in the sending interpreter and rebuilt in the receiving
//! one (format.rs). parallel.py's `_dumps` falls back to pickle for everything else, so an int
//! or str subclass keeps its type. A map's items that are immutable are not even written:
//! the workers copy them from the main interpreter's objects in place (lend.rs).

mod decode;
mod encode;
mod format;
pub mod lend;

use crate::core::{arg_count, bytes_object, guarded, set_error};
pub use encode::Refusal;
use pyo3_ffi as ffi;
use std::ptr;

/// `transfer_dumps(obj) -> bytes | None`: `obj` in the transfer format, or None when it is not
/// builtin data (send it by pickle).
pub unsafe extern "C" fn py_transfer_dumps(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "transfer_dumps") {
            return ptr::null_mut();
        }
        match encode::encode(*args) {
            Ok(data) => bytes_object(&data),
            Err(Refusal::NotBuiltinData) => ffi::Py_NewRef(ffi::Py_None()),
            Err(Refusal::Error) => ptr::null_mut(),
        }
    })
}

/// `transfer_check(obj) -> 0 | 1 | 2`: 0 when transfer_dumps would refuse `obj` (not builtin
/// data), 1 when it would write it (it cannot fail then, short of memory), 2 when, besides,
/// workers may copy the items of the list `obj` in place (batch_lend).
pub unsafe extern "C" fn py_transfer_check(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "transfer_check") {
            return ptr::null_mut();
        }
        ffi::PyLong_FromLong(encode::check(*args) as std::ffi::c_long)
    })
}

/// `transfer_loads(data, offset) -> obj`: the value written by transfer_dumps at
/// `data[offset:]` (the offset spares a copy of a task's payload).
pub unsafe extern "C" fn py_transfer_loads(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "transfer_loads") {
            return ptr::null_mut();
        }
        let Some(data) = bytes_at(*args, *args.add(1), "transfer_loads") else { return ptr::null_mut() };
        decode::decode(data)
    })
}

/// The contents of the bytes object `data`, borrowed for the call; None with the error set.
///
/// # Safety
/// GIL held; the slice is used only while the caller's arguments are alive.
pub(crate) unsafe fn bytes_of<'a>(data: *mut ffi::PyObject) -> Option<&'a [u8]> {
    let mut start: *mut std::ffi::c_char = ptr::null_mut();
    let mut size: ffi::Py_ssize_t = 0;
    if ffi::PyBytes_AsStringAndSize(data, &mut start, &mut size) != 0 {
        return None;
    }
    // SAFETY: a bytes object holds `size` bytes at `start` while it lives.
    Some(std::slice::from_raw_parts(start.cast::<u8>(), size as usize))
}

/// `data[offset:]` of the arguments (bytes, int) of the function `name`; None with the error set.
///
/// # Safety
/// As [`bytes_of`].
pub(crate) unsafe fn bytes_at<'a>(
    data: *mut ffi::PyObject,
    offset: *mut ffi::PyObject,
    name: &str,
) -> Option<&'a [u8]> {
    let bytes = bytes_of(data)?;
    let offset = ffi::PyLong_AsSsize_t(offset);
    if offset == -1 && !ffi::PyErr_Occurred().is_null() {
        return None;
    }
    let rest = usize::try_from(offset).ok().and_then(|at| bytes.get(at..));
    if rest.is_none() {
        set_error(ffi::PyExc_ValueError, &format!("{name}: offset out of range"));
    }
    rest
}

/// `transfer_loads_into(data, target, start) -> n`: stores the n items of the list that
/// transfer_dumps wrote in `data` into `target[start:start + n]`.
pub unsafe extern "C" fn py_transfer_loads_into(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 3, "transfer_loads_into") {
            return ptr::null_mut();
        }
        let target = *args.add(1);
        if ffi::PyList_CheckExact(target) == 0 {
            return set_error(ffi::PyExc_TypeError, "transfer_loads_into: the target must be a list");
        }
        let start = ffi::PyLong_AsSsize_t(*args.add(2));
        if start == -1 && !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        if start < 0 {
            return set_error(ffi::PyExc_ValueError, "transfer_loads_into: negative start");
        }
        let Some(bytes) = bytes_of(*args) else { return ptr::null_mut() };
        match decode::decode_into(bytes, target, start as usize) {
            Some(count) => ffi::PyLong_FromSize_t(count),
            None => ptr::null_mut(),
        }
    })
}

/// `object` in the transfer format, for a worker's outcome written straight from its result.
///
/// # Safety
/// GIL of the interpreter that owns `object` held.
pub unsafe fn encode(object: *mut ffi::PyObject) -> Result<Vec<u8>, Refusal> {
    encode::encode(object)
}

/// Whether `data` is in the transfer format (else it is a pickle).
pub fn is_transfer_format(data: &[u8]) -> bool {
    data.first() == Some(&format::MAGIC)
}

/// The items of the list `data` holds into `target[start:]` (see decode::decode_into).
///
/// # Safety
/// GIL of the receiving interpreter held; `target` is an exact list.
pub unsafe fn decode_into(data: &[u8], target: *mut ffi::PyObject, start: usize) -> Option<usize> {
    decode::decode_into(data, target, start)
}
