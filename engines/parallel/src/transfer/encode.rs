//! Writing a value in the transfer format (format.rs), in the interpreter that owns it, with
//! its GIL held. Nothing here runs Python code: only exact builtin types are read, through
//! their C structures (an int subclass's `__index__`, a str subclass's methods never run).

use super::format::{self, MAX_DEPTH};
use pyo3_ffi as ffi;
use std::collections::HashSet;

/// Why a value was not written.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It holds something other than builtin data, or nests too deep, or shares a list or
    /// dict: it goes by pickle.
    NotBuiltinData,
    /// A Python exception is set (out of memory).
    Error,
}

/// Where an encoder writes: the bytes, or nowhere (a check that the value is builtin data,
/// with the same rules, at a fraction of the cost).
pub trait Sink {
    /// Whether writes are kept (a big int's text is only made for a sink that keeps it).
    const KEEPS: bool;
    fn push(&mut self, byte: u8);
    fn extend(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    const KEEPS: bool = true;
    fn push(&mut self, byte: u8) {
        Vec::push(self, byte);
    }
    fn extend(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The sink of `is_builtin_data`.
pub struct Nowhere;

impl Sink for Nowhere {
    const KEEPS: bool = false;
    fn push(&mut self, _byte: u8) {}
    fn extend(&mut self, _bytes: &[u8]) {}
}

pub struct Encoder<S: Sink> {
    out: S,
    /// Lists and dicts written so far: a second meeting means shared or cyclic data.
    containers: HashSet<usize>,
    /// No list or dict below the top level and no int beyond i64 met so far: what lend.rs
    /// may copy from another thread (immutable data of fixed-size atoms).
    readable_in_place: bool,
}

/// What `check` found.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Check {
    /// Not builtin data: it goes by pickle.
    NotBuiltinData = 0,
    /// Builtin data, written by its owner's thread.
    BuiltinData = 1,
    /// Builtin data that workers may copy in place (lend.rs): the top-level list's items are
    /// None, bool, float, complex, str, bytes, ints within i64, and tuples of those.
    ReadableInPlace = 2,
}

/// `object` in the transfer format (MAGIC first).
///
/// # Safety
/// GIL of the interpreter that owns `object` held.
pub unsafe fn encode(object: *mut ffi::PyObject) -> Result<Vec<u8>, Refusal> {
    // A map's chunk of results is a list of atoms of ~9 bytes each: one allocation.
    let capacity = if ffi::PyList_CheckExact(object) != 0 || ffi::PyTuple_CheckExact(object) != 0 {
        16 + 10 * ffi::Py_SIZE(object) as usize
    } else {
        64
    };
    let mut encoder =
        Encoder { out: Vec::with_capacity(capacity), containers: HashSet::new(), readable_in_place: false };
    encoder.out.push(format::MAGIC);
    encoder.value(object, 0)?;
    Ok(encoder.out)
}

/// Whether `encode(object)` would write it (rather than refuse it as not builtin data), and
/// whether a worker may copy it in place.
///
/// # Safety
/// GIL of the interpreter that owns `object` held.
pub unsafe fn check(object: *mut ffi::PyObject) -> Check {
    let mut encoder = Encoder { out: Nowhere, containers: HashSet::new(), readable_in_place: true };
    match encoder.value(object, 0) {
        Err(_) => Check::NotBuiltinData,
        Ok(()) if encoder.readable_in_place => Check::ReadableInPlace,
        Ok(()) => Check::BuiltinData,
    }
}

impl<S: Sink> Encoder<S> {
    fn tag(&mut self, tag: u8) {
        self.out.push(tag);
    }

    fn length(&mut self, length: usize) {
        self.out.extend(&(length as u64).to_le_bytes());
    }

    fn blob(&mut self, tag: u8, data: &[u8]) {
        self.tag(tag);
        self.length(data.len());
        self.out.extend(data);
    }

    unsafe fn value(&mut self, object: *mut ffi::PyObject, depth: usize) -> Result<(), Refusal> {
        let kind = ffi::Py_TYPE(object);
        let is = |t: *mut ffi::PyTypeObject| kind == t;
        if object == ffi::Py_None() {
            self.tag(format::NONE);
        } else if is(&raw mut ffi::PyBool_Type) {
            self.tag(if object == ffi::Py_True() { format::TRUE } else { format::FALSE });
        } else if is(&raw mut ffi::PyLong_Type) {
            self.int(object)?;
        } else if is(&raw mut ffi::PyFloat_Type) {
            self.tag(format::FLOAT);
            self.out.extend(&ffi::PyFloat_AS_DOUBLE(object).to_bits().to_le_bytes());
        } else if is(&raw mut ffi::PyComplex_Type) {
            self.tag(format::COMPLEX);
            let value = ffi::PyComplex_AsCComplex(object);
            self.out.extend(&value.real.to_bits().to_le_bytes());
            self.out.extend(&value.imag.to_bits().to_le_bytes());
        } else if is(&raw mut ffi::PyUnicode_Type) {
            self.str(object);
        } else if is(&raw mut ffi::PyBytes_Type) {
            // SAFETY: an exact bytes object; its buffer holds PyBytes_GET_SIZE bytes.
            let data = std::slice::from_raw_parts(
                ffi::PyBytes_AS_STRING(object).cast::<u8>(),
                ffi::Py_SIZE(object) as usize,
            );
            self.blob(format::BYTES, data);
        } else if depth >= MAX_DEPTH {
            return Err(Refusal::NotBuiltinData);
        } else if is(&raw mut ffi::PyTuple_Type) {
            let count = ffi::PyTuple_GET_SIZE(object);
            self.tag(format::TUPLE);
            self.length(count as usize);
            for index in 0..count {
                self.value(ffi::PyTuple_GET_ITEM(object, index), depth + 1)?;
            }
        } else if is(&raw mut ffi::PyList_Type) {
            self.first_meeting(object)?;
            self.readable_in_place &= depth == 0;
            let count = ffi::PyList_GET_SIZE(object);
            self.tag(format::LIST);
            self.length(count as usize);
            // Nothing written here runs Python code, so the list cannot change under us.
            for index in 0..count {
                self.value(ffi::PyList_GET_ITEM(object, index), depth + 1)?;
            }
        } else if is(&raw mut ffi::PyDict_Type) {
            self.first_meeting(object)?;
            self.readable_in_place = false;
            self.tag(format::DICT);
            self.length(ffi::PyDict_Size(object) as usize);
            let (mut position, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
            while ffi::PyDict_Next(object, &mut position, &mut key, &mut value) != 0 {
                self.value(key, depth + 1)?;
                self.value(value, depth + 1)?;
            }
        } else {
            return Err(Refusal::NotBuiltinData);
        }
        Ok(())
    }

    unsafe fn first_meeting(&mut self, container: *mut ffi::PyObject) -> Result<(), Refusal> {
        if self.containers.insert(container as usize) {
            Ok(())
        } else {
            Err(Refusal::NotBuiltinData)
        }
    }

    unsafe fn int(&mut self, object: *mut ffi::PyObject) -> Result<(), Refusal> {
        let mut overflow = 0;
        let value = ffi::PyLong_AsLongLongAndOverflow(object, &mut overflow);
        if !S::KEEPS {
            self.readable_in_place &= overflow == 0;
            return Ok(()); // every exact int is builtin data
        }
        if overflow == 0 {
            // An exact int: no error is possible without an overflow.
            self.tag(format::INT);
            self.out.extend(&value.to_le_bytes());
            return Ok(());
        }
        // Base 16 is linear in the size and not subject to the int/str digit limit.
        let text = ffi::PyNumber_ToBase(object, 16);
        if text.is_null() {
            return Err(Refusal::Error);
        }
        let mut size: ffi::Py_ssize_t = 0;
        let data = ffi::PyUnicode_AsUTF8AndSize(text, &mut size);
        if data.is_null() {
            ffi::Py_DECREF(text);
            return Err(Refusal::Error);
        }
        // SAFETY: PyUnicode_AsUTF8AndSize returned `size` bytes owned by `text`.
        self.blob(format::BIG_INT, std::slice::from_raw_parts(data.cast::<u8>(), size as usize));
        ffi::Py_DECREF(text);
        Ok(())
    }

    unsafe fn str(&mut self, object: *mut ffi::PyObject) {
        // SAFETY (CPython 3.12, 3.13): every str is "ready" (PEP 393 storage, the legacy
        // wstr form is gone), so KIND and DATA describe GET_LENGTH code points of KIND bytes.
        let kind = ffi::PyUnicode_KIND(object) as usize;
        let length = ffi::PyUnicode_GET_LENGTH(object) as usize;
        let data = std::slice::from_raw_parts(ffi::PyUnicode_DATA(object).cast::<u8>(), length * kind);
        self.tag(format::STR);
        self.out.push(kind as u8);
        self.length(length);
        self.out.extend(data);
    }
}
