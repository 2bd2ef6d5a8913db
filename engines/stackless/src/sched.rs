//! The scheduler's data in Rust, and the fast paths of `stackless.schedule()`,
//! `channel.send()` and `channel.receive()`.
//!
//! stackless.py still implements every operation in Python; what lives here is
//!
//! * three base types the Python classes subclass, holding the state the hot paths touch in
//!   C-struct slots instead of instance dicts: `TaskletBase` (tasklet), `ThreadStateBase`
//!   (a thread's scheduler: main/current tasklet and the run-queue ring) and `ChannelBase`
//!   (a channel, whose queue of blocked tasklets is a Rust `VecDeque`);
//! * the run-queue ring operations (`insert`, `insert_after`, `remove`, `make_first`), used by
//!   stackless.py and by the fast paths alike;
//! * a per-OS-thread pointer to the thread's scheduler object (no `_threads[get_ident()]`
//!   lookup on a switch);
//! * fast paths for the common case of `schedule()` / `send()` / `receive()`: no schedule or
//!   channel callback, no switch trap, no `run(timeout)` preemption in progress, partner in the
//!   same thread, no `schedule_all`, and (for a blocking operation) another tasklet of this
//!   thread to run. Anything else is handed, untouched, to the Python implementation
//!   (`_schedule_py`, `_send_py`, `_receive_py` in stackless.py), which stays the reference
//!   for the semantics; the fast paths do exactly what it does in those cases.
//!
//! Typed slots. The slots the Rust code dereferences as tasklets (`_next`/`_prev` of a tasklet,
//! `main`/`current`/`head` of a thread state) are get/set descriptors whose setter accepts only
//! a tasklet or None (stored as NULL), so Python code cannot make Rust read a foreign object
//! as a tasklet. The channel queue accepts only tasklets. The other slots are plain object
//! members (`Py_T_OBJECT_EX`) read by identity (`True`, `False`, `None`, the small int 0) only.
//!
//! Reference releases. A `Py_DECREF` can run arbitrary Python code (a `__del__`). The ring
//! operations collect the references they let go of and release them once the ring is
//! consistent again ([`Drops`]); the fast paths hold strong references to the tasklets they
//! work on.
//!
//! # Safety (the CPython 3.13 rules this file relies on)
//!
//! * Every entry point (`PyCFunction`s, methods, slots) is called by CPython with the GIL held
//!   on the calling OS thread; nothing here releases it, except a fiber switch, which keeps it
//!   (same OS thread, see `fiber`).
//! * Instances of the base types and of their Python subclasses are allocated by
//!   `PyType_GenericAlloc`, which zero-fills the whole object (`_PyType_AllocNoTrack`): every
//!   slot starts NULL, and `ChannelObject::queue` starts `None`. No `tp_new` is defined, so
//!   `object.__new__(cls)` (what stackless.py calls) stays allowed for the subclasses.
//! * A heap type whose base is a heap type with its own `tp_dealloc`, `tp_traverse` and
//!   `tp_clear` delegates to them (`subtype_dealloc`/`subtype_traverse`/`subtype_clear`) after
//!   handling its own `__dict__`/`__slots__`; the base's functions must then clear the base's
//!   slots, visit the object's type (heap types' instances own a reference to their type) and,
//!   in `tp_dealloc`, release the type reference (`subtype_dealloc` only does that when the
//!   base is a static type).
//! * A method descriptor checks that `self` is an instance of the type that defines the method,
//!   and a get/set descriptor that the object is an instance of its type (`descr_check`), so the
//!   casts of `self` to the base type's layout are valid.
//! * The error indicator is not part of a tasklet (see `cpython_state`): no exception may be
//!   pending when `fiber::switch_to` is called (the fast paths only switch from a clean state),
//!   and an exception raised by a switch is fetched (`PyErr_GetRaisedException`) before the
//!   fix-ups that follow it and set again afterwards.

use crate::fiber;
use crate::frames::{CallSite, ExposedCallerStack};
use pyo3_ffi as ffi;
use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::{c_int, c_void, CStr};
use std::mem::offset_of;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

type Obj = *mut ffi::PyObject;

// ----- layouts -----

/// Tasklet slots: the typed ones first (the run-queue ring `_next`/`_prev`, the ring of started
/// tasklets `_started_next`/`_started_prev`), then plain object members.
const T_NEXT: usize = 0;
const T_PREV: usize = 1;
const T_STARTED_NEXT: usize = 2;
const T_STARTED_PREV: usize = 3;
const T_TYPED: usize = 4;
const T_IN_RING: usize = 4;
const T_ALIVE: usize = 5;
const T_THREAD: usize = 6;
const T_FIBER: usize = 7;
const T_BLOCKED_ON: usize = 8;
const T_BLOCKED_SENDING: usize = 9;
const T_CHAN_BOMB: usize = 10;
const T_BOMB: usize = 11;
const T_TEMPVAL: usize = 12;
const T_BLOCK_TRAP: usize = 13;
const T_FUNC: usize = 14;
const T_ARGS: usize = 15;
const T_KWARGS: usize = 16;
const T_DEAD_THREAD: usize = 17;
const T_IS_MAIN: usize = 18;
const T_ATOMIC: usize = 19;
const T_IGNORE_NESTING: usize = 20;
const T_CONTEXT: usize = 21;
const T_COUNT: usize = 22;
const TASKLET_NAMES: [&CStr; T_COUNT] = [
    c"_next",
    c"_prev",
    c"_started_next",
    c"_started_prev",
    c"_in_ring",
    c"_alive",
    c"_thread",
    c"_fiber",
    c"_blocked_on",
    c"_blocked_sending",
    c"_chan_bomb",
    c"_bomb",
    c"tempval",
    c"block_trap",
    c"_func",
    c"_args",
    c"_kwargs",
    c"_dead_thread",
    c"_is_main",
    c"atomic",
    c"ignore_nesting",
    c"_context",
];

#[repr(C)]
pub struct TaskletObject {
    ob_base: ffi::PyObject,
    f: [Obj; T_COUNT],
}

/// Thread-state slots: typed ones first (`started_head`: the first of the ring of tasklets
/// that have started and not finished, in start order).
const S_MAIN: usize = 0;
const S_CURRENT: usize = 1;
const S_HEAD: usize = 2;
const S_STARTED: usize = 3;
const S_TYPED: usize = 4;
const S_TRAP: usize = 4;
const S_SOFT_STOP: usize = 5;
const S_PREEMPT: usize = 6;
const S_COUNT: usize = 8;
const THREAD_NAMES: [&CStr; S_COUNT] =
    [c"main", c"current", c"head", c"started_head", c"trap", c"soft_stop", c"preempt", c"ident"];

#[repr(C)]
pub struct ThreadStateObject {
    ob_base: ffi::PyObject,
    f: [Obj; S_COUNT],
    runcount: ffi::Py_ssize_t,
}

const C_CLOSING: usize = 0;
const CHANNEL_NAMES: [&CStr; 1] = [c"_closing"];

#[repr(C)]
pub struct ChannelObject {
    ob_base: ffi::PyObject,
    f: [Obj; 1],
    balance: ffi::Py_ssize_t,
    preference: ffi::Py_ssize_t,
    schedule_all: ffi::Py_ssize_t,
    /// Blocked tasklets (strong references), first come first served; None until first used.
    /// Instances are zero-filled by the allocator (no `tp_new` runs Rust code): all-zero bytes
    /// are a valid `Option<Box<_>>` (None), which is not guaranteed for a bare `VecDeque`.
    #[allow(clippy::box_collection)]
    queue: Option<Box<VecDeque<Obj>>>,
}

static TASKLET_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(ptr::null_mut());
static THREAD_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(ptr::null_mut());
static CHANNEL_TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(ptr::null_mut());

/// Python fallbacks (strong references, set once by `_install`).
static SCHEDULE_PY: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
static SEND_PY: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
static RECEIVE_PY: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
/// `_thread_state()` of stackless.py: creates this OS thread's scheduler when it has none.
static THREAD_STATE_PY: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
/// stackless.TaskletExit.
static TASKLET_EXIT: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
/// `_notify_schedule(prev, next)` of stackless.py: calls the schedule callback, if any.
static NOTIFY_SCHEDULE_PY: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
/// `_reclaim(t)` of stackless.py: kills a started tasklet found to be garbage.
static RECLAIM_PY: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
/// The method descriptors `ChannelBase.send` / `.receive` (borrowed: the type holds them), to
/// recognise a direct call (`frames::ExposedCallerStack`).
static SEND_DESCR: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
static RECEIVE_DESCR: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());

/// Whether a schedule / channel callback is installed (then only Python runs).
static SCHEDULE_CALLBACK: AtomicBool = AtomicBool::new(false);
static CHANNEL_CALLBACK: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This OS thread's scheduler object (a strong reference), or NULL. Set by stackless.py when
    /// it creates the thread's state, cleared when the thread ends. No destructor: if a thread
    /// ends without clearing it, the reference is leaked (it cannot be released without the GIL).
    static THREAD_STATE: Cell<Obj> = const { Cell::new(ptr::null_mut()) };
}

// ----- small helpers -----

#[inline]
unsafe fn tasklet<'a>(o: Obj) -> &'a mut TaskletObject {
    &mut *o.cast::<TaskletObject>()
}

#[inline]
unsafe fn thread<'a>(o: Obj) -> &'a mut ThreadStateObject {
    &mut *o.cast::<ThreadStateObject>()
}

#[inline]
unsafe fn is_instance(o: Obj, tp: &AtomicPtr<ffi::PyTypeObject>) -> bool {
    let tp = tp.load(Ordering::Relaxed);
    !tp.is_null() && (ffi::Py_TYPE(o) == tp || ffi::PyType_IsSubtype(ffi::Py_TYPE(o), tp) != 0)
}

unsafe fn set_error(kind: Obj, message: &CStr) -> Obj {
    ffi::PyErr_SetString(kind, message.as_ptr());
    ptr::null_mut()
}

fn guarded(body: impl FnOnce() -> Obj) -> Obj {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|_| {
        // SAFETY: called from a CPython entry point, GIL held.
        unsafe { set_error(ffi::PyExc_SystemError, c"internal error in the stackless engine (panic)") }
    })
}

/// A new reference to `o`, or to None if `o` is NULL.
#[inline]
unsafe fn new_ref_or_none(o: Obj) -> Obj {
    ffi::Py_NewRef(or_none(o))
}

/// `o` (borrowed), or None if `o` is NULL.
#[inline]
unsafe fn or_none(o: Obj) -> Obj {
    if o.is_null() {
        ffi::Py_None()
    } else {
        o
    }
}

/// References to release once the data structures are consistent again.
struct Drops {
    items: [Obj; 16],
    len: usize,
}

impl Drops {
    fn new() -> Self {
        Drops { items: [ptr::null_mut(); 16], len: 0 }
    }

    unsafe fn push(&mut self, o: Obj) {
        if o.is_null() {
            return;
        }
        if self.len == self.items.len() {
            // Not reached by the operations here (each lets go of fewer than 16 references).
            ffi::Py_DECREF(o);
            return;
        }
        self.items[self.len] = o;
        self.len += 1;
    }

    /// # Safety
    /// GIL held; may run arbitrary Python code.
    unsafe fn release(&mut self) {
        while self.len > 0 {
            self.len -= 1;
            ffi::Py_DECREF(self.items[self.len]);
        }
    }
}

impl Drop for Drops {
    fn drop(&mut self) {
        // SAFETY: every Drops lives inside an entry point called with the GIL held (CPython
        // calls C functions and slots with an attached thread state); normally already empty.
        unsafe { self.release() }
    }
}

/// Stores a new strong reference to `value` (NULL allowed) into `slot`; the old value goes to
/// `drops`.
#[inline]
unsafe fn store(slot: &mut Obj, value: Obj, drops: &mut Drops) {
    let old = std::mem::replace(slot, if value.is_null() { value } else { ffi::Py_NewRef(value) });
    drops.push(old);
}

#[inline]
unsafe fn store_bool(slot: &mut Obj, value: bool, drops: &mut Drops) {
    store(slot, if value { ffi::Py_True() } else { ffi::Py_False() }, drops);
}

/// Takes the value out of `slot`, leaving None; returns a strong reference (None if empty).
#[inline]
unsafe fn take(slot: &mut Obj) -> Obj {
    let old = std::mem::replace(slot, ffi::Py_NewRef(ffi::Py_None()));
    if old.is_null() {
        ffi::Py_NewRef(ffi::Py_None())
    } else {
        old
    }
}

#[inline]
unsafe fn is_true(o: Obj) -> bool {
    o == ffi::Py_True()
}

#[inline]
unsafe fn is_none(o: Obj) -> bool {
    o.is_null() || o == ffi::Py_None()
}

// ----- the run-queue ring (same algorithms as the Python version had) -----

/// Keeps a tasklet out of the cyclic GC while it is in the run queue or has started and not
/// ended: traversing it is wasted work then (about 40% of creating one: every new tasklet went
/// through a young and a middle collection), since the scheduler runs it, or it is suspended
/// (blocked, paused) and, in all but rare cases, something can still wake it. It is tracked
/// again as soon as it leaves both: a cycle through a tasklet that ends (or is taken out of
/// the queue unstarted) is collected as before. While untracked, what it references counts as
/// referenced from outside. Called after every change of ring membership. The rare case, a
/// suspended tasklet nothing can wake, is looked for by full collections only:
/// [`th_track_suspended`] tracks the suspended tasklets just before one.
unsafe fn update_gc_tracking(t: Obj) {
    let owned = is_true(tasklet(t).f[T_IN_RING]) || !tasklet(t).f[T_STARTED_NEXT].is_null();
    // SAFETY (CPython 3.13): the public calls, guarded by the tracked check as they require;
    // `t` is fully initialised (it is in, or was in, a ring).
    let tracked = ffi::PyObject_GC_IsTracked(t) != 0;
    if owned && tracked {
        ffi::PyObject_GC_UnTrack(t.cast());
    } else if !owned && !tracked {
        ffi::PyObject_GC_Track(t.cast());
    }
}

unsafe fn ring_insert(th: Obj, t: Obj, drops: &mut Drops) {
    let state = thread(th);
    let head = state.f[S_HEAD];
    if head.is_null() {
        store(&mut state.f[S_HEAD], t, drops);
        store(&mut tasklet(t).f[T_NEXT], t, drops);
        store(&mut tasklet(t).f[T_PREV], t, drops);
    } else {
        let last = tasklet(head).f[T_PREV];
        store(&mut tasklet(t).f[T_PREV], last, drops);
        store(&mut tasklet(t).f[T_NEXT], head, drops);
        store(&mut tasklet(last).f[T_NEXT], t, drops);
        store(&mut tasklet(head).f[T_PREV], t, drops);
    }
    store_bool(&mut tasklet(t).f[T_IN_RING], true, drops);
    update_gc_tracking(t);
    state.runcount += 1;
}

/// Fails (without changing anything) if `anchor` is not in a ring.
unsafe fn ring_insert_after(th: Obj, anchor: Obj, t: Obj, drops: &mut Drops) -> Result<(), ()> {
    let after = tasklet(anchor).f[T_NEXT];
    if after.is_null() {
        set_error(ffi::PyExc_RuntimeError, c"insert_after: the anchor tasklet is not in the run queue");
        return Err(());
    }
    store(&mut tasklet(t).f[T_PREV], anchor, drops);
    store(&mut tasklet(t).f[T_NEXT], after, drops);
    store(&mut tasklet(after).f[T_PREV], t, drops);
    store(&mut tasklet(anchor).f[T_NEXT], t, drops);
    store_bool(&mut tasklet(t).f[T_IN_RING], true, drops);
    update_gc_tracking(t);
    thread(th).runcount += 1;
    Ok(())
}

/// Fails (without changing anything) if `t` is not in a ring.
unsafe fn ring_remove(th: Obj, t: Obj, drops: &mut Drops) -> Result<(), ()> {
    let state = thread(th);
    let (next, prev) = (tasklet(t).f[T_NEXT], tasklet(t).f[T_PREV]);
    if next.is_null() || prev.is_null() {
        set_error(ffi::PyExc_RuntimeError, c"remove: the tasklet is not in the run queue");
        return Err(());
    }
    if next == t {
        store(&mut state.f[S_HEAD], ptr::null_mut(), drops);
    } else {
        store(&mut tasklet(prev).f[T_NEXT], next, drops);
        store(&mut tasklet(next).f[T_PREV], prev, drops);
        if state.f[S_HEAD] == t {
            store(&mut state.f[S_HEAD], next, drops);
        }
    }
    store(&mut tasklet(t).f[T_NEXT], ptr::null_mut(), drops);
    store(&mut tasklet(t).f[T_PREV], ptr::null_mut(), drops);
    store_bool(&mut tasklet(t).f[T_IN_RING], false, drops);
    update_gc_tracking(t);
    state.runcount -= 1;
    Ok(())
}

/// Rotates/inserts so that `t` runs next.
unsafe fn ring_make_first(th: Obj, t: Obj, drops: &mut Drops) -> Result<(), ()> {
    if !is_true(tasklet(t).f[T_IN_RING]) {
        let head = thread(th).f[S_HEAD];
        if head.is_null() {
            ring_insert(th, t, drops);
        } else {
            ring_insert_after(th, tasklet(head).f[T_PREV], t, drops)?;
        }
    }
    store(&mut thread(th).f[S_HEAD], t, drops);
    Ok(())
}

// ----- the ring of started tasklets (start order; the exit-time kill walks it) -----
//
// Its links (`_started_next`/`_started_prev` of a tasklet, `started_head` of a thread state)
// are borrowed: being started must not keep a tasklet alive, or a tasklet blocked on a channel
// nobody can reach would never be garbage. A tasklet leaves the ring when it ends, and in its
// `tp_clear` / `tp_dealloc` at the latest (`started_unlink`), so no link ever dangles.

/// Appends `t` (not in the ring) at the end of `th`'s ring of started tasklets.
unsafe fn started_add(th: Obj, t: Obj) {
    let head = thread(th).f[S_STARTED];
    if head.is_null() {
        thread(th).f[S_STARTED] = t;
        tasklet(t).f[T_STARTED_NEXT] = t;
        tasklet(t).f[T_STARTED_PREV] = t;
    } else {
        let last = tasklet(head).f[T_STARTED_PREV];
        tasklet(t).f[T_STARTED_PREV] = last;
        tasklet(t).f[T_STARTED_NEXT] = head;
        tasklet(last).f[T_STARTED_NEXT] = t;
        tasklet(head).f[T_STARTED_PREV] = t;
    }
    update_gc_tracking(t);
}

/// Takes `t` out of `th`'s ring of started tasklets (nothing if it is not in one) and lets the
/// cyclic GC track it if it is not in the run queue either.
unsafe fn started_remove(th: Obj, t: Obj) {
    started_unlink_from(th, t);
    update_gc_tracking(t);
}

/// Only the unlinking of [`started_remove`] (for a tasklet being cleared or deallocated).
/// Releases nothing (the links are borrowed), so it runs no Python code.
unsafe fn started_unlink_from(th: Obj, t: Obj) {
    let (next, prev) = (tasklet(t).f[T_STARTED_NEXT], tasklet(t).f[T_STARTED_PREV]);
    if next.is_null() || prev.is_null() {
        return;
    }
    if next == t {
        if thread(th).f[S_STARTED] == t {
            thread(th).f[S_STARTED] = ptr::null_mut();
        }
    } else {
        tasklet(prev).f[T_STARTED_NEXT] = next;
        tasklet(next).f[T_STARTED_PREV] = prev;
        if thread(th).f[S_STARTED] == t {
            thread(th).f[S_STARTED] = next;
        }
    }
    tasklet(t).f[T_STARTED_NEXT] = ptr::null_mut();
    tasklet(t).f[T_STARTED_PREV] = ptr::null_mut();
}

/// [`started_unlink_from`] the thread `t` belongs to, when it is going away.
unsafe fn started_unlink(t: Obj) {
    let th = tasklet(t).f[T_THREAD];
    if !th.is_null() && is_instance(th, &THREAD_TYPE) {
        started_unlink_from(th, t);
    }
}

/// `th._track_suspended()`: lets the cyclic GC see `th`'s suspended tasklets (started, not
/// ended, out of the run queue: blocked or paused), which [`update_gc_tracking`] keeps from it,
/// so that the full collection about to run finds those nothing can wake (stackless.py calls
/// this from a `gc.callbacks` hook). They stay tracked until they are in the run queue again.
unsafe extern "C" fn th_track_suspended(th: Obj, _args: Obj) -> Obj {
    guarded(|| {
        let head = thread(th).f[S_STARTED];
        let mut t = head;
        while !t.is_null() {
            // SAFETY (CPython 3.13): tracking a fully initialised, untracked GC object is allowed
            // outside a collection; gc.callbacks run before the collection starts its work.
            if !is_true(tasklet(t).f[T_IN_RING]) && ffi::PyObject_GC_IsTracked(t) == 0 {
                ffi::PyObject_GC_Track(t.cast());
            }
            t = tasklet(t).f[T_STARTED_NEXT];
            if t == head {
                break;
            }
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `th.started_list()`: the started tasklets, in start order.
unsafe extern "C" fn th_started_list(th: Obj, _args: Obj) -> Obj {
    guarded(|| {
        let list = ffi::PyList_New(0);
        if list.is_null() {
            return list;
        }
        let head = thread(th).f[S_STARTED];
        let mut t = head;
        while !t.is_null() {
            if ffi::PyList_Append(list, t) < 0 {
                ffi::Py_DECREF(list);
                return ptr::null_mut();
            }
            t = tasklet(t).f[T_STARTED_NEXT];
            if t == head {
                break;
            }
        }
        list
    })
}

/// `th.started_clear()`: empties the ring of started tasklets.
unsafe extern "C" fn th_started_clear(th: Obj, _args: Obj) -> Obj {
    guarded(|| {
        while !thread(th).f[S_STARTED].is_null() {
            started_remove(th, thread(th).f[S_STARTED]);
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

// ----- the body of every tasklet -----

/// Calls the schedule callback (through stackless.py) for a switch from `prev` to `next`, if
/// one is installed; false with an exception set if it raised.
unsafe fn notify_schedule(prev: Obj, next: Obj) -> bool {
    if !SCHEDULE_CALLBACK.load(Ordering::Relaxed) {
        return true;
    }
    let notify = NOTIFY_SCHEDULE_PY.load(Ordering::Relaxed);
    if notify.is_null() {
        return true;
    }
    let args = [prev, next];
    let result = ffi::PyObject_Vectorcall(notify, args.as_ptr(), 2, ptr::null_mut());
    ffi::Py_XDECREF(result);
    !result.is_null()
}

/// `func(*args, **kwargs)` for a tasklet's bound function and arguments of other types than
/// `setup` stores (Python code may have set `_args`/`_kwargs`).
#[inline(never)]
unsafe fn call_bound(func: Obj, args: Obj, kwargs: Obj) -> Obj {
    let args = if ffi::PyTuple_Check(args) != 0 {
        ffi::Py_NewRef(args)
    } else if is_none(args) {
        ffi::PyTuple_New(0)
    } else {
        ffi::PySequence_Tuple(args)
    };
    if args.is_null() {
        return args;
    }
    let kwargs = if is_none(kwargs) || ffi::PyDict_Check(kwargs) != 0 {
        ffi::Py_XNewRef(if is_none(kwargs) { ptr::null_mut() } else { kwargs })
    } else {
        let copy = ffi::PyObject_CallOneArg(ptr::addr_of_mut!(ffi::PyDict_Type).cast(), kwargs);
        if copy.is_null() {
            ffi::Py_DECREF(args);
            return copy;
        }
        copy
    };
    let result = ffi::PyObject_Call(func, args, kwargs);
    ffi::Py_DECREF(args);
    ffi::Py_XDECREF(kwargs);
    result
}

/// What a tasklet's fiber runs: the tasklet's function, then the hand-over to whoever runs
/// next. Returns `(fiber to run next, None)`; an exception that ends the tasklet (other than
/// TaskletExit) is raised, and the fiber machinery delivers it to the thread's main tasklet.
/// stackless.py's reference semantics: an uncaught exception goes to main, a tasklet that
/// ends while the main tasklet is blocked with nobody left to run raises the deadlock error.
///
/// # Safety
/// GIL held; `t` is a tasklet (a strong reference held by the caller) whose fiber is running
/// this, on the tasklet's own stack.
pub unsafe fn tasklet_body(t: Obj) -> Obj {
    let th = tasklet(t).f[T_THREAD];
    if th.is_null() || !is_instance(th, &THREAD_TYPE) {
        return set_error(ffi::PyExc_RuntimeError, c"the tasklet has no thread");
    }
    let th = ffi::Py_NewRef(th);
    started_add(th, t);
    let bomb = take(&mut tasklet(t).f[T_BOMB]);
    let result = if !is_none(bomb) {
        raise(bomb);
        ptr::null_mut()
    } else {
        ffi::Py_DECREF(bomb);
        let func = new_ref_or_none(tasklet(t).f[T_FUNC]);
        let args = take(&mut tasklet(t).f[T_ARGS]);
        let kwargs = take(&mut tasklet(t).f[T_KWARGS]);
        fiber::hold_body_refs([th, func, args, kwargs]);
        let result = if ffi::PyTuple_CheckExact(args) != 0 && kwargs == ffi::Py_None() {
            ffi::PyObject_Call(func, args, ptr::null_mut())
        } else if ffi::PyTuple_CheckExact(args) != 0 && ffi::PyDict_CheckExact(kwargs) != 0 {
            ffi::PyObject_Call(func, args, kwargs)
        } else {
            call_bound(func, args, kwargs)
        };
        fiber::hold_body_refs([ptr::null_mut(); 4]);
        ffi::Py_DECREF(func);
        ffi::Py_DECREF(args);
        ffi::Py_DECREF(kwargs);
        result
    };
    let mut error = ptr::null_mut();
    if result.is_null() {
        let exc = ffi::PyErr_GetRaisedException();
        let tasklet_exit = TASKLET_EXIT.load(Ordering::Relaxed);
        if !tasklet_exit.is_null() && ffi::PyErr_GivenExceptionMatches(exc, tasklet_exit) != 0 {
            ffi::Py_DECREF(exc);
        } else {
            error = exc;
        }
    } else {
        ffi::Py_DECREF(result);
    }
    let next = finish_tasklet(th, t, error);
    ffi::Py_DECREF(th);
    next
}

/// The end of [`tasklet_body`] (its own function: its locals are not on the stack while the
/// tasklet runs); `error` (stolen) is the exception that ended the tasklet, or NULL.
#[inline(never)]
unsafe fn finish_tasklet(th: Obj, t: Obj, mut error: Obj) -> Obj {
    let mut drops = Drops::new();
    started_remove(th, t);
    store_bool(&mut tasklet(t).f[T_ALIVE], false, &mut drops);
    store(&mut tasklet(t).f[T_BOMB], ffi::Py_None(), &mut drops);
    if is_true(tasklet(t).f[T_IN_RING]) && ring_remove(th, t, &mut drops).is_err() {
        ffi::PyErr_Clear(); // not reached: the tasklet is in the ring
    }
    drops.release();
    let main = ffi::Py_XNewRef(thread(th).f[S_MAIN]);
    let head = ffi::Py_XNewRef(thread(th).f[S_HEAD]);
    if main.is_null() {
        ffi::Py_XDECREF(head);
        ffi::Py_XDECREF(error);
        return set_error(ffi::PyExc_RuntimeError, c"the tasklet's thread has no main tasklet");
    }
    let blocked_on = tasklet(main).f[T_BLOCKED_ON];
    if error.is_null() && head.is_null() && !is_none(blocked_on) {
        let sending =
            is_instance(blocked_on, &CHANNEL_TYPE) && (*blocked_on.cast::<ChannelObject>()).balance > 0;
        let message = if sending {
            c"the main tasklet is sending without a receiver available."
        } else {
            c"the main tasklet is receiving without a sender available."
        };
        set_error(ffi::PyExc_RuntimeError, message);
        error = ffi::PyErr_GetRaisedException();
    }
    let target = if error.is_null() && !head.is_null() { ffi::Py_NewRef(head) } else { ffi::Py_NewRef(main) };
    ffi::Py_XDECREF(head);
    ffi::Py_DECREF(main);
    store(&mut thread(th).f[S_CURRENT], target, &mut drops);
    drops.release();
    let notified = notify_schedule(t, target);
    if !notified {
        ffi::Py_XDECREF(error);
        ffi::Py_DECREF(target);
        return ptr::null_mut();
    }
    if !error.is_null() {
        ffi::Py_DECREF(target);
        ffi::PyErr_SetRaisedException(error);
        return ptr::null_mut();
    }
    let result = ffi::PyTuple_New(2);
    if !result.is_null() {
        ffi::PyTuple_SET_ITEM(result, 0, ffi::Py_NewRef(or_none(tasklet(target).f[T_FIBER])));
        ffi::PyTuple_SET_ITEM(result, 1, ffi::Py_NewRef(ffi::Py_None()));
    }
    ffi::Py_DECREF(target);
    result
}

// ----- the switch -----

/// Whether this thread's scheduler is in a state where the fast paths apply: no switch trap,
/// no soft stop pending, no `run(timeout)` preemption in progress.
#[inline]
unsafe fn plain_state(th: Obj) -> bool {
    let state = thread(th);
    let trap = state.f[S_TRAP];
    !trap.is_null()
        && ffi::PyLong_CheckExact(trap) != 0
        && trap == small_zero()
        && state.f[S_SOFT_STOP] == ffi::Py_False()
        && state.f[S_PREEMPT] == ffi::Py_None()
}

#[inline]
unsafe fn small_zero() -> Obj {
    // CPython 3.13 caches the small ints (-5..=256) as immortal singletons; int arithmetic
    // that yields 0 returns this object. Anything else (a subclass, a big 0) only means the
    // fast path is not taken.
    static ZERO: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
    let zero = ZERO.load(Ordering::Relaxed);
    if !zero.is_null() {
        return zero;
    }
    let zero = ffi::PyLong_FromLong(0);
    ZERO.store(zero, Ordering::Relaxed);
    zero
}

/// `_switch(th, target)` of stackless.py for the case it has no trap, no soft stop and no
/// schedule callback to consider, with `target` not the current tasklet `me`. Returns the
/// value `me` is resumed with (a strong reference), or NULL with an exception set.
///
/// # Safety
/// GIL held; `th` is this thread's scheduler, `me` its current tasklet, `target` a tasklet of
/// this thread; the caller holds strong references to all three.
///
/// Frame size matters on this path: every frame between a tasklet's start and the point where
/// it suspends is copied off its stack and kept while it is suspended, so the work before and
/// after the switch (with its `Drops`, 136 bytes) lives in functions of their own, and the
/// frame held across the switch keeps only a few pointers. The same goes for the channel
/// operations that call this ([`action_fast`]).
///
/// `site`: the channel operation's call, for a tasklet that blocks (`fiber::switch_to`).
unsafe fn switch_fast(th: Obj, me: Obj, target: Obj, site: Option<&CallSite>) -> Obj {
    let fiber = make_current(th, target);
    let value = fiber::switch_to(fiber, ptr::null_mut(), ptr::null_mut(), site);
    resumed(th, me, fiber, value)
}

/// Before [`switch_fast`] switches: `target` becomes the current tasklet; returns its fiber
/// (a new reference).
#[inline(never)]
unsafe fn make_current(th: Obj, target: Obj) -> Obj {
    let mut drops = Drops::new();
    store(&mut thread(th).f[S_CURRENT], target, &mut drops);
    let fiber = new_ref_or_none(tasklet(target).f[T_FIBER]);
    drops.release();
    fiber
}

/// After [`switch_fast`]'s switch, running `me` again: the same fix-ups as the `finally` of
/// the Python `_switch`; releases `fiber` and returns what `switch_fast` returns.
#[inline(never)]
unsafe fn resumed(th: Obj, me: Obj, fiber: Obj, value: Obj) -> Obj {
    let mut drops = Drops::new();
    // SAFETY: the exception (if any) is fetched first, as a `finally` block runs: the ring
    // operations below may fail and raise their own, and their decrefs may run Python code.
    let exc = if value.is_null() { ffi::PyErr_GetRaisedException() } else { ptr::null_mut() };
    ffi::Py_DECREF(fiber);
    store(&mut thread(th).f[S_CURRENT], me, &mut drops);
    let me_t = tasklet(me);
    let mut failed = false;
    if !is_true(me_t.f[T_IN_RING]) && is_true(me_t.f[T_ALIVE]) {
        failed = ring_make_first(th, me, &mut drops).is_err();
    } else if thread(th).f[S_HEAD] != me && is_true(me_t.f[T_IN_RING]) {
        store(&mut thread(th).f[S_HEAD], me, &mut drops);
    }
    drops.release();
    if failed {
        ffi::Py_XDECREF(value);
        ffi::Py_XDECREF(exc);
        return ptr::null_mut();
    }
    if value.is_null() {
        ffi::PyErr_SetRaisedException(exc);
        return value;
    }
    let bomb = tasklet(me).f[T_BOMB];
    if !is_none(bomb) {
        let bomb = take(&mut tasklet(me).f[T_BOMB]);
        ffi::Py_DECREF(value);
        raise(bomb);
        return ptr::null_mut();
    }
    value
}

/// `raise bomb` (with the implicit `__context__` chaining of a Python `raise`); steals `bomb`.
unsafe fn raise(bomb: Obj) {
    if ffi::PyExceptionInstance_Check(bomb) != 0 {
        ffi::PyErr_SetObject(ffi::Py_TYPE(bomb).cast(), bomb);
    } else if ffi::PyExceptionClass_Check(bomb) != 0 {
        ffi::PyErr_SetNone(bomb);
    } else {
        ffi::PyErr_SetString(ffi::PyExc_TypeError, c"exceptions must derive from BaseException".as_ptr());
    }
    ffi::Py_DECREF(bomb);
}

/// This thread's scheduler if the fast paths may run (borrowed), else NULL.
#[inline]
unsafe fn fast_thread_state() -> Obj {
    let th = THREAD_STATE.with(|c| c.get());
    if th.is_null() || !plain_state(th) {
        return ptr::null_mut();
    }
    let me = thread(th).f[S_CURRENT];
    if me.is_null() {
        return ptr::null_mut();
    }
    th
}

/// `schedule(retval)` fast path; None means "use the Python implementation".
unsafe fn schedule_fast(retval: Obj) -> Option<Obj> {
    if SCHEDULE_CALLBACK.load(Ordering::Relaxed) {
        return None;
    }
    let th = fast_thread_state();
    if th.is_null() {
        return None;
    }
    let me = thread(th).f[S_CURRENT];
    if !is_true(tasklet(me).f[T_IN_RING]) {
        return None;
    }
    let retval = ffi::Py_NewRef(if is_none(retval) { me } else { retval });
    let target = tasklet(me).f[T_NEXT];
    if target == me {
        return Some(retval);
    }
    let th = ffi::Py_NewRef(th);
    let me = ffi::Py_NewRef(me);
    let target = ffi::Py_NewRef(target);
    let mut drops = Drops::new();
    store(&mut thread(th).f[S_HEAD], target, &mut drops);
    drops.release();
    let value = switch_fast(th, me, target, None);
    ffi::Py_DECREF(target);
    ffi::Py_DECREF(me);
    ffi::Py_DECREF(th);
    if value.is_null() {
        ffi::Py_DECREF(retval);
        return Some(ptr::null_mut());
    }
    ffi::Py_DECREF(value);
    Some(retval)
}

/// `channel._action(sending, value, None)` fast path; None means "use the Python
/// implementation" (nothing has been changed then). Each case is a function of its own, so
/// that a tasklet blocked here keeps only the small frames of the blocking one (see
/// [`switch_fast`] on frame sizes).
unsafe fn action_fast(
    ch: Obj,
    sending: bool,
    value: Obj,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
) -> Option<Obj> {
    if CHANNEL_CALLBACK.load(Ordering::Relaxed) {
        return None;
    }
    let th = fast_thread_state();
    if th.is_null() {
        return None;
    }
    let channel = &*ch.cast::<ChannelObject>();
    let partner_waiting = if sending { channel.balance < 0 } else { channel.balance > 0 };
    if partner_waiting {
        pass_to_partner(ch, th, sending, value)
    } else {
        block_on(ch, th, sending, value, args, nargs)
    }
}

/// [`action_fast`] with a partner waiting on the channel.
#[inline(never)]
unsafe fn pass_to_partner(ch: Obj, th: Obj, sending: bool, value: Obj) -> Option<Obj> {
    let channel = &mut *ch.cast::<ChannelObject>();
    let me = thread(th).f[S_CURRENT];
    let &partner = channel.queue.as_ref().and_then(|q| q.front())?;
    let pref = channel.preference;
    let partner_first = (pref < 0 && sending) || (pref > 0 && !sending);
    if tasklet(partner).f[T_THREAD] != th
        || channel.schedule_all != 0
        || (partner_first && !is_true(tasklet(me).f[T_IN_RING]))
    {
        return None;
    }
    let th = ffi::Py_NewRef(th);
    let me = ffi::Py_NewRef(me);
    let mut drops = Drops::new();
    // The queue's reference to the partner (its front) becomes ours.
    if let Some(queue) = channel.queue.as_mut() {
        queue.pop_front();
    }
    channel.balance += if sending { 1 } else { -1 };
    let p = tasklet(partner);
    store(&mut p.f[T_BLOCKED_ON], ffi::Py_None(), &mut drops);
    let (result, bomb) = if sending {
        store(&mut p.f[T_TEMPVAL], value, &mut drops);
        store(&mut p.f[T_BOMB], ffi::Py_None(), &mut drops);
        (ffi::Py_NewRef(ffi::Py_None()), ptr::null_mut())
    } else {
        (take(&mut p.f[T_TEMPVAL]), take(&mut p.f[T_CHAN_BOMB]))
    };
    let mut outcome = Ok(());
    if partner_first {
        outcome = ring_insert_after(th, me, partner, &mut drops);
        if outcome.is_ok() {
            store(&mut thread(th).f[S_HEAD], partner, &mut drops);
            drops.release();
            let back = switch_fast(th, me, partner, None);
            if back.is_null() {
                outcome = Err(());
            } else {
                ffi::Py_DECREF(back);
            }
        }
    } else {
        ring_insert(th, partner, &mut drops);
    }
    drops.release();
    ffi::Py_DECREF(partner);
    ffi::Py_DECREF(me);
    ffi::Py_DECREF(th);
    if outcome.is_err() {
        ffi::Py_DECREF(result);
        ffi::Py_XDECREF(bomb);
        return Some(ptr::null_mut());
    }
    if !sending && !is_none(bomb) {
        ffi::Py_DECREF(result);
        raise(bomb);
        return Some(ptr::null_mut());
    }
    ffi::Py_XDECREF(bomb);
    Some(result)
}

/// [`action_fast`] with nobody waiting: block, if another tasklet of this thread can run.
#[inline(never)]
unsafe fn block_on(
    ch: Obj,
    th: Obj,
    sending: bool,
    value: Obj,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
) -> Option<Obj> {
    let me = thread(th).f[S_CURRENT];
    let target = blocking_target(ch, th, me)?;
    let th = ffi::Py_NewRef(th);
    let me = ffi::Py_NewRef(me);
    let target = ffi::Py_NewRef(target);
    if enqueue_blocked(ch, th, me, sending, value).is_err() {
        ffi::Py_DECREF(target);
        ffi::Py_DECREF(me);
        ffi::Py_DECREF(th);
        return Some(ptr::null_mut());
    }
    // Blocked, `me` is examined by full collections (`th_track_suspended`): they hear of the
    // references held here. (A tasklet suspended in the run queue never is, so the other
    // callers of switch_fast need not record theirs; if one is taken out of the queue while
    // suspended, what its stack holds just counts as held from outside.)
    let my_fiber = tasklet(me).f[T_FIBER];
    fiber::hold_switch_refs(my_fiber, me, [th, me, target]);
    let site = channel_call_site(ch, sending, args, nargs, ptr::null_mut());
    let back = switch_fast(th, me, target, Some(&site));
    fiber::hold_switch_refs(my_fiber, me, [ptr::null_mut(); 3]);
    Some(unblocked(ch, th, me, target, sending, back))
}

/// Who runs when `me` blocks on `ch`: the next runnable tasklet, else the main tasklet; None
/// (use the Python implementation) for a closing channel, a block trap, or a deadlock.
#[inline(never)]
unsafe fn blocking_target(ch: Obj, th: Obj, me: Obj) -> Option<Obj> {
    let channel = &*ch.cast::<ChannelObject>();
    if channel.f[C_CLOSING] != ffi::Py_False() || tasklet(me).f[T_BLOCK_TRAP] != ffi::Py_False() {
        return None;
    }
    let in_ring = is_true(tasklet(me).f[T_IN_RING]);
    let head = thread(th).f[S_HEAD];
    let next_head = if !in_ring {
        head
    } else if tasklet(me).f[T_NEXT] == me {
        ptr::null_mut()
    } else if head == me {
        tasklet(me).f[T_NEXT]
    } else {
        head
    };
    if !next_head.is_null() {
        return Some(next_head);
    }
    let main = thread(th).f[S_MAIN];
    if main.is_null() || main == me || !is_none(tasklet(main).f[T_BLOCKED_ON]) {
        return None; // deadlock, or waiting for other threads: Python's business
    }
    Some(main)
}

/// Takes `me` out of the run queue and puts it on `ch`'s queue (Err with an exception set if
/// the ring operation fails).
#[inline(never)]
unsafe fn enqueue_blocked(ch: Obj, th: Obj, me: Obj, sending: bool, value: Obj) -> Result<(), ()> {
    let channel = &mut *ch.cast::<ChannelObject>();
    let mut drops = Drops::new();
    if is_true(tasklet(me).f[T_IN_RING]) && ring_remove(th, me, &mut drops).is_err() {
        drops.release();
        return Err(());
    }
    let m = tasklet(me);
    store(&mut m.f[T_BLOCKED_ON], ch, &mut drops);
    store_bool(&mut m.f[T_BLOCKED_SENDING], sending, &mut drops);
    if sending {
        store(&mut m.f[T_TEMPVAL], value, &mut drops);
        store(&mut m.f[T_CHAN_BOMB], ffi::Py_None(), &mut drops);
    }
    channel.queue.get_or_insert_with(Default::default).push_back(ffi::Py_NewRef(me));
    channel.balance += if sending { 1 } else { -1 };
    drops.release();
    Ok(())
}

/// After [`block_on`]'s switch, `me` running again (`back` is what it was resumed with, or
/// NULL with an exception set): releases `th`, `me` and `target` and returns the channel
/// operation's result.
#[inline(never)]
unsafe fn unblocked(ch: Obj, th: Obj, me: Obj, target: Obj, sending: bool, back: Obj) -> Obj {
    let mut drops = Drops::new();
    // Fetched before any decref (which may run Python code).
    let exc = if back.is_null() { ffi::PyErr_GetRaisedException() } else { ptr::null_mut() };
    ffi::Py_DECREF(target);
    if back.is_null() && tasklet(me).f[T_BLOCKED_ON] == ch {
        unblock(ch, me, &mut drops);
    }
    let mut failed = false;
    if !is_true(tasklet(me).f[T_IN_RING]) {
        failed = ring_make_first(th, me, &mut drops).is_err();
    }
    drops.release();
    ffi::Py_DECREF(th);
    if back.is_null() || failed {
        ffi::Py_DECREF(me);
        ffi::Py_XDECREF(back);
        if !exc.is_null() {
            if failed {
                ffi::Py_DECREF(exc);
            } else {
                ffi::PyErr_SetRaisedException(exc);
            }
        }
        return ptr::null_mut();
    }
    ffi::Py_DECREF(back);
    if sending {
        ffi::Py_DECREF(me);
        return ffi::Py_NewRef(ffi::Py_None());
    }
    let result = take(&mut tasklet(me).f[T_TEMPVAL]);
    let bomb = take(&mut tasklet(me).f[T_BOMB]);
    ffi::Py_DECREF(me);
    if !is_none(bomb) {
        ffi::Py_DECREF(result);
        raise(bomb);
        return ptr::null_mut();
    }
    ffi::Py_DECREF(bomb);
    result
}

/// `channel._unblock(t)`: takes a blocked tasklet out of the queue.
unsafe fn unblock(ch: Obj, t: Obj, drops: &mut Drops) -> bool {
    let channel = &mut *ch.cast::<ChannelObject>();
    let Some(queue) = channel.queue.as_mut() else { return false };
    let Some(index) = queue.iter().position(|&item| item == t) else { return false };
    if let Some(item) = queue.remove(index) {
        drops.push(item);
    }
    channel.balance += if is_true(tasklet(t).f[T_BLOCKED_SENDING]) { -1 } else { 1 };
    store(&mut tasklet(t).f[T_BLOCKED_ON], ffi::Py_None(), drops);
    true
}

// ----- Python entry points: module functions -----

/// Calls a Python fallback with the arguments of a vectorcall (plus `self` first if given).
unsafe fn call_fallback(
    slot: &AtomicPtr<ffi::PyObject>,
    this: Obj,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
    kwnames: Obj,
) -> Obj {
    let func = slot.load(Ordering::Relaxed);
    if func.is_null() {
        return set_error(ffi::PyExc_RuntimeError, c"the stackless module is not initialised");
    }
    let nargs = ffi::PyVectorcall_NARGS(nargs as usize);
    if this.is_null() {
        return ffi::PyObject_Vectorcall(func, args, nargs as usize, kwnames);
    }
    let nkw = if kwnames.is_null() { 0 } else { ffi::PyTuple_GET_SIZE(kwnames) };
    let mut all: Vec<Obj> = Vec::with_capacity((1 + nargs + nkw) as usize);
    all.push(this);
    for i in 0..(nargs + nkw) {
        all.push(*args.offset(i));
    }
    ffi::PyObject_Vectorcall(func, all.as_ptr(), (nargs + 1) as usize, kwnames)
}

/// `schedule(retval=None)`.
pub unsafe extern "C" fn py_schedule(
    _module: Obj,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
    kwnames: Obj,
) -> Obj {
    guarded(|| {
        if kwnames.is_null() && nargs <= 1 {
            let retval = if nargs == 1 { *args } else { ptr::null_mut() };
            if let Some(result) = schedule_fast(retval) {
                return result;
            }
        }
        call_fallback(&SCHEDULE_PY, ptr::null_mut(), args, nargs, kwnames)
    })
}

/// `_install(schedule_py, send_py, receive_py, thread_state, TaskletExit, notify_schedule,
/// reclaim)`: the Python implementations to fall back to, how a thread gets its scheduler, the
/// exception that ends a tasklet silently, how the end of a tasklet reports its switch, and
/// what kills a tasklet found to be garbage (`tasklet_finalize`).
pub unsafe extern "C" fn py_install(_module: Obj, args: *mut Obj, nargs: ffi::Py_ssize_t) -> Obj {
    guarded(|| {
        if nargs != 7 {
            return set_error(
                ffi::PyExc_TypeError,
                c"_install(schedule, send, receive, thread_state, TaskletExit, notify_schedule, reclaim) takes 7 arguments",
            );
        }
        let slots = [
            &SCHEDULE_PY,
            &SEND_PY,
            &RECEIVE_PY,
            &THREAD_STATE_PY,
            &TASKLET_EXIT,
            &NOTIFY_SCHEDULE_PY,
            &RECLAIM_PY,
        ];
        for (i, slot) in slots.into_iter().enumerate() {
            let func = *args.add(i);
            if ffi::PyCallable_Check(func) == 0 {
                return set_error(ffi::PyExc_TypeError, c"_install needs callables");
            }
            let old = slot.swap(ffi::Py_NewRef(func), Ordering::Relaxed);
            ffi::Py_XDECREF(old);
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `set_callback_flags(schedule_callback_set, channel_callback_set)`.
pub unsafe extern "C" fn py_set_callback_flags(_module: Obj, args: *mut Obj, nargs: ffi::Py_ssize_t) -> Obj {
    guarded(|| {
        if nargs != 2 {
            return set_error(ffi::PyExc_TypeError, c"set_callback_flags takes 2 arguments");
        }
        let (schedule, channel) = (ffi::PyObject_IsTrue(*args), ffi::PyObject_IsTrue(*args.add(1)));
        if schedule < 0 || channel < 0 {
            return ptr::null_mut();
        }
        SCHEDULE_CALLBACK.store(schedule != 0, Ordering::Relaxed);
        CHANNEL_CALLBACK.store(channel != 0, Ordering::Relaxed);
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `thread_state()`: this OS thread's scheduler object, or None.
pub unsafe extern "C" fn py_thread_state(_module: Obj, _args: Obj) -> Obj {
    guarded(|| new_ref_or_none(THREAD_STATE.with(|c| c.get())))
}

/// `set_thread_state(th)`: remember `th` (a ThreadStateBase) as this OS thread's scheduler.
pub unsafe extern "C" fn py_set_thread_state(_module: Obj, th: Obj) -> Obj {
    guarded(|| {
        if !is_instance(th, &THREAD_TYPE) {
            return set_error(ffi::PyExc_TypeError, c"set_thread_state needs a ThreadStateBase");
        }
        let old = THREAD_STATE.with(|c| c.replace(ffi::Py_NewRef(th)));
        ffi::Py_XDECREF(old);
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `clear_thread_state(th)`: forget this OS thread's scheduler object if it is `th`.
pub unsafe extern "C" fn py_clear_thread_state(_module: Obj, th: Obj) -> Obj {
    guarded(|| {
        let current = THREAD_STATE.with(|c| c.get());
        if !current.is_null() && current == th {
            THREAD_STATE.with(|c| c.set(ptr::null_mut()));
            ffi::Py_DECREF(current);
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

// ----- Python entry points: ThreadStateBase methods (the ring) -----

unsafe fn check_tasklet(o: Obj) -> bool {
    if is_instance(o, &TASKLET_TYPE) {
        return true;
    }
    set_error(ffi::PyExc_TypeError, c"a tasklet is required");
    false
}

unsafe extern "C" fn th_insert(th: Obj, t: Obj) -> Obj {
    guarded(|| {
        if !check_tasklet(t) {
            return ptr::null_mut();
        }
        let mut drops = Drops::new();
        ring_insert(th, t, &mut drops);
        drops.release();
        ffi::Py_NewRef(ffi::Py_None())
    })
}

unsafe extern "C" fn th_remove(th: Obj, t: Obj) -> Obj {
    guarded(|| {
        if !check_tasklet(t) {
            return ptr::null_mut();
        }
        let t = ffi::Py_NewRef(t);
        let mut drops = Drops::new();
        let outcome = ring_remove(th, t, &mut drops);
        drops.release();
        ffi::Py_DECREF(t);
        match outcome {
            Ok(()) => ffi::Py_NewRef(ffi::Py_None()),
            Err(()) => ptr::null_mut(),
        }
    })
}

unsafe extern "C" fn th_make_first(th: Obj, t: Obj) -> Obj {
    guarded(|| {
        if !check_tasklet(t) {
            return ptr::null_mut();
        }
        let mut drops = Drops::new();
        let outcome = ring_make_first(th, t, &mut drops);
        drops.release();
        match outcome {
            Ok(()) => ffi::Py_NewRef(ffi::Py_None()),
            Err(()) => ptr::null_mut(),
        }
    })
}

unsafe extern "C" fn th_insert_after(th: Obj, args: *mut Obj, nargs: ffi::Py_ssize_t) -> Obj {
    guarded(|| {
        if nargs != 2 {
            return set_error(ffi::PyExc_TypeError, c"insert_after(anchor, t) takes 2 arguments");
        }
        let (anchor, t) = (*args, *args.add(1));
        if !check_tasklet(anchor) || !check_tasklet(t) {
            return ptr::null_mut();
        }
        let mut drops = Drops::new();
        let outcome = ring_insert_after(th, anchor, t, &mut drops);
        drops.release();
        match outcome {
            Ok(()) => ffi::Py_NewRef(ffi::Py_None()),
            Err(()) => ptr::null_mut(),
        }
    })
}

// ----- Python entry points: ChannelBase methods -----

/// How `channel.send` / `channel.receive` was called, for the cyclic GC (`frames`).
#[inline]
fn channel_call_site(
    ch: Obj,
    sending: bool,
    args: *const Obj,
    nargs: ffi::Py_ssize_t,
    kwnames: Obj,
) -> CallSite {
    let (descriptor, function) = if sending {
        (SEND_DESCR.load(Ordering::Relaxed), ch_send as *mut c_void)
    } else {
        (RECEIVE_DESCR.load(Ordering::Relaxed), ch_receive as *mut c_void)
    };
    CallSite { args, nargs, kwnames, self_obj: ch, descriptor, function }
}

unsafe extern "C" fn ch_send(ch: Obj, args: *const Obj, nargs: ffi::Py_ssize_t, kwnames: Obj) -> Obj {
    guarded(|| {
        if kwnames.is_null() && nargs == 1 {
            if let Some(result) = action_fast(ch, true, *args, args, nargs) {
                return result;
            }
        }
        // The Python implementation pushes frames of its own before it blocks.
        let _exposed = ExposedCallerStack::new(&channel_call_site(ch, true, args, nargs, kwnames));
        call_fallback(&SEND_PY, ch, args, nargs, kwnames)
    })
}

unsafe extern "C" fn ch_receive(ch: Obj, args: *const Obj, nargs: ffi::Py_ssize_t, kwnames: Obj) -> Obj {
    guarded(|| {
        if kwnames.is_null() && nargs == 0 {
            if let Some(result) = action_fast(ch, false, ptr::null_mut(), args, nargs) {
                return result;
            }
        }
        let _exposed = ExposedCallerStack::new(&channel_call_site(ch, false, args, nargs, kwnames));
        call_fallback(&RECEIVE_PY, ch, args, nargs, kwnames)
    })
}

unsafe fn queue<'a>(ch: Obj) -> &'a mut VecDeque<Obj> {
    (*ch.cast::<ChannelObject>()).queue.get_or_insert_with(Default::default)
}

unsafe extern "C" fn ch_q_append(ch: Obj, t: Obj) -> Obj {
    guarded(|| {
        if !check_tasklet(t) {
            return ptr::null_mut();
        }
        queue(ch).push_back(ffi::Py_NewRef(t));
        ffi::Py_NewRef(ffi::Py_None())
    })
}

unsafe extern "C" fn ch_q_popleft(ch: Obj, _args: Obj) -> Obj {
    guarded(|| match queue(ch).pop_front() {
        Some(t) => t,
        None => set_error(ffi::PyExc_IndexError, c"pop from an empty channel queue"),
    })
}

unsafe extern "C" fn ch_q_remove(ch: Obj, t: Obj) -> Obj {
    guarded(|| {
        let queue = queue(ch);
        match queue.iter().position(|&item| item == t) {
            Some(index) => {
                if let Some(item) = queue.remove(index) {
                    ffi::Py_DECREF(item);
                }
                ffi::Py_NewRef(ffi::Py_None())
            }
            None => set_error(ffi::PyExc_ValueError, c"tasklet not in the channel queue"),
        }
    })
}

unsafe extern "C" fn ch_q_index(ch: Obj, t: Obj) -> Obj {
    guarded(|| match queue(ch).iter().position(|&item| item == t) {
        Some(index) => ffi::PyLong_FromSsize_t(index as ffi::Py_ssize_t),
        None => set_error(ffi::PyExc_ValueError, c"tasklet not in the channel queue"),
    })
}

unsafe extern "C" fn ch_q_len(ch: Obj, _args: Obj) -> Obj {
    guarded(|| ffi::PyLong_FromSsize_t(queue(ch).len() as ffi::Py_ssize_t))
}

unsafe extern "C" fn ch_q_item(ch: Obj, index: Obj) -> Obj {
    guarded(|| {
        let index = ffi::PyLong_AsSsize_t(index);
        if index == -1 && !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        let queue = queue(ch);
        match usize::try_from(index).ok().and_then(|i| queue.get(i)) {
            Some(&t) => ffi::Py_NewRef(t),
            None => set_error(ffi::PyExc_IndexError, c"channel queue index out of range"),
        }
    })
}

/// Sets every slot of tasklet `t` to its initial value: the thread state `th`, the flags
/// False, the rest None, no ring links (a new tasklet, unbound). Old values are released only
/// once the tasklet is consistent (a release may run Python code).
unsafe fn init_slots(t: Obj, th: Obj) {
    let (none, no) = (ffi::Py_None(), ffi::Py_False());
    let mut initial = [none; T_COUNT];
    for index in [T_NEXT, T_PREV, T_STARTED_NEXT, T_STARTED_PREV] {
        initial[index] = ptr::null_mut();
    }
    initial[T_THREAD] = th;
    for index in [
        T_IN_RING,
        T_ALIVE,
        T_BLOCKED_SENDING,
        T_BLOCK_TRAP,
        T_DEAD_THREAD,
        T_IS_MAIN,
        T_ATOMIC,
        T_IGNORE_NESTING,
    ] {
        initial[index] = no;
    }
    for value in initial.iter().filter(|value| !value.is_null()) {
        ffi::Py_INCREF(*value);
    }
    let old = std::mem::replace(&mut tasklet(t).f, initial);
    for value in old {
        ffi::Py_XDECREF(value);
    }
}

/// A new, unbound instance of `cls` (TaskletBase or a subclass) belonging to thread state `th`.
unsafe fn alloc_tasklet(cls: *mut ffi::PyTypeObject, th: Obj) -> Obj {
    let alloc = (*cls).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
    let t = alloc(cls, 0);
    if !t.is_null() {
        init_slots(t, th);
    }
    t
}

/// `tasklet.__new__(cls, ...)`: an unbound tasklet of the calling OS thread (whose scheduler
/// is created on first use). The arguments are for `__init__`.
unsafe extern "C" fn t_new(cls: *mut ffi::PyTypeObject, _args: Obj, _kwargs: Obj) -> Obj {
    guarded(|| {
        let mut th = THREAD_STATE.with(|c| c.get());
        let mut created = ptr::null_mut();
        if th.is_null() {
            let make = THREAD_STATE_PY.load(Ordering::Relaxed);
            if make.is_null() {
                return set_error(ffi::PyExc_RuntimeError, c"the stackless module is not initialised");
            }
            created = ffi::PyObject_CallNoArgs(make);
            if created.is_null() {
                return created;
            }
            if !is_instance(created, &THREAD_TYPE) {
                ffi::Py_DECREF(created);
                return set_error(ffi::PyExc_TypeError, c"_thread_state() did not return a thread state");
            }
            th = created;
        }
        let t = alloc_tasklet(cls, th);
        ffi::Py_XDECREF(created);
        t
    })
}

/// `TaskletBase._new_for(th)` (a class method): a new unbound tasklet of `cls` for thread state
/// `th`; how stackless.py makes a thread's main tasklet while that thread's scheduler is built.
unsafe extern "C" fn t_new_for(cls: Obj, th: Obj) -> Obj {
    guarded(|| {
        if !is_instance(th, &THREAD_TYPE) {
            return set_error(ffi::PyExc_TypeError, c"_new_for needs a thread state");
        }
        alloc_tasklet(cls.cast(), th)
    })
}

/// Parses `(func=None, args=None, kwargs=None)`; absent ones are NULL.
unsafe fn parse_bind_args(args: Obj, kwargs: Obj, name: &CStr) -> Option<[Obj; 3]> {
    let nargs = ffi::PyTuple_GET_SIZE(args);
    let mut parsed = [ptr::null_mut(); 3];
    if nargs > 3 {
        let message = format!("{}() takes at most 3 arguments ({nargs} given)", name.to_string_lossy());
        let message = std::ffi::CString::new(message).unwrap_or_default();
        ffi::PyErr_SetString(ffi::PyExc_TypeError, message.as_ptr());
        return None;
    }
    for (i, item) in parsed.iter_mut().enumerate().take(nargs as usize) {
        *item = ffi::PyTuple_GET_ITEM(args, i as ffi::Py_ssize_t);
    }
    if !kwargs.is_null() {
        let mut pos: ffi::Py_ssize_t = 0;
        let (mut key, mut value) = (ptr::null_mut(), ptr::null_mut());
        while ffi::PyDict_Next(kwargs, &mut pos, &mut key, &mut value) != 0 {
            let index = [c"func", c"args", c"kwargs"].iter().position(|n| {
                ffi::PyUnicode_Check(key) != 0 && ffi::PyUnicode_CompareWithASCIIString(key, n.as_ptr()) == 0
            });
            let Some(index) = index else {
                ffi::PyErr_Format(
                    ffi::PyExc_TypeError,
                    c"%s() got an unexpected keyword argument %R".as_ptr(),
                    name.as_ptr(),
                    key,
                );
                return None;
            };
            if !parsed[index].is_null() {
                ffi::PyErr_Format(
                    ffi::PyExc_TypeError,
                    c"%s() got multiple values for argument %R".as_ptr(),
                    name.as_ptr(),
                    key,
                );
                return None;
            }
            parsed[index] = value;
        }
    }
    for item in parsed.iter_mut() {
        if !item.is_null() && *item == ffi::Py_None() {
            *item = ptr::null_mut();
        }
    }
    Some(parsed)
}

/// Gives a bound tasklet its fiber (`tasklet._body(t, value)` in the tasklet's context) and
/// makes it alive.
unsafe fn make_fiber(t: Obj) -> Result<(), ()> {
    let fiber = fiber::new_tasklet_fiber();
    if fiber.is_null() {
        return Err(());
    }
    let mut drops = Drops::new();
    let old = std::mem::replace(&mut tasklet(t).f[T_FIBER], fiber);
    drops.push(old);
    store_bool(&mut tasklet(t).f[T_ALIVE], true, &mut drops);
    drops.release();
    Ok(())
}

/// For a tasklet's fiber that starts: this thread's current tasklet, if `fiber` is its fiber,
/// and that tasklet's context (new references, NULL when absent; no exception set).
///
/// # Safety
/// GIL held.
pub unsafe fn current_tasklet_of(fiber: Obj) -> (Obj, Obj) {
    let th = THREAD_STATE.with(|c| c.get());
    if th.is_null() {
        return (ptr::null_mut(), ptr::null_mut());
    }
    let current = thread(th).f[S_CURRENT];
    if current.is_null() || tasklet(current).f[T_FIBER] != fiber {
        return (ptr::null_mut(), ptr::null_mut());
    }
    let context = tasklet(current).f[T_CONTEXT];
    let context = if !context.is_null() && ffi::PyContext_CheckExact(context) != 0 {
        ffi::Py_NewRef(context)
    } else {
        ptr::null_mut()
    };
    (ffi::Py_NewRef(current), context)
}

/// `tasklet.bind(func=None, args=None, kwargs=None)` (Stackless's checks and messages).
unsafe fn bind(t: Obj, [func, args, kwargs]: [Obj; 3]) -> Result<(), ()> {
    let fail = |kind: Obj, message: &CStr| {
        set_error(kind, message);
        Err(())
    };
    if !func.is_null() && ffi::PyCallable_Check(func) == 0 {
        return fail(ffi::PyExc_TypeError, c"tasklet function must be a callable");
    }
    let task = tasklet(t);
    let th = task.f[T_THREAD];
    if !th.is_null() && is_instance(th, &THREAD_TYPE) && thread(th).f[S_CURRENT] == t {
        return fail(ffi::PyExc_RuntimeError, c"cannot bind the current tasklet");
    }
    if is_true(task.f[T_IN_RING]) {
        return fail(ffi::PyExc_RuntimeError, c"cannot bind a scheduled tasklet");
    }
    if !is_none(task.f[T_BLOCKED_ON]) {
        return fail(ffi::PyExc_RuntimeError, c"cannot bind a blocked tasklet");
    }
    if fiber::is_running_fiber(task.f[T_FIBER]) {
        return fail(ffi::PyExc_RuntimeError, c"cannot bind a tasklet that is running");
    }
    // Checked before anything changes (Python's version failed here after rebinding).
    if (!args.is_null() || !kwargs.is_null()) && func.is_null() && is_none(task.f[T_FUNC]) {
        return fail(ffi::PyExc_RuntimeError, c"the tasklet has no function to bind arguments to");
    }
    let mut bound_args = ptr::null_mut();
    let mut bound_kwargs = ptr::null_mut();
    if !args.is_null() || !kwargs.is_null() {
        bound_args = if args.is_null() { ffi::PyTuple_New(0) } else { ffi::PySequence_Tuple(args) };
        if bound_args.is_null() {
            return Err(());
        }
        bound_kwargs = if kwargs.is_null() {
            ffi::Py_NewRef(ffi::Py_None())
        } else {
            ffi::PyObject_CallOneArg(ptr::addr_of_mut!(ffi::PyDict_Type).cast(), kwargs)
        };
        if bound_kwargs.is_null() {
            ffi::Py_DECREF(bound_args);
            return Err(());
        }
    }
    // A new tasklet shares its creator's current Context object (Stackless 3.7.6+).
    let context = fiber::current_context();
    if context.is_null() {
        ffi::Py_XDECREF(bound_args);
        ffi::Py_XDECREF(bound_kwargs);
        return Err(());
    }
    let mut drops = Drops::new();
    let task = tasklet(t);
    if !func.is_null() {
        store(&mut task.f[T_FUNC], func, &mut drops);
    }
    drops.push(std::mem::replace(&mut task.f[T_CONTEXT], context));
    store(&mut task.f[T_FIBER], ffi::Py_None(), &mut drops);
    store_bool(&mut task.f[T_ALIVE], false, &mut drops);
    if bound_args.is_null() {
        drops.release();
        return Ok(());
    }
    drops.push(std::mem::replace(&mut task.f[T_ARGS], bound_args));
    drops.push(std::mem::replace(&mut task.f[T_KWARGS], bound_kwargs));
    drops.release();
    make_fiber(t)
}

/// `tasklet.setup(*args, **kwargs)`, also `tasklet(*args, **kwargs)`: bind the arguments and
/// put the tasklet at the end of its thread's run queue.
unsafe fn setup(t: Obj, args: Obj, kwargs: Obj) -> Obj {
    let task = tasklet(t);
    if is_true(task.f[T_ALIVE]) {
        return set_error(
            ffi::PyExc_RuntimeError,
            c"the tasklet is already alive (setup on an alive tasklet)",
        );
    }
    if is_none(task.f[T_FUNC]) {
        return set_error(ffi::PyExc_RuntimeError, c"the tasklet has no function (bind one first)");
    }
    let th = task.f[T_THREAD];
    if th.is_null() || !is_instance(th, &THREAD_TYPE) {
        return set_error(ffi::PyExc_RuntimeError, c"the tasklet has no thread");
    }
    // No keywords: None (no dict per tasklet). The call's keyword dict may be the caller's (a
    // `**mapping` call): keep a copy.
    let kwargs = if kwargs.is_null() || ffi::PyDict_Size(kwargs) == 0 {
        ffi::Py_NewRef(ffi::Py_None())
    } else {
        ffi::PyDict_Copy(kwargs)
    };
    if kwargs.is_null() {
        return kwargs;
    }
    let mut drops = Drops::new();
    let task = tasklet(t);
    store(&mut task.f[T_ARGS], args, &mut drops);
    drops.push(std::mem::replace(&mut task.f[T_KWARGS], kwargs));
    drops.release();
    if make_fiber(t).is_err() {
        return ptr::null_mut();
    }
    let th = ffi::Py_NewRef(tasklet(t).f[T_THREAD]);
    if !is_true(tasklet(t).f[T_IN_RING]) && is_instance(th, &THREAD_TYPE) {
        ring_insert(th, t, &mut drops);
    }
    drops.release();
    ffi::Py_DECREF(th);
    ffi::Py_NewRef(t)
}

unsafe extern "C" fn t_init(t: Obj, args: Obj, kwargs: Obj) -> c_int {
    let result = guarded(|| {
        let Some(parsed) = parse_bind_args(args, kwargs, c"tasklet") else { return ptr::null_mut() };
        if parsed.iter().all(|a| a.is_null()) {
            return ffi::Py_NewRef(ffi::Py_None());
        }
        match bind(t, parsed) {
            Ok(()) => ffi::Py_NewRef(ffi::Py_None()),
            Err(()) => ptr::null_mut(),
        }
    });
    if result.is_null() {
        return -1;
    }
    ffi::Py_DECREF(result);
    0
}

unsafe extern "C" fn t_bind(t: Obj, args: Obj, kwargs: Obj) -> Obj {
    guarded(|| {
        let Some(parsed) = parse_bind_args(args, kwargs, c"bind") else { return ptr::null_mut() };
        match bind(t, parsed) {
            Ok(()) => ffi::Py_NewRef(t),
            Err(()) => ptr::null_mut(),
        }
    })
}

unsafe extern "C" fn t_setup(t: Obj, args: Obj, kwargs: Obj) -> Obj {
    guarded(|| setup(t, args, kwargs))
}

unsafe extern "C" fn t_make_fiber(t: Obj, _args: Obj) -> Obj {
    guarded(|| match make_fiber(t) {
        Ok(()) => ffi::Py_NewRef(ffi::Py_None()),
        Err(()) => ptr::null_mut(),
    })
}

// ----- garbage tasklets -----

/// `tp_finalize` of tasklets. A tasklet that has started and not ended, found unreachable by
/// the cyclic GC (blocked on a channel that only it and other garbage can reach, or paused
/// with nothing left pointing at it), can never be woken: as in Stackless, it is killed —
/// stackless.py's `_reclaim` puts it back in its thread's run queue with TaskletExit pending,
/// which resurrects it; at its next turn its `finally` blocks run, it ends and is freed. Not
/// during interpreter finalization (`_reclaim` checks: `Py_IsFinalizing` is a 3.13 name, and
/// an engine must load into a 3.12 host far enough to be refused by its ABI check).
unsafe extern "C" fn tasklet_finalize(t: Obj) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: called by CPython with the GIL held, on a live tasklet.
        unsafe {
            let task = tasklet(t);
            if !is_true(task.f[T_ALIVE])
                || is_true(task.f[T_IS_MAIN])
                || !fiber::is_running_fiber(task.f[T_FIBER])
            {
                return;
            }
            let reclaim = RECLAIM_PY.load(Ordering::Relaxed);
            if reclaim.is_null() {
                return;
            }
            // tp_finalize must leave the error indicator as it found it.
            let pending = ffi::PyErr_GetRaisedException();
            let result = ffi::PyObject_CallOneArg(reclaim, t);
            if result.is_null() {
                ffi::PyErr_WriteUnraisable(t);
            } else {
                ffi::Py_DECREF(result);
            }
            ffi::PyErr_SetRaisedException(pending);
        }
    });
}

// ----- type plumbing -----

/// Get/set descriptor of a typed tasklet slot; `closure` is the slot's byte offset.
/// SAFETY: CPython checks that `object` is an instance of the descriptor's type before calling
/// (`descr_check`), so the offset (taken from that type's layout) is inside the object.
unsafe extern "C" fn get_tasklet_slot(object: Obj, closure: *mut c_void) -> Obj {
    new_ref_or_none(*object.cast::<u8>().add(closure as usize).cast::<Obj>())
}

unsafe extern "C" fn set_tasklet_slot(object: Obj, value: Obj, closure: *mut c_void) -> c_int {
    let value = if value.is_null() {
        ffi::PyErr_SetString(ffi::PyExc_AttributeError, c"this attribute cannot be deleted".as_ptr());
        return -1;
    } else if value == ffi::Py_None() {
        ptr::null_mut()
    } else if is_instance(value, &TASKLET_TYPE) {
        ffi::Py_NewRef(value)
    } else {
        ffi::PyErr_SetString(ffi::PyExc_TypeError, c"a tasklet or None is required".as_ptr());
        return -1;
    };
    let slot = &mut *object.cast::<u8>().add(closure as usize).cast::<Obj>();
    let old = std::mem::replace(slot, value);
    ffi::Py_XDECREF(old);
    0
}

unsafe fn slots(object: Obj, offset: usize, count: usize) -> &'static mut [Obj] {
    std::slice::from_raw_parts_mut(object.cast::<u8>().add(offset).cast::<Obj>(), count)
}

/// Which of the three base types `object` is an instance of (its type or the nearest base
/// type that is one of them; a walk of `tp_base`, cheaper than `PyType_IsSubtype` in the
/// garbage collector's traversals).
#[derive(PartialEq)]
enum Kind {
    Tasklet,
    Thread,
    Channel,
    Other,
}

unsafe fn kind(object: Obj) -> Kind {
    let (tasklet_tp, thread_tp, channel_tp) = (
        TASKLET_TYPE.load(Ordering::Relaxed),
        THREAD_TYPE.load(Ordering::Relaxed),
        CHANNEL_TYPE.load(Ordering::Relaxed),
    );
    let mut tp = ffi::Py_TYPE(object);
    while !tp.is_null() {
        if tp == tasklet_tp {
            return Kind::Tasklet;
        } else if tp == thread_tp {
            return Kind::Thread;
        } else if tp == channel_tp {
            return Kind::Channel;
        }
        tp = (*tp).tp_base;
    }
    Kind::Other
}

/// The object slots of a base-type instance.
unsafe fn object_slots(object: Obj, kind: &Kind) -> &'static mut [Obj] {
    match kind {
        Kind::Tasklet => slots(object, offset_of!(TaskletObject, f), TASKLET_NAMES.len()),
        Kind::Thread => slots(object, offset_of!(ThreadStateObject, f), THREAD_NAMES.len()),
        Kind::Channel => slots(object, offset_of!(ChannelObject, f), CHANNEL_NAMES.len()),
        Kind::Other => &mut [],
    }
}

/// Whether slot `index` of a `kind` instance holds a borrowed reference (the links of the ring
/// of started tasklets), which is neither visited nor released.
fn is_borrowed_slot(kind: &Kind, index: usize) -> bool {
    match kind {
        Kind::Tasklet => index == T_STARTED_NEXT || index == T_STARTED_PREV,
        Kind::Thread => index == S_STARTED,
        _ => false,
    }
}

// SAFETY (the three slots below): GIL held; `object` is an instance of one of the three base
// types or a subclass (CPython calls a type's slots only on its instances), and for a subclass
// instance CPython has already handled the subclass's own `__dict__`/`__slots__` (see the
// module's Safety section). They cannot panic: no allocation, no indexing, no unwrap.
unsafe extern "C" fn base_traverse(object: Obj, visit: ffi::visitproc, arg: *mut c_void) -> c_int {
    let kind = kind(object);
    let (none, yes, no) = (ffi::Py_None(), ffi::Py_True(), ffi::Py_False());
    for (index, &member) in object_slots(object, &kind).iter().enumerate() {
        if is_borrowed_slot(&kind, index) {
            continue;
        }
        // The immortal singletons most slots hold are not worth a call (CPython 3.13's
        // collector ignores objects it does not track, and these are not tracked).
        if !member.is_null() && member != none && member != yes && member != no {
            let rc = visit(member, arg);
            if rc != 0 {
                return rc;
            }
        }
    }
    if kind == Kind::Channel {
        if let Some(queue) = (*object.cast::<ChannelObject>()).queue.as_ref() {
            for &t in queue.iter() {
                let rc = visit(t, arg);
                if rc != 0 {
                    return rc;
                }
            }
        }
    }
    if kind == Kind::Tasklet {
        // Its fiber is untracked and its own: what the suspended fiber holds is the tasklet's.
        let rc = fiber::traverse_tasklet_fiber(tasklet(object).f[T_FIBER], object, visit, arg);
        if rc != 0 {
            return rc;
        }
    }
    // Heap types' instances visit their type.
    visit(ffi::Py_TYPE(object).cast(), arg)
}

unsafe extern "C" fn base_clear(object: Obj) -> c_int {
    let kind = kind(object);
    match kind {
        Kind::Tasklet => started_unlink(object),
        // Its tasklets hold it (`_thread`) until they are cleared, and unlink themselves first.
        Kind::Thread => thread(object).f[S_STARTED] = ptr::null_mut(),
        _ => {}
    }
    for (index, member) in object_slots(object, &kind).iter_mut().enumerate() {
        if is_borrowed_slot(&kind, index) {
            *member = ptr::null_mut();
        } else {
            ffi::Py_CLEAR(member);
        }
    }
    if kind == Kind::Channel {
        if let Some(queue) = (*object.cast::<ChannelObject>()).queue.as_mut() {
            while let Some(t) = queue.pop_back() {
                ffi::Py_DECREF(t);
            }
        }
    }
    0
}

unsafe extern "C" fn base_dealloc(object: Obj) {
    let tp = ffi::Py_TYPE(object);
    ffi::PyObject_GC_UnTrack(object.cast());
    base_clear(object);
    if kind(object) == Kind::Channel {
        drop((*object.cast::<ChannelObject>()).queue.take());
    }
    if let Some(free) = (*tp).tp_free {
        free(object.cast());
    }
    ffi::Py_DECREF(tp.cast());
}

fn method(name: &'static CStr, meth: ffi::PyMethodDefPointer, flags: c_int) -> ffi::PyMethodDef {
    ffi::PyMethodDef { ml_name: name.as_ptr(), ml_meth: meth, ml_flags: flags, ml_doc: ptr::null() }
}

/// What [`create_type`] needs to know about one base type.
struct BaseType {
    name: &'static CStr,
    doc: &'static CStr,
    basicsize: usize,
    /// Names of the object slots, in order (the first `typed` are typed tasklet slots).
    names: &'static [&'static CStr],
    /// Byte offset of the object-slot array.
    offset: usize,
    typed: usize,
    /// Typed slots without a setter (borrowed links, see `is_borrowed_slot`).
    read_only: &'static [usize],
    members: Vec<ffi::PyMemberDef>,
    methods: Vec<ffi::PyMethodDef>,
    /// More type slots (`tp_new`, `tp_init`, `tp_call`, ...).
    extra_slots: Vec<ffi::PyType_Slot>,
}

/// Creates one base type. Its tables are leaked (they must outlive the type).
unsafe fn create_type(module: Obj, base: BaseType) -> Obj {
    let BaseType {
        name,
        doc,
        basicsize,
        names,
        offset,
        typed,
        read_only,
        mut members,
        mut methods,
        extra_slots,
    } = base;
    let mut getsets = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let at = offset + i * std::mem::size_of::<Obj>();
        if i < typed {
            let borrowed = read_only.contains(&i);
            getsets.push(ffi::PyGetSetDef {
                name: name.as_ptr(),
                get: Some(get_tasklet_slot),
                set: if borrowed { None } else { Some(set_tasklet_slot) },
                doc: ptr::null(),
                closure: at as *mut c_void,
            });
        } else {
            members.push(ffi::PyMemberDef {
                name: name.as_ptr(),
                type_code: ffi::Py_T_OBJECT_EX,
                offset: at as ffi::Py_ssize_t,
                flags: 0,
                doc: ptr::null(),
            });
        }
    }
    getsets.push(ffi::PyGetSetDef {
        name: ptr::null(),
        get: None,
        set: None,
        doc: ptr::null(),
        closure: ptr::null_mut(),
    });
    members.push(ffi::PyMemberDef::default());
    methods.push(ffi::PyMethodDef::zeroed());
    let getsets = Box::leak(getsets.into_boxed_slice());
    let members = Box::leak(members.into_boxed_slice());
    let methods = Box::leak(methods.into_boxed_slice());
    let mut slots = vec![
        ffi::PyType_Slot { slot: ffi::Py_tp_dealloc, pfunc: base_dealloc as *mut c_void },
        ffi::PyType_Slot { slot: ffi::Py_tp_traverse, pfunc: base_traverse as *mut c_void },
        ffi::PyType_Slot { slot: ffi::Py_tp_clear, pfunc: base_clear as *mut c_void },
        ffi::PyType_Slot { slot: ffi::Py_tp_getset, pfunc: getsets.as_mut_ptr().cast() },
        ffi::PyType_Slot { slot: ffi::Py_tp_members, pfunc: members.as_mut_ptr().cast() },
        ffi::PyType_Slot { slot: ffi::Py_tp_methods, pfunc: methods.as_mut_ptr().cast() },
        ffi::PyType_Slot { slot: ffi::Py_tp_doc, pfunc: doc.as_ptr() as *mut c_void },
    ];
    slots.extend(extra_slots);
    slots.push(ffi::PyType_Slot { slot: 0, pfunc: ptr::null_mut() });
    let mut spec = ffi::PyType_Spec {
        name: name.as_ptr(),
        basicsize: basicsize as c_int,
        itemsize: 0,
        flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_HAVE_GC | ffi::Py_TPFLAGS_BASETYPE) as _,
        slots: slots.as_mut_ptr(),
    };
    ffi::PyType_FromModuleAndSpec(module, &mut spec, ptr::null_mut())
}

fn ssize_member(name: &'static CStr, offset: usize) -> ffi::PyMemberDef {
    ffi::PyMemberDef {
        name: name.as_ptr(),
        type_code: ffi::Py_T_PYSSIZET,
        offset: offset as ffi::Py_ssize_t,
        flags: 0,
        doc: ptr::null(),
    }
}

/// Adds `TaskletBase`, `ThreadStateBase` and `ChannelBase` to `_stackless_core`.
///
/// # Safety
/// GIL held, during the module's execution.
pub unsafe fn add_types(module: Obj) -> c_int {
    use ffi::PyMethodDefPointer as P;
    let tasklet = create_type(
        module,
        BaseType {
            name: c"_stackless_core.TaskletBase",
            doc: c"Slots of a stackless tasklet (subclassed by stackless.tasklet).",
            basicsize: std::mem::size_of::<TaskletObject>(),
            names: &TASKLET_NAMES,
            offset: offset_of!(TaskletObject, f),
            typed: T_TYPED,
            read_only: &[T_STARTED_NEXT, T_STARTED_PREV],
            members: Vec::new(),
            methods: vec![
                method(
                    c"bind",
                    P { PyCFunctionWithKeywords: t_bind },
                    ffi::METH_VARARGS | ffi::METH_KEYWORDS,
                ),
                method(
                    c"setup",
                    P { PyCFunctionWithKeywords: t_setup },
                    ffi::METH_VARARGS | ffi::METH_KEYWORDS,
                ),
                method(c"_make_fiber", P { PyCFunction: t_make_fiber }, ffi::METH_NOARGS),
                method(c"_new_for", P { PyCFunction: t_new_for }, ffi::METH_O | ffi::METH_CLASS),
            ],
            extra_slots: vec![
                ffi::PyType_Slot { slot: ffi::Py_tp_new, pfunc: t_new as *mut c_void },
                ffi::PyType_Slot { slot: ffi::Py_tp_init, pfunc: t_init as *mut c_void },
                ffi::PyType_Slot { slot: ffi::Py_tp_call, pfunc: t_setup as *mut c_void },
                ffi::PyType_Slot { slot: ffi::Py_tp_finalize, pfunc: tasklet_finalize as *mut c_void },
            ],
        },
    );
    if tasklet.is_null() {
        return -1;
    }
    TASKLET_TYPE.store(tasklet.cast(), Ordering::Relaxed);
    let thread = create_type(
        module,
        BaseType {
            name: c"_stackless_core.ThreadStateBase",
            doc: c"One OS thread's scheduler: main and current tasklet and the run-queue ring.",
            basicsize: std::mem::size_of::<ThreadStateObject>(),
            names: &THREAD_NAMES,
            offset: offset_of!(ThreadStateObject, f),
            typed: S_TYPED,
            read_only: &[S_STARTED],
            members: vec![ssize_member(c"runcount", offset_of!(ThreadStateObject, runcount))],
            extra_slots: Vec::new(),
            methods: vec![
                method(c"insert", P { PyCFunction: th_insert }, ffi::METH_O),
                method(c"remove", P { PyCFunction: th_remove }, ffi::METH_O),
                method(c"make_first", P { PyCFunction: th_make_first }, ffi::METH_O),
                method(c"insert_after", P { PyCFunctionFast: th_insert_after }, ffi::METH_FASTCALL),
                method(c"started_list", P { PyCFunction: th_started_list }, ffi::METH_NOARGS),
                method(c"started_clear", P { PyCFunction: th_started_clear }, ffi::METH_NOARGS),
                method(c"_track_suspended", P { PyCFunction: th_track_suspended }, ffi::METH_NOARGS),
            ],
        },
    );
    if thread.is_null() {
        return -1;
    }
    THREAD_TYPE.store(thread.cast(), Ordering::Relaxed);
    let channel = create_type(
        module,
        BaseType {
            name: c"_stackless_core.ChannelBase",
            doc: c"Slots and fast send/receive of a stackless channel (subclassed by stackless.channel).",
            basicsize: std::mem::size_of::<ChannelObject>(),
            names: &CHANNEL_NAMES,
            offset: offset_of!(ChannelObject, f),
            typed: 0,
            read_only: &[],
            extra_slots: Vec::new(),
            members: vec![
                ssize_member(c"_balance", offset_of!(ChannelObject, balance)),
                ssize_member(c"_preference", offset_of!(ChannelObject, preference)),
                ssize_member(c"_schedule_all", offset_of!(ChannelObject, schedule_all)),
            ],
            methods: vec![
                method(
                    c"send",
                    P { PyCFunctionFastWithKeywords: ch_send },
                    ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
                ),
                method(
                    c"receive",
                    P { PyCFunctionFastWithKeywords: ch_receive },
                    ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
                ),
                method(c"_q_append", P { PyCFunction: ch_q_append }, ffi::METH_O),
                method(c"_q_popleft", P { PyCFunction: ch_q_popleft }, ffi::METH_NOARGS),
                method(c"_q_remove", P { PyCFunction: ch_q_remove }, ffi::METH_O),
                method(c"_q_index", P { PyCFunction: ch_q_index }, ffi::METH_O),
                method(c"_q_len", P { PyCFunction: ch_q_len }, ffi::METH_NOARGS),
                method(c"_q_item", P { PyCFunction: ch_q_item }, ffi::METH_O),
            ],
        },
    );
    if channel.is_null() {
        return -1;
    }
    CHANNEL_TYPE.store(channel.cast(), Ordering::Relaxed);
    for (name, slot) in [(c"send", &SEND_DESCR), (c"receive", &RECEIVE_DESCR)] {
        let descr = ffi::PyObject_GetAttrString(channel, name.as_ptr());
        if descr.is_null() {
            return -1;
        }
        slot.store(descr, Ordering::Relaxed);
        ffi::Py_DECREF(descr); // the type's dict keeps it
    }
    for (name, tp) in [(c"TaskletBase", tasklet), (c"ThreadStateBase", thread), (c"ChannelBase", channel)] {
        // The module keeps the types alive (the statics above borrow them).
        if ffi::PyModule_AddObjectRef(module, name.as_ptr(), tp) < 0 {
            return -1;
        }
        ffi::Py_DECREF(tp);
    }
    0
}
