//! `sys._current_frames()` and `sys._current_exceptions()` for one interpreter.
//!
//! CPython 3.12 and 3.13 build both from the threads of *every* interpreter: called in the
//! main interpreter while workers run, `_current_frames()` makes frame objects for the
//! workers' running frames with the main interpreter's allocator (the worker frees them with
//! its own: `free(): invalid pointer`, an abort; Dask's profiler calls it every 10 ms), and
//! `_current_exceptions()` takes references to the workers' exceptions. Once a pool starts,
//! parallel.py replaces both, in the main interpreter and in every worker, by these, which
//! walk the calling interpreter's threads only (a worker is not a thread of the program's
//! main interpreter, as it is not for `threading.enumerate()`).

use crate::core::guarded;
use pyo3_ffi as ffi;
use std::ffi::c_ulong;
use std::ptr;

// SAFETY (layout, checked by `current_thread_layout_holds` on every call): offset in
// `struct _ts` (Include/cpython/pystate.h) of `thread_id` (`unsigned long`): 152 in CPython
// 3.13.0, 136 in 3.12.1 (offsetof, gcc, x86_64).
#[cfg(Py_3_13)]
const THREAD_ID_OFFSET: usize = 152;
#[cfg(not(Py_3_13))]
const THREAD_ID_OFFSET: usize = 136;

unsafe fn thread_ident(tstate: *mut ffi::PyThreadState) -> c_ulong {
    tstate.cast::<u8>().add(THREAD_ID_OFFSET).cast::<c_ulong>().read()
}

/// The exception being handled in `tstate` if it is the calling thread's, else None: another
/// thread's `exc_info` is not read (a worker's thread state in the main interpreter, left
/// between calls, may point it at C stack that is gone: a misaligned read in CI).
unsafe fn handled_exception(
    tstate: *mut ffi::PyThreadState,
    current: *mut ffi::PyThreadState,
) -> *mut ffi::PyObject {
    if tstate == current {
        let handled = ffi::PyErr_GetHandledException();
        if !handled.is_null() {
            return handled;
        }
    }
    ffi::Py_NewRef(ffi::Py_None())
}

/// The current thread's state, after checking that the layout above reads its ident right
/// (a build against other headers fails here with a RuntimeError, not a bad read later).
unsafe fn current_thread_layout_holds() -> Option<*mut ffi::PyThreadState> {
    let current = ffi::PyThreadState_Get();
    if thread_ident(current) == ffi::PyThread_get_thread_ident() {
        Some(current)
    } else {
        crate::core::set_error(
            ffi::PyExc_RuntimeError,
            "parallel: this CPython's thread state layout is not the one the engine was built for",
        );
        None
    }
}

/// `{thread ident: value(tstate)}` over the calling interpreter's threads; the GIL held, so
/// none of them ends meanwhile (a Python thread ends holding it).
unsafe fn per_thread(
    value: impl Fn(*mut ffi::PyThreadState, *mut ffi::PyThreadState) -> *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let Some(current) = current_thread_layout_holds() else { return ptr::null_mut() };
    let result = ffi::PyDict_New();
    if result.is_null() {
        return ptr::null_mut();
    }
    let mut tstate = ffi::PyInterpreterState_ThreadHead(ffi::PyThreadState_GetInterpreter(current));
    while !tstate.is_null() {
        let item = value(tstate, current);
        if !item.is_null() {
            let ident = ffi::PyLong_FromUnsignedLong(thread_ident(tstate));
            let stored = !ident.is_null() && ffi::PyDict_SetItem(result, ident, item) == 0;
            if !ident.is_null() {
                ffi::Py_DECREF(ident);
            }
            ffi::Py_DECREF(item);
            if !stored {
                ffi::Py_DECREF(result);
                return ptr::null_mut();
            }
        } else if !ffi::PyErr_Occurred().is_null() {
            ffi::Py_DECREF(result);
            return ptr::null_mut();
        }
        tstate = ffi::PyThreadState_Next(tstate);
    }
    result
}

/// `current_frames()`: sys._current_frames() of the calling interpreter only.
pub unsafe extern "C" fn py_current_frames(
    _module: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    _nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // A thread with no Python frame running is left out, as CPython does.
    guarded(|| per_thread(|tstate, _| ffi::PyThreadState_GetFrame(tstate).cast()))
}

/// `current_exceptions()`: sys._current_exceptions() of the calling interpreter only (the
/// calling thread's handled exception; None for its other threads).
pub unsafe extern "C" fn py_current_exceptions(
    _module: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    _nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| per_thread(|tstate, current| handled_exception(tstate, current)))
}
