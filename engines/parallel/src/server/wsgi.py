"""parallel.serve(): a WSGI server (PEP 3333) whose applications run on every core (the
`_parallel_wsgi` module).

    parallel.serve(app, host="127.0.0.1", port=8000, workers=None)    # serves until Ctrl-C

HTTP is Rust (server/http.rs, hyper on tokio): parsing, keep-alive, pipelining, chunked
request bodies, `Expect: 100-continue`, HEAD, header timeouts, 400/431/413 for bad requests.
`wsgi.input` streams the body as it arrives (an upload is never held whole).
Each worker of the server's own pool runs one long task, `_serve_requests`, that takes
requests from one queue shared by the workers, builds the environ in its own interpreter from
the parsed request (nothing is pickled) and streams the response back: every chunk an
iterable gives goes out as it comes, `write()` works, `close()` is called. The application is
found in each worker by its module and name (the main script's module-level `app` is the
worker's copy of it), and runs as PX code: the script's state is read-only in it.
"""

import sys as _sys

import _parallel_core as _core
from _parallel_server import PoolServer as _PoolServer, _worker_count, run_guarded as _run_guarded

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                         "te", "trailers", "transfer-encoding", "upgrade"})


def _app_spec(app):
    """(module, name) by which a worker finds `app`: a module-level function, or an object (a
    Flask app) bound to a module-level name of the main script or of another module."""
    if not callable(app):
        raise TypeError(f"parallel.serve() needs a WSGI application (a callable), not {type(app).__name__!r}")
    module, qualname = getattr(app, "__module__", None), getattr(app, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and _lookup(module, qualname) is app:
        return (module, qualname)
    for name in ["__main__", *sorted(_sys.modules)]:
        namespace = getattr(_sys.modules.get(name), "__dict__", None)
        found = next((key for key, value in namespace.items() if value is app), None) if namespace else None
        if found is not None:
            return (name, found)
    raise ValueError(f"parallel.serve() needs an application bound to a module-level name, so that every "
                     f"worker finds it; {app!r} is not")


def _lookup(module, qualname):
    found = _sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


def _load_app(spec):
    """The application in this worker."""
    module, qualname = spec
    if module not in _sys.modules:
        import parallel
        if module in parallel._served_modules:
            parallel._import_served(module)
        else:
            import importlib
            importlib.import_module(module)
    app = _lookup("__main__" if module in ("__main__", "__mp_main__") else module, qualname)
    if not callable(app):
        raise LookupError(f"no WSGI application {module}:{qualname} in the worker")
    return app


def _check_app(spec):
    _load_app(spec)
    return True


class RequestBodyTooLarge(Exception):
    """The request's body went over the server's max_body (the server answers 413)."""


class _Input:
    """`wsgi.input`: the request's body as it arrives from the client (never held whole)."""

    __slots__ = ("_handle", "_buffer", "_done")

    def __init__(self, handle, has_body):
        self._handle = handle
        self._buffer = bytearray()
        self._done = not has_body

    def _fill(self):
        """Takes the next chunk into the buffer; False at the end of the body."""
        if self._done:
            return False
        chunk = _core.http_read(self._handle)
        if chunk is None:
            self._done = True
            raise RequestBodyTooLarge("the request body is larger than the server's max_body")
        if not chunk:
            self._done = True
            return False
        self._buffer += chunk
        return True

    def _take(self, count):
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def read(self, size=-1):
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size=-1):
        size = -1 if size is None else size
        start = 0
        while True:
            newline = self._buffer.find(b"\n", start)
            if newline >= 0 and (size < 0 or newline < size):
                return self._take(newline + 1)
            if 0 <= size <= len(self._buffer):
                return self._take(size)
            start = len(self._buffer)
            if not self._fill():
                return self._take(len(self._buffer))

    def readlines(self, hint=-1):
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def _environ(request):
    _, method, path, query, protocol, headers, has_body, peer, local = request
    from urllib.parse import unquote_to_bytes
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_NAME": local[0],
        "SERVER_PORT": str(local[1]),
        "SERVER_PROTOCOL": protocol,
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": str(peer[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": _Input(request[0], has_body),
        "wsgi.errors": _sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    for name, value in headers:
        value = value.decode("latin-1")
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
        elif name == "content-length":
            environ["CONTENT_LENGTH"] = value
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in environ:
                environ[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
            else:
                environ[key] = value
    environ.setdefault("CONTENT_LENGTH", "")  # a chunked body: read wsgi.input to its end
    return environ


class _Response:
    """One request's answer: start_response, write, the body, errors."""

    __slots__ = ("handle", "pending", "sent", "gone", "status", "length")

    def __init__(self, handle):
        self.handle = handle
        self.pending = None  # (code, headers) given to start_response, not sent yet
        self.sent = False
        self.gone = False
        self.status = 0  # as sent, for the access log
        self.length = 0

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.pending is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        self.pending = (_status_code(status), _header_list(headers))
        return self.write

    def send_headers(self, whole=None):
        """Sends the status and headers once; with `whole` (bytes), the complete body too."""
        if not self.sent:
            if self.pending is None:
                raise AssertionError("the application sent a body before calling start_response()")
            self.sent = True
            self.status = self.pending[0]
            if not _core.http_respond(self.handle, *self.pending, whole):
                self.gone = True

    def write(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write() takes bytes, not {type(data).__name__!r}")
        self.send_headers()
        self.length += len(data)
        if data and not self.gone and not _core.http_send(self.handle, bytes(data)):
            self.gone = True


def _status_code(status):
    if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
        raise ValueError(f"bad WSGI status {status!r}: it must be a str like '200 OK'")
    return int(status[:3])


def _header_list(headers):
    if not isinstance(headers, list):
        raise TypeError(f"WSGI response headers must be a list, not {type(headers).__name__!r}")
    checked = []
    for header in headers:
        if not (isinstance(header, tuple) and len(header) == 2 and isinstance(header[0], str)
                and isinstance(header[1], str)):
            raise TypeError(f"a WSGI response header must be a (str, str) tuple, not {header!r}")
        name, value = header
        if name.lower() in _HOP_BY_HOP:
            raise ValueError(f"hop-by-hop header {name!r} is the server's to send (PEP 3333)")
        checked.append((name, value.encode("latin-1")))
    return checked


def _handle(app, request, access_log):
    response = _Response(request[0])

    def answer():
        result = app(_environ(request), response.start_response)
        try:
            if type(result) in (list, tuple) and not response.sent:
                # The whole body is known: it goes with the headers, in one hand-over.
                for chunk in result:
                    if not isinstance(chunk, (bytes, bytearray, memoryview)):
                        raise TypeError(f"the application's body gave a {type(chunk).__name__!r}, not bytes")
                whole = result[0] if len(result) == 1 and type(result[0]) is bytes else b"".join(result)
                response.length = len(whole)
                response.send_headers(whole)
                return
            for chunk in result:
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise TypeError(f"the application's body gave a {type(chunk).__name__!r}, not bytes")
                if chunk:
                    response.write(chunk)
                    if response.gone:
                        break  # the client left: stop producing
            response.send_headers()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    _, error = _run_guarded(answer)
    cut = False  # the headers went out before the error: the client's connection is cut
    if error is not None and not isinstance(error, RequestBodyTooLarge):  # that one is the client's
        import traceback
        _core.log("error", f"{request[1]} {request[2].decode('latin-1')} failed:\n"
                           f"{''.join(traceback.format_exception(error)).rstrip()}")
    if error is not None:
        cut = response.sent
        if not cut:
            response.sent = True
            status, text = ((413, b"Request body too large\n") if isinstance(error, RequestBodyTooLarge)
                            else (500, b"Internal Server Error\n"))
            _core.http_respond(request[0], status,
                               [("Content-Type", b"text/plain"), ("Content-Length", str(len(text)).encode())], text)
            response.status, response.length = status, len(text)
    _core.http_finish(request[0], cut)
    if access_log:
        _, method, path, query, protocol, _, _, peer, _ = request
        target = path + (b"?" + query if query else b"")
        _core.log("info", f'{peer[0]} - "{method} {target.decode("latin-1")} {protocol}" {response.status} '
                          f'{response.length}{" (cut short)" if cut else ""}')
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        raise error


def _serve_requests(server_id, spec, access_log):
    """One worker's part of a server: runs until the server stops (a task of its pool)."""
    app = _load_app(spec)
    _core.guard_end()  # each request is guarded as a task of its own (_run_guarded)
    try:
        while True:
            request = _core.http_next(server_id)
            if request is None:
                return None
            _handle(app, request, access_log)
            request = None
    finally:
        _core.guard_begin()


class WSGIServer(_PoolServer):
    """A WSGI server on a pool of workers; made by `parallel.wsgi_server()`. `close()` (or
    leaving its `with` block) stops accepting, answers the requests in flight (within 10 s)
    and waits for the workers."""

    def __init__(self, app, host, port, workers, backlog, timeout, max_body, access_log):
        import parallel
        spec = _app_spec(app)
        workers = _worker_count(workers)
        self.app = f"{spec[0]}:{spec[1]}"
        self._executor = parallel.Executor(max_workers=workers)
        try:
            # Every worker loads the application first: its import errors come out here.
            list(self._executor.map(_check_app, [spec] * workers))
            self._id, host, port = _core.http_start(host, port, backlog, max_body, float(timeout))
        except BaseException:
            self._executor.shutdown(wait=True)
            raise
        self.address = (host, port)
        self._loops = [self._executor.submit(_serve_requests, self._id, spec, access_log) for _ in range(workers)]

    @staticmethod
    def _stop_network(server_id):
        _core.http_stop(server_id)

    @property
    def url(self):
        return f"http://{self.address[0]}:{self.address[1]}"

    def __repr__(self):
        return f"<parallel.WSGIServer {self.app} on {self.url}>"

    def announce(self):
        """The start-up line, through pyhost's logging."""
        workers = len(self._loops)
        _core.log("info", f"serving {self.app} on {self.url} ({workers} worker{'s' if workers != 1 else ''})")


def wsgi_server(app, host="127.0.0.1", port=8000, *, workers=None, backlog=1024, timeout=30.0,
                max_body=64 * 1024 * 1024, access_log=False):
    """Starts serving `app` (a module-level WSGI callable) and returns the server."""
    return WSGIServer(app, host, port, workers, backlog, timeout, max_body, access_log)


def serve(app, host="127.0.0.1", port=8000, **options):
    """Serves `app` until Ctrl-C."""
    with wsgi_server(app, host, port, **options) as server:
        server.announce()
        server.serve_forever()


# `pyhost --engine parallel -m parallel.serve MODULE:APP ...` (parallel.py's finder runs it).
SERVE_COMMAND = r"""
import argparse
import importlib
import os
import sys

import parallel


def fail(message):
    print(f"parallel.serve: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="pyhost --engine parallel -m parallel.serve",
        description="Serve a WSGI application on every core: each worker (a sub-interpreter with its own "
                    "GIL) runs it; MODULE is imported once in the main interpreter first, so its "
                    "module-level parallel.share() data is built once and read in place by every worker.")
    parser.add_argument("app", metavar="MODULE:APP", help="the module to import and the application's name in it")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=None, help="default: one per CPU")
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds a client has to send a request's headers, and that a keep-alive "
                             "connection may stay idle (default 30)")
    parser.add_argument("--max-body", type=int, default=64 * 1024 * 1024, help="largest request body, in bytes")
    parser.add_argument("--access-log", action="store_true", help="a line per request, through pyhost's logging (PYHOST_LOG)")
    options = parser.parse_args(argv)
    module_name, _, name = options.app.partition(":")
    if not module_name or not name:
        parser.error(f"expected MODULE:APP, e.g. myapp:app, not {options.app!r}")
    if options.workers is not None and options.workers < 1:
        parser.error("--workers must be at least 1")
    sys.path.insert(0, os.getcwd())
    parallel._served_modules.add(module_name)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        import traceback
        traceback.print_exc()
        fail(f"cannot import {module_name}: {type(error).__name__}: {error}")
    app = module
    for part in name.split("."):
        app = getattr(app, part, None)
    if not callable(app):
        fail(f"{module_name} has no WSGI application {name!r}")
    try:
        server = parallel.wsgi_server(app, options.host, options.port, workers=options.workers,
                                      backlog=options.backlog, timeout=options.timeout, max_body=options.max_body,
                                      access_log=options.access_log)
    except OSError as error:
        fail(str(error))
    import signal

    def terminate(signum, frame):
        # As Ctrl-C: serve_forever() closes the server (requests in flight are answered)
        # before the exit status 128 + SIGTERM.
        raise SystemExit(128 + signum)

    # The server closes however main() is left: a SIGTERM that comes right after the start-up
    # line, before serve_forever() is entered, would otherwise leave the workers serving and
    # the exit waiting for them forever.
    try:
        signal.signal(signal.SIGTERM, terminate)
        server.announce()
        server.serve_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
"""
