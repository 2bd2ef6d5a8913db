//! The `run(timeout)` watchdog: interrupts a tasklet that has used `timeout` ticks of CPU time
//! without switching (one tick = one microsecond of the thread's CPU time; Stackless counts
//! interpreter ticks instead). CPU time, not wall time, so that the OS descheduling the process
//! never counts against a tasklet.
//!
//! A background thread watches the CPU clock of the thread that runs the tasklets. When the
//! slice is used up it calls `PyErr_SetInterruptEx(signal)`, which trips the Python-level
//! handler of `signal` (installed by the stackless module) exactly as a real signal would, but
//! without sending one: the handler runs between bytecodes on the main thread and switches the
//! tasklet out. Every tasklet switch restarts the slice, unless the whole run is timed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Whether a watchdog is armed (checked on every switch, so it must be cheap).
static ARMED: AtomicBool = AtomicBool::new(false);
/// Whether a switch restarts the slice (`run(timeout)`) or not (`totaltimeout=True`).
static RESTART_ON_SWITCH: AtomicBool = AtomicBool::new(true);
/// CPU time (ns) of the watched thread when the current slice started.
static SLICE_START_NS: AtomicU64 = AtomicU64::new(0);

struct Watch {
    clock: libc::clockid_t,
    budget_ns: u64,
    signal: i32,
    generation: u64,
}

struct Shared {
    watch: Mutex<Option<Watch>>,
    changed: Condvar,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        std::thread::Builder::new()
            .name("stackless-watchdog".into())
            .spawn(watch_loop)
            .expect("spawning the stackless watchdog thread");
        Shared { watch: Mutex::new(None), changed: Condvar::new() }
    })
}

fn cpu_time_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: clock_gettime fills the timespec; a failed call leaves it zeroed.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
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

fn watch_loop() {
    let shared = shared();
    let Ok(mut guard) = shared.watch.lock() else { return };
    loop {
        let Some(watch) = guard.as_ref() else {
            guard = match shared.changed.wait(guard) {
                Ok(g) => g,
                Err(_) => return,
            };
            continue;
        };
        let used = cpu_time_ns(watch.clock).saturating_sub(SLICE_START_NS.load(Ordering::Relaxed));
        if used >= watch.budget_ns {
            let signal = watch.signal;
            *guard = None;
            ARMED.store(false, Ordering::SeqCst);
            // SAFETY: documented as callable from any thread, without the GIL.
            unsafe { pyo3_ffi::PyErr_SetInterruptEx(signal) };
            continue;
        }
        // CPU time cannot run faster than wall time: sleeping the rest of the budget never
        // oversleeps the deadline (and a switch may push it further, which the loop re-reads).
        let rest = Duration::from_nanos((watch.budget_ns - used).max(20_000));
        let generation = watch.generation;
        guard = match shared
            .changed
            .wait_timeout_while(guard, rest, |w| w.as_ref().is_some_and(|w| w.generation == generation))
        {
            Ok((g, _)) => g,
            Err(_) => return,
        };
    }
}

/// Arms the watchdog for the calling thread: `budget_us` ticks per slice, delivered as
/// `signal`; with `restart_on_switch` false the budget covers the whole run.
pub fn arm(budget_us: u64, signal: i32, restart_on_switch: bool) -> Result<(), String> {
    let clock = current_thread_clock()?;
    let shared = shared();
    let mut guard = shared.watch.lock().map_err(|_| "watchdog lock poisoned".to_string())?;
    let generation = guard.as_ref().map(|w| w.generation + 1).unwrap_or(0);
    SLICE_START_NS.store(cpu_time_ns(clock), Ordering::Relaxed);
    RESTART_ON_SWITCH.store(restart_on_switch, Ordering::Relaxed);
    *guard = Some(Watch { clock, budget_ns: budget_us.saturating_mul(1000), signal, generation });
    ARMED.store(true, Ordering::SeqCst);
    shared.changed.notify_all();
    Ok(())
}

/// Disarms the watchdog.
pub fn disarm() {
    if !ARMED.swap(false, Ordering::SeqCst) {
        return;
    }
    let shared = shared();
    if let Ok(mut guard) = shared.watch.lock() {
        *guard = None;
        shared.changed.notify_all();
    }
}

/// Called on every tasklet switch: a new slice starts.
#[inline]
pub fn on_switch() {
    if ARMED.load(Ordering::Relaxed) && RESTART_ON_SWITCH.load(Ordering::Relaxed) {
        if let Ok(clock) = current_thread_clock() {
            SLICE_START_NS.store(cpu_time_ns(clock), Ordering::Relaxed);
        }
    }
}
