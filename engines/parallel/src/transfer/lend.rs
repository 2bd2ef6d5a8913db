//! A map's items read in place: the main interpreter lends its private list of the items to
//! the batch (`batch_lend`), and each worker copies its chunk straight from the main
//! interpreter's objects into its own (`transfer_borrow`), in the worker's thread. The main
//! thread then neither writes nor copies the arguments: its share of a map of small items is
//! the results only.
//!
//! Why reading another interpreter's objects without its GIL is sound here:
//! - only data that `encode::check` found readable in place is lent: exact None, bool, int
//!   within i64, float, complex, str, bytes and tuples of those. None of these changes after
//!   it is made (the caches a str or tuple fills later — hash, UTF-8 form, GC tracking — are
//!   fields read here never);
//! - the list is `parallel.map`'s own copy of the items, which nothing else can reach or
//!   change, and the batch holds a reference to it until no worker reads it any more
//!   (`Batch::take_back_lent`, when the map ends or is abandoned);
//! - nothing here touches a lent object's reference count (CPython 3.12 and 3.13 do not
//!   count references atomically outside free-threaded builds): items are read through
//!   their C structures only, and every object made belongs to the worker.

use super::format::MAX_DEPTH;
use crate::core::{arg_count, arg_u64, batch_arg, guarded, set_error};
use crate::pool::{batches, Batch};
use pyo3_ffi as ffi;
use std::ptr;
use std::sync::Arc;

/// First byte of a lent chunk's reference in a task's payload: the batch id, the first item
/// and the end (u64 little-endian each).
const LENT: u8 = 0x02;
const LENT_SIZE: usize = 1 + 3 * 8;

/// `batch_lend(batch, items)`: workers read `items` (a list that transfer_check found
/// readable in place, and that nothing changes until the batch is closed) in place.
pub unsafe extern "C" fn py_batch_lend(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "batch_lend") {
            return ptr::null_mut();
        }
        let Some(batch) = batch_arg(*args) else { return ptr::null_mut() };
        let items = *args.add(1);
        if ffi::PyList_CheckExact(items) == 0 {
            return set_error(ffi::PyExc_TypeError, "batch_lend: the items must be a list");
        }
        if !batch.lend(ffi::Py_NewRef(items) as usize) {
            ffi::Py_DECREF(items);
            return set_error(ffi::PyExc_RuntimeError, "batch_lend: the batch is closed or lends already");
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `transfer_lent(batch, start, stop) -> bytes`: the reference a task's payload carries for
/// the lent items `start:stop` (read back by transfer_borrow).
pub unsafe extern "C" fn py_transfer_lent(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 3, "transfer_lent") {
            return ptr::null_mut();
        }
        let mut reference = Vec::with_capacity(LENT_SIZE);
        reference.push(LENT);
        for index in 0..3 {
            let Some(value) = arg_u64(*args.add(index)) else { return ptr::null_mut() };
            reference.extend_from_slice(&value.to_le_bytes());
        }
        crate::core::bytes_object(&reference)
    })
}

/// `transfer_borrow(data, offset) -> list`, in a worker: a copy, made in the worker's
/// interpreter, of the lent items that the reference at `data[offset:]` names.
pub unsafe extern "C" fn py_transfer_borrow(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "transfer_borrow") {
            return ptr::null_mut();
        }
        let Some(reference) = super::bytes_at(*args, *args.add(1), "transfer_borrow") else {
            return ptr::null_mut();
        };
        let Some((batch, start, stop)) = parse_reference(reference) else {
            return set_error(ffi::PyExc_ValueError, "transfer_borrow: not a lent chunk's reference");
        };
        let Some(batch) = lock_ignoring_poison(batches()).get(&batch).cloned() else {
            return set_error(ffi::PyExc_RuntimeError, "the map this task belongs to has ended");
        };
        borrow(&batch, start, stop)
    })
}

fn lock_ignoring_poison<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn parse_reference(reference: &[u8]) -> Option<(u64, usize, usize)> {
    if reference.len() != LENT_SIZE || reference[0] != LENT {
        return None;
    }
    let word = |index: usize| {
        let at = 1 + 8 * index;
        u64::from_le_bytes(reference[at..at + 8].try_into().expect("8 bytes"))
    };
    Some((word(0), usize::try_from(word(1)).ok()?, usize::try_from(word(2)).ok()?))
}

/// Counts the caller as a reader of the batch's lent list while it lives.
struct Reading<'a>(&'a Batch);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.end_reading();
    }
}

unsafe fn borrow(batch: &Arc<Batch>, start: usize, stop: usize) -> *mut ffi::PyObject {
    let Some(items) = batch.begin_reading() else {
        return set_error(ffi::PyExc_RuntimeError, "the map this task belongs to has ended");
    };
    let _reading = Reading(batch);
    let items = items as *mut ffi::PyObject;
    // SAFETY: the lent list is alive and unchanged while it is being read (see the module
    // comment); its size is read like its items.
    if start > stop || stop > ffi::PyList_GET_SIZE(items) as usize {
        return set_error(ffi::PyExc_ValueError, "transfer_borrow: the chunk is out of the list");
    }
    let copy = ffi::PyList_New((stop - start) as ffi::Py_ssize_t);
    if copy.is_null() {
        return ptr::null_mut();
    }
    for index in start..stop {
        let item = copy_in_place(ffi::PyList_GET_ITEM(items, index as ffi::Py_ssize_t), 1);
        if item.is_null() {
            ffi::Py_DECREF(copy);
            return ptr::null_mut();
        }
        ffi::PyList_SET_ITEM(copy, (index - start) as ffi::Py_ssize_t, item);
    }
    copy
}

/// A copy in the calling interpreter of `object`, which belongs to another interpreter and is
/// readable in place (see the module comment): read only, never its reference count.
unsafe fn copy_in_place(object: *mut ffi::PyObject, depth: usize) -> *mut ffi::PyObject {
    let kind = ffi::Py_TYPE(object);
    let is = |t: *mut ffi::PyTypeObject| kind == t;
    // None, True and False are static objects shared by every interpreter.
    if object == ffi::Py_None() || is(&raw mut ffi::PyBool_Type) {
        return ffi::Py_NewRef(object);
    }
    if is(&raw mut ffi::PyLong_Type) {
        // SAFETY (3.12, 3.13): for an exact int this reads the digits only; check() let
        // through ints within i64 only, so no overflow and no error.
        let mut overflow = 0;
        let value = ffi::PyLong_AsLongLongAndOverflow(object, &mut overflow);
        if overflow != 0 {
            return set_error(ffi::PyExc_SystemError, "transfer_borrow: an int beyond i64 was lent");
        }
        return ffi::PyLong_FromLongLong(value);
    }
    if is(&raw mut ffi::PyFloat_Type) {
        return ffi::PyFloat_FromDouble(ffi::PyFloat_AS_DOUBLE(object));
    }
    if is(&raw mut ffi::PyComplex_Type) {
        // SAFETY: for an exact complex this returns its `cval` field.
        let value = ffi::PyComplex_AsCComplex(object);
        return ffi::PyComplex_FromDoubles(value.real, value.imag);
    }
    if is(&raw mut ffi::PyUnicode_Type) {
        // SAFETY (3.12, 3.13): PEP 393 storage, as in encode.rs; the data is the str's own,
        // aligned for its kind.
        return ffi::PyUnicode_FromKindAndData(
            ffi::PyUnicode_KIND(object) as std::ffi::c_int,
            ffi::PyUnicode_DATA(object),
            ffi::PyUnicode_GET_LENGTH(object),
        );
    }
    if is(&raw mut ffi::PyBytes_Type) {
        return ffi::PyBytes_FromStringAndSize(ffi::PyBytes_AS_STRING(object), ffi::Py_SIZE(object));
    }
    if is(&raw mut ffi::PyTuple_Type) && depth < MAX_DEPTH {
        let count = ffi::PyTuple_GET_SIZE(object);
        let copy = ffi::PyTuple_New(count);
        if copy.is_null() {
            return ptr::null_mut();
        }
        for index in 0..count {
            let item = copy_in_place(ffi::PyTuple_GET_ITEM(object, index), depth + 1);
            if item.is_null() {
                ffi::Py_DECREF(copy);
                return ptr::null_mut();
            }
            ffi::PyTuple_SET_ITEM(copy, index, item);
        }
        return copy;
    }
    set_error(ffi::PyExc_SystemError, "transfer_borrow: an item not readable in place was lent")
}
