//! The call watch of the PX/PY guard: a `sys.monitoring` CALL callback, in Rust because it
//! runs at every call that gives `object.__setattr__` or `object.__delattr__` an object
//! explicitly (the two mutators without a guarded twin, see twins.rs). families.py installs
//! it; see "object.__setattr__ and object.__delattr__" there.
//!
//! The callback's state (the mutators, the ids of the script's objects) lives in a capsule that
//! is the callback's `self`: each worker interpreter has its own, and no lock is taken.

use crate::core::{arg_count, arg_str, guarded, set_error};
use crate::guard::{protection_message, record_violation, set_protection_error};
use pyo3_ffi as ffi;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_char, CStr};
use std::ptr;

const CAPSULE_NAME: &CStr = c"parallel call watch";

/// A function that changes an object it is given.
struct Mutator {
    /// What it does, for the ProtectionError ("append to a 'list' through list.append()").
    what: String,
    /// The fewest positional arguments of a call that gives it the object explicitly (None:
    /// every call does). A plain call site passing fewer is a method
    /// call on its receiver's own type, which never needs looking at again.
    explicit: Option<u8>,
}

struct CallWatch {
    mutators: HashMap<usize, Mutator>,
    /// Strong references to the mutators, so that their ids stay theirs.
    held: Vec<*mut ffi::PyObject>,
    py_ids: HashSet<usize>,
    disable: *mut ffi::PyObject,
    co_code: *mut ffi::PyObject,
    call_opcode: u8,
    extended_arg_opcode: u8,
}

impl Drop for CallWatch {
    fn drop(&mut self) {
        // SAFETY: the capsule is destroyed by its interpreter, GIL held; the references are ours.
        unsafe {
            for object in self.held.drain(..) {
                ffi::Py_DECREF(object);
            }
            ffi::Py_XDECREF(self.disable);
            ffi::Py_XDECREF(self.co_code);
        }
    }
}

unsafe extern "C" fn drop_capsule(capsule: *mut ffi::PyObject) {
    let watch = ffi::PyCapsule_GetPointer(capsule, CAPSULE_NAME.as_ptr()).cast::<CallWatch>();
    if !watch.is_null() {
        drop(Box::from_raw(watch));
    }
}

static mut ON_CALL_DEF: ffi::PyMethodDef = ffi::PyMethodDef {
    ml_name: c"on_call".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: on_call },
    ml_flags: ffi::METH_FASTCALL,
    ml_doc: c"sys.monitoring CALL callback of the PX/PY guard".as_ptr(),
};

/// `guard_call_watch(mutators, py_ids, disable, call_opcode, extended_arg_opcode) -> callback`:
/// `mutators` maps each mutator to `(what, explicit)`; `py_ids` are the ids of the script's
/// objects; `disable` is `sys.monitoring.DISABLE`.
pub unsafe extern "C" fn py_guard_call_watch(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 5, "guard_call_watch") {
            return ptr::null_mut();
        }
        let [mutators, py_ids, disable, call_opcode, extended_arg_opcode] =
            std::array::from_fn(|index| *args.add(index));
        if ffi::PyDict_Check(mutators) == 0 {
            return set_error(ffi::PyExc_TypeError, "guard_call_watch() needs a dict of mutators");
        }
        let opcode = |object| {
            let value = ffi::PyLong_AsLong(object);
            u8::try_from(value).ok()
        };
        let (Some(call_opcode), Some(extended_arg_opcode)) =
            (opcode(call_opcode), opcode(extended_arg_opcode))
        else {
            return set_error(ffi::PyExc_ValueError, "guard_call_watch() needs two opcodes");
        };
        let co_code = ffi::PyUnicode_InternFromString(c"co_code".as_ptr());
        if co_code.is_null() {
            return ptr::null_mut();
        }
        let mut watch = CallWatch {
            mutators: HashMap::new(),
            held: Vec::new(),
            py_ids: HashSet::new(),
            disable: ffi::Py_NewRef(disable),
            co_code,
            call_opcode,
            extended_arg_opcode,
        };
        let mut position: ffi::Py_ssize_t = 0;
        let (mut function, mut description) = (ptr::null_mut(), ptr::null_mut());
        while ffi::PyDict_Next(mutators, &mut position, &mut function, &mut description) != 0 {
            let (what, explicit) =
                (ffi::PyTuple_GetItem(description, 0), ffi::PyTuple_GetItem(description, 1));
            if what.is_null() || explicit.is_null() {
                return ptr::null_mut();
            }
            let Some(what) = arg_str(what) else { return ptr::null_mut() };
            let explicit = if explicit == ffi::Py_None() {
                None
            } else {
                Some(u8::try_from(ffi::PyLong_AsLong(explicit)).unwrap_or(u8::MAX))
            };
            if !ffi::PyErr_Occurred().is_null() {
                return ptr::null_mut();
            }
            watch.held.push(ffi::Py_NewRef(function));
            watch.mutators.insert(function as usize, Mutator { what, explicit });
        }
        let iterator = ffi::PyObject_GetIter(py_ids);
        if iterator.is_null() {
            return ptr::null_mut();
        }
        loop {
            let id = ffi::PyIter_Next(iterator);
            if id.is_null() {
                break;
            }
            let value = ffi::PyLong_AsSize_t(id);
            ffi::Py_DECREF(id);
            watch.py_ids.insert(value);
        }
        ffi::Py_DECREF(iterator);
        if !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        let state = Box::into_raw(Box::new(watch));
        let capsule = ffi::PyCapsule_New(state.cast(), CAPSULE_NAME.as_ptr(), Some(drop_capsule));
        if capsule.is_null() {
            drop(Box::from_raw(state));
            return ptr::null_mut();
        }
        // SAFETY: a 'static method definition; the function holds the capsule.
        let callback = ffi::PyCFunction_NewEx(&raw mut ON_CALL_DEF, capsule, ptr::null_mut());
        ffi::Py_DECREF(capsule);
        callback
    })
}

/// The CALL callback: `(code, offset, callable, first argument)`.
unsafe extern "C" fn on_call(
    capsule: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if nargs != 4 {
            return set_error(ffi::PyExc_TypeError, "on_call() takes 4 arguments");
        }
        // SAFETY: the capsule was made by py_guard_call_watch and lives as long as this function.
        let watch = &*ffi::PyCapsule_GetPointer(capsule, CAPSULE_NAME.as_ptr()).cast::<CallWatch>();
        let (code, offset, function, first) = (*args, *args.add(1), *args.add(2), *args.add(3));
        let Some(mutator) = watch.mutators.get(&(function as usize)) else {
            return ffi::Py_NewRef(watch.disable);
        };
        if watch.py_ids.contains(&(first as usize)) {
            let message = protection_message(&mutator.what);
            record_violation(message.clone());
            set_protection_error(&message);
            return ptr::null_mut();
        }
        if let Some(explicit) = mutator.explicit {
            if passes_fewer_arguments(watch, code, offset, explicit) {
                return ffi::Py_NewRef(watch.disable);
            }
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// Whether the call at `offset` of `code` is a plain CALL with fewer than `explicit`
/// positional arguments (then it cannot give the mutator the object explicitly).
unsafe fn passes_fewer_arguments(
    watch: &CallWatch,
    code: *mut ffi::PyObject,
    offset: *mut ffi::PyObject,
    explicit: u8,
) -> bool {
    let offset = ffi::PyLong_AsSsize_t(offset);
    // co_code: the code's instructions without specialization or instrumentation, cached by
    // the code object (CPython 3.12/3.13).
    let bytes = ffi::PyObject_GetAttr(code, watch.co_code);
    if bytes.is_null() || offset < 0 {
        ffi::PyErr_Clear();
        ffi::Py_XDECREF(bytes);
        return false;
    }
    let mut data: *mut c_char = ptr::null_mut();
    let mut length: ffi::Py_ssize_t = 0;
    let fewer = if ffi::PyBytes_AsStringAndSize(bytes, &mut data, &mut length) != 0 || offset + 1 >= length {
        ffi::PyErr_Clear();
        false
    } else {
        let instructions = std::slice::from_raw_parts(data.cast::<u8>(), length as usize);
        let offset = offset as usize;
        let extended = offset >= 2 && instructions[offset - 2] == watch.extended_arg_opcode;
        instructions[offset] == watch.call_opcode && !extended && instructions[offset + 1] < explicit
    };
    ffi::Py_DECREF(bytes);
    fewer
}
