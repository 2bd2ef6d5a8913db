//! The built-in modules the engine registers before the interpreter starts, importable in the
//! main interpreter and in every worker (all are per-interpreter-GIL safe: they keep no Python
//! object in process-wide state): `_parallel_core` (pools and workers, core.rs), `parallel`
//! (the Python-level API in parallel.py), `_parallel_guard` (the PX/PY rule's families,
//! guard/families.py), `_parallel_server` (TCP servers, server/server.py), `_parallel_wsgi`
//! (WSGI servers, server/wsgi.py) and `_parallel_cluster` (work on a Dask cluster,
//! cluster/cluster.py), the last five executed from their source into the module.

use crate::{core, guard, interpreter_threads, log, server, shared_api, transfer};
use pyo3_ffi as ffi;
use std::ffi::{c_int, c_void, CStr};
use std::ptr;

/// A Python source file of the engine, as a C string.
macro_rules! python_source {
    ($path:literal) => {{
        const SOURCE: &str = concat!(include_str!($path), "\0");
        match CStr::from_bytes_with_nul(SOURCE.as_bytes()) {
            Ok(source) => source,
            Err(_) => panic!(concat!($path, " must not contain NUL bytes")),
        }
    }};
}

const PARALLEL_SOURCE: &CStr = python_source!("parallel.py");
const GUARD_SOURCE: &CStr = python_source!("guard/families.py");
const SERVER_SOURCE: &CStr = python_source!("server/server.py");
const WSGI_SOURCE: &CStr = python_source!("server/wsgi.py");
const CLUSTER_SOURCE: &CStr = python_source!("cluster/cluster.py");

/// Registers the modules; called before `Py_InitializeFromConfig`.
pub fn register() -> Result<(), String> {
    // SAFETY: PyImport_AppendInittab may be called before initialization; names are static.
    unsafe {
        if ffi::PyImport_AppendInittab(c"_parallel_core".as_ptr(), Some(init_core)) != 0
            || ffi::PyImport_AppendInittab(c"parallel".as_ptr(), Some(init_parallel)) != 0
            || ffi::PyImport_AppendInittab(c"_parallel_guard".as_ptr(), Some(init_guard)) != 0
            || ffi::PyImport_AppendInittab(c"_parallel_server".as_ptr(), Some(init_server)) != 0
            || ffi::PyImport_AppendInittab(c"_parallel_wsgi".as_ptr(), Some(init_wsgi)) != 0
            || ffi::PyImport_AppendInittab(c"_parallel_cluster".as_ptr(), Some(init_cluster)) != 0
        {
            return Err("cannot register the parallel modules".into());
        }
    }
    Ok(())
}

macro_rules! fastcall {
    ($name:literal, $function:path, $doc:literal) => {
        ffi::PyMethodDef {
            ml_name: $name.as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: $function },
            ml_flags: ffi::METH_FASTCALL,
            ml_doc: $doc.as_ptr(),
        }
    };
}

// SAFETY (statics below): read by CPython; only PyModuleDef_Init writes the base, under a GIL,
// once per process (the definition is shared by every interpreter, as for any built-in module).
static mut CORE_METHODS: [ffi::PyMethodDef; 70] = [
    fastcall!(c"log", log::py_log, c"log(level, message): through the host's logging (PYHOST_LOG)"),
    fastcall!(c"pool_start", core::py_pool_start, c"pool_start(workers, init_payload) -> pool id"),
    fastcall!(c"pool_submit", core::py_pool_submit, c"pool_submit(pool, payload) -> task id"),
    fastcall!(c"batch_open", core::py_batch_open, c"batch_open(pool) -> batch id"),
    fastcall!(c"batch_add", core::py_batch_add, c"batch_add(pool, batch, payload) -> slot"),
    fastcall!(c"batch_next", core::py_batch_next, c"batch_next(batch) -> (slot, kind, data)"),
    fastcall!(c"batch_close", core::py_batch_close, c"batch_close(pool, batch)"),
    fastcall!(
        c"pool_wait_task",
        core::py_pool_wait_task,
        c"pool_wait_task(pool, task, timeout) -> (kind, data) | None | False"
    ),
    fastcall!(
        c"pool_next_completion",
        core::py_pool_next_completion,
        c"pool_next_completion(pool, timeout) -> (task, kind, data) | None | False"
    ),
    fastcall!(c"pool_cancel", core::py_pool_cancel, c"pool_cancel(pool, task) -> bool"),
    fastcall!(c"pool_shutdown", core::py_pool_shutdown, c"pool_shutdown(pool, wait, cancel_pending)"),
    fastcall!(c"pool_wait_stopped", core::py_pool_wait_stopped, c"pool_wait_stopped(pool, timeout) -> bool"),
    fastcall!(c"pool_forget", core::py_pool_forget, c"pool_forget(pool)"),
    fastcall!(c"before_fork", core::py_before_fork, c"before_fork(): no worker interpreter exists on return"),
    fastcall!(
        c"after_fork_in_parent",
        core::py_after_fork_in_parent,
        c"after_fork_in_parent(): workers start new interpreters"
    ),
    fastcall!(
        c"after_fork_in_child",
        core::py_after_fork_in_child,
        c"after_fork_in_child(): forget the parent's pools"
    ),
    fastcall!(c"pool_interrupt", core::py_pool_interrupt, c"pool_interrupt(pool)"),
    fastcall!(
        c"worker_sleep",
        core::py_worker_sleep,
        c"worker_sleep(seconds): time.sleep in a worker, Ctrl-C aware"
    ),
    fastcall!(c"pool_task_state", core::py_pool_task_state, c"pool_task_state(pool, task) -> state | None"),
    fastcall!(c"guard_watch", core::py_guard_watch, c"guard_watch(dict, role, owner)"),
    fastcall!(c"guard_begin", core::py_guard_begin, c"guard_begin()"),
    fastcall!(c"guard_end", core::py_guard_end, c"guard_end() -> violation | None"),
    fastcall!(c"guard_violation", core::py_guard_violation, c"guard_violation(what) -> message"),
    fastcall!(c"guard_make_type", core::py_guard_make_type, c"guard_make_type(base, name) -> type"),
    fastcall!(c"guard_retype", core::py_guard_retype, c"guard_retype(obj, read_only_type)"),
    fastcall!(c"guard_tuple_set", core::py_guard_tuple_set, c"guard_tuple_set(tuple, index, value)"),
    fastcall!(
        c"guard_cache_fill_type",
        core::py_guard_cache_fill_type,
        c"guard_cache_fill_type(type): attributes its descriptors add are caches"
    ),
    fastcall!(
        c"guard_twin",
        guard::twins::py_guard_twin,
        c"guard_twin(owner, name, verb, label) -> whether owner.name now has a guarded twin"
    ),
    fastcall!(
        c"guard_py_ids",
        guard::py_guard_py_ids,
        c"guard_py_ids(ids): the script's objects, for the twins"
    ),
    fastcall!(c"guard_watch_type", guard::py_guard_watch_type, c"guard_watch_type(read_only_type)"),
    fastcall!(c"guard_is_shared", guard::py_guard_is_shared, c"guard_is_shared(obj) -> bool"),
    fastcall!(
        c"guard_call_watch",
        guard::calls::py_guard_call_watch,
        c"guard_call_watch(mutators, py_ids, disable, call_opcode, extended_arg_opcode) -> callback"
    ),
    fastcall!(
        c"main_call",
        guard::in_main::py_main_call,
        c"main_call(payload) -> reply: _parallel_guard.in_main(payload) in the main interpreter"
    ),
    fastcall!(
        c"transfer_dumps",
        transfer::py_transfer_dumps,
        c"transfer_dumps(obj) -> bytes, or None when obj is not builtin data"
    ),
    fastcall!(
        c"current_frames",
        interpreter_threads::py_current_frames,
        c"current_frames() -> sys._current_frames() of this interpreter's threads only"
    ),
    fastcall!(
        c"current_exceptions",
        interpreter_threads::py_current_exceptions,
        c"current_exceptions() -> sys._current_exceptions() of this interpreter's threads only"
    ),
    fastcall!(
        c"batch_lend",
        transfer::lend::py_batch_lend,
        c"batch_lend(batch, items): workers copy the items of this map in place"
    ),
    fastcall!(
        c"transfer_lent",
        transfer::lend::py_transfer_lent,
        c"transfer_lent(batch, start, stop) -> a task's reference to lent items"
    ),
    fastcall!(
        c"transfer_borrow",
        transfer::lend::py_transfer_borrow,
        c"transfer_borrow(data, offset) -> the lent items data[offset:] names, copied"
    ),
    fastcall!(
        c"transfer_check",
        transfer::py_transfer_check,
        c"transfer_check(obj) -> whether transfer_dumps writes obj"
    ),
    fastcall!(
        c"transfer_loads_into",
        transfer::py_transfer_loads_into,
        c"transfer_loads_into(data, target, start) -> n: data's list items into target[start:]"
    ),
    fastcall!(
        c"transfer_loads",
        transfer::py_transfer_loads,
        c"transfer_loads(data, offset) -> the value transfer_dumps wrote at data[offset:]"
    ),
    fastcall!(c"shared_new", shared_api::py_shared_new, c"shared_new(kind, contents) -> id"),
    fastcall!(c"shared_drop", shared_api::py_shared_drop, c"shared_drop(id)"),
    fastcall!(c"shared_op", shared_api::py_shared_op, c"shared_op(id, op, *args)"),
    fastcall!(c"share_freeze", shared_api::py_share_freeze, c"share_freeze(obj) -> address"),
    fastcall!(
        c"server_start",
        server::py_server_start,
        c"server_start(host, port, backlog) -> (id, host, port)"
    ),
    fastcall!(c"server_stop", server::py_server_stop, c"server_stop(id)"),
    fastcall!(
        c"server_wait_joined",
        server::py_server_wait_joined,
        c"server_wait_joined(id, count, timeout) -> bool"
    ),
    fastcall!(c"server_connections", server::py_server_connections, c"server_connections(id) -> int"),
    fastcall!(c"server_join", server::py_server_join, c"server_join(id) -> events"),
    fastcall!(
        c"server_next",
        server::py_server_next,
        c"server_next(events) -> (kind, connection id, detail) | None"
    ),
    fastcall!(
        c"server_write",
        server::py_server_write,
        c"server_write(connection, data) -> 0 gone | 1 queued | 2 pause"
    ),
    fastcall!(c"server_close", server::py_server_close, c"server_close(connection)"),
    fastcall!(
        c"server_write_buffer_size",
        server::py_server_write_buffer_size,
        c"server_write_buffer_size(connection) -> int"
    ),
    fastcall!(
        c"server_set_write_limits",
        server::py_server_set_write_limits,
        c"server_set_write_limits(connection, high, low)"
    ),
    fastcall!(
        c"http_start",
        server::wsgi::py_http_start,
        c"http_start(host, port, backlog, max_body, header_timeout) -> (id, host, port)"
    ),
    fastcall!(c"http_stop", server::wsgi::py_http_stop, c"http_stop(id)"),
    fastcall!(c"http_connections", server::wsgi::py_http_connections, c"http_connections(id) -> int"),
    fastcall!(c"http_next", server::wsgi::py_http_next, c"http_next(id) -> request tuple | None"),
    fastcall!(
        c"http_respond",
        server::wsgi::py_http_respond,
        c"http_respond(request, status, headers) -> bool"
    ),
    fastcall!(c"http_send", server::wsgi::py_http_send, c"http_send(request, data) -> bool"),
    fastcall!(c"http_read", server::wsgi::py_http_read, c"http_read(request) -> bytes | None"),
    fastcall!(c"http_finish", server::wsgi::py_http_finish, c"http_finish(request, failed)"),
    fastcall!(c"share_get", shared_api::py_share_get, c"share_get(address) -> obj"),
    fastcall!(c"import_lock_acquire", core::py_import_lock_acquire, c"import_lock_acquire()"),
    fastcall!(c"import_lock_release", core::py_import_lock_release, c"import_lock_release()"),
    fastcall!(
        c"pool_workers",
        core::py_pool_workers,
        c"pool_workers(pool) -> [(interp id, tid, done, state, error)]"
    ),
    fastcall!(
        c"worker_next",
        core::py_worker_next,
        c"worker_next(pool, worker, done_task, kind, data) -> (task, payload) | None"
    ),
    ffi::PyMethodDef::zeroed(),
];

static mut CORE_SLOTS: [ffi::PyModuleDef_Slot; 2] = [
    ffi::PyModuleDef_Slot {
        slot: ffi::Py_mod_multiple_interpreters,
        value: ffi::Py_MOD_PER_INTERPRETER_GIL_SUPPORTED,
    },
    ffi::PyModuleDef_Slot { slot: 0, value: ptr::null_mut() },
];

static mut CORE_DEF: ffi::PyModuleDef = ffi::PyModuleDef {
    m_base: ffi::PyModuleDef_HEAD_INIT,
    m_name: c"_parallel_core".as_ptr(),
    m_doc: c"Worker pools of sub-interpreters: the core of the parallel engine.".as_ptr(),
    m_size: 0,
    m_methods: (&raw mut CORE_METHODS).cast(),
    m_slots: (&raw mut CORE_SLOTS).cast(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
};

/// Slots and definition of a module executed from Python source by `$exec`.
macro_rules! source_module {
    ($slots:ident, $def:ident, $name:literal, $exec:ident) => {
        static mut $slots: [ffi::PyModuleDef_Slot; 3] = [
            ffi::PyModuleDef_Slot { slot: ffi::Py_mod_exec, value: $exec as *mut c_void },
            ffi::PyModuleDef_Slot {
                slot: ffi::Py_mod_multiple_interpreters,
                value: ffi::Py_MOD_PER_INTERPRETER_GIL_SUPPORTED,
            },
            ffi::PyModuleDef_Slot { slot: 0, value: ptr::null_mut() },
        ];

        static mut $def: ffi::PyModuleDef = ffi::PyModuleDef {
            m_base: ffi::PyModuleDef_HEAD_INIT,
            m_name: $name.as_ptr(),
            m_doc: ptr::null(),
            m_size: 0,
            m_methods: ptr::null_mut(),
            m_slots: (&raw mut $slots).cast(),
            m_traverse: None,
            m_clear: None,
            m_free: None,
        };
    };
}

source_module!(PARALLEL_SLOTS, PARALLEL_DEF, c"parallel", exec_parallel);
source_module!(GUARD_SLOTS, GUARD_DEF, c"_parallel_guard", exec_guard);
source_module!(SERVER_SLOTS, SERVER_DEF, c"_parallel_server", exec_server);
source_module!(WSGI_SLOTS, WSGI_DEF, c"_parallel_wsgi", exec_wsgi);
source_module!(CLUSTER_SLOTS, CLUSTER_DEF, c"_parallel_cluster", exec_cluster);

extern "C" fn init_core() -> *mut ffi::PyObject {
    // SAFETY: a valid 'static module definition.
    unsafe { ffi::PyModuleDef_Init(&raw mut CORE_DEF) }
}

extern "C" fn init_parallel() -> *mut ffi::PyObject {
    // SAFETY: a valid 'static module definition.
    unsafe { ffi::PyModuleDef_Init(&raw mut PARALLEL_DEF) }
}

extern "C" fn init_guard() -> *mut ffi::PyObject {
    // SAFETY: a valid 'static module definition.
    unsafe { ffi::PyModuleDef_Init(&raw mut GUARD_DEF) }
}

extern "C" fn init_server() -> *mut ffi::PyObject {
    // SAFETY: a valid 'static module definition.
    unsafe { ffi::PyModuleDef_Init(&raw mut SERVER_DEF) }
}

unsafe extern "C" fn exec_server(module: *mut ffi::PyObject) -> c_int {
    exec_source(module, SERVER_SOURCE, c"<parallel engine: server/server.py>")
}

extern "C" fn init_wsgi() -> *mut ffi::PyObject {
    // SAFETY: a valid 'static module definition.
    unsafe { ffi::PyModuleDef_Init(&raw mut WSGI_DEF) }
}

unsafe extern "C" fn exec_wsgi(module: *mut ffi::PyObject) -> c_int {
    exec_source(module, WSGI_SOURCE, c"<parallel engine: server/wsgi.py>")
}

extern "C" fn init_cluster() -> *mut ffi::PyObject {
    // SAFETY: a valid 'static module definition.
    unsafe { ffi::PyModuleDef_Init(&raw mut CLUSTER_DEF) }
}

unsafe extern "C" fn exec_cluster(module: *mut ffi::PyObject) -> c_int {
    exec_source(module, CLUSTER_SOURCE, c"<parallel engine: cluster/cluster.py>")
}

unsafe extern "C" fn exec_parallel(module: *mut ffi::PyObject) -> c_int {
    exec_source(module, PARALLEL_SOURCE, c"<parallel engine>")
}

unsafe extern "C" fn exec_guard(module: *mut ffi::PyObject) -> c_int {
    exec_source(module, GUARD_SOURCE, c"<parallel engine: guard/families.py>")
}

/// Runs `source` in `module`'s namespace (a `Py_mod_exec` slot).
unsafe fn exec_source(module: *mut ffi::PyObject, source: &CStr, filename: &CStr) -> c_int {
    std::panic::catch_unwind(|| {
        // SAFETY: the GIL of the importing interpreter is held; the dict is borrowed; the
        // code object is released.
        unsafe {
            let globals = ffi::PyModule_GetDict(module);
            // PyEval_EvalCode does not add `__builtins__` to the globals (exec() does), and
            // PyImport_Import, which pickle uses, looks it up in the calling frame's globals.
            if ffi::PyDict_SetItemString(globals, c"__builtins__".as_ptr(), ffi::PyEval_GetBuiltins()) != 0 {
                return -1;
            }
            let code = ffi::Py_CompileString(source.as_ptr(), filename.as_ptr(), ffi::Py_file_input);
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
