//! The two built-in modules the engine registers before the interpreter starts:
//! `_stackless_core` (Fiber, switch, current, stats; the scheduler's base types and fast paths) and `stackless` (the Python-level API in
//! stackless.py, executed into the module). Both refuse sub-interpreters: tasklets live in the
//! main interpreter.

use crate::{fiber, reactor, sched, sockio};
use pyo3_ffi as ffi;
use std::ffi::{c_int, c_void, CStr};
use std::ptr;

/// stackless.py, reactor.py (the I/O waits) and patch.py (`patch_all()`), executed into one
/// module namespace.
const STACKLESS_SOURCE: &CStr = {
    const SOURCE: &str = concat!(
        include_str!("stackless.py"),
        "\n",
        include_str!("reactor.py"),
        "\n",
        include_str!("patch.py"),
        "\0"
    );
    match CStr::from_bytes_with_nul(SOURCE.as_bytes()) {
        Ok(source) => source,
        Err(_) => panic!("stackless.py must not contain NUL bytes"),
    }
};

/// Calls `stackless._kill_all_at_exit()` if the program imported `stackless`.
pub fn kill_tasklets_at_exit() -> Result<(), String> {
    // SAFETY: called from the host's at-exit hook, GIL held; references are released.
    unsafe {
        let name = ffi::PyUnicode_FromString(c"stackless".as_ptr());
        if name.is_null() {
            ffi::PyErr_Clear();
            return Err("cannot build the module name".into());
        }
        let module = ffi::PyImport_GetModule(name);
        ffi::Py_DECREF(name);
        if module.is_null() {
            ffi::PyErr_Clear(); // not imported: nothing to kill
            return Ok(());
        }
        let result = ffi::PyObject_CallMethod(module, c"_kill_all_at_exit".as_ptr(), ptr::null());
        ffi::Py_DECREF(module);
        if result.is_null() {
            ffi::PyErr_Print();
            return Err("killing the remaining tasklets failed (traceback above)".into());
        }
        ffi::Py_DECREF(result);
    }
    Ok(())
}

/// Registers both modules; called before `Py_InitializeFromConfig`.
pub fn register() -> Result<(), String> {
    // SAFETY: PyImport_AppendInittab may be called before initialization; names are static.
    unsafe {
        if ffi::PyImport_AppendInittab(c"_stackless_core".as_ptr(), Some(init_core)) != 0
            || ffi::PyImport_AppendInittab(c"stackless".as_ptr(), Some(init_stackless)) != 0
        {
            return Err("cannot register the stackless modules".into());
        }
    }
    Ok(())
}

// SAFETY (statics below): read by CPython; only PyModuleDef_Init writes the base, under the GIL.
static mut CORE_METHODS: [ffi::PyMethodDef; 27] = [
    ffi::PyMethodDef {
        ml_name: c"arm_watchdog".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: fiber::py_arm_watchdog },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"arm_watchdog(ticks, delivery, restart_on_switch)\n--\n\nInterrupt this thread after `ticks` microseconds of CPU time: trip signal `delivery`, or call `delivery` to turn the monitoring events on.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"disarm_watchdog".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: fiber::py_disarm_watchdog },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"disarm_watchdog()\n--\n\nStop this thread's run(timeout) watchdog.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"take_expired".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: fiber::py_take_expired },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"take_expired()\n--\n\nWhether this thread's time slice expired (clears the mark).".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"any_expired".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: fiber::py_any_expired },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"any_expired()\n--\n\nWhether some thread's time slice expired and was not taken yet.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"entry_frames".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: fiber::py_entry_frames },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"entry_frames()\n--\n\nHow many times the running code was entered from C.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"switch_from_monitoring".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: fiber::py_switch_from_monitoring },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"switch_from_monitoring()\n--\n\nswitch(None) from inside a sys.monitoring callback.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"current_context".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: fiber::py_current_context },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"current_context()\n--\n\nThe thread's current Context object (not a copy).".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"set_context".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: fiber::py_set_context },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"set_context(target, context)\n--\n\nSet the context of a Fiber (None: the main context).".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"switch".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: fiber::py_switch },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"switch(target, value=None, exc=None)\n--\n\nRun target (a Fiber, or None for the thread's main context).".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"current".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: fiber::py_current },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"current()\n--\n\nThe running Fiber, or None in the thread's main context.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"stats".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: fiber::py_stats },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"stats()\n--\n\nSwitch and fiber counters.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"schedule".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: sched::py_schedule },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: c"schedule(retval=None)\n--\n\nstackless.schedule(): run the next tasklet (fast path in Rust).".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"_install".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: sched::py_install },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"_install(schedule, send, receive)\n--\n\nThe Python implementations the fast paths fall back to.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"set_callback_flags".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: sched::py_set_callback_flags },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"set_callback_flags(schedule_set, channel_set)\n--\n\nWhether schedule/channel callbacks are installed.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"thread_state".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: sched::py_thread_state },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"thread_state()\n--\n\nThis OS thread's scheduler object, or None.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"set_thread_state".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: sched::py_set_thread_state },
        ml_flags: ffi::METH_O,
        ml_doc: c"set_thread_state(th)\n--\n\nRemember th as this OS thread's scheduler object.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"clear_thread_state".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: sched::py_clear_thread_state },
        ml_flags: ffi::METH_O,
        ml_doc: c"clear_thread_state(th)\n--\n\nForget this OS thread's scheduler object if it is th.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"recv_or_none".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: sockio::py_recv_or_none },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"recv_or_none(fd, bufsize, flags)\n--\n\nrecv() on a non-blocking socket: bytes, or None if it would block.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"recv_into_or_none".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: sockio::py_recv_into_or_none },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"recv_into_or_none(fd, buffer, nbytes, flags)\n--\n\nrecv_into() on a non-blocking socket: a count, or None if it would block.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"reactor_new".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: reactor::py_reactor_new },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"reactor_new()\n--\n\nAn I/O reactor for this thread's scheduler.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"reactor_wait".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: reactor::py_reactor_wait },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"reactor_wait(reactor, fd, readable, timeout)\n--\n\nWait for fd to become readable (or writable): a token, or None when epoll cannot watch it (always ready).".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"reactor_timer".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: reactor::py_reactor_timer },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"reactor_timer(reactor, seconds)\n--\n\nA timer: its token.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"reactor_cancel".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: reactor::py_reactor_cancel },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"reactor_cancel(reactor, token)\n--\n\nForget a wait.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"reactor_pending".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: reactor::py_reactor_pending },
        ml_flags: ffi::METH_O,
        ml_doc: c"reactor_pending(reactor)\n--\n\nWaits not yet ended.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"reactor_notify".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: reactor::py_reactor_notify },
        ml_flags: ffi::METH_O,
        ml_doc: c"reactor_notify(reactor)\n--\n\nWake the reactor's poll (from any thread).".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"reactor_poll".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: reactor::py_reactor_poll },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"reactor_poll(reactor, block)\n--\n\nThe waits that ended, as (token, ready); with block, wait for one (GIL released).".as_ptr(),
    },
    ffi::PyMethodDef::zeroed(),
];

static mut CORE_SLOTS: [ffi::PyModuleDef_Slot; 3] = [
    ffi::PyModuleDef_Slot { slot: ffi::Py_mod_exec, value: exec_core as *mut c_void },
    ffi::PyModuleDef_Slot {
        slot: ffi::Py_mod_multiple_interpreters,
        value: ffi::Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED,
    },
    ffi::PyModuleDef_Slot { slot: 0, value: ptr::null_mut() },
];

static mut CORE_DEF: ffi::PyModuleDef = ffi::PyModuleDef {
    m_base: ffi::PyModuleDef_HEAD_INIT,
    m_name: c"_stackless_core".as_ptr(),
    m_doc: c"Fibers on their own C stacks: the switching core of the stackless engine.".as_ptr(),
    m_size: 0,
    m_methods: (&raw mut CORE_METHODS).cast(),
    m_slots: (&raw mut CORE_SLOTS).cast(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
};

static mut STACKLESS_SLOTS: [ffi::PyModuleDef_Slot; 3] = [
    ffi::PyModuleDef_Slot { slot: ffi::Py_mod_exec, value: exec_stackless as *mut c_void },
    ffi::PyModuleDef_Slot {
        slot: ffi::Py_mod_multiple_interpreters,
        value: ffi::Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED,
    },
    ffi::PyModuleDef_Slot { slot: 0, value: ptr::null_mut() },
];

static mut STACKLESS_DEF: ffi::PyModuleDef = ffi::PyModuleDef {
    m_base: ffi::PyModuleDef_HEAD_INIT,
    m_name: c"stackless".as_ptr(),
    m_doc: ptr::null(),
    m_size: 0,
    m_methods: ptr::null_mut(),
    m_slots: (&raw mut STACKLESS_SLOTS).cast(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
};

extern "C" fn init_core() -> *mut ffi::PyObject {
    // SAFETY: a valid 'static module definition.
    unsafe { ffi::PyModuleDef_Init(&raw mut CORE_DEF) }
}

extern "C" fn init_stackless() -> *mut ffi::PyObject {
    // SAFETY: a valid 'static module definition.
    unsafe { ffi::PyModuleDef_Init(&raw mut STACKLESS_DEF) }
}

unsafe extern "C" fn exec_core(module: *mut ffi::PyObject) -> c_int {
    std::panic::catch_unwind(|| {
        // SAFETY: GIL held during module execution.
        unsafe {
            crate::cpython_state::install_chunk_cache();
            let tp = fiber::create_fiber_type(module);
            if tp.is_null() {
                return -1;
            }
            let rc = ffi::PyModule_AddObjectRef(module, c"Fiber".as_ptr(), tp);
            ffi::Py_DECREF(tp);
            if rc < 0 {
                return rc;
            }
            sched::add_types(module)
        }
    })
    .unwrap_or(-1)
}

unsafe extern "C" fn exec_stackless(module: *mut ffi::PyObject) -> c_int {
    std::panic::catch_unwind(|| {
        // SAFETY: GIL held; the dict is borrowed; the code object is released.
        unsafe {
            let globals = ffi::PyModule_GetDict(module);
            // As `exec()` does (PyEval_EvalCode does not): code that inspects this module's
            // frames (the warnings machinery, for one) expects `__builtins__` in its globals.
            if ffi::PyDict_SetItemString(globals, c"__builtins__".as_ptr(), ffi::PyEval_GetBuiltins()) < 0 {
                return -1;
            }
            let code = ffi::Py_CompileString(
                STACKLESS_SOURCE.as_ptr(),
                c"<stackless engine>".as_ptr(),
                ffi::Py_file_input,
            );
            if code.is_null() {
                return -1;
            }
            let result = ffi::PyEval_EvalCode(code, globals, globals);
            ffi::Py_DECREF(code);
            if result.is_null() {
                return -1;
            }
            ffi::Py_DECREF(result);
            0
        }
    })
    .unwrap_or(-1)
}
