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
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static ENGINE: OnceLock<LoadedEngine> = OnceLock::new();
/// Under `pyhost bench`: the file this process reports to (taken out of the environment at
/// start-up, so that child processes do not inherit it).
static BENCH_OUTPUT: OnceLock<Option<PathBuf>> = OnceLock::new();
static AT_EXIT_FAILED: AtomicBool = AtomicBool::new(false);

/// The part of the module written in Python (`pyhost.bench`).
const PYTHON_PART: &std::ffi::CStr = {
    const SOURCE: &str = concat!(include_str!("pyhost_python.py"), "\0");
    match std::ffi::CStr::from_bytes_with_nul(SOURCE.as_bytes()) {
        Ok(source) => source,
        Err(_) => panic!("pyhost_python.py must not contain NUL bytes"),
    }
};

/// Makes `import pyhost` available; must be called before the interpreter is initialized.
/// `bench_output`: the report file of `pyhost bench`, if it runs this process.
pub fn install(engine: LoadedEngine, bench_output: Option<PathBuf>) {
    let _ = ENGINE.set(engine);
    let _ = BENCH_OUTPUT.set(bench_output);
    // SAFETY: PyImport_AppendInittab is documented as callable before Py_Initialize; the name
    // is a static C string.
    let rc = unsafe { ffi::PyImport_AppendInittab(c"pyhost".as_ptr(), Some(init_pyhost_module)) };
    if rc != 0 {
        tracing::warn!("could not register the built-in pyhost module");
    }
}

/// The report file of `pyhost bench`, when it runs this process.
pub fn bench_output() -> Option<&'static Path> {
    BENCH_OUTPUT.get().and_then(|path| path.as_deref())
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
        // SAFETY: GIL held; the values are new references (or NULL with an error set).
        let engine_path = unsafe {
            match &path {
                Some(path) => ffi::PyUnicode_FromString(path.as_ptr()),
                None => ffi::Py_NewRef(ffi::Py_None()),
            }
        };
        // _bench_output: where pyhost.bench() reports under `pyhost bench` (bytes path), or None.
        // SAFETY: as above.
        let bench_output = unsafe {
            match bench_output() {
                Some(path) => {
                    let bytes = path.as_os_str().as_bytes();
                    ffi::PyBytes_FromStringAndSize(bytes.as_ptr().cast(), bytes.len() as ffi::Py_ssize_t)
                }
                None => ffi::Py_NewRef(ffi::Py_None()),
            }
        };
        // SAFETY: GIL held during module execution; each value is a new reference or NULL.
        unsafe {
            if !add_new_object(module, c"engine_path", engine_path)
                || !add_new_object(module, c"_bench_output", bench_output)
            {
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

/// Adds `value` (a new reference, released here; NULL: an error is already set) to `module` as
/// `name`; false with an exception set on failure.
///
/// SAFETY: the GIL must be held; `module` is a module object.
unsafe fn add_new_object(
    module: *mut ffi::PyObject,
    name: &std::ffi::CStr,
    value: *mut ffi::PyObject,
) -> bool {
    if value.is_null() {
        return false;
    }
    let rc = ffi::PyModule_AddObjectRef(module, name.as_ptr(), value);
    ffi::Py_DECREF(value);
    rc == 0
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
/// with the `atexit` module (so it runs after the program's own handlers) and appends the
/// engine-module import hint to `sys.meta_path`. Nothing here compiles Python code: it runs at
/// every start-up.
pub fn prepare_main_interpreter() -> Result<(), String> {
    // SAFETY: GIL held (called between initialization and Py_RunMain on the main thread);
    // every new reference is released; sys.meta_path is a borrowed reference.
    unsafe {
        let function = ffi::PyCFunction_New(&raw mut AT_EXIT_DEF, ptr::null_mut());
        let atexit = ffi::PyImport_ImportModule(c"atexit".as_ptr());
        let register = c"register";
        let mut ok = !function.is_null() && !atexit.is_null();
        if ok {
            let result = ffi::PyObject_CallMethod(atexit, register.as_ptr(), c"O".as_ptr(), function);
            ok = !result.is_null();
            ffi::Py_XDECREF(result);
        }
        ffi::Py_XDECREF(atexit);
        ffi::Py_XDECREF(function);
        if ok {
            ok = install_engine_module_hint();
        }
        if !ok {
            ffi::PyErr_Print();
            return Err("preparing the interpreter failed (traceback above)".to_string());
        }
    }
    Ok(())
}

static mut HINT_FIND_SPEC_DEF: ffi::PyMethodDef = ffi::PyMethodDef {
    ml_name: c"find_spec".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: hint_find_spec },
    ml_flags: ffi::METH_FASTCALL,
    ml_doc: c"find_spec(name, path=None, target=None)\n--\n\nRaise ModuleNotFoundError naming the engine that provides `name`, if one does.".as_ptr(),
};

/// Appends to `sys.meta_path` a finder (a small module object with a `find_spec` function) that
/// is asked only when no other finder found a top-level module. A module named like an installed
/// engine other than the running one is that engine's module (an engine's Python module carries
/// the engine's name; `stock` has none), so it raises an error saying which engine provides it.
///
/// SAFETY: GIL held.
unsafe fn install_engine_module_hint() -> bool {
    let module = ffi::PyModule_New(c"pyhost._engine_module_hint".as_ptr());
    if module.is_null() {
        return false;
    }
    let function = ffi::PyCFunction_NewEx(&raw mut HINT_FIND_SPEC_DEF, module, ptr::null_mut());
    let ok =
        !function.is_null() && ffi::PyModule_AddObjectRef(module, c"find_spec".as_ptr(), function) == 0 && {
            let meta_path = ffi::PySys_GetObject(c"meta_path".as_ptr());
            !meta_path.is_null() && ffi::PyList_Append(meta_path, module) == 0
        };
    ffi::Py_XDECREF(function);
    ffi::Py_DECREF(module);
    ok
}

unsafe extern "C" fn hint_find_spec(
    _module: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    guarded(|| {
        let name = if nargs >= 1 { *args } else { ptr::null_mut() };
        let path = if nargs >= 2 { *args.offset(1) } else { ffi::Py_None() };
        let mut size: ffi::Py_ssize_t = 0;
        let utf8 = if name.is_null() || path != ffi::Py_None() || ffi::PyUnicode_Check(name) == 0 {
            ptr::null()
        } else {
            ffi::PyUnicode_AsUTF8AndSize(name, &mut size)
        };
        if utf8.is_null() {
            ffi::PyErr_Clear();
            return ffi::Py_NewRef(ffi::Py_None());
        }
        let requested = String::from_utf8_lossy(std::slice::from_raw_parts(utf8.cast::<u8>(), size as usize));
        let running = ENGINE.get().map(|e| e.name().to_string()).unwrap_or_default();
        if requested == running
            || requested == crate::loader::DEFAULT_ENGINE
            || !crate::loader::available_engine_names().iter().any(|n| *n == requested)
        {
            return ffi::Py_NewRef(ffi::Py_None());
        }
        let message = format!(
            "No module named '{requested}': it is provided by the '{requested}' engine, and this program \
             runs under '{running}'; run it with `pyhost --engine {requested} ...`"
        );
        // ModuleNotFoundError(message, name=name), as `import` raises it.
        let text = py_str(&message);
        let call_args = ffi::PyTuple_New(1);
        let kwargs = ffi::PyDict_New();
        if text.is_null() || call_args.is_null() || kwargs.is_null() {
            ffi::Py_XDECREF(text);
            ffi::Py_XDECREF(call_args);
            ffi::Py_XDECREF(kwargs);
            return ptr::null_mut();
        }
        ffi::PyTuple_SetItem(call_args, 0, text); // steals `text`
        let exc = if ffi::PyDict_SetItemString(kwargs, c"name".as_ptr(), name) == 0 {
            ffi::PyObject_Call(ffi::PyExc_ModuleNotFoundError, call_args, kwargs)
        } else {
            ptr::null_mut()
        };
        ffi::Py_DECREF(call_args);
        ffi::Py_DECREF(kwargs);
        if !exc.is_null() {
            ffi::PyErr_SetObject(ffi::PyExc_ModuleNotFoundError, exc);
            ffi::Py_DECREF(exc);
        }
        ptr::null_mut()
    })
}
