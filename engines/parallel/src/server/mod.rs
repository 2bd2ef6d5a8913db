//! `parallel.server()`: PyParallel's TCP protocol servers. The network side (network.rs, Rust
//! on tokio) accepts connections and moves bytes; each worker of the server's pool runs one
//! long task, server.py's loop, that takes its connections' events from a channel (waiting
//! without the GIL) and calls the protocol's callbacks in the worker's interpreter. Bytes are
//! copied straight into and out of Python bytes objects: nothing is pickled per event.

mod http;
mod network;
mod smuggling;
pub mod wsgi;

use crate::core::{arg_bytes, arg_count, arg_str, arg_u64, guarded, set_error, without_gil};
use network::{Event, Outbox, Server};
use pyo3_ffi as ffi;
use std::collections::HashMap;
use std::ffi::CStr;
use std::ptr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Event kinds as server.py sees them.
const MADE: i64 = 0;
const DATA: i64 = 1;
const LOST: i64 = 2;
const DRAINED: i64 = 3;

const EVENTS_CAPSULE: &CStr = c"parallel server events";
const CONNECTION_CAPSULE: &CStr = c"parallel server connection";

/// An accept that failed (out of file descriptors and the like): the listener stays and the
/// next accept may succeed. Said through the host's log at most once a second.
async fn accept_failed(error: std::io::Error, last_said: &mut Option<std::time::Instant>) {
    if last_said.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
        crate::log::log(pyhost_abi::LogLevel::Warn, &format!("a server cannot accept a connection: {error}"));
        *last_said = Some(std::time::Instant::now());
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

fn servers() -> &'static Mutex<HashMap<u64, Arc<Server>>> {
    static SERVERS: OnceLock<Mutex<HashMap<u64, Arc<Server>>>> = OnceLock::new();
    SERVERS.get_or_init(Default::default)
}

fn server(id: u64) -> Option<Arc<Server>> {
    servers().lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
}

unsafe fn no_server(id: u64) -> *mut ffi::PyObject {
    set_error(ffi::PyExc_ValueError, &format!("no server {id} (it was stopped)"))
}

/// Server ids, unique across TCP and HTTP servers.
fn next_server_id() -> u64 {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Sets OSError(errno, message) (a subclass where CPython maps the errno) for `error`.
unsafe fn set_os_error(error: &std::io::Error, context: &str) -> *mut ffi::PyObject {
    let message = format!("{context}: {error}");
    let Ok(text) = std::ffi::CString::new(message.replace('\0', " ")) else { return ptr::null_mut() };
    let arguments = match error.raw_os_error() {
        Some(errno) => ffi::Py_BuildValue(c"(is)".as_ptr(), errno, text.as_ptr()),
        None => ffi::Py_BuildValue(c"(s)".as_ptr(), text.as_ptr()),
    };
    if !arguments.is_null() {
        ffi::PyErr_SetObject(ffi::PyExc_OSError, arguments);
        ffi::Py_DECREF(arguments);
    }
    ptr::null_mut()
}

/// `server_start(host, port, backlog) -> (server id, host, port)`: listening from now on.
pub unsafe extern "C" fn py_server_start(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 3, "server_start") {
            return ptr::null_mut();
        }
        let Some(host) = arg_str(*args) else { return ptr::null_mut() };
        let (Some(port), Some(backlog)) = (arg_u64(*args.add(1)), arg_u64(*args.add(2))) else {
            return ptr::null_mut();
        };
        let Ok(port) = u16::try_from(port) else {
            return set_error(ffi::PyExc_OverflowError, "port must be 0-65535");
        };
        let backlog = u32::try_from(backlog).unwrap_or(u32::MAX);
        let started = without_gil(|| Server::start(&host, port, backlog));
        let server = match started {
            Ok(server) => server,
            Err(error) => return set_os_error(&error, &format!("cannot listen on {host}:{port}")),
        };
        let id = next_server_id();
        let address = server.address;
        servers().lock().unwrap_or_else(|p| p.into_inner()).insert(id, server);
        let Ok(ip) = std::ffi::CString::new(address.ip().to_string()) else { return ptr::null_mut() };
        ffi::Py_BuildValue(c"(Ksi)".as_ptr(), id, ip.as_ptr(), std::ffi::c_int::from(address.port()))
    })
}

/// `server_stop(server id)`: stops accepting, closes the connections, ends the workers' loops.
pub unsafe extern "C" fn py_server_stop(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "server_stop") {
            return ptr::null_mut();
        }
        let Some(id) = arg_u64(*args) else { return ptr::null_mut() };
        let stopped = servers().lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        if let Some(server) = stopped {
            without_gil(|| server.stop());
        }
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `server_wait_joined(server id, count, timeout) -> bool`: whether `count` workers joined.
pub unsafe extern "C" fn py_server_wait_joined(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 3, "server_wait_joined") {
            return ptr::null_mut();
        }
        let (Some(id), Some(count)) = (arg_u64(*args), arg_u64(*args.add(1))) else { return ptr::null_mut() };
        let timeout = ffi::PyFloat_AsDouble(*args.add(2));
        if !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        let Some(server) = server(id) else { return no_server(id) };
        let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
        let joined = without_gil(|| server.wait_joined(count as usize, timeout));
        ffi::PyBool_FromLong(joined.into())
    })
}

/// `server_connections(server id) -> int`: connections open now.
pub unsafe extern "C" fn py_server_connections(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "server_connections") {
            return ptr::null_mut();
        }
        let Some(id) = arg_u64(*args) else { return ptr::null_mut() };
        match server(id) {
            Some(server) => ffi::PyLong_FromSize_t(server.open_connections()),
            None => no_server(id),
        }
    })
}

unsafe extern "C" fn drop_events(capsule: *mut ffi::PyObject) {
    let events = ffi::PyCapsule_GetPointer(capsule, EVENTS_CAPSULE.as_ptr()).cast::<mpsc::Receiver<Event>>();
    if !events.is_null() {
        drop(Box::from_raw(events));
    }
}

unsafe extern "C" fn drop_connection(capsule: *mut ffi::PyObject) {
    let outbox = ffi::PyCapsule_GetPointer(capsule, CONNECTION_CAPSULE.as_ptr()).cast::<Arc<Outbox>>();
    if !outbox.is_null() {
        drop(Box::from_raw(outbox));
    }
}

/// `server_join(server id) -> events`: the calling worker takes connections from now on;
/// `events` is for `server_next` in this worker only.
pub unsafe extern "C" fn py_server_join(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "server_join") {
            return ptr::null_mut();
        }
        let Some(id) = arg_u64(*args) else { return ptr::null_mut() };
        let Some(server) = server(id) else { return no_server(id) };
        let events = Box::into_raw(Box::new(server.join()));
        let capsule = ffi::PyCapsule_New(events.cast(), EVENTS_CAPSULE.as_ptr(), Some(drop_events));
        if capsule.is_null() {
            drop(Box::from_raw(events));
        }
        capsule
    })
}

/// `server_next(events) -> (kind, connection id, detail) | None`: the worker's next event,
/// waited for without the GIL; None once the server stopped. Details: MADE (connection,
/// (host, port)), DATA bytes, LOST None or the error's text, DRAINED None.
pub unsafe extern "C" fn py_server_next(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "server_next") {
            return ptr::null_mut();
        }
        let events =
            ffi::PyCapsule_GetPointer(*args, EVENTS_CAPSULE.as_ptr()).cast::<mpsc::Receiver<Event>>();
        if events.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: the capsule is this worker's (server.py keeps it in its loop's frame), used
        // by that loop's thread only, and outlives this call (it is an argument).
        let events = &mut *events;
        let Some(event) = without_gil(|| events.blocking_recv()) else {
            return ffi::Py_NewRef(ffi::Py_None());
        };
        match event {
            Event::Made { id, outbox, peer } => {
                let outbox = Box::into_raw(Box::new(outbox));
                let connection =
                    ffi::PyCapsule_New(outbox.cast(), CONNECTION_CAPSULE.as_ptr(), Some(drop_connection));
                if connection.is_null() {
                    drop(Box::from_raw(outbox));
                    return ptr::null_mut();
                }
                let Ok(ip) = std::ffi::CString::new(peer.ip().to_string()) else { return ptr::null_mut() };
                ffi::Py_BuildValue(
                    c"(LK(N(si)))".as_ptr(),
                    MADE,
                    id,
                    connection,
                    ip.as_ptr(),
                    std::ffi::c_int::from(peer.port()),
                )
            }
            Event::Data { id, bytes } => {
                let data =
                    ffi::PyBytes_FromStringAndSize(bytes.as_ptr().cast(), bytes.len() as ffi::Py_ssize_t);
                if data.is_null() {
                    return ptr::null_mut();
                }
                ffi::Py_BuildValue(c"(LKN)".as_ptr(), DATA, id, data)
            }
            Event::Lost { id, error } => match error {
                Some(error) => {
                    let Ok(text) = std::ffi::CString::new(error.replace('\0', " ")) else {
                        return ptr::null_mut();
                    };
                    ffi::Py_BuildValue(c"(LKs)".as_ptr(), LOST, id, text.as_ptr())
                }
                None => ffi::Py_BuildValue(c"(LKO)".as_ptr(), LOST, id, ffi::Py_None()),
            },
            Event::Drained { id } => ffi::Py_BuildValue(c"(LKO)".as_ptr(), DRAINED, id, ffi::Py_None()),
        }
    })
}

unsafe fn connection_outbox(capsule: *mut ffi::PyObject) -> Option<&'static Outbox> {
    let outbox = ffi::PyCapsule_GetPointer(capsule, CONNECTION_CAPSULE.as_ptr()).cast::<Arc<Outbox>>();
    // SAFETY: the capsule owns the outbox until it is destroyed, and the caller holds it.
    outbox.as_ref().map(|outbox| &**outbox)
}

/// `server_write(connection, data) -> int`: queues bytes to send: 0, the connection is gone;
/// 1, queued; 2, queued and the queue just went over the high-water mark (pause writing).
pub unsafe extern "C" fn py_server_write(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "server_write") {
            return ptr::null_mut();
        }
        let Some(outbox) = connection_outbox(*args) else { return ptr::null_mut() };
        let Some(data) = arg_bytes(*args.add(1)) else { return ptr::null_mut() };
        let outcome = if data.is_empty() {
            1
        } else {
            match outbox.write(data) {
                None => 0,
                Some(false) => 1,
                Some(true) => 2,
            }
        };
        ffi::PyLong_FromLong(outcome)
    })
}

/// `server_close(connection)`: closes the connection once what is queued is sent.
pub unsafe extern "C" fn py_server_close(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "server_close") {
            return ptr::null_mut();
        }
        let Some(outbox) = connection_outbox(*args) else { return ptr::null_mut() };
        outbox.close();
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `server_write_buffer_size(connection) -> int`: bytes queued and not yet sent.
pub unsafe extern "C" fn py_server_write_buffer_size(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "server_write_buffer_size") {
            return ptr::null_mut();
        }
        let Some(outbox) = connection_outbox(*args) else { return ptr::null_mut() };
        ffi::PyLong_FromSize_t(outbox.queued())
    })
}

/// `server_set_write_limits(connection, high, low)`: the connection's write-buffer marks.
pub unsafe extern "C" fn py_server_set_write_limits(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 3, "server_set_write_limits") {
            return ptr::null_mut();
        }
        let Some(outbox) = connection_outbox(*args) else { return ptr::null_mut() };
        let (Some(high), Some(low)) = (arg_u64(*args.add(1)), arg_u64(*args.add(2))) else {
            return ptr::null_mut();
        };
        let (Ok(high), Ok(low)) = (usize::try_from(high), usize::try_from(low)) else {
            return set_error(ffi::PyExc_OverflowError, "write-buffer limits are too large");
        };
        outbox.set_limits(high, low);
        ffi::Py_NewRef(ffi::Py_None())
    })
}
