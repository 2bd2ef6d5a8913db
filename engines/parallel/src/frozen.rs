//! `parallel.share()`: immutable data read in place by every interpreter, without copies.
//!
//! The object graph (None, bool, int, float, complex, str, bytes, tuple, frozenset, and at its
//! root a dict, a table of those that only a read-only view reaches) is made
//! immortal (PEP 683) in the main interpreter: from then on no interpreter writes to those
//! objects, since `Py_INCREF`/`Py_DECREF` skip immortal objects and every cache an immutable
//! object fills lazily (str and bytes hashes, a frozenset's hash, a str's UTF-8 form) is filled
//! beforehand. Workers then receive the root's address (checked against this registry) and
//! read the same memory. Shared data lives until the process exits.

use crate::core::owned_text;
use pyo3_ffi as ffi;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

fn roots() -> &'static Mutex<HashSet<usize>> {
    static ROOTS: OnceLock<Mutex<HashSet<usize>>> = OnceLock::new();
    ROOTS.get_or_init(Default::default)
}

/// What `freeze` refuses: the type name and where it was found.
pub struct Refused {
    pub type_name: String,
    pub path: String,
}

/// How an object was reached from the root, for the refusal's message; built into text only
/// when something is refused (a table's million keys cost no strings).
#[derive(Clone, Copy)]
enum Step {
    Root,
    Item(usize, ffi::Py_ssize_t),
    Member(usize),
    Value(usize, *mut ffi::PyObject),
    Key(usize, *mut ffi::PyObject),
}

/// The text of the path to the step at `index` of `steps` (`[1][2]`, `['a']`...).
unsafe fn path_text(steps: &[Step], mut index: usize) -> String {
    let mut parts = Vec::new();
    loop {
        let (parent, part) = match steps[index] {
            Step::Root => break,
            Step::Item(parent, i) => (parent, format!("[{i}]")),
            Step::Member(parent) => (parent, " (a member)".to_string()),
            Step::Value(parent, key) => (parent, format!("[{}]", short_repr(key))),
            Step::Key(parent, key) => (parent, format!("{} (a key)", short_repr(key))),
        };
        parts.push(part);
        index = parent;
    }
    parts.reverse();
    parts.concat()
}

unsafe fn short_repr(object: *mut ffi::PyObject) -> String {
    let text = owned_text(ffi::PyObject_Repr(object)).unwrap_or_else(|| "?".into());
    ffi::PyErr_Clear();
    text.chars().take(40).collect()
}

/// Makes `root` and everything it contains immortal; returns how many objects were frozen.
/// On a mutable (or unknown) object nothing is frozen. Needs the main interpreter's GIL.
pub unsafe fn freeze(root: *mut ffi::PyObject) -> Result<Result<usize, Refused>, ()> {
    // First pass: check every object (and fill the lazy caches), so that a refusal changes
    // nothing; second pass: make them immortal.
    let mut seen: HashSet<usize> = HashSet::new();
    let mut order: Vec<*mut ffi::PyObject> = Vec::new();
    let mut steps: Vec<Step> = vec![Step::Root];
    let mut pending: Vec<(*mut ffi::PyObject, usize)> = vec![(root, 0)];
    while let Some((object, at)) = pending.pop() {
        if !seen.insert(object as usize) {
            continue;
        }
        let mut reach = |child: *mut ffi::PyObject, step: Step| {
            steps.push(step);
            pending.push((child, steps.len() - 1));
        };
        let kind = ffi::Py_TYPE(object);
        let exact = |t: *mut ffi::PyTypeObject| kind == t;
        if object == ffi::Py_None()
            || exact(&raw mut ffi::PyBool_Type)
            || exact(&raw mut ffi::PyLong_Type)
            || exact(&raw mut ffi::PyFloat_Type)
            || exact(&raw mut ffi::PyComplex_Type)
        {
        } else if exact(&raw mut ffi::PyUnicode_Type) {
            if ffi::PyObject_Hash(object) == -1
                || ffi::PyUnicode_AsUTF8AndSize(object, std::ptr::null_mut()).is_null()
            {
                return Err(());
            }
        } else if exact(&raw mut ffi::PyBytes_Type) {
            if ffi::PyObject_Hash(object) == -1 {
                return Err(());
            }
        } else if exact(&raw mut ffi::PyTuple_Type) {
            for i in (0..ffi::PyTuple_GET_SIZE(object)).rev() {
                reach(ffi::PyTuple_GET_ITEM(object, i), Step::Item(at, i));
            }
        } else if exact(&raw mut ffi::PyFrozenSet_Type) {
            if ffi::PyObject_Hash(object) == -1 {
                return Err(());
            }
            let iterator = ffi::PyObject_GetIter(object);
            if iterator.is_null() {
                return Err(());
            }
            loop {
                let item = ffi::PyIter_Next(iterator);
                if item.is_null() {
                    break;
                }
                // The frozenset keeps its members alive.
                ffi::Py_DECREF(item);
                reach(item, Step::Member(at));
            }
            ffi::Py_DECREF(iterator);
            if !ffi::PyErr_Occurred().is_null() {
                return Err(());
            }
        } else if object == root && exact(&raw mut ffi::PyDict_Type) {
            // A table: the caller's own copy, which no one else can reach to change it.
            let (mut position, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
            let mut items = Vec::new();
            while ffi::PyDict_Next(object, &mut position, &mut key, &mut value) != 0 {
                items.push((key, value));
            }
            for (key, value) in items.into_iter().rev() {
                reach(value, Step::Value(at, key));
                reach(key, Step::Key(at, key));
            }
        } else {
            let type_name = owned_text(ffi::PyType_GetName(kind)).unwrap_or_else(|| "?".into());
            return Ok(Err(Refused { type_name, path: path_text(&steps, at) }));
        }
        order.push(object);
    }
    for &object in &order {
        // SAFETY: CPython 3.13 (64-bit, default build) treats an object whose refcount's low
        // 32 bits are negative as immortal (`_Py_IsImmortal`), and `_Py_IMMORTAL_REFCNT` is
        // UINT_MAX: the value CPython gives its own immortal objects. The object is immutable
        // and its lazy caches were filled above, so no interpreter writes to it from now on.
        (*object).ob_refcnt.ob_refcnt = u32::MAX as ffi::Py_ssize_t;
        // Out of the main interpreter's garbage collector too: a worker's collector visits
        // the objects its own refer to, and would otherwise touch the GC header of an
        // object main's collector is working on (an immortal object is never collected).
        if ffi::PyObject_IS_GC(object) != 0 && ffi::PyObject_GC_IsTracked(object) != 0 {
            ffi::PyObject_GC_UnTrack(object.cast());
        }
    }
    roots().lock().unwrap_or_else(|p| p.into_inner()).insert(root as usize);
    Ok(Ok(order.len()))
}

/// Whether `object` is immortal: shared by every interpreter (CPython's own constants, what
/// `share()` froze), so that no interpreter may change it.
pub unsafe fn is_immortal(object: *mut ffi::PyObject) -> bool {
    // SAFETY: CPython 3.12 and 3.13 (`_Py_IsImmortal`): the refcount's low 32 bits, negative.
    ((*object).ob_refcnt.ob_refcnt as i32) < 0
}

/// The shared root at `address` (a new reference: immortal, so references cost nothing), or
/// None if nothing was shared there.
pub unsafe fn get(address: usize) -> Option<*mut ffi::PyObject> {
    if roots().lock().unwrap_or_else(|p| p.into_inner()).contains(&address) {
        Some(address as *mut ffi::PyObject)
    } else {
        None
    }
}
