# Executed into the `stackless` module after stackless.py (same namespace): tasklets that wait
# for a file descriptor or a timer, and the hub that wakes them (reactor.rs keeps the waits).
#
# A waiting tasklet is blocked, as on a channel: out of the run queue, `blocked` is True, and
# kill()/throw()/raise_exception() wake it with that exception (its wait is forgotten). While
# anything waits, the thread has a hub tasklet in its run queue (as gevent's hub): it polls
# the reactor without blocking when other tasklets are runnable, and blocks in it (GIL
# released) when it is the only one. So run() returns only once nothing is runnable and
# nothing waits, and a deadlock is reported only when nothing could wake anyone: the hub
# ends, leaving the scheduler as it was, when the last wait ends.


class _IOWait:
    """What a tasklet waiting for I/O or a timer is blocked on (its `_blocked_on`): one wait
    of the reactor, or several (select() on many fds), the first to end waking it."""

    __slots__ = ("th", "tokens", "fds", "tasklet", "ready")

    def __init__(self, th, tokens, fds, t):
        self.th = th
        self.tokens = tokens
        self.fds = fds  # the fds waited for (close() of one wakes the tasklet)
        self.tasklet = t
        self.ready = None  # True: an fd is ready; False: the timeout came first

    def _forget(self):
        waits = self.th.io_waits
        for token in self.tokens:
            if waits.pop(token, None) is not None:
                _core.reactor_cancel(self.th.reactor, token)

    def _unblock(self, t):
        """The tasklet was killed or thrown into: its waits are forgotten."""
        self._forget()
        t._blocked_on = None

    def __repr__(self):
        return f"<stackless I/O wait on {list(self.fds) or 'a timer'}>"


def _hub(th):
    """The thread's hub: wakes the tasklets whose waits ended, until nothing waits."""
    me = th.current
    reactor = th.reactor
    try:
        while _core.reactor_pending(reactor):
            alone = me._next is me  # nobody else runnable: block in the reactor
            try:
                ended = _core.reactor_poll(reactor, alone)
            except BaseException as error:  # a signal handler's (Ctrl-C): main's to handle
                main = th.main
                if main is me or not main.alive:
                    raise
                main.throw(error)
                continue
            waits = th.io_waits
            for token, ready in ended:
                wait = waits.pop(token, None)
                if wait is not None and wait.tasklet._blocked_on is wait:
                    wait.ready = ready
                    if len(wait.tokens) > 1:
                        wait._forget()  # its other waits end now (their fds may close before it runs)
                    t = wait.tasklet
                    t._blocked_on = None
                    th.insert(t)
            if not _core.reactor_pending(reactor):
                break  # ends now: the tasklets it woke run next, the run queue as it was
            if not alone or ended:
                schedule()
    finally:
        if th.hub is me:
            th.hub = None


def _block_on_io(th, tokens, fds=()):
    """Blocks the current tasklet until the first of the reactor's waits `tokens` ends;
    returns whether it ended ready (False: by a timeout)."""
    me = th.current
    wait = _IOWait(th, tokens, fds, me)
    for token in tokens:
        th.io_waits[token] = wait
    me._blocked_on = wait
    try:
        if me._in_ring:
            th.remove(me)
        hub = th.hub
        if hub is None or not hub.alive:
            th.hub = tasklet(_hub)(th)
        elif not hub._in_ring:  # taken out by run(timeout): it must poll for us
            th.insert(hub)
        _switch(th, th.head)
    except BaseException:
        if me._blocked_on is wait:
            wait._unblock(me)
        raise
    finally:
        if not me._in_ring and me._alive:
            th.make_first(me)
    return wait.ready


def _wake_waiters_on(fd, error):
    """`fd` is being closed: the tasklets of this thread waiting for it get `error`."""
    th = _current_thread_state()
    if th is None or not th.io_waits:
        return
    for wait in {wait for wait in th.io_waits.values() if fd in wait.fds}:
        if wait.tasklet._blocked_on is wait:
            wait.tasklet.throw(error, pending=True)


def _reactor_for(th):
    if th.current.block_trap:
        raise RuntimeError("this tasklet does not like to be blocked.")
    if th.reactor is None:
        th.reactor = _core.reactor_new()
    return th.reactor


def _fileno(fd):
    if isinstance(fd, int):
        return fd
    fileno = getattr(fd, "fileno", None)
    if fileno is None:
        raise TypeError(f"argument must be an int, or have a fileno() method, not {type(fd).__name__!r}")
    return fileno()


def _wait_for_fd(fd, readable, timeout):
    th = _current_thread_state() or _thread_state()
    reactor = th.reactor
    if reactor is None or th.current.block_trap:
        reactor = _reactor_for(th)
    if type(fd) is not int:
        fd = _fileno(fd)
    token = _core.reactor_wait(reactor, fd, readable, timeout)
    if token is None:
        return None  # a regular file or a directory: always ready, as select() says
    if not _block_on_io(th, (token,), (fd,)):
        raise TimeoutError("timed out")
    return None


def _wait_for_any(pairs, timeout):
    """Blocks until one of `pairs` ((fd, readable), ...) is ready (True) or `timeout` seconds
    passed (False)."""
    th = _thread_state()
    reactor = _reactor_for(th)
    tokens = []
    try:
        for fd, readable in pairs:
            token = _core.reactor_wait(reactor, fd, readable, None)
            if token is None:
                break  # always ready
            tokens.append(token)
        else:
            if timeout is not None:
                tokens.append(_core.reactor_timer(reactor, timeout))
            if not tokens:
                raise ValueError("nothing to wait for")
            registered, tokens = tokens, []
            return _block_on_io(th, registered, tuple(fd for fd, _ in pairs))
    finally:
        for token in tokens:
            _core.reactor_cancel(reactor, token)
    return True


def wait_readable(fd, timeout=None):
    """Block the current tasklet (not the thread) until `fd` (an int, or an object with a
    fileno()) is readable, or its peer closed, or it has an error; TimeoutError after `timeout`
    seconds (None: no limit). One tasklet at a time may wait to read an fd."""
    return _wait_for_fd(fd, True, timeout)


def wait_writable(fd, timeout=None):
    """Block the current tasklet (not the thread) until `fd` is writable (or has an error);
    TimeoutError after `timeout` seconds (None: no limit)."""
    return _wait_for_fd(fd, False, timeout)


def sleep(seconds=0):
    """Block the current tasklet (not the thread) for `seconds`; other tasklets run meanwhile.
    `sleep(0)` is `schedule()` without a return value."""
    if not isinstance(seconds, (int, float)):
        raise TypeError(f"sleep() takes a number of seconds, not {type(seconds).__name__!r}")
    if seconds != seconds or seconds < 0:
        raise ValueError("sleep length must be non-negative")
    if seconds == 0:
        schedule()
        return None
    th = _thread_state()
    reactor = _reactor_for(th)
    _block_on_io(th, (_core.reactor_timer(reactor, seconds),))
    return None


__all__ += ["sleep", "wait_readable", "wait_writable"]
