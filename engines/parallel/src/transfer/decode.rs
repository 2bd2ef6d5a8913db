//! Reading a value in the transfer format (format.rs) into the calling interpreter, its GIL
//! held. The bytes are checked as they are read: a short or malformed buffer is a ValueError,
//! never a read out of bounds.

use super::format::{self, MAX_DEPTH};
use crate::core::set_error;
use pyo3_ffi as ffi;
use std::ptr;

struct Decoder<'a> {
    data: &'a [u8],
    at: usize,
}

/// The value that `data` (MAGIC first) holds, as a new reference; null with a Python
/// exception set.
///
/// # Safety
/// GIL of the receiving interpreter held.
pub unsafe fn decode(data: &[u8]) -> *mut ffi::PyObject {
    if data.first() != Some(&format::MAGIC) {
        return corrupt();
    }
    let mut decoder = Decoder { data, at: 1 };
    let value = decoder.value(0);
    if !value.is_null() && decoder.at != data.len() {
        ffi::Py_DECREF(value);
        return corrupt();
    }
    value
}

/// Stores the items of the list that `data` holds into `target[start:start + n]` (a map's
/// result list, without a list per chunk). Returns n, or None with a Python exception set.
///
/// # Safety
/// GIL of the receiving interpreter held; `target` is an exact list.
pub unsafe fn decode_into(data: &[u8], target: *mut ffi::PyObject, start: usize) -> Option<usize> {
    let mut decoder = Decoder { data, at: 1 };
    if data.first() != Some(&format::MAGIC) || decoder.u8() != Some(format::LIST) {
        corrupt();
        return None;
    }
    let Some(count) = decoder.count(1) else {
        corrupt();
        return None;
    };
    if start.checked_add(count).is_none_or(|end| end > ffi::PyList_GET_SIZE(target) as usize) {
        set_error(ffi::PyExc_IndexError, "transfer_loads_into: the items do not fit the list");
        return None;
    }
    for index in 0..count {
        let item = decoder.value(1);
        // PyList_SetItem takes the item and releases what the slot held.
        if item.is_null() || ffi::PyList_SetItem(target, (start + index) as ffi::Py_ssize_t, item) != 0 {
            return None;
        }
    }
    if decoder.at != data.len() {
        corrupt();
        return None;
    }
    Some(count)
}

unsafe fn corrupt() -> *mut ffi::PyObject {
    set_error(ffi::PyExc_ValueError, "corrupt transfer data (parallel engine)")
}

impl<'a> Decoder<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(count)?;
        let bytes = self.data.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn word(&mut self) -> Option<[u8; 8]> {
        self.take(8)?.try_into().ok()
    }

    /// A length or count, no larger than the bytes left could hold (each item takes at
    /// least one byte), so a corrupt count cannot ask for a huge allocation.
    fn count(&mut self, item_size: usize) -> Option<usize> {
        let count = usize::try_from(u64::from_le_bytes(self.word()?)).ok()?;
        (count.checked_mul(item_size)? <= self.data.len() - self.at).then_some(count)
    }

    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_bits(u64::from_le_bytes(self.word()?)))
    }

    unsafe fn value(&mut self, depth: usize) -> *mut ffi::PyObject {
        let Some(tag) = self.u8() else { return corrupt() };
        let atom = match tag {
            format::NONE => Some(ffi::Py_NewRef(ffi::Py_None())),
            format::FALSE => Some(ffi::Py_NewRef(ffi::Py_False())),
            format::TRUE => Some(ffi::Py_NewRef(ffi::Py_True())),
            format::INT => self.word().map(|word| ffi::PyLong_FromLongLong(i64::from_le_bytes(word))),
            format::BIG_INT => self.big_int(),
            format::FLOAT => self.f64().map(|value| ffi::PyFloat_FromDouble(value)),
            format::COMPLEX => {
                self.f64().and_then(|real| Some(ffi::PyComplex_FromDoubles(real, self.f64()?)))
            }
            format::STR => self.str(),
            format::BYTES => self.count(1).and_then(|size| {
                let data = self.take(size)?;
                Some(ffi::PyBytes_FromStringAndSize(data.as_ptr().cast(), size as ffi::Py_ssize_t))
            }),
            _ => None,
        };
        if let Some(object) = atom {
            return object;
        }
        if depth >= MAX_DEPTH || !matches!(tag, format::TUPLE | format::LIST | format::DICT) {
            return corrupt();
        }
        let Some(count) = self.count(if tag == format::DICT { 2 } else { 1 }) else { return corrupt() };
        match tag {
            format::TUPLE => {
                self.sequence(ffi::PyTuple_New(count as ffi::Py_ssize_t), count, depth, |t, i, v| {
                    ffi::PyTuple_SET_ITEM(t, i, v)
                })
            }
            format::LIST => {
                self.sequence(ffi::PyList_New(count as ffi::Py_ssize_t), count, depth, |l, i, v| {
                    ffi::PyList_SET_ITEM(l, i, v)
                })
            }
            _ => self.dict(count, depth),
        }
    }

    /// Fills a new tuple or list of `count` empty slots (a partly filled one is freed whole:
    /// CPython's deallocators skip the empty slots).
    unsafe fn sequence(
        &mut self,
        container: *mut ffi::PyObject,
        count: usize,
        depth: usize,
        set: unsafe fn(*mut ffi::PyObject, ffi::Py_ssize_t, *mut ffi::PyObject),
    ) -> *mut ffi::PyObject {
        if container.is_null() {
            return ptr::null_mut();
        }
        for index in 0..count {
            let item = self.value(depth + 1);
            if item.is_null() {
                ffi::Py_DECREF(container);
                return ptr::null_mut();
            }
            set(container, index as ffi::Py_ssize_t, item);
        }
        container
    }

    unsafe fn dict(&mut self, count: usize, depth: usize) -> *mut ffi::PyObject {
        let dict = ffi::PyDict_New();
        if dict.is_null() {
            return ptr::null_mut();
        }
        for _ in 0..count {
            let key = self.value(depth + 1);
            if key.is_null() {
                ffi::Py_DECREF(dict);
                return ptr::null_mut();
            }
            let value = self.value(depth + 1);
            let stored = !value.is_null() && ffi::PyDict_SetItem(dict, key, value) == 0;
            ffi::Py_DECREF(key);
            if !value.is_null() {
                ffi::Py_DECREF(value);
            }
            if !stored {
                ffi::Py_DECREF(dict);
                return ptr::null_mut();
            }
        }
        dict
    }

    unsafe fn big_int(&mut self) -> Option<*mut ffi::PyObject> {
        let size = self.count(1)?;
        let text = std::ffi::CString::new(self.take(size)?).ok()?;
        // Base 16 with its "0x" prefix, as encode.rs wrote it (a bad text raises ValueError).
        Some(ffi::PyLong_FromString(text.as_ptr(), ptr::null_mut(), 16))
    }

    unsafe fn str(&mut self) -> Option<*mut ffi::PyObject> {
        let kind = self.u8()?;
        if !matches!(kind, 1 | 2 | 4) {
            return None;
        }
        let length = self.count(kind as usize)?;
        let bytes = self.take(length * kind as usize)?;
        let make = |data: *const std::ffi::c_void| {
            // SAFETY: `data` holds `length` code points of `kind` bytes, aligned for that kind.
            ffi::PyUnicode_FromKindAndData(kind as std::ffi::c_int, data, length as ffi::Py_ssize_t)
        };
        // Wider kinds are read as u16 or u32 arrays: copied out when the buffer is not aligned.
        Some(match kind {
            2 if bytes.as_ptr().align_offset(2) != 0 => {
                let units: Vec<u16> =
                    bytes.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]])).collect();
                make(units.as_ptr().cast())
            }
            4 if bytes.as_ptr().align_offset(4) != 0 => {
                let units: Vec<u32> =
                    bytes.chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect();
                make(units.as_ptr().cast())
            }
            _ => make(bytes.as_ptr().cast()),
        })
    }
}
