//! `_stackless_core.Fiber`: a Python callable running on a C stack of its own, and the switch
//! between fibers of one OS thread. The `stackless` module builds tasklets, channels and the
//! scheduler on top of this.
//!
//! Switching model. corosensei coroutines are asymmetric (resume/suspend), so every thread's
//! *main* context (the OS thread's own stack) runs a dispatcher whenever a fiber runs: a fiber
//! that switches to another suspends back to the dispatcher with a request naming the target,
//! and the dispatcher resumes that target. A switch to the main context ends the dispatch.
//!
//! Around every stack switch, the CPython thread-state fields a switch carries are saved and
//! restored (`cpython_state`): the side that leaves saves its own state, the dispatcher installs
//! the incoming one. No Python code runs in between (reference releases that could run
//! deallocators are deferred until a state is installed).
//!
//! Fibers run on a few shared stacks per thread (`stack`): before resuming a fiber whose stack
//! holds another fiber's bytes, the dispatcher copies those off to the heap and the incoming
//! fiber's back. A fiber's coroutine is created when it first runs, on its bound stack.

use crate::cpython_state::{self as state, SavedThreadState};
use crate::frames::CallSite;
use crate::stack::{self, SavedStack, StackView, ThreadStacks, STACK_SIZE};
use corosensei::{Coroutine, CoroutineResult, Yielder};
use pyo3_ffi as ffi;
use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Stack switches made, all threads (engine statistics).
pub static SWITCHES: AtomicU64 = AtomicU64::new(0);
/// Fibers started, all threads.
pub static FIBERS_STARTED: AtomicU64 = AtomicU64::new(0);
/// Fiber objects allocated and not yet deallocated, all threads (a reference leak shows here).
pub static FIBERS_ALIVE: AtomicU64 = AtomicU64::new(0);
/// Suspended fibers that were deallocated with frames still on their stack and had to be
/// leaked (see `dealloc`).
pub static FIBERS_LEAKED: AtomicU64 = AtomicU64::new(0);

/// What a context receives when it is resumed: a value to return from its `switch()`, or an
/// exception to raise there. Both are strong references (or NULL).
struct Transfer {
    value: *mut ffi::PyObject,
    exc: *mut ffi::PyObject,
}

/// Where a suspending (or finishing) fiber asks control to go: `target` is a strong reference
/// to a fiber, or NULL for the thread's main context.
struct Request {
    target: *mut ffi::PyObject,
    transfer: Transfer,
}

type FiberCoroutine = Coroutine<Transfer, Request, Request, StackView>;

/// Rust-side state of a fiber, boxed and owned by the Python object.
struct FiberInner {
    /// The callable, until the fiber starts (then it belongs to the running body).
    func: *mut ffi::PyObject,
    /// First argument passed before the switch value (`func(arg, value)`), or NULL
    /// (`func(value)`): lets a method run without a bound-method object per fiber.
    arg: *mut ffi::PyObject,
    /// contextvars context to start with (strong reference, stolen at start), or NULL.
    context: *mut ffi::PyObject,
    /// A tasklet's fiber (see [`new_tasklet_fiber`]): it runs `sched::tasklet_body` for the
    /// tasklet that is current when it starts, in that tasklet's context unless `context`
    /// was set (it has no `func`).
    for_tasklet: bool,
    /// Created when the fiber first runs (it writes its start frame onto the shared stack).
    coroutine: Option<FiberCoroutine>,
    /// Valid while the coroutine body runs.
    yielder: *const Yielder<Transfer, Request>,
    /// The fiber's thread state while it is suspended.
    saved: Option<SavedThreadState>,
    /// The creating thread's shared stacks, and the one this fiber is bound to once started.
    stacks: Arc<ThreadStacks>,
    stack_index: usize,
    /// Stack pointer recorded when the fiber last suspended: its live bytes start just below.
    suspended_sp: usize,
    /// The fiber's live stack bytes while another fiber occupies its stack.
    saved_stack: Option<SavedStack>,
    /// Frame links rerouted around its C-stack entry frames while its bytes are off the stack.
    unlinked_frames: Vec<(usize, usize)>,
    thread_id: u64,
    started: bool,
    dead: bool,
    /// Strong references that the engine's Rust frames on this fiber's stack hold across a
    /// switch (see [`StackRef`]), NULL when not held: the collector is told of them.
    stack_refs: [*mut ffi::PyObject; StackRef::COUNT],
}

/// The strong references held by Rust frames on a fiber's stack while it may be suspended, one
/// slot each, recorded so that the cyclic GC hears of them (`frames`, [`traverse_suspended`]):
/// unreported, each would keep what it points to (its tasklet, its arguments) alive forever.
#[derive(Clone, Copy)]
pub enum StackRef {
    /// `fiber_body`: the tasklet (or `arg`) and the function it runs.
    Bound,
    Func,
    /// `sched::tasklet_body`: the thread state, the tasklet's function and its arguments.
    BodyThread,
    BodyFunc,
    BodyArgs,
    BodyKwargs,
    /// `sched::block_on`: the thread state, the tasklet blocking and whom it switches to.
    SwitchThread,
    SwitchMe,
    SwitchTarget,
}

impl StackRef {
    const COUNT: usize = 9;
}

#[repr(C)]
pub struct FiberObject {
    ob_base: ffi::PyObject,
    inner: *mut FiberInner,
}

/// Per-OS-thread dispatch state.
struct ThreadCore {
    /// The running fiber (strong reference), or NULL when the main context runs.
    current: Cell<*mut ffi::PyObject>,
    /// The main context's thread state while a fiber runs.
    main_saved: RefCell<Option<SavedThreadState>>,
    /// References to release once a thread state is installed again.
    deferred_decrefs: RefCell<Vec<*mut ffi::PyObject>>,
}

thread_local! {
    static CORE: ThreadCore = const {
        ThreadCore {
            current: Cell::new(ptr::null_mut()),
            main_saved: RefCell::new(None),
            deferred_decrefs: RefCell::new(Vec::new()),
        }
    };
}

static mut FIBER_TYPE: *mut ffi::PyTypeObject = ptr::null_mut();

unsafe fn inner<'a>(fiber: *mut ffi::PyObject) -> &'a mut FiberInner {
    &mut *(*fiber.cast::<FiberObject>()).inner
}

fn thread_ident() -> u64 {
    // SAFETY: exported, no preconditions.
    unsafe { ffi::PyThread_get_thread_ident() as u64 }
}

unsafe fn set_error(kind: *mut ffi::PyObject, message: &CStr) -> *mut ffi::PyObject {
    ffi::PyErr_SetString(kind, message.as_ptr());
    ptr::null_mut()
}

/// Runs `body`, turning a Rust panic into a Python SystemError (panics never cross into C).
pub(crate) fn guarded(body: impl FnOnce() -> *mut ffi::PyObject) -> *mut ffi::PyObject {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|_| {
        // SAFETY: called from a CPython entry point, GIL held.
        unsafe { set_error(ffi::PyExc_SystemError, c"internal error in the stackless engine (panic)") }
    })
}

/// Releases references deferred during a dispatch; runs with a thread state installed.
unsafe fn release_deferred() {
    // Pop one at a time: a decref may run a deallocator that defers more; the vector keeps its
    // capacity, so a switch allocates nothing.
    while let Some(object) = CORE.with(|c| c.deferred_decrefs.borrow_mut().pop()) {
        ffi::Py_DECREF(object);
    }
}

fn defer_decref(object: *mut ffi::PyObject) {
    if !object.is_null() {
        CORE.with(|c| c.deferred_decrefs.borrow_mut().push(object));
    }
}

/// Hands a received transfer to the Python caller of `switch()`: its value, or its exception
/// raised.
unsafe fn deliver(transfer: Transfer) -> *mut ffi::PyObject {
    release_deferred();
    if !transfer.exc.is_null() {
        ffi::Py_XDECREF(transfer.value);
        ffi::PyErr_SetRaisedException(transfer.exc);
        return ptr::null_mut();
    }
    if transfer.value.is_null() {
        ffi::Py_NewRef(ffi::Py_None())
    } else {
        transfer.value
    }
}

/// The body of every fiber, on its own stack: install a fresh thread state, call the function,
/// retire the state, and name where control goes next.
unsafe fn fiber_body(
    fiber: *mut ffi::PyObject,
    yielder: &Yielder<Transfer, Request>,
    first: Transfer,
) -> Request {
    let ts = state::current_thread_state();
    let inner = inner(fiber);
    inner.yielder = yielder;
    let mut context = std::mem::replace(&mut inner.context, ptr::null_mut());
    let mut bound = std::mem::replace(&mut inner.arg, ptr::null_mut());
    if inner.for_tasklet {
        let (tasklet, tasklet_context) = crate::sched::current_tasklet_of(fiber);
        bound = tasklet;
        if context.is_null() {
            context = tasklet_context;
        } else {
            ffi::Py_XDECREF(tasklet_context);
        }
    }
    let budget = state::c_recursion_budget_for_stack(STACK_SIZE).unwrap_or(state::MIN_C_RECURSION_BUDGET);
    SavedThreadState::fresh_for_new_tasklet(budget, context).restore(ts);
    release_deferred();
    let func = std::mem::replace(&mut inner.func, ptr::null_mut());
    set_stack_ref(fiber, StackRef::Bound, bound);
    set_stack_ref(fiber, StackRef::Func, func);
    let request = if !first.exc.is_null() {
        // Thrown into before it ever ran: the function never starts; the exception goes to main.
        ffi::Py_XDECREF(first.value);
        Request { target: ptr::null_mut(), transfer: Transfer { value: ptr::null_mut(), exc: first.exc } }
    } else {
        let arg = if first.value.is_null() { ffi::Py_NewRef(ffi::Py_None()) } else { first.value };
        let result = if inner.for_tasklet {
            // Called directly, not through a Python function object: fewer C frames stay on
            // the tasklet's stack (and are copied when it is evicted) while it is suspended.
            if bound.is_null() {
                set_error(
                    ffi::PyExc_RuntimeError,
                    c"a tasklet's fiber was started while another tasklet was current",
                )
            } else {
                crate::sched::tasklet_body(bound)
            }
        } else if bound.is_null() {
            ffi::PyObject_CallOneArg(func, arg)
        } else {
            let args = [bound, arg];
            ffi::PyObject_Vectorcall(func, args.as_ptr(), 2, ptr::null_mut())
        };
        ffi::Py_DECREF(arg);
        if result.is_null() {
            let exc = ffi::PyErr_GetRaisedException();
            Request { target: ptr::null_mut(), transfer: Transfer { value: ptr::null_mut(), exc } }
        } else {
            next_from_result(result)
        }
    };
    set_stack_ref(fiber, StackRef::Bound, ptr::null_mut());
    set_stack_ref(fiber, StackRef::Func, ptr::null_mut());
    ffi::Py_XDECREF(func);
    ffi::Py_XDECREF(bound);
    state::retire_current(ts);
    request
}

/// Records (or, with NULL, forgets) a strong reference held on `fiber`'s stack. Raw pointer
/// writes: callers may be inside code that holds a `&mut FiberInner` of the same fiber.
unsafe fn set_stack_ref(fiber: *mut ffi::PyObject, slot: StackRef, object: *mut ffi::PyObject) {
    let raw = (*fiber.cast::<FiberObject>()).inner;
    if !raw.is_null() {
        (*ptr::addr_of_mut!((*raw).stack_refs))[slot as usize] = object;
    }
}

/// The running fiber of this thread (borrowed), NULL when the thread's main context runs (the
/// main tasklet is never garbage: its thread state holds it, so nothing is recorded for it).
fn running_fiber() -> *mut ffi::PyObject {
    CORE.with(|c| c.current.get())
}

/// Records (or forgets, with NULLs) the references `sched::tasklet_body` holds while the
/// tasklet's function runs.
///
/// # Safety
/// GIL held, on the tasklet's own fiber; each object is a strong reference its caller holds
/// until it records NULLs again.
pub unsafe fn hold_body_refs([th, func, args, kwargs]: [*mut ffi::PyObject; 4]) {
    let fiber = running_fiber();
    if !fiber.is_null() {
        set_stack_ref(fiber, StackRef::BodyThread, th);
        set_stack_ref(fiber, StackRef::BodyFunc, func);
        set_stack_ref(fiber, StackRef::BodyArgs, args);
        set_stack_ref(fiber, StackRef::BodyKwargs, kwargs);
    }
}

/// Records (or forgets, with NULLs) the references a blocking channel operation of tasklet `me`
/// holds across its switch (`sched::block_on`), in `fiber`, `me`'s fiber (looked up by the
/// caller, cheaper than the thread-local): only if it is a fiber running `me`'s body, which,
/// `me` being the current tasklet, is the running fiber. Same contract as [`hold_body_refs`].
pub unsafe fn hold_switch_refs(
    fiber: *mut ffi::PyObject,
    me: *mut ffi::PyObject,
    [th, held_me, target]: [*mut ffi::PyObject; 3],
) {
    if body_fiber_of(fiber, me).is_none() {
        return;
    }
    set_stack_ref(fiber, StackRef::SwitchThread, th);
    set_stack_ref(fiber, StackRef::SwitchMe, held_me);
    set_stack_ref(fiber, StackRef::SwitchTarget, target);
}

/// Reports to the cyclic GC what a suspended fiber's stack holds: the references its frames
/// own (`frames`), those its Rust frames hold ([`StackRef`]), its saved context and handled
/// exception. Nothing while it runs (its frames are the thread's, which are roots), before it
/// starts or after it ends, or while it runs inside a generator (see `frames`).
///
/// A tasklet's fiber is not tracked by the GC itself (see [`new_tasklet_fiber`]) and belongs to
/// its tasklet, so the tasklet's `tp_traverse` reports this for it: only for the tasklet the
/// fiber runs (its `StackRef::Bound`), so that however `_fiber` slots are reassigned, one
/// object reports it once. Other fibers report it themselves.
///
/// # Safety
/// GIL held, from a `tp_traverse`; `tasklet` is a live tasklet.
pub unsafe fn traverse_tasklet_fiber(
    object: *mut ffi::PyObject,
    tasklet: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    match body_fiber_of(object, tasklet) {
        Some(raw) => traverse_suspended(raw, visit, arg),
        None => 0,
    }
}

/// The Rust side of `object` if it is a tasklet fiber running `tasklet`'s body (its
/// `StackRef::Bound`): the one fiber whose stack holds that tasklet's frames.
unsafe fn body_fiber_of(object: *mut ffi::PyObject, tasklet: *mut ffi::PyObject) -> Option<*mut FiberInner> {
    let raw = fiber_inner(object)?;
    let bound = (*ptr::addr_of!((*raw).stack_refs))[StackRef::Bound as usize];
    ((*raw).for_tasklet && bound == tasklet).then_some(raw)
}

/// The Rust side of `object` if it is a fiber (with one).
unsafe fn fiber_inner(object: *mut ffi::PyObject) -> Option<*mut FiberInner> {
    if object.is_null() || FIBER_TYPE.is_null() || ffi::Py_TYPE(object) != FIBER_TYPE {
        return None;
    }
    let raw = (*object.cast::<FiberObject>()).inner;
    (!raw.is_null()).then_some(raw)
}

unsafe fn traverse_suspended(raw: *mut FiberInner, visit: ffi::visitproc, arg: *mut c_void) -> c_int {
    if !(*raw).started || (*raw).dead {
        return 0;
    }
    let Some(saved) = (*raw).saved.as_ref() else { return 0 };
    match crate::frames::visit_suspended_frames(saved.current_frame, visit, arg) {
        Err(rc) => return rc,
        Ok(false) => return 0,
        Ok(true) => {}
    }
    let held = (*raw).stack_refs.iter().copied();
    for object in held.chain([saved.context, saved.exc_state.exc_value]) {
        if !object.is_null() {
            let rc = visit(object, arg);
            if rc != 0 {
                return rc;
            }
        }
    }
    0
}

/// A finished fiber's function returns `(target, value)` to name where control goes (a fiber,
/// or None for the main context); any other result goes to the main context as the value.
unsafe fn next_from_result(result: *mut ffi::PyObject) -> Request {
    if ffi::PyTuple_Check(result) != 0 && ffi::PyTuple_Size(result) == 2 {
        let target = ffi::PyTuple_GetItem(result, 0);
        let value = ffi::Py_NewRef(ffi::PyTuple_GetItem(result, 1));
        let target = if ffi::Py_IS_TYPE(target, FIBER_TYPE) != 0 && !inner(target).dead {
            ffi::Py_NewRef(target)
        } else {
            ptr::null_mut()
        };
        ffi::Py_DECREF(result);
        return Request { target, transfer: Transfer { value, exc: ptr::null_mut() } };
    }
    Request { target: ptr::null_mut(), transfer: Transfer { value: result, exc: ptr::null_mut() } }
}

/// Runs fibers from the main context until one hands control back to main; returns what it
/// handed over. `target` and `transfer` are owned.
unsafe fn dispatch(mut target: *mut ffi::PyObject, mut transfer: Transfer) -> Transfer {
    let ts = state::current_thread_state();
    loop {
        if target.is_null() {
            if let Some(main) = CORE.with(|c| c.main_saved.borrow_mut().take()) {
                main.restore(ts);
            }
            CORE.with(|c| c.current.set(ptr::null_mut()));
            return transfer;
        }
        CORE.with(|c| c.current.set(target));
        let fiber = inner(target);
        let identity = (fiber as *mut FiberInner).cast::<()>();
        if !fiber.started {
            fiber.started = true;
            FIBERS_STARTED.fetch_add(1, Ordering::Relaxed);
            fiber.stack_index = fiber.stacks.pick();
            occupy_stack(fiber, identity);
            let address = target as usize;
            let view = fiber.stacks.view(fiber.stack_index);
            fiber.coroutine = Some(Coroutine::with_stack(view, move |yielder, first| {
                // SAFETY: runs with the GIL held on the thread that created the fiber (switch_to
                // checks the thread); the object outlives its coroutine (dealloc drops it first).
                unsafe { fiber_body(address as *mut ffi::PyObject, yielder, first) }
            }));
        } else {
            if fiber.stacks.occupant(fiber.stack_index) != identity {
                occupy_stack(fiber, identity);
                if let Some(bytes) = fiber.saved_stack.take() {
                    bytes.copy_back();
                }
                state::relink_frames(&mut fiber.unlinked_frames);
            }
            if let Some(saved) = fiber.saved.take() {
                saved.restore(ts);
            }
        }
        let Some(coroutine) = fiber.coroutine.as_mut() else {
            // Unreachable by construction (a fiber's coroutine exists until it is dead).
            target = ptr::null_mut();
            continue;
        };
        SWITCHES.fetch_add(1, Ordering::Relaxed);
        let outcome = coroutine.resume(transfer);
        SWITCHES.fetch_add(1, Ordering::Relaxed);
        let left = target;
        let request = match outcome {
            CoroutineResult::Yield(request) => {
                check_suspended_sp(inner(left));
                request
            }
            CoroutineResult::Return(request) => {
                let fiber = inner(left);
                fiber.dead = true;
                fiber.yielder = ptr::null();
                // Finished: no frames on its stack, so dropping the coroutine is safe.
                fiber.coroutine = None;
                fiber.stacks.set_occupant(fiber.stack_index, ptr::null_mut());
                request
            }
        };
        // `left` was kept alive by CORE.current; release it only once a state is installed.
        defer_decref(left);
        target = request.target;
        transfer = request.transfer;
    }
}

/// Makes `fiber` the occupant of its bound stack, first copying the live bytes of the
/// suspended fiber that occupies it (if any) to the heap. Runs on the thread's own stack.
unsafe fn occupy_stack(fiber: &mut FiberInner, identity: *mut ()) {
    let occupant = fiber.stacks.occupant(fiber.stack_index);
    if !occupant.is_null() && occupant != identity {
        // SAFETY: an occupant is a live fiber of this thread (dealloc vacates its stack), and
        // suspended: only the main context dispatches, and every fiber of the thread is then
        // suspended.
        let evicted = &mut *occupant.cast::<FiberInner>();
        let (lowest, top) = evicted.stacks.bounds(evicted.stack_index);
        let low = evicted.suspended_sp.saturating_sub(stack::BELOW_SP_MARGIN).max(lowest);
        if let Some(saved) = evicted.saved.as_ref() {
            // Into the fiber's own vector: relinking drains it and keeps its capacity.
            state::unlink_c_stack_frames(saved.current_frame, lowest, top, &mut evicted.unlinked_frames);
        }
        let Some(saved_stack) = SavedStack::copy_off(low, evicted.suspended_sp, top) else {
            // As a failed Box allocation would: there is no way on without these bytes.
            std::alloc::handle_alloc_error(std::alloc::Layout::from_size_align_unchecked(top - low, 1));
        };
        evicted.saved_stack = Some(saved_stack);
    }
    fiber.stacks.set_occupant(fiber.stack_index, identity);
}

/// Stops the process if a fiber that just suspended put anything further below its recorded
/// stack pointer than `stack::BELOW_SP_MARGIN` (those bytes would be lost when it is copied off
/// its stack). corosensei keeps the exact suspended stack pointer in a private field of the
/// coroutine; it is the only word of that small struct that can lie strictly between the
/// stack's lowest address and the recorded pointer (the others are the stack's bounds, an
/// `Arc`, the initial stack pointer near the top, and a function pointer), so the struct's
/// words are scanned for it.
unsafe fn check_suspended_sp(fiber: &FiberInner) {
    const WORDS: usize = std::mem::size_of::<FiberCoroutine>() / std::mem::size_of::<usize>();
    // Word-sized fields only, so no padding is read.
    const _: () = assert!(std::mem::size_of::<FiberCoroutine>().is_multiple_of(std::mem::size_of::<usize>()));
    let Some(coroutine) = fiber.coroutine.as_ref() else { return };
    let (lowest, _) = fiber.stacks.bounds(fiber.stack_index);
    let words = (coroutine as *const FiberCoroutine).cast::<usize>();
    let allowed = fiber.suspended_sp.saturating_sub(stack::BELOW_SP_MARGIN);
    for i in 0..WORDS {
        let word = words.add(i).read();
        if word > lowest && word < allowed {
            use std::io::Write;
            // Not eprintln!: it panics if stderr is gone, and a panic would be caught.
            let _ = writeln!(
                std::io::stderr(),
                "Fatal error in the stackless engine: a tasklet suspended {} bytes below its \
                 recorded stack pointer (the copy margin is {}); this build cannot copy stacks \
                 safely. Aborting.",
                fiber.suspended_sp - word,
                stack::BELOW_SP_MARGIN
            );
            std::process::abort();
        }
    }
}

/// Suspends the running fiber back to the dispatcher, first recording its stack pointer (its
/// live bytes are those from just below it to the top of its stack).
#[inline(never)]
unsafe fn suspend_recording_sp(
    yielder: &Yielder<Transfer, Request>,
    request: Request,
    sp: *mut usize,
) -> Transfer {
    *sp = stack::stack_pointer();
    yielder.suspend(request)
}

/// [`switch_to`] from the thread's main context: runs fibers until one switches back. Out of
/// line (with the dispatcher inlined here), so that the frame of `switch_to`, which every
/// suspended fiber keeps, stays small (see `sched::switch_fast` on frame sizes).
#[inline(never)]
unsafe fn switch_from_main(
    ts: *mut state::PyThreadState313,
    target: *mut ffi::PyObject,
    transfer: Transfer,
) -> *mut ffi::PyObject {
    CORE.with(|c| *c.main_saved.borrow_mut() = Some(SavedThreadState::save(ts)));
    deliver(dispatch(target, transfer))
}

/// `fiber.saved = save(ts)`, out of line so the saved state is not built in the frame of
/// [`switch_to`] (which a suspended fiber keeps).
#[inline(never)]
unsafe fn save_state(fiber: &mut FiberInner, ts: *mut state::PyThreadState313) {
    fiber.saved = Some(SavedThreadState::save(ts));
}

/// `switch(target, value=None, exc=None)`: transfer control to `target` (a fiber, or None for
/// the thread's main context), returning what is sent back when control returns here.
///
/// `site`: how the Python-level call that leads here was made, if it was made straight from
/// Python code: while this fiber is suspended, its caller's evaluation stack is then visible to
/// the cyclic GC (`frames`).
pub(crate) unsafe fn switch_to(
    target: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
    exc: *mut ffi::PyObject,
    site: Option<&CallSite>,
) -> *mut ffi::PyObject {
    let target = if target == ffi::Py_None() { ptr::null_mut() } else { target };
    if !target.is_null() {
        if ffi::Py_IS_TYPE(target, FIBER_TYPE) == 0 {
            return set_error(ffi::PyExc_TypeError, c"switch target must be a Fiber or None");
        }
        let fiber = inner(target);
        if fiber.dead {
            return set_error(ffi::PyExc_RuntimeError, c"cannot switch to a fiber that has finished");
        }
        if fiber.thread_id != thread_ident() {
            return set_error(ffi::PyExc_RuntimeError, c"cannot switch to a fiber of another thread");
        }
    }
    if !exc.is_null() && exc != ffi::Py_None() && ffi::PyExceptionInstance_Check(exc) == 0 {
        return set_error(ffi::PyExc_TypeError, c"exc must be an exception instance or None");
    }
    let transfer = Transfer {
        value: if value.is_null() { ptr::null_mut() } else { ffi::Py_NewRef(value) },
        exc: if exc.is_null() || exc == ffi::Py_None() { ptr::null_mut() } else { ffi::Py_NewRef(exc) },
    };
    let current = CORE.with(|c| c.current.get());
    if target == current {
        return deliver(transfer);
    }
    crate::watchdog::on_switch();
    let target = if target.is_null() { target } else { ffi::Py_NewRef(target) };
    let ts = state::current_thread_state();
    if current.is_null() {
        switch_from_main(ts, target, transfer)
    } else {
        let fiber = inner(current);
        if fiber.yielder.is_null() {
            ffi::Py_XDECREF(target);
            ffi::Py_XDECREF(transfer.value);
            ffi::Py_XDECREF(transfer.exc);
            return set_error(ffi::PyExc_RuntimeError, c"fiber is not running on its own stack");
        }
        let exposed = match site {
            Some(site) => site.expose((*ts).current_frame),
            None => ptr::null_mut(),
        };
        save_state(fiber, ts);
        let yielder = &*fiber.yielder;
        let back = suspend_recording_sp(yielder, Request { target, transfer }, &raw mut fiber.suspended_sp);
        crate::frames::hide(exposed);
        deliver(back)
    }
}

// ----- The Python type -----

unsafe extern "C" fn fiber_new(
    subtype: *mut ffi::PyTypeObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !kwargs.is_null() && ffi::PyDict_Size(kwargs) != 0 {
            return set_error(ffi::PyExc_TypeError, c"Fiber() takes no keyword arguments");
        }
        let nargs = ffi::PyTuple_Size(args);
        if !(1..=3).contains(&nargs) {
            return set_error(
                ffi::PyExc_TypeError,
                c"Fiber(func, context=None, arg=None) takes 1 to 3 arguments",
            );
        }
        let func = ffi::PyTuple_GetItem(args, 0);
        if ffi::PyCallable_Check(func) == 0 {
            return set_error(ffi::PyExc_TypeError, c"Fiber() needs a callable");
        }
        let context = if nargs >= 2 { ffi::PyTuple_GetItem(args, 1) } else { ffi::Py_None() };
        let arg = if nargs == 3 { ffi::PyTuple_GetItem(args, 2) } else { ptr::null_mut() };
        if context != ffi::Py_None() && ffi::PyContext_CheckExact(context) == 0 {
            return set_error(ffi::PyExc_TypeError, c"context must be a contextvars.Context or None");
        }
        alloc_fiber(subtype, func, context, arg, false)
    })
}

/// A new fiber for a tasklet: when it first runs, it runs `sched::tasklet_body` for the
/// tasklet that is then current (the scheduler makes a tasklet current before switching to
/// its fiber), in that tasklet's context. It holds no reference to the tasklet, so the pair
/// makes no reference cycle, and it holds no Python object at all, so it is not tracked by
/// the cyclic garbage collector: a tasklet costs the collector one object, not two. NULL with
/// an exception set on failure.
///
/// # Safety
/// GIL held; the Fiber type exists (the module is initialised).
pub unsafe fn new_tasklet_fiber() -> *mut ffi::PyObject {
    let fiber = alloc_fiber(FIBER_TYPE, ptr::null_mut(), ffi::Py_None(), ptr::null_mut(), true);
    if !fiber.is_null() {
        // SAFETY (CPython 3.13): an untracked object of a GC type is allowed (as CPython does
        // for tuples of atomic values); `fiber_dealloc`'s untrack checks for tracking first.
        ffi::PyObject_GC_UnTrack(fiber.cast());
    }
    fiber
}

unsafe fn alloc_fiber(
    subtype: *mut ffi::PyTypeObject,
    func: *mut ffi::PyObject,
    context: *mut ffi::PyObject,
    arg: *mut ffi::PyObject,
    for_tasklet: bool,
) -> *mut ffi::PyObject {
    let stacks = match ThreadStacks::for_current_thread() {
        Ok(stacks) => stacks,
        Err(error) => {
            let message =
                std::ffi::CString::new(format!("cannot map this thread's tasklet stacks ({error})"))
                    .unwrap_or_default();
            ffi::PyErr_SetString(ffi::PyExc_MemoryError, message.as_ptr());
            return ptr::null_mut();
        }
    };
    let alloc = (*subtype).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
    let object = alloc(subtype, 0);
    if object.is_null() {
        return object;
    }
    // In a pool block rather than a Box: it is written when the fiber is created, and the
    // pool's pages are faulted in ahead (see `pool`). The references are taken once the block
    // exists, so that a failed allocation leaks none.
    let inner = crate::pool::boxed(FiberInner {
        func: ptr::null_mut(),
        arg: ptr::null_mut(),
        context: ptr::null_mut(),
        for_tasklet,
        coroutine: None,
        yielder: ptr::null(),
        saved: None,
        stacks,
        stack_index: 0,
        suspended_sp: 0,
        saved_stack: None,
        unlinked_frames: Vec::new(),
        thread_id: thread_ident(),
        started: false,
        dead: false,
        stack_refs: [ptr::null_mut(); StackRef::COUNT],
    });
    let Some(inner) = inner else {
        // The object's `inner` is still NULL, which its deallocation expects.
        ffi::Py_DECREF(object);
        return set_error(ffi::PyExc_MemoryError, c"cannot allocate a fiber");
    };
    (*inner).func = ffi::Py_XNewRef(func);
    (*inner).arg = ffi::Py_XNewRef(arg);
    if context != ffi::Py_None() {
        (*inner).context = ffi::Py_NewRef(context);
    }
    (*object.cast::<FiberObject>()).inner = inner;
    FIBERS_ALIVE.fetch_add(1, Ordering::Relaxed);
    object
}

/// Whether `object` is a fiber that has started and not finished (its frames are live).
///
/// # Safety
/// GIL held; `object` is a live object.
pub unsafe fn is_running_fiber(object: *mut ffi::PyObject) -> bool {
    fiber_inner(object).is_some_and(|raw| (*raw).started && !(*raw).dead)
}

unsafe extern "C" fn fiber_dealloc(object: *mut ffi::PyObject) {
    let tp = ffi::Py_TYPE(object);
    ffi::PyObject_GC_UnTrack(object.cast());
    let raw = (*object.cast::<FiberObject>()).inner;
    if !raw.is_null() {
        FIBERS_ALIVE.fetch_sub(1, Ordering::Relaxed);
        let mut fiber = crate::pool::unboxed(raw);
        ffi::Py_CLEAR(&mut fiber.func);
        ffi::Py_CLEAR(&mut fiber.arg);
        ffi::Py_CLEAR(&mut fiber.context);
        if fiber.started && !fiber.dead {
            // Suspended with frames on its stack: dropping the coroutine would unwind through
            // CPython's frames (an abort), and its frames cannot be cleared from here. The
            // stackless module kills tasklets before letting go of them; reaching this leaks
            // the fiber's frames (its saved stack bytes are freed), never a crash.
            FIBERS_LEAKED.fetch_add(1, Ordering::Relaxed);
            std::mem::forget(fiber.coroutine.take());
            // A SavedThreadState has no Drop: letting go of it leaks what it owns, as wanted.
            let _leaked = fiber.saved.take();
            fiber.stacks.vacate(fiber.stack_index, raw.cast());
        }
        drop(fiber);
    }
    if let Some(free) = (*tp).tp_free {
        free(object.cast());
    }
    ffi::Py_DECREF(tp.cast());
}

unsafe extern "C" fn fiber_traverse(
    object: *mut ffi::PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    let raw = (*object.cast::<FiberObject>()).inner;
    if raw.is_null() {
        return 0;
    }
    for member in [(*raw).func, (*raw).arg, (*raw).context] {
        if !member.is_null() {
            let rc = visit(member, arg);
            if rc != 0 {
                return rc;
            }
        }
    }
    if !(*raw).for_tasklet {
        let rc = traverse_suspended(raw, visit, arg);
        if rc != 0 {
            return rc;
        }
    }
    // Heap types' instances visit their type.
    visit(ffi::Py_TYPE(object).cast(), arg)
}

unsafe extern "C" fn fiber_clear(object: *mut ffi::PyObject) -> c_int {
    let raw = (*object.cast::<FiberObject>()).inner;
    if !raw.is_null() {
        ffi::Py_CLEAR(&mut (*raw).func);
        ffi::Py_CLEAR(&mut (*raw).arg);
        ffi::Py_CLEAR(&mut (*raw).context);
    }
    0
}

unsafe extern "C" fn fiber_get_started(object: *mut ffi::PyObject, _: *mut c_void) -> *mut ffi::PyObject {
    ffi::PyBool_FromLong(inner(object).started as _)
}

unsafe extern "C" fn fiber_get_dead(object: *mut ffi::PyObject, _: *mut c_void) -> *mut ffi::PyObject {
    ffi::PyBool_FromLong(inner(object).dead as _)
}

unsafe extern "C" fn fiber_get_thread_id(object: *mut ffi::PyObject, _: *mut c_void) -> *mut ffi::PyObject {
    ffi::PyLong_FromUnsignedLongLong(inner(object).thread_id)
}

static mut GETSETS: [ffi::PyGetSetDef; 4] = [
    ffi::PyGetSetDef {
        name: c"started".as_ptr(),
        get: Some(fiber_get_started),
        set: None,
        doc: c"Whether the fiber has been switched to at least once.".as_ptr(),
        closure: ptr::null_mut(),
    },
    ffi::PyGetSetDef {
        name: c"dead".as_ptr(),
        get: Some(fiber_get_dead),
        set: None,
        doc: c"Whether the fiber's function has returned or raised.".as_ptr(),
        closure: ptr::null_mut(),
    },
    ffi::PyGetSetDef {
        name: c"thread_id".as_ptr(),
        get: Some(fiber_get_thread_id),
        set: None,
        doc: c"Identifier of the OS thread the fiber belongs to.".as_ptr(),
        closure: ptr::null_mut(),
    },
    ffi::PyGetSetDef { name: ptr::null(), get: None, set: None, doc: ptr::null(), closure: ptr::null_mut() },
];

/// Creates the Fiber type (a heap type) and remembers it.
///
/// # Safety
/// GIL held.
pub unsafe fn create_fiber_type(module: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let mut slots = [
        ffi::PyType_Slot { slot: ffi::Py_tp_new, pfunc: fiber_new as *mut c_void },
        ffi::PyType_Slot { slot: ffi::Py_tp_dealloc, pfunc: fiber_dealloc as *mut c_void },
        ffi::PyType_Slot { slot: ffi::Py_tp_traverse, pfunc: fiber_traverse as *mut c_void },
        ffi::PyType_Slot { slot: ffi::Py_tp_clear, pfunc: fiber_clear as *mut c_void },
        ffi::PyType_Slot { slot: ffi::Py_tp_getset, pfunc: (&raw mut GETSETS).cast() },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_doc,
            pfunc: c"Fiber(func, context=None, arg=None): func(value), or func(arg, value), run on its own C stack by switch().".as_ptr()
                as *mut c_void,
        },
        ffi::PyType_Slot { slot: 0, pfunc: ptr::null_mut() },
    ];
    let mut spec = ffi::PyType_Spec {
        name: c"_stackless_core.Fiber".as_ptr(),
        basicsize: std::mem::size_of::<FiberObject>() as c_int,
        itemsize: 0,
        flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_HAVE_GC) as _,
        slots: slots.as_mut_ptr(),
    };
    let tp = ffi::PyType_FromModuleAndSpec(module, &mut spec, ptr::null_mut());
    if !tp.is_null() {
        FIBER_TYPE = tp.cast();
    }
    tp
}

// ----- module functions -----

/// `switch(target, value=None, exc=None)`.
pub unsafe extern "C" fn py_switch(
    module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !(1..=3).contains(&nargs) {
            return set_error(
                ffi::PyExc_TypeError,
                c"switch(target, value=None, exc=None) takes 1 to 3 arguments",
            );
        }
        // The caller's frame (stackless.py's `_switch`) holds the suspended tasklet: seen by
        // the cyclic GC while it is suspended (`frames`).
        let site = CallSite {
            args,
            nargs,
            kwnames: ptr::null_mut(),
            self_obj: module,
            descriptor: ptr::null_mut(),
            function: py_switch as *mut c_void,
        };
        let arg = |i: isize| if i < nargs { *args.offset(i) } else { ptr::null_mut() };
        switch_to(arg(0), arg(1), arg(2), Some(&site))
    })
}

/// `current()`: the running fiber, or None when the thread's main context runs.
pub unsafe extern "C" fn py_current(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let current = CORE.with(|c| c.current.get());
    ffi::Py_NewRef(if current.is_null() { ffi::Py_None() } else { current })
}

/// `current_context()`: the thread's current `contextvars.Context` object itself (not a
/// copy), created and installed if the thread has none yet.
pub unsafe extern "C" fn py_current_context(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| current_context())
}

/// The thread's current `contextvars.Context` (a new reference), created and installed if the
/// thread has none yet; NULL with an exception set if that fails.
///
/// # Safety
/// GIL held.
pub unsafe fn current_context() -> *mut ffi::PyObject {
    let ts = state::current_thread_state();
    if (*ts).context.is_null() {
        let context = ffi::PyContext_New();
        if context.is_null() {
            return context;
        }
        (*ts).context = context;
        (*ts).context_ver = (*ts).context_ver.wrapping_add(1);
    }
    ffi::Py_NewRef((*ts).context)
}

/// `set_context(target, context)`: make `context` the context of `target` (a Fiber, or None
/// for the thread's main context): installed now if `target` runs, else used when it resumes.
pub unsafe extern "C" fn py_set_context(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if nargs != 2 {
            return set_error(ffi::PyExc_TypeError, c"set_context(target, context) takes 2 arguments");
        }
        let (target, context) = (*args, *args.offset(1));
        if ffi::PyContext_CheckExact(context) == 0 {
            return set_error(ffi::PyExc_TypeError, c"context must be a contextvars.Context");
        }
        let target = if target == ffi::Py_None() { ptr::null_mut() } else { target };
        if !target.is_null() && ffi::Py_IS_TYPE(target, FIBER_TYPE) == 0 {
            return set_error(ffi::PyExc_TypeError, c"target must be a Fiber or None");
        }
        let current = CORE.with(|c| c.current.get());
        if target == current {
            let ts = state::current_thread_state();
            let old = std::mem::replace(&mut (*ts).context, ffi::Py_NewRef(context));
            (*ts).context_ver = (*ts).context_ver.wrapping_add(1);
            ffi::Py_XDECREF(old);
        } else if target.is_null() {
            match CORE.with(|c| {
                c.main_saved
                    .borrow_mut()
                    .as_mut()
                    .map(|s| std::mem::replace(&mut s.context, ffi::Py_NewRef(context)))
            }) {
                Some(old) => ffi::Py_XDECREF(old),
                None => return set_error(ffi::PyExc_RuntimeError, c"the main context is not suspended"),
            }
        } else {
            let fiber = inner(target);
            if fiber.dead {
                return set_error(ffi::PyExc_RuntimeError, c"cannot set the context of a finished fiber");
            }
            let slot = match fiber.saved.as_mut() {
                Some(saved) => &mut saved.context,
                None => &mut fiber.context,
            };
            let old = std::mem::replace(slot, ffi::Py_NewRef(context));
            ffi::Py_XDECREF(old);
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `arm_watchdog(ticks, delivery, restart_on_switch)`: see `watchdog::arm`. `delivery` is a
/// signal number (main thread) or the callable that turns the monitoring events on.
pub unsafe extern "C" fn py_arm_watchdog(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if nargs != 3 {
            return set_error(
                ffi::PyExc_TypeError,
                c"arm_watchdog(ticks, delivery, restart_on_switch) takes 3 arguments",
            );
        }
        let (ticks, delivery, restart) = (*args, *args.offset(1), *args.offset(2));
        let ticks = ffi::PyLong_AsUnsignedLongLong(ticks);
        let restart = ffi::PyObject_IsTrue(restart);
        if !ffi::PyErr_Occurred().is_null() || restart < 0 {
            return ptr::null_mut();
        }
        let (delivery, hook) = if ffi::PyLong_Check(delivery) != 0 {
            let signal = ffi::PyLong_AsLong(delivery);
            if !ffi::PyErr_Occurred().is_null() {
                return ptr::null_mut();
            }
            let Ok(signal) = i32::try_from(signal) else {
                return set_error(ffi::PyExc_ValueError, c"signal number out of range");
            };
            (crate::watchdog::Delivery::Signal(signal), ptr::null_mut())
        } else if ffi::PyCallable_Check(delivery) != 0 {
            (crate::watchdog::Delivery::MonitoringEvents, delivery)
        } else {
            return set_error(ffi::PyExc_TypeError, c"delivery must be a signal number or a callable");
        };
        match crate::watchdog::arm(ticks, delivery, restart != 0, hook) {
            Ok(()) => ffi::Py_NewRef(ffi::Py_None()),
            Err(message) => {
                let message = std::ffi::CString::new(message).unwrap_or_default();
                ffi::PyErr_SetString(ffi::PyExc_RuntimeError, message.as_ptr());
                ptr::null_mut()
            }
        }
    })
}

/// `disarm_watchdog()`: for the calling thread.
pub unsafe extern "C" fn py_disarm_watchdog(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| {
        crate::watchdog::disarm();
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `take_expired()`: whether the calling thread's time slice expired (clearing the mark).
pub unsafe extern "C" fn py_take_expired(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| ffi::PyBool_FromLong(crate::watchdog::take_expired() as _))
}

/// `any_expired()`: whether some thread's time slice expired and was not acted on yet.
pub unsafe extern "C" fn py_any_expired(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| ffi::PyBool_FromLong(crate::watchdog::any_expired() as _))
}

/// `entry_frames()`: how many times the running code was entered from C (see
/// `cpython_state::entry_frames`); a tasklet's nesting level is this minus its own entry.
pub unsafe extern "C" fn py_entry_frames(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| ffi::PyLong_FromSize_t(state::entry_frames(state::current_thread_state())))
}

/// `switch_from_monitoring()`: `switch(None)` (to the thread's main context) from inside a
/// `sys.monitoring` callback.
///
/// CPython 3.13 runs a callback with `tstate->tracing` raised and `what_event` set
/// (instrumentation.c, `call_one_instrument`) and fires no events while `tracing` is non-zero;
/// both are per-thread, not carried by a switch. So they are cleared while this tasklet is
/// suspended (the tasklets that run meanwhile are not inside the callback) and put back when
/// it resumes, before the callback returns.
pub unsafe extern "C" fn py_switch_from_monitoring(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| {
        let ts = state::current_thread_state();
        // SAFETY: `ts` is this thread's 3.13 thread state (layout in cpython_state.rs); the
        // same OS thread resumes this tasklet, so `ts` is still its thread state afterwards.
        let (tracing, what_event) = ((*ts).tracing, (*ts).what_event);
        (*ts).tracing = 0;
        (*ts).what_event = -1;
        let result = switch_to(ffi::Py_None(), ptr::null_mut(), ptr::null_mut(), None);
        (*ts).tracing = tracing;
        (*ts).what_event = what_event;
        result
    })
}

/// `stats()`: the engine's counters as a dict.
pub unsafe extern "C" fn py_stats(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let dict = ffi::PyDict_New();
    if dict.is_null() {
        return dict;
    }
    let counters = [
        (c"switches", SWITCHES.load(Ordering::Relaxed)),
        (c"fibers_started", FIBERS_STARTED.load(Ordering::Relaxed)),
        (c"fibers_alive", FIBERS_ALIVE.load(Ordering::Relaxed)),
        (c"fibers_leaked", FIBERS_LEAKED.load(Ordering::Relaxed)),
        (c"stack_evictions", stack::EVICTIONS.load(Ordering::Relaxed) as u64),
        (c"stack_bytes_copied", stack::BYTES_COPIED.load(Ordering::Relaxed) as u64),
    ];
    for (name, count) in counters {
        let value = ffi::PyLong_FromUnsignedLongLong(count);
        if value.is_null() || ffi::PyDict_SetItemString(dict, name.as_ptr(), value) < 0 {
            ffi::Py_XDECREF(value);
            ffi::Py_DECREF(dict);
            return ptr::null_mut();
        }
        ffi::Py_DECREF(value);
    }
    dict
}
