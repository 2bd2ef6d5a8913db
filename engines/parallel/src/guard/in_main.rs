//! Calls into the main interpreter from a worker thread: how a task uses the main script's
//! locks, conditions, events, semaphores, barriers and queues themselves (one object for every
//! worker, as a module-level lock is expected to be), instead of its worker's copy.
//!
//! The worker thread detaches from its own interpreter (its GIL is free for the threads a task
//! started), attaches to the main interpreter with a thread state of its own there (made at
//! its first call, ended with its interpreter) and runs `_parallel_guard.in_main(payload)`, then
//! comes back. Only bytes cross: the request and the reply are pickles, copied between the
//! interpreters by Rust. A call that blocks (acquiring a lock, `Queue.get()`) releases the main
//! interpreter's GIL while it waits, as any blocking call does in CPython.

use crate::core::{arg_count, guarded, set_error};
use pyo3_ffi as ffi;
use std::cell::Cell;
use std::ptr;

thread_local! {
    /// This (worker) thread's thread state in the main interpreter, once it made a call.
    static MAIN_THREAD_STATE: Cell<*mut ffi::PyThreadState> = const { Cell::new(ptr::null_mut()) };
}

/// `main_call(payload: bytes) -> bytes`: `_parallel_guard.in_main(payload)` run in the main
/// interpreter on the calling (worker) thread.
pub unsafe extern "C" fn py_main_call(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "main_call") {
            return ptr::null_mut();
        }
        let main = ffi::PyInterpreterState_Main();
        if ffi::PyInterpreterState_Get() == main {
            return set_error(ffi::PyExc_RuntimeError, "main_call() is for worker interpreters");
        }
        let Some(request) = bytes_of(*args) else { return ptr::null_mut() };
        let worker_state = ffi::PyEval_SaveThread();
        let reply = MAIN_THREAD_STATE.with(|cell| {
            let mut state = cell.get();
            if state.is_null() {
                // SAFETY (CPython 3.13): a thread state may be made without any GIL held; it is
                // bound to this OS thread, whose gilstate stays its worker thread state.
                state = ffi::PyThreadState_New(main);
                cell.set(state);
            }
            if state.is_null() {
                return Err("cannot make a thread state in the main interpreter".to_string());
            }
            ffi::PyEval_RestoreThread(state);
            let reply = call_in_main(&request);
            ffi::PyEval_SaveThread();
            reply
        });
        ffi::PyEval_RestoreThread(worker_state);
        match reply {
            Ok(reply) => {
                ffi::PyBytes_FromStringAndSize(reply.as_ptr().cast(), reply.len() as ffi::Py_ssize_t)
            }
            Err(message) => {
                set_error(ffi::PyExc_RuntimeError, &format!("in the main interpreter: {message}"))
            }
        }
    })
}

unsafe fn bytes_of(object: *mut ffi::PyObject) -> Option<Vec<u8>> {
    let mut data: *mut std::ffi::c_char = ptr::null_mut();
    let mut length: ffi::Py_ssize_t = 0;
    if ffi::PyBytes_AsStringAndSize(object, &mut data, &mut length) != 0 {
        return None;
    }
    Some(std::slice::from_raw_parts(data.cast::<u8>(), length as usize).to_vec())
}

/// Runs `_parallel_guard.in_main(request)` (main interpreter attached, its GIL held); an error
/// there (not one of the call itself: `_main_call` pickles those) comes back as its text.
unsafe fn call_in_main(request: &[u8]) -> Result<Vec<u8>, String> {
    let module = ffi::PyImport_ImportModule(c"_parallel_guard".as_ptr());
    let payload = ffi::PyBytes_FromStringAndSize(request.as_ptr().cast(), request.len() as ffi::Py_ssize_t);
    let name = ffi::PyUnicode_FromString(c"in_main".as_ptr());
    let result = if module.is_null() || payload.is_null() || name.is_null() {
        ptr::null_mut()
    } else {
        ffi::PyObject_CallMethodOneArg(module, name, payload)
    };
    for reference in [name, payload, module] {
        ffi::Py_XDECREF(reference);
    }
    let reply = if result.is_null() { None } else { bytes_of(result) };
    ffi::Py_XDECREF(result);
    match reply {
        Some(reply) => Ok(reply),
        None => {
            let error = ffi::PyErr_GetRaisedException();
            let text =
                crate::core::owned_text(ffi::PyObject_Str(error)).unwrap_or_else(|| "unknown error".into());
            ffi::Py_XDECREF(error);
            Err(text)
        }
    }
}

/// Before the worker's interpreter ends (its GIL held): ends the thread's thread state in the
/// main interpreter, if a task made one.
///
/// # Safety
/// GIL of the calling worker's interpreter held; the main interpreter is not finalizing (the
/// engine ends every worker before it does).
pub unsafe fn forget_main_thread_state() {
    let state = MAIN_THREAD_STATE.with(|cell| cell.replace(ptr::null_mut()));
    if state.is_null() {
        return;
    }
    let worker_state = ffi::PyEval_SaveThread();
    ffi::PyEval_RestoreThread(state);
    ffi::PyThreadState_Clear(state);
    ffi::PyThreadState_DeleteCurrent();
    ffi::PyEval_RestoreThread(worker_state);
}
