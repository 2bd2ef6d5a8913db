//! The `_parallel_core` entry points of `parallel.serve()` (WSGI): the HTTP side is http.rs,
//! the application side wsgi.py. A worker takes requests as plain tuples built straight from
//! the parsed request (nothing is pickled) and answers through the request's capsule.

use super::http::{BodyPart, HttpServer, Limits, Part, Reply};
use crate::core::{arg_bytes, arg_count, arg_str, arg_u64, guarded, set_error, without_gil};
use pyo3_ffi as ffi;
use std::collections::HashMap;
use std::ffi::{c_int, CStr, CString};
use std::ptr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// One request as a worker holds it: the way to answer, and its body still to read.
struct Exchange {
    reply: Reply,
    body: Option<mpsc::Receiver<BodyPart>>,
}

const REQUEST_CAPSULE: &CStr = c"parallel http request";

fn servers() -> &'static Mutex<HashMap<u64, Arc<HttpServer>>> {
    static SERVERS: OnceLock<Mutex<HashMap<u64, Arc<HttpServer>>>> = OnceLock::new();
    SERVERS.get_or_init(Default::default)
}

fn server(id: u64) -> Option<Arc<HttpServer>> {
    servers().lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
}

unsafe fn float_arg(object: *mut ffi::PyObject) -> Option<f64> {
    let value = ffi::PyFloat_AsDouble(object);
    if value == -1.0 && !ffi::PyErr_Occurred().is_null() {
        None
    } else {
        Some(value)
    }
}

/// `http_start(host, port, backlog, max_body, header_timeout) -> (server id, host, port)`.
pub unsafe extern "C" fn py_http_start(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 5, "http_start") {
            return ptr::null_mut();
        }
        let Some(host) = arg_str(*args) else { return ptr::null_mut() };
        let (Some(port), Some(backlog), Some(max_body)) =
            (arg_u64(*args.add(1)), arg_u64(*args.add(2)), arg_u64(*args.add(3)))
        else {
            return ptr::null_mut();
        };
        let Some(timeout) = float_arg(*args.add(4)) else { return ptr::null_mut() };
        let Ok(port) = u16::try_from(port) else {
            return set_error(ffi::PyExc_OverflowError, "port must be 0-65535");
        };
        let limits = Limits {
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            header_timeout: Duration::from_secs_f64(timeout.clamp(0.001, 86_400.0)),
            max_header_bytes: 64 * 1024,
        };
        let backlog = u32::try_from(backlog).unwrap_or(u32::MAX);
        let started = without_gil(|| HttpServer::start(&host, port, backlog, limits));
        let server = match started {
            Ok(server) => server,
            Err(error) => return super::set_os_error(&error, &format!("cannot listen on {host}:{port}")),
        };
        let id = super::next_server_id();
        let address = server.address;
        servers().lock().unwrap_or_else(|p| p.into_inner()).insert(id, server);
        let Ok(ip) = CString::new(address.ip().to_string()) else { return ptr::null_mut() };
        ffi::Py_BuildValue(c"(Ksi)".as_ptr(), id, ip.as_ptr(), c_int::from(address.port()))
    })
}

/// `http_stop(server id)`: stops accepting and ends once the requests in flight are answered.
pub unsafe extern "C" fn py_http_stop(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "http_stop") {
            return ptr::null_mut();
        }
        let Some(id) = arg_u64(*args) else { return ptr::null_mut() };
        // Stopped while still known: the workers take the requests in flight (the connections
        // wait for their answers) until the network side ends, which closes the queue.
        if let Some(server) = server(id) {
            without_gil(|| server.stop());
        }
        servers().lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        ffi::Py_NewRef(ffi::Py_None())
    })
}

/// `http_connections(server id) -> int`.
pub unsafe extern "C" fn py_http_connections(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "http_connections") {
            return ptr::null_mut();
        }
        let Some(id) = arg_u64(*args) else { return ptr::null_mut() };
        match server(id) {
            Some(server) => ffi::PyLong_FromSize_t(server.open_connections()),
            None => ffi::PyLong_FromLong(0),
        }
    })
}

unsafe extern "C" fn drop_request(capsule: *mut ffi::PyObject) {
    let exchange = ffi::PyCapsule_GetPointer(capsule, REQUEST_CAPSULE.as_ptr()).cast::<Exchange>();
    if !exchange.is_null() {
        drop(Box::from_raw(exchange));
    }
}

unsafe fn address(address: std::net::SocketAddr) -> *mut ffi::PyObject {
    let Ok(ip) = CString::new(address.ip().to_string()) else { return ptr::null_mut() };
    ffi::Py_BuildValue(c"(si)".as_ptr(), ip.as_ptr(), c_int::from(address.port()))
}

unsafe fn bytes(data: &[u8]) -> *mut ffi::PyObject {
    ffi::PyBytes_FromStringAndSize(data.as_ptr().cast(), data.len() as ffi::Py_ssize_t)
}

/// `http_next(server id) -> (request, method, path, query, protocol, headers, has_body, peer,
/// local) | None`: the next request (waited for without the GIL); None once stopped. `path`,
/// `query` and header values are bytes; `headers` is a list of (lower-case name, value); the
/// body is read with `http_read`.
pub unsafe extern "C" fn py_http_next(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "http_next") {
            return ptr::null_mut();
        }
        let Some(id) = arg_u64(*args) else { return ptr::null_mut() };
        let Some(server) = server(id) else { return ffi::Py_NewRef(ffi::Py_None()) };
        let Some(request) = without_gil(|| server.next()) else { return ffi::Py_NewRef(ffi::Py_None()) };
        let headers = ffi::PyList_New(0);
        if headers.is_null() {
            return ptr::null_mut();
        }
        for (name, value) in &request.headers {
            let Ok(name) = CString::new(name.as_str()) else { continue };
            let value = bytes(value);
            let pair = if value.is_null() {
                ptr::null_mut()
            } else {
                ffi::Py_BuildValue(c"(sN)".as_ptr(), name.as_ptr(), value)
            };
            if pair.is_null() || ffi::PyList_Append(headers, pair) != 0 {
                ffi::Py_XDECREF(pair);
                ffi::Py_DECREF(headers);
                return ptr::null_mut();
            }
            ffi::Py_DECREF(pair);
        }
        let has_body = request.body.is_some();
        let exchange = Box::into_raw(Box::new(Exchange { reply: request.reply, body: request.body }));
        let capsule = ffi::PyCapsule_New(exchange.cast(), REQUEST_CAPSULE.as_ptr(), Some(drop_request));
        if capsule.is_null() {
            drop(Box::from_raw(exchange));
            ffi::Py_DECREF(headers);
            return ptr::null_mut();
        }
        let Ok(method) = CString::new(request.method) else { return ptr::null_mut() };
        let Ok(version) = CString::new(request.version) else { return ptr::null_mut() };
        ffi::Py_BuildValue(
            c"(NsNNsNNNN)".as_ptr(),
            capsule,
            method.as_ptr(),
            bytes(&request.path),
            bytes(&request.query),
            version.as_ptr(),
            headers,
            ffi::PyBool_FromLong(has_body.into()),
            address(request.peer),
            address(request.local),
        )
    })
}

unsafe fn exchange<'a>(capsule: *mut ffi::PyObject) -> Option<&'a mut Exchange> {
    let exchange = ffi::PyCapsule_GetPointer(capsule, REQUEST_CAPSULE.as_ptr()).cast::<Exchange>();
    // SAFETY: the capsule owns the Exchange until it is destroyed; wsgi.py uses a request's
    // capsule from the one thread that handles it.
    exchange.as_mut()
}

unsafe fn reply<'a>(capsule: *mut ffi::PyObject) -> Option<&'a mut Reply> {
    exchange(capsule).map(|exchange| &mut exchange.reply)
}

/// `http_read(request) -> bytes | None`: the body's next chunk as it arrives (waited for
/// without the GIL); b"" at its end, None when it went over the server's max_body.
/// ConnectionError if the client's connection failed.
pub unsafe extern "C" fn py_http_read(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 1, "http_read") {
            return ptr::null_mut();
        }
        let Some(exchange) = exchange(*args) else { return ptr::null_mut() };
        let Some(body) = exchange.body.as_mut() else { return bytes(b"") };
        match without_gil(|| body.blocking_recv()) {
            Some(BodyPart::Data(data)) => bytes(&data),
            Some(BodyPart::TooLarge) => {
                exchange.body = None;
                ffi::Py_NewRef(ffi::Py_None())
            }
            Some(BodyPart::Failed(error)) => {
                exchange.body = None;
                set_error(ffi::PyExc_ConnectionError, &format!("reading the request body: {error}"))
            }
            None => {
                exchange.body = None;
                bytes(b"")
            }
        }
    })
}

/// `http_respond(request, status, headers, whole) -> bool`: the status code and the headers (a
/// list of (name, value bytes)), and the whole body (bytes: the response is complete) or None
/// (chunks follow with `http_send`); False if the client is gone. ValueError for a bad header.
pub unsafe extern "C" fn py_http_respond(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 4, "http_respond") {
            return ptr::null_mut();
        }
        let Some(reply) = reply(*args) else { return ptr::null_mut() };
        let Some(status) = arg_u64(*args.add(1)) else { return ptr::null_mut() };
        let Ok(status @ 100..=999) = u16::try_from(status) else {
            return set_error(ffi::PyExc_ValueError, &format!("bad HTTP status code {status}"));
        };
        let list = *args.add(2);
        if ffi::PyList_Check(list) == 0 {
            return set_error(ffi::PyExc_TypeError, "http_respond() needs a list of headers");
        }
        let mut headers = Vec::new();
        for index in 0..ffi::PyList_GET_SIZE(list) {
            let pair = ffi::PyList_GET_ITEM(list, index);
            if ffi::PyTuple_Check(pair) == 0 || ffi::PyTuple_GET_SIZE(pair) != 2 {
                return set_error(ffi::PyExc_TypeError, "a header must be a (name, value) tuple");
            }
            let Some(name) = arg_str(ffi::PyTuple_GET_ITEM(pair, 0)) else { return ptr::null_mut() };
            let Some(value) = arg_bytes(ffi::PyTuple_GET_ITEM(pair, 1)) else { return ptr::null_mut() };
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || hyper::header::HeaderValue::from_bytes(&value).is_err()
            {
                return set_error(ffi::PyExc_ValueError, &format!("bad HTTP header {name:?}"));
            }
            headers.push((name, value));
        }
        let whole = *args.add(3);
        let whole = if whole == ffi::Py_None() {
            None
        } else {
            let Some(whole) = arg_bytes(whole) else { return ptr::null_mut() };
            Some(whole.into())
        };
        ffi::PyBool_FromLong(reply.start(status, headers, whole).into())
    })
}

/// `http_send(request, data) -> bool`: a body chunk, sent as soon as the client takes it
/// (waits without the GIL while it is slow); False if the client is gone.
pub unsafe extern "C" fn py_http_send(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "http_send") {
            return ptr::null_mut();
        }
        let Some(reply) = reply(*args) else { return ptr::null_mut() };
        if !reply.started() {
            return set_error(ffi::PyExc_RuntimeError, "http_send() before http_respond()");
        }
        let Some(data) = arg_bytes(*args.add(1)) else { return ptr::null_mut() };
        let sent = data.is_empty() || without_gil(|| reply.send(Part::Chunk(data.into())));
        ffi::PyBool_FromLong(sent.into())
    })
}

/// `http_finish(request, failed)`: the response is complete, or (failed) cut short: the
/// client's connection is closed.
pub unsafe extern "C" fn py_http_finish(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        if !arg_count(nargs, 2, "http_finish") {
            return ptr::null_mut();
        }
        let Some(reply) = reply(*args) else { return ptr::null_mut() };
        if ffi::PyObject_IsTrue(*args.add(1)) == 1 && reply.started() {
            without_gil(|| reply.send(Part::Abort));
        }
        reply.finish();
        ffi::Py_NewRef(ffi::Py_None())
    })
}
