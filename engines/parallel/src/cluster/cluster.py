"""`parallel.map`, `parallel.submit` and `parallel.Executor` on a Dask cluster (the
`_parallel_cluster` module).

    executor = parallel.Executor(cluster="tcp://scheduler:8786")
    squares = executor.map(square, range(1000), chunksize=100)

or, for unchanged code, `PYHOST_PARALLEL_CLUSTER=tcp://scheduler:8786`: then `parallel.map`,
`parallel.submit` and `parallel.Executor()` all go to that cluster. Each Dask worker is itself
`pyhost --engine parallel` (one worker process per node, one thread: it runs one chunk at a
time, and the chunk runs on every core of the node through that process's own pool).

What crosses machines goes by cloudpickle (Dask's own serializer: functions and classes of the
main script by value), with three exceptions: `share()`d data is scattered once to every node
(Dask's scatter with broadcast) and shared again there, once per node; a `protect()`ed
container lives in one process and is refused with a TransferError saying so; results and
errors come back as the local pool gives them (a task's exception with its traceback as its
cause; a result that cannot cross: TransferError). Dask reschedules the chunks of a worker
that dies.
"""

import concurrent.futures as _futures
import io as _io
import os as _os
import pickle as _pickle
import threading as _threading

import parallel as _parallel

CLUSTER_ENV = "PYHOST_PARALLEL_CLUSTER"

# A share()d object sent to the cluster: its kind ("data" or "table") and its key (this
# process and the object's address), resolved on the node from the scattered values.
_SHARED_TAG = "pyhost-parallel-shared"


def _import_distributed():
    try:
        import cloudpickle
        import distributed
    except ImportError as error:
        raise ImportError(
            f"parallel: a cluster needs Dask's `distributed` package in this Python "
            f"(`pyhost -m pip install distributed`): {error}") from error
    return distributed, cloudpickle


class _ClusterPickler:
    """Pickles for the nodes with cloudpickle, recording the share()d objects met (sent
    apart, once) and refusing protect()ed ones."""

    def __init__(self, cloudpickle, process_key):
        self._cloudpickle = cloudpickle
        self._process_key = process_key
        self.shared = {}  # key -> (kind, value) of the share()d objects met

    def dumps(self, obj, what):
        outer = self
        buffer = _io.BytesIO()

        class Pickler(self._cloudpickle.Pickler):
            def persistent_id(self, value):
                return outer._persistent_id(value)

        try:
            Pickler(buffer, protocol=_pickle.HIGHEST_PROTOCOL).dump(obj)
        except _parallel.TransferError:
            raise
        except Exception as error:
            raise _parallel.TransferError(
                f"cannot send {what} to the cluster: {type(error).__name__}: {error}") from error
        return buffer.getvalue()

    def _persistent_id(self, value):
        if isinstance(value, _parallel._Shared):
            raise _parallel.TransferError(
                f"cannot send a protect()ed {type(value).__name__} to the cluster: protected "
                "containers live in one process (every worker of this machine shares it, other "
                "machines cannot); send a copy (parallel.unprotect(obj)) or share() immutable data")
        if isinstance(value, _parallel.SharedData):
            key = f"{self._process_key}:{value._address:x}"
            self.shared.setdefault(key, ("data", value.value))
            return (_SHARED_TAG, "data", key)
        address = _parallel._table_address(value) if type(value).__name__ == "mappingproxy" else None
        if address is not None:
            key = f"{self._process_key}:{address:x}"
            self.shared.setdefault(key, ("table", dict(value)))
            return (_SHARED_TAG, "table", key)
        return None


# ----- the node side: runs in each Dask worker (pyhost --engine parallel) -----

_node_shared = {}  # key -> this node's share() of the value sent under it
_node_lock = _threading.Lock()


def _node_loads(data, shared_values):
    """Rebuilds what _ClusterPickler wrote, share()d objects shared on this node once."""

    class Unpickler(_pickle.Unpickler):
        def persistent_load(self, pid):
            tag, kind, key = pid
            if tag != _SHARED_TAG:
                raise _pickle.UnpicklingError(f"unknown persistent id {pid!r}")
            with _node_lock:
                shared = _node_shared.get(key)
                if shared is None:
                    shared = _node_shared[key] = _parallel.share(shared_values[key])
            return shared

    return Unpickler(_io.BytesIO(data)).load()


class _TaskError(Exception):
    """What a task's exception becomes in the node's pool worker: its `_error_data`, made there
    with cloudpickle (the exception's class may be one of the client's script, which only
    cloudpickle can send by value, and bring back as the client's own class)."""


def _outcome_data(call):
    """("returned", pickled result) or ("raised", the error as parallel's workers send it)."""
    import cloudpickle
    try:
        result = call()
    except _TaskError as error:
        return "raised", error.args[0]
    except BaseException as error:
        return "raised", _error_data(error, cloudpickle)
    try:
        return "returned", cloudpickle.dumps(result)
    except Exception as error:
        failure = _parallel.TransferError(
            f"cannot send the result back from the cluster: {type(error).__name__}: {error}")
        return "raised", _error_data(failure, cloudpickle)


def _error_data(error, cloudpickle):
    import traceback
    text = "".join(traceback.format_exception(error))
    kind = f"{type(error).__module__}.{type(error).__qualname__}"
    try:
        return cloudpickle.dumps((error, kind, str(error), text))
    except Exception:
        return cloudpickle.dumps((None, kind, str(error), text))


def _apply(fn_bytes, *args, **kwargs):
    """In a worker of the node's pool: the function (cloudpickled by the client) on `args`."""
    fn = _functions.get(fn_bytes)
    if fn is None:
        if len(_functions) >= 64:
            _functions.clear()
        fn = _functions[fn_bytes] = _pickle.loads(fn_bytes)
    try:
        return fn(*args, **kwargs)
    except BaseException as error:
        import cloudpickle
        raise _TaskError(_error_data(error, cloudpickle)) from None


_functions = {}


def _local_pool():
    """The node's own pool (never the cluster again, whatever the environment says)."""
    return _parallel._default()


def run_chunk(fn_bytes, items_data, star, shared_values):
    """A Dask task: one chunk of a cluster map, on every core of this node."""
    import functools

    def call():
        items = _node_loads(items_data, shared_values)
        apply = functools.partial(_apply, fn_bytes)
        iterables = list(zip(*items)) if star else [items]
        if not items:
            return []
        return _local_pool().map(apply, iterables, None)

    return _outcome_data(call)


def run_call(call_data, shared_values):
    """A Dask task: one submit(), in a worker of this node's pool."""
    import functools

    def call():
        fn_bytes, args, kwargs = _node_loads(call_data, shared_values)
        task = functools.partial(_apply, fn_bytes)
        return _local_pool().submit(task, args, kwargs, _futures.Future).result()

    return _outcome_data(call)


# ----- the client side -----

def _result_of(outcome):
    kind, data = outcome
    if kind == "raised":
        raise _parallel._raised(data)
    return _pickle.loads(data)


class ClusterExecutor(_futures.Executor):
    """A concurrent.futures.Executor whose work runs on the Dask cluster at `address` (what
    `parallel.Executor(cluster=address)` returns)."""

    def __init__(self, address):
        distributed, cloudpickle = _import_distributed()
        self.address = address
        self._cloudpickle = cloudpickle
        try:
            self._client = distributed.Client(address, set_as_default=False, timeout="10s")
        except (OSError, TimeoutError) as error:
            raise ConnectionError(f"parallel: cannot reach the Dask scheduler at {address}: {error}") \
                from error
        self._process_key = f"{_os.getpid()}-{id(self):x}"
        self._scattered = {}  # key -> Dask future of a share()d value, on every node
        self._lock = _threading.Lock()
        self._shutdown = False

    def __repr__(self):
        return f"<parallel cluster executor {self.address}>"

    def _shared_futures(self, pickler):
        """Dask futures of the share()d values the pickler met, scattered once each."""
        with self._lock:
            for key, (_kind, value) in pickler.shared.items():
                if key not in self._scattered:
                    self._scattered[key] = self._client.scatter(value, broadcast=True, hash=False)
            return {key: self._scattered[key] for key in pickler.shared}

    def _check_open(self):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def submit(self, fn, /, *args, **kwargs):
        self._check_open()
        pickler = _ClusterPickler(self._cloudpickle, self._process_key)
        fn_bytes = pickler.dumps(fn, f"the function {_parallel._describe(fn)}")
        call_data = pickler.dumps((fn_bytes, args, kwargs),
                                  f"the arguments of {_parallel._describe(fn)}")
        task = self._client.submit(run_call, call_data, self._shared_futures(pickler), pure=False)
        future = _futures.Future()

        def done(task):
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(_result_of(task.result()))
            except BaseException as error:
                future.set_exception(error)

        task.add_done_callback(done)
        return future

    def map_list(self, fn, iterables, chunksize=None):
        """`parallel.map` on the cluster: a list in input order."""
        self._check_open()
        star = len(iterables) > 1
        items = list(zip(*iterables)) if star else list(iterables[0])
        if not items:
            return []
        if chunksize is None:
            # A few chunks per node: each runs on all of that node's cores.
            nodes = max(1, len(self._client.scheduler_info().get("workers", {})))
            chunksize = -(-len(items) // (nodes * 4))
        elif not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be a positive int or None")
        pickler = _ClusterPickler(self._cloudpickle, self._process_key)
        fn_bytes = pickler.dumps(fn, f"the function {_parallel._describe(fn)}")
        what = f"the arguments of {_parallel._describe(fn)}"
        chunks = [pickler.dumps(items[start:start + chunksize], what)
                  for start in range(0, len(items), chunksize)]
        shared = self._shared_futures(pickler)
        tasks = [self._client.submit(run_chunk, fn_bytes, chunk, star, shared, pure=False)
                 for chunk in chunks]
        try:
            results = []
            for outcome in self._client.gather(tasks):
                results.extend(_result_of(outcome))
            return results
        finally:
            # Only what is still running: the scheduler tells a cancel to every client, and a
            # client registering at that moment fails its handshake (Dask asserts that its first
            # message comes alone).
            unfinished = [task for task in tasks if not task.done()]
            if unfinished:
                self._client.cancel(unfinished)

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """Like ProcessPoolExecutor.map: an iterator of results in input order, `chunksize`
        items per Dask task."""
        if not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if timeout is not None:
            return super().map(fn, *iterables, timeout=timeout)
        return iter(self.map_list(fn, iterables, chunksize))

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        self._client.close()


_default_executor = None
_default_lock = _threading.Lock()


def default_address():
    """The cluster PYHOST_PARALLEL_CLUSTER names, or None."""
    return _os.environ.get(CLUSTER_ENV) or None


def default_executor():
    """The executor of PYHOST_PARALLEL_CLUSTER's cluster, made on first use."""
    global _default_executor
    with _default_lock:
        if _default_executor is None:
            _default_executor = ClusterExecutor(default_address())
        return _default_executor
