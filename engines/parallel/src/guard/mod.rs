//! PyParallel's PX/PY rule inside workers: while a task runs, the main script's state (its
//! module globals and what is reachable from them) is read-only. A write raises
//! `ProtectionError` in the task instead of changing only this worker's copy without a word.
//! `families.py` (the `_parallel_guard` module) walks the state once per worker and says how
//! each kind of object is kept; this file holds the Rust half: dict watching, retyping, the
//! violation of the running task.
//!
//! Dicts are watched with a dict watcher (`PyDict_AddWatcher`, CPython 3.12+). A watcher
//! cannot refuse a change, so the callback records the old value, and the task fails: a
//! pending call raises `ProtectionError` at the task's next eval-breaker check (within a few
//! bytecodes), and the worker reports the violation even if the task caught it. When the task
//! ends, every recorded change is undone, so the next task sees the script's state unchanged.

pub mod calls;
pub mod in_main;
pub mod twins;

use crate::core::{owned_text, without_gil};
use crate::pool::Interrupt;
use pyo3_ffi as ffi;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `PyDict_WatchEvent` (CPython 3.12/3.13 `cpython/dictobject.h`).
#[repr(C)]
#[allow(dead_code)] // the values are given by CPython
#[derive(Clone, Copy, PartialEq, Eq)]
enum DictEvent {
    Added = 0,
    Modified,
    Deleted,
    Cloned,
    Cleared,
    Deallocated,
}

type DictWatchCallback =
    unsafe extern "C" fn(DictEvent, *mut ffi::PyObject, *mut ffi::PyObject, *mut ffi::PyObject) -> c_int;

extern "C" {
    // Exported by CPython 3.12 and 3.13 (cpython/dictobject.h); pyo3-ffi skips them.
    fn PyDict_AddWatcher(callback: DictWatchCallback) -> c_int;
    fn PyDict_Watch(watcher_id: c_int, dict: *mut ffi::PyObject) -> c_int;
    // Exported by CPython 3.12 and 3.13 (cpython/object.h); pyo3-ffi skips them.
    fn PyType_AddWatcher(callback: unsafe extern "C" fn(*mut ffi::PyTypeObject) -> c_int) -> c_int;
    fn PyType_Watch(watcher_id: c_int, kind: *mut ffi::PyObject) -> c_int;
    // Exported by CPython 3.12 and 3.13 (cpython/object.h); returns a borrowed reference.
    fn _PyType_Lookup(kind: *mut ffi::PyTypeObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject;
    // Exported by CPython 3.12 and 3.13 (internal/pycore_ceval.h, "for _testinternalcapi").
    fn _PyEval_AddPendingCall(
        interp: *mut ffi::PyInterpreterState,
        func: unsafe extern "C" fn(*mut c_void) -> c_int,
        arg: *mut c_void,
        flags: c_int,
    ) -> c_int;
}

/// What a watched dict is, for the error message and for undoing a change.
enum Role {
    /// The main script's module globals.
    Globals,
    /// The `__dict__` of a class of the script (a strong reference to the class: undo goes
    /// through setattr so that CPython's type caches stay right).
    ClassDict(*mut ffi::PyObject),
    /// The `__dict__` of an object: its type's name, and its type (a strong reference: a
    /// cache that fills an attribute on first read, e.g. `functools.cached_property`, is
    /// found through it).
    InstanceDict(String, *mut ffi::PyObject),
    /// The globals of another module of the program (a strong reference to the module).
    Module(*mut ffi::PyObject),
    /// A dict reachable from the globals.
    Plain,
    /// An OrderedDict reachable from the globals, with its (key, value) pairs in its order
    /// when the walk found it (a strong reference): its order is kept apart from the dict's,
    /// and popitem() changes it before the dict, so it cannot be read back at the change.
    Ordered(*mut ffi::PyObject),
}

/// One change to undo: (dict, key, old value); NULL key means "restore the whole dict, in
/// order, from the list of (key, value) pairs in old value" (a clear or an update of a dict,
/// or any change of a dict subclass: an OrderedDict keeps an order of its own, and a subclass
/// is put back through its own methods), NULL old value means "the key did not exist".
struct Undo {
    dict: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
    old: *mut ffi::PyObject,
}

#[derive(Default)]
struct Guard {
    watcher: Option<c_int>,
    roles: HashMap<usize, Role>,
    in_task: bool,
    undoing: bool,
    violation: Option<String>,
    raise_pending: bool,
    /// `functools.cached_property` of this interpreter (a strong reference): an attribute it
    /// adds on first read is a cache of the worker's copy, not a write of the script's state.
    cache_fill_type: Option<*mut ffi::PyObject>,
    undo: Vec<Undo>,
    /// The worker's Ctrl-C flag and the thread that runs its tasks (workers only): a Ctrl-C
    /// interrupts the task, not threads the task started (as in CPython, where it interrupts
    /// the main thread only).
    interrupt: Option<(Arc<Interrupt>, std::thread::ThreadId)>,
    /// The ids of the script's objects in this worker (guarded objects and stand-ins).
    py_ids: HashSet<usize>,
    /// This interpreter's type watcher, which marks the read-only sibling types (twins.rs
    /// looks at `tp_watched`).
    type_watcher: Option<c_int>,
}

impl Guard {
    /// The Ctrl-C flag, if the calling thread is the one that runs the worker's tasks.
    fn interrupt_here(&self) -> Option<&Arc<Interrupt>> {
        self.interrupt
            .as_ref()
            .filter(|(_, thread)| *thread == std::thread::current().id())
            .map(|(interrupt, _)| interrupt)
    }
}

// SAFETY: a Guard belongs to one interpreter and is only used under that interpreter's GIL;
// the raw pointers are references owned by that interpreter's objects.
unsafe impl Send for Guard {}

/// Guards by interpreter (address of its `PyInterpreterState`).
static GUARDS: Mutex<Option<HashMap<usize, Guard>>> = Mutex::new(None);

fn with_guard<T>(body: impl FnOnce(&mut Guard) -> T) -> T {
    // SAFETY: PyInterpreterState_Get needs a current thread state; every caller runs Python.
    let interp = unsafe { ffi::PyInterpreterState_Get() } as usize;
    let mut guards = GUARDS.lock().unwrap_or_else(|p| p.into_inner());
    body(guards.get_or_insert_with(HashMap::new).entry(interp).or_default())
}

unsafe fn text_of(object: *mut ffi::PyObject, repr: bool) -> String {
    let text = owned_text(if repr { ffi::PyObject_Repr(object) } else { ffi::PyObject_Str(object) });
    let Some(mut text) = text else { return "?".into() };
    if text.len() > 60 {
        text.truncate(text.char_indices().nth(57).map_or(text.len(), |(i, _)| i));
        text.push_str("...");
    }
    text
}

unsafe fn class_name(class: *mut ffi::PyObject) -> String {
    owned_text(ffi::PyType_GetName(class.cast())).unwrap_or_else(|| "?".into())
}

pub(crate) unsafe fn type_name(object: *mut ffi::PyObject) -> String {
    class_name(ffi::Py_TYPE(object).cast())
}

/// "a 'list'" or "an 'OrderedDict'": a quoted type name with its article.
pub(crate) fn a(type_name: &str) -> String {
    let article = match type_name.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    };
    format!("{article} '{type_name}'")
}

/// The ProtectionError message for a change of a watched dict.
unsafe fn describe(
    dict: *mut ffi::PyObject,
    role: &Role,
    event: DictEvent,
    key: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
) -> String {
    let (key_str, key_repr) = if key.is_null() {
        (String::new(), String::new())
    } else {
        (text_of(key, false), text_of(key, true))
    };
    let removing = event == DictEvent::Deleted;
    let what = match role {
        Role::Globals if removing => format!("delete the global {key_str}"),
        Role::Globals if key.is_null() => "replace the globals".to_string(),
        Role::Globals => format!("bind {} object to the global {key_str}", a(&type_name(value))),
        Role::ClassDict(class) => {
            let verb = if removing { "delete" } else { "set" };
            format!("{verb} attribute {key_repr} of class '{}'", class_name(*class))
        }
        Role::Module(module) => {
            let verb = if removing { "delete" } else { "set" };
            let module_name = owned_text(ffi::PyModule_GetNameObject(*module)).unwrap_or_else(|| "?".into());
            format!("{verb} attribute {key_repr} of module '{module_name}'")
        }
        Role::InstanceDict(owner, _) => {
            let verb = if removing { "delete" } else { "set" };
            format!("{verb} attribute {key_repr} of {} object", a(owner))
        }
        Role::Plain | Role::Ordered(_) => {
            let kind = a(&type_name(dict)); // dict, or a subclass: Counter, OrderedDict...
            match event {
                DictEvent::Deleted => format!("delete key {key_repr} of {kind}"),
                DictEvent::Cleared => format!("clear {kind}"),
                DictEvent::Cloned => format!("update {kind}"),
                _ => format!("store key {key_repr} into {kind}"),
            }
        }
    };
    protection_message(&what)
}

/// The text of every ProtectionError: the operation, then what to do instead.
pub fn protection_message(what: &str) -> String {
    format!(
        "cannot {what} of the main script from a parallel task: main-thread (PY) state is read-only \
         in tasks; create the object in the task, pass it as an argument, or share it with \
         parallel.protect() (writable) or parallel.share() (read-only)"
    )
}

unsafe extern "C" fn on_dict_event(
    event: DictEvent,
    dict: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
    new_value: *mut ffi::PyObject,
) -> c_int {
    let outcome = std::panic::catch_unwind(|| {
        if event == DictEvent::Deallocated {
            let role = with_guard(|guard| guard.roles.remove(&(dict as usize)));
            // SAFETY: the dict is being freed under its interpreter's GIL; the role's
            // reference is released outside the guards' lock.
            unsafe { release_role(role) };
            return;
        }
        // SAFETY: dict watchers run under the GIL of the interpreter that owns the dict,
        // before the change, with borrowed arguments (CPython 3.12/3.13).
        unsafe { record_change(event, dict, key, new_value) }
    });
    if outcome.is_err() {
        // Nothing sensible to raise from inside a dict operation; the task will still fail
        // if a violation was recorded.
        return 0;
    }
    0
}

unsafe fn record_change(
    event: DictEvent,
    dict: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
    new_value: *mut ffi::PyObject,
) {
    let schedule = with_guard(|guard| {
        if !guard.in_task || guard.undoing {
            return false;
        }
        let Some(role) = guard.roles.get(&(dict as usize)) else { return false };
        if event == DictEvent::Modified && ffi::PyDict_GetItemWithError(dict, key) == new_value {
            return false; // the same object stored again, e.g. `SHARED += 1` on a shared value
        }
        if event == DictEvent::Added && is_cache_fill(guard, role, key) {
            return false;
        }
        if guard.violation.is_none() {
            guard.violation = Some(describe(dict, role, event, key, new_value));
        }
        let subclass = ffi::PyDict_CheckExact(dict) == 0;
        if subclass && guard.undo.iter().any(|undo| undo.dict == dict && undo.key.is_null()) {
            // Its state before the task's first change is kept already.
            return !std::mem::replace(&mut guard.raise_pending, true);
        }
        let undo = if let Role::Ordered(items) = role {
            Undo { dict, key: ptr::null_mut(), old: ffi::Py_NewRef(*items) }
        } else if subclass || matches!(event, DictEvent::Cleared | DictEvent::Cloned) {
            Undo { dict, key: ptr::null_mut(), old: items_of(dict) }
        } else {
            let old = ffi::PyDict_GetItemWithError(dict, key);
            Undo { dict, key, old }
        };
        ffi::PyErr_Clear();
        if !undo.key.is_null() {
            ffi::Py_INCREF(undo.key);
            if !undo.old.is_null() {
                ffi::Py_INCREF(undo.old);
            }
        }
        ffi::Py_INCREF(dict);
        guard.undo.push(undo);
        !std::mem::replace(&mut guard.raise_pending, true)
    });
    if schedule {
        _PyEval_AddPendingCall(ffi::PyInterpreterState_Get(), raise_violation, ptr::null_mut(), 0);
    }
}

/// The (key, value) pairs of a watched dict, as a new list; NULL if it cannot be made.
unsafe fn items_of(dict: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let items = ffi::PyDict_Items(dict);
    if items.is_null() {
        ffi::PyErr_Clear();
    }
    items
}

/// Puts `dict` back to `items` (a list of pairs): a dict directly, a subclass through
/// its own `clear` and item assignment (so an OrderedDict's order comes back too).
unsafe fn restore_items(dict: *mut ffi::PyObject, items: *mut ffi::PyObject) {
    if items.is_null() {
        return;
    }
    let exact = ffi::PyDict_CheckExact(dict) != 0;
    if exact {
        ffi::PyDict_Clear(dict);
    } else {
        let cleared = ffi::PyObject_CallMethod(dict, c"clear".as_ptr(), ptr::null());
        if cleared.is_null() {
            ffi::PyErr_Clear();
            ffi::PyDict_Clear(dict);
        }
        ffi::Py_XDECREF(cleared);
    }
    for index in 0..ffi::PyList_Size(items) {
        let pair = ffi::PyList_GetItem(items, index);
        let (key, value) = (ffi::PyTuple_GetItem(pair, 0), ffi::PyTuple_GetItem(pair, 1));
        if key.is_null() || value.is_null() {
            break;
        }
        let stored = if exact {
            ffi::PyDict_SetItem(dict, key, value)
        } else {
            ffi::PyObject_SetItem(dict, key, value)
        };
        if stored != 0 {
            ffi::PyErr_Clear();
        }
    }
    ffi::PyErr_Clear();
}

/// Whether adding `key` to an object's `__dict__` is a cache filled on first read: the
/// object's type has a `functools.cached_property` of that name.
unsafe fn is_cache_fill(guard: &Guard, role: &Role, key: *mut ffi::PyObject) -> bool {
    let (Role::InstanceDict(_, class), Some(cache_fill_type)) = (role, guard.cache_fill_type) else {
        return false;
    };
    if key.is_null() || ffi::PyUnicode_Check(key) == 0 {
        return false;
    }
    // SAFETY: the class is alive (the role holds it); the lookup neither fails nor raises.
    let descriptor = _PyType_Lookup(class.cast(), key);
    !descriptor.is_null() && ffi::PyObject_TypeCheck(descriptor, cache_fill_type.cast()) != 0
}

/// Pending call: raise the recorded violation in the running task (nothing once it ended).
unsafe extern "C" fn raise_violation(_arg: *mut c_void) -> c_int {
    std::panic::catch_unwind(|| {
        let message = with_guard(|guard| {
            guard.raise_pending = false;
            if guard.in_task {
                guard.violation.clone()
            } else {
                None
            }
        });
        // SAFETY: pending calls run in the interpreter's own thread with its GIL held.
        unsafe {
            match message {
                Some(message) => {
                    set_protection_error(&message);
                    -1
                }
                None => 0,
            }
        }
    })
    .unwrap_or(0)
}

/// Sets `parallel.ProtectionError(message)` (a RuntimeError if the class cannot be found).
pub unsafe fn set_protection_error(message: &str) {
    let module = ffi::PyImport_ImportModule(c"parallel".as_ptr());
    let class = if module.is_null() {
        ptr::null_mut()
    } else {
        let class = ffi::PyObject_GetAttrString(module, c"ProtectionError".as_ptr());
        ffi::Py_DECREF(module);
        class
    };
    let text = std::ffi::CString::new(message.replace('\0', " ")).unwrap_or_default();
    if class.is_null() {
        ffi::PyErr_Clear();
        ffi::PyErr_SetString(ffi::PyExc_RuntimeError, text.as_ptr());
    } else {
        ffi::PyErr_SetString(class, text.as_ptr());
        ffi::Py_DECREF(class);
    }
}

/// Watches `dict` as the given role; `owner` is the class for a class dict.
pub unsafe fn watch(dict: *mut ffi::PyObject, role: &str, owner: *mut ffi::PyObject) -> Result<(), ()> {
    if crate::frozen::is_immortal(dict) {
        // A share()d table, read by every interpreter: no one can change it, and watching
        // would write to it (the watcher's bit).
        return Ok(());
    }
    let watcher = match with_guard(|guard| guard.watcher) {
        Some(id) => id,
        None => {
            let id = PyDict_AddWatcher(on_dict_event);
            if id < 0 {
                return Err(());
            }
            with_guard(|guard| guard.watcher = Some(id));
            id
        }
    };
    let role = match role {
        "globals" => Role::Globals,
        "class" => {
            ffi::Py_INCREF(owner);
            Role::ClassDict(owner)
        }
        "instance" => {
            let class = ffi::Py_TYPE(owner).cast::<ffi::PyObject>();
            ffi::Py_INCREF(class);
            Role::InstanceDict(type_name(owner), class)
        }
        "module" => {
            ffi::Py_INCREF(owner);
            Role::Module(owner)
        }
        "ordered" => Role::Ordered(ffi::PySequence_List(owner)),
        _ => Role::Plain,
    };
    if let Role::Ordered(items) = role {
        if items.is_null() {
            return Err(());
        }
    }
    if PyDict_Watch(watcher, dict) != 0 {
        return Err(());
    }
    let replaced = with_guard(|guard| guard.roles.insert(dict as usize, role));
    release_role(replaced);
    Ok(())
}

/// Releases the reference a role holds (GIL held, guards' lock not held: a release may free a
/// dict, whose watcher event takes the lock).
unsafe fn release_role(role: Option<Role>) {
    if let Some(
        Role::ClassDict(owner) | Role::Module(owner) | Role::InstanceDict(_, owner) | Role::Ordered(owner),
    ) = role
    {
        ffi::Py_DECREF(owner);
    }
}

/// Sets the type whose descriptors fill an instance attribute on first read
/// (`functools.cached_property`).
pub unsafe fn set_cache_fill_type(kind: *mut ffi::PyObject) {
    ffi::Py_INCREF(kind);
    if let Some(old) = with_guard(|guard| guard.cache_fill_type.replace(kind)) {
        ffi::Py_DECREF(old);
    }
}

/// A task starts: changes to watched dicts are violations from now on.
pub fn begin_task() {
    with_guard(|guard| {
        guard.in_task = true;
        guard.violation = None;
    });
}

/// Whether `object` is the script's (guarded) object in the current worker interpreter.
pub fn is_py(object: *mut ffi::PyObject) -> bool {
    with_guard(|guard| guard.py_ids.contains(&(object as usize)))
}

unsafe extern "C" fn on_type_modified(_kind: *mut ffi::PyTypeObject) -> c_int {
    0 // the watch only marks the type (tp_watched); its changes need nothing
}

/// `guard_py_ids(ids)`: the ids of the script's objects in this worker, for the twins
/// (an empty iterable when the worker ends).
pub unsafe extern "C" fn py_guard_py_ids(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    crate::core::guarded(|| {
        if !crate::core::arg_count(nargs, 1, "guard_py_ids") {
            return ptr::null_mut();
        }
        let ids = *args;
        let iterator = ffi::PyObject_GetIter(ids);
        if iterator.is_null() {
            return ptr::null_mut();
        }
        let mut py_ids = HashSet::new();
        loop {
            let id = ffi::PyIter_Next(iterator);
            if id.is_null() {
                break;
            }
            py_ids.insert(ffi::PyLong_AsSize_t(id));
            ffi::Py_DECREF(id);
        }
        ffi::Py_DECREF(iterator);
        if !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        with_guard(|guard| guard.py_ids = py_ids);
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `guard_is_shared(obj) -> bool`: whether `obj` is immortal (share()d data, CPython's own
/// constants): the walk leaves it, its contents and their ids alone (a 1,000,000-entry table
/// would otherwise cost each worker a set of 2,000,000 ids).
pub unsafe extern "C" fn py_guard_is_shared(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    crate::core::guarded(|| {
        if !crate::core::arg_count(nargs, 1, "guard_is_shared") {
            return ptr::null_mut();
        }
        ffi::PyBool_FromLong(crate::frozen::is_immortal(*args).into())
    })
}

/// `guard_watch_type(read_only_type)`: marks a read-only sibling type, whose objects' calls of
/// a twin are looked at (twins.rs).
pub unsafe extern "C" fn py_guard_watch_type(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    crate::core::guarded(|| {
        if !crate::core::arg_count(nargs, 1, "guard_watch_type") {
            return ptr::null_mut();
        }
        let kind = *args;
        if ffi::PyType_Check(kind) == 0 {
            return crate::core::set_error(ffi::PyExc_TypeError, "guard_watch_type() needs a type");
        }
        let mut watcher = with_guard(|guard| guard.type_watcher);
        if watcher.is_none() {
            let id = PyType_AddWatcher(on_type_modified);
            if id < 0 {
                return ptr::null_mut();
            }
            with_guard(|guard| guard.type_watcher = Some(id));
            watcher = Some(id);
        }
        if PyType_Watch(watcher.unwrap_or_default(), kind) != 0 {
            return ptr::null_mut();
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// Records a violation found by Python code (a retyped list/set/bytearray refused a change),
/// so that the task fails even if it catches the ProtectionError.
pub fn record_violation(message: String) {
    with_guard(|guard| {
        if guard.in_task && guard.violation.is_none() {
            guard.violation = Some(message);
        }
    });
}

/// The task ended: undo its changes to watched dicts; returns the first violation.
pub unsafe fn end_task() -> Option<String> {
    let (undo, violation) = with_guard(|guard| {
        guard.in_task = false;
        guard.undoing = true;
        (std::mem::take(&mut guard.undo), guard.violation.take())
    });
    let saved = ffi::PyErr_GetRaisedException();
    for change in undo.into_iter().rev() {
        let class = with_guard(|guard| match guard.roles.get(&(change.dict as usize)) {
            Some(Role::ClassDict(class)) => *class,
            _ => ptr::null_mut(),
        });
        if change.key.is_null() {
            restore_items(change.dict, change.old);
            ffi::Py_XDECREF(change.old);
        } else {
            let restored = if !class.is_null() {
                ffi::PyObject_SetAttr(class, change.key, change.old) // NULL old: delete
            } else if change.old.is_null() {
                ffi::PyDict_DelItem(change.dict, change.key)
            } else {
                ffi::PyDict_SetItem(change.dict, change.key, change.old)
            };
            if restored != 0 {
                ffi::PyErr_Clear();
            }
            ffi::Py_DECREF(change.key);
            ffi::Py_XDECREF(change.old);
        }
        ffi::Py_DECREF(change.dict);
    }
    ffi::PyErr_SetRaisedException(saved);
    with_guard(|guard| guard.undoing = false);
    violation
}

/// Makes `object` an instance of `new_type`, a subclass of its exact builtin type that adds
/// no fields (parallel.py's read-only list, set and bytearray).
pub unsafe fn retype(object: *mut ffi::PyObject, new_type: *mut ffi::PyObject) -> Result<(), String> {
    if ffi::PyType_Check(new_type) == 0 {
        return Err("retype() needs a type".into());
    }
    let old = ffi::Py_TYPE(object);
    let new = new_type.cast::<ffi::PyTypeObject>();
    let extra_fields =
        ffi::Py_TPFLAGS_MANAGED_DICT | ffi::Py_TPFLAGS_MANAGED_WEAKREF | ffi::Py_TPFLAGS_HAVE_GC;
    // SAFETY: CPython 3.13 `compatible_for_assignment` rule, plus the GC flag (a GC object has
    // a header before it): same base, sizes, dict/weakref offsets and GC-ness mean the same
    // memory layout, so the object stays valid with either type. The new type (made by
    // `make_read_only_type`) keeps its base's tp_dealloc, which never releases the type: the
    // reference taken here keeps it alive for good.
    if (*new).tp_base != old
        || (*new).tp_basicsize != (*old).tp_basicsize
        || (*new).tp_itemsize != (*old).tp_itemsize
        || (*new).tp_dictoffset != (*old).tp_dictoffset
        || (*new).tp_weaklistoffset != (*old).tp_weaklistoffset
        || ((*new).tp_flags & extra_fields) != ((*old).tp_flags & extra_fields)
    {
        return Err(format!(
            "cannot retype a '{}' object: the new type's layout differs",
            class_name(old.cast())
        ));
    }
    ffi::Py_INCREF(new_type);
    (*object).ob_type = new;
    ffi::Py_DECREF(old.cast());
    Ok(())
}

/// A subclass of `base` (list, set or bytearray) named `name` that adds nothing: no fields,
/// the base's dealloc, GC only if the base has it. (A class statement cannot make one for
/// bytearray: its subclasses always become GC types, a different memory layout.)
/// parallel.py then sets the refusing methods on it.
pub unsafe fn make_read_only_type(base: *mut ffi::PyObject, name: &std::ffi::CStr) -> *mut ffi::PyObject {
    if ffi::PyType_Check(base) == 0 {
        ffi::PyErr_SetString(ffi::PyExc_TypeError, c"make_read_only_type() needs a type".as_ptr());
        return ptr::null_mut();
    }
    let mut slots = [ffi::PyType_Slot { slot: 0, pfunc: ptr::null_mut() }];
    let mut spec = ffi::PyType_Spec {
        name: name.as_ptr(),
        basicsize: 0, // inherited
        itemsize: 0,
        flags: ffi::Py_TPFLAGS_DEFAULT as std::ffi::c_uint,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: PyType_FromSpecWithBases copies what it needs from the spec (name included:
    // heap types keep their own copy of the name, CPython 3.12+).
    ffi::PyType_FromSpecWithBases(&mut spec, base)
}

/// Before the current (worker) interpreter ends, GIL held: drops its guard and releases the
/// references its roles hold. Returns the interpreter's address for [`discard_guard`]: guards
/// are found by address, and a later interpreter at the same address must not find this one's
/// dict watcher id (not registered there: its global writes would pass unseen) or roles.
///
/// # Safety
/// GIL held by the worker thread, its interpreter current.
pub unsafe fn release_guard() -> usize {
    let interp = ffi::PyInterpreterState_Get() as usize;
    // Taken out under the lock, released after it: a release may free a dict, whose watcher
    // event takes the lock again.
    let guard =
        GUARDS.lock().unwrap_or_else(|p| p.into_inner()).as_mut().and_then(|guards| guards.remove(&interp));
    if let Some(guard) = guard {
        for (_, role) in guard.roles {
            release_role(Some(role));
        }
        if let Some(kind) = guard.cache_fill_type {
            ffi::Py_DECREF(kind);
        }
    }
    interp
}

/// Once the interpreter at `interp` has ended: forgets the guard that its finalization's dict
/// events may have made again.
pub fn discard_guard(interp: usize) {
    if let Some(guards) = GUARDS.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        guards.remove(&interp);
    }
}

/// Makes `interrupt` the Ctrl-C flag of the current (worker) interpreter, whose tasks run on
/// the calling thread.
pub fn set_worker_interrupt(interrupt: Option<Arc<Interrupt>>) {
    let thread = std::thread::current().id();
    with_guard(|guard| guard.interrupt = interrupt.map(|interrupt| (interrupt, thread)));
}

/// `time.sleep(seconds)` for a task in a worker: sleeps without the GIL until the time is up or
/// a Ctrl-C comes for the task (then KeyboardInterrupt is raised). `seconds` has been checked
/// by the caller (a non-negative number); None-like huge values sleep for ever.
///
/// # Safety
/// GIL held by the calling (worker) thread.
pub unsafe fn sleep_in_task(seconds: f64) -> Result<(), ()> {
    // A thread the task started sleeps as in CPython: a Ctrl-C does not end its sleep.
    let interrupt = with_guard(|guard| guard.interrupt_here().cloned());
    let duration = Duration::try_from_secs_f64(seconds).ok();
    let interrupted = without_gil(|| match &interrupt {
        Some(interrupt) => interrupt.sleep(duration),
        None => {
            std::thread::sleep(duration.unwrap_or(Duration::MAX));
            false
        }
    });
    if interrupted {
        ffi::PyErr_SetNone(ffi::PyExc_KeyboardInterrupt);
        return Err(());
    }
    Ok(())
}

/// The signal that wakes a worker thread blocked in a wait on Ctrl-C: real-time, so no
/// program or library is likely to use it (the stackless engine uses SIGRTMAX-3).
fn wake_signal() -> c_int {
    libc::SIGRTMAX() - 4
}

extern "C" fn on_wake_signal(_signal: c_int) {}

/// Sends the wake signal to `thread`, a worker running a task that a Ctrl-C interrupts (its
/// pending call is queued): a wait on a lock, `threading.Event`, `Condition` or `queue.Queue`
/// then ends with EINTR, and CPython 3.13 runs the interpreter's pending calls before it
/// waits again (`PyThread_acquire_lock_timed_with_retries`), so the task raises
/// KeyboardInterrupt at once instead of after its wait. (I/O calls such as `socket.recv` or
/// `select` retry after EINTR without running them, in any thread but the main one.) The
/// handler does nothing and is installed without SA_RESTART, only while the signal has its
/// default action: a handler someone else installed is left alone and nothing is sent.
///
/// # Safety
/// `thread` is 0 or a live thread of this process.
pub unsafe fn wake_blocked_thread(thread: libc::pthread_t) {
    if thread == 0 {
        return;
    }
    let signal = wake_signal();
    let ours = on_wake_signal as extern "C" fn(c_int) as libc::sighandler_t;
    let mut current: libc::sigaction = std::mem::zeroed();
    if libc::sigaction(signal, ptr::null(), &mut current) != 0 {
        return;
    }
    if current.sa_sigaction == libc::SIG_DFL {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ours;
        action.sa_flags = 0; // no SA_RESTART: the interrupted wait returns EINTR
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, &mut current) != 0 {
            return;
        }
        if current.sa_sigaction != libc::SIG_DFL {
            // Someone installed a handler in between: put theirs back.
            libc::sigaction(signal, &current, ptr::null_mut());
            return;
        }
    } else if current.sa_sigaction != ours {
        return;
    }
    libc::pthread_kill(thread, signal);
}

/// Queues a pending call in `interpreter` that raises KeyboardInterrupt in its running task
/// (nothing if no task runs when the call comes: the worker's own loop is never interrupted).
pub unsafe fn interrupt_task_in(interpreter: *mut ffi::PyInterpreterState) {
    unsafe extern "C" fn interrupt(_arg: *mut c_void) -> c_int {
        std::panic::catch_unwind(|| {
            enum Action {
                Raise,
                Ignore,
                /// Another thread of the interpreter (one the task started) holds the GIL and
                /// runs pending calls: queue the call again for the task's thread, which
                /// takes it once it has the GIL.
                Requeue,
            }
            let action = with_guard(|guard| {
                if !guard.in_task {
                    return Action::Ignore;
                }
                match (&guard.interrupt, guard.interrupt_here()) {
                    (None, _) => Action::Raise,
                    // Taken here or by a sleeping task, whichever comes first: one Ctrl-C, one raise.
                    (Some(_), Some(interrupt)) if interrupt.take() => Action::Raise,
                    (Some((interrupt, _)), None) if interrupt.is_raised() => Action::Requeue,
                    _ => Action::Ignore,
                }
            });
            match action {
                Action::Raise => {
                    // SAFETY: pending calls run in a thread of the interpreter, GIL held.
                    unsafe { ffi::PyErr_SetNone(ffi::PyExc_KeyboardInterrupt) };
                    -1
                }
                Action::Ignore => 0,
                Action::Requeue => {
                    // SAFETY: as above; the interpreter is the current one, alive.
                    unsafe {
                        _PyEval_AddPendingCall(ffi::PyInterpreterState_Get(), interrupt, ptr::null_mut(), 0)
                    };
                    0
                }
            }
        })
        .unwrap_or(0)
    }
    _PyEval_AddPendingCall(interpreter, interrupt, ptr::null_mut(), 0);
}
