//! `_parallel_core.shared_new` / `shared_op`: the Python-facing side of [`crate::shared`],
//! used by parallel.py's SharedList, SharedDict, SharedSet and SharedValue proxies.
//!
//! Locks are taken without waiting when free; when contended, the caller's GIL is released
//! while it waits (a thread of the same interpreter may hold the lock and need that GIL).

use crate::core::{arg_bytes, arg_count, arg_str, arg_u64, bytes_object, guarded, set_error, without_gil};
use crate::frozen;
use crate::shared::{Data, Item, Shared};
use indexmap::{IndexMap, IndexSet};
use pyo3_ffi as ffi;
use std::ptr;

unsafe fn bytes_list(object: *mut ffi::PyObject) -> Option<Vec<Item>> {
    let sequence = ffi::PySequence_Fast(object, c"expected a sequence of bytes".as_ptr());
    if sequence.is_null() {
        return None;
    }
    let len = ffi::PySequence_Fast_GET_SIZE(sequence);
    let mut items = Vec::with_capacity(len as usize);
    for i in 0..len {
        match arg_bytes(ffi::PySequence_Fast_GET_ITEM(sequence, i)) {
            Some(item) => items.push(item),
            None => {
                ffi::Py_DECREF(sequence);
                return None;
            }
        }
    }
    ffi::Py_DECREF(sequence);
    Some(items)
}

unsafe fn pair_list(object: *mut ffi::PyObject) -> Option<IndexMap<Item, Item>> {
    let pairs = bytes_list_of_pairs(object)?;
    Some(pairs.into_iter().collect())
}

unsafe fn bytes_list_of_pairs(object: *mut ffi::PyObject) -> Option<Vec<(Item, Item)>> {
    let sequence = ffi::PySequence_Fast(object, c"expected a sequence of (key, value) pairs".as_ptr());
    if sequence.is_null() {
        return None;
    }
    let len = ffi::PySequence_Fast_GET_SIZE(sequence);
    let mut pairs = Vec::with_capacity(len as usize);
    for i in 0..len {
        let pair = ffi::PySequence_Fast_GET_ITEM(sequence, i);
        if ffi::PyTuple_Check(pair) == 0 || ffi::PyTuple_GET_SIZE(pair) != 2 {
            ffi::Py_DECREF(sequence);
            set_error(ffi::PyExc_TypeError, "expected (key, value) pairs");
            return None;
        }
        let key = arg_bytes(ffi::PyTuple_GET_ITEM(pair, 0));
        let value = key.as_ref().and_then(|_| arg_bytes(ffi::PyTuple_GET_ITEM(pair, 1)));
        match (key, value) {
            (Some(key), Some(value)) => pairs.push((key, value)),
            _ => {
                ffi::Py_DECREF(sequence);
                return None;
            }
        }
    }
    ffi::Py_DECREF(sequence);
    Some(pairs)
}

unsafe fn new_list_of_bytes<'a>(items: impl ExactSizeIterator<Item = &'a Item>) -> *mut ffi::PyObject {
    let list = ffi::PyList_New(items.len() as ffi::Py_ssize_t);
    if list.is_null() {
        return ptr::null_mut();
    }
    for (i, item) in items.enumerate() {
        let object = bytes_object(item);
        if object.is_null() {
            ffi::Py_DECREF(list);
            return ptr::null_mut();
        }
        ffi::PyList_SET_ITEM(list, i as ffi::Py_ssize_t, object);
    }
    list
}

unsafe fn new_list_of_pairs(map: &IndexMap<Item, Item>) -> *mut ffi::PyObject {
    let list = ffi::PyList_New(map.len() as ffi::Py_ssize_t);
    if list.is_null() {
        return ptr::null_mut();
    }
    for (i, (key, value)) in map.iter().enumerate() {
        let pair = ffi::Py_BuildValue(c"(NN)".as_ptr(), bytes_object(key), bytes_object(value));
        if pair.is_null() {
            ffi::Py_DECREF(list);
            return ptr::null_mut();
        }
        ffi::PyList_SET_ITEM(list, i as ffi::Py_ssize_t, pair);
    }
    list
}

/// The Python form of a container's contents (what `update` passes and expects back).
unsafe fn contents(data: &Data) -> *mut ffi::PyObject {
    match data {
        Data::List(items) => new_list_of_bytes(items.iter()),
        Data::Set(items) => new_list_of_bytes(items.iter()),
        Data::Dict(map) => new_list_of_pairs(map),
        Data::Value(item) => bytes_object(item),
    }
}

unsafe fn replace_contents(data: &mut Data, object: *mut ffi::PyObject) -> bool {
    let replaced = match data {
        Data::List(_) => bytes_list(object).map(Data::List),
        Data::Set(_) => bytes_list(object).map(|items| Data::Set(items.into_iter().collect())),
        Data::Dict(_) => pair_list(object).map(Data::Dict),
        Data::Value(_) => arg_bytes(object).map(Data::Value),
    };
    match replaced {
        Some(new) => {
            *data = new;
            true
        }
        None => false,
    }
}

/// `shared_new(kind, contents) -> id`: kind "list", "dict", "set" or "value"; contents in the
/// form `contents()` gives.
pub unsafe extern "C" fn py_shared_new(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "shared_new") {
            return ptr::null_mut();
        }
        let Some(kind) = arg_str(*args) else { return ptr::null_mut() };
        let mut data = match kind.as_str() {
            "list" => Data::List(Vec::new()),
            "dict" => Data::Dict(IndexMap::new()),
            "set" => Data::Set(IndexSet::new()),
            "value" => Data::Value(Vec::new()),
            _ => return set_error(ffi::PyExc_ValueError, &format!("unknown shared kind {kind:?}")),
        };
        if !replace_contents(&mut data, *args.add(1)) {
            return ptr::null_mut();
        }
        ffi::PyLong_FromUnsignedLongLong(Shared::create(data).id)
    })
}

/// `shared_drop(id)`
pub unsafe extern "C" fn py_shared_drop(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "shared_drop") {
            return ptr::null_mut();
        }
        let Some(id) = arg_u64(*args) else { return ptr::null_mut() };
        Shared::drop_id(id);
        ffi::Py_NewRef(ffi::Py_None())
    })
}

fn index(index: i64, len: usize, inserting: bool) -> Option<usize> {
    let len = len as i64;
    let index = if index < 0 { index + len } else { index };
    if inserting {
        Some(index.clamp(0, len) as usize)
    } else if (0..len).contains(&index) {
        Some(index as usize)
    } else {
        None
    }
}

unsafe fn arg_i64(object: *mut ffi::PyObject) -> Option<i64> {
    let value = ffi::PyLong_AsLongLong(object);
    if value == -1 && !ffi::PyErr_Occurred().is_null() {
        return None;
    }
    Some(value)
}

unsafe fn none() -> *mut ffi::PyObject {
    ffi::Py_NewRef(ffi::Py_None())
}

unsafe fn boolean(value: bool) -> *mut ffi::PyObject {
    ffi::PyBool_FromLong(value as std::ffi::c_long)
}

/// `shared_op(id, op, *args)`: one operation under the container's lock (see parallel.py
/// for the operations of each kind).
pub unsafe extern "C" fn py_shared_op(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if nargs < 2 {
            return set_error(ffi::PyExc_TypeError, "shared_op(id, op, *args)");
        }
        let Some(id) = arg_u64(*args) else { return ptr::null_mut() };
        let Some(op) = arg_str(*args.add(1)) else { return ptr::null_mut() };
        let Some(shared) = Shared::get(id) else {
            return set_error(ffi::PyExc_ValueError, "this shared object was released (unprotect())");
        };
        if shared.updating_here() {
            return set_error(
                ffi::PyExc_RuntimeError,
                "a protected object cannot be used inside its own update() function",
            );
        }
        let extra = |i: isize| if i + 2 < nargs { *args.offset(i + 2) } else { ptr::null_mut() };
        let count = nargs - 2;
        match op.as_str() {
            "len" | "snapshot" | "keys" | "get" | "contains" => read_op(&shared, &op, count, extra(0)),
            "update" if count == 1 => update(&shared, extra(0)),
            "update" => set_error(ffi::PyExc_TypeError, "update() takes 1 argument"),
            _ => write_op(&shared, &op, count, extra(0), extra(1)),
        }
    })
}

unsafe fn read_op(shared: &Shared, op: &str, count: isize, arg: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let data = shared.read(|lock| without_gil(|| lock.read().unwrap_or_else(|p| p.into_inner())));
    let expected = match (&*data, op) {
        (_, "len" | "snapshot" | "keys") | (Data::Value(_), "get") => 0,
        _ => 1,
    };
    if count != expected {
        return set_error(
            ffi::PyExc_TypeError,
            &format!("{op}() takes {expected} argument(s), {count} given"),
        );
    }
    let key = || arg_bytes(arg);
    match (&*data, op) {
        (Data::List(items), "len") => ffi::PyLong_FromSize_t(items.len()),
        (Data::Dict(map), "len") => ffi::PyLong_FromSize_t(map.len()),
        (Data::Set(items), "len") => ffi::PyLong_FromSize_t(items.len()),
        (Data::List(items), "get") => {
            let Some(i) = arg_i64(arg) else { return ptr::null_mut() };
            match index(i, items.len(), false) {
                Some(i) => bytes_object(&items[i]),
                None => set_error(ffi::PyExc_IndexError, "list index out of range"),
            }
        }
        (Data::Dict(map), "get") => match key() {
            Some(key) => map.get(&key).map_or_else(|| none(), |value| bytes_object(value)),
            None => ptr::null_mut(),
        },
        (Data::Value(item), "get") => bytes_object(item),
        (Data::Dict(map), "contains") => key().map_or(ptr::null_mut(), |key| boolean(map.contains_key(&key))),
        (Data::Set(items), "contains") => key().map_or(ptr::null_mut(), |key| boolean(items.contains(&key))),
        (Data::Dict(map), "keys") => new_list_of_bytes(map.keys()),
        (data, "snapshot") => contents(data),
        (data, _) => set_error(ffi::PyExc_TypeError, &format!("a shared {} has no {op}()", data.kind())),
    }
}

unsafe fn write_op(
    shared: &Shared,
    op: &str,
    count: isize,
    first: *mut ffi::PyObject,
    second: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let wrong_count = |expected: isize| {
        set_error(ffi::PyExc_TypeError, &format!("{op}() takes {expected} argument(s), {count} given"))
    };
    let mut data = shared.write(|lock| without_gil(|| lock.write().unwrap_or_else(|p| p.into_inner())));
    match (&mut *data, op) {
        (Data::List(items), "set") | (Data::List(items), "insert") => {
            if count != 2 {
                return wrong_count(2);
            }
            let Some(i) = arg_i64(first) else { return ptr::null_mut() };
            let Some(item) = arg_bytes(second) else { return ptr::null_mut() };
            match index(i, items.len(), op == "insert") {
                Some(i) if op == "insert" => items.insert(i, item),
                Some(i) => items[i] = item,
                None => return set_error(ffi::PyExc_IndexError, "list assignment index out of range"),
            }
            none()
        }
        (Data::List(items), "del") | (Data::List(items), "pop") => {
            if count != 1 {
                return wrong_count(1);
            }
            let Some(i) = arg_i64(first) else { return ptr::null_mut() };
            match index(i, items.len(), false) {
                Some(i) => {
                    let item = items.remove(i);
                    if op == "pop" {
                        bytes_object(&item)
                    } else {
                        none()
                    }
                }
                None if items.is_empty() && op == "pop" => {
                    set_error(ffi::PyExc_IndexError, "pop from empty list")
                }
                None => set_error(ffi::PyExc_IndexError, "list index out of range"),
            }
        }
        (Data::List(items), "append") => {
            if count != 1 {
                return wrong_count(1);
            }
            let Some(item) = arg_bytes(first) else { return ptr::null_mut() };
            items.push(item);
            none()
        }
        (Data::List(items), "extend") => {
            if count != 1 {
                return wrong_count(1);
            }
            let Some(more) = bytes_list(first) else { return ptr::null_mut() };
            items.extend(more);
            none()
        }
        (Data::Dict(map), "set") | (Data::Dict(map), "setdefault") => {
            if count != 2 {
                return wrong_count(2);
            }
            let (Some(key), Some(value)) = (arg_bytes(first), arg_bytes(second)) else {
                return ptr::null_mut();
            };
            if op == "setdefault" {
                bytes_object(map.entry(key).or_insert(value))
            } else {
                map.insert(key, value);
                none()
            }
        }
        (Data::Dict(map), "del") | (Data::Dict(map), "pop") => {
            if count != 1 {
                return wrong_count(1);
            }
            let Some(key) = arg_bytes(first) else { return ptr::null_mut() };
            match map.shift_remove(&key) {
                Some(value) if op == "pop" => bytes_object(&value),
                Some(_) => boolean(true),
                None if op == "pop" => none(),
                None => boolean(false),
            }
        }
        (Data::Set(items), "add") | (Data::Set(items), "discard") => {
            if count != 1 {
                return wrong_count(1);
            }
            let Some(key) = arg_bytes(first) else { return ptr::null_mut() };
            boolean(if op == "add" { items.insert(key) } else { items.shift_remove(&key) })
        }
        (Data::Value(item), "set") => {
            if count != 1 {
                return wrong_count(1);
            }
            let Some(value) = arg_bytes(first) else { return ptr::null_mut() };
            *item = value;
            none()
        }
        (data, "clear") => {
            match data {
                Data::List(items) => items.clear(),
                Data::Dict(map) => map.clear(),
                Data::Set(items) => items.clear(),
                Data::Value(_) => return set_error(ffi::PyExc_TypeError, "a shared value has no clear()"),
            }
            none()
        }
        (data, _) => set_error(ffi::PyExc_TypeError, &format!("a shared {} has no {op}()", data.kind())),
    }
}

/// `update(fn)`: calls `fn(contents)` under the write lock and stores what it returns, so a
/// read-modify-write (`counter += 1`, `sort()`) is atomic across interpreters.
unsafe fn update(shared: &Shared, function: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let mut data = shared.write(|lock| without_gil(|| lock.write().unwrap_or_else(|p| p.into_inner())));
    let current = contents(&data);
    if current.is_null() {
        return ptr::null_mut();
    }
    shared.set_updating(true);
    let result = ffi::PyObject_CallOneArg(function, current);
    shared.set_updating(false);
    ffi::Py_DECREF(current);
    if result.is_null() {
        return ptr::null_mut();
    }
    let stored = replace_contents(&mut data, result);
    ffi::Py_DECREF(result);
    if stored {
        none()
    } else {
        ptr::null_mut()
    }
}

/// `share_freeze(obj) -> address`: see `frozen::freeze` (TypeError naming what is mutable).
pub unsafe extern "C" fn py_share_freeze(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "share_freeze") {
            return ptr::null_mut();
        }
        // A dict is shared as a copy that only read-only views reach (the caller's dict stays
        // theirs to change); everything else as it is.
        let table = ffi::PyDict_CheckExact(*args) != 0;
        let root = if table { ffi::PyDict_Copy(*args) } else { ffi::Py_NewRef(*args) };
        if root.is_null() {
            return ptr::null_mut();
        }
        match frozen::freeze(root) {
            Err(()) => {
                ffi::Py_DECREF(root);
                ptr::null_mut()
            }
            Ok(Err(refused)) => {
                ffi::Py_DECREF(root);
                set_error(
                    ffi::PyExc_TypeError,
                    &format!(
                        "share() needs immutable data (None, bool, int, float, complex, str, bytes, tuple, \
                         frozenset, or a dict of those), not a '{}' object{}",
                        refused.type_name,
                        if refused.path.is_empty() { String::new() } else { format!(" at {}", refused.path) }
                    ),
                )
            }
            // The root is immortal now: the reference taken above is never given back.
            Ok(Ok(_)) => ffi::PyLong_FromSize_t(root as usize),
        }
    })
}

/// `share_get(address) -> obj`: the shared object at `address` (ValueError if none).
pub unsafe extern "C" fn py_share_get(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "share_get") {
            return ptr::null_mut();
        }
        let Some(address) = arg_u64(*args) else { return ptr::null_mut() };
        match frozen::get(address as usize) {
            Some(object) => ffi::Py_NewRef(object),
            None => set_error(ffi::PyExc_ValueError, "no data was shared at this address"),
        }
    })
}
