"""PyParallel's TCP protocol servers (the `_parallel_server` module; `parallel.server()`).

    class Echo:
        initial_bytes_to_send = b"hello\\n"          # optional
        def connection_made(self, transport): ...   # optional
        def data_received(self, transport, data):   # bytes back are sent
            return data
        def connection_lost(self, transport, exc): ...  # optional
        def pause_writing(self, transport): ...     # optional: over 64 KiB unsent
        def resume_writing(self, transport): ...    # optional: back under 16 KiB

    with parallel.server("127.0.0.1", 8080, Echo) as server:
        server.serve_forever()

The network side is Rust (server/network.rs). Each worker of the server's own pool runs one
long task, `_serve_connections`: every connection belongs to one worker, its callbacks run in
order there, on a new instance of the protocol class per connection, and different
connections run on every core. Callbacks are PX code: the main script's state is read-only in
them, as in tasks. A callback that raises (or breaks the PX/PY rule) has its traceback logged
and its connection closed; the worker goes on.

Backpressure, as asyncio's: while more than the high-water mark (64 KiB) of a connection's
writes wait to be sent, the connection is not read from (a client that sends without reading
the answers is slowed by TCP) and the protocol's `pause_writing(transport)` is called, from
the `write()` that went over it; `resume_writing(transport)` once the queue is back at the
low-water mark (16 KiB). `transport.set_write_buffer_limits()` changes the marks.
"""


import _parallel_core as _core

_MADE, _DATA, _LOST, _DRAINED = 0, 1, 2, 3


class Transport:
    """One connection, as its protocol's callbacks see it."""

    __slots__ = ("_connection", "peer", "_closed", "_protocol", "_in_callback", "_pause_due")

    def __init__(self, connection, peer):
        self._connection = connection
        self.peer = peer  # (host, port) of the client
        self._closed = False
        self._protocol = None  # the connection's protocol instance, once made
        self._in_callback = False
        self._pause_due = False  # went over the high-water mark outside a callback

    def write(self, data):
        """Queues bytes to send (bytes-like); ignored once the connection is gone. Going over
        the high-water mark calls the protocol's pause_writing() (an error there raises here)."""
        if not isinstance(data, bytes):
            data = bytes(memoryview(data))
        if not self._closed and _core.server_write(self._connection, data) == 2:
            if self._in_callback:
                pause = getattr(self._protocol, "pause_writing", None)
                if pause is not None:
                    pause(self)
            else:  # the loop's own write (initial bytes, a reply): it calls pause_writing next
                self._pause_due = True

    def get_write_buffer_size(self):
        """Bytes written and not yet sent."""
        return _core.server_write_buffer_size(self._connection)

    def set_write_buffer_limits(self, high=None, low=None):
        """The marks of backpressure, as asyncio's: default high 64 KiB, low high // 4."""
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        _core.server_set_write_limits(self._connection, high, low)

    def close(self):
        """Closes the connection once what is queued is sent; connection_lost follows."""
        if not self._closed:
            self._closed = True
            _core.server_close(self._connection)

    def is_closing(self):
        return self._closed

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default

    def __repr__(self):
        return f"<parallel.Transport {self.peer[0]}:{self.peer[1]}{' closing' if self._closed else ''}>"


def _serve_connections(server_id, protocol):
    """One worker's part of a server: runs until the server stops (a task of its pool)."""
    events = _core.server_join(server_id)
    # Each callback is guarded as a task of its own: the task's guard is closed here and
    # opened again at the end for the worker loop to close.
    _core.guard_end()
    connections = {}
    try:
        while True:
            event = _core.server_next(events)
            if event is None:
                return None
            kind, connection_id, detail = event
            if kind == _MADE:
                handle, peer = detail
                transport = Transport(handle, peer)
                connections[connection_id] = (None, transport)
                instance = _callback(protocol, None, transport, "creating the protocol")
                if instance is None:
                    continue
                connections[connection_id] = (instance, transport)
                transport._protocol = instance
                initial = getattr(instance, "initial_bytes_to_send", None)
                if initial:
                    transport.write(initial)
                if hasattr(instance, "connection_made"):
                    _callback(instance.connection_made, instance, transport, "connection_made")
                _pause_if_due(instance, transport)
            elif kind == _DATA:
                instance, transport = connections.get(connection_id, (None, None))
                if instance is None or transport.is_closing():
                    continue
                reply = _callback(instance.data_received, instance, transport, "data_received", detail)
                if reply is not None:
                    transport.write(reply)
                _pause_if_due(instance, transport)
            elif kind == _DRAINED:
                instance, transport = connections.get(connection_id, (None, None))
                if instance is not None and not transport.is_closing() and hasattr(instance, "resume_writing"):
                    _callback(instance.resume_writing, instance, transport, "resume_writing")
                    _pause_if_due(instance, transport)
            else:
                instance, transport = connections.pop(connection_id, (None, None))
                if transport is None:
                    continue
                if instance is not None and hasattr(instance, "connection_lost"):
                    error = None if detail is None else ConnectionError(detail)
                    _callback(instance.connection_lost, instance, transport, "connection_lost", error)
                transport._closed = True
                _core.server_close(transport._connection)
    finally:
        _core.guard_begin()


def _pause_if_due(instance, transport):
    if transport._pause_due:
        transport._pause_due = False
        if not transport.is_closing() and hasattr(instance, "pause_writing"):
            _callback(instance.pause_writing, instance, transport, "pause_writing")


def run_guarded(function, *args):
    """Runs function(*args) as PX code guarded as a task of its own (the worker's loop closed
    its task's guard): (result, None), or (None, the error), a PX/PY violation the code caught
    coming back as ProtectionError."""
    result = error = None
    _core.guard_begin()
    try:
        result = function(*args)
    except BaseException as raised:
        error = raised
    finally:
        violation = _core.guard_end()
    if violation is not None and error is None:
        import parallel
        error = parallel.ProtectionError(violation)
    return result, error


def _callback(function, instance, transport, what, *extra):
    """Runs one callback as PX code; on an error (or a PX/PY violation) prints it and closes
    the connection. Returns what the callback returned (None on an error)."""
    transport._in_callback = True
    try:
        result, error = run_guarded(function, transport, *extra) if instance is not None else run_guarded(function)
    finally:
        transport._in_callback = False
    if error is None:
        return result
    import traceback
    name = getattr(type(instance) if instance is not None else function, "__qualname__", "?")
    _core.log("error", f"{what} of {name} for {transport.peer[0]}:{transport.peer[1]} failed; closing the "
                       f"connection:\n{''.join(traceback.format_exception(error)).rstrip()}")
    transport.close()
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        raise error
    return None


def _worker_count(workers):
    if workers is None:
        import os
        workers = os.process_cpu_count() or 1
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, not {workers!r}")
    return workers


class PoolServer:
    """What every server of the engine is: a network side (Rust) identified by `_id`, and a
    pool of its own whose workers each run one loop task (`_loops`) until the network side
    stops. Subclasses give `_stop_network(id)`."""

    _id = None

    def serve_forever(self):
        """Blocks until the server is closed (from another thread) or Ctrl-C, which closes it."""
        import concurrent.futures
        try:
            # In slices: the kernel may hand a SIGTERM or SIGINT to any thread that does not
            # block it, and then the main thread, asleep in an untimed wait, would never run
            # the Python handler (the server once went on serving after a SIGTERM).
            while concurrent.futures.wait(self._loops, timeout=0.25).not_done:
                pass
        finally:
            self.close()

    def close(self):
        """Stops the server and waits for the workers' loops to end (see the subclass)."""
        if self._id is None:
            return
        self._stop()
        for loop in self._loops:
            error = loop.exception()
            if error is not None:
                raise error

    def _stop(self):
        server_id, self._id = self._id, None
        if server_id is not None:
            self._stop_network(server_id)
        self._executor.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class Server(PoolServer):
    """A listening TCP server whose protocol callbacks run on a pool of workers. Made by
    `parallel.server()`; `close()` (or leaving its `with` block) stops accepting, closes every
    connection (its queued writes are sent first, within 5 s) and waits for the workers."""

    def __init__(self, host, port, protocol, workers, backlog):
        import parallel
        if not isinstance(protocol, type):
            raise TypeError(f"parallel.server() needs a protocol class, not {type(protocol).__name__!r}")
        if not hasattr(protocol, "data_received"):
            raise TypeError(f"protocol class {protocol.__qualname__!r} has no data_received(transport, data)")
        workers = _worker_count(workers)
        self._id, host, port = _core.server_start(host, port, backlog)
        self.address = (host, port)
        self.protocol = protocol
        self._executor = parallel.Executor(max_workers=workers)
        self._loops = [self._executor.submit(_serve_connections, self._id, protocol) for _ in range(workers)]
        while not _core.server_wait_joined(self._id, workers, 0.05):
            failed = next((loop for loop in self._loops if loop.done()), None)
            if failed is not None:
                self._stop()
                failed.result()  # a worker that could not start: its error
                raise RuntimeError("a server worker ended before it joined")

    @staticmethod
    def _stop_network(server_id):
        _core.server_stop(server_id)

    @property
    def connections(self):
        """Connections open now."""
        return _core.server_connections(self._id) if self._id is not None else 0

    def __repr__(self):
        state = "closed" if self._id is None else f"{self.connections} connections"
        return f"<parallel.Server {self.address[0]}:{self.address[1]} {self.protocol.__qualname__}, {state}>"


def server(host, port, protocol, *, workers=None, backlog=1024):
    """Listens on host:port (port 0: any free port, see `.address`) and serves each connection
    with a new `protocol()` instance in one of `workers` workers (default: one per CPU)."""
    return Server(host, port, protocol, workers, backlog)
