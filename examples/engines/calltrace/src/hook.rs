//! The PEP 523 frame-evaluation function: count the call, time it, hand the frame to CPython's
//! own `_PyEval_EvalFrameDefault`.
//!
//! CPython calls the interpreter's frame-evaluation function for every Python frame it evaluates
//! with a C-level call: a function call, a module or class body, `exec`, and each resumption of a
//! generator or coroutine (CPython 3.13, `_PyEval_EvalFrame` in Include/internal/pycore_ceval.h).
//! While such a function is set, the interpreter does not inline Python-to-Python calls (its
//! specialized `CALL` and generator instructions check `interp->eval_frame` and fall back to a C
//! call), so every call reaches the hook, and every call gets slower.

use crate::registry::{Inserted, Registry};
use pyo3_ffi as ffi;
use std::ffi::{c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Instant;

extern "C" {
    /// CPython's own frame evaluator (Include/cpython/ceval.h, exported by libpython 3.13). pyo3-ffi
    /// does not declare it.
    fn _PyEval_EvalFrameDefault(
        tstate: *mut ffi::PyThreadState,
        frame: *mut ffi::_PyInterpreterFrame,
        throwflag: c_int,
    ) -> *mut ffi::PyObject;
}

/// Every function seen. Only ever locked for plain Rust bookkeeping, never across a CPython call
/// that could run Python code or release the GIL, so a thread holding it never waits for another.
static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

/// The registry, even if a panic (caught) poisoned its lock: its counters stay consistent enough
/// for a report.
pub fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Installs the hook on the current interpreter.
///
/// # Safety
/// The caller holds the GIL of an initialized interpreter.
pub unsafe fn install() -> Result<(), String> {
    // SAFETY: the caller holds the GIL (`PyInterpreterState_Get` requires an attached thread
    // state and never fails with one); `_PyInterpreterState_GetEvalFrameFunc` only reads
    // `interp->eval_frame`.
    let (interp, current) = unsafe {
        let interp = ffi::PyInterpreterState_Get();
        (interp, ffi::_PyInterpreterState_GetEvalFrameFunc(interp))
    };
    if !std::ptr::fn_addr_eq(current, _PyEval_EvalFrameDefault as ffi::_PyFrameEvalFunction) {
        return Err("another PEP 523 frame-evaluation function is already installed; \
                    calltrace would replace it"
            .to_string());
    }
    registry().recording = true;
    // SAFETY: GIL held (above). In 3.13 `_PyInterpreterState_SetEvalFrameFunc` may be called at
    // any time with the GIL held: it stores the pointer in `interp->eval_frame`, which every later
    // `_PyEval_EvalFrame` call reads. `eval_frame` has exactly the `_PyFrameEvalFunction`
    // signature of Include/cpython/pystate.h (thread state, `_PyInterpreterFrame*`, int).
    unsafe { ffi::_PyInterpreterState_SetEvalFrameFunc(interp, Some(eval_frame)) };
    Ok(())
}

/// Puts CPython's own evaluator back if our hook is still the one installed, stops recording,
/// and releases the code objects the registry kept alive.
///
/// # Safety
/// The caller holds the GIL of the interpreter [`install`] ran on.
pub unsafe fn uninstall() {
    // SAFETY: GIL held (caller). Passing `_PyEval_EvalFrameDefault` makes CPython 3.13 store
    // NULL (its "no hook" value), so calls are inlined again. Frames already inside our hook
    // finish through it normally: they only touch the registry after their evaluation returns.
    unsafe {
        let interp = ffi::PyInterpreterState_Get();
        let current = ffi::_PyInterpreterState_GetEvalFrameFunc(interp);
        if std::ptr::fn_addr_eq(current, eval_frame as ffi::_PyFrameEvalFunction) {
            ffi::_PyInterpreterState_SetEvalFrameFunc(interp, Some(_PyEval_EvalFrameDefault));
        }
    }
    let codes = {
        let mut registry = registry();
        registry.recording = false;
        registry.take_codes()
    };
    // The lock is released before any reference is dropped: freeing a code object can run
    // Python code (a weakref callback), which could call back into this engine.
    for code in codes {
        // SAFETY: GIL held (caller). Each address is a code object for which `enter` kept the
        // strong reference `PyUnstable_InterpreterFrame_GetCode` returned; `take_codes` hands each
        // out once, so each reference is released exactly once.
        unsafe { ffi::Py_DECREF(code as *mut ffi::PyObject) };
    }
}

/// The frame-evaluation function CPython calls for every Python frame while the hook is set.
///
/// Panic-free at the boundary: the bookkeeping runs under `catch_unwind` and a failure there only
/// skips the counting; the frame is always evaluated and its result returned unchanged.
unsafe extern "C" fn eval_frame(
    tstate: *mut ffi::PyThreadState,
    frame: *mut ffi::_PyInterpreterFrame,
    throwflag: c_int,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a `_PyFrameEvalFunction` with the GIL held by `tstate` and a valid,
    // initialized frame that stays alive until the evaluation returns (PEP 523; 3.13's
    // `_PyEval_EvalFrame`), which is all `enter` needs.
    let index = catch_unwind(AssertUnwindSafe(|| unsafe { enter(frame) })).unwrap_or(None);
    // SAFETY: forwarding the very arguments CPython gave us to its default evaluator is what PEP
    // 523 prescribes; it consumes the frame and returns a new reference or NULL with an exception
    // set, which we return as is.
    let result = unsafe { _PyEval_EvalFrameDefault(tstate, frame, throwflag) };
    if let Some(index) = index {
        let now = Instant::now();
        let _ = catch_unwind(AssertUnwindSafe(|| registry().leave(index, now)));
    }
    result
}

/// Counts the frame about to be evaluated; returns its function's index for the matching `leave`.
///
/// # Safety
/// GIL held; `frame` is the valid frame CPython passed to the hook.
unsafe fn enter(frame: *mut ffi::_PyInterpreterFrame) -> Option<usize> {
    // SAFETY: 3.13's `PyUnstable_InterpreterFrame_GetCode` returns a strong reference to the
    // frame's executable and "does not raise an exception" (Include/cpython/pyframe.h).
    let code = unsafe { ffi::PyUnstable_InterpreterFrame_GetCode(frame) };
    if code.is_null() {
        return None;
    }
    // SAFETY: `code` is a live object (we own a reference); `PyCode_Check` only reads its type.
    if unsafe { ffi::PyCode_Check(code) } == 0 {
        // SAFETY: releases the reference GetCode gave us; the frame still holds its own.
        unsafe { ffi::Py_DECREF(code) };
        return None;
    }
    // A frame that has not run yet starts at instruction 0; a resumed generator or coroutine
    // frame is past its RETURN_GENERATOR instruction. SAFETY: `PyUnstable_InterpreterFrame_GetLasti`
    // only reads the frame's instruction pointer and "does not raise an exception".
    let fresh = unsafe { ffi::PyUnstable_InterpreterFrame_GetLasti(frame) } <= 0;
    let address = code as usize;
    let known = {
        let mut registry = registry();
        if !registry.recording {
            None
        } else if let Some(index) = registry.lookup(address) {
            registry.enter(index, fresh, Instant::now());
            Some(Some(index))
        } else {
            Some(None)
        }
    };
    match known {
        None | Some(Some(_)) => {
            // SAFETY: releases GetCode's reference; the frame keeps the code object alive (and a
            // known one is also kept alive by the registry).
            unsafe { ffi::Py_DECREF(code) };
            known.flatten()
        }
        Some(None) => {
            // SAFETY: GIL held; `code` is a code object (checked above) we hold a reference to.
            let (qualname, file, line) = unsafe { describe(code) };
            let inserted = {
                let mut registry = registry();
                let inserted = registry.insert(address, qualname, file, line);
                let index = match inserted {
                    Inserted::Kept(index) | Inserted::Known(index) => index,
                };
                registry.enter(index, fresh, Instant::now());
                inserted
            };
            match inserted {
                // The registry keeps GetCode's strong reference: the address cannot be reused by
                // another code object while it is a key.
                Inserted::Kept(index) => Some(index),
                Inserted::Known(index) => {
                    // SAFETY: as above, the registry already holds its own reference.
                    unsafe { ffi::Py_DECREF(code) };
                    Some(index)
                }
            }
        }
    }
}

/// The code object's qualified name, file name and first line, read once per code object.
///
/// # Safety
/// GIL held; `code` is a live code object.
unsafe fn describe(code: *mut ffi::PyObject) -> (String, String, u32) {
    // The hook may run with an exception already set (`throwflag`, e.g. `generator.throw()`), and
    // C-API calls must not be made with one pending: set it aside and restore it afterwards.
    // SAFETY: GIL held; `PyErr_GetRaisedException` (3.12+) moves the pending exception, if any,
    // to us as a strong reference.
    let pending = unsafe { ffi::PyErr_GetRaisedException() };
    // SAFETY: GIL held, `code` is a code object; these attributes are plain members of
    // PyCodeObject (no Python code runs to read them).
    let names = unsafe {
        (
            text_attribute(code, c"co_qualname"),
            text_attribute(code, c"co_filename"),
            int_attribute(code, c"co_firstlineno"),
        )
    };
    if !pending.is_null() {
        // SAFETY: GIL held; steals the reference taken above and leaves the error indicator
        // exactly as CPython handed it to the hook (our reads cleared any error of their own).
        unsafe { ffi::PyErr_SetRaisedException(pending) };
    }
    names
}

/// `str(code.<name>)` as UTF-8 (lossy), or `?`; never leaves an exception set.
///
/// # Safety
/// GIL held, no exception pending; `object` is live.
unsafe fn text_attribute(object: *mut ffi::PyObject, name: &CStr) -> String {
    // SAFETY: GIL held (caller); the returned reference is released below; on failure the error
    // is cleared so the next C-API call starts clean.
    unsafe {
        let value = ffi::PyObject_GetAttrString(object, name.as_ptr());
        if value.is_null() {
            ffi::PyErr_Clear();
            return "?".to_string();
        }
        let mut size: ffi::Py_ssize_t = 0;
        let utf8 = if ffi::PyUnicode_Check(value) != 0 {
            ffi::PyUnicode_AsUTF8AndSize(value, &mut size)
        } else {
            std::ptr::null()
        };
        let text = if utf8.is_null() || size < 0 {
            ffi::PyErr_Clear();
            "?".to_string()
        } else {
            // The UTF-8 buffer belongs to `value`, which is alive until the DECREF below.
            let bytes = std::slice::from_raw_parts(utf8.cast::<u8>(), size as usize);
            String::from_utf8_lossy(bytes).into_owned()
        };
        ffi::Py_DECREF(value);
        text
    }
}

/// `int(code.<name>)` as u32, or 0; never leaves an exception set.
///
/// # Safety
/// GIL held, no exception pending; `object` is live.
unsafe fn int_attribute(object: *mut ffi::PyObject, name: &CStr) -> u32 {
    // SAFETY: as in `text_attribute`; `PyLong_AsLong` returns -1 with an exception set on
    // failure, which is cleared.
    unsafe {
        let value = ffi::PyObject_GetAttrString(object, name.as_ptr());
        if value.is_null() {
            ffi::PyErr_Clear();
            return 0;
        }
        let number = ffi::PyLong_AsLong(value);
        if number == -1 && !ffi::PyErr_Occurred().is_null() {
            ffi::PyErr_Clear();
        }
        ffi::Py_DECREF(value);
        u32::try_from(number).unwrap_or(0)
    }
}
