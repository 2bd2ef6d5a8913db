//! `_parallel_core`: the Rust side of the `parallel` module, importable in the main interpreter
//! and in every worker. The main side starts pools and queues pickled tasks; each worker is an
//! OS thread that owns a sub-interpreter with its own GIL and runs `parallel._worker_loop`.
//!
//! Threading rules kept here: a blocking wait always releases the caller's GIL; interpreter
//! creation and each worker's start-up imports are serialized by one process-wide lock
//! (concurrent first imports of some extensions crash CPython 3.13.0); a worker ends its
//! interpreter on its own thread before the pool's shutdown returns.

use crate::guard;
use crate::pool::{Batch, Outcome, OutcomeKind, Pool, TaskWait, WorkerInfo};
use crate::transfer;
use pyo3_ffi as ffi;
use std::ffi::CStr;
use std::ptr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Interpreter creation and worker start-up (main-script import) happen one at a time.
static STARTUP_LOCK: Mutex<()> = Mutex::new(());

/// C stack of a worker thread: as large as a main thread's usual limit, so deep recursion
/// behaves as in the main interpreter (pages are committed only when touched).
const WORKER_STACK_SIZE: usize = 8 * 1024 * 1024;

/// How often a waiting caller wakes up to let Python handle signals (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// The longest single wait a caller may ask for.
const MAX_WAIT: Duration = Duration::from_secs(3600);

pub(crate) unsafe fn set_error(kind: *mut ffi::PyObject, message: &str) -> *mut ffi::PyObject {
    let text = std::ffi::CString::new(message.replace('\0', " ")).unwrap_or_default();
    ffi::PyErr_SetString(kind, text.as_ptr());
    ptr::null_mut()
}

/// Runs a Python-facing function body, turning a panic into a SystemError.
pub(crate) fn guarded(body: impl FnOnce() -> *mut ffi::PyObject) -> *mut ffi::PyObject {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|_| {
        // SAFETY: called from a CPython entry point, GIL held.
        unsafe { set_error(ffi::PyExc_SystemError, "internal error in the parallel engine (panic)") }
    })
}

pub(crate) unsafe fn arg_count(nargs: ffi::Py_ssize_t, expected: ffi::Py_ssize_t, name: &str) -> bool {
    if nargs != expected {
        set_error(ffi::PyExc_TypeError, &format!("{name}() takes {expected} arguments ({nargs} given)"));
        return false;
    }
    true
}

pub(crate) unsafe fn arg_u64(object: *mut ffi::PyObject) -> Option<u64> {
    let value = ffi::PyLong_AsUnsignedLongLong(object);
    if value == u64::MAX && !ffi::PyErr_Occurred().is_null() {
        return None;
    }
    Some(value)
}

pub(crate) unsafe fn arg_bytes(object: *mut ffi::PyObject) -> Option<Vec<u8>> {
    let mut data: *mut std::ffi::c_char = ptr::null_mut();
    let mut len: ffi::Py_ssize_t = 0;
    if ffi::PyBytes_AsStringAndSize(object, &mut data, &mut len) != 0 {
        return None;
    }
    Some(std::slice::from_raw_parts(data.cast::<u8>(), len as usize).to_vec())
}

/// A timeout in seconds (a float or int), clamped to `0..=max`; None with the error set.
unsafe fn arg_seconds(object: *mut ffi::PyObject, max: Duration) -> Option<Duration> {
    let seconds = ffi::PyFloat_AsDouble(object);
    if seconds == -1.0 && !ffi::PyErr_Occurred().is_null() {
        return None;
    }
    Some(Duration::from_secs_f64(seconds.clamp(0.0, max.as_secs_f64())))
}

pub(crate) unsafe fn bytes_object(data: &[u8]) -> *mut ffi::PyObject {
    ffi::PyBytes_FromStringAndSize(data.as_ptr().cast(), data.len() as ffi::Py_ssize_t)
}

unsafe fn pool_arg(object: *mut ffi::PyObject) -> Option<Arc<Pool>> {
    let id = arg_u64(object)?;
    let pool = Pool::get(id);
    if pool.is_none() {
        set_error(ffi::PyExc_ValueError, &format!("no parallel pool with id {id} (it was shut down)"));
    }
    pool
}

/// `(kind, data)` for an outcome.
unsafe fn outcome_tuple(outcome: &Outcome) -> *mut ffi::PyObject {
    let data = bytes_object(&outcome.data);
    if data.is_null() {
        return ptr::null_mut();
    }
    let tuple = ffi::PyTuple_New(2);
    if tuple.is_null() {
        ffi::Py_DECREF(data);
        return ptr::null_mut();
    }
    ffi::PyTuple_SET_ITEM(tuple, 0, ffi::PyLong_FromLong(outcome.kind as std::ffi::c_long));
    ffi::PyTuple_SET_ITEM(tuple, 1, data);
    tuple
}

/// Runs `wait` with the GIL released.
pub(crate) unsafe fn without_gil<T>(wait: impl FnOnce() -> T) -> T {
    let saved = ffi::PyEval_SaveThread();
    let result = wait();
    ffi::PyEval_RestoreThread(saved);
    result
}

/// `pool_start(workers, init_payload) -> pool id`
pub unsafe extern "C" fn py_pool_start(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "pool_start") {
            return ptr::null_mut();
        }
        let Some(workers) = arg_u64(*args) else { return ptr::null_mut() };
        let Some(init_payload) = arg_bytes(*args.add(1)) else { return ptr::null_mut() };
        if workers == 0 || workers > 1024 {
            return set_error(ffi::PyExc_ValueError, "a pool needs between 1 and 1024 workers");
        }
        let pool = Pool::create(workers as usize, init_payload);
        for index in 0..workers as usize {
            // A worker of a pool that stopped, if one is parked; else a new one.
            if let Some(parked) = crate::pool::take_parked() {
                parked.assign(crate::pool::Assignment::Serve(pool.clone(), index));
                continue;
            }
            let worker_pool = pool.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("parallel-worker-{index}"))
                .stack_size(WORKER_STACK_SIZE)
                .spawn(move || worker_thread(worker_pool, index));
            match spawned {
                Ok(handle) => crate::pool::add_worker_thread(handle),
                Err(error) => pool.worker_gone(index, Some(format!("cannot start its thread: {error}"))),
            }
        }
        ffi::PyLong_FromUnsignedLongLong(pool.id)
    })
}

/// `pool_submit(pool, payload) -> task id`; the outcome arrives through `pool_next_completion`.
pub unsafe extern "C" fn py_pool_submit(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "pool_submit") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        let Some(payload) = arg_bytes(*args.add(1)) else { return ptr::null_mut() };
        match pool.submit(payload) {
            Ok(id) => ffi::PyLong_FromUnsignedLongLong(id),
            Err(message) => set_error(ffi::PyExc_RuntimeError, &message),
        }
    })
}

pub(crate) unsafe fn batch_arg(object: *mut ffi::PyObject) -> Option<Arc<Batch>> {
    let id = arg_u64(object)?;
    let batch = crate::pool::batches().lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned();
    if batch.is_none() {
        set_error(ffi::PyExc_ValueError, &format!("no open batch with id {id}"));
    }
    batch
}

/// `batch_open(pool) -> batch id`: a group of tasks whose outcomes one caller collects.
pub unsafe extern "C" fn py_batch_open(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "batch_open") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        ffi::PyLong_FromUnsignedLongLong(pool.open_batch().id)
    })
}

/// `batch_add(pool, batch, payload) -> slot`: queues one task of the batch.
pub unsafe extern "C" fn py_batch_add(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 3, "batch_add") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        let Some(batch) = batch_arg(*args.add(1)) else { return ptr::null_mut() };
        let Some(payload) = arg_bytes(*args.add(2)) else { return ptr::null_mut() };
        match pool.add_to_batch(&batch, payload) {
            Ok(slot) => ffi::PyLong_FromSize_t(slot),
            Err(message) => set_error(ffi::PyExc_RuntimeError, &message),
        }
    })
}

/// `batch_next(batch[, results, chunksize]) -> (slot, kind, data, busy_ns)`: waits for the next
/// finished task of the batch
/// (the caller knows how many it queued). Signal handlers run while it waits; if one raises
/// (Ctrl-C), so does this.
pub unsafe extern "C" fn py_batch_next(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if nargs != 1 && nargs != 3 {
            return set_error(ffi::PyExc_TypeError, "batch_next() takes 1 or 3 arguments");
        }
        let Some(batch) = batch_arg(*args) else { return ptr::null_mut() };
        // (results, chunksize): a returned chunk in the transfer format goes straight into
        // `results[slot * chunksize:]`, with no bytes object made for it.
        let into = if nargs == 3 {
            let results = *args.add(1);
            let Some(chunksize) = arg_u64(*args.add(2)) else { return ptr::null_mut() };
            if ffi::PyList_CheckExact(results) == 0 {
                return set_error(ffi::PyExc_TypeError, "batch_next: results must be a list");
            }
            Some((results, chunksize as usize))
        } else {
            None
        };
        loop {
            if let Some((slot, outcome)) = without_gil(|| batch.next(SIGNAL_POLL)) {
                if let Some((results, chunksize)) = into {
                    if outcome.kind == OutcomeKind::Returned && transfer::is_transfer_format(&outcome.data) {
                        let Some(start) = slot.checked_mul(chunksize) else {
                            return set_error(ffi::PyExc_ValueError, "batch_next: chunk out of range");
                        };
                        if transfer::decode_into(&outcome.data, results, start).is_none() {
                            return ptr::null_mut();
                        }
                        return ffi::Py_BuildValue(
                            c"(niOK)".as_ptr(),
                            slot as ffi::Py_ssize_t,
                            outcome.kind as std::ffi::c_int,
                            ffi::Py_None(),
                            outcome.busy_ns,
                        );
                    }
                }
                let data = bytes_object(&outcome.data);
                if data.is_null() {
                    return ptr::null_mut();
                }
                return ffi::Py_BuildValue(
                    c"(niNK)".as_ptr(),
                    slot as ffi::Py_ssize_t,
                    outcome.kind as std::ffi::c_int,
                    data,
                    outcome.busy_ns,
                );
            }
            if ffi::PyErr_CheckSignals() != 0 {
                return ptr::null_mut();
            }
        }
    })
}

/// `batch_close(pool, batch)`: cancels the batch's tasks not started yet, forgets the rest.
pub unsafe extern "C" fn py_batch_close(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "batch_close") {
            return ptr::null_mut();
        }
        let Some(id) = arg_u64(*args) else { return ptr::null_mut() };
        let Some(batch) = batch_arg(*args.add(1)) else { return ptr::null_mut() };
        match Pool::get(id) {
            Some(pool) => pool.close_batch(&batch),
            None => {
                batch.close();
            }
        }
        let lent = without_gil(|| batch.take_back_lent());
        if lent != 0 {
            // SAFETY: batch_lend took this reference; no worker reads the list any more.
            ffi::Py_DECREF(lent as *mut ffi::PyObject);
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `pool_wait_task(pool, task, timeout) -> (kind, data) | None | False`: waits for one
/// submitted task and takes its outcome (None: not finished in time; False: its outcome went
/// to the completion queue already).
pub unsafe extern "C" fn py_pool_wait_task(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 3, "pool_wait_task") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        let Some(task) = arg_u64(*args.add(1)) else { return ptr::null_mut() };
        let Some(timeout) = arg_seconds(*args.add(2), SIGNAL_POLL) else { return ptr::null_mut() };
        match without_gil(|| pool.wait_task(task, timeout)) {
            TaskWait::Done(outcome) => outcome_tuple(&outcome),
            TaskWait::Pending => ffi::Py_NewRef(ffi::Py_None()),
            TaskWait::Gone => ffi::Py_NewRef(ffi::Py_False()),
        }
    })
}

/// `pool_next_completion(pool, timeout) -> (task id, kind, data) | None (timed out) | False
/// (the pool is shut down and drained)`.
pub unsafe extern "C" fn py_pool_next_completion(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "pool_next_completion") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        let Some(timeout) = arg_seconds(*args.add(1), MAX_WAIT) else { return ptr::null_mut() };
        match without_gil(|| pool.next_completion(timeout)) {
            Err(()) => ffi::Py_NewRef(ffi::Py_False()),
            Ok(None) => ffi::Py_NewRef(ffi::Py_None()),
            Ok(Some((task, outcome))) => {
                let pair = outcome_tuple(&outcome);
                if pair.is_null() {
                    return ptr::null_mut();
                }
                let result = ffi::PyTuple_New(3);
                if result.is_null() {
                    ffi::Py_DECREF(pair);
                    return ptr::null_mut();
                }
                ffi::PyTuple_SET_ITEM(result, 0, ffi::PyLong_FromUnsignedLongLong(task));
                ffi::PyTuple_SET_ITEM(result, 1, ffi::Py_NewRef(ffi::PyTuple_GET_ITEM(pair, 0)));
                ffi::PyTuple_SET_ITEM(result, 2, ffi::Py_NewRef(ffi::PyTuple_GET_ITEM(pair, 1)));
                ffi::Py_DECREF(pair);
                result
            }
        }
    })
}

/// `pool_cancel(pool, task id) -> bool`: true if the task had not started and never will.
pub unsafe extern "C" fn py_pool_cancel(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "pool_cancel") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        let Some(task) = arg_u64(*args.add(1)) else { return ptr::null_mut() };
        ffi::PyBool_FromLong((pool.cancel(&[task]) == 1) as std::ffi::c_long)
    })
}

/// `pool_shutdown(pool, wait, cancel_pending)`: no new tasks; queued ones still run unless
/// cancelled; with `wait`, returns once every worker ended its interpreter.
pub unsafe extern "C" fn py_pool_shutdown(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 3, "pool_shutdown") {
            return ptr::null_mut();
        }
        let Some(id) = arg_u64(*args) else { return ptr::null_mut() };
        let wait = ffi::PyObject_IsTrue(*args.add(1)) == 1;
        let cancel_pending = ffi::PyObject_IsTrue(*args.add(2)) == 1;
        if let Some(pool) = Pool::get(id) {
            without_gil(|| pool.shutdown(wait, cancel_pending));
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// Shuts every pool down, then ends every worker's interpreter (parked ones too) and joins
/// the worker threads: the engine's at-exit step (parallel.py shuts its own pools down from
/// atexit; this catches any left, and the interpreter must not finalize while workers live).
/// Needs the GIL (released while waiting).
pub fn shutdown_all_pools() {
    for pool in Pool::all() {
        // SAFETY: called from the host's at-exit hook with the main GIL held.
        unsafe { without_gil(|| pool.shutdown(true, true)) };
        pool.forget();
    }
    // SAFETY: as above.
    unsafe { without_gil(crate::pool::stop_parked) };
}

/// `before_fork()`: every worker interpreter ends (parked ones at once, the others after their
/// running task) and this returns once none exists; see `pool`'s fork section.
pub unsafe extern "C" fn py_before_fork(
    _module: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 0, "before_fork") {
            return ptr::null_mut();
        }
        without_gil(crate::pool::quiesce_for_fork);
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `after_fork_in_parent()`: workers may start new interpreters again (when their pool has work).
pub unsafe extern "C" fn py_after_fork_in_parent(
    _module: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 0, "after_fork_in_parent") {
            return ptr::null_mut();
        }
        crate::pool::resume_after_fork();
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `after_fork_in_child()`: the child has no workers; every pool is forgotten.
pub unsafe extern "C" fn py_after_fork_in_child(
    _module: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 0, "after_fork_in_child") {
            return ptr::null_mut();
        }
        crate::pool::forget_all_in_fork_child();
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `pool_wait_stopped(pool, timeout) -> bool`: after shutdown, whether every worker left.
pub unsafe extern "C" fn py_pool_wait_stopped(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "pool_wait_stopped") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        let Some(timeout) = arg_seconds(*args.add(1), MAX_WAIT) else { return ptr::null_mut() };
        ffi::PyBool_FromLong(without_gil(|| pool.wait_stopped(timeout)) as std::ffi::c_long)
    })
}

/// `pool_forget(pool)`: joins the workers (after shutdown) and forgets the pool's id.
pub unsafe extern "C" fn py_pool_forget(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "pool_forget") {
            return ptr::null_mut();
        }
        if let Some(pool) = arg_u64(*args).and_then(Pool::get) {
            without_gil(|| pool.forget());
        }
        if !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `pool_interrupt(pool)`: raises KeyboardInterrupt in the tasks running now, at their next
/// bytecode boundary (a task blocked in C, e.g. in time.sleep(), sees it when it returns).
pub unsafe extern "C" fn py_pool_interrupt(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "pool_interrupt") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        pool.interrupt_running(|interpreter, thread| {
            // SAFETY: the interpreter and the thread are alive while the pool is locked (see
            // the method). The pending call is queued before the signal, which makes a blocked
            // lock wait run it.
            unsafe {
                guard::interrupt_task_in(interpreter as *mut ffi::PyInterpreterState);
                guard::wake_blocked_thread(thread);
            }
        });
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `worker_sleep(seconds)`: what `time.sleep` is in workers (parallel.py checks the argument
/// as time.sleep does and passes a float): sleeps without the GIL, and a Ctrl-C in the main
/// interpreter (`pool_interrupt`) ends the sleep of a running task with KeyboardInterrupt.
pub unsafe extern "C" fn py_worker_sleep(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "worker_sleep") {
            return ptr::null_mut();
        }
        let seconds = ffi::PyFloat_AsDouble(*args);
        if seconds == -1.0 && !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        if seconds.is_nan() || seconds < 0.0 {
            return set_error(ffi::PyExc_ValueError, "sleep length must be non-negative");
        }
        match guard::sleep_in_task(seconds) {
            Ok(()) => ffi::Py_NewRef(ffi::Py_None()),
            Err(()) => ptr::null_mut(),
        }
    })
}

/// `pool_task_state(pool, task) -> "queued" | "running" | None`
pub unsafe extern "C" fn py_pool_task_state(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "pool_task_state") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        let Some(task) = arg_u64(*args.add(1)) else { return ptr::null_mut() };
        match pool.task_state(task) {
            Some("running") => ffi::PyUnicode_FromString(c"running".as_ptr()),
            Some(_) => ffi::PyUnicode_FromString(c"queued".as_ptr()),
            None => ffi::Py_NewRef(ffi::Py_None()),
        }
    })
}

/// Owner thread and depth of the process-wide import lock (see `py_import_lock_acquire`).
static IMPORT_LOCK: Mutex<(Option<std::thread::ThreadId>, usize)> = Mutex::new((None, 0));
static IMPORT_LOCK_FREED: std::sync::Condvar = std::sync::Condvar::new();

/// `import_lock_acquire()`: a process-wide reentrant lock that workers hold while an
/// extension module initializes (CPython 3.13.0 crashes when several sub-interpreters
/// initialize e.g. `_datetime` at once). Waits with the GIL released.
pub unsafe extern "C" fn py_import_lock_acquire(
    _module: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    _nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        let me = std::thread::current().id();
        let reentered = {
            let mut lock = IMPORT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            if lock.0 == Some(me) {
                lock.1 += 1;
                true
            } else {
                false
            }
        };
        if !reentered {
            without_gil(|| {
                let mut lock = IMPORT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                while lock.0.is_some() {
                    lock = IMPORT_LOCK_FREED.wait(lock).unwrap_or_else(|p| p.into_inner());
                }
                *lock = (Some(me), 1);
            });
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `import_lock_release()`
pub unsafe extern "C" fn py_import_lock_release(
    _module: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    _nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        let me = std::thread::current().id();
        let mut lock = IMPORT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if lock.0 != Some(me) {
            return set_error(ffi::PyExc_RuntimeError, "import_lock_release(): not held by this thread");
        }
        lock.1 -= 1;
        if lock.1 == 0 {
            lock.0 = None;
            IMPORT_LOCK_FREED.notify_one();
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `pool_workers(pool) -> [(interpreter id, native thread id, tasks done, state, error), ...]`
pub unsafe extern "C" fn py_pool_workers(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "pool_workers") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        let workers = pool.workers();
        let list = ffi::PyList_New(0);
        if list.is_null() {
            return ptr::null_mut();
        }
        for worker in &workers {
            let item = worker_tuple(worker);
            if item.is_null() || ffi::PyList_Append(list, item) != 0 {
                ffi::Py_XDECREF(item);
                ffi::Py_DECREF(list);
                return ptr::null_mut();
            }
            ffi::Py_DECREF(item);
        }
        list
    })
}

unsafe fn worker_tuple(worker: &WorkerInfo) -> *mut ffi::PyObject {
    let state = std::ffi::CString::new(worker.state).unwrap_or_default();
    let error = match &worker.error {
        Some(text) => ffi::PyUnicode_FromStringAndSize(text.as_ptr().cast(), text.len() as ffi::Py_ssize_t),
        None => ffi::Py_NewRef(ffi::Py_None()),
    };
    if error.is_null() {
        return ptr::null_mut();
    }
    let interpreter_id = if worker.interpreter == 0 {
        ffi::Py_NewRef(ffi::Py_None())
    } else {
        ffi::PyLong_FromLongLong(worker.interpreter_id)
    };
    ffi::Py_BuildValue(
        c"(NKKsN)".as_ptr(),
        interpreter_id,
        worker.native_thread_id,
        worker.tasks_done,
        state.as_ptr(),
        error,
    )
}

/// `worker_next(pool, worker, done_task, kind, data) -> (task id, payload) | None`: reports the
/// previous task's outcome (done_task 0: none; kind 0 returned or 1 raised with `data` bytes,
/// or 3 with `data` the result itself, written here in the transfer format, NotImplemented and
/// nothing done when it is not builtin data) and waits for the next task; None when the pool
/// stops.
pub unsafe extern "C" fn py_worker_next(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 5, "worker_next") {
            return ptr::null_mut();
        }
        let Some(pool) = pool_arg(*args) else { return ptr::null_mut() };
        let Some(worker) = arg_u64(*args.add(1)) else { return ptr::null_mut() };
        let Some(done) = arg_u64(*args.add(2)) else { return ptr::null_mut() };
        let worker = worker as usize;
        if worker >= pool.workers().len() {
            return set_error(ffi::PyExc_ValueError, "no such worker");
        }
        if done != 0 {
            let (kind, data) = match arg_u64(*args.add(3)) {
                Some(0) => (OutcomeKind::Returned, arg_bytes(*args.add(4))),
                Some(1) => (OutcomeKind::Raised, arg_bytes(*args.add(4))),
                // The result itself: written here in the transfer format, no bytes object
                // between; NotImplemented (nothing done) when it is not builtin data.
                Some(RESULT_OBJECT) => match transfer::encode(*args.add(4)) {
                    Ok(data) => (OutcomeKind::Returned, Some(data)),
                    Err(transfer::Refusal::NotBuiltinData) => return ffi::Py_NewRef(ffi::Py_NotImplemented()),
                    Err(transfer::Refusal::Error) => (OutcomeKind::Returned, None),
                },
                Some(_) => return set_error(ffi::PyExc_ValueError, "bad outcome kind"),
                None => return ptr::null_mut(),
            };
            let Some(data) = data else { return ptr::null_mut() };
            pool.complete(worker, done, Outcome { kind, data, busy_ns: 0 });
        }
        match without_gil(|| pool.next_task(worker)) {
            None => ffi::Py_NewRef(ffi::Py_None()),
            Some((task, payload)) => {
                let payload = bytes_object(&payload);
                if payload.is_null() {
                    return ptr::null_mut();
                }
                ffi::Py_BuildValue(c"(KN)".as_ptr(), task, payload)
            }
        }
    })
}

/// `worker_next`'s outcome kind for a result passed as the object itself.
const RESULT_OBJECT: u64 = 3;

/// The text of the raised exception (`Type: message`), clearing it.
unsafe fn take_error_text() -> String {
    let error = ffi::PyErr_GetRaisedException();
    if error.is_null() {
        return "unknown error".into();
    }
    let text = owned_text(ffi::PyObject_Repr(error));
    ffi::Py_DECREF(error);
    text.unwrap_or_else(|| "an error that cannot be shown".into())
}

/// Calls `parallel.<function>(pool id, worker, *extra)` in the current interpreter; returns the
/// result (a new reference) or the error text.
unsafe fn call_parallel(
    function: &CStr,
    pool: &Pool,
    worker: usize,
    extra: &[u8],
) -> Result<*mut ffi::PyObject, String> {
    let module = ffi::PyImport_ImportModule(c"parallel".as_ptr());
    if module.is_null() {
        return Err(format!("cannot import the parallel module: {}", take_error_text()));
    }
    let payload = bytes_object(extra);
    if payload.is_null() {
        ffi::Py_DECREF(module);
        return Err(take_error_text());
    }
    let name = ffi::PyUnicode_FromString(function.as_ptr());
    let pool_id = ffi::PyLong_FromUnsignedLongLong(pool.id);
    let index = ffi::PyLong_FromSize_t(worker);
    let result = if name.is_null() || pool_id.is_null() || index.is_null() {
        ptr::null_mut()
    } else {
        ffi::PyObject_CallMethodObjArgs(
            module,
            name,
            pool_id,
            index,
            payload,
            ptr::null_mut::<ffi::PyObject>(),
        )
    };
    for reference in [name, pool_id, index] {
        ffi::Py_XDECREF(reference);
    }
    ffi::Py_DECREF(payload);
    ffi::Py_DECREF(module);
    if result.is_null() {
        return Err(take_error_text());
    }
    Ok(result)
}

/// Body of a worker thread: create the sub-interpreter, start it up (serialized), serve tasks
/// until the pool stops; then park, to serve a later pool (see `pool::park`), or end the
/// interpreter.
fn worker_thread(pool: Arc<Pool>, worker: usize) {
    let mut serving = (pool, worker);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: this OS thread has no thread state; CPython 3.13's Py_NewInterpreterFromConfig
        // accepts that (it then copies the main interpreter's config) and leaves the new
        // interpreter's thread state current with its own GIL held. Every later call in this
        // function runs with that GIL held (parking releases and retakes it), until
        // Py_EndInterpreter releases everything.
        unsafe { serve(&mut serving) }
    }));
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(message)) => message,
        Err(_) => "internal error in the parallel engine (panic in a worker)".into(),
    };
    let (pool, worker) = serving;
    pool.worker_gone(worker, Some(error));
}

/// Serves `serving` (and the pools it is handed to later, updating `serving`); Ok once the
/// interpreter has ended normally, Err (with the interpreter ended, or never created) for
/// the pool being served then.
unsafe fn serve(serving: &mut (Arc<Pool>, usize)) -> Result<(), String> {
    let mut tstate = start_interpreter(&serving.0, serving.1)?;
    loop {
        let (pool, worker) = (serving.0.clone(), serving.1);
        let served = call_parallel(c"_worker_loop", &pool, worker, &[]).map(|result| ffi::Py_DECREF(result));
        if let Err(message) = served {
            pool.set_worker(worker, |info| info.state = "stopping");
            end_interpreter(tstate, &pool, worker);
            return Err(message);
        }
        if crate::pool::fork_pending() && !pool.is_stopping() {
            // No sub-interpreter may exist when the process forks (see `pool`'s fork
            // section): this one ends, and a new one serves the pool once it has work.
            end_interpreter(tstate, &pool, worker);
            if !pool.rest_until_work(worker) {
                pool.worker_gone(worker, None);
                return Ok(());
            }
            tstate = start_interpreter(&pool, worker)?;
            continue;
        }
        // Parks first, then leaves the pool ("stopped", under the pool's lock): a pool opened
        // as soon as this one is seen stopped finds the worker waiting.
        let parked = crate::pool::park();
        pool.worker_gone(worker, None);
        let Some(parked) = parked else { break };
        let saved = ffi::PyEval_SaveThread();
        let assignment = parked.wait();
        ffi::PyEval_RestoreThread(saved);
        let crate::pool::Assignment::Serve(next_pool, next_worker) = assignment else { break };
        *serving = (next_pool, next_worker);
        join_pool(tstate, &serving.0, serving.1);
        let settings = serving.0.init_payload.clone();
        if let Err(message) = call_parallel(c"_worker_rebind", &serving.0, serving.1, &settings) {
            serving.0.set_worker(serving.1, |info| info.error = Some(message));
        }
    }
    end_interpreter(tstate, &serving.0, serving.1);
    Ok(())
}

/// Ends the worker's interpreter (current, GIL held) after `parallel._worker_end` has tidied
/// what CPython would tidy too late (if that fails, the interpreter ends all the same: the
/// cost is a warning CPython prints).
unsafe fn end_interpreter(tstate: *mut ffi::PyThreadState, pool: &Pool, worker: usize) {
    if let Ok(result) = call_parallel(c"_worker_end", pool, worker, &[]) {
        ffi::Py_DECREF(result);
    }
    guard::in_main::forget_main_thread_state();
    let interpreter = guard::release_guard();
    ffi::Py_EndInterpreter(tstate);
    guard::discard_guard(interpreter);
    crate::pool::interpreter_ended();
}

/// Creates the worker's sub-interpreter (serialized with the other workers' start-ups) and
/// imports the main script in it; returns its thread state (current, its GIL held).
unsafe fn start_interpreter(pool: &Pool, worker: usize) -> Result<*mut ffi::PyThreadState, String> {
    // Before the start-up lock: a worker held here by a fork must not keep others from
    // ending their interpreters.
    crate::pool::interpreter_starting();
    let startup = STARTUP_LOCK.lock().unwrap_or_else(|poison| poison.into_inner());
    let config = ffi::PyInterpreterConfig {
        use_main_obmalloc: 0,
        allow_fork: 0,
        allow_exec: 0,
        allow_threads: 1,
        allow_daemon_threads: 0,
        check_multi_interp_extensions: 1,
        gil: ffi::PyInterpreterConfig_OWN_GIL,
    };
    let mut tstate: *mut ffi::PyThreadState = ptr::null_mut();
    let status = ffi::Py_NewInterpreterFromConfig(&mut tstate, &config);
    if ffi::PyStatus_Exception(status) != 0 || tstate.is_null() {
        let reason = if status.err_msg.is_null() {
            "unknown reason".into()
        } else {
            CStr::from_ptr(status.err_msg).to_string_lossy().into_owned()
        };
        crate::pool::interpreter_ended();
        return Err(format!("cannot create its sub-interpreter: {reason}"));
    }
    join_pool(tstate, pool, worker);
    pool.set_worker(worker, |info| info.state = "importing");
    crate::pool::WORKERS_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Imports the main script as `__mp_main__`; a failure is kept (tasks that need the
    // script report it) and the worker still serves tasks that do not.
    match call_parallel(c"_worker_init", pool, worker, &pool.init_payload) {
        Ok(result) => {
            if result != ffi::Py_None() {
                if let Some(message) = owned_text(ffi::PyObject_Str(result)) {
                    pool.set_worker(worker, |info| info.error = Some(message));
                }
            }
            ffi::Py_DECREF(result);
        }
        Err(message) => pool.set_worker(worker, |info| info.error = Some(message)),
    }
    drop(startup);
    Ok(tstate)
}

/// Makes this worker (its interpreter current, GIL held) worker `worker` of `pool`: what the
/// pool reports about it, and where its Ctrl-C comes from.
unsafe fn join_pool(tstate: *mut ffi::PyThreadState, pool: &Pool, worker: usize) {
    let interpreter = ffi::PyThreadState_GetInterpreter(tstate);
    pool.set_worker(worker, |info| {
        info.interpreter_id = ffi::PyInterpreterState_GetID(interpreter);
        info.interpreter = interpreter as usize;
        info.native_thread_id = native_thread_id();
        // SAFETY: pthread_self has no preconditions.
        info.thread = unsafe { libc::pthread_self() };
        info.state = "idle";
    });
    guard::set_worker_interrupt(pool.interrupt_of(worker));
}

fn native_thread_id() -> u64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u64 }
}

/// A str argument as a String; None with the error set.
pub(crate) unsafe fn arg_str(object: *mut ffi::PyObject) -> Option<String> {
    let mut len: ffi::Py_ssize_t = 0;
    let data = ffi::PyUnicode_AsUTF8AndSize(object, &mut len);
    if data.is_null() {
        return None;
    }
    Some(String::from_utf8_lossy(std::slice::from_raw_parts(data.cast::<u8>(), len as usize)).into_owned())
}

/// Takes a new reference to a str (or NULL, from a failed call) and returns its text; on any
/// failure None, with the error cleared (for messages, where nothing better can be done).
pub(crate) unsafe fn owned_text(text: *mut ffi::PyObject) -> Option<String> {
    let result = if text.is_null() { None } else { arg_str(text) };
    ffi::Py_XDECREF(text);
    if result.is_none() {
        ffi::PyErr_Clear();
    }
    result
}

/// `guard_watch(dict, role, owner)`: the worker's PX/PY guard watches `dict` (role "globals",
/// "class" (owner: the class), "instance" (owner: the object) or "dict").
pub unsafe extern "C" fn py_guard_watch(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 3, "guard_watch") {
            return ptr::null_mut();
        }
        let dict = *args;
        if ffi::PyDict_Check(dict) == 0 {
            return set_error(ffi::PyExc_TypeError, "guard_watch() needs a dict");
        }
        let Some(role) = arg_str(*args.add(1)) else { return ptr::null_mut() };
        match guard::watch(dict, &role, *args.add(2)) {
            Ok(()) => ffi::Py_NewRef(ffi::Py_None()),
            Err(()) => ptr::null_mut(),
        }
    })
}

/// `guard_begin()`: a task starts in this interpreter.
pub unsafe extern "C" fn py_guard_begin(
    _module: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    _nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        guard::begin_task();
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `guard_end() -> message | None`: the task ended; its writes to watched dicts are undone.
pub unsafe extern "C" fn py_guard_end(
    _module: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    _nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| match guard::end_task() {
        None => ffi::Py_NewRef(ffi::Py_None()),
        Some(message) => {
            ffi::PyUnicode_FromStringAndSize(message.as_ptr().cast(), message.len() as ffi::Py_ssize_t)
        }
    })
}

/// `guard_violation(what) -> message`: records a refused write (from a read-only container)
/// and returns the full ProtectionError message.
pub unsafe extern "C" fn py_guard_violation(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "guard_violation") {
            return ptr::null_mut();
        }
        let Some(what) = arg_str(*args) else { return ptr::null_mut() };
        let message = guard::protection_message(&what);
        guard::record_violation(message.clone());
        ffi::PyUnicode_FromStringAndSize(message.as_ptr().cast(), message.len() as ffi::Py_ssize_t)
    })
}

/// `guard_retype(obj, read_only_type)`.
pub unsafe extern "C" fn py_guard_retype(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "guard_retype") {
            return ptr::null_mut();
        }
        match guard::retype(*args, *args.add(1)) {
            Ok(()) => ffi::Py_NewRef(ffi::Py_None()),
            Err(message) => set_error(ffi::PyExc_TypeError, &message),
        }
    })
}

/// `guard_tuple_set(tuple, index, value)`: puts a stand-in in place of an item of the
/// worker's copy of a tuple of the script (a lock or an iterator inside a tuple).
pub unsafe extern "C" fn py_guard_tuple_set(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 3, "guard_tuple_set") {
            return ptr::null_mut();
        }
        let (tuple, index, value) = (*args, ffi::PyLong_AsSsize_t(*args.add(1)), *args.add(2));
        if !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        if ffi::PyTuple_Check(tuple) == 0 || crate::frozen::is_immortal(tuple) {
            return set_error(ffi::PyExc_TypeError, "guard_tuple_set() needs a tuple of this interpreter");
        }
        if index < 0 || index >= ffi::PyTuple_GET_SIZE(tuple) {
            return set_error(ffi::PyExc_IndexError, "guard_tuple_set() index out of range");
        }
        // SAFETY: the tuple is the worker's own copy (built when it imported the script; not
        // immortal, so not shared by other interpreters), and CPython 3.12/3.13 tuples cache
        // no hash, so swapping an item changes nothing else. The caller keeps the old item
        // alive (its id must stay taken).
        let old = ffi::PyTuple_GET_ITEM(tuple, index);
        ffi::PyTuple_SET_ITEM(tuple, index, ffi::Py_NewRef(value));
        ffi::Py_DECREF(old);
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `guard_make_type(base, name) -> type`: see `guard::make_read_only_type`.
pub unsafe extern "C" fn py_guard_make_type(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "guard_make_type") {
            return ptr::null_mut();
        }
        let Some(name) = arg_str(*args.add(1)) else { return ptr::null_mut() };
        let Ok(name) = std::ffi::CString::new(name) else {
            return set_error(ffi::PyExc_ValueError, "the type name contains NUL");
        };
        guard::make_read_only_type(*args, &name)
    })
}

/// `guard_cache_fill_type(type)`: see `guard::set_cache_fill_type`.
pub unsafe extern "C" fn py_guard_cache_fill_type(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "guard_cache_fill_type") {
            return ptr::null_mut();
        }
        if ffi::PyType_Check(*args) == 0 {
            return set_error(ffi::PyExc_TypeError, "guard_cache_fill_type() needs a type");
        }
        guard::set_cache_fill_type(*args);
        ffi::Py_NewRef(ffi::Py_None())
    })
}
