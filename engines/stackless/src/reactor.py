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
    """What a tasklet waiting for I/O or a timer is blocked on (its `_blocked_on`)."""

    __slots__ = ("th", "token", "tasklet", "ready")

    def __init__(self, th, token, t):
        self.th = th
        self.token = token
        self.tasklet = t
        self.ready = None  # True: the fd is ready; False: the timeout came first

    def _unblock(self, t):
        """The tasklet was killed or thrown into: its wait is forgotten."""
        th = self.th
        if th.io_waits.pop(self.token, None) is not None:
            _core.reactor_cancel(th.reactor, self.token)
        t._blocked_on = None

    def __repr__(self):
        return f"<stackless I/O wait {self.token}>"


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
                if wait is not None:
                    wait.ready = ready
                    t = wait.tasklet
                    t._blocked_on = None
                    th.insert(t)
            if not alone or ended:
                schedule()
    finally:
        if th.hub is me:
            th.hub = None


def _block_on_io(th, token):
    """Blocks the current tasklet until the wait `token` ends; returns whether it ended ready
    (False: by its timeout)."""
    me = th.current
    wait = _IOWait(th, token, me)
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
    th = _thread_state()
    reactor = _reactor_for(th)
    token = _core.reactor_wait(reactor, _fileno(fd), readable, timeout)
    if token is None:
        return None  # a regular file or a directory: always ready, as select() says
    if not _block_on_io(th, token):
        raise TimeoutError("timed out")
    return None


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
    _block_on_io(th, _core.reactor_timer(reactor, seconds))
    return None


__all__ += ["sleep", "wait_readable", "wait_writable"]
