//! Guarded twins: in each worker interpreter, the mutators of the standard containers
//! (`list.append`, `deque.appendleft`, `list.__setitem__`, `heapq.heappush`...) are replaced,
//! before the main script is imported there, by twins that refuse when the object they would
//! change is the script's, and otherwise call the original C function. A read-only sibling
//! type (families.py) refuses `G.append(x)`; a twin also refuses what bypasses the object's
//! type: `list.append(G, x)`, `map(list.append, [G], [x])`, `functools.partial(heapq.heappush,
//! G)`, or a method bound at import time (`APPEND = G.append`).
//!
//! A twin is a real method descriptor, slot wrapper or builtin function of the same name, flags
//! and docstring (signatures, pickling and the interpreter's call specializations see no
//! difference), whose C function is a trampoline. Its check is one load: the object's type is
//! watched (`tp_watched`, set on the read-only sibling types only); the script's ids are looked
//! at only then. A trampoline is generic over its index in a table of originals of its calling
//! convention, so that every worker interpreter shares the same C functions.

use crate::core::{arg_count, arg_str, guarded, set_error};
use crate::guard::{a, is_py, protection_message, record_violation, set_protection_error, type_name};
use pyo3_ffi as ffi;
use seq_macro::seq;
use std::ffi::{c_int, c_void};
use std::mem::offset_of;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

/// Twins per calling convention in the process (the standard containers need about 40 of the
/// busiest one); seq! below repeats this number.
const TWINS_PER_KIND: usize = 64;

/// `_Py_TPFLAGS_STATIC_BUILTIN` (CPython 3.12/3.13 object.h): a static type of the core whose
/// dict is per interpreter (the others' static types share one dict between interpreters).
const STATIC_BUILTIN: std::ffi::c_ulong = 1 << 1;

/// A twin's calling convention: which C signature its original has, and where the object it
/// would change is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `f(self, arg)`: METH_O, METH_NOARGS and METH_VARARGS methods, in-place operators.
    Unary,
    /// `f(self, args, kwargs)`: METH_VARARGS | METH_KEYWORDS.
    Keywords,
    /// `f(self, args, nargs)`: METH_FASTCALL.
    Fast,
    /// `f(self, args, nargs, kwnames)`: METH_FASTCALL | METH_KEYWORDS.
    FastKeywords,
    /// `f(self, defining_class, args, nargs, kwnames)`: METH_METHOD | METH_FASTCALL | METH_KEYWORDS.
    Method,
    /// `f(self, key, value) -> int`: `__setitem__`/`__delitem__` of a mapping slot (value NULL: delete).
    Store,
    /// `f(self, index, value) -> int`: `__setitem__`/`__delitem__` of a sequence slot.
    StoreIndex,
    /// `f(self, n)`: `__imul__` of a sequence slot.
    Repeat,
    /// `f(self)`: `__next__`.
    Next,
    /// `f(module, obj)`: a METH_O function of a module, whose argument is the object.
    FunctionUnary,
    /// `f(module, args, nargs)`: a METH_FASTCALL function of a module, whose first argument is
    /// the object.
    FunctionFast,
}

const KINDS: usize = Kind::FunctionFast as usize + 1;

/// The original C function of each twin, by kind and index: read by the trampolines.
static ORIGINALS: [[AtomicPtr<c_void>; TWINS_PER_KIND]; KINDS] =
    [const { [const { AtomicPtr::new(ptr::null_mut()) }; TWINS_PER_KIND] }; KINDS];

/// What a twin refuses, for the error message: (verb, label) for a change, and for a deletion
/// when the twin serves `__delitem__` too.
struct Twin {
    kind: Kind,
    index: usize,
    original: usize,
    /// The method's name; empty for slot wrappers, whose set and delete share one twin.
    name: String,
    change: Option<(String, String)>,
    delete: Option<(String, String)>,
    /// The twin's method definition (methods and functions): made once, shared by every worker.
    definition: Option<&'static ffi::PyMethodDef>,
}

// SAFETY: the method definitions are immutable once made and point at static strings of
// CPython and of extension modules, which are never unloaded.
unsafe impl Send for Twin {}

static TWINS: Mutex<Vec<Twin>> = Mutex::new(Vec::new());

#[inline(always)]
unsafe fn watched(object: *mut ffi::PyObject) -> bool {
    // SAFETY: tp_watched is a plain field of PyTypeObject in CPython 3.12 and 3.13, set by
    // PyType_Watch; a type no one watches has 0 there.
    !object.is_null() && (*ffi::Py_TYPE(object)).tp_watched != 0
}

#[inline(always)]
unsafe fn original<F: Copy>(kind: Kind, index: usize) -> F {
    let pointer = ORIGINALS[kind as usize][index].load(Ordering::Acquire);
    // SAFETY: the table holds, at this kind and index, a C function of signature F, stored
    // before any twin that calls it was made.
    std::mem::transmute_copy(&pointer)
}

/// Whether the twin at (kind, index) must refuse to change `object` (a ProtectionError is
/// then set, and the task's violation recorded).
#[cold]
#[inline(never)]
unsafe fn refuses(kind: Kind, index: usize, object: *mut ffi::PyObject, deleting: bool) -> bool {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if !is_py(object) {
            return false;
        }
        let what = {
            let twins = TWINS.lock().unwrap_or_else(|p| p.into_inner());
            let twin = twins.iter().find(|twin| twin.kind == kind && twin.index == index);
            let described = twin
                .and_then(|twin| if deleting { twin.delete.as_ref() } else { None }.or(twin.change.as_ref()));
            described.map(|(verb, label)| (verb.clone(), label.clone()))
        };
        let (verb, label) = what.unwrap_or_else(|| ("change".into(), "a method of its type".into()));
        let message = protection_message(&format!("{verb} {} through {label}", a(&type_name(object))));
        record_violation(message.clone());
        set_protection_error(&message);
        true
    }));
    outcome.unwrap_or_else(|_| {
        set_error(ffi::PyExc_SystemError, "internal error in the parallel engine (panic)");
        true
    })
}

/// A trampoline of one kind: refuse, or call the original with the same arguments.
macro_rules! trampoline {
    ($name:ident, $kind:expr, ($($arg:ident: $ty:ty),*) -> $ret:ty,
     object: $object:expr, deleting: $deleting:expr, failed: $failed:expr) => {
        unsafe extern "C" fn $name<const I: usize>($($arg: $ty),*) -> $ret {
            let object: *mut ffi::PyObject = $object;
            if watched(object) && refuses($kind, I, object, $deleting) {
                return $failed;
            }
            let call: unsafe extern "C" fn($($ty),*) -> $ret = original($kind, I);
            call($($arg),*)
        }
    };
}

type Object = *mut ffi::PyObject;

trampoline!(unary, Kind::Unary, (slf: Object, arg: Object) -> Object,
    object: slf, deleting: false, failed: ptr::null_mut());
trampoline!(keywords, Kind::Keywords, (slf: Object, args: Object, kwargs: Object) -> Object,
    object: slf, deleting: false, failed: ptr::null_mut());
trampoline!(fast, Kind::Fast, (slf: Object, args: *mut Object, nargs: ffi::Py_ssize_t) -> Object,
    object: slf, deleting: false, failed: ptr::null_mut());
trampoline!(fast_keywords, Kind::FastKeywords,
    (slf: Object, args: *const Object, nargs: ffi::Py_ssize_t, kwnames: Object) -> Object,
    object: slf, deleting: false, failed: ptr::null_mut());
trampoline!(method, Kind::Method,
    (slf: Object, class: *mut ffi::PyTypeObject, args: *const Object, nargs: ffi::Py_ssize_t, kwnames: Object) -> Object,
    object: slf, deleting: false, failed: ptr::null_mut());
trampoline!(store, Kind::Store, (slf: Object, key: Object, value: Object) -> c_int,
    object: slf, deleting: value.is_null(), failed: -1);
trampoline!(store_index, Kind::StoreIndex, (slf: Object, index: ffi::Py_ssize_t, value: Object) -> c_int,
    object: slf, deleting: value.is_null(), failed: -1);
trampoline!(repeat, Kind::Repeat, (slf: Object, count: ffi::Py_ssize_t) -> Object,
    object: slf, deleting: false, failed: ptr::null_mut());
trampoline!(next, Kind::Next, (slf: Object) -> Object,
    object: slf, deleting: false, failed: ptr::null_mut());
trampoline!(function_unary, Kind::FunctionUnary, (module: Object, arg: Object) -> Object,
    object: arg, deleting: false, failed: ptr::null_mut());
trampoline!(function_fast, Kind::FunctionFast, (module: Object, args: *mut Object, nargs: ffi::Py_ssize_t) -> Object,
    object: if nargs > 0 { *args } else { ptr::null_mut() }, deleting: false, failed: ptr::null_mut());

seq!(N in 0..64 {
    static UNARY: [ffi::PyCFunction; TWINS_PER_KIND] = [#(unary::<N>,)*];
    static KEYWORDS: [ffi::PyCFunctionWithKeywords; TWINS_PER_KIND] = [#(keywords::<N>,)*];
    static FAST: [ffi::PyCFunctionFast; TWINS_PER_KIND] = [#(fast::<N>,)*];
    static FAST_KEYWORDS: [ffi::PyCFunctionFastWithKeywords; TWINS_PER_KIND] = [#(fast_keywords::<N>,)*];
    static METHOD: [ffi::PyCMethod; TWINS_PER_KIND] = [#(method::<N>,)*];
    static STORE: [ffi::objobjargproc; TWINS_PER_KIND] = [#(store::<N>,)*];
    static STORE_INDEX: [ffi::ssizeobjargproc; TWINS_PER_KIND] = [#(store_index::<N>,)*];
    static REPEAT: [ffi::ssizeargfunc; TWINS_PER_KIND] = [#(repeat::<N>,)*];
    static NEXT: [ffi::iternextfunc; TWINS_PER_KIND] = [#(next::<N>,)*];
    static FUNCTION_UNARY: [ffi::PyCFunction; TWINS_PER_KIND] = [#(function_unary::<N>,)*];
    static FUNCTION_FAST: [ffi::PyCFunctionFast; TWINS_PER_KIND] = [#(function_fast::<N>,)*];
});

/// The trampoline at (kind, index), as a method definition's function pointer.
fn trampoline(kind: Kind, index: usize) -> ffi::PyMethodDefPointer {
    match kind {
        Kind::Unary => ffi::PyMethodDefPointer { PyCFunction: UNARY[index] },
        Kind::Keywords => ffi::PyMethodDefPointer { PyCFunctionWithKeywords: KEYWORDS[index] },
        Kind::Fast => ffi::PyMethodDefPointer { PyCFunctionFast: FAST[index] },
        Kind::FastKeywords => ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: FAST_KEYWORDS[index] },
        Kind::Method => ffi::PyMethodDefPointer { PyCMethod: METHOD[index] },
        Kind::FunctionUnary => ffi::PyMethodDefPointer { PyCFunction: FUNCTION_UNARY[index] },
        Kind::FunctionFast => ffi::PyMethodDefPointer { PyCFunctionFast: FUNCTION_FAST[index] },
        Kind::Store | Kind::StoreIndex | Kind::Repeat | Kind::Next => {
            unreachable!("slot wrappers have no method definition")
        }
    }
}

/// The trampoline at (kind, index) of a slot wrapper, as its `d_wrapped`.
fn slot_trampoline(kind: Kind, index: usize) -> *mut c_void {
    match kind {
        Kind::Unary => UNARY[index] as *mut c_void,
        Kind::Store => STORE[index] as *mut c_void,
        Kind::StoreIndex => STORE_INDEX[index] as *mut c_void,
        Kind::Repeat => REPEAT[index] as *mut c_void,
        Kind::Next => NEXT[index] as *mut c_void,
        _ => unreachable!("not a slot wrapper's kind"),
    }
}

/// The kind of a method definition's function, from its flags.
fn method_kind(flags: c_int, function: bool) -> Option<Kind> {
    let flags = flags & !ffi::METH_COEXIST;
    if function {
        return match flags {
            ffi::METH_O => Some(Kind::FunctionUnary),
            ffi::METH_FASTCALL => Some(Kind::FunctionFast),
            _ => None,
        };
    }
    match flags {
        ffi::METH_O | ffi::METH_NOARGS | ffi::METH_VARARGS => Some(Kind::Unary),
        f if f == ffi::METH_VARARGS | ffi::METH_KEYWORDS => Some(Kind::Keywords),
        ffi::METH_FASTCALL => Some(Kind::Fast),
        f if f == ffi::METH_FASTCALL | ffi::METH_KEYWORDS => Some(Kind::FastKeywords),
        f if f == ffi::METH_METHOD | ffi::METH_FASTCALL | ffi::METH_KEYWORDS => Some(Kind::Method),
        _ => None,
    }
}

/// The kind of a slot wrapper, from its slot's offset in PyHeapTypeObject (its wrapperbase's
/// `offset`); None for slots that no mutator of the families uses.
fn slot_kind(offset: c_int) -> Option<Kind> {
    type Heap = ffi::PyHeapTypeObject;
    let offset = usize::try_from(offset).ok()?;
    let in_place = [
        offset_of!(Heap, as_number.nb_inplace_add),
        offset_of!(Heap, as_number.nb_inplace_subtract),
        offset_of!(Heap, as_number.nb_inplace_multiply),
        offset_of!(Heap, as_number.nb_inplace_and),
        offset_of!(Heap, as_number.nb_inplace_or),
        offset_of!(Heap, as_number.nb_inplace_xor),
        offset_of!(Heap, as_sequence.sq_inplace_concat),
    ];
    if in_place.contains(&offset) {
        Some(Kind::Unary)
    } else if offset == offset_of!(Heap, as_mapping.mp_ass_subscript) {
        Some(Kind::Store)
    } else if offset == offset_of!(Heap, as_sequence.sq_ass_item) {
        Some(Kind::StoreIndex)
    } else if offset == offset_of!(Heap, as_sequence.sq_inplace_repeat) {
        Some(Kind::Repeat)
    } else if offset == offset_of!(Heap, ht_type.tp_iternext) {
        Some(Kind::Next)
    } else {
        None
    }
}

/// Finds or makes the twin of `original` (a method definition's function, or a slot
/// wrapper's), and records what it refuses. None when the kind's table is full.
unsafe fn register(
    kind: Kind,
    original: *mut c_void,
    name: &str,
    what: (String, String),
    definition: Option<*mut ffi::PyMethodDef>,
) -> Option<(usize, Option<&'static ffi::PyMethodDef>)> {
    let mut twins = TWINS.lock().unwrap_or_else(|p| p.into_inner());
    let slot = definition.is_none();
    let key = if slot { "" } else { name };
    let deleting = slot && name.starts_with("__del");
    if let Some(twin) = twins
        .iter_mut()
        .find(|twin| twin.kind == kind && twin.original == original as usize && twin.name == key)
    {
        let place = if deleting { &mut twin.delete } else { &mut twin.change };
        place.get_or_insert(what);
        return Some((twin.index, twin.definition));
    }
    let index = twins.iter().filter(|twin| twin.kind == kind).count();
    if index >= TWINS_PER_KIND {
        return None;
    }
    ORIGINALS[kind as usize][index].store(original, Ordering::Release);
    let definition = definition.map(|definition| {
        let made: &'static ffi::PyMethodDef = Box::leak(Box::new(ffi::PyMethodDef {
            ml_name: (*definition).ml_name,
            ml_meth: trampoline(kind, index),
            ml_flags: (*definition).ml_flags & !ffi::METH_COEXIST,
            ml_doc: (*definition).ml_doc,
        }));
        made
    });
    let (change, delete) = if deleting { (None, Some(what)) } else { (Some(what), None) };
    twins.push(Twin {
        kind,
        index,
        original: original as usize,
        name: key.to_string(),
        change,
        delete,
        definition,
    });
    Some((index, definition))
}

/// Replaces `owner.__dict__[name]`, a method descriptor or slot wrapper, by its twin. Ok(false)
/// when it cannot have one (another kind of attribute, an unknown calling convention, a static
/// type whose dict other interpreters share).
unsafe fn twin_method(
    owner: *mut ffi::PyTypeObject,
    name: *mut ffi::PyObject,
    name_text: &str,
    what: (String, String),
) -> Result<bool, ()> {
    let flags = ffi::PyType_GetFlags(owner);
    let heap = flags & ffi::Py_TPFLAGS_HEAPTYPE != 0;
    if !heap && flags & STATIC_BUILTIN == 0 {
        return Ok(false);
    }
    // SAFETY (CPython 3.12/3.13): PyType_GetDict gives a static builtin type's dict of the
    // current interpreter, each interpreter having its own (the main interpreter's list keeps
    // its own methods); a heap type of a worker belongs to that worker.
    let dict = ffi::PyType_GetDict(owner);
    if dict.is_null() {
        return Err(());
    }
    let descriptor = ffi::PyDict_GetItemWithError(dict, name);
    let twin = if descriptor.is_null() {
        ptr::null_mut()
    } else if ffi::Py_TYPE(descriptor) == &raw mut ffi::PyMethodDescr_Type {
        let definition = (*descriptor.cast::<ffi::PyMethodDescrObject>()).d_method;
        match method_kind((*definition).ml_flags, false) {
            Some(kind) => match register(
                kind,
                (*definition).ml_meth.PyCFunction as *mut c_void,
                name_text,
                what,
                Some(definition),
            ) {
                Some((_, Some(made))) => ffi::PyDescr_NewMethod(owner, ptr::from_ref(made).cast_mut()),
                _ => ptr::null_mut(),
            },
            None => ptr::null_mut(),
        }
    } else if ffi::Py_TYPE(descriptor) == &raw mut ffi::PyWrapperDescr_Type {
        let wrapper = descriptor.cast::<ffi::PyWrapperDescrObject>();
        let base = (*wrapper).d_base;
        match slot_kind((*base).offset) {
            Some(kind) => match register(kind, (*wrapper).d_wrapped, name_text, what, None) {
                // The original's wrapperbase: a class made later inherits the twin's
                // trampoline as its C slot, set and delete alike (one trampoline serves both).
                Some((index, _)) => PyDescr_NewWrapper(owner, base, slot_trampoline(kind, index)),
                None => ptr::null_mut(),
            },
            None => ptr::null_mut(),
        }
    } else {
        ptr::null_mut()
    };
    if twin.is_null() {
        ffi::Py_DECREF(dict);
        return if ffi::PyErr_Occurred().is_null() { Ok(false) } else { Err(()) };
    }
    if !heap {
        // SAFETY: the interpreter's inline caches hold the descriptors they specialized on
        // without a reference, trusting the type's version tag, which is not changed here
        // (below): the original must outlive this interpreter's code, so it is never freed.
        ffi::Py_INCREF(descriptor);
    }
    let stored = ffi::PyDict_SetItem(dict, name, twin);
    ffi::Py_DECREF(twin);
    ffi::Py_DECREF(dict);
    if stored != 0 {
        return Err(());
    }
    if heap {
        ffi::PyType_Modified(owner);
    } else {
        // SAFETY: not PyType_Modified, whose new version tag of the shared type object would
        // reach every interpreter: this interpreter's method cache is cleared instead. Code
        // this worker specialized before (its start-up's) may keep the original.
        ffi::PyType_ClearCache();
    }
    Ok(true)
}

/// Replaces `module.name`, a builtin function of that module whose first argument is the
/// object it changes (heapq's), by its twin.
unsafe fn twin_function(
    module: *mut ffi::PyObject,
    name: *mut ffi::PyObject,
    name_text: &str,
    what: (String, String),
) -> Result<bool, ()> {
    let dict = ffi::PyModule_GetDict(module);
    let function = if dict.is_null() { ptr::null_mut() } else { ffi::PyDict_GetItemWithError(dict, name) };
    if function.is_null() || ffi::PyCFunction_Check(function) == 0 {
        return if ffi::PyErr_Occurred().is_null() { Ok(false) } else { Err(()) };
    }
    let function = function.cast::<ffi::PyCFunctionObject>();
    let definition = (*function).m_ml;
    if (*function).m_self != module {
        return Ok(false);
    }
    let Some(kind) = method_kind((*definition).ml_flags, true) else { return Ok(false) };
    let Some((_, Some(made))) =
        register(kind, (*definition).ml_meth.PyCFunction as *mut c_void, name_text, what, Some(definition))
    else {
        return Ok(false);
    };
    let twin = ffi::PyCFunction_NewEx(ptr::from_ref(made).cast_mut(), module, (*function).m_module);
    if twin.is_null() {
        return Err(());
    }
    let stored = ffi::PyDict_SetItem(dict, name, twin);
    ffi::Py_DECREF(twin);
    if stored != 0 {
        Err(())
    } else {
        Ok(true)
    }
}

extern "C" {
    // Exported by CPython 3.12 and 3.13 (cpython/descrobject.h); pyo3-ffi skips it.
    fn PyDescr_NewWrapper(
        owner: *mut ffi::PyTypeObject,
        base: *mut ffi::wrapperbase,
        wrapped: *mut c_void,
    ) -> *mut ffi::PyObject;
}

/// `guard_twin(owner, name, verb, label) -> bool`: gives `owner.name` (a type's method or slot
/// wrapper, or a module's function) a twin that refuses to "{verb} a '<type>' through {label}"
/// on the script's objects. False if it cannot have one.
pub unsafe extern "C" fn py_guard_twin(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 4, "guard_twin") {
            return ptr::null_mut();
        }
        let [owner, name, verb, label] = std::array::from_fn(|index| *args.add(index));
        let (Some(name_text), Some(verb), Some(label)) = (arg_str(name), arg_str(verb), arg_str(label))
        else {
            return ptr::null_mut();
        };
        let twinned = if ffi::PyModule_Check(owner) != 0 {
            twin_function(owner, name, &name_text, (verb, label))
        } else if ffi::PyType_Check(owner) != 0 {
            twin_method(owner.cast(), name, &name_text, (verb, label))
        } else {
            return set_error(ffi::PyExc_TypeError, "guard_twin() needs a type or a module");
        };
        match twinned {
            Ok(done) => ffi::PyBool_FromLong(done.into()),
            Err(()) => ptr::null_mut(),
        }
    })
}
