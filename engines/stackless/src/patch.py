# Executed into the `stackless` module after reactor.py (same namespace): `patch_all()`, which
# makes the standard library's blocking calls block the calling tasklet instead of the thread,
# as gevent's `monkey.patch_all()` does for greenlets.
#
# A patched socket keeps its file descriptor non-blocking and the timeout the program set in
# Python: each blocking call tries the operation, and when the kernel says EAGAIN waits for
# the fd in the reactor (the other tasklets run), then tries again, until the timeout. So the
# program sees exactly the blocking call's results, errors, partial reads and writes, and
# `socket.timeout` ("timed out"); a socket set non-blocking by the program still raises
# BlockingIOError. Name lookups run in helper threads. Sockets made before `patch_all()`
# stay as they were.

_patched = False


def _patch_socket_module():
    import errno as _errno
    import os as _os
    import socket as _socket
    from time import monotonic as _monotonic

    real_socket = _socket.socket
    c_socket = _socket.SocketType  # the C type: its methods never block once the fd is non-blocking
    c_settimeout = c_socket.settimeout
    c_gettimeout = c_socket.gettimeout
    c_recv, c_recv_into, c_send = c_socket.recv, c_socket.recv_into, c_socket.send

    def retry(sock, operation, readable, args, kwargs=None, deadline=None):
        """`operation(sock, *args, **kwargs)` as a blocking call would do it, waiting in the
        reactor until the socket's timeout (or `deadline`)."""
        kwargs = kwargs or {}
        timeout = sock._timeout
        if timeout == 0.0:
            return operation(sock, *args, **kwargs)
        if deadline is None and timeout is not None:
            deadline = _monotonic() + timeout
        while True:
            try:
                return operation(sock, *args, **kwargs)
            except BlockingIOError:
                pass
            if deadline is None:
                _wait_for_fd(sock.fileno(), readable, None)
            else:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out")
                _wait_for_fd(sock.fileno(), readable, remaining)

    recv_or_none, recv_into_or_none = _core.recv_or_none, _core.recv_into_or_none

    def wait_until_done(sock, attempt, args, deadline):
        """Waits for `sock` to be readable and calls `attempt(fd, *args)` (which returns None
        where the call would block) until it gives a result, or the deadline (None: none)
        passes."""
        while True:
            fd = sock.fileno()
            if deadline is None:
                _wait_for_fd(fd, True, None)
            else:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out")
                _wait_for_fd(fd, True, remaining)
            result = attempt(sock.fileno(), *args)
            if result is not None:
                return result

    def blocking(operation, readable):
        def method(self, *args, **kwargs):  # recv_into and recvfrom_into take keywords
            return retry(self, operation, readable, args, kwargs)

        method.__name__ = operation.__name__
        method.__qualname__ = f"socket.{operation.__name__}"
        method.__doc__ = operation.__doc__
        return method

    class socket(real_socket):
        """A socket whose blocking calls block the calling tasklet (stackless.patch_all())."""

        __slots__ = ("_timeout",)

        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            super().__init__(family, type, proto, fileno)
            self._timeout = c_gettimeout(self)
            c_settimeout(self, 0.0)

        def settimeout(self, value):
            c_settimeout(self, value)  # checks the value as the C method does
            self._timeout = c_gettimeout(self)
            c_settimeout(self, 0.0)

        def gettimeout(self):
            return self._timeout

        def setblocking(self, flag):
            self.settimeout(None if flag else 0.0)

        def getblocking(self):
            return self._timeout != 0.0

        def detach(self):
            # The fd leaves in the blocking mode the program asked for.
            if self.fileno() >= 0:
                c_settimeout(self, self._timeout)
            return super().detach()

        def _real_close(self, _ss=c_socket):
            fd = self.fileno()
            if fd >= 0:
                _wake_waiters_on(fd, OSError(_errno.EBADF, "Bad file descriptor"))
            _ss.close(self)

        def connect(self, address):
            error = self._connect(address)
            if error:
                raise OSError(error, _os.strerror(error))

        def connect_ex(self, address):
            return self._connect(address)

        def _connect(self, address):
            if self._timeout == 0.0:
                return c_socket.connect_ex(self, address)
            error = c_socket.connect_ex(self, _resolved(self, address))
            if error in (0, _errno.EISCONN):
                return 0
            if error not in (_errno.EINPROGRESS, _errno.EALREADY, _errno.EWOULDBLOCK):
                return error
            try:
                _wait_for_fd(self.fileno(), False, self._timeout)
            except TimeoutError:
                raise TimeoutError("timed out") from None
            return self.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)

        def sendall(self, data, flags=0):
            # The timeout bounds the whole call (as CPython's since 3.5), not each send.
            timeout = self._timeout
            if type(data) is bytes and timeout != 0.0:
                # Most often all of it goes at once: no memoryview, no deadline.
                try:
                    sent = c_send(self, data, flags)
                except BlockingIOError:
                    sent = 0
                if sent == len(data):
                    return None
                data = memoryview(data)[sent:]
            deadline = None if not timeout else _monotonic() + timeout
            with memoryview(data) as view, view.cast("B") as octets:
                total, sent = len(octets), 0
                while sent < total:
                    sent += retry(self, c_socket.send, False, (octets[sent:], flags), None, deadline)
            return None

        # recv and recv_into, the calls a server makes most, try once in Rust (sockio.rs),
        # which answers "would block" with None instead of raising BlockingIOError.
        def recv(self, bufsize, flags=0):
            timeout = self._timeout
            if timeout == 0.0:
                return c_recv(self, bufsize, flags)
            deadline = None if timeout is None else _monotonic() + timeout
            data = recv_or_none(self.fileno(), bufsize, flags)
            if data is None:
                data = wait_until_done(self, recv_or_none, (bufsize, flags), deadline)
            return data

        def recv_into(self, buffer, nbytes=0, flags=0):
            timeout = self._timeout
            if timeout == 0.0:
                return c_recv_into(self, buffer, nbytes, flags)
            deadline = None if timeout is None else _monotonic() + timeout
            count = recv_into_or_none(self.fileno(), buffer, nbytes, flags)
            if count is None:
                count = wait_until_done(self, recv_into_or_none, (buffer, nbytes, flags), deadline)
            return count

        recv.__doc__, recv_into.__doc__ = c_socket.recv.__doc__, c_socket.recv_into.__doc__
        _accept = blocking(c_socket._accept, True)
        recvfrom = blocking(c_socket.recvfrom, True)
        recvfrom_into = blocking(c_socket.recvfrom_into, True)
        recvmsg = blocking(c_socket.recvmsg, True)
        recvmsg_into = blocking(c_socket.recvmsg_into, True)
        send = blocking(c_socket.send, False)
        sendto = blocking(c_socket.sendto, False)
        sendmsg = blocking(c_socket.sendmsg, False)

    socket.__module__ = "socket"
    socket.__qualname__ = "socket"

    def _resolved(sock, address):
        """An (host, port...) address with its host name resolved in a helper thread (the C
        connect would resolve it in this thread, blocking it)."""
        if sock.family in (_socket.AF_INET, _socket.AF_INET6) and isinstance(address, tuple) and address:
            host = address[0]
            if isinstance(host, str) and host and not _is_numeric(host):
                info = getaddrinfo(host, address[1], sock.family, sock.type, sock.proto)
                return info[0][4][:2] + tuple(address[2:])
        return address

    def _is_numeric(host):
        for family in (_socket.AF_INET, _socket.AF_INET6):
            try:
                _socket.inet_pton(family, host.partition("%")[0])
                return True
            except OSError:
                pass
        return False

    real = {name: getattr(_socket, name) for name in
            ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo", "getfqdn")}

    def in_helper_thread(function):
        def lookup(*args, **kwargs):
            return _run_in_helper_thread(function, args, kwargs)

        lookup.__name__ = function.__name__
        lookup.__qualname__ = function.__name__
        lookup.__doc__ = function.__doc__
        return lookup

    getaddrinfo = in_helper_thread(real["getaddrinfo"])
    _socket.socket = socket
    for name, function in real.items():
        setattr(_socket, name, getaddrinfo if name == "getaddrinfo" else in_helper_thread(function))
    return socket


def _patch_ssl(cooperative_socket):
    """TLS sockets made by `SSLContext.wrap_socket()` from now on: the cooperative socket
    underneath (its fd non-blocking, so OpenSSL says "want read/write" where it would block),
    and each TLS operation retried after a reactor wait, with CPython's timeout messages."""
    import ssl
    from time import monotonic

    class SSLSocket(ssl.SSLSocket, cooperative_socket):
        """An SSLSocket whose blocking calls block the calling tasklet (stackless.patch_all())."""

        def _retry(self, operation, args, what, blocking=False):
            timeout = None if blocking else self._timeout
            if timeout == 0.0:
                return operation(*args)
            deadline = None if timeout is None else monotonic() + timeout
            while True:
                try:
                    return operation(*args)
                except ssl.SSLWantReadError:
                    readable = True
                except ssl.SSLWantWriteError:
                    readable = False
                remaining = None if deadline is None else deadline - monotonic()
                try:
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError
                    _wait_for_fd(self.fileno(), readable, remaining)
                except TimeoutError:
                    raise TimeoutError(f"The {what} operation timed out") from None

        def read(self, len=1024, buffer=None):
            return self._retry(super().read, (len, buffer), "read")

        def write(self, data):
            return self._retry(super().write, (data,), "write")

        def send(self, data, flags=0):
            return self._retry(super().send, (data, flags), "write")

        def do_handshake(self, block=False):
            # block: as CPython, a non-blocking socket's handshake blocks (until it is done).
            return self._retry(super().do_handshake, (), "handshake", block)

        def unwrap(self):
            return self._retry(super().unwrap, (), "read")

    SSLSocket.__module__ = "ssl"
    SSLSocket.__qualname__ = "SSLSocket"
    ssl.SSLContext.sslsocket_class = SSLSocket


_helper_pool = None


def _run_in_helper_thread(function, args, kwargs):
    """`function(*args, **kwargs)` in a helper thread, the calling tasklet blocked meanwhile."""
    global _helper_pool
    import os
    import threading
    if _helper_pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _helper_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stackless-helper")
    done = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    lock = threading.Lock()
    open_ = [True]

    def finished(_):
        with lock:  # the tasklet may have left (killed) and closed the eventfd
            if open_[0]:
                os.eventfd_write(done, 1)

    try:
        future = _helper_pool.submit(function, *args, **kwargs)
        future.add_done_callback(finished)
        while not future.done():
            _wait_for_fd(done, True, None)
        return future.result()
    finally:
        with lock:
            open_[0] = False
            os.close(done)


def _patch_time():
    import time
    real_sleep = time.sleep

    def patched_sleep(seconds):
        if not isinstance(seconds, (int, float)):
            if isinstance(seconds, str) or not hasattr(type(seconds), "__float__"):
                return real_sleep(seconds)  # the real error
            seconds = float(seconds)
        if seconds != seconds or seconds < 0:
            raise ValueError("sleep length must be non-negative")
        return sleep(seconds)  # stackless.sleep

    patched_sleep.__name__ = patched_sleep.__qualname__ = "sleep"
    patched_sleep.__doc__ = real_sleep.__doc__
    time.sleep = patched_sleep


def _patch_select():
    import math
    import select as _select_module
    import selectors

    real_select = _select_module.select
    real_poll = _select_module.poll

    def select(rlist, wlist, xlist, timeout=None):
        if timeout is not None:
            if not isinstance(timeout, (int, float)):
                return real_select(rlist, wlist, xlist, timeout)  # the real error
            if timeout < 0:
                raise ValueError("timeout must be non-negative")
        ready = real_select(rlist, wlist, xlist, 0)
        if any(ready) or timeout == 0:
            return ready
        pairs = [(_fileno(f), True) for f in rlist] + [(_fileno(f), False) for f in wlist]
        if pairs or timeout is not None:
            _wait_for_any(pairs, timeout) if pairs else sleep(timeout)
        return real_select(rlist, wlist, xlist, 0)

    select.__doc__ = real_select.__doc__

    class poll:
        """select.poll() whose poll() blocks the calling tasklet (stackless.patch_all())."""

        def __init__(self):
            self._poll = real_poll()
            self._events = {}

        def register(self, fd, eventmask=_select_module.POLLIN | _select_module.POLLPRI | _select_module.POLLOUT):
            fd = _fileno(fd)
            self._poll.register(fd, eventmask)
            self._events[fd] = eventmask

        def modify(self, fd, eventmask):
            fd = _fileno(fd)
            self._poll.modify(fd, eventmask)
            self._events[fd] = eventmask

        def unregister(self, fd):
            fd = _fileno(fd)
            self._poll.unregister(fd)
            del self._events[fd]

        def poll(self, timeout=None):
            if timeout is not None:
                timeout = math.ceil(timeout) if isinstance(timeout, float) else timeout
                if timeout < 0:
                    timeout = None
            ready = self._poll.poll(0)
            if ready or timeout == 0:
                return ready
            seconds = None if timeout is None else timeout / 1000
            reading = _select_module.POLLIN | _select_module.POLLPRI
            pairs = [(fd, True) for fd, mask in self._events.items() if mask & reading]
            pairs += [(fd, False) for fd, mask in self._events.items() if mask & _select_module.POLLOUT]
            if pairs:
                _wait_for_any(pairs, seconds)
            elif seconds is not None:
                sleep(seconds)
            else:
                raise RuntimeError("poll() with nothing registered and no timeout would block forever")
            return self._poll.poll(0)

    real_epoll = _select_module.epoll

    class epoll:
        """select.epoll() whose poll() blocks the calling tasklet (stackless.patch_all()): the
        epoll fd itself is readable while any of its fds is ready, so the reactor waits for
        that, then the real poll() collects the events without blocking. (The real type cannot
        be subclassed: this one holds one.)"""

        __slots__ = ("_epoll",)

        def __init__(self, sizehint=-1, flags=0):
            self._epoll = real_epoll(sizehint, flags)

        @classmethod
        def fromfd(cls, fd):
            self = cls.__new__(cls)
            self._epoll = real_epoll.fromfd(fd)
            return self

        def poll(self, timeout=None, maxevents=-1):
            if timeout is not None:
                if not isinstance(timeout, (int, float)):
                    return self._epoll.poll(timeout, maxevents)  # the real error
                if timeout < 0:
                    timeout = None
            ready = self._epoll.poll(0, maxevents)
            if ready or timeout == 0:
                return ready
            try:
                _wait_for_fd(self._epoll.fileno(), True, timeout)
            except TimeoutError:
                return []
            return self._epoll.poll(0, maxevents)

        def register(self, fd, eventmask=_select_module.EPOLLIN | _select_module.EPOLLPRI | _select_module.EPOLLOUT):
            self._epoll.register(fd, eventmask)

        def modify(self, fd, eventmask):
            self._epoll.modify(fd, eventmask)

        def unregister(self, fd):
            self._epoll.unregister(fd)

        def fileno(self):
            return self._epoll.fileno()

        def close(self):
            self._epoll.close()

        @property
        def closed(self):
            return self._epoll.closed

        def __enter__(self):
            self._epoll.__enter__()
            return self

        def __exit__(self, *exc_info):
            return self._epoll.__exit__(*exc_info)

        for name in ("poll", "register", "modify", "unregister", "fileno", "close", "fromfd"):
            locals()[name].__doc__ = getattr(real_epoll, name).__doc__
        del name

    epoll.__module__ = "select"
    epoll.__qualname__ = "epoll"

    _select_module.select = select
    _select_module.poll = poll
    _select_module.epoll = epoll
    # selectors' classes hold their poller as class attributes: PollSelector and EpollSelector
    # are made to use the cooperative poll and epoll, SelectSelector the cooperative select;
    # DefaultSelector is PollSelector.
    selectors.PollSelector._selector_cls = poll
    selectors.EpollSelector._selector_cls = epoll
    selectors.SelectSelector._select = staticmethod(select)
    selectors.DefaultSelector = selectors.PollSelector


def _patch_subprocess():
    import os
    import subprocess

    popen = subprocess.Popen
    real_wait = popen._wait
    real_communicate = popen.communicate

    def _wait(self, timeout):
        """Waits for the child's pidfd to become readable (it exited) in the reactor, then
        reaps it as CPython does."""
        if self.returncode is not None:
            return self.returncode
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:  # reaped already, or no pidfd: CPython's own wait
            return real_wait(self, timeout)
        try:
            _wait_for_fd(pidfd, True, timeout)
        except TimeoutError:
            raise subprocess.TimeoutExpired(self.args, timeout) from None
        finally:
            os.close(pidfd)
        return real_wait(self, timeout)

    def communicate(self, input=None, timeout=None):
        # CPython reads a lone pipe with a plain blocking read(); through the (cooperative)
        # selector path instead, bounded by no timeout in practice.
        if timeout is None and not self._communication_started:
            return real_communicate(self, input, _NO_TIMEOUT)
        return real_communicate(self, input, timeout)

    communicate.__doc__ = real_communicate.__doc__
    popen._wait = _wait
    popen.communicate = communicate
    subprocess.io = _SubprocessIO(_cooperative_pipe_class())


class _SubprocessIO:
    """What the subprocess module sees as `io` once patched: `open()` of a pipe's fd (which
    `Popen` calls for `stdin`/`stdout`/`stderr=PIPE`) makes the parent's end non-blocking and
    cooperative; everything else is the real `io`."""

    def __init__(self, pipe_class):
        import io

        self._io = io
        self._pipe_class = pipe_class

    def __getattr__(self, name):
        return getattr(self._io, name)

    def open(self, file, mode="r", buffering=-1, *args, **kwargs):
        io = self._io
        if not isinstance(file, int) or args or kwargs or mode not in ("rb", "wb"):
            return io.open(file, mode, buffering, *args, **kwargs)
        import os

        os.set_blocking(file, False)  # the parent's end only: the child's is another description
        raw = self._pipe_class(file, mode)
        if buffering == 0:
            return raw
        size = io.DEFAULT_BUFFER_SIZE if buffering in (-1, 1) else buffering
        return (io.BufferedReader if mode == "rb" else io.BufferedWriter)(raw, size)


def _cooperative_pipe_class():
    import io

    class CooperativePipe(io.FileIO):
        """The parent's end of a subprocess pipe, non-blocking underneath: a read or write the
        kernel would block waits for the fd in the reactor, so `proc.stdout.read()`,
        `readline()`, iteration and `proc.stdin.write()` block the tasklet, not the thread, with
        a blocking pipe's results (a read returns what is there, at least one byte, or b"" at
        end of file; `read()` reads to the end)."""

        def readinto(self, buffer):
            while True:
                count = super().readinto(buffer)
                if count is not None:
                    return count
                _wait_for_fd(self.fileno(), True, None)

        def read(self, size=-1):
            if size is None or size < 0:
                return self.readall()
            while True:
                data = super().read(size)
                if data is not None:
                    return data
                _wait_for_fd(self.fileno(), True, None)

        def readall(self):
            chunks = []
            while True:
                data = super().read(io.DEFAULT_BUFFER_SIZE * 8)
                if data is None:
                    _wait_for_fd(self.fileno(), True, None)
                elif not data:
                    return b"".join(chunks)
                else:
                    chunks.append(data)

        def write(self, data):
            while True:
                count = super().write(data)
                if count is not None:
                    return count
                _wait_for_fd(self.fileno(), False, None)

    return CooperativePipe


_NO_TIMEOUT = 10 * 365 * 86400.0


def _patch_os():
    import os
    real_read, real_write = os.read, os.write

    def read(fd, length):
        _wait_for_fd(fd, True, None)  # a regular file is always ready
        return real_read(fd, length)

    def write(fd, data):
        _wait_for_fd(fd, False, None)
        return real_write(fd, data)

    read.__doc__, write.__doc__ = real_read.__doc__, real_write.__doc__
    os.read, os.write = read, write


def patch_all():
    """Make the standard library cooperative, as gevent's `monkey.patch_all()` does: `socket`
    and `ssl` (sockets made from now on; name lookups in helper threads), `select.select`,
    `select.poll`, `select.epoll`, `selectors` (DefaultSelector is PollSelector), `time.sleep`,
    `subprocess.Popen.wait()`/`communicate()` and reads and writes of its pipes
    (`proc.stdout.read()`...), and `os.read`/`os.write` (on pipes, sockets, terminals) block
    the calling tasklet, not the thread. Call it once, early; calling it
    again does nothing."""
    global _patched
    if _patched:
        return None
    _patch_ssl(_patch_socket_module())
    _patch_time()
    _patch_select()
    _patch_subprocess()
    _patch_os()
    _patched = True
    return None


__all__ += ["patch_all"]
