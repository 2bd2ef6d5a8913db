//! The I/O reactor of one OS thread's scheduler: which tasklets wait for which file
//! descriptor or timer, and the wait for the first of them (epoll, GIL released).
//!
//! reactor.py owns the policy: a tasklet that waits is blocked (out of the run queue) and the
//! thread's hub tasklet, runnable while anything waits, polls here, blocking only when it is
//! the one runnable tasklet of its thread. This file only keeps the waits:
//!
//! * Each wait gets a token. A file descriptor is registered once with epoll in one-shot mode
//!   and armed by each wait for the directions waited for: epoll reports it once, with the
//!   readiness of that moment (level-triggered), so a wait for an fd that is ready already
//!   ends at the next poll, and a fired fd stays quiet until a wait arms it again.
//! * One waiter per fd and direction (gevent refuses the same); a reader and a writer may wait
//!   on one fd together.
//! * Timers are a heap of (deadline, token); cancelled waits leave stale heap entries, skipped
//!   when they come up.
//! * Another thread wakes a blocking poll through an eventfd (`notify`): it made one of this
//!   thread's tasklets runnable.
//! * A signal interrupts the poll (EINTR is not retried here): the caller runs Python's signal
//!   handlers, so Ctrl-C reaches the program while every tasklet waits.

use crate::fiber::guarded;
use pyo3_ffi as ffi;
use rustix::event::{epoll, eventfd, EventfdFlags};
use rustix::fd::{BorrowedFd, OwnedFd, RawFd};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ffi::{c_int, CStr};
use std::ptr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The epoll key of the notifier (file descriptors are keyed by their number).
const NOTIFY_KEY: u64 = u64::MAX;

const CAPSULE: &CStr = c"stackless reactor";

/// Events taken from the kernel per poll (more stay queued for the next one).
const EVENTS_PER_POLL: usize = 256;

#[derive(Default)]
struct FdWaits {
    reader: Option<u64>,
    writer: Option<u64>,
    /// In epoll's interest list (added once, then armed with `modify`).
    added: bool,
}

impl FdWaits {
    fn slot(&mut self, readable: bool) -> &mut Option<u64> {
        if readable {
            &mut self.reader
        } else {
            &mut self.writer
        }
    }
}

struct Wait {
    fd: Option<(RawFd, bool)>,
}

#[derive(Default)]
struct State {
    fds: HashMap<RawFd, FdWaits>,
    waits: HashMap<u64, Wait>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Waits that ended in a poll whose caller could not take them (a signal handler raised):
    /// the next poll reports them first.
    ended: Vec<(u64, bool)>,
    next_token: u64,
}

pub struct Reactor {
    epoll: OwnedFd,
    notifier: OwnedFd,
    state: Mutex<State>,
}

/// Why a wait could not be registered.
pub enum WaitError {
    /// Another tasklet waits on this fd in this direction.
    Busy,
    /// epoll refused the fd: EPERM for a regular file or a directory (always ready), EBADF...
    Os(rustix::io::Errno),
}

impl Reactor {
    pub fn new() -> std::io::Result<Reactor> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let notifier = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(&epoll, &notifier, epoll::EventData::new_u64(NOTIFY_KEY), epoll::EventFlags::IN)?;
        Ok(Reactor { epoll, notifier, state: Mutex::new(State::default()) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a wait for `fd` to become readable (or writable), until `timeout`.
    pub fn wait_fd(&self, fd: RawFd, readable: bool, timeout: Option<Duration>) -> Result<u64, WaitError> {
        let mut state = self.state();
        let token = state.next_token;
        let entry = state.fds.entry(fd).or_default();
        let slot = entry.slot(readable);
        if slot.is_some() {
            return Err(WaitError::Busy);
        }
        *slot = Some(token);
        if let Err(error) = self.arm(fd, entry) {
            *entry.slot(readable) = None;
            return Err(WaitError::Os(error));
        }
        state.next_token += 1;
        state.waits.insert(token, Wait { fd: Some((fd, readable)) });
        if let Some(timeout) = timeout {
            state.timers.push(Reverse((deadline(timeout), token)));
        }
        Ok(token)
    }

    /// Registers a timer.
    pub fn timer(&self, after: Duration) -> u64 {
        let mut state = self.state();
        let token = state.next_token;
        state.next_token += 1;
        state.waits.insert(token, Wait { fd: None });
        state.timers.push(Reverse((deadline(after), token)));
        token
    }

    /// Forgets a wait (its tasklet was killed or thrown into). Its fd stays armed: an event
    /// with nobody waiting is dropped.
    pub fn cancel(&self, token: u64) {
        let mut state = self.state();
        if let Some(wait) = state.waits.remove(&token) {
            forget_fd_wait(&mut state, wait, token);
        }
    }

    /// Waits registered and not yet ended.
    pub fn pending(&self) -> usize {
        self.state().waits.len()
    }

    /// Wakes a poll in progress on the reactor's thread, or the next one.
    pub fn notify(&self) {
        let _ = rustix::io::write(&self.notifier, &1u64.to_ne_bytes());
    }

    /// Arms `fd` for the directions that have a waiter.
    fn arm(&self, fd: RawFd, entry: &mut FdWaits) -> Result<(), rustix::io::Errno> {
        let mut flags = epoll::EventFlags::ONESHOT;
        if entry.reader.is_some() {
            flags |= epoll::EventFlags::IN | epoll::EventFlags::RDHUP;
        }
        if entry.writer.is_some() {
            flags |= epoll::EventFlags::OUT;
        }
        // SAFETY: epoll_ctl only looks the number up in this process's table; a closed or
        // foreign number gives EBADF, nothing is read or written through it.
        let source = unsafe { BorrowedFd::borrow_raw(fd) };
        let data = epoll::EventData::new_u64(fd as u64);
        if entry.added {
            match epoll::modify(&self.epoll, source, data, flags) {
                // Closed and reopened under the same number since: epoll forgot it.
                Err(rustix::io::Errno::NOENT) => epoll::add(&self.epoll, source, data, flags),
                other => other,
            }
        } else {
            match epoll::add(&self.epoll, source, data, flags) {
                Err(rustix::io::Errno::EXIST) => epoll::modify(&self.epoll, source, data, flags),
                other => other,
            }
        }?;
        entry.added = true;
        Ok(())
    }

    /// The waits that ended: (token, true) for an fd that became ready, (token, false) for a
    /// timer that expired. With `block`, waits for the first one (or a `notify`) with the GIL
    /// released; Err(INTR) when a signal came first.
    ///
    /// # Safety
    /// Called with the GIL held (it is released during the wait).
    pub unsafe fn poll(&self, block: bool) -> Result<Vec<(u64, bool)>, rustix::io::Errno> {
        let (mut ended, timeout) = {
            let mut state = self.state();
            let mut ended = std::mem::take(&mut state.ended);
            ended.retain(|(token, _)| state.waits.remove(token).is_some());
            let timeout = if block && ended.is_empty() {
                next_deadline(&mut state).map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            (ended, timeout)
        };
        let timeout = timeout.map(|timeout| rustix::event::Timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64 / 1000) as _,
            tv_nsec: timeout.subsec_nanos() as _,
        });
        let mut events = Vec::with_capacity(EVENTS_PER_POLL);
        let waited = if timeout.is_some_and(|t| t.tv_sec == 0 && t.tv_nsec == 0) {
            epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut events), timeout.as_ref())
        } else {
            // SAFETY: the GIL is held on entry (the caller's contract) and taken back before
            // anything Python is touched; nothing below uses Python.
            let saved = ffi::PyEval_SaveThread();
            let waited =
                epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut events), timeout.as_ref());
            ffi::PyEval_RestoreThread(saved);
            waited
        };
        if let Err(errno) = waited {
            self.requeue(&ended);
            return Err(errno);
        }
        let mut state = self.state();
        for event in &events {
            let key = event.data.u64();
            if key == NOTIFY_KEY {
                let mut count = [0u8; 8];
                let _ = rustix::io::read(&self.notifier, &mut count);
                continue;
            }
            let fd = key as RawFd;
            let flags = event.flags;
            let errors = epoll::EventFlags::HUP | epoll::EventFlags::ERR;
            let readable = flags.intersects(
                epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::PRI | errors,
            );
            let writable = flags.intersects(epoll::EventFlags::OUT | errors);
            let Some(entry) = state.fds.get_mut(&fd) else { continue };
            let mut reader = if readable { entry.reader.take() } else { None };
            let mut writer = if writable { entry.writer.take() } else { None };
            // One-shot: the fd is disarmed now; a waiter whose direction did not fire is armed
            // again.
            if (entry.reader.is_some() || entry.writer.is_some()) && self.arm(fd, entry).is_err() {
                // Closed meanwhile: wake the rest too; their next call reports the error.
                reader = reader.or(entry.reader.take());
                writer = writer.or(entry.writer.take());
            }
            for token in [reader, writer].into_iter().flatten() {
                if state.waits.remove(&token).is_some() {
                    ended.push((token, true));
                }
            }
        }
        let now = Instant::now();
        while let Some(Reverse((at, token))) = state.timers.peek().copied() {
            if at > now {
                break;
            }
            state.timers.pop();
            if let Some(wait) = state.waits.remove(&token) {
                forget_fd_wait(&mut state, wait, token);
                ended.push((token, false));
            }
        }
        Ok(ended)
    }
}

impl Reactor {
    /// Gives back waits a poll ended but its caller could not take: the next poll reports them.
    pub fn requeue(&self, ended: &[(u64, bool)]) {
        let mut state = self.state();
        for &(token, ready) in ended {
            state.waits.insert(token, Wait { fd: None });
            state.ended.push((token, ready));
        }
    }
}

fn deadline(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or(now + Duration::from_secs(86_400 * 365))
}

/// The earliest deadline of a live timer (stale entries are dropped on the way).
fn next_deadline(state: &mut State) -> Option<Instant> {
    while let Some(Reverse((at, token))) = state.timers.peek().copied() {
        if state.waits.contains_key(&token) {
            return Some(at);
        }
        state.timers.pop();
    }
    None
}

fn forget_fd_wait(state: &mut State, wait: Wait, token: u64) {
    if let Some((fd, readable)) = wait.fd {
        if let Some(slot) = state.fds.get_mut(&fd).map(|entry| entry.slot(readable)) {
            if *slot == Some(token) {
                *slot = None;
            }
        }
    }
}

// ----- the Python interface (`_stackless_core.reactor_*`) -----

unsafe fn set_error(kind: *mut ffi::PyObject, message: &str) -> *mut ffi::PyObject {
    let text = std::ffi::CString::new(message.replace('\0', " ")).unwrap_or_default();
    ffi::PyErr_SetString(kind, text.as_ptr());
    ptr::null_mut()
}

unsafe fn check_args(nargs: ffi::Py_ssize_t, expected: ffi::Py_ssize_t, name: &str) -> bool {
    if nargs != expected {
        set_error(ffi::PyExc_TypeError, &format!("{name}() takes {expected} arguments ({nargs} given)"));
        return false;
    }
    true
}

unsafe fn reactor<'a>(capsule: *mut ffi::PyObject) -> Option<&'a Reactor> {
    let reactor = ffi::PyCapsule_GetPointer(capsule, CAPSULE.as_ptr()).cast::<Reactor>();
    // SAFETY: the capsule owns the reactor until it is destroyed; the caller holds it (an
    // argument), and every method takes `&self`.
    reactor.as_ref()
}

/// None, or seconds >= 0 (a float or an int); Err with the error set.
unsafe fn timeout_arg(object: *mut ffi::PyObject) -> Result<Option<Duration>, ()> {
    if object == ffi::Py_None() {
        return Ok(None);
    }
    let seconds = ffi::PyFloat_AsDouble(object);
    if seconds == -1.0 && !ffi::PyErr_Occurred().is_null() {
        return Err(());
    }
    if seconds.is_nan() || seconds < 0.0 {
        set_error(ffi::PyExc_ValueError, "timeout must be a non-negative number or None");
        return Err(());
    }
    Ok(Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::from_secs(86_400 * 365))))
}

unsafe extern "C" fn drop_reactor(capsule: *mut ffi::PyObject) {
    let reactor = ffi::PyCapsule_GetPointer(capsule, CAPSULE.as_ptr()).cast::<Reactor>();
    if !reactor.is_null() {
        drop(Box::from_raw(reactor));
    } else {
        ffi::PyErr_Clear();
    }
}

/// `reactor_new() -> reactor`: a reactor (a capsule) for the calling thread's scheduler.
pub unsafe extern "C" fn py_reactor_new(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| match Reactor::new() {
        Ok(reactor) => {
            let reactor = Box::into_raw(Box::new(reactor));
            let capsule = ffi::PyCapsule_New(reactor.cast(), CAPSULE.as_ptr(), Some(drop_reactor));
            if capsule.is_null() {
                drop(Box::from_raw(reactor));
            }
            capsule
        }
        Err(error) => set_error(ffi::PyExc_OSError, &format!("cannot make an I/O reactor: {error}")),
    })
}

/// `reactor_wait(reactor, fd, readable, timeout) -> token | None`: waits for `fd` to become
/// readable (or writable) until `timeout` seconds (None: no limit). None: epoll cannot watch
/// this fd (a regular file or a directory: always ready). RuntimeError if another tasklet
/// waits on it in this direction; OSError (EBADF...) for a bad fd.
pub unsafe extern "C" fn py_reactor_wait(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !check_args(nargs, 4, "reactor_wait") {
            return ptr::null_mut();
        }
        let Some(reactor) = reactor(*args) else { return ptr::null_mut() };
        let fd = ffi::PyLong_AsLong(*args.add(1));
        if fd == -1 && !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        let Ok(fd @ 0..) = c_int::try_from(fd) else {
            return set_error(
                ffi::PyExc_ValueError,
                &format!("file descriptor cannot be a negative integer ({fd})"),
            );
        };
        let readable = ffi::PyObject_IsTrue(*args.add(2));
        if readable < 0 {
            return ptr::null_mut();
        }
        let Ok(timeout) = timeout_arg(*args.add(3)) else { return ptr::null_mut() };
        match reactor.wait_fd(fd, readable == 1, timeout) {
            Ok(token) => ffi::PyLong_FromUnsignedLongLong(token),
            Err(WaitError::Os(rustix::io::Errno::PERM)) => ffi::Py_NewRef(ffi::Py_None()),
            Err(WaitError::Os(errno)) => {
                let arguments = ffi::Py_BuildValue(
                    c"(is)".as_ptr(),
                    errno.raw_os_error(),
                    std::ffi::CString::new(format!("cannot wait for file descriptor {fd}: {errno}"))
                        .unwrap_or_default()
                        .as_ptr(),
                );
                if !arguments.is_null() {
                    ffi::PyErr_SetObject(ffi::PyExc_OSError, arguments);
                    ffi::Py_DECREF(arguments);
                }
                ptr::null_mut()
            }
            Err(WaitError::Busy) => set_error(
                ffi::PyExc_RuntimeError,
                &format!(
                    "another tasklet already waits for file descriptor {fd} to become {}",
                    if readable == 1 { "readable" } else { "writable" }
                ),
            ),
        }
    })
}

/// `reactor_timer(reactor, seconds) -> token`.
pub unsafe extern "C" fn py_reactor_timer(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !check_args(nargs, 2, "reactor_timer") {
            return ptr::null_mut();
        }
        let Some(reactor) = reactor(*args) else { return ptr::null_mut() };
        let Ok(after) = timeout_arg(*args.add(1)) else { return ptr::null_mut() };
        ffi::PyLong_FromUnsignedLongLong(reactor.timer(after.unwrap_or(Duration::ZERO)))
    })
}

unsafe fn token_arg(object: *mut ffi::PyObject) -> Option<u64> {
    let token = ffi::PyLong_AsUnsignedLongLong(object);
    if token == u64::MAX && !ffi::PyErr_Occurred().is_null() {
        return None;
    }
    Some(token)
}

/// `reactor_cancel(reactor, token)`: forgets a wait.
pub unsafe extern "C" fn py_reactor_cancel(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !check_args(nargs, 2, "reactor_cancel") {
            return ptr::null_mut();
        }
        let Some(reactor) = reactor(*args) else { return ptr::null_mut() };
        let Some(token) = token_arg(*args.add(1)) else { return ptr::null_mut() };
        reactor.cancel(token);
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `reactor_pending(reactor) -> int`: waits not yet ended.
pub unsafe extern "C" fn py_reactor_pending(
    _module: *mut ffi::PyObject,
    capsule: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| {
        let Some(reactor) = reactor(capsule) else { return ptr::null_mut() };
        ffi::PyLong_FromSize_t(reactor.pending())
    })
}

/// `reactor_notify(reactor)`: wakes the reactor's poll (from any thread).
pub unsafe extern "C" fn py_reactor_notify(
    _module: *mut ffi::PyObject,
    capsule: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| {
        let Some(reactor) = reactor(capsule) else { return ptr::null_mut() };
        reactor.notify();
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `reactor_poll(reactor, block) -> [(token, ready), ...]`: the waits that ended (ready False:
/// the timeout came first). With `block`, waits for one (GIL released). A signal that
/// interrupts the wait runs Python's handlers (their exception is raised).
pub unsafe extern "C" fn py_reactor_poll(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !check_args(nargs, 2, "reactor_poll") {
            return ptr::null_mut();
        }
        let Some(reactor) = reactor(*args) else { return ptr::null_mut() };
        let block = ffi::PyObject_IsTrue(*args.add(1));
        if block < 0 {
            return ptr::null_mut();
        }
        let ended = match reactor.poll(block == 1) {
            Ok(ended) => ended,
            Err(rustix::io::Errno::INTR) => Vec::new(),
            Err(errno) => return set_error(ffi::PyExc_OSError, &format!("epoll_wait failed: {errno}")),
        };
        if ffi::PyErr_CheckSignals() < 0 {
            // The waits that ended stay ended: nobody is woken for them. Give them back to the
            // timer heap as due now, so the next poll reports them.
            reactor.requeue(&ended);
            return ptr::null_mut();
        }
        let list = ffi::PyList_New(ended.len() as ffi::Py_ssize_t);
        if list.is_null() {
            reactor.requeue(&ended);
            return ptr::null_mut();
        }
        for (index, (token, ready)) in ended.iter().enumerate() {
            let item = ffi::Py_BuildValue(
                c"(KO)".as_ptr(),
                *token,
                if *ready { ffi::Py_True() } else { ffi::Py_False() },
            );
            if item.is_null() {
                ffi::Py_DECREF(list);
                reactor.requeue(&ended);
                return ptr::null_mut();
            }
            ffi::PyList_SET_ITEM(list, index as ffi::Py_ssize_t, item);
        }
        list
    })
}
