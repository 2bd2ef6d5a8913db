//! `recv` and `recv_into` for the sockets of `stackless.patch_all()` (patch.py), which keep
//! their fd non-blocking: one attempt, returning None where the kernel says the call would
//! block, instead of raising `BlockingIOError`. In a server the next request has usually not
//! arrived when its handler asks for it, so that answer comes once per request; raising and
//! catching the exception cost more than the system call itself (~2 µs against ~1 µs here).
//!
//! Everything else is CPython's `sock_recv` / `sock_recv_into` (Modules/socketmodule.c, 3.13):
//! the same argument checks and messages, EINTR retried after the signal handlers ran (an
//! exception from one is raised), any other error an `OSError` from errno.

use crate::fiber::guarded;
use pyo3_ffi as ffi;
use std::cell::RefCell;
use std::ffi::{c_int, c_void, CStr};
use std::ptr;

type Obj = *mut ffi::PyObject;

/// Receives of up to this many bytes go through a per-thread buffer and are copied out at
/// their real size (CPython allocates the whole `bufsize` and shrinks it).
const SCRATCH_MAX: usize = 256 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What one `recv(2)` gave: a byte count, "would block", or an exception set.
enum Outcome {
    Received(usize),
    WouldBlock,
    Raised,
}

/// `recv(2)` until it is not interrupted.
///
/// # Safety
/// GIL held; `buffer` is writable for `length` bytes.
unsafe fn receive(fd: c_int, buffer: *mut c_void, length: usize, flags: c_int) -> Outcome {
    loop {
        let got = libc::recv(fd, buffer, length, flags);
        if got >= 0 {
            return Outcome::Received(got as usize);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => {
                if ffi::PyErr_CheckSignals() < 0 {
                    return Outcome::Raised;
                }
            }
            Some(code) if code == libc::EAGAIN || code == libc::EWOULDBLOCK => return Outcome::WouldBlock,
            _ => {
                ffi::PyErr_SetFromErrno(ffi::PyExc_OSError);
                return Outcome::Raised;
            }
        }
    }
}

unsafe fn value_error(message: &CStr) -> Obj {
    ffi::PyErr_SetString(ffi::PyExc_ValueError, message.as_ptr());
    ptr::null_mut()
}

unsafe fn int_arg(object: Obj) -> Option<i64> {
    let value = ffi::PyLong_AsLongLong(object);
    if value == -1 && !ffi::PyErr_Occurred().is_null() {
        return None;
    }
    Some(value)
}

unsafe fn fd_and_flags(fd: Obj, flags: Obj) -> Option<(c_int, c_int)> {
    let fd = ffi::PyLong_AsLong(fd);
    if fd == -1 && !ffi::PyErr_Occurred().is_null() {
        return None;
    }
    let flags = ffi::PyLong_AsLong(flags);
    if flags == -1 && !ffi::PyErr_Occurred().is_null() {
        return None;
    }
    match (c_int::try_from(fd), c_int::try_from(flags)) {
        (Ok(fd), Ok(flags)) => Some((fd, flags)),
        _ => {
            ffi::PyErr_SetString(ffi::PyExc_OverflowError, c"fd or flags out of range".as_ptr());
            None
        }
    }
}

/// `recv_or_none(fd, bufsize, flags)`: bytes (b"" at end of stream), or None if it would block.
pub unsafe extern "C" fn py_recv_or_none(_module: Obj, args: *mut Obj, nargs: ffi::Py_ssize_t) -> Obj {
    guarded(|| {
        if nargs != 3 {
            ffi::PyErr_SetString(
                ffi::PyExc_TypeError,
                c"recv_or_none(fd, bufsize, flags) takes 3 arguments".as_ptr(),
            );
            return ptr::null_mut();
        }
        let Some(bufsize) = int_arg(*args.add(1)) else { return ptr::null_mut() };
        let Some((fd, flags)) = fd_and_flags(*args, *args.add(2)) else { return ptr::null_mut() };
        if bufsize < 0 {
            return value_error(c"negative buffersize in recv");
        }
        let length = bufsize as usize;
        if length <= SCRATCH_MAX {
            return SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                if scratch.len() < length {
                    scratch.resize(length, 0);
                }
                match receive(fd, scratch.as_mut_ptr().cast(), length, flags) {
                    Outcome::Received(got) => {
                        ffi::PyBytes_FromStringAndSize(scratch.as_ptr().cast(), got as _)
                    }
                    Outcome::WouldBlock => ffi::Py_NewRef(ffi::Py_None()),
                    Outcome::Raised => ptr::null_mut(),
                }
            });
        }
        let bytes = ffi::PyBytes_FromStringAndSize(ptr::null(), length as _);
        if bytes.is_null() {
            return bytes;
        }
        let outcome = receive(fd, ffi::PyBytes_AsString(bytes).cast(), length, flags);
        let result = match outcome {
            Outcome::Received(got) if got == length => return bytes,
            Outcome::Received(got) => ffi::PyBytes_FromStringAndSize(ffi::PyBytes_AsString(bytes), got as _),
            Outcome::WouldBlock => ffi::Py_NewRef(ffi::Py_None()),
            Outcome::Raised => ptr::null_mut(),
        };
        ffi::Py_DECREF(bytes);
        result
    })
}

/// `recv_into_or_none(fd, buffer, nbytes, flags)`: the count received into `buffer` (0 at end
/// of stream), or None if it would block.
pub unsafe extern "C" fn py_recv_into_or_none(_module: Obj, args: *mut Obj, nargs: ffi::Py_ssize_t) -> Obj {
    guarded(|| {
        if nargs != 4 {
            ffi::PyErr_SetString(
                ffi::PyExc_TypeError,
                c"recv_into_or_none(fd, buffer, nbytes, flags) takes 4 arguments".as_ptr(),
            );
            return ptr::null_mut();
        }
        let Some(nbytes) = int_arg(*args.add(2)) else { return ptr::null_mut() };
        let Some((fd, flags)) = fd_and_flags(*args, *args.add(3)) else { return ptr::null_mut() };
        let buffer = *args.add(1);
        let mut view: ffi::Py_buffer = std::mem::zeroed();
        let writable = ffi::PyObject_GetBuffer(buffer, &mut view, ffi::PyBUF_WRITABLE) == 0;
        if !writable || ffi::PyBuffer_IsContiguous(&view, b'C' as _) == 0 {
            // As CPython's "w*" argument conversion says it.
            if writable {
                ffi::PyBuffer_Release(&mut view);
            }
            ffi::PyErr_Clear();
            ffi::PyErr_Format(
                ffi::PyExc_TypeError,
                c"recv_into() argument 1 must be read-write bytes-like object, not %.50s".as_ptr(),
                (*ffi::Py_TYPE(buffer)).tp_name,
            );
            return ptr::null_mut();
        }
        let available = view.len.max(0) as usize;
        let result = if nbytes < 0 {
            value_error(c"negative buffersize in recv_into")
        } else if nbytes as usize > available {
            value_error(c"buffer too small for requested bytes")
        } else {
            let length = if nbytes == 0 { available } else { nbytes as usize };
            match receive(fd, view.buf, length, flags) {
                Outcome::Received(got) => ffi::PyLong_FromSize_t(got),
                Outcome::WouldBlock => ffi::Py_NewRef(ffi::Py_None()),
                Outcome::Raised => ptr::null_mut(),
            }
        };
        ffi::PyBuffer_Release(&mut view);
        result
    })
}
