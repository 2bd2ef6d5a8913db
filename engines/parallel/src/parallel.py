"""Python callables on every core (pyhost's `parallel` engine).

Work runs in a pool of worker threads, each owning a sub-interpreter with its own GIL, so
pure-Python code runs truly in parallel. Arguments and results cross by copy (builtin data
by the engine's own code, anything else by pickle); functions defined in the main script,
lambdas and closures cross by value.

    import parallel
    squares = parallel.map(lambda x: x * x, range(1000))
    future = parallel.submit(pow, 2, 100)
    with parallel.Executor() as pool:          # a concurrent.futures.Executor
        print(list(pool.map(str.upper, ["a", "b"])))

Workers import the main script as the module `__mp_main__` (its `if __name__ == "__main__":`
block does not run there), as multiprocessing's spawn start method does.
"""

import sys as _sys
import _parallel_core as _core

__all__ = ["map", "submit", "Executor", "workers", "current_context", "share", "SharedData", "protect", "server", "serve", "wsgi_server",
           "unprotect", "protected",
           "is_px", "is_py", "ProtectionError", "TransferError", "TaskContext", "WorkerInfo", "SharedList",
           "SharedDict", "SharedSet", "SharedValue"]

_PICKLE_PROTOCOL = 5
# Task payload: kind byte, 4-byte length of the pickled function, the function, the data.
_TASK_CALL = 0x53  # "S": data = pickled (args, kwargs)
_TASK_CHUNK = 0x4D  # "M": data = pickled list of argument tuples
_TASK_ITEMS = 0x6D  # "m": data = pickled list of single arguments
# Outcome kinds (pool.rs OutcomeKind).
_RETURNED, _RAISED, _NOT_RUN = 0, 1, 2
_RESULT_OBJECT = 3  # worker_next's kind for a result passed as itself

_worker = None  # (pool id, index) inside a worker; None in the main interpreter
_context = None  # the running task's TaskContext (workers only)
_main_import_error = None  # why this worker could not import the main script


class ProtectionError(RuntimeError):
    """A parallel task tried to change main-thread (PY) state: the main script's globals or an
    object reachable from them. Share mutable state with `protect()` instead."""


class TransferError(TypeError):
    """An object cannot cross between the main interpreter and a worker (it cannot be
    pickled, or not rebuilt on the other side)."""


class TaskContext:
    """Where a task runs: returned by `current_context()` inside a task. `thread_id` is the
    worker thread's native id (`threading.get_native_id()` there), not a `threading.get_ident()`
    value."""

    __slots__ = ("worker", "interpreter_id", "thread_id", "task_id")

    def __init__(self, worker, interpreter_id, thread_id, task_id):
        self.worker = worker
        self.interpreter_id = interpreter_id
        self.thread_id = thread_id
        self.task_id = task_id

    def __repr__(self):
        return (f"<parallel.TaskContext worker={self.worker} interpreter_id={self.interpreter_id} "
                f"thread_id={self.thread_id} task_id={self.task_id}>")


class WorkerInfo:
    """One worker of the pool, as `workers()` reports it; `thread_id` is the native id of the
    worker's thread (as `threading.get_native_id()` gives it)."""

    __slots__ = ("index", "interpreter_id", "thread_id", "tasks_done", "state", "error")

    def __init__(self, index, interpreter_id, thread_id, tasks_done, state, error):
        self.index = index
        self.interpreter_id = interpreter_id
        self.thread_id = thread_id
        self.tasks_done = tasks_done
        self.state = state
        self.error = error

    def __repr__(self):
        error = f" error={self.error!r}" if self.error else ""
        return (f"<parallel.WorkerInfo {self.index} {self.state} interpreter_id={self.interpreter_id} "
                f"thread_id={self.thread_id} tasks_done={self.tasks_done}{error}>")


def current_context():
    """The running task's TaskContext inside a worker; None in the main interpreter."""
    return _context


def is_py(obj):
    """Whether `obj` is main-thread (PY) state: anything in the main interpreter; inside a task,
    the main script's globals and what the worker guards below them."""
    if _worker is None:
        return True
    import _parallel_guard
    return id(obj) in _parallel_guard.py_ids


def is_px(obj):
    """Whether `obj` belongs to a parallel context: created by a task (or sent to it by copy)."""
    return not is_py(obj)


# ----- transfer: pickles, with functions by value -----

import pickle as _pickle  # noqa: E402  (after the names a worker needs first)


class _EmptyCell:
    """Stands for a closure cell that has no value yet."""


def _global_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, type(code)):
            names |= _global_names(const)
    return names


_script_names = None


def _script_level_names():
    """Names the main script binds at module level outside its `if __name__ == "__main__":`
    blocks: what a worker's import of the script defines. Empty when there is no script."""
    global _script_names
    if _script_names is None:
        _script_names = frozenset()
        path = _INIT.get("main")
        if path is not None:
            import ast
            import io
            try:
                with io.open_code(path) as source:
                    tree = ast.parse(source.read(), path)
            except (OSError, SyntaxError, ValueError):
                return _script_names
            _script_names = frozenset(_bound_names(tree.body))
    return _script_names


def _is_main_guard(node):
    import ast
    test = node.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return (any(isinstance(side, ast.Name) and side.id == "__name__" for side in sides)
            and any(isinstance(side, ast.Constant) and side.value == "__main__" for side in sides))


def _bound_names(statements):
    import ast
    names = set()
    pending = list(statements)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_main_guard(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue  # their bodies bind local names
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)):
            continue
        pending.extend(ast.iter_child_nodes(node))
    return names


def _main_is_importable():
    return _worker is not None or _INIT.get("main") is not None


def _reduce_function(fn):
    """Pickle `fn` by value: its code (marshal), closure cells, defaults and, when workers
    cannot import its module, the globals it names."""
    import marshal
    module = fn.__module__
    shipped = None
    if module in ("__main__", "__mp_main__"):
        module = "__main__"
        if _worker is None:
            # Send what the worker's import of the script does not define (all of it when
            # there is no script file): names bound only under `if __name__ == "__main__":`.
            defined = _script_level_names()
            shipped = {name: fn.__globals__[name] for name in _global_names(fn.__code__)
                       if name in fn.__globals__ and name not in defined
                       and not (name.startswith("__") and name.endswith("__"))}
    cells = fn.__closure__ or ()
    values = []
    for cell in cells:
        try:
            values.append(cell.cell_contents)
        except ValueError:
            values.append(_EmptyCell)
    state = (fn.__defaults__, fn.__kwdefaults__, tuple(values), shipped, fn.__dict__ or None, fn.__qualname__)
    importable = module != "__main__" or _main_is_importable()
    return (_make_function, (marshal.dumps(fn.__code__), module if importable else None,
                             fn.__name__, len(cells)), state, None, None, _fill_function)


def _make_function(code_bytes, module, name, cell_count):
    import builtins
    import marshal
    import types
    code = marshal.loads(code_bytes)
    if module is None:
        namespace = {"__builtins__": builtins, "__name__": "__mp_main__"}
    elif module == "__main__":
        if _main_import_error is not None:
            raise ImportError(f"this worker could not import the main script: {_main_import_error}")
        namespace = _sys.modules["__main__"].__dict__
    else:
        import importlib
        namespace = importlib.import_module(module).__dict__
    cells = tuple(types.CellType() for _ in range(cell_count))
    return types.FunctionType(code, namespace, name, None, cells)


def _fill_function(fn, state):
    defaults, kwdefaults, values, shipped, attributes, qualname = state
    fn.__defaults__ = defaults
    fn.__kwdefaults__ = kwdefaults
    fn.__qualname__ = qualname
    for cell, value in zip(fn.__closure__ or (), values):
        if value is not _EmptyCell:
            cell.cell_contents = value
    if shipped:
        fn.__globals__.update(shipped)
    if attributes:
        fn.__dict__.update(attributes)


class _Pickler(_pickle.Pickler):
    """Functions of the main script, lambdas and nested functions go by value; modules by
    name; everything else as pickle does it."""

    def reducer_override(self, obj):
        import types
        kind = type(obj)
        if kind is types.FunctionType:
            qualname = obj.__qualname__
            if (obj.__module__ in ("__main__", "__mp_main__") or "<" in qualname
                    or _lookup(obj.__module__, qualname) is not obj):
                return _reduce_function(obj)
        elif kind is types.ModuleType:
            import importlib
            return (importlib.import_module, (obj.__name__,))
        elif kind is types.MappingProxyType:
            address = _table_address(obj)
            if address is not None:
                return (_shared_table, (address,))
        return NotImplemented


def _lookup(module, qualname):
    found = _sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


def _dumps(obj, what, use_native=True):
    """Arguments and results: builtin data in the engine's own format (transfer/ in the
    engine: no pickle, no memo table, a fraction of pickle's cost per item), else the C
    pickler; functions and what it refuses go through _Pickler. The native format starts with
    0x01 and a pickle with 0x80 (PROTO): `_loads` tells them apart. `what` names the object
    in errors: a str, or a function making it (formatted only on error)."""
    if use_native:
        native = _core.transfer_dumps(obj)
        if native is not None:
            return native
    try:
        return _pickle.dumps(obj, _PICKLE_PROTOCOL)
    except RecursionError as error:
        raise TransferError(f"cannot send {_named(what)}: it is nested too deeply to pickle "
                            f"({error})") from error
    except Exception:
        pass
    import io
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, _PICKLE_PROTOCOL).dump(obj)
    except Exception as error:
        raise TransferError(f"cannot send {_named(what)}: {type(error).__name__}: {error}") from error
    return buffer.getvalue()


def _named(what):
    return what() if callable(what) else what


_IMMUTABLE_ATOMS = (type(None), bool, int, float, complex, str, bytes)
_dumped_functions = None  # function -> its pickle, for functions whose pickle cannot go stale


def _cacheable(fn):
    """Whether fn's pickle stays valid as long as fn lives: no closure cells, no globals sent
    by value, defaults made of immutable atoms only (a closure over a list must be sent again
    each time, since the list may have changed)."""
    if fn.__closure__ or fn.__kwdefaults__:
        return False
    if fn.__defaults__ and not all(type(value) in _IMMUTABLE_ATOMS for value in fn.__defaults__):
        return False
    if fn.__module__ in ("__main__", "__mp_main__") and _worker is None:
        defined = _script_level_names()
        return all(name in defined for name in _global_names(fn.__code__) if name in fn.__globals__)
    return True


def _dump_function(fn):
    global _dumped_functions
    if type(fn) is _FunctionType:
        if _dumped_functions is None:
            import weakref
            _dumped_functions = weakref.WeakKeyDictionary()
        cached = _dumped_functions.get(fn)
        if cached is not None and cached[0] is fn.__code__ and cached[1] is fn.__defaults__:
            return cached[2]
        data = _dump_function_uncached(fn)
        if _cacheable(fn):
            _dumped_functions[fn] = (fn.__code__, fn.__defaults__, data)
        return data
    return _dump_function_uncached(fn)


def _dump_function_uncached(fn):
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__!r} object is not callable")
    import io
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, _PICKLE_PROTOCOL).dump(fn)
    except Exception as error:
        raise TransferError(f"cannot send the function {_describe(fn)} to a worker: "
                            f"{type(error).__name__}: {error}") from error
    return buffer.getvalue()


def _describe(fn):
    return getattr(fn, "__qualname__", None) or repr(fn)


def _payload(kind, fn_bytes, data):
    return bytes((kind,)) + len(fn_bytes).to_bytes(4, "little") + fn_bytes + data


_FunctionType = type(_payload)
# (function, its __code__, its __defaults__, the start of its submit() payload) for the last
# cacheable function submitted: submit() in a loop sends the same function each time.
_last_call = (None, None, None, b"")


def _call_header(fn):
    """The start of a submit() payload for fn (kind, size, fn's pickle): the arguments follow."""
    global _last_call
    last = _last_call
    if fn is last[0] and fn.__code__ is last[1] and fn.__defaults__ is last[2]:
        return last[3]
    header = _payload(_TASK_CALL, _dump_function(fn), b"")
    if type(fn) is _FunctionType and fn in _dumped_functions:
        _last_call = (fn, fn.__code__, fn.__defaults__, header)
    return header


# ----- protect(): containers shared by every interpreter -----

import collections.abc as _abc  # noqa: E402

_shared_sites = {}  # main script line -> [(kind, id)] of the protect() calls made there
_site_uses = {}  # in a worker importing the script: line -> calls seen so far
_importing_main = False
# Modules parallel.serve imports (their module-level share()/protect() calls are matched by
# line between main and the workers, as the main script's are).
_served_modules = set()


def _pack(value):
    # Always a pickle: the store compares keys by their bytes, and pickle is what it was
    # built with.
    return _dumps(value, "a value into a protected object", use_native=False)


_unpack = _pickle.loads  # shared values are always pickles: equal keys must give equal bytes


_LENT_ITEMS = 0x02  # first byte of _core.transfer_lent's reference
_NOT_BUILTIN_DATA, _BUILTIN_DATA, _READABLE_IN_PLACE = 0, 1, 2  # _core.transfer_check's answers


def _loads(data, offset=0):
    first = data[offset]
    if first == 0x80:
        return _pickle.loads(data[offset:] if offset else data)
    if first == _LENT_ITEMS:
        return _core.transfer_borrow(data, offset)
    return _core.transfer_loads(data, offset)


class _Shared:
    """Proxy of a protected container: its id in the process-wide store."""

    __slots__ = ("_id", "__weakref__")
    _kind = None

    def __reduce__(self):
        return (_shared_proxy, (self._kind, self._id))

    def _op(self, op, *args):
        return _core.shared_op(self._id, op, *args)

    def _update(self, change):
        """Run `change(contents)` under the write lock; store what it returns."""
        _core.shared_op(self._id, "update", change)


def _shared_proxy(kind, shared_id):
    proxy = object.__new__(_SHARED_TYPES[kind])
    proxy._id = shared_id
    return proxy


class SharedList(_Shared, _abc.MutableSequence):
    """A list every parallel context reads and writes (from `protect(list)`); items are
    copies: change a nested object, then store it again."""

    __slots__ = ()
    _kind = "list"

    def __len__(self):
        return self._op("len")

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.copy()[index]
        return _unpack(self._op("get", index.__index__()))

    def __setitem__(self, index, value):
        if isinstance(index, slice):
            packed = [_pack(item) for item in value]

            def change(items):
                items[index] = packed
                return items
            self._update(change)
        else:
            self._op("set", index.__index__(), _pack(value))

    def __delitem__(self, index):
        if isinstance(index, slice):
            def change(items):
                del items[index]
                return items
            self._update(change)
        else:
            self._op("del", index.__index__())

    def insert(self, index, value):
        self._op("insert", index.__index__(), _pack(value))

    def append(self, value):
        self._op("append", _pack(value))

    def extend(self, values):
        self._op("extend", [_pack(value) for value in values])

    def __iadd__(self, values):
        self.extend(values)
        return self

    def pop(self, index=-1):
        return _unpack(self._op("pop", index.__index__()))

    def remove(self, value):
        def change(items):
            for i, item in enumerate(items):
                if _unpack(item) == value:
                    del items[i]
                    return items
            raise ValueError("SharedList.remove(x): x not in list")
        self._update(change)

    def clear(self):
        self._op("clear")

    def sort(self, *, key=None, reverse=False):
        self._update(lambda items: [_pack(v) for v in sorted([_unpack(i) for i in items], key=key, reverse=reverse)])

    def reverse(self):
        self._update(lambda items: items[::-1])

    def copy(self):
        """A plain list with the current items."""
        return [_unpack(item) for item in self._op("snapshot")]

    def __iter__(self):
        return iter(self.copy())

    def __contains__(self, value):
        return value in self.copy()

    def __eq__(self, other):
        if isinstance(other, (list, SharedList)):
            return self.copy() == list(other)
        return NotImplemented

    def __repr__(self):
        return f"parallel.SharedList({self.copy()!r})"


class SharedDict(_Shared, _abc.MutableMapping):
    """A dict every parallel context reads and writes (from `protect(dict)`). Keys are
    compared by their pickles (1 and 1.0 are different keys); values are copies."""

    __slots__ = ()
    _kind = "dict"

    def __len__(self):
        return self._op("len")

    def __getitem__(self, key):
        value = self._op("get", _pack(key))
        if value is None:
            raise KeyError(key)
        return _unpack(value)

    def __setitem__(self, key, value):
        self._op("set", _pack(key), _pack(value))

    def __delitem__(self, key):
        if not self._op("del", _pack(key)):
            raise KeyError(key)

    def __contains__(self, key):
        return self._op("contains", _pack(key))

    def __iter__(self):
        return iter([_unpack(key) for key in self._op("keys")])

    def get(self, key, default=None):
        value = self._op("get", _pack(key))
        return default if value is None else _unpack(value)

    def setdefault(self, key, default=None):
        return _unpack(self._op("setdefault", _pack(key), _pack(default)))

    _missing = object()

    def pop(self, key, default=_missing):
        value = self._op("pop", _pack(key))
        if value is None:
            if default is SharedDict._missing:
                raise KeyError(key)
            return default
        return _unpack(value)

    def clear(self):
        self._op("clear")

    def __ior__(self, other):
        self.update(other)
        return self

    def copy(self):
        """A plain dict with the current items."""
        return {_unpack(key): _unpack(value) for key, value in self._op("snapshot")}

    def __eq__(self, other):
        if isinstance(other, (dict, SharedDict)):
            return self.copy() == dict(other)
        return NotImplemented

    def __repr__(self):
        return f"parallel.SharedDict({self.copy()!r})"


class SharedSet(_Shared, _abc.MutableSet):
    """A set every parallel context reads and writes (from `protect(set)`); members are
    compared by their pickles."""

    __slots__ = ()
    _kind = "set"

    def __len__(self):
        return self._op("len")

    def __contains__(self, value):
        return self._op("contains", _pack(value))

    def __iter__(self):
        return iter(self.copy())

    def add(self, value):
        self._op("add", _pack(value))

    def discard(self, value):
        self._op("discard", _pack(value))

    def clear(self):
        self._op("clear")

    def copy(self):
        """A plain set with the current members."""
        return {_unpack(item) for item in self._op("snapshot")}

    def __repr__(self):
        return f"parallel.SharedSet({self.copy()!r})"


class SharedValue(_Shared):
    """One value every parallel context reads and writes (from `protect(0)` and other
    non-container values). `+=`, `-=`, `*=` and `add()` are atomic."""

    __slots__ = ()
    _kind = "value"

    @property
    def value(self):
        return _unpack(self._op("get"))

    @value.setter
    def value(self, new):
        self._op("set", _pack(new))

    def get(self):
        return self.value

    def set(self, new):
        self.value = new

    def _apply(self, operation):
        result = []

        def change(packed):
            result.append(operation(_unpack(packed)))
            return _pack(result[0])
        self._update(change)
        return result[0]

    def add(self, amount=1):
        """Add `amount` atomically; returns the new value."""
        return self._apply(lambda value: value + amount)

    def __iadd__(self, amount):
        self._apply(lambda value: value + amount)
        return self

    def __isub__(self, amount):
        self._apply(lambda value: value - amount)
        return self

    def __imul__(self, amount):
        self._apply(lambda value: value * amount)
        return self

    def __eq__(self, other):
        return self.value == (other.value if isinstance(other, SharedValue) else other)

    __hash__ = None

    def __int__(self):
        return int(self.value)

    def __float__(self):
        return float(self.value)

    def __index__(self):
        return self.value.__index__()

    def __repr__(self):
        return f"parallel.SharedValue({self.value!r})"


_SHARED_TYPES = {"list": SharedList, "dict": SharedDict, "set": SharedSet, "value": SharedValue}


def protect(obj):
    """A shared copy of `obj` that every parallel context can read and write under a lock:
    a SharedList, SharedDict or SharedSet for a list, dict or set, a SharedValue for anything
    else (e.g. a counter: `HITS = parallel.protect(0)`, then `HITS += 1` in tasks). Values
    cross by copy. Call it at module level (`SHARED = parallel.protect([])`): workers importing
    the script get the main interpreter's containers back for those calls."""
    if isinstance(obj, _Shared):
        return obj
    site, made = _call_site()
    if made is not None:
        return _shared_proxy(*made)
    _evaluated(obj, "protect")
    if isinstance(obj, list):
        kind, contents = "list", [_pack(item) for item in obj]
    elif isinstance(obj, dict):
        kind, contents = "dict", [(_pack(key), _pack(value)) for key, value in obj.items()]
    elif isinstance(obj, (set, frozenset)) and not isinstance(obj, frozenset):
        kind, contents = "set", [_pack(item) for item in obj]
    else:
        kind, contents = "value", _pack(obj)
    proxy = _shared_proxy(kind, _core.shared_new(kind, contents))
    if site is not None:
        _shared_sites.setdefault(site, []).append((kind, proxy._id))
    return proxy


class _NotEvaluated:
    """What a worker passes, instead of evaluating the argument, to a module-level share() or
    protect() call of the script at a line where the main interpreter made one (the result
    is main's object: `TABLE = parallel.share(build())` does not build again per worker)."""

    def __repr__(self):
        return "<share()/protect() argument not evaluated in a worker>"


_NOT_EVALUATED = _NotEvaluated()


def _evaluated(obj, function):
    if obj is _NOT_EVALUATED:
        raise RuntimeError(
            f"{function}() at module level ran in a worker where the main interpreter made no "
            f"{function}() call at that point: call {function}() unconditionally at module level")


def _skip_shared_arguments(tree, sites):
    """Rewrites the worker's copy of the main script (an ast.Module): the arguments of
    module-level `parallel.share(...)`/`parallel.protect(...)` calls (also as `from parallel
    import share`, and under another module name) at lines in `sites` are not evaluated."""
    import ast
    module_names, function_names = set(), set()
    for statement in ast.walk(tree):
        if isinstance(statement, ast.Import):
            module_names.update(alias.asname or alias.name for alias in statement.names if alias.name == "parallel")
        elif isinstance(statement, ast.ImportFrom) and statement.module == "parallel":
            function_names.update(alias.asname or alias.name for alias in statement.names
                                  if alias.name in ("share", "protect"))

    def is_shared_call(node):
        function = node.func
        if isinstance(function, ast.Name):
            return function.id in function_names
        return (isinstance(function, ast.Attribute) and function.attr in ("share", "protect")
                and isinstance(function.value, ast.Name) and function.value.id in module_names)

    placeholder = "__import__('parallel')._NOT_EVALUATED"
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        # Code run by the module's own frame only: not functions, classes, lambdas or
        # generator expressions (list comprehensions are inlined in the frame, CPython 3.12+).
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.GeneratorExp)):
            continue
        if isinstance(node, ast.Call) and node.lineno in sites and is_shared_call(node) and len(node.args) == 1 \
                and not node.keywords and not isinstance(node.args[0], ast.Starred):
            node.args = [ast.copy_location(ast.parse(placeholder, mode="eval").body, node.args[0])]
            ast.fix_missing_locations(node)
        pending.extend(ast.iter_child_nodes(node))


def _import_served(name):
    """In a worker: imports the module parallel.serve serves as main imported it, with the
    arguments of its module-level share()/protect() calls not evaluated (main's objects are
    used), and guards its state (PX/PY) if no main script was."""
    import ast
    import importlib.util
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_source"):
        return importlib.import_module(name)
    import _parallel_guard
    guard = not _parallel_guard.py_ids
    if guard:
        _parallel_guard.install_twins()
    source = spec.loader.get_source(name)
    tree = ast.parse(source, spec.origin or name)
    _skip_shared_arguments(tree, {line for site in _shared_sites if isinstance(site, tuple) and site[0] == name
                                  for line in (site[1],)})
    module = importlib.util.module_from_spec(spec)
    _sys.modules[name] = module
    try:
        exec(compile(tree, spec.origin or name, "exec"), module.__dict__)
    except BaseException:
        _sys.modules.pop(name, None)
        raise
    if guard:
        _parallel_guard.guard_script(module)
    return module


def _call_site():
    """For protect()/share() called by module-level code of the main script or of a module
    that parallel.serve imports: (site, None) in the main interpreter (the caller records
    what it made there), or (None, what the main interpreter made at the same call) in a
    worker importing that module; else (None, None). A site is the main script's line, or
    (module, line) for a served module."""
    frame = _sys._getframe(2)
    if frame.f_code.co_name != "<module>":
        return None, None
    name = frame.f_globals.get("__name__")
    if frame.f_globals is getattr(_sys.modules.get("__main__"), "__dict__", None) and _worker is None:
        site = frame.f_lineno
    elif _worker is not None and name in ("__main__", "__mp_main__") and _importing_main:
        site = frame.f_lineno
    elif name in _served_modules:
        site = (name, frame.f_lineno)
    else:
        return None, None
    if _worker is None:
        return site, None
    seen = _site_uses.get(site, 0)
    _site_uses[site] = seen + 1
    made_there = _shared_sites.get(site, ())
    return None, (made_there[seen] if seen < len(made_there) else None)


def protected(obj):
    """Whether `obj` is a protected (shared) object."""
    return isinstance(obj, _Shared)


def unprotect(obj):
    """A plain, unshared copy of a protected object's current contents (list, dict, set or
    value); other objects are returned unchanged."""
    if isinstance(obj, SharedValue):
        return obj.value
    if isinstance(obj, _Shared):
        return obj.copy()
    return obj


# ----- share(): immutable data read in place by every worker -----

class SharedData:
    """Immutable data shared with every worker without copies: `.value` is the same object in
    every interpreter. Made by `share()`; send the SharedData (not `.value`) to tasks."""

    __slots__ = ("_address", "_value")

    def __init__(self, address, value):
        self._address = address
        self._value = value

    @property
    def value(self):
        return self._value

    def __reduce__(self):
        return (_shared_data, (self._address,))

    def __len__(self):
        return len(self._value)

    def __getitem__(self, index):
        return self._value[index]

    def __iter__(self):
        return iter(self._value)

    def __contains__(self, item):
        return item in self._value

    def __repr__(self):
        return f"<parallel.SharedData {type(self._value).__name__} at {self._address:#x}>"


def _shared_data(address):
    return SharedData(address, _core.share_get(address))


def server(host, port, protocol, *, workers=None, backlog=1024):
    """A TCP server, PyParallel's protocol style: listens on host:port (0: any free port, see
    `.address`) and serves each connection with a new `protocol()` instance whose
    `data_received(transport, data)` (returning bytes to send, or None) and optional
    `initial_bytes_to_send`, `connection_made(transport)`, `connection_lost(transport, exc)`,
    `pause_writing(transport)`, `resume_writing(transport)` (backpressure, as asyncio's) run in one of `workers` workers (default: one per CPU) of the server's own pool. Returns
    a Server: `serve_forever()`, `close()`, `address`, a context manager."""
    import _parallel_server
    return _parallel_server.server(host, port, protocol, workers=workers, backlog=backlog)


__path__ = []  # a package, for `pyhost --engine parallel -m parallel.serve MODULE:APP`


class _ServeCommand:
    """Finds `parallel.serve` as a module (`-m parallel.serve`); its code is in _parallel_wsgi."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "parallel.serve":
            return None
        import importlib.util
        return importlib.util.spec_from_loader(name, cls, origin="<parallel engine: parallel.serve>")

    @staticmethod
    def create_module(spec):
        return None

    @classmethod
    def exec_module(cls, module):
        exec(cls.get_code(module.__name__), module.__dict__)

    @staticmethod
    def get_code(name):
        import _parallel_wsgi
        return compile(_parallel_wsgi.SERVE_COMMAND, "<parallel engine: parallel.serve>", "exec")

    @staticmethod
    def is_package(name):
        return False


if _ServeCommand not in _sys.meta_path:
    _sys.meta_path.append(_ServeCommand)


def serve(app, host="127.0.0.1", port=8000, **options):
    """Serves the WSGI application `app` (bound to a module-level name) on host:port until
    Ctrl-C, in `workers` workers (default: one per CPU); see wsgi_server() for the options."""
    import _parallel_wsgi
    return _parallel_wsgi.serve(app, host, port, **options)


def wsgi_server(app, host="127.0.0.1", port=8000, *, workers=None, backlog=1024, timeout=30.0,
                max_body=64 * 1024 * 1024, access_log=False):
    """Starts serving the WSGI application `app` and returns the server (`address`, `url`,
    `serve_forever()`, `close()`, a context manager). `timeout`: seconds a client has to send
    a request's headers (and that a keep-alive connection may stay idle); `max_body`: the
    largest request body (413 above it); `access_log`: a line per request through pyhost's
    logging (stderr; `PYHOST_LOG` filters it)."""
    import _parallel_wsgi
    return _parallel_wsgi.wsgi_server(app, host, port, workers=workers, backlog=backlog, timeout=timeout,
                                      max_body=max_body, access_log=access_log)


# Shared tables by address, and the address of each (by the id of its read-only view).
_tables = {}
_table_addresses = {}


def _shared_table(address):
    """The read-only view of the table shared at `address` (one per interpreter)."""
    table = _tables.get(address)
    if table is None:
        import types
        table = _tables[address] = types.MappingProxyType(_core.share_get(address))
        _table_addresses[id(table)] = address
    return table


def _table_address(obj):
    address = _table_addresses.get(id(obj))
    return address if address is not None and _tables.get(address) is obj else None


def share(obj):
    """Share immutable data with every worker, read in place, without copies. The objects
    become immortal (PEP 683) and live until the process exits; TypeError names the first
    mutable object found.

    - None, bool, int, float, complex, str, bytes, and tuples and frozensets of those: returns
      a SharedData, whose `.value` a task that receives it reads in place.
    - a dict whose keys and values are those: returns a read-only mapping (a mappingproxy of a
      copy of the dict: `[]`, `get`, `in`, `len`, iteration, `keys`/`values`/`items`) that
      every worker reads in place; writing to it raises TypeError. Later changes to the dict
      passed in are not seen."""
    if isinstance(obj, SharedData) or _table_address(obj) is not None:
        return obj
    site, made = _call_site()
    if made is not None:  # the main interpreter's data, made at this same line
        kind, address = made
        return _shared_table(address) if kind == "table" else _shared_data(address)
    _evaluated(obj, "share")
    # A worker's objects die with its interpreter: only the main interpreter's can be shared.
    _not_in_worker("share")
    if type(obj) is dict:
        shared, kind = _shared_table(_core.share_freeze(obj)), "table"
        address = _table_address(shared)
    else:
        shared = SharedData(_core.share_freeze(obj), obj)
        kind, address = "data", shared._address
    if site is not None:
        _shared_sites.setdefault(site, []).append((kind, address))
    return shared


# ----- the main side: pools -----

def _cpu_count():
    import os
    return os.process_cpu_count() or 1


def _init_settings():
    """What a worker needs to import the main script the way this interpreter did."""
    import os
    main = _sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is not None and not os.path.isfile(path):
        path = None
    spec = getattr(main, "__spec__", None)
    return {"path": list(_sys.path), "argv": list(_sys.argv), "main": path,
            "package": spec.parent if spec is not None else None, "shared_sites": _shared_sites,
            "served_modules": _served_modules}


_INIT = {} if _worker is not None else _init_settings()


class _RemoteTraceback(Exception):
    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def _raised(data):
    """The exception a task raised, with the worker's traceback as its cause."""
    exc, kind, message, traceback_text = _pickle.loads(data)
    if exc is None:
        exc = RuntimeError(f"{kind}: {message}")
    exc.__cause__ = _RemoteTraceback(f'\n"""\n{traceback_text}"""')
    return exc


def _outcome(kind, data):
    """The value of one outcome, or raise what it holds."""
    if kind == _RETURNED:
        try:
            return _loads(data)
        except Exception as error:
            raise TransferError(f"cannot rebuild a task's result in the main interpreter: "
                                f"{type(error).__name__}: {error}") from error
    if kind == _RAISED:
        raise _raised(data)
    raise RuntimeError(f"parallel: the task did not run: {data.decode(errors='replace')}")


def _not_in_worker(what):
    if _worker is not None:
        raise RuntimeError(
            f"parallel.{what}() cannot be called inside a parallel task or while a worker imports the "
            "main script; put the script's own work under `if __name__ == '__main__':`")


def _own_threads_only():
    """CPython's sys._current_frames() and sys._current_exceptions() walk the threads of every
    interpreter (a crash once workers run: see interpreter_threads.rs in the engine); from the
    first pool on, each interpreter's walk its own threads only."""
    _sys._current_frames = _core.current_frames
    _sys._current_exceptions = _core.current_exceptions


class _Pool:
    """A pool of workers, plus the thread that completes its `submit` futures."""

    def __init__(self, size):
        import threading
        # Results of workers name the script's classes and functions `__mp_main__.X`.
        _sys.modules.setdefault("__mp_main__", _sys.modules["__main__"])
        _main_holds_datetime()
        _own_threads_only()
        self.size = size
        _INIT["shared_sites"] = _shared_sites
        _INIT["served_modules"] = _served_modules
        _INIT["path"] = list(_sys.path)
        self.id = _core.pool_start(size, _pickle.dumps(_INIT, _PICKLE_PROTOCOL))
        self.lock = threading.Lock()
        self.futures = {}
        self.collector = None
        self.closed = False
        self.forgotten = False  # shut down, joined and unknown to the core

    def submit(self, fn, args, kwargs, future_type):
        header = _call_header(fn)
        data = _dumps((args, kwargs), lambda: f"the arguments of {_describe(fn)} to a worker")
        return self.submit_payload(header + data, future_type)

    def submit_payload(self, payload, future_type):
        future = future_type()
        with self.lock:
            if self.closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            task = _core.pool_submit(self.id, payload)
            future._parallel_task = (self, task)
            self.futures[task] = future
            if self.collector is None:
                import threading
                self.collector = threading.Thread(target=self._collect, name=f"parallel-collector-{self.id}",
                                                  daemon=True)
                self.collector.start()
        return future

    def _collect(self):
        while True:
            item = _core.pool_next_completion(self.id, 1.0)
            if item is False:
                return
            if item is None:
                continue
            task, kind, data = item
            with self.lock:
                future = self.futures.pop(task, None)
            if future is None or not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(_outcome(kind, data))
            except BaseException as error:
                future.set_exception(error)

    def map(self, fn, iterables, chunksize):
        if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError("chunksize must be a positive int or None")
        # One iterable: the items go as they are (no 1-tuples to build, pickle and unpack).
        single = len(iterables) == 1
        items = list(iterables[0]) if single else list(zip(*iterables))
        if not items:
            return []
        fn_bytes = _dump_function(fn)
        measured = chunksize is None
        if measured:
            chunksize = _chunk_size(len(items), self.size, _item_costs.get(fn_bytes))
        kind = _TASK_ITEMS if single else _TASK_CHUNK
        what = f"the arguments of {_describe(fn)} to a worker"
        starts = range(0, len(items), chunksize)
        # Builtin data (checked first, at a fraction of the cost of writing it) cannot fail to
        # cross: each chunk is queued as soon as it is written, so the workers start at once;
        # immutable builtin data is not even written: the workers copy it in place from
        # `items` (a list only this call holds), lent to the batch until it closes. Anything
        # else is pickled whole before any task is queued: an argument that cannot cross fails
        # the call before any task runs.
        payloads = None
        check = _core.transfer_check(items)
        if check == _NOT_BUILTIN_DATA:
            payloads = [_payload(kind, fn_bytes, _dumps(items[start:start + chunksize], what))
                        for start in starts]
        batch = _core.batch_open(self.id)
        try:
            if check == _READABLE_IN_PLACE:
                _core.batch_lend(batch, items)
            for number, start in enumerate(starts):
                if payloads:
                    payload = payloads[number]
                elif check == _READABLE_IN_PLACE:
                    stop = min(start + chunksize, len(items))
                    payload = _payload(kind, fn_bytes, _core.transfer_lent(batch, start, stop))
                else:
                    payload = _payload(kind, fn_bytes,
                                       _core.transfer_dumps(items[start:start + chunksize]))
                _core.batch_add(self.id, batch, payload)
            payloads = None
            results = [None] * len(items)  # made while the first chunks run
            # Results are rebuilt straight into their places while the workers compute the rest.
            busy_ns = 0
            for _ in starts:
                # A chunk of builtin data lands in `results` in batch_next itself (data None).
                slot, outcome, data, busy = _core.batch_next(batch, results, chunksize)
                busy_ns += busy
                if data is not None:
                    start = slot * chunksize
                    results[start:start + chunksize] = _outcome(outcome, data)
        finally:
            _core.batch_close(self.id, batch)
        if measured:
            _measured(fn_bytes, len(items), len(starts), busy_ns)
        return results

    def workers(self):
        return [WorkerInfo(i, *fields) for i, fields in enumerate(_core.pool_workers(self.id))]

    def shutdown(self, wait=True, cancel_futures=False):
        with self.lock:
            self.closed = True
            pending = list(self.futures.values()) if cancel_futures else []
        for future in pending:
            future.cancel()
        if self.forgotten:
            return
        _core.pool_shutdown(self.id, False, False)
        if wait:
            # In slices, so that Ctrl-C can interrupt the wait.
            while not _core.pool_wait_stopped(self.id, 0.1):
                pass
            if self.collector is not None:
                self.collector.join()  # it delivers what is left, then ends
            _core.pool_forget(self.id)
            self.forgotten = True

    def interrupt(self):
        """Raise KeyboardInterrupt in the running tasks (at their next bytecode)."""
        if not self.forgotten:
            _core.pool_interrupt(self.id)


# ----- chunk sizes, from the count of items and their measured cost -----

_CHUNKS_PER_WORKER = 16
_MIN_CHUNK_NS = 500_000
_item_costs = {}  # a function's pickle -> ns a worker spent per item in its earlier maps


def _chunk_size(count, workers, cost_ns):
    """Items per chunk of a map. 16 chunks per worker: small enough that a worker on a busier
    core does not finish last by a whole chunk, large enough that the tens of microseconds a
    chunk costs besides its items do not show (multiprocessing uses 4 per worker: 4,000
    0.1-ms tasks on 2 workers took 0.19 s in chunks of 500 and 0.154 s in chunks of 125; 200,000
    trivial ones were as fast in 16 to 64 chunks, and 20% slower in 127). When earlier maps of
    the same function measured its cost per item (`cost_ns`) and the whole map is less work
    than that many chunks of 0.5 ms, fewer, larger chunks go, but never fewer than one per
    worker: the measure may be stale (the same function with heavier arguments)."""
    chunks = min(count, workers * _CHUNKS_PER_WORKER)
    if cost_ns is not None:
        chunks = max(min(chunks, int(count * cost_ns / _MIN_CHUNK_NS)), min(count, workers))
    return -(-count // max(chunks, 1))


def _measured(fn_bytes, count, chunks, busy_ns):
    """Keeps what a map measured of its function's cost per item, when its chunks were large
    enough (16 items or more on average) for a chunk's fixed cost not to count much."""
    if count < 16 * chunks:
        return
    cost = busy_ns / count
    previous = _item_costs.get(fn_bytes)
    if previous is None and len(_item_costs) >= 256:
        _item_costs.clear()
    _item_costs[fn_bytes] = cost if previous is None else (previous + cost) / 2


_default_pool = None
_pools = []  # every pool still open, shut down at exit


def _default(caller="map"):
    global _default_pool
    _not_in_worker(caller)
    if _default_pool is None or _default_pool.closed:
        _default_pool = _Pool(_cpu_count())
        _pools.append(_default_pool)
    return _default_pool


def workers():
    """The default pool's workers (the pool starts if it has not yet)."""
    _not_in_worker("workers")
    return _default().workers()


def _cluster_address():
    """The Dask scheduler PYHOST_PARALLEL_CLUSTER names (map, submit and Executor() go there),
    or None. Read at every call (a program may set it), from os.environ's own dict: its
    Mapping `get` costs ~1 us, a tenth of a submit() round trip."""
    import os
    address = os.environ._data.get(b"PYHOST_PARALLEL_CLUSTER")
    return os.fsdecode(address) if address else None


def map(fn, *iterables, chunksize=None):
    """`[fn(*args) for args in zip(*iterables)]`, computed by the workers in chunks; the list
    keeps the input order. The first exception a task raised is raised here (with the worker's
    traceback as its cause). Ctrl-C cancels the work not yet started and stops the pool.
    With PYHOST_PARALLEL_CLUSTER set, the chunks go to that Dask cluster's workers."""
    _not_in_worker("map")
    if not iterables:
        raise TypeError("map() needs at least one iterable")
    if _cluster_address() is not None:
        import _parallel_cluster
        return _parallel_cluster.default_executor().map_list(fn, iterables, chunksize)
    pool = _default()
    try:
        return pool.map(fn, iterables, chunksize)
    except KeyboardInterrupt:
        _stop_default_pool()
        raise


def _stop_default_pool():
    global _default_pool
    if _default_pool is not None:
        _default_pool.shutdown(wait=False, cancel_futures=True)
        _default_pool.interrupt()
        _default_pool = None


import concurrent.futures as _futures  # noqa: E402
from concurrent.futures._base import FINISHED as _FINISHED, PENDING as _PENDING  # noqa: E402
from time import monotonic as _monotonic  # noqa: E402


class _TaskFuture(_futures.Future):
    """A Future whose cancel() also takes its task out of the pool's queue."""

    _parallel_task = None  # (the _Pool, task id)

    def cancel(self):
        if self._parallel_task is not None and not self.done():
            pool, task = self._parallel_task
            try:
                if not _core.pool_cancel(pool.id, task):
                    return False  # already running
            except ValueError:
                pass  # the pool is gone
            else:
                # Out of the queue, it will never complete: nobody else would let go of it.
                with pool.lock:
                    pool.futures.pop(task, None)
        return super().cancel()

    def running(self):
        if super().running():
            return True
        if self._parallel_task is None or self.done():
            return False
        pool, task = self._parallel_task
        try:
            return _core.pool_task_state(pool.id, task) == "running"
        except ValueError:
            return False  # the pool is gone

    def result(self, timeout=None):
        # Fast path: wait for the task here rather than for the collector thread (one thread
        # hand-off fewer per submit() round trip).
        if self._parallel_task is not None and self._state == _PENDING:
            pool, task = self._parallel_task
            deadline = None if timeout is None else _monotonic() + timeout
            while self._state == _PENDING:
                remaining = 0.05 if deadline is None else max(0.0, deadline - _monotonic())
                try:
                    outcome = _core.pool_wait_task(pool.id, task, remaining)
                except ValueError:
                    break  # the pool is gone
                if outcome is False:
                    break  # the collector has it
                if outcome is not None:
                    with pool.lock:
                        pool.futures.pop(task, None)
                    try:
                        self._finish(_outcome(*outcome), None)
                    except BaseException as error:
                        self._finish(None, error)
                    break
                if deadline is not None and _monotonic() >= deadline:
                    break
            if deadline is not None:
                timeout = max(0.0, deadline - _monotonic())
        return super().result(timeout)

    def _finish(self, value, error):
        """set_running_or_notify_cancel() and set_result()/set_exception() in one step (one
        lock round instead of two; the same state changes, on concurrent.futures.Future's
        attributes as CPython 3.12 and 3.13 define them)."""
        with self._condition:
            if self._state != _PENDING:
                return  # cancelled meanwhile
            if error is None:
                self._result = value
            else:
                self._exception = error
            self._state = _FINISHED
            for waiter in self._waiters:
                if error is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            self._condition.notify_all()
        self._invoke_callbacks()


def submit(fn, /, *args, **kwargs):
    """Run `fn(*args, **kwargs)` on a worker; returns a concurrent.futures.Future. With
    PYHOST_PARALLEL_CLUSTER set, on a worker of that Dask cluster."""
    if _cluster_address() is not None:
        _not_in_worker("submit")
        import _parallel_cluster
        return _parallel_cluster.default_executor().submit(fn, *args, **kwargs)
    return _default("submit").submit(fn, args, kwargs, _TaskFuture)


class Executor(_futures.Executor):
    """A concurrent.futures.Executor on its own pool of `max_workers` workers (default: one
    per CPU). Code written for ProcessPoolExecutor switches by changing that one line.
    `Executor(cluster="tcp://host:8786")` (or PYHOST_PARALLEL_CLUSTER) runs the work on the
    workers of that Dask cluster instead, each `pyhost --engine parallel` on every core of
    its node."""

    def __new__(cls, max_workers=None, cluster=None):
        _not_in_worker("Executor")
        address = cluster if cluster is not None else _cluster_address()
        if address is not None:
            if not isinstance(address, str) or not address:
                raise TypeError("cluster must be a Dask scheduler's address, e.g. 'tcp://host:8786'")
            import _parallel_cluster
            return _parallel_cluster.ClusterExecutor(address)
        return super().__new__(cls)

    def __init__(self, max_workers=None, cluster=None):
        _not_in_worker("Executor")
        if max_workers is None:
            max_workers = _cpu_count()
        elif not isinstance(max_workers, int) or max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        import threading
        self._max_workers = max_workers
        self._pool = None
        self._shutdown = False
        self._lock = threading.Lock()

    def _started(self):
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pool is None:
                self._pool = _Pool(self._max_workers)
                _pools.append(self._pool)
            return self._pool

    def submit(self, fn, /, *args, **kwargs):
        return self._started().submit(fn, args, kwargs, _TaskFuture)

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like ProcessPoolExecutor.map: an iterator of results in input order; `chunksize`
        items go to a worker at a time."""
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        pool = self._started()
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        fn_bytes = _dump_function(fn)
        items = list(zip(*iterables))
        futures = []
        for i in range(0, len(items), chunksize):
            data = _dumps(items[i:i + chunksize], f"the arguments of {_describe(fn)} to a worker")
            futures.append(pool.submit_payload(_payload(_TASK_CHUNK, fn_bytes, data), _TaskFuture))
        return _chained(futures, deadline)

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            self._shutdown = True
            pool = self._pool
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _chained(futures, deadline):
    """Results of chunk futures in order, within `deadline` (time.monotonic(), from map())."""
    import time
    try:
        futures.reverse()
        while futures:
            future = futures.pop()
            remaining = None if deadline is None else deadline - time.monotonic()
            yield from future.result(remaining)
    finally:
        for future in futures:
            future.cancel()


def _shutdown_all():
    """At exit: wait for submitted work, then end every worker (before CPython finalizes). A
    Ctrl-C during that wait interrupts the running tasks and gives them 2 seconds; tasks
    still running then (e.g. blocked in C) are abandoned: the process exits at once (130)."""
    try:
        while _pools:
            _pools[-1].shutdown(wait=True)
            _pools.pop()
    except KeyboardInterrupt:
        import time
        for pool in _pools:
            pool.interrupt()
        deadline = time.monotonic() + 2.0
        try:
            while any(not pool.forgotten and not _core.pool_wait_stopped(pool.id, 0.05) for pool in _pools):
                if time.monotonic() >= deadline:
                    break
            else:
                _shutdown_all()  # everything stopped: finish cleanly
                return
        except KeyboardInterrupt:
            pass
        _exit_now(130, "parallel: interrupted while waiting for running tasks at exit; exiting without them")


def _exit_now(status, message):
    import os
    _sys.stderr.write(message + "\n")
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


if _worker is None:
    import atexit
    atexit.register(_shutdown_all)
    def _after_fork_in_child():
        """The child has no workers: its pools are the parent's, forgotten; a later map or
        submit starts a new default pool, and executors carried over are shut down."""
        global _default_pool
        _core.after_fork_in_child()
        for pool in _pools:
            pool.closed = pool.forgotten = True
        _pools.clear()
        _default_pool = None

    try:
        # No worker interpreter may exist at a fork: CPython 3.13.0's child cannot delete
        # the sub-interpreters it inherits (pool.rs, the fork section). A fork waits for the
        # running tasks; the parent's workers start new interpreters when there is work.
        import os as _os
        _os.register_at_fork(before=_core.before_fork, after_in_parent=_core.after_fork_in_parent,
                             after_in_child=_after_fork_in_child)
    except RuntimeError:
        pass  # a worker's interpreter (no fork there)


# ----- the worker side -----

_function_cache = {}


def _load_function(fn_bytes):
    fn = _function_cache.get(fn_bytes)
    if fn is None:
        try:
            fn = _pickle.loads(fn_bytes)
        except Exception as error:
            raise TransferError(f"cannot rebuild the function in a worker: {type(error).__name__}: {error}") \
                from error
        if len(_function_cache) >= 64:
            _function_cache.clear()
        _function_cache[fn_bytes] = fn
    return fn


def _unpack_task(payload):
    """(kind, function, data) of a task. Runs before the PX/PY guard is on: rebuilding a
    function may add the names it was sent with to the script's globals."""
    kind = payload[0]
    size = int.from_bytes(payload[1:5], "little")
    fn = _load_function(payload[5:5 + size])
    try:
        data = _loads(payload, 5 + size)
    except Exception as error:
        raise TransferError(f"cannot rebuild the arguments of {_describe(fn)} in a worker: "
                            f"{type(error).__name__}: {error}") from error
    return kind, fn, data


def _call(kind, fn, data):
    if kind == _TASK_ITEMS:
        return [fn(item) for item in data]
    if kind == _TASK_CALL:
        args, kwargs = data
        return fn(*args, **kwargs)
    return [fn(*args) for args in data]


def _exception_data(error):
    import traceback
    text = "".join(traceback.format_exception(error))
    kind = f"{type(error).__module__}.{type(error).__qualname__}"
    try:
        data = _pickle.dumps((error, kind, str(error), text), _PICKLE_PROTOCOL)
        _pickle.loads(data)  # an exception class that cannot be rebuilt goes as text
        return data
    except Exception:
        return _pickle.dumps((None, kind, str(error), text), _PICKLE_PROTOCOL)


def _main_holds_datetime():
    """Imports _datetime in the main interpreter before any worker exists. CPython 3.13.0's
    _datetime has static types shared by every interpreter, whose base and MRO tuples are made
    by the first interpreter that imports it and freed by the last one to end (gh-136423):
    when those are two workers, the tuples go back to the wrong interpreter's allocator (a
    double free, an abort at exit). With main the first to import it and the last to end,
    workers only ever take and give back their own share, and use the real C module (so
    zoneinfo and C extensions using the datetime C API work there)."""
    import _datetime  # noqa: F401


class _SerializedExtensionImports:
    """Meta-path finder of a worker: extension modules initialize under a process-wide lock
    (CPython 3.13.0 crashes when several sub-interpreters initialize e.g. _datetime at once)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        for finder in _sys.meta_path:
            if finder is cls:
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if isinstance(loader, _ExtensionFileLoader) or loader is _BuiltinImporter:
            spec.loader = _LockedLoader(loader)
        return spec


class _LockedLoader:
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        spec.loader = self._loader
        _core.import_lock_acquire()
        try:
            return self._loader.create_module(spec)
        finally:
            _core.import_lock_release()

    def exec_module(self, module):
        _core.import_lock_acquire()
        try:
            return self._loader.exec_module(module)
        finally:
            _core.import_lock_release()

    def __getattr__(self, name):
        return getattr(self._loader, name)


def _sleep_in_worker(secs, /):
    """time.sleep() in a parallel worker: the same, except that a Ctrl-C in the main
    interpreter ends it with KeyboardInterrupt, as it would end a sleep of the main thread (the
    built-in one sleeps on in a worker: only the main interpreter's main thread handles
    signals)."""
    if isinstance(secs, float):
        if secs != secs:
            raise ValueError("Invalid value NaN (not a number)")
    else:
        from operator import index
        secs = index(secs)  # the TypeError time.sleep raises for other types
    if secs < 0:
        raise ValueError("sleep length must be non-negative")
    _core.worker_sleep(float(secs))


def _install_sleep_in_worker():
    import time
    _sleep_in_worker.__module__ = "time"  # pickles as time.sleep, the built-in in main
    _sleep_in_worker.__name__ = _sleep_in_worker.__qualname__ = "sleep"
    time.sleep = _sleep_in_worker


def _worker_init(pool_id, index, settings):
    """Runs once in a new worker: set sys.path and sys.argv as in the main interpreter and
    import the main script as __mp_main__. Returns None, or why the script could not load."""
    global _worker, _main_import_error, _INIT
    _worker = (pool_id, index)
    _INIT = {}
    global _ExtensionFileLoader, _BuiltinImporter
    from importlib.machinery import BuiltinImporter as _BuiltinImporter
    from importlib.machinery import ExtensionFileLoader as _ExtensionFileLoader
    _sys.meta_path.insert(0, _SerializedExtensionImports)
    _install_sleep_in_worker()
    _own_threads_only()
    settings = _pickle.loads(settings)
    _sys.path[:] = settings["path"]
    _sys.argv[:] = settings["argv"]
    global _shared_sites, _importing_main, _served_modules
    _shared_sites = settings["shared_sites"]
    _served_modules = settings["served_modules"]
    path = settings["main"]
    if path is None:
        return _import_served_modules()
    import _parallel_guard
    _parallel_guard.install_twins()
    _importing_main = True
    import types
    main = types.ModuleType("__mp_main__")
    main.__file__ = path
    main.__package__ = settings["package"]
    _sys.modules["__mp_main__"] = _sys.modules["__main__"] = main
    import signal
    install_handler = signal.signal
    # Signals reach the main interpreter only: a handler the script installs at module level
    # is not installed in workers (signal.signal() would raise there and fail the import).
    signal.signal = lambda signalnum, handler: signal.SIG_DFL
    try:
        import ast
        import io
        with io.open_code(path) as source:
            tree = ast.parse(source.read(), path)
        _skip_shared_arguments(tree, _shared_sites)
        exec(compile(tree, path, "exec"), main.__dict__)
    except BaseException as error:
        import traceback
        _main_import_error = f"{type(error).__name__}: {error}"
        return "cannot import the main script: " + "".join(traceback.format_exception(error)).rstrip()
    finally:
        _importing_main = False
        signal.signal = install_handler
    _parallel_guard.guard_script(main)
    return _import_served_modules()


def _import_served_modules():
    """The modules parallel.serve serves, imported when the worker starts (before any task,
    as the main script is); None, or why one could not be imported."""
    for name in sorted(_served_modules):
        if name not in _sys.modules:
            try:
                _import_served(name)
            except BaseException as error:
                import traceback
                return f"cannot import {name}: " + "".join(traceback.format_exception(error)).rstrip()
    return None


def _worker_rebind(pool_id, index, settings):
    """Runs in a worker whose pool stopped when a new pool takes it (see pool.rs: ending a
    sub-interpreter does not give all its memory back, so workers are reused). The main
    script stays imported (and guarded) as it was; sys.path and sys.argv follow the new
    pool's settings, as a new worker's would."""
    global _worker, _shared_sites, _served_modules
    _worker = (pool_id, index)
    settings = _pickle.loads(settings)
    _sys.path[:] = settings["path"]
    _sys.argv[:] = settings["argv"]
    _shared_sites, _served_modules = settings["shared_sites"], settings["served_modules"]


def _worker_end(_pool_id, _index, _unused):
    """Just before the worker's interpreter ends. A task that started a thread made the worker
    thread a threading._DummyThread, with a helper in the thread's thread-local data that
    takes it out of threading's table when that data goes; CPython 3.13.0 clears the modules
    before the thread's data when it ends an interpreter, so the helper would run with
    threading's globals gone ("Exception ignored in ... _DeleteDummyThreadOnDel.__del__").
    Let it go now."""
    # Objects of the script are deleted as the interpreter ends (a BytesIO's finalizer closes
    # it): from now on they are plain objects again.
    guard = _sys.modules.get("_parallel_guard")
    if guard is not None:
        guard.stop()
    threading = _sys.modules.get("threading")
    local = getattr(threading, "_thread_local_info", None)
    if local is not None:
        vars(local).pop("_track_dummy_thread_ref", None)


def _worker_loop(pool_id, index, _unused):
    """Serves tasks until the pool stops."""
    global _context
    next_task = _core.worker_next
    guard_begin, guard_end = _core.guard_begin, _core.guard_end
    done, kind, data = 0, _RETURNED, b""
    info = fn = None
    while True:
        try:
            task = next_task(pool_id, index, done, kind, data)
        except Exception as error:
            if kind != _RESULT_OBJECT:
                raise
            kind, data = _RAISED, _exception_data(error)  # writing the result failed (memory)
            continue
        if task is NotImplemented:  # the result is not builtin data: it goes by pickle
            try:
                kind, data = _RETURNED, _dumps(data, lambda: f"the result of {_describe(fn)} back "
                                               "from a worker", use_native=False)
            except BaseException as error:
                kind, data = _RAISED, _exception_data(error)
            continue
        if task is None:
            return
        done, payload = task
        if info is None:
            import threading
            info = _core.pool_workers(pool_id)[index]
            thread_id = threading.get_native_id()
        _context = TaskContext(index, info[0], thread_id, done)
        fn = raised = violation = None
        try:
            kind, fn, data = _unpack_task(payload)
            guard_begin()
            try:
                result = _call(kind, fn, data)
            finally:
                violation = guard_end()
        except BaseException as error:
            raised = error
        finally:
            _context = None
        payload = data = None
        if violation is not None and not isinstance(raised, ProtectionError):
            raised = ProtectionError(violation)  # the task caught it, or raised something else
        if raised is None:
            # worker_next writes the result itself (builtin data, no bytes object between).
            kind, data = _RESULT_OBJECT, result
        else:
            kind, data = _RAISED, _exception_data(raised)
        result = raised = None
