//! The built-in `pyhost` module: tells Python code which engine runs it.
//!
//! `pyhost.engine`, `engine_version`, `engine_description`, `engine_path`, `engine_python`
//! (the engine's CPython tag), `abi_version`, `host_version`, `engines()` (names of the engines
//! pyhost finds), `engine_statistics()` (the engine's counters, as a dict).
//!
//! Multi-phase initialization, declared safe for sub-interpreters with their own GIL, so engines
//! that run sub-interpreters can import it there too.

use crate::loader::{LoadedEngine, Phase};
use crate::services::{host_services, HOST_VERSION};
use pyhost_abi::ABI_VERSION;
use pyo3_ffi as ffi;
use std::ffi::{c_int, CString};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static ENGINE: OnceLock<LoadedEngine> = OnceLock::new();
static AT_EXIT_FAILED: AtomicBool = AtomicBool::new(false);

/// The part of the module written in Python (`pyhost.bench`, the engine-module import hint).
const PYTHON_PART: &std::ffi::CStr = {
    const SOURCE: &str = concat!(include_str!("pyhost_python.py"), "\0");
    match std::ffi::CStr::from_bytes_with_nul(SOURCE.as_bytes()) {
        Ok(source) => source,
        Err(_) => panic!("pyhost_python.py must not contain NUL bytes"),
    }
};

/// Makes `import pyhost` available; must be called before the interpreter is initialized.
pub fn install(engine: LoadedEngine) {
    let _ = ENGINE.set(engine);
    // SAFETY: PyImport_AppendInittab is documented as callable before Py_Initialize; the name
    // is a static C string.
    let rc = unsafe { ffi::PyImport_AppendInittab(c"pyhost".as_ptr(), Some(init_pyhost_module)) };
    if rc != 0 {
        tracing::warn!("could not register the built-in pyhost module");
    }
}

/// Whether the engine's `at_exit` hook reported an error.
pub fn at_exit_failed() -> bool {
    AT_EXIT_FAILED.load(Ordering::SeqCst)
}

// SAFETY (all statics below): CPython reads these definitions and never writes them except
// through PyModuleDef_Init's one-time base initialization, which happens under the GIL.
static mut MODULE_DEF: ffi::PyModuleDef = ffi::PyModuleDef {
    m_base: ffi::PyModuleDef_HEAD_INIT,
    m_name: c"pyhost".as_ptr(),
    m_doc: c"Which pyhost engine runs this program, and what pyhost knows about engines.".as_ptr(),
    m_size: 0,
    m_methods: (&raw mut METHODS).cast(),
    m_slots: (&raw mut SLOTS).cast(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
};

static mut METHODS: [ffi::PyMethodDef; 3] = [
    ffi::PyMethodDef {
        ml_name: c"engines".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: engines },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"engines()\n--\n\nNames of the engines pyhost finds on its search path.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"engine_statistics".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: engine_statistics },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"engine_statistics()\n--\n\nThe running engine's counters, as a dict of floats.".as_ptr(),
    },
    ffi::PyMethodDef::zeroed(),
];

static mut SLOTS: [ffi::PyModuleDef_Slot; 3] = [
    ffi::PyModuleDef_Slot { slot: ffi::Py_mod_exec, value: exec_module as *mut std::ffi::c_void },
    ffi::PyModuleDef_Slot {
        slot: ffi::Py_mod_multiple_interpreters,
        value: ffi::Py_MOD_PER_INTERPRETER_GIL_SUPPORTED,
    },
    ffi::PyModuleDef_Slot { slot: 0, value: ptr::null_mut() },
];

static mut AT_EXIT_DEF: ffi::PyMethodDef = ffi::PyMethodDef {
    ml_name: c"_pyhost_engine_at_exit".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer { PyCFunction: run_at_exit_hook },
    ml_flags: ffi::METH_NOARGS,
    ml_doc: ptr::null(),
};

extern "C" fn init_pyhost_module() -> *mut ffi::PyObject {
    // SAFETY: MODULE_DEF is a valid, 'static module definition.
    unsafe { ffi::PyModuleDef_Init(&raw mut MODULE_DEF) }
}

/// Runs `body` with panics turned into a Python RuntimeError (panics never cross into CPython).
fn guarded(body: impl FnOnce() -> *mut ffi::PyObject) -> *mut ffi::PyObject {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(_) => {
            // SAFETY: called with the GIL held (we are inside a CPython call).
            unsafe {
                ffi::PyErr_SetString(ffi::PyExc_RuntimeError, c"internal error in pyhost (panic)".as_ptr())
            };
            ptr::null_mut()
        }
    }
}

fn to_c(value: &str) -> CString {
    CString::new(value.replace('\0', "\u{FFFD}")).expect("NULs were replaced")
}

unsafe extern "C" fn exec_module(module: *mut ffi::PyObject) -> c_int {
    let status = guarded(|| {
        let engine = ENGINE.get();
        let attributes: [(&std::ffi::CStr, Option<String>); 6] = [
            (c"engine", engine.map(|e| e.descriptor.name.to_string())),
            (c"engine_version", engine.map(|e| e.descriptor.version.to_string())),
            (c"engine_description", engine.map(|e| e.descriptor.description.to_string())),
            (c"engine_python", engine.map(|e| e.descriptor.python.tag())),
            (c"abi_version", Some(ABI_VERSION.to_string())),
            (c"host_version", Some(HOST_VERSION.to_string())),
        ];
        for (name, value) in attributes {
            let value = to_c(value.as_deref().unwrap_or(""));
            // SAFETY: GIL held during module execution; both strings outlive the call.
            if unsafe { ffi::PyModule_AddStringConstant(module, name.as_ptr(), value.as_ptr()) } < 0 {
                return ptr::null_mut();
            }
        }
        // engine_path: the library file, or None for an engine built into pyhost.
        let path = engine.and_then(|e| e.path()).map(|p| to_c(&p.display().to_string()));
        // SAFETY: GIL held; the value is a new reference (or Py_None) that AddObjectRef does not steal.
        unsafe {
            let value = match &path {
                Some(path) => ffi::PyUnicode_FromString(path.as_ptr()),
                None => ffi::Py_NewRef(ffi::Py_None()),
            };
            if value.is_null() {
                return ptr::null_mut();
            }
            let rc = ffi::PyModule_AddObjectRef(module, c"engine_path".as_ptr(), value);
            ffi::Py_DECREF(value);
            if rc < 0 {
                return ptr::null_mut();
            }
        }
        // SAFETY: GIL held; the module's dict is borrowed, the source is a static C string, the
        // code object is released.
        unsafe {
            let globals = ffi::PyModule_GetDict(module);
            let code = ffi::Py_CompileString(
                PYTHON_PART.as_ptr(),
                c"<pyhost built-in>".as_ptr(),
                ffi::Py_file_input,
            );
            if code.is_null() {
                return ptr::null_mut();
            }
            let result = ffi::PyEval_EvalCode(code, globals, globals);
            ffi::Py_DECREF(code);
            if result.is_null() {
                return ptr::null_mut();
            }
            ffi::Py_DECREF(result);
        }
        module
    });
    if status.is_null() {
        -1
    } else {
        0
    }
}

/// Builds a Python str (new reference) or returns NULL with an exception set.
///
/// SAFETY: the GIL must be held.
unsafe fn py_str(value: &str) -> *mut ffi::PyObject {
    ffi::PyUnicode_FromStringAndSize(value.as_ptr().cast(), value.len() as ffi::Py_ssize_t)
}

unsafe extern "C" fn engines(_module: *mut ffi::PyObject, _args: *mut ffi::PyObject) -> *mut ffi::PyObject {
    guarded(|| {
        let names = crate::loader::available_engine_names();
        // SAFETY: GIL held; every reference created is either stolen by the list or released.
        unsafe {
            let list = ffi::PyList_New(0);
            if list.is_null() {
                return list;
            }
            for name in names {
                let item = py_str(&name);
                if item.is_null() || ffi::PyList_Append(list, item) < 0 {
                    ffi::Py_XDECREF(item);
                    ffi::Py_DECREF(list);
                    return ptr::null_mut();
                }
                ffi::Py_DECREF(item);
            }
            list
        }
    })
}

unsafe extern "C" fn engine_statistics(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| {
        let stats = match ENGINE.get().map(LoadedEngine::statistics) {
            Some(Ok(stats)) => stats,
            Some(Err(message)) => {
                let message = to_c(&format!("engine statistics failed: {message}"));
                // SAFETY: GIL held.
                unsafe { ffi::PyErr_SetString(ffi::PyExc_RuntimeError, message.as_ptr()) };
                return ptr::null_mut();
            }
            None => Vec::new(),
        };
        // SAFETY: GIL held; references are released on every path.
        unsafe {
            let dict = ffi::PyDict_New();
            if dict.is_null() {
                return dict;
            }
            for stat in stats {
                let value = ffi::PyFloat_FromDouble(stat.value);
                let name = to_c(stat.name.as_str());
                if value.is_null() || ffi::PyDict_SetItemString(dict, name.as_ptr(), value) < 0 {
                    ffi::Py_XDECREF(value);
                    ffi::Py_DECREF(dict);
                    return ptr::null_mut();
                }
                ffi::Py_DECREF(value);
            }
            dict
        }
    })
}

unsafe extern "C" fn run_at_exit_hook(
    _module: *mut ffi::PyObject,
    _args: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    guarded(|| {
        if let Some(engine) = ENGINE.get() {
            if let Err(err) = engine.run_hook(Phase::AtExit, host_services(engine.name())) {
                eprintln!("pyhost: error: {err}");
                AT_EXIT_FAILED.store(true, Ordering::SeqCst);
            }
        }
        // SAFETY: GIL held; Py_None is immortal, returning a new reference to it is correct.
        unsafe { ffi::Py_NewRef(ffi::Py_None()) }
    })
}

/// Prepares the main interpreter before the program runs: registers the engine's `at_exit` hook
/// with the `atexit` module (so it runs after the program's own handlers) and installs the
/// import hint for other engines' modules.
pub fn prepare_main_interpreter() -> Result<(), String> {
    // SAFETY: GIL held (called between initialization and Py_RunMain on the main thread);
    // every new reference is released.
    unsafe {
        let function = ffi::PyCFunction_New(&raw mut AT_EXIT_DEF, ptr::null_mut());
        let atexit = ffi::PyImport_ImportModule(c"atexit".as_ptr());
        let pyhost = ffi::PyImport_ImportModule(c"pyhost".as_ptr());
        let mut ok = !function.is_null() && !atexit.is_null() && !pyhost.is_null();
        for (object, method, arg) in
            [(atexit, c"register", function), (pyhost, c"_install_engine_module_hint", ptr::null_mut())]
        {
            if !ok {
                break;
            }
            let name = ffi::PyUnicode_FromString(method.as_ptr());
            let result = if name.is_null() {
                ptr::null_mut()
            } else if arg.is_null() {
                ffi::PyObject_CallMethodNoArgs(object, name)
            } else {
                ffi::PyObject_CallMethodOneArg(object, name, arg)
            };
            ok = !result.is_null();
            ffi::Py_XDECREF(result);
            ffi::Py_XDECREF(name);
        }
        ffi::Py_XDECREF(pyhost);
        ffi::Py_XDECREF(atexit);
        ffi::Py_XDECREF(function);
        if !ok {
            ffi::PyErr_Print();
            return Err("preparing the interpreter failed (traceback above)".to_string());
        }
    }
    Ok(())
}
