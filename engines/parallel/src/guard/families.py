"""PyParallel's PX/PY rule, object by object (the `_parallel_guard` module, run in workers).

A worker imports the main script itself, so the script's state in a worker is the worker's
own copy. `guard_script` walks that copy once, from the script's globals, and makes sure no
task can change it without a word. Every object found belongs to one family, and each family
has one way of being kept:

- watched: a dict (any dict subclass too, e.g. Counter, OrderedDict, defaultdict) or the
  `__dict__` of an object is watched by a dict watcher (guard/mod.rs), which sees every change,
  C code's included; the task fails at its next bytecode and the change is undone at its end.
- read-only type: the object is given a sibling type (a subclass adding no fields, named as
  its type) whose mutators refuse before anything changes: lists, sets, bytearrays, deques,
  arrays, OrderedDicts (reordering), defaultdicts (their factory), instances with
  `__slots__`, `random.Random`, `io.BytesIO`/`StringIO`. Buffers (bytearray, array) give
  read-only views only.
- in main: locks, conditions, events, semaphores, barriers, queues, files and sockets bound to
  a module-level name or a class attribute are replaced in the worker's copy by a stand-in
  (InMain) whose every use runs on the main interpreter's object (guard/in_main.rs).
- main only: objects that every use changes (iterators and generators), and the objects above
  found anywhere else, are replaced by a stand-in that refuses every use.
- twins: the C mutators of those types and heapq's functions are replaced in each worker,
  before the script is imported, by guarded twins (guard/twins.rs) that refuse on the
  script's objects however they are reached (`list.append(G, x)`, `map(list.append, [G],
  [x])`, `APPEND = G.append` bound at import, `heapq.heappush(G, x)`).
- followed: tuples, frozensets, mapping proxies, modules and classes of the program: their
  contents are guarded, they themselves cannot change (modules and classes: watched). A
  stand-in takes its object's place in a tuple (the worker's own copy) or a slot too.
- worker-local: objects of the standard library that are not containers (loggers, compiled
  patterns...): their attribute bindings are watched (a rebinding is refused), their insides
  are their own business. Objects of installed packages are their package's business
  entirely: they keep caches in their attributes (Django's settings, werkzeug's proxies).

The walk runs once per worker, before its first task; it costs nothing per task (a twin
costs one check of its object's type per call).
"""

import sys as _sys
from types import ModuleType as _ModuleType

import _parallel_core as _core

# ids of the main script's state in this worker (every guarded object and stand-in).
py_ids = frozenset()

# What the walk could not guard (type name and why), for tests and for the curious.
unguarded = []


def _refuse(what):
    """Raises parallel.ProtectionError for `what` (and records it: the task fails even if it
    catches the error)."""
    import parallel
    raise parallel.ProtectionError(_core.guard_violation(what))


def _a(type_name):
    """'a 'list'' or 'an 'array'': the type name quoted, with its article."""
    return f"{'an' if type_name[:1].lower() in 'aeiou' else 'a'} '{type_name}'"


# ----- families of read-only types: mutator name -> verb for the message -----

_LIST = {
    "append": "append to", "extend": "extend", "insert": "insert into", "pop": "pop from",
    "remove": "remove from", "clear": "clear", "sort": "sort", "reverse": "reverse",
    "__setitem__": "assign an item or slice of", "__delitem__": "delete an item or slice of",
    "__iadd__": "extend (+=)", "__imul__": "repeat (*=)",
}
_SET = {
    "add": "add to", "discard": "discard from", "remove": "remove from", "pop": "pop from",
    "clear": "clear", "update": "update", "intersection_update": "update",
    "difference_update": "update", "symmetric_difference_update": "update",
    "__ior__": "update (|=)", "__iand__": "update (&=)", "__isub__": "update (-=)",
    "__ixor__": "update (^=)",
}
_BYTEARRAY = {name: verb for name, verb in _LIST.items() if name != "sort"}
_DEQUE = {
    **{name: verb for name, verb in _LIST.items() if name != "sort"},
    "appendleft": "append to", "extendleft": "extend", "popleft": "pop from", "rotate": "rotate",
}
_ARRAY = {
    **{name: verb for name, verb in _LIST.items() if name not in ("sort", "clear")},
    "byteswap": "byteswap", "frombytes": "extend", "fromfile": "extend", "fromlist": "extend",
    "fromunicode": "extend",
}
_ORDERED_DICT = {"move_to_end": "reorder"}  # every other change is a dict change (watched)
_ATTRIBUTES = {"__setattr__": "set attribute", "__delattr__": "delete attribute"}
_RANDOM = {name: "draw from" for name in ("random", "getrandbits", "randbytes", "gauss")}
_RANDOM.update(seed="seed", setstate="set the state of")
_STREAM = {
    "write": "write to", "writelines": "write to", "truncate": "truncate", "seek": "seek in",
    "read": "read from", "read1": "read from", "readline": "read from", "readlines": "read from",
    "readinto": "read from", "readinto1": "read from", "__next__": "read from",
    "close": "close", "__exit__": "close", "getbuffer": "export the buffer of",
}

def _family_tables():
    """(type, mutators) pairs for the types the script may hold, most specific first; only
    modules already imported are looked at (an object of a type never imported cannot exist)."""
    tables = []
    collections = _sys.modules.get("collections")
    if collections is not None:
        tables += [(collections.OrderedDict, _ORDERED_DICT), (collections.defaultdict, _ATTRIBUTES),
                   (collections.deque, _DEQUE)]
    array = _sys.modules.get("array")
    if array is not None:
        tables.append((array.array, _ARRAY))
    random = _sys.modules.get("random")
    if random is not None:
        tables.append((random.Random, _RANDOM))
    io = _sys.modules.get("io")
    if io is not None:
        tables += [(io.BytesIO, _STREAM), (io.StringIO, _STREAM)]
    tables += [(list, _LIST), (set, _SET), (bytearray, _BYTEARRAY)]
    return tables


def _main_only_types():
    """Types whose objects a task cannot use at all (stand-ins replace them)."""
    kinds = []
    threading = _sys.modules.get("threading")
    if threading is not None:
        kinds += [type(threading.Lock()), type(threading.RLock()), threading._PyRLock,
                  threading.Condition, threading.Semaphore, threading.Event, threading.Barrier]
    queue = _sys.modules.get("queue")
    if queue is not None:
        kinds += [queue.Queue, queue.SimpleQueue]
        if queue.SimpleQueue is not getattr(queue, "_PySimpleQueue", queue.SimpleQueue):
            kinds.append(queue._PySimpleQueue)
    # Files and sockets: a worker that imports the script opens its own (in-memory streams,
    # BytesIO and StringIO, are read-only families instead).
    io = _sys.modules.get("io")
    if io is not None:
        kinds.append(io.IOBase)
    socket = _sys.modules.get("socket")
    if socket is not None:
        kinds.append(socket.socket)
    return tuple(kinds)


def _has_slots(kind):
    return any(getattr(base, "__slots__", ()) for base in kind.__mro__[:-1] if "__slots__" in vars(base))


def _slot_values(obj):
    """(member descriptor, value) of each filled slot of `obj`."""
    values = []
    for base in type(obj).__mro__:
        slots = vars(base).get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{base.__name__.lstrip('_')}{name}"  # private names are mangled
            member = vars(base).get(name)
            try:
                values.append((member, member.__get__(obj, type(obj))))
            except (AttributeError, TypeError):
                pass
    return values


class MainOnly:
    """Stands, in a worker, for an object of the main script that a task cannot use (an
    iterator, a lock, a queue...): every use raises ProtectionError naming the object."""

    __slots__ = ("_what", "_repr")

    def __init__(self, obj, what):
        object.__setattr__(self, "_what", what)
        object.__setattr__(self, "_repr", repr(obj))

    def _refuse(self, *_):
        _refuse(self._what)

    def __getattr__(self, name):
        _refuse(f"{self._what} ('{name}')")

    __setattr__ = __delattr__ = __iter__ = __next__ = __enter__ = __exit__ = __call__ = _refuse
    __reduce_ex__ = __len__ = __getitem__ = _refuse

    def __repr__(self):
        return self._repr


_NOT_SHARED = ("(a lock, condition, event, semaphore, barrier, queue, file or socket is shared with "
               "tasks when it is bound to a module-level name or a class attribute of the program, "
               "not inside another object)")

# Replies of `in_main`: the value, the main object itself, an exception, "a method".
_VALUE, _ITSELF, _RAISED, _METHOD = range(4)


class InMain:
    """Stands, in a worker, for a lock, condition, event, semaphore, barrier, queue, file or
    socket of the main script: every use acts on the main interpreter's object itself (the
    worker thread runs it there, guard/in_main.rs), so one lock excludes every worker and
    main, what a task puts in a queue main gets, and what it writes to a file goes through
    main's file object. Arguments and results cross by copy."""

    __slots__ = ("_where", "_repr", "_methods")

    def __init__(self, module, name, obj):
        object.__setattr__(self, "_where", (module, name, type(obj).__name__))
        object.__setattr__(self, "_repr", f"<main interpreter's {type(obj).__name__} {module}.{name}>")
        object.__setattr__(self, "_methods", {})

    def _request(self, operation, *args, **kwargs):
        import parallel
        request = parallel._dumps((*self._where, operation, args, kwargs),
                                  f"the arguments of {self._where[2]}.{operation}() to the main interpreter")
        kind, value = parallel._loads(_core.main_call(request))
        if kind == _RAISED:
            raise parallel._raised(value)
        return kind, value

    def _call(self, operation, *args, **kwargs):
        kind, value = self._request(operation, *args, **kwargs)
        return self if kind == _ITSELF else value

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        method = self._methods.get(name)
        if method is None:
            kind, value = self._request(None, name)
            if kind != _METHOD:
                return value  # a plain attribute, e.g. Queue.maxsize: a copy of main's
            method = self._methods[name] = _main_method(self, name)
        return method

    def __setattr__(self, name, value):
        _refuse(f"set attribute '{name}' of {_a(self._where[2])}")

    def __enter__(self):
        return self._call("__enter__")

    def __exit__(self, *exc_info):
        return self._call("__exit__", None, None, None)

    def __iter__(self):  # the lines of a file
        return self

    def __next__(self):
        return self._call("__next__")

    def __reduce_ex__(self, protocol):
        _refuse(f"send {_a(self._where[2])} (it is the main interpreter's)")

    def __repr__(self):
        return self._repr


def _main_method(stand_in, name):
    def method(*args, **kwargs):
        return stand_in._call(name, *args, **kwargs)
    method.__name__ = method.__qualname__ = name
    return method


def in_main(request):
    """Runs in the main interpreter, on a worker's thread (guard/in_main.rs): one use of a
    main-script object by a task. Returns the pickled (kind, value) reply."""
    import parallel
    try:
        module, name, type_name, operation, args, kwargs = parallel._loads(request)
        obj = _sys.modules["__main__" if module == "__mp_main__" else module]
        for part in name.split("."):
            obj = getattr(obj, part)
        if type(obj).__name__ != type_name:
            raise parallel.ProtectionError(
                f"{module}.{name} of the main interpreter is not {_a(type_name)} any more "
                f"(it is {_a(type(obj).__name__)}): a task cannot use it")
        if operation is None:  # an attribute
            value = getattr(obj, args[0])
            reply = (_METHOD, None) if callable(value) else (_VALUE, value)
        else:
            value = getattr(obj, operation)(*args, **kwargs)
            reply = (_ITSELF, None) if value is obj else (_VALUE, value)
        return parallel._dumps(reply, f"the result of {type_name}.{operation}() to a task")
    except BaseException as error:
        return parallel._dumps((_RAISED, parallel._exception_data(error)), "an exception")


class _Walker:
    def __init__(self, main):
        # Modules whose classes and instances are guarded like the script's own: the script
        # and the program's modules it imported (not the standard library's, nor packages').
        self.owners = {main.__name__}
        self.owners.update(name for name, module in list(_sys.modules.items())
                           if isinstance(module, _ModuleType) and _is_user_module(module))
        self.seen = set()
        self.pending = []
        self.siblings = {}
        self.families = _family_tables()
        self.family_types = tuple(kind for kind, _ in self.families)
        self.main_only = _main_only_types()
        self.data_holders = _data_holders()
        self.stand_ins = {}
        self.module_dicts = {id(main.__dict__): main.__name__}  # globals -> module name
        import functools
        _core.guard_cache_fill_type(functools.cached_property)

    def ours(self, obj):
        return getattr(type(obj), "__module__", None) in self.owners

    def add(self, obj, parent=None, key=None):
        """Queues `obj` (found in `parent` under `key`) unless it was seen; objects a task
        cannot use are replaced by a stand-in in `parent` instead."""
        if id(obj) in self.seen or _core.guard_is_shared(obj):
            return  # seen, or share()d data (and CPython's own constants): immutable, everyone's
        if (self.main_only and isinstance(obj, self.main_only)
                and not isinstance(obj, self.family_types) and not self.ours(obj)):
            where = self.module_level_name(parent, key)
            if where is not None:
                self.replace(obj, parent, key, InMain(*where, obj))
            else:
                self.replace(obj, parent, key, MainOnly(obj, f"use {_a(type(obj).__name__)} {_NOT_SHARED}"))
        elif (_is_iterator(obj) and not isinstance(obj, self.family_types) and not self.ours(obj)
                and not _installed_package_type(type(obj))):  # e.g. werkzeug's request proxy
            self.replace(obj, parent, key, MainOnly(obj, f"advance {_a(type(obj).__name__)}"))
        else:
            self.seen.add(id(obj))
            self.pending.append(obj)

    def module_level_name(self, parent, key):
        """(module, dotted name) under which `parent[key]` is found from its module, if
        `parent` is the globals of the script or of a program module, or a program class."""
        if isinstance(parent, dict) and id(parent) in self.module_dicts:
            return self.module_dicts[id(parent)], key
        if isinstance(parent, type) and "<locals>" not in parent.__qualname__:
            return parent.__module__, f"{parent.__qualname__}.{key}"
        return None

    def replace(self, obj, parent, key, stand_in):
        kept = self.stand_ins.get(id(obj))
        if kept is None:
            # The original is kept too: its id must not be taken by a new object.
            kept = self.stand_ins[id(obj)] = (stand_in, obj)
        stand_in = kept[0]
        self.seen.add(id(stand_in))
        deque = _deque()
        if isinstance(parent, dict):
            dict.__setitem__(parent, key, stand_in)
        elif isinstance(parent, list):
            list.__setitem__(parent, key, stand_in)
        elif isinstance(parent, type):
            type.__setattr__(parent, key, stand_in)
        elif deque is not None and isinstance(parent, deque):
            deque.__setitem__(parent, key, stand_in)
        elif isinstance(parent, tuple) and key is not None:
            # The worker's own copy of the tuple: its item is swapped in place.
            _core.guard_tuple_set(parent, key, stand_in)
        elif type(key).__name__ == "member_descriptor":
            key.__set__(parent, stand_in)  # a slot of an object with __slots__
        else:
            # Inside a frozenset: it cannot be replaced.
            unguarded.append((type(obj).__name__, f"inside a '{type(parent).__name__}'"))

    def walk(self, main):
        _core.guard_watch(main.__dict__, "globals", None)
        self.seen.add(id(main.__dict__))
        self.add_values(main.__dict__)
        while self.pending:
            self.guard(self.pending.pop())
        return frozenset(self.seen)

    def add_values(self, mapping):
        for key, value in list(mapping.items()):
            self.add(value, mapping, key)

    def guard(self, obj):
        kind = type(obj)
        if kind is dict:
            _core.guard_watch(obj, "dict", None)
            self.add_values(obj)
        elif kind is tuple:
            for index, item in enumerate(obj):
                self.add(item, obj, index)
        elif kind is frozenset:
            for item in obj:
                self.add(item, obj)
        elif isinstance(obj, _ModuleType):
            if _is_user_module(obj):
                self.module_dicts[id(obj.__dict__)] = obj.__name__
                _core.guard_watch(obj.__dict__, "module", obj)
                self.add_values(obj.__dict__)
        elif isinstance(obj, type):
            if obj.__module__ in self.owners:
                _core.guard_watch(_type_dict(obj), "class", obj)
                for key, value in list(vars(obj).items()):
                    self.add(value, obj, key)
        else:
            self.guard_instance(obj, kind)

    def guard_instance(self, obj, kind):
        # Deep: the object's contents are guarded too (the program's objects, containers and
        # data holders); shallow: only its attribute bindings (other libraries' objects).
        deep = self.ours(obj) or isinstance(obj, self.data_holders)
        if isinstance(obj, dict):
            collections = _sys.modules.get("collections")
            if collections is not None and isinstance(obj, collections.OrderedDict):
                # Its own order, to put back after a change.
                _core.guard_watch(obj, "ordered", list(obj.items()))
            else:
                _core.guard_watch(obj, "dict", None)
            self.add_values(obj)
            deep = True
        family, mutators = None, {}
        for base, table in self.families:
            if isinstance(obj, base) and not isinstance(obj, _random_system()):
                family, mutators, deep = base, dict(table), True
                break
        slotted = deep and _has_slots(kind)
        if slotted:
            mutators.update(_ATTRIBUTES)
        if mutators:
            self.retype(obj, family, mutators)
        if family is list or (family is not None and family is _deque()):
            for index, item in enumerate(obj):
                self.add(item, obj, index)
        elif isinstance(obj, tuple):  # e.g. named tuples
            for index, item in enumerate(obj):
                self.add(item, obj, index)
        elif family is set or isinstance(obj, frozenset):
            for item in obj:
                self.add(item, obj)
        elif kind.__name__ == "mappingproxy" and kind.__module__ == "builtins":
            import gc
            for mapping in gc.get_referents(obj):
                self.add(mapping)
        if slotted:
            for member, value in _slot_values(obj):
                self.add(value, obj, member)
        attributes = _instance_dict(obj)
        if attributes is None or (not deep and _installed_package_type(kind)):
            # An installed package's object keeps its own caches in its __dict__ (Django's
            # settings, werkzeug's proxies fill them on first use): its insides are its own.
            return
        # CPython 3.13 keeps attributes in the object's inline values, bypassing the dict (and
        # its watcher), while the dict shares them; a non-str key makes the dict take them
        # over for good.
        attributes[0] = None
        del attributes[0]
        _core.guard_watch(attributes, "instance", obj)
        if deep:
            self.add_values(attributes)

    def retype(self, obj, family, mutators):
        kind = type(obj)
        sibling = self.siblings.get(kind)
        if sibling is None:
            try:
                sibling = _sibling_type(kind, family, mutators)
            except Exception as error:
                unguarded.append((kind.__name__, f"no read-only type: {error}"))
                sibling = False
            self.siblings[kind] = sibling
        if sibling is False:
            return
        try:
            _core.guard_retype(obj, sibling)
        except TypeError:
            try:
                object.__setattr__(obj, "__class__", sibling)
            except TypeError as error:
                unguarded.append((kind.__name__, f"cannot retype: {error}"))


def _data_holders():
    """Classes outside the program whose instances only hold data: guarded deep, like the
    program's own objects."""
    import types
    holders = [types.SimpleNamespace]
    collections = _sys.modules.get("collections")
    if collections is not None:
        holders += [collections.ChainMap, collections.UserDict, collections.UserList,
                    collections.UserString]
    argparse = _sys.modules.get("argparse")
    if argparse is not None:
        holders.append(argparse.Namespace)
    return tuple(holders)


def _is_iterator(obj):
    """An iterator or generator (every use advances it), not a stream (a file, BytesIO)."""
    import types
    kind = type(obj)
    if not hasattr(kind, "__next__") and not isinstance(obj, (types.CoroutineType, types.AsyncGeneratorType)):
        return False
    io = _sys.modules.get("io")
    return io is None or not isinstance(obj, io.IOBase)


def _deque():
    collections = _sys.modules.get("collections")
    return collections.deque if collections is not None else None


def _random_system():
    random = _sys.modules.get("random")
    return random.SystemRandom if random is not None else ()


def _instance_dict(obj):
    """The object's own `__dict__` (None if it has none, or a per-thread one)."""
    kind = type(obj)
    if not kind.__dictoffset__ or isinstance(obj, _thread_local()):
        return None
    try:
        attributes = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return None
    return attributes if type(attributes) is dict else None


def _thread_local():
    import _thread
    return _thread._local


def _sibling_type(kind, family, mutators):
    """The read-only sibling of `kind`: a subclass adding no fields, with the same name, whose
    mutators refuse on the main script's objects (and act as the original's on any other
    object of the type, e.g. a copy that a method of the type made)."""
    noun = (family or kind).__name__

    def refusing(name, verb):
        original = getattr(kind, name)
        if name in _ATTRIBUTES:
            def refuse(self, attribute, *value):
                if id(self) in py_ids:
                    _refuse(f"{verb} '{attribute}' of {_a(kind.__name__)} object")
                return original(self, attribute, *value)
        else:
            def refuse(self, *args, **kwargs):
                if id(self) in py_ids:
                    _refuse(f"{verb} {_a(noun)}")
                return original(self, *args, **kwargs)
        refuse.__name__ = refuse.__qualname__ = name
        return refuse

    def reduce_ex(self, protocol):
        # Copies and pickles are plain objects of the original type.
        reduced = kind.__reduce_ex__(self, protocol)
        if not isinstance(reduced, tuple) or len(reduced) < 2:
            return reduced
        swap = lambda item: kind if item is sibling else item  # noqa: E731
        make, args = swap(reduced[0]), tuple(swap(item) for item in reduced[1])
        if getattr(make, "__name__", None) == "__newobj__":  # pickle wants the object's own class there
            make = _new_plain
        return (make, args, *reduced[2:])

    namespace = {name: refusing(name, verb) for name, verb in mutators.items() if hasattr(kind, name)}
    namespace["__reduce_ex__"] = reduce_ex
    if family is bytearray or getattr(family, "__name__", None) == "array":
        namespace["__buffer__"] = _read_only_buffer(kind)
    try:
        # A subclass with its base's memory layout (a class statement would add fields to a
        # built-in type) and no side effects (no __init_subclass__, no registration).
        sibling = _core.guard_make_type(kind, f"{kind.__module__}.{kind.__name__}")
        for name, value in namespace.items():
            setattr(sibling, name, value)
        sibling.__qualname__ = kind.__qualname__
    except TypeError:  # e.g. a metaclass with its own __new__
        namespace.update(__slots__=(), __module__=kind.__module__, __qualname__=kind.__qualname__)
        sibling = type(kind)(kind.__name__, (kind,), namespace)
    sibling.__doc__ = kind.__doc__
    _core.guard_watch_type(sibling)
    return sibling


def _new_plain(kind, *args):
    """Unpickles an object of a main script's read-only type as a plain one."""
    return kind.__new__(kind, *args)


def _read_only_buffer(kind):
    def buffer(self, flags):
        if id(self) in py_ids:
            if flags & 1:  # PyBUF_WRITABLE
                _refuse(f"write through the buffer of {_a(kind.__name__)}")
            return kind.__buffer__(self, flags).toreadonly()
        return kind.__buffer__(self, flags)
    buffer.__name__ = "__buffer__"
    return buffer


def guard_script(main):
    """Makes the main script's state, as imported by this worker, read-only for tasks."""
    global py_ids
    walker = _Walker(main)
    py_ids = walker.walk(main)
    _core.guard_py_ids(py_ids)
    if any(sibling and "__setattr__" in vars(sibling) for sibling in walker.siblings.values()):
        _watch_attribute_calls()  # objects with __slots__, defaultdicts
    return py_ids


# ----- twins: mutators called around the object's type -----
#
# A read-only sibling type refuses `G.append(x)`, but `list.append(G, x)`, `map(list.append,
# [G], [x])`, a method bound before the walk (`APPEND = G.append` at module level) and
# `heapq.heappush(G, x)` reach the C function of the base type or module directly. So before
# the script is imported, each of those functions is replaced in this worker by a guarded twin
# (guard/twins.rs) that refuses on the script's objects: one check of the object's type per
# call, the script's ids looked at only for the read-only sibling types.

_HEAPQ = {"heappush": "push onto", "heappop": "pop from", "heapify": "heapify",
          "heapreplace": "replace the smallest item of", "heappushpop": "push onto",
          "_heapify_max": "heapify", "_heappop_max": "pop from", "_heapreplace_max": "replace an item of"}


def install_twins():
    """Gives the mutators of the families' C types and heapq's functions their twins, in this
    worker, before the script is imported (so that what it binds at import is the twin)."""
    import _collections
    import _heapq
    import _io
    import _random
    import array
    tables = [(list, _LIST), (set, _SET), (bytearray, _BYTEARRAY), (_collections.deque, _DEQUE),
              (array.array, _ARRAY), (_collections.OrderedDict, _ORDERED_DICT),
              (_random.Random, _RANDOM), (_io.BytesIO, _STREAM), (_io.StringIO, _STREAM)]
    done = set()
    for base, table in tables:
        for name, verb in table.items():
            # The class whose dict holds it (random.Random's Python methods end in these).
            owner = next((kind for kind in base.__mro__ if name in vars(kind)), object)
            if owner is object or (owner, name) in done:
                continue
            done.add((owner, name))
            if not _core.guard_twin(owner, name, verb, f"{base.__name__}.{name}()"):
                unguarded.append((f"{owner.__name__}.{name}", "no guarded twin"))
    for name, verb in _HEAPQ.items():
        if hasattr(_heapq, name) and not _core.guard_twin(_heapq, name, verb, f"heapq.{name}()"):
            unguarded.append((f"heapq.{name}", "no guarded twin"))
    heapq = _sys.modules.get("heapq")  # imported before: it copied _heapq's functions
    if heapq is not None:
        for name in _HEAPQ:
            if hasattr(heapq, name) and hasattr(_heapq, name):
                setattr(heapq, name, getattr(_heapq, name))


# ----- object.__setattr__ and object.__delattr__ given the script's object -----
#
# The one pair of mutators without a twin: a twin of object's slot wrapper would become the
# C setattr slot of every class made after it, and CPython specializes attribute stores only
# for the generic one. They matter for objects with __slots__ (an object with a __dict__ is
# watched anyway), and are found with sys.monitoring's CALL event instead, which gives the
# callable and its first argument before the call runs. Each call site reports once and is
# then switched off (sys.monitoring.DISABLE), unless its callable is one of these and it
# passes enough arguments to give the object explicitly; so steady-state code runs
# uninstrumented.

_MONITORING_TOOLS = (5, 4, 3)  # the optimizer's id, then ids the standard library leaves free


def _watch_attribute_calls():
    monitoring = _sys.monitoring
    tool = next((tool for tool in _MONITORING_TOOLS if monitoring.get_tool(tool) is None), None)
    if tool is None:
        unguarded.append(("calls", "no free sys.monitoring tool id: object.__setattr__(obj, ...) is not seen"))
        return
    import dis
    mutators = {getattr(object, name): (f"{verb} of an object through object.{name}()", 3 if name == "__setattr__" else 2)
                for name, verb in _ATTRIBUTES.items()}
    on_call = _core.guard_call_watch(mutators, py_ids, monitoring.DISABLE, dis.opmap["CALL"],
                                     dis.opmap["EXTENDED_ARG"])
    monitoring.use_tool_id(tool, "pyhost parallel: PX/PY guard")
    monitoring.register_callback(tool, monitoring.events.CALL, on_call)
    monitoring.set_events(tool, monitoring.events.CALL)
    global call_watch_tool
    call_watch_tool = tool


call_watch_tool = None  # the sys.monitoring tool id of the call watch, once installed


def stop():
    """The worker's interpreter ends: its objects are plain objects again."""
    global py_ids
    py_ids = frozenset()
    _core.guard_py_ids(py_ids)
    if call_watch_tool is not None:
        _sys.monitoring.set_events(call_watch_tool, 0)


_installed_types = {}  # type -> whether an installed package (site-packages) defines it


def _installed_package_type(kind):
    """Whether `kind` comes from an installed package (not the program, not the standard
    library): its objects are that package's business."""
    known = _installed_types.get(kind)
    if known is None:
        module = _sys.modules.get(getattr(kind, "__module__", None) or "")
        path = getattr(module, "__file__", None)
        known = _installed_types[kind] = isinstance(path, str) and _under_site_packages(path)
    return known


def _under_site_packages(path):
    import os
    import sysconfig
    path = os.path.realpath(path)
    paths = sysconfig.get_paths()
    return any(root and path.startswith(os.path.realpath(root) + os.sep)
               for root in {paths.get("purelib"), paths.get("platlib")})


def _is_user_module(module):
    """A module of the program (its file is outside the standard library and site-packages):
    its globals are PY state like the script's. Standard modules legitimately rebind their
    own globals (tempfile.tempdir, warnings' filter version...), so they are not guarded."""
    path = getattr(module, "__file__", None)
    if not isinstance(path, str):
        return False
    import os
    import sysconfig
    path = os.path.realpath(path)
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        root = paths.get(key)
        if root and path.startswith(os.path.realpath(root) + os.sep):
            return False
    return True


def _type_dict(cls):
    # The real class dict (vars() gives a read-only proxy of it).
    import gc
    for referent in gc.get_referents(vars(cls)):
        if type(referent) is dict:
            return referent
    raise TypeError(f"cannot find the dict of class {cls.__qualname__}")
