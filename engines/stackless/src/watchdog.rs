//! The `run(timeout)` watchdog: interrupts a tasklet that has used `timeout` ticks of CPU time
//! without switching (one tick = one microsecond of the thread's CPU time; Stackless counts
//! interpreter ticks instead). CPU time, not wall time, so that the OS descheduling the process
//! never counts against a tasklet.
//!
//! Every thread that runs `run(timeout)` arms a [`Slice`]; one background thread watches the CPU
//! clocks of all of them. When a slice is used up, the watchdog gets the running tasklet's
//! thread to stop between bytecodes, in one of two ways (neither sends a real signal):
//!
//! * main thread ([`Delivery::Signal`]): `PyErr_SetInterruptEx(signal)` trips the Python-level
//!   handler of `signal` (installed by the stackless module), which CPython runs between
//!   bytecodes on the main thread only; the handler switches the tasklet out.
//! * any other thread ([`Delivery::MonitoringEvents`]): Python runs no signal handler there, so
//!   the slice is marked expired and a per-interpreter pending call (run between bytecodes by
//!   whichever thread gets there first) calls the stackless module's hook, which turns on
//!   `sys.monitoring` JUMP and PY_START events. Every loop iteration and call fires one, so the
//!   expired thread's next one finds its slice expired (`take_expired`) and switches the tasklet
//!   out from the callback; the events are turned off again as soon as no slice is expired. The
//!   events cost nothing until a slice expires.
//!
//! Every tasklet switch restarts the thread's slice, unless the whole run is timed.

use core::ffi::{c_int, c_void};
use std::cell::RefCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use pyo3_ffi as ffi;

/// How an expired slice reaches its thread.
pub enum Delivery {
    /// Trip this signal number's Python handler (main thread only).
    Signal(i32),
    /// Mark the slice expired and have the monitoring-events hook called (any thread).
    MonitoringEvents,
}

/// One thread's `run(timeout)` time slice.
struct Slice {
    clock: libc::clockid_t,
    budget_ns: u64,
    restart_on_switch: bool,
    delivery: Delivery,
    /// CPU time (ns) of the thread when the current slice started.
    start_ns: AtomicU64,
    /// Expired, and the thread's tasklet not yet switched out (MonitoringEvents only).
    expired: AtomicBool,
}

impl Slice {
    /// Clears the expired mark; true if it was set (the caller now owns the interruption).
    fn take_expired(&self) -> bool {
        let was = self.expired.swap(false, Ordering::SeqCst);
        if was {
            EXPIRED.fetch_sub(1, Ordering::SeqCst);
        }
        was
    }
}

/// Threads holding a slice (armed or expired): checked on every switch, so it must be cheap.
static WATCHED: AtomicUsize = AtomicUsize::new(0);
/// Slices expired but not yet taken: the monitoring events stay on while this is non-zero.
static EXPIRED: AtomicUsize = AtomicUsize::new(0);
/// The stackless module's "turn the monitoring events on" hook (a strong reference).
static EVENTS_HOOK: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());
/// The interpreter whose pending calls carry [`Delivery::MonitoringEvents`].
static INTERPRETER: AtomicPtr<ffi::PyInterpreterState> = AtomicPtr::new(ptr::null_mut());

thread_local! {
    static THREAD_SLICE: RefCell<Option<Arc<Slice>>> = const { RefCell::new(None) };
}

extern "C" {
    // SAFETY (of every call): CPython 3.13 exports this for `_testinternalcapi`
    // (Include/internal/pycore_ceval.h). Callable from any thread without the GIL, like
    // `Py_AddPendingCall` (which targets the main thread only); flags 0 means any thread of
    // `interp` may run `func`, between bytecodes, with the GIL held. Returns 0, or -1 when the
    // queue is full.
    fn _PyEval_AddPendingCall(
        interp: *mut ffi::PyInterpreterState,
        func: extern "C" fn(*mut c_void) -> c_int,
        arg: *mut c_void,
        flags: c_int,
    ) -> c_int;
}

struct Watches {
    slices: Vec<Arc<Slice>>,
    /// Bumped on every change, so the watchdog re-reads the list instead of sleeping on.
    version: u64,
}

struct Shared {
    watches: Mutex<Watches>,
    changed: Condvar,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        std::thread::Builder::new()
            .name("stackless-watchdog".into())
            .spawn(watch_loop)
            .expect("spawning the stackless watchdog thread");
        Shared { watches: Mutex::new(Watches { slices: Vec::new(), version: 0 }), changed: Condvar::new() }
    })
}

/// CPU time of `clock` in ns; None once the clock is gone (its thread ended).
fn cpu_time_ns(clock: libc::clockid_t) -> Option<u64> {
    // SAFETY: clock_gettime fills the timespec or fails without touching it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some((ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64))
}

fn current_thread_clock() -> Result<libc::clockid_t, String> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: pthread_self() is always valid; the clock id is written on success.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    if rc != 0 {
        return Err(format!("no CPU-time clock for this thread (error {rc})"));
    }
    Ok(clock)
}

/// Pending call: turn the monitoring events on (GIL held, between bytecodes, any thread).
extern "C" fn enable_events(_arg: *mut c_void) -> c_int {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: run by CPython's pending-call machinery with the GIL held; the hook is a
        // strong reference that is never released while it is installed.
        unsafe {
            let hook = EVENTS_HOOK.load(Ordering::Acquire);
            // (No Py_IsFinalizing() check: that symbol is new in 3.13, and a 3.12 host must
            // still be able to load this library to refuse it by name. A hook that fails at
            // exit is reported as unraisable.)
            if hook.is_null() || EXPIRED.load(Ordering::SeqCst) == 0 {
                return;
            }
            let result = ffi::PyObject_CallNoArgs(hook);
            if result.is_null() {
                ffi::PyErr_WriteUnraisable(hook);
            } else {
                ffi::Py_DECREF(result);
            }
        }
    });
    0
}

/// Delivers an expired slice. Returns whether the slice is done with (a signal was sent);
/// a MonitoringEvents slice stays watched, marked expired, so that a switch made before the
/// interruption lands (which clears the mark) starts it over.
fn deliver(slice: &Slice) -> bool {
    match slice.delivery {
        Delivery::Signal(signal) => {
            // SAFETY: documented as callable from any thread, without the GIL.
            unsafe { ffi::PyErr_SetInterruptEx(signal) };
            true
        }
        Delivery::MonitoringEvents => {
            if !slice.expired.swap(true, Ordering::SeqCst) {
                EXPIRED.fetch_add(1, Ordering::SeqCst);
            }
            // SAFETY: see the declaration; the interpreter is the one that armed the slice.
            let queued = unsafe {
                _PyEval_AddPendingCall(INTERPRETER.load(Ordering::Acquire), enable_events, ptr::null_mut(), 0)
            };
            if queued != 0 {
                slice.take_expired(); // queue full: expire it again on the next round
            }
            false
        }
    }
}

fn watch_loop() {
    let shared = shared();
    let Ok(mut guard) = shared.watches.lock() else { return };
    loop {
        if guard.slices.is_empty() {
            guard = match shared.changed.wait(guard) {
                Ok(g) => g,
                Err(_) => return,
            };
            continue;
        }
        let mut sleep = Duration::MAX;
        let mut i = 0;
        while i < guard.slices.len() {
            let slice = &guard.slices[i];
            let Some(now) = cpu_time_ns(slice.clock) else {
                guard.slices.swap_remove(i); // its thread ended without disarming
                continue;
            };
            let used = now.saturating_sub(slice.start_ns.load(Ordering::Relaxed));
            if used < slice.budget_ns {
                // CPU time cannot run faster than wall time: sleeping the rest of the budget
                // never oversleeps the deadline (and a switch may push it further).
                sleep = sleep.min(Duration::from_nanos((slice.budget_ns - used).max(20_000)));
            } else if slice.expired.load(Ordering::SeqCst) {
                sleep = sleep.min(Duration::from_millis(1)); // delivered, not yet taken
            } else if deliver(slice) {
                guard.slices.swap_remove(i);
                continue;
            } else {
                sleep = sleep.min(Duration::from_millis(1));
            }
            i += 1;
        }
        if guard.slices.is_empty() {
            continue;
        }
        let version = guard.version;
        guard = match shared.changed.wait_timeout_while(guard, sleep, |w| w.version == version) {
            Ok((g, _)) => g,
            Err(_) => return,
        };
    }
}

/// Arms the watchdog for the calling thread (replacing a slice it already has): `budget_us`
/// ticks per slice, delivered as `delivery`; with `restart_on_switch` false the budget covers
/// the whole run. For [`Delivery::MonitoringEvents`], `events_hook` (a callable, borrowed) is
/// what turns the events on; the GIL must be held.
pub fn arm(
    budget_us: u64,
    delivery: Delivery,
    restart_on_switch: bool,
    events_hook: *mut ffi::PyObject,
) -> Result<(), String> {
    let clock = current_thread_clock()?;
    let start_ns = cpu_time_ns(clock).ok_or("this thread's CPU-time clock cannot be read")?;
    if matches!(delivery, Delivery::MonitoringEvents) {
        // SAFETY: GIL held (caller's contract); the previous hook's reference is released
        // only after the new one is installed, and the pending call reads it under the GIL.
        unsafe {
            INTERPRETER.store(ffi::PyInterpreterState_Get(), Ordering::Release);
            let old = EVENTS_HOOK.swap(ffi::Py_NewRef(events_hook), Ordering::AcqRel);
            ffi::Py_XDECREF(old);
        }
    }
    disarm();
    let slice = Arc::new(Slice {
        clock,
        budget_ns: budget_us.saturating_mul(1000),
        restart_on_switch,
        delivery,
        start_ns: AtomicU64::new(start_ns),
        expired: AtomicBool::new(false),
    });
    let shared = shared();
    let mut guard = shared.watches.lock().map_err(|_| "watchdog lock poisoned".to_string())?;
    THREAD_SLICE.with(|s| *s.borrow_mut() = Some(slice.clone()));
    WATCHED.fetch_add(1, Ordering::SeqCst);
    guard.slices.push(slice);
    guard.version += 1;
    shared.changed.notify_all();
    Ok(())
}

/// Disarms the calling thread's watchdog (if it has one).
pub fn disarm() {
    let Some(slice) = THREAD_SLICE.with(|s| s.borrow_mut().take()) else { return };
    slice.take_expired();
    WATCHED.fetch_sub(1, Ordering::SeqCst);
    let shared = shared();
    if let Ok(mut guard) = shared.watches.lock() {
        guard.slices.retain(|s| !Arc::ptr_eq(s, &slice));
        guard.version += 1;
        shared.changed.notify_all();
    }
}

/// Whether the calling thread's slice has expired; clears the mark (the caller interrupts).
pub fn take_expired() -> bool {
    THREAD_SLICE.with(|s| s.borrow().as_ref().is_some_and(|s| s.take_expired()))
}

/// Whether any thread's slice is expired and not yet taken.
pub fn any_expired() -> bool {
    EXPIRED.load(Ordering::SeqCst) != 0
}

/// Called on every tasklet switch: a new slice starts (and an expiry not yet acted on no
/// longer applies to the tasklet now running).
#[inline]
pub fn on_switch() {
    if WATCHED.load(Ordering::Relaxed) == 0 {
        return;
    }
    THREAD_SLICE.with(|s| {
        if let Some(slice) = s.borrow().as_ref() {
            if slice.restart_on_switch {
                if let Some(now) = cpu_time_ns(slice.clock) {
                    slice.start_ns.store(now, Ordering::Relaxed);
                }
                slice.take_expired();
            }
        }
    });
}
