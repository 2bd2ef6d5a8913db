//! The part of CPython's thread state that a tasklet switch must carry.
//!
//! **CPython 3.13 only, default (GIL) build, 64-bit.** Everything here mirrors private layout
//! of CPython 3.13.0 (`Include/cpython/pystate.h`, `struct _ts`); another minor version, a
//! free-threaded (`3.13t`) build or a debug build needs its own review. The crate gates this
//! module to 3.13.
//!
//! # Model
//!
//! Every tasklet runs on a C stack of its own while it runs (a `corosensei` coroutine on one of
//! its thread's shared stacks, whose bytes are copied off and back as needed: see `stack`). The
//! *C* part of a switch is done by the stack switch itself. The *Python* part is the
//! per-"thread of control" state that CPython keeps in the `PyThreadState`: the interpreter-frame
//! chain, the data stack its frames live on, the recursion counters, the exception-handling
//! stack and the contextvars context. A switch therefore does, with the GIL held and on the
//! same OS thread:
//!
//! ```text
//! let ts = current_thread_state();            // PyThreadState_Get()
//! let outgoing = SavedThreadState::save(ts);   // fields of the tasklet we leave
//! incoming.restore(ts);                        // fields of the tasklet we enter
//! <switch C stacks>
//! ```
//!
//! The field set is the one greenlet (src/greenlet/TPythonState.cpp, TExceptionState.cpp,
//! `#if GREENLET_PY313` branches) saves and restores on 3.13: `current_frame`,
//! `py_recursion_remaining` (as a depth), `c_recursion_remaining`, `datastack_chunk`,
//! `datastack_top`, `datastack_limit`, `exc_info`, `exc_state`, `context` (+ `context_ver`
//! bump), `delete_later` and `critical_section`. Nothing else is tasklet-local: trace/profile
//! functions, `tracing`, `what_event`, `dict`, `async_gen_*` hooks, `coroutine_origin_tracking_
//! depth` and the ids stay per-thread, as in greenlet.
//!
//! # Ownership
//!
//! A `SavedThreadState` owns what the thread state owned: a strong reference to `context`, a
//! strong reference to `exc_state.exc_value`, the data-stack chunks and the frames in them. It is
//! therefore linear: `restore` consumes it (ownership goes back to the thread state), and a state
//! that will never be restored must go through [`SavedThreadState::discard`]. Dropping one
//! leaks (it has no `Drop`, because releasing needs the GIL and may run Python code).
//!
//! # Invariants the engine must keep
//!
//! * No Python code (and no allocation that could start the GC) runs between `save` of the
//!   outgoing state and `restore` of the incoming one; `save`/`restore` themselves allocate
//!   nothing. No exception may be pending across a switch.
//! * A tasklet is only ever resumed on the OS thread whose thread state it was saved from.
//! * The thread's own ("main tasklet") state is installed whenever control returns to CPython
//!   code that may finalize the thread state or the interpreter: `PyThreadState_Clear` frees
//!   whatever data-stack chain is installed at that moment.
//! * A finished tasklet calls [`retire_current`] on its own stack before its last switch away,
//!   or its 16 KiB root data-stack chunk leaks (CPython never pops a root chunk).
//! * A corosensei coroutine suspended with CPython frames on its stack must never be dropped:
//!   `Drop` force-unwinds it with a panic, which cannot cross the `extern "C"` frames of the
//!   switch function and aborts the process. Kill the tasklet (raise into it and let it unwind
//!   and return) first; at worst `force_reset` it and [`SavedThreadState::discard`] its state.
//! * Not carried (per-OS-thread in CPython 3.13, not switched by greenlet either): the running
//!   asyncio loop (`_PyThreadStateImpl.asyncio_running_loop`, just past this struct), trace and
//!   profile functions, `tracing`, `sys.monitoring`'s `what_event`, async-generator hooks.

#![allow(dead_code)]

use core::ffi::{c_int, c_ulong};
use core::ptr;

use pyo3_ffi as ffi;
use pyo3_ffi::PyObject;

use crate::frames::{InterpreterFrame313, FRAME_OWNED_BY_CSTACK};

// ---------------------------------------------------------------------------------------------
// Mirrored C layouts
// ---------------------------------------------------------------------------------------------

/// `_PyErr_StackItem` (`Include/cpython/pystate.h`, CPython 3.13.0): one entry of the stack of
/// exceptions *being handled* (`except` blocks, `sys.exception()`). 3.11+ keeps only the value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyErrStackItem313 {
    /// The exception currently being handled in this context, or NULL. Strong reference.
    pub exc_value: *mut PyObject,
    /// The next entry down; NULL for the thread's bottom entry (`PyThreadState.exc_state`).
    pub previous_item: *mut PyErrStackItem313,
}

impl PyErrStackItem313 {
    pub const EMPTY: Self = Self { exc_value: ptr::null_mut(), previous_item: ptr::null_mut() };
}

/// `_PyStackChunk` (`Include/cpython/pystate.h`, CPython 3.13.0): one chunk of the per-thread
/// "data stack" on which `_PyInterpreterFrame`s of ordinary function calls are allocated.
/// Chunks are allocated with `_PyObject_VirtualAlloc`, i.e. the object arena allocator
/// (`PyObject_GetArenaAllocator`), and `size` is the allocation size in bytes.
#[repr(C)]
#[derive(Debug)]
pub struct PyStackChunk313 {
    pub previous: *mut PyStackChunk313,
    /// Size of this allocation in bytes (what the arena `free` must be given back).
    pub size: usize,
    /// Index into `data` of the top, written only when a newer chunk is pushed on top.
    pub top: usize,
    /// Variable-sized in C (`PyObject *data[1]`).
    pub data: [*mut PyObject; 1],
}

/// Reroutes a suspended tasklet's interpreter-frame chain (from `top`) around the frames that
/// live in `[low, high)` — the `entry_frame`s (`FRAME_OWNED_BY_CSTACK`) that each C → Python
/// entry keeps on the tasklet's C stack — and appends the links it changed to `changed`, as
/// `(frame, original previous)`. Call it before copying the tasklet's stack bytes away; after
/// that, walking the chain (`f_back`, tracebacks, `frame.clear()`) from any of its heap frames
/// never reads the stack, which may hold another tasklet's bytes by then. Entry frames are
/// skipped by every such walk anyway (`_PyFrame_GetFirstComplete`), so the rerouted chain
/// reads the same. [`relink_frames`] restores the links before the tasklet runs again.
///
/// # Safety
/// GIL held; `top` is NULL or the `current_frame` of a suspended tasklet whose stack bytes are
/// still in place; frames of the chain are live while it stays suspended.
pub unsafe fn unlink_c_stack_frames(
    top: *mut ffi::_PyInterpreterFrame,
    low: usize,
    high: usize,
    changed: &mut Vec<(usize, usize)>,
) {
    let on_stack = |frame: *mut InterpreterFrame313| (low..high).contains(&(frame as usize));
    let mut frame = top.cast::<InterpreterFrame313>();
    while !frame.is_null() {
        let previous = (*frame).previous;
        if on_stack(frame) || previous.is_null() || !on_stack(previous) {
            frame = previous;
            continue;
        }
        let mut next = previous;
        while !next.is_null() && on_stack(next) {
            next = (*next).previous;
        }
        changed.push((frame as usize, previous as usize));
        (*frame).previous = next;
        frame = next;
    }
}

/// How many times the running code was entered from C: the entry frames in the running
/// tasklet's interpreter-frame chain (a tasklet's function, called by the engine, is one).
///
/// # Safety
/// GIL held; `ts` is this thread's 3.13 thread state, whose frame chain is in place (the
/// running tasklet's stack bytes are on its stack).
pub unsafe fn entry_frames(ts: *mut PyThreadState313) -> usize {
    let mut count = 0;
    let mut frame = (*ts).current_frame.cast::<InterpreterFrame313>();
    while !frame.is_null() {
        if (*frame).owner == FRAME_OWNED_BY_CSTACK {
            count += 1;
        }
        frame = (*frame).previous;
    }
    count
}

/// Undoes [`unlink_c_stack_frames`] (emptying `changed`), once the tasklet's stack bytes are
/// back in place.
///
/// # Safety
/// GIL held; `changed` came from `unlink_c_stack_frames` for this tasklet, which has not run
/// since.
pub unsafe fn relink_frames(changed: &mut Vec<(usize, usize)>) {
    for (frame, previous) in changed.drain(..).rev() {
        (*(frame as *mut InterpreterFrame313)).previous = previous as *mut InterpreterFrame313;
    }
}

/// `struct _ts` aka `PyThreadState` of **CPython 3.13.0** (`Include/cpython/pystate.h`),
/// mirrored field by field, for x86_64/aarch64 Linux (LP64). This is the complete public
/// struct (304 bytes); CPython really allocates a larger `_PyThreadStateImpl` whose first
/// member is this struct, so this type must only ever be used through a pointer obtained from
/// `PyThreadState_Get()` (see [`current_thread_state`]). Never construct or move one.
///
/// Offsets were checked against the installed 3.13.0 headers by a C program compiled with gcc
/// (see the `tests` module at the end of this file).
#[repr(C)]
pub struct PyThreadState313 {
    pub prev: *mut PyThreadState313,
    pub next: *mut PyThreadState313,
    pub interp: *mut ffi::PyInterpreterState,
    /// `uintptr_t eval_breaker`.
    pub eval_breaker: usize,
    /// `struct { unsigned int initialized:1; bound:1; ...; :23; } _status` — 32 bits.
    pub _status: u32,
    pub _whence: c_int,
    pub state: c_int,
    /// Python-level (bytecode call) recursion budget left; counts down from
    /// `py_recursion_limit` (`sys.getrecursionlimit()`).
    pub py_recursion_remaining: c_int,
    pub py_recursion_limit: c_int,
    /// C-level recursion budget left; counts down from `Py_C_RECURSION_LIMIT`. In 3.13 this is
    /// a pure counter, never compared with the stack pointer (on non-Windows builds).
    pub c_recursion_remaining: c_int,
    pub recursion_headroom: c_int,
    pub tracing: c_int,
    pub what_event: c_int,
    // 4 bytes of padding here (offset 68), inserted by repr(C) exactly as by the C compiler.
    /// `struct _PyInterpreterFrame *current_frame`: top of the interpreter-frame chain.
    pub current_frame: *mut ffi::_PyInterpreterFrame,
    pub c_profilefunc: Option<ffi::Py_tracefunc>,
    pub c_tracefunc: Option<ffi::Py_tracefunc>,
    pub c_profileobj: *mut PyObject,
    pub c_traceobj: *mut PyObject,
    /// The exception currently being *raised* (the "error indicator").
    pub current_exception: *mut PyObject,
    /// Top of the exception-*handling* stack; never NULL while the thread runs Python.
    pub exc_info: *mut PyErrStackItem313,
    pub dict: *mut PyObject,
    pub gilstate_counter: c_int,
    pub async_exc: *mut PyObject,
    pub thread_id: c_ulong,
    pub native_thread_id: c_ulong,
    /// Head of the trashcan's list of objects whose deallocation was deferred.
    pub delete_later: *mut PyObject,
    /// `uintptr_t critical_section`: tagged pointer to the top critical section; always 0 in
    /// the default (GIL) build.
    pub critical_section: usize,
    pub coroutine_origin_tracking_depth: c_int,
    pub async_gen_firstiter: *mut PyObject,
    pub async_gen_finalizer: *mut PyObject,
    /// The current `contextvars.Context` (strong reference) or NULL (= empty, created lazily).
    pub context: *mut PyObject,
    /// Bumped whenever `context` changes; `ContextVar.get()` caches are keyed on it.
    pub context_ver: u64,
    pub id: u64,
    pub datastack_chunk: *mut PyStackChunk313,
    pub datastack_top: *mut *mut PyObject,
    pub datastack_limit: *mut *mut PyObject,
    /// The thread's bottom exception-handling entry (stored inline).
    pub exc_state: PyErrStackItem313,
    pub previous_executor: *mut PyObject,
    pub dict_global_version: u64,
    pub threading_local_key: *mut PyObject,
    pub threading_local_sentinel: *mut PyObject,
}

/// `Py_C_RECURSION_LIMIT` of a 3.13 *release* build on Linux (not debug, not ASan, not s390x,
/// not WASI): the value `c_recursion_remaining` starts from on a fresh thread.
pub const PY_C_RECURSION_LIMIT: c_int = 10_000;

/// `Py_TRASHCAN_HEADROOM` (`Include/cpython/object.h`, 3.13): deallocations defer to
/// `delete_later` once `c_recursion_remaining <= 50`, and the deferred list is drained by a
/// `Py_TRASHCAN_END` that sees `c_recursion_remaining > 100`.
pub const PY_TRASHCAN_HEADROOM: c_int = 50;

/// Smallest C-recursion budget [`c_recursion_budget_for_stack`] hands out. A tasklet whose
/// budget is near 2 × `Py_TRASHCAN_HEADROOM` would defer almost every container deallocation
/// to the trashcan and never drain it, and `RecursionError` handling itself needs 50 units of
/// headroom (`_Py_CheckRecursiveCall` aborts below -50).
pub const MIN_C_RECURSION_BUDGET: c_int = 300;

/// Bytes of C stack to budget per unit of `c_recursion_remaining` on a tasklet stack.
///
/// Measured on CPython 3.13.0 (release build, gcc 12 -O3, x86_64) by running each pattern
/// 1,000-3,000 levels deep on a fresh 8 MiB corosensei stack and comparing the stack's
/// high-water mark with the units consumed:
///
/// | pattern (one level)                                   | bytes/level | units/level | B/unit |
/// |-------------------------------------------------------|------------:|------------:|-------:|
/// | `repr()` of nested lists / `json` / `==` on nested    |     143-176 |           1 |   ≤176 |
/// | `pickle.dumps` of nested lists                        |         176 |           2 |     88 |
/// | `__repr__` calling `repr()` (Python → C → Python)     |         575 |           4 |    144 |
/// | `__getattr__` / `__format__` / `map()` re-entry       |     592-736 |           2 |   ≤368 |
/// | `re.sub` callback / nested `exec()`                   |    879-1136 |         2-3 |   ≤440 |
/// | `sorted(..., key=f)` where `f` recurses               |       5,152 |           4 |  1,288 |
///
/// 512 covers every pattern but `sorted`/`list.sort(key=...)` recursion (whose C frame holds a
/// ~4 KiB merge state), which can still overflow a small stack before the counter trips; so can
/// any C extension with large stack frames. For comparison, CPython's own main thread budgets
/// 8 MiB / 10,000 = 839 bytes per unit, and relies on the Python recursion limit (1,000) to
/// stop the `sorted` pattern.
pub const C_STACK_BYTES_PER_UNIT: usize = 512;

/// Bytes of a tasklet's C stack kept outside the recursion budget: the coroutine trampoline,
/// the engine's own Rust frames between the switch point and CPython, signal delivery and
/// `RecursionError` formatting.
pub const C_STACK_RESERVE: usize = 16 * 1024;

/// The `c_recursion_remaining` a tasklet running on a C stack of `stack_bytes` usable bytes
/// should start with: `(stack_bytes - C_STACK_RESERVE) / C_STACK_BYTES_PER_UNIT`, capped at
/// [`PY_C_RECURSION_LIMIT`]. Returns `None` when the stack is too small for
/// [`MIN_C_RECURSION_BUDGET`] (below about 166 KiB with the constants above).
///
/// Caveat: not all of CPython 3.13's C recursion is metered by this counter. The PEG parser
/// (`compile()`, `eval()`, `exec()`, `ast.parse()`, importing source) limits its nesting with
/// its own `MAXSTACK` (6,000 levels, ~100 bytes of C stack each), *before* the AST and compiler
/// stages, which are metered. On a 256 KiB stack `ast.parse("-" * 3000 + "1")` overflowed the
/// guard page (SIGSEGV), while 2,600 levels still ended in `RecursionError`. Tasklets that may
/// compile deeply nested source need stacks of at least ~640 KiB (1 MiB is safe); the
/// engine's are 8 MiB (`stack::STACK_SIZE`).
pub fn c_recursion_budget_for_stack(stack_bytes: usize) -> Option<c_int> {
    let usable = stack_bytes.checked_sub(C_STACK_RESERVE)?;
    let units = (usable / C_STACK_BYTES_PER_UNIT).min(PY_C_RECURSION_LIMIT as usize) as c_int;
    (units >= MIN_C_RECURSION_BUDGET).then_some(units)
}

/// `_PyTrash_thread_destroy_chain(tstate)`: exported (`PyAPI_FUNC`) by 3.13's
/// `Include/cpython/object.h`, what `Py_TRASHCAN_END` calls; deallocates every object on
/// `tstate->delete_later`. Looked up at run time rather than linked: it is the engine's one
/// 3.13-only symbol, and a link-time reference would make a 3.12 pyhost's dynamic loader refuse
/// the library before the host can check its `cp313` tag and say why in its own words.
fn trash_destroy_chain() -> Option<unsafe extern "C" fn(*mut PyThreadState313)> {
    static FUNCTION: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let address = *FUNCTION.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no other precondition.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_PyTrash_thread_destroy_chain".as_ptr()) as usize }
    });
    // SAFETY: the symbol, when present, is the C function of that signature (3.13 headers).
    (address != 0).then(|| unsafe {
        std::mem::transmute::<usize, unsafe extern "C" fn(*mut PyThreadState313)>(address)
    })
}

/// The current thread's state as a [`PyThreadState313`].
///
/// `PyThreadState_Get()` is an exported function that reads CPython's C11 `thread_local`
/// `_Py_tss_tstate`; it is correct on any C stack (a coroutine stack included) as long as the
/// code runs on the OS thread that holds the GIL. It aborts (`Py_FatalError`) if no thread state
/// is attached.
///
/// # Safety
/// The GIL must be held by this OS thread, and the interpreter must be CPython 3.13 (GIL build).
#[inline]
pub unsafe fn current_thread_state() -> *mut PyThreadState313 {
    ffi::PyThreadState_Get().cast()
}

/// Reinterpret a `PyThreadState*` from the C API.
///
/// # Safety
/// `ts` must be a live thread state of a CPython 3.13 (GIL build) interpreter.
#[inline]
pub unsafe fn from_ffi(ts: *mut ffi::PyThreadState) -> *mut PyThreadState313 {
    ts.cast()
}

// ---------------------------------------------------------------------------------------------
// Saved state
// ---------------------------------------------------------------------------------------------

/// The tasklet-local part of a `PyThreadState`, held while the tasklet is not running.
///
/// Why each field travels with the tasklet:
///
/// * `current_frame` — the top of the tasklet's `_PyInterpreterFrame` chain. Every C → Python
///   entry (`_PyEval_EvalFrameDefault`) pushes an `entry_frame` (owner `FRAME_OWNED_BY_CSTACK`)
///   on the *C stack* and links `frame->previous = &entry_frame`, `entry_frame.previous =
///   old current_frame`. So a suspended tasklet's chain threads through its C stack: while its
///   bytes are off that stack the chain is routed around those entry frames
///   ([`unlink_c_stack_frames`]), and it must never be spliced onto another tasklet's frames
///   (a fresh tasklet starts with NULL).
/// * `datastack_chunk/top/limit` — frames of ordinary function calls are bump-allocated on the
///   thread's data stack and popped LIFO (`_PyThreadState_PopFrame` just resets `top`). Frames
///   of different tasklets are not LIFO with respect to each other, so each tasklet needs its
///   own chunk chain; a shared one would have a resumed tasklet pop (and overwrite) the frames
///   of a suspended one.
/// * `py_recursion_depth` — Python-call depth (`py_recursion_limit - py_recursion_remaining`).
///   Kept as a *depth* and turned back into `remaining` against the thread's *current* limit,
///   exactly as greenlet and `sys.setrecursionlimit` (which rewrites every thread's
///   `remaining` keeping the depth) do, so a limit change made while the tasklet was suspended
///   applies to it.
/// * `c_recursion_remaining` — the C-recursion budget belongs to the C stack the tasklet runs
///   on. It also drives the trashcan (deallocation nesting) in 3.13.
/// * `exc_info`, `exc_state` — the stack of exceptions being handled (`sys.exception()`, bare
///   `raise`, implicit `__context__`). Its bottom entry is stored inline in the thread state
///   (`&ts->exc_state`), and generator entries of a suspended tasklet may point at that
///   address, so the *value* of `exc_state` is swapped in and out of the same slot and
///   `exc_info` is kept as a pointer (NULL here meaning "the thread's own `&ts->exc_state`").
/// * `context` — the contextvars context; restoring bumps `context_ver` so `ContextVar.get()`
///   caches (keyed on thread id + `context_ver`) are invalidated.
/// * `delete_later` — the trashcan's list of deferred deallocations, which 3.13 ties to
///   `c_recursion_remaining`; greenlet carries it per greenlet. (Its objects have refcount 0;
///   we move the raw pointer and take no reference, unlike greenlet.)
/// * `critical_section` — always 0 in the GIL build; carried for parity with greenlet (in a
///   free-threaded build it points at critical sections on the tasklet's C stack).
#[must_use = "a SavedThreadState owns references and memory: restore() or discard() it"]
#[derive(Debug)]
pub struct SavedThreadState {
    pub current_frame: *mut ffi::_PyInterpreterFrame,
    pub py_recursion_depth: c_int,
    pub c_recursion_remaining: c_int,
    pub datastack_chunk: *mut PyStackChunk313,
    pub datastack_top: *mut *mut PyObject,
    pub datastack_limit: *mut *mut PyObject,
    /// NULL means `&ts->exc_state` (normalised on save).
    pub exc_info: *mut PyErrStackItem313,
    pub exc_state: PyErrStackItem313,
    pub context: *mut PyObject,
    pub delete_later: *mut PyObject,
    pub critical_section: usize,
}

impl SavedThreadState {
    /// Read the running tasklet's fields out of `ts`. Ownership of `context`,
    /// `exc_state.exc_value` and the data-stack chunks moves into the result; the values left in
    /// `ts` are stale and must be overwritten by a [`restore`](Self::restore) (or by
    /// [`retire_current`] + `restore`) before any Python code runs again.
    ///
    /// # Safety
    /// GIL held; `ts` is this OS thread's current thread state (3.13, GIL build). No exception
    /// may be pending (`current_exception` NULL): the error indicator is not part of a tasklet;
    /// fetch it before the switch and re-raise it afterwards if it must travel.
    pub unsafe fn save(ts: *mut PyThreadState313) -> Self {
        // Raw place expressions only: no Rust reference to the C-owned struct is created.
        debug_assert!(
            (*ts).current_exception.is_null(),
            "tasklet switch with an exception pending (fetch it before switching)"
        );
        let own_exc_state = ptr::addr_of_mut!((*ts).exc_state);
        let exc_info = (*ts).exc_info;
        Self {
            current_frame: (*ts).current_frame,
            py_recursion_depth: (*ts).py_recursion_limit - (*ts).py_recursion_remaining,
            c_recursion_remaining: (*ts).c_recursion_remaining,
            datastack_chunk: (*ts).datastack_chunk,
            datastack_top: (*ts).datastack_top,
            datastack_limit: (*ts).datastack_limit,
            exc_info: if exc_info == own_exc_state { ptr::null_mut() } else { exc_info },
            exc_state: (*ts).exc_state,
            context: (*ts).context,
            delete_later: (*ts).delete_later,
            critical_section: (*ts).critical_section,
        }
    }

    /// Install this state into `ts`, making its tasklet the running one as far as CPython is
    /// concerned. Consumes `self`: ownership of its references and chunks goes back to `ts`.
    /// The previous contents of those fields in `ts` are overwritten without being released,
    /// so they must have been [`save`](Self::save)d (or retired) first.
    ///
    /// # Safety
    /// GIL held; `ts` is the same thread state the state was saved from (or, for
    /// [`fresh_for_new_tasklet`](Self::fresh_for_new_tasklet), the thread that will run the new
    /// tasklet); the C stack that holds this state's entry frames is the one about to run.
    pub unsafe fn restore(self, ts: *mut PyThreadState313) {
        (*ts).context = self.context;
        (*ts).context_ver = (*ts).context_ver.wrapping_add(1);
        (*ts).py_recursion_remaining = (*ts).py_recursion_limit - self.py_recursion_depth;
        (*ts).c_recursion_remaining = self.c_recursion_remaining;
        (*ts).current_frame = self.current_frame;
        (*ts).datastack_chunk = self.datastack_chunk;
        (*ts).datastack_top = self.datastack_top;
        (*ts).datastack_limit = self.datastack_limit;
        (*ts).delete_later = self.delete_later;
        (*ts).critical_section = self.critical_section;
        (*ts).exc_state = self.exc_state;
        (*ts).exc_info =
            if self.exc_info.is_null() { ptr::addr_of_mut!((*ts).exc_state) } else { self.exc_info };
    }

    /// `save(ts)` followed by `incoming.restore(ts)`; returns the outgoing tasklet's state.
    ///
    /// # Safety
    /// As for [`save`](Self::save) and [`restore`](Self::restore).
    #[inline]
    pub unsafe fn swap(ts: *mut PyThreadState313, incoming: SavedThreadState) -> Self {
        let outgoing = Self::save(ts);
        incoming.restore(ts);
        outgoing
    }

    /// The state a brand-new tasklet starts with, before its first switch-in:
    ///
    /// * `current_frame` NULL — its frame chain starts afresh: the `entry_frame` of its first
    ///   `_PyEval_EvalFrameDefault` (on the tasklet's own C stack) gets `previous = NULL`, like a
    ///   new thread; tracebacks and `f_back` end at the tasklet's bottom frame.
    /// * data stack: a small root chunk of the engine's own ([`ROOT_CHUNK_SIZE`] bytes from the
    ///   Rust allocator), installed as `push_chunk` leaves a new root chunk (`previous` NULL,
    ///   `top` at `data[1]`, so `_PyThreadState_PopFrame` never pops or frees it). The frames of
    ///   a tasklet blocked a few calls deep fit in it; deeper calls make CPython push ordinary
    ///   16 KiB chunks on top from the object arena allocator, which it pops and frees itself
    ///   (and which [`install_chunk_cache`] keeps from costing an `mmap` each). CPython's own
    ///   first chunk (greenlet's way: NULL fields) would cost every tasklet a 16 KiB mapping and
    ///   a page of RSS. When the tasklet ends, [`retire_current`] frees the chain (greenlet's
    ///   `did_finish`).
    /// * Python depth 0 — 3.13 runs Python-to-Python calls inside one C activation, so Python
    ///   depth costs data stack, not C stack; a tasklet gets the full `sys.getrecursionlimit()`.
    ///   (greenlet instead copies the creator's depth: its C stack *continues* the creator's.)
    /// * `c_recursion_remaining = c_recursion_budget` — must match the tasklet's C stack size;
    ///   see [`c_recursion_budget_for_stack`]. (greenlet copies the creator's counter, correct
    ///   for it because a greenlet's stack is the thread's stack.)
    /// * exception-handling stack empty (`exc_info` → `&ts->exc_state`, `exc_value` NULL).
    /// * `context` as given: a strong reference that is stolen, or NULL for an empty context
    ///   created lazily on first use (greenlet's default).
    /// * no deferred deallocations, no critical section.
    ///
    /// # Safety
    /// `context` is NULL or a strong reference to a `contextvars.Context`, which is stolen.
    pub unsafe fn fresh_for_new_tasklet(c_recursion_budget: c_int, context: *mut PyObject) -> Self {
        let (datastack_chunk, datastack_top, datastack_limit) = match new_root_chunk() {
            // As `push_chunk` leaves a new root chunk once its first frame is popped again: the
            // first slot is skipped so that `_PyThreadState_PopFrame` never frees the root.
            Some(chunk) => (
                chunk,
                ptr::addr_of_mut!((*chunk).data).cast::<*mut PyObject>().add(1),
                chunk.cast::<u8>().add((*chunk).size).cast::<*mut PyObject>(),
            ),
            // Out of memory: CPython's own root chunk on the first frame push (or MemoryError).
            None => (ptr::null_mut(), ptr::null_mut(), ptr::null_mut()),
        };
        Self {
            current_frame: ptr::null_mut(),
            py_recursion_depth: 0,
            c_recursion_remaining: c_recursion_budget.min(PY_C_RECURSION_LIMIT),
            datastack_chunk,
            datastack_top,
            datastack_limit,
            exc_info: ptr::null_mut(),
            exc_state: PyErrStackItem313::EMPTY,
            context,
            delete_later: ptr::null_mut(),
            critical_section: 0,
        }
    }

    /// Release a state that will never be restored (a tasklet dropped while suspended or never
    /// started): decrefs `context` and the handled exception, and frees the data-stack chunks.
    ///
    /// Returns `false` if the state still had live interpreter frames (`current_frame` non-NULL):
    /// those frames hold references and their entry frames live on the tasklet's C stack, and
    /// there is no exported API to clear them, so the chunks are *leaked* rather than freed under
    /// live frames. Kill the tasklet properly (raise `TaskletExit` into it and let it unwind)
    /// instead of discarding it whenever possible. Deferred trashcan objects, if any, are leaked.
    ///
    /// # Safety
    /// GIL held. May run arbitrary Python code (deallocators), on the current tasklet.
    pub unsafe fn discard(self) -> bool {
        let frames_live = !self.current_frame.is_null();
        if !frames_live {
            free_chunk_chain(self.datastack_chunk);
        }
        ffi::Py_XDECREF(self.exc_state.exc_value);
        ffi::Py_XDECREF(self.context);
        !frames_live
    }
}

/// End-of-life cleanup for the tasklet that is *currently installed* in `ts`, called on that
/// tasklet's own C stack after its body has returned (no interpreter frame of it left), right
/// before its final switch away; the next step must be `next.restore(ts)`.
///
/// It drains the trashcan's deferred list (as `Py_TRASHCAN_END` would have), releases the
/// tasklet's `context` and handled exception (all of which may run Python code, still as this
/// tasklet), and finally frees the tasklet's data-stack chunk chain — which CPython never frees
/// on its own, because the root chunk is never popped — and NULLs the data-stack fields.
/// After it returns no Python code may run until the next `restore`.
///
/// # Safety
/// GIL held; `ts` is the current thread state; the tasklet's Python code has finished
/// (`current_frame` is NULL) and no exception is pending. Must not be used for the thread's
/// main tasklet: the thread's own data stack is freed by CPython in `PyThreadState_Clear`.
pub unsafe fn retire_current(ts: *mut PyThreadState313) {
    debug_assert!((*ts).current_frame.is_null(), "retiring a tasklet that still has frames");
    if !(*ts).delete_later.is_null() && (*ts).c_recursion_remaining > PY_TRASHCAN_HEADROOM {
        if let Some(destroy_chain) = trash_destroy_chain() {
            destroy_chain(ts);
        }
    }
    let context = core::mem::replace(&mut (*ts).context, ptr::null_mut());
    (*ts).context_ver = (*ts).context_ver.wrapping_add(1);
    ffi::Py_XDECREF(context);
    let exc_value = core::mem::replace(&mut (*ts).exc_state.exc_value, ptr::null_mut());
    ffi::Py_XDECREF(exc_value);
    // Anything above could have run Python code (and pushed, then popped, frames), so the chunk
    // chain is read only now.
    let chunk = (*ts).datastack_chunk;
    (*ts).datastack_chunk = ptr::null_mut();
    (*ts).datastack_top = ptr::null_mut();
    (*ts).datastack_limit = ptr::null_mut();
    free_chunk_chain(chunk);
}

/// CPython 3.13's `DATA_STACK_CHUNK_SIZE` (`Python/pystate.c`): the size `push_chunk` asks the
/// object arena allocator for when a frame does not fit in the current chunk.
pub const DATA_STACK_CHUNK_SIZE: usize = 16 * 1024;

/// Bytes of a tasklet's root data-stack chunk (header included): room for the frames of a
/// tasklet blocked a few ordinary calls deep (the tasklet's body is Rust code, so the first
/// frame here is the tasklet's function's; a small function's frame takes about 100 bytes).
pub const ROOT_CHUNK_SIZE: usize = 1024;

/// A fresh root chunk of the engine's own (from the pre-faulted `pool`, aligned as the arena
/// allocator's page-aligned chunks are at least to 16 bytes), or None if memory is exhausted.
fn new_root_chunk() -> Option<*mut PyStackChunk313> {
    let chunk = crate::pool::allocate(ROOT_CHUNK_SIZE)?.cast::<PyStackChunk313>();
    // SAFETY: freshly allocated, large enough for the header.
    unsafe {
        chunk.write(PyStackChunk313 {
            previous: ptr::null_mut(),
            size: ROOT_CHUNK_SIZE,
            top: 0,
            data: [ptr::null_mut()],
        })
    };
    Some(chunk)
}

/// Frees a tasklet's chunk chain: the chunks CPython pushed on top through the object arena
/// allocator, then the root, which is the engine's own when its size says so (a chain that
/// started from NULL fields, after an allocation failure, has an arena root instead).
unsafe fn free_chunk_chain(mut chunk: *mut PyStackChunk313) {
    let mut arena = ffi::PyObjectArenaAllocator { ctx: ptr::null_mut(), alloc: None, free: None };
    ffi::PyObject_GetArenaAllocator(&mut arena);
    while !chunk.is_null() {
        let previous = (*chunk).previous;
        if previous.is_null() && (*chunk).size == ROOT_CHUNK_SIZE {
            crate::pool::release(chunk.cast(), ROOT_CHUNK_SIZE);
        } else if let Some(free) = arena.free {
            free(arena.ctx, chunk.cast(), (*chunk).size);
        } // else: arena machinery already torn down: leak, as greenlet does
        chunk = previous;
    }
}

// ----- A cache in front of the object arena allocator, for data-stack chunks -----

/// CPython 3.13's obmalloc arena size on 64-bit builds (`ARENA_BITS` 20, Objects/obmalloc.c):
/// small objects (tasklets among them) are carved from arenas of this size.
pub const OBMALLOC_ARENA_SIZE: usize = 1 << 20;

/// Freed [`DATA_STACK_CHUNK_SIZE`] blocks kept for reuse (at most this many, all threads).
pub const CACHED_DATA_STACK_CHUNKS: usize = 16;

struct ChunkCache {
    inner: ffi::PyObjectArenaAllocator,
    free: Vec<usize>,
}

// SAFETY: the wrapped allocator is CPython's, callable from any thread; the cached blocks are
// plain memory.
unsafe impl Send for ChunkCache {}

static CHUNK_CACHE: std::sync::Mutex<Option<ChunkCache>> = std::sync::Mutex::new(None);

fn chunk_cache() -> std::sync::MutexGuard<'static, Option<ChunkCache>> {
    CHUNK_CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

extern "C" fn cached_arena_alloc(_ctx: *mut core::ffi::c_void, size: usize) -> *mut core::ffi::c_void {
    let mut guard = chunk_cache();
    let Some(cache) = guard.as_mut() else { return ptr::null_mut() };
    if size == DATA_STACK_CHUNK_SIZE {
        if let Some(block) = cache.free.pop() {
            return block as *mut core::ffi::c_void;
        }
    }
    let inner = cache.inner;
    drop(guard);
    let Some(alloc) = inner.alloc else { return ptr::null_mut() };
    let block = alloc(inner.ctx, size);
    if size == OBMALLOC_ARENA_SIZE && !block.is_null() {
        crate::pool::populate(block as usize, size);
    }
    block
}

extern "C" fn cached_arena_free(_ctx: *mut core::ffi::c_void, block: *mut core::ffi::c_void, size: usize) {
    let mut guard = chunk_cache();
    let Some(cache) = guard.as_mut() else { return };
    if size == DATA_STACK_CHUNK_SIZE && cache.free.len() < CACHED_DATA_STACK_CHUNKS {
        cache.free.push(block as usize);
        return;
    }
    let inner = cache.inner;
    drop(guard);
    if let Some(free) = inner.free {
        free(inner.ctx, block, size);
    }
}

/// Puts a small cache in front of CPython's object arena allocator for data-stack chunks.
///
/// Why: CPython allocates a 16 KiB chunk (an `mmap` with the default allocator) whenever a
/// frame does not fit in the current one, and frees it (`munmap`) as soon as the frame that
/// needed it returns. A tasklet's root chunk is small, so a loop in a tasklet that calls a few
/// levels deeper than it would pay a map and an unmap per iteration without the cache. Other
/// sizes (obmalloc's 1 MiB arenas) pass straight through; blocks CPython allocated before the
/// cache was installed are compatible (same underlying allocator), so the cache may take them.
/// obmalloc's arenas have their pages faulted in when they are mapped (see `pool`: one call
/// per arena instead of a page fault per page as objects fill it). Installed once per process; `PyObject_SetArenaAllocator` is a public API.
///
/// # Safety
/// GIL held (no other thread is allocating an arena while the allocator is swapped).
pub unsafe fn install_chunk_cache() {
    let mut guard = chunk_cache();
    if guard.is_some() {
        return;
    }
    let mut inner = ffi::PyObjectArenaAllocator { ctx: ptr::null_mut(), alloc: None, free: None };
    ffi::PyObject_GetArenaAllocator(&mut inner);
    *guard = Some(ChunkCache { inner, free: Vec::with_capacity(CACHED_DATA_STACK_CHUNKS) });
    drop(guard);
    let mut wrapper = ffi::PyObjectArenaAllocator {
        ctx: ptr::null_mut(),
        alloc: Some(cached_arena_alloc),
        free: Some(cached_arena_free),
    };
    ffi::PyObject_SetArenaAllocator(&mut wrapper);
}

#[cfg(all(test, target_os = "linux", target_pointer_width = "64"))]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    // Output of this C program, compiled with
    // `gcc -I/root/.pyenv/versions/3.13.0/include/python3.13` (gcc 12.2.0, x86_64 Debian 12)
    // against CPython 3.13.0's installed headers:
    //
    //   #include <Python.h>
    //   #define O(f) printf("%-32s offset %4zu size %2zu\n", #f,
    //                       offsetof(PyThreadState, f), sizeof(((PyThreadState*)0)->f))
    //   int main(void) { printf(... sizeof(PyThreadState) ...); O(prev); ... }
    //
    // PY_VERSION 3.13.0  sizeof(PyThreadState)=304 alignof=8
    // prev                             offset    0 size  8
    // next                             offset    8 size  8
    // interp                           offset   16 size  8
    // eval_breaker                     offset   24 size  8
    // _status                          offset   32 size  4
    // _whence                          offset   36 size  4
    // state                            offset   40 size  4
    // py_recursion_remaining           offset   44 size  4
    // py_recursion_limit               offset   48 size  4
    // c_recursion_remaining            offset   52 size  4
    // recursion_headroom               offset   56 size  4
    // tracing                          offset   60 size  4
    // what_event                       offset   64 size  4
    // current_frame                    offset   72 size  8
    // c_profilefunc                    offset   80 size  8
    // c_tracefunc                      offset   88 size  8
    // c_profileobj                     offset   96 size  8
    // c_traceobj                       offset  104 size  8
    // current_exception                offset  112 size  8
    // exc_info                         offset  120 size  8
    // dict                             offset  128 size  8
    // gilstate_counter                 offset  136 size  4
    // async_exc                        offset  144 size  8
    // thread_id                        offset  152 size  8
    // native_thread_id                 offset  160 size  8
    // delete_later                     offset  168 size  8
    // critical_section                 offset  176 size  8
    // coroutine_origin_tracking_depth  offset  184 size  4
    // async_gen_firstiter              offset  192 size  8
    // async_gen_finalizer              offset  200 size  8
    // context                          offset  208 size  8
    // context_ver                      offset  216 size  8
    // id                               offset  224 size  8
    // datastack_chunk                  offset  232 size  8
    // datastack_top                    offset  240 size  8
    // datastack_limit                  offset  248 size  8
    // exc_state                        offset  256 size 16
    // previous_executor                offset  272 size  8
    // dict_global_version              offset  280 size  8
    // threading_local_key              offset  288 size  8
    // threading_local_sentinel         offset  296 size  8
    // sizeof(_PyErr_StackItem)=16 exc_value@0 previous_item@8
    // sizeof(_PyStackChunk)=32 previous@0 size@8 top@16 data@24
    // Py_C_RECURSION_LIMIT=10000 Py_TRASHCAN_HEADROOM=50
    // USE_STACKCHECK not defined
    #[test]
    fn layout_matches_cpython_3_13_0() {
        type T = PyThreadState313;
        let expected: &[(&str, usize, usize)] = &[
            ("prev", offset_of!(T, prev), 0),
            ("next", offset_of!(T, next), 8),
            ("interp", offset_of!(T, interp), 16),
            ("eval_breaker", offset_of!(T, eval_breaker), 24),
            ("_status", offset_of!(T, _status), 32),
            ("_whence", offset_of!(T, _whence), 36),
            ("state", offset_of!(T, state), 40),
            ("py_recursion_remaining", offset_of!(T, py_recursion_remaining), 44),
            ("py_recursion_limit", offset_of!(T, py_recursion_limit), 48),
            ("c_recursion_remaining", offset_of!(T, c_recursion_remaining), 52),
            ("recursion_headroom", offset_of!(T, recursion_headroom), 56),
            ("tracing", offset_of!(T, tracing), 60),
            ("what_event", offset_of!(T, what_event), 64),
            ("current_frame", offset_of!(T, current_frame), 72),
            ("c_profilefunc", offset_of!(T, c_profilefunc), 80),
            ("c_tracefunc", offset_of!(T, c_tracefunc), 88),
            ("c_profileobj", offset_of!(T, c_profileobj), 96),
            ("c_traceobj", offset_of!(T, c_traceobj), 104),
            ("current_exception", offset_of!(T, current_exception), 112),
            ("exc_info", offset_of!(T, exc_info), 120),
            ("dict", offset_of!(T, dict), 128),
            ("gilstate_counter", offset_of!(T, gilstate_counter), 136),
            ("async_exc", offset_of!(T, async_exc), 144),
            ("thread_id", offset_of!(T, thread_id), 152),
            ("native_thread_id", offset_of!(T, native_thread_id), 160),
            ("delete_later", offset_of!(T, delete_later), 168),
            ("critical_section", offset_of!(T, critical_section), 176),
            ("coroutine_origin_tracking_depth", offset_of!(T, coroutine_origin_tracking_depth), 184),
            ("async_gen_firstiter", offset_of!(T, async_gen_firstiter), 192),
            ("async_gen_finalizer", offset_of!(T, async_gen_finalizer), 200),
            ("context", offset_of!(T, context), 208),
            ("context_ver", offset_of!(T, context_ver), 216),
            ("id", offset_of!(T, id), 224),
            ("datastack_chunk", offset_of!(T, datastack_chunk), 232),
            ("datastack_top", offset_of!(T, datastack_top), 240),
            ("datastack_limit", offset_of!(T, datastack_limit), 248),
            ("exc_state", offset_of!(T, exc_state), 256),
            ("previous_executor", offset_of!(T, previous_executor), 272),
            ("dict_global_version", offset_of!(T, dict_global_version), 280),
            ("threading_local_key", offset_of!(T, threading_local_key), 288),
            ("threading_local_sentinel", offset_of!(T, threading_local_sentinel), 296),
        ];
        for &(name, got, want) in expected {
            assert_eq!(got, want, "offset of PyThreadState.{name}");
        }
        assert_eq!(size_of::<T>(), 304);
        assert_eq!(core::mem::align_of::<T>(), 8);
        assert_eq!(size_of::<PyErrStackItem313>(), 16);
        assert_eq!(offset_of!(PyErrStackItem313, exc_value), 0);
        assert_eq!(offset_of!(PyErrStackItem313, previous_item), 8);
        assert_eq!(size_of::<PyStackChunk313>(), 32);
        assert_eq!(offset_of!(PyStackChunk313, previous), 0);
        assert_eq!(offset_of!(PyStackChunk313, size), 8);
        assert_eq!(offset_of!(PyStackChunk313, top), 16);
        assert_eq!(offset_of!(PyStackChunk313, data), 24);
        // _PyInterpreterFrame: see `frames`.
    }

    #[test]
    fn budget_for_stack_sizes() {
        assert_eq!(c_recursion_budget_for_stack(64 * 1024), None);
        assert_eq!(c_recursion_budget_for_stack(256 * 1024), Some(480));
        assert_eq!(c_recursion_budget_for_stack(1024 * 1024), Some(2016));
        assert_eq!(c_recursion_budget_for_stack(8 * 1024 * 1024), Some(PY_C_RECURSION_LIMIT));
    }
}
