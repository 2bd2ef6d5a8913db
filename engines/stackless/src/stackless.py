"""Stackless Python's `stackless` module on stock CPython 3.13 (pyhost's stackless engine).

Tasklets are microthreads, each running on its own C stack (a `_stackless_core.Fiber`, whose
switch carries CPython's per-thread interpreter state); channels pass values between them; each
OS thread has its own main tasklet and run queue. Semantics follow Stackless 3.7 (see
tests/python/stackless/SEMANTICS.md); switching is always "hard" (no soft switching).
"""

import _stackless_core as _core
import _thread
import builtins as _builtins
import contextvars as _contextvars
import gc as _gc
import signal as _signal
import sys as _sys

__all__ = [
    "tasklet", "channel", "TaskletExit", "run", "schedule", "schedule_remove", "getcurrent",
    "getmain", "getruncount", "atomic", "set_schedule_callback", "get_schedule_callback",
    "set_channel_callback", "get_channel_callback", "enable_softswitch", "switch_trap",
    "get_thread_info",
]


class TaskletExit(SystemExit):
    """Raised in a tasklet to end it (tasklet.kill); ends the tasklet silently if uncaught."""


# Stackless makes TaskletExit a builtin.
if not hasattr(_builtins, "TaskletExit"):
    _builtins.TaskletExit = TaskletExit

_DEADLOCK = "Deadlock: the last runnable tasklet cannot be blocked."
_CLOSED = "Send/receive operation on a closed channel"

_MAIN_THREAD = _thread.get_ident()
_schedule_callback = None
_channel_callback = None
_softswitch = False
_threads = {}  # OS thread ident -> _ThreadState


class _ThreadState(_core.ThreadStateBase):
    """One OS thread's scheduler: its main tasklet, the current tasklet and the run queue (a
    ring threaded through tasklet._next/_prev, starting at `head`). The base type (sched.rs)
    holds `main`, `current`, `head`, `runcount`, `trap`, `soft_stop`, `preempt` and `ident`,
    and implements the ring operations `insert`, `insert_after`, `remove` and `make_first`."""

    __slots__ = ("watchdogs", "wakeup", "waiting", "interrupted", "interrupt_pending",
                 "interrupt_at", "reactor", "hub", "io_waits")

    def __init__(self, ident):
        self.ident = ident
        self.wakeup = _thread.allocate_lock()  # held; released by another thread to wake us
        self.wakeup.acquire()
        self.waiting = False
        self.preempt = None  # the run(timeout) in progress: (soft,) or None
        self.interrupted = None  # the tasklet a watchdog interrupt took out of the queue
        self.soft_stop = False  # soft timeout expired: return to run() at the next switch
        self.interrupt_pending = False  # expired inside an atomic section
        self.interrupt_at = None  # code object: switch out at its next instruction (monitoring)
        self.head = None
        self.runcount = 0
        self.watchdogs = 0  # nesting of run() calls in progress on the main tasklet
        self.trap = 0
        self.reactor = None  # made by the first I/O wait or sleep() (reactor.py)
        self.hub = None  # the tasklet that polls the reactor while anything waits
        self.io_waits = {}  # reactor token -> _IOWait
        # The base type also keeps the tasklets that have started and not finished, in start
        # order (`started_list()`, `started_clear()`): the exit-time kill then meets channel
        # queues from the front, not at random.
        main = tasklet._new_for(self)
        main._is_main = True
        main._alive = True
        main._context = _core.current_context()
        self.main = main
        self.current = main
        self.insert(main)


def _wake(th):
    """Another thread made one of `th`'s tasklets runnable: wake `th` if it waits (for other
    threads, or in its reactor)."""
    if th.waiting:
        th.waiting = False
        th.wakeup.release()
    if th.reactor is not None:
        _core.reactor_notify(th.reactor)


def _others_may_act():
    """Whether another Python thread exists that could still wake a blocked tasklet."""
    return _thread._count() > 0 or _thread.get_ident() != _MAIN_THREAD


class _ThreadEnd:
    """Kept in a thread-local: released when its thread ends (CPython clears the thread's
    locals first thing in `PyThreadState_Clear`, on that thread, with its state still current),
    it kills the tasklets still suspended there, in that thread (their `finally` blocks run,
    as in Stackless), then retires the thread's scheduler. Tasklets left (never run, or one
    that blocked again while dying) lose their thread (thread_id -1, not alive)."""

    __slots__ = ("th",)

    def __init__(self, th):
        self.th = th

    def __del__(self):
        th = self.th
        _kill_started(th)
        if _threads.get(th.ident) is th:
            del _threads[th.ident]
        _core.clear_thread_state(th)
        queued = []
        while th.head is not None:
            queued.append(th.head)
            th.remove(th.head)
        for t in queued + th.started_list() + [th.main]:
            t._dead_thread = True
        th.started_clear()


_thread_end = _thread._local()


_current_thread_state = _core.thread_state  # a per-OS-thread pointer kept in Rust


def _thread_state():
    th = _current_thread_state()
    if th is None:
        ident = _thread.get_ident()
        th = _threads.get(ident)
        if th is None:
            th = _threads[ident] = _ThreadState(ident)
            if ident != _MAIN_THREAD:
                _thread_end.sentinel = _ThreadEnd(th)
        _core.set_thread_state(th)
    return th


def _switch(th, target, value=None):
    """Make `target` the running tasklet of this thread; return what the caller gets back
    when it resumes, or raise the exception aimed at it."""
    me = th.current
    if target is me:
        return value
    if th.trap:
        raise RuntimeError("switch_trap")
    if th.soft_stop and me is not th.main:
        # A soft timeout expired: this cooperative switch goes back to run() instead.
        th.soft_stop = False
        target = th.main
    if _schedule_callback is not None:
        _schedule_callback(me, target)
    th.current = target
    try:
        value = _core.switch(target._fiber, value)
    finally:
        # Running again: the current tasklet is always at the head of the run queue.
        th.current = me
        if not me._in_ring and me._alive:
            th.make_first(me)
        elif th.head is not me and me._in_ring:
            th.head = me
    bomb = me._bomb
    if bomb is not None:
        me._bomb = None
        raise bomb
    return value


def _next_runnable(th, me):
    """Whom to run when `me` leaves the run queue: the head of the ring, or the main tasklet
    if it waits in run() or is paused; None means nobody (a deadlock)."""
    if th.head is not None:
        return th.head
    main = th.main
    if me is not main and main._blocked_on is None:
        return main
    return None


class tasklet(_core.TaskletBase):
    """A microthread: `tasklet(func)(*args, **kwargs)` binds it and puts it in the run queue.
    Its state lives in the slots of the base type (sched.rs)."""

    # In the base type (sched.rs): `tasklet(func=None, args=None, kwargs=None)` makes an
    # unbound tasklet of the calling thread (slots: `_thread`; `_alive`, `_dead_thread`,
    # `_is_main`, `_in_ring`, `_blocked_sending`, `atomic`, `block_trap`, `ignore_nesting`
    # False; `_func`, `_args`, `_kwargs`, `_fiber`, `_blocked_on` (the channel it waits on),
    # `_chan_bomb` (exception a blocked sender hands its receiver), `_bomb` (exception to raise
    # when it resumes), `tempval`, `_context` None; no ring links `_next`, `_prev`) and binds
    # it if given anything; `bind(func=None, args=None, kwargs=None)`; `setup(*args,
    # **kwargs)`, also `__call__`, binds the arguments and inserts it in the run queue;
    # `_make_fiber()` gives a bound tasklet its Fiber (running `_core.tasklet_body`) and makes it
    # alive; `_new_for(th)` (a class method) makes thread `th`'s main tasklet.

    def set_context(self, context):
        if not isinstance(context, _contextvars.Context):
            raise TypeError("set_context needs a contextvars.Context")
        if self is self._thread.current:
            if _core.current_context() is not self._context:
                raise RuntimeError("cannot set the context of a tasklet inside Context.run()")
            _core.set_context(self._fiber, context)
        elif self._fiber is not None and not self._fiber.dead:
            _core.set_context(self._fiber, context)
        self._context = context
        return self

    def context_run(self, callable, *args, **kwargs):
        return self._context_object().run(callable, *args, **kwargs)

    def _context_object(self):
        if self is self._thread.current:
            return _core.current_context()
        if self._context is None:
            self._context = _core.current_context()
        return self._context

    @property
    def context_id(self):
        return id(self._context_object())

    # -- the body, on the tasklet's own stack: `_core.tasklet_body(tasklet, value)` (sched.rs)
    # records the tasklet as started, raises a pending `_bomb` or calls `_func(*_args,
    # **_kwargs)`, ends the tasklet (not alive, out of the run queue) and names who runs next:
    # the head of the run queue, else main; an uncaught exception other than TaskletExit goes
    # to main, and so does the deadlock error when main is blocked and nobody else can run.

    # -- scheduling --
    def insert(self):
        if self._blocked_on is not None:
            raise RuntimeError("You cannot insert a blocked tasklet")
        if not self.alive:
            raise RuntimeError("You cannot run an unbound(dead) tasklet")
        if not self._in_ring:
            self._thread.insert(self)
        return self

    def remove(self):
        th = self._thread
        if self._blocked_on is not None:
            raise RuntimeError("You cannot remove a blocked tasklet.")
        if self is th.current:
            raise RuntimeError("The current tasklet cannot be removed.")
        if self._in_ring:
            th.remove(self)
        return self

    def _check_runnable(self):
        if self._dead_thread:
            raise RuntimeError("the tasklet's thread has ended")
        th = _thread_state()
        if self._thread is not th:
            raise RuntimeError("can't switch to a different thread.")
        if not self.alive:
            raise RuntimeError("You cannot run an unbound(dead) tasklet")
        if self._blocked_on is not None:
            raise RuntimeError("You cannot run a blocked tasklet")
        return th

    def run(self):
        th = self._check_runnable()
        if self is th.current:
            return None
        th.make_first(self)
        return _switch(th, self)

    def switch(self):
        th = self._check_runnable()
        me = th.current
        if self is me:
            return None
        th.make_first(self)
        if me._in_ring:
            th.remove(me)
        return _switch(th, self)

    # -- exceptions into tasklets --
    def kill(self, pending=False):
        if not self.alive:
            return None
        return self.throw(TaskletExit, pending=pending)

    def raise_exception(self, exc_class, *args):
        if not (isinstance(exc_class, type) and issubclass(exc_class, BaseException)):
            raise TypeError("raise_exception needs an exception class")
        return self._deliver(exc_class(*args), pending=False)

    def throw(self, exc=None, val=None, tb=None, pending=False):
        return self._deliver(_make_exception(exc, val, tb), pending)

    def _deliver(self, exc, pending):
        th = _thread_state()
        if self is th.current:
            raise exc
        if not self.alive:
            if isinstance(exc, TaskletExit):
                return None
            raise RuntimeError("You cannot throw to a dead tasklet")
        if self._thread is not th:
            raise RuntimeError("can't switch to a different thread.")
        chan = self._blocked_on
        if chan is not None:
            chan._unblock(self)
        # A never-run tasklet raises it before its function starts.
        self._bomb = exc
        if pending:
            if not self._in_ring:
                th.insert(self)
            return None
        th.make_first(self)
        return _switch(th, self)

    # -- state --
    @property
    def alive(self):
        return self._alive and not self._dead_thread

    @property
    def blocked(self):
        return self._blocked_on is not None

    @property
    def scheduled(self):
        return self._in_ring or self._blocked_on is not None

    @property
    def paused(self):
        return self.alive and not self.scheduled

    @property
    def is_main(self):
        return self._is_main

    @property
    def is_current(self):
        return self._thread.current is self

    @property
    def thread_id(self):
        th = self._thread
        # A retired thread's scheduler is no longer registered (its ident may even be reused).
        return -1 if self._dead_thread or _threads.get(th.ident) is not th else th.ident

    @property
    def next(self):
        if self._in_ring:
            return self._next
        if self._blocked_on is not None:
            return self._blocked_on._neighbour(self, 1)
        return None

    @property
    def prev(self):
        if self._in_ring:
            return self._prev
        if self._blocked_on is not None:
            return self._blocked_on._neighbour(self, -1)
        return None

    @property
    def frame(self):
        if self is self._thread.current:
            return _sys._getframe(1)
        return None

    @property
    def restorable(self):
        return False

    def set_atomic(self, flag):
        previous, self.atomic = self.atomic, bool(flag)
        th = self._thread
        if previous and not self.atomic and th.interrupt_pending and self is th.current:
            _interrupt(th)  # the slice ran out inside the atomic section
        return previous

    def set_ignore_nesting(self, flag):
        previous, self.ignore_nesting = self.ignore_nesting, bool(flag)
        return previous

    def bind_thread(self, thread_id=None):
        """Move a tasklet that has not started to another thread (default: this one)."""
        if self._fiber is not None and self._fiber.started and not self._fiber.dead:
            raise RuntimeError("cannot move a started tasklet to another thread")
        if self._in_ring or self._blocked_on is not None:
            raise RuntimeError("cannot move a scheduled tasklet to another thread")
        ident = _thread.get_ident() if thread_id is None or thread_id == -1 else thread_id
        th = _threads.get(ident)
        if th is None:
            raise RuntimeError("no such thread (it has no stackless scheduler)")
        self._thread = th
        self._dead_thread = False
        if self._fiber is not None:
            self._fiber = None
            self._alive = False
            if self._args is not None:
                self._make_fiber()
        return self

    def __repr__(self):
        state = "main" if self._is_main else ("alive" if self.alive else "dead")
        return f"<stackless.tasklet {state} at {id(self):#x}>"


def _make_exception(exc, val, tb):
    if exc is None:
        raise TypeError("throw() needs an exception")
    if isinstance(exc, BaseException):
        if val is not None:
            raise TypeError("instance exception may not have a separate value")
        instance = exc
    elif isinstance(exc, type) and issubclass(exc, BaseException):
        if val is None:
            instance = exc()
        elif isinstance(val, exc):
            instance = val
        elif isinstance(val, tuple):
            instance = exc(*val)
        else:
            instance = exc(val)
    else:
        raise TypeError("exceptions must be classes or instances deriving from BaseException")
    if tb is not None:
        if not hasattr(tb, "tb_frame"):
            raise TypeError("throw() third argument must be a traceback object")
        instance = instance.with_traceback(tb)
    return instance


def _wait_for_other_threads(th, me, chan):
    """Nothing in this thread can run, but another thread may act on `chan`: wait (GIL
    released) until `me` is made runnable, or another tasklet of this thread is; return that
    tasklet, or None if `me` itself was woken."""
    while me._blocked_on is chan:
        if th.head is not None:
            return th.head
        if not _others_may_act():
            chan._deadlock(me)
        th.waiting = True
        th.wakeup.acquire(timeout=0.1)
        th.waiting = False
    if th.head is not None and th.head is not me:
        return th.head if not me._in_ring else None
    return None


class channel(_core.ChannelBase):
    """A rendezvous between tasklets: send() blocks until a receiver takes the value.

    The base type (sched.rs) keeps the queue of blocked tasklets (first come first served;
    `_q_*` methods) and implements `send` and `receive`: a fast path for the common case, and
    `_send_py` / `_receive_py` below otherwise."""

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self._balance = 0
        self._preference = -1
        self._schedule_all = 0
        self._closing = False
        return self

    def __init__(self):
        pass

    # -- state --
    @property
    def balance(self):
        return self._balance

    @property
    def preference(self):
        return self._preference

    @preference.setter
    def preference(self, value):
        if not isinstance(value, int):
            raise TypeError("preference must be an integer")
        self._preference = (value > 0) - (value < 0)

    @property
    def schedule_all(self):
        return self._schedule_all

    @schedule_all.setter
    def schedule_all(self, value):
        self._schedule_all = 1 if value else 0

    @property
    def queue(self):
        return self._q_item(0) if self._q_len() else None

    @property
    def closing(self):
        return self._closing

    @property
    def closed(self):
        return self._closing and self._balance == 0

    def close(self):
        self._closing = True

    def open(self):
        self._closing = False

    def _neighbour(self, t, step):
        index = self._q_index(t) + step
        return self._q_item(index) if 0 <= index < self._q_len() else None

    def _unblock(self, t):
        """Take a blocked tasklet out of the queue (it was killed or thrown into)."""
        self._q_remove(t)
        self._balance += -1 if t._blocked_sending else 1
        t._blocked_on = None

    # -- actions --
    def _action(self, sending, value, bomb):
        th = _thread_state()
        me = th.current
        partner_waiting = (self._balance < 0) if sending else (self._balance > 0)
        if _channel_callback is not None:
            me.tempval = value
            _channel_callback(self, me, int(sending), int(not partner_waiting))
        if partner_waiting:
            partner = self._q_popleft()
            self._balance += 1 if sending else -1
            partner._blocked_on = None
            if sending:
                partner.tempval, partner._bomb = value, bomb
                result = None
            else:
                result, bomb = partner.tempval, partner._chan_bomb
                partner.tempval = partner._chan_bomb = None
            pref = self._preference
            partner_first = (pref < 0 and sending) or (pref > 0 and not sending)
            if partner._thread is not th:
                # The partner belongs to another thread: it becomes runnable there.
                partner._thread.insert(partner)
                _wake(partner._thread)
            elif self.schedule_all:
                th.insert(partner)
                schedule()
            elif partner_first:
                th.insert_after(me, partner)
                th.head = partner
                _switch(th, partner)
            else:
                th.insert(partner)
            if not sending and bomb is not None:
                raise bomb
            return result
        # Nobody waiting: block.
        if self._closing:
            raise ValueError(_CLOSED)
        if me.block_trap:
            raise RuntimeError("this tasklet does not like to be blocked.")
        if me._in_ring:
            th.remove(me)
        target = _next_runnable(th, me)
        if target is None and not _others_may_act():
            if not me._in_ring and me._alive:
                th.make_first(me)
            raise RuntimeError(_DEADLOCK)
        me._blocked_on = self
        me._blocked_sending = sending
        if sending:
            me.tempval, me._chan_bomb = value, bomb
        self._q_append(me)
        self._balance += 1 if sending else -1
        try:
            if target is None:
                target = _wait_for_other_threads(th, me, self)
            if target is not None:
                _switch(th, target)
        except BaseException:
            if me._blocked_on is self:
                self._unblock(me)
            if not me._in_ring:
                th.make_first(me)
            raise
        if not me._in_ring:
            th.make_first(me)
        if sending:
            return None
        result, me.tempval = me.tempval, None
        bomb, me._bomb = me._bomb, None
        if bomb is not None:
            raise bomb
        return result

    def _send_py(self, value):
        return self._action(True, value, None)

    def _deadlock(self, me):
        self._unblock(me)
        raise RuntimeError(_DEADLOCK)

    def _receive_py(self):
        return self._action(False, None, None)

    def send_exception(self, exc_class, *args):
        if not (isinstance(exc_class, type) and issubclass(exc_class, BaseException)):
            raise TypeError("send_exception needs an exception class")
        return self._action(True, None, exc_class(*args))

    def send_throw(self, exc, val=None, tb=None):
        return self._action(True, None, _make_exception(exc, val, tb))

    def send_sequence(self, iterable):
        count = 0
        for item in iterable:
            self.send(item)
            count += 1
        return count

    def __iter__(self):
        return self

    def __next__(self):
        if self._closing and self._balance <= 0:
            raise StopIteration
        return self.receive()


# ----- module functions -----

def getcurrent():
    return _thread_state().current


def getmain():
    return _thread_state().main


def getruncount():
    return _thread_state().runcount


def _schedule_py(retval=None):
    th = _thread_state()
    me = th.current
    if retval is None:
        retval = me
    if me._in_ring:
        if me._next is me:
            if th.soft_stop and me is not th.main:
                _switch(th, th.main)  # a soft timeout expired: back to run()
            return retval
        th.head = me._next
        _switch(th, th.head)
        return retval
    th.insert(me)
    return _schedule_py(retval)


schedule = _core.schedule  # Rust fast path; _schedule_py otherwise


def schedule_remove(retval=None):
    th = _thread_state()
    me = th.current
    if retval is None:
        retval = me
    me.tempval = retval
    if me._in_ring:
        th.remove(me)
    target = _next_runnable(th, me)
    if target is None:
        th.make_first(me)
        result, me.tempval = me.tempval, None
        return result
    _switch(th, target)
    if not me._in_ring:
        th.make_first(me)
    result, me.tempval = me.tempval, None
    return result


# Preemption (see watchdog.rs). On the main thread it is delivered through the signal
# machinery: a real-time signal number that this module claims while run(timeout) runs there.
# Other threads run no signal handlers: there an expired time slice turns on sys.monitoring
# JUMP and PY_START events (one fires at every loop iteration and call) under a tool id this
# module claims at the first such run(timeout), and the callbacks switch the tasklet out.
_PREEMPT_SIGNAL = _signal.SIGRTMAX - 3 if hasattr(_signal, "SIGRTMAX") else None
_PREEMPT_TOOL_IDS = (4, 3)  # the ids sys.monitoring leaves free (0-2 and 5 are named)
_preempt_tool = None
_preempt_tool_lock = _thread.allocate_lock()


class _Preempt:
    """The run(timeout) in progress on a thread (`_ThreadState.preempt`)."""

    __slots__ = ("soft", "ticks", "delivery", "restart_on_switch", "ignore_nesting")

    def __init__(self, soft, ticks, delivery, restart_on_switch, ignore_nesting):
        self.soft = soft
        self.ticks = ticks
        self.delivery = delivery
        self.restart_on_switch = restart_on_switch
        self.ignore_nesting = ignore_nesting

    def arm(self):
        _core.arm_watchdog(self.ticks, self.delivery, self.restart_on_switch)


def _interrupt(th, from_monitoring=False, handler_entries=0):
    """Take the running tasklet out of the queue and return it from run(). `handler_entries`:
    how many C -> Python entries the call that got here added (1 for a signal handler or a
    monitoring callback, which C calls), so the tasklet's own nesting level can be told."""
    me = th.current
    preempt = th.preempt
    if preempt is None or me is th.main or not me._alive:
        return
    # As Stackless: no involuntary switch inside an atomic section, under a switch trap, or at
    # a nesting level > 0 (code called from C: a map() or sort-key callback, say) unless
    # nesting is ignored; the interrupt is kept pending (delivered when the atomic section
    # ends) and the slice starts over, so it is tried again after another `timeout` ticks.
    nested = (not preempt.ignore_nesting and not me.ignore_nesting
              and _core.entry_frames() - handler_entries > 1)
    if me.atomic or th.trap or nested:
        th.interrupt_pending = True
        preempt.arm()
        return
    th.interrupt_pending = False
    if preempt.soft:
        th.soft_stop = True
        return
    if me._in_ring:
        th.remove(me)
    th.interrupted = me
    th.current = th.main
    try:
        if from_monitoring:
            _core.switch_from_monitoring()
        else:
            _core.switch(None, None)
    finally:
        th.current = me
        if not me._in_ring and me._alive:
            th.make_first(me)
    # Killed or thrown into while interrupted: raised here, where the tasklet was stopped
    # (as `_switch` does for a tasklet that switched out by itself).
    bomb = me._bomb
    if bomb is not None:
        me._bomb = None
        raise bomb


def _on_preempt_signal(signum, frame):
    th = _threads.get(_MAIN_THREAD)
    if th is not None:
        _interrupt(th, handler_entries=1)


def _expired_thread_state():
    """In a preemption monitoring callback: this thread's scheduler if its time slice expired
    (taking the expiry), else None. The events go off once no thread's slice is expired."""
    expired_here = _core.take_expired()
    if not _core.any_expired():
        _sys.monitoring.set_events(_preempt_tool, 0)
    return _threads.get(_thread.get_ident()) if expired_here else None


def _on_preempt_start(code, offset):
    """PY_START: switch the tasklet out at this call (something thrown into it while it is out
    is raised at the call, in the caller)."""
    th = _expired_thread_state()
    if th is not None:
        _interrupt(th, from_monitoring=True, handler_entries=1)


def _on_preempt_jump(code, offset, destination):
    """JUMP: an exception raised from a JUMP callback skips the frame's own handlers (CPython
    3.12 and 3.13), so the tasklet is switched out at the next instruction instead, from an
    INSTRUCTION event turned on for this code object alone."""
    th = _expired_thread_state()
    if th is not None:
        th.interrupt_at = code
        _sys.monitoring.set_local_events(_preempt_tool, code, _sys.monitoring.events.INSTRUCTION)


def _on_preempt_instruction(code, offset):
    th = _threads.get(_thread.get_ident())
    if th is None or th.interrupt_at is not code:
        return
    _stop_interrupting_at(th)
    _interrupt(th, from_monitoring=True, handler_entries=1)


def _stop_interrupting_at(th):
    code, th.interrupt_at = th.interrupt_at, None
    if code is not None and not any(other.interrupt_at is code for other in list(_threads.values())):
        _sys.monitoring.set_local_events(_preempt_tool, code, 0)


def _preempt_events_on():
    """Called by the watchdog (as a pending call) when a time slice of a non-main thread has
    expired."""
    events = _sys.monitoring.events
    _sys.monitoring.set_events(_preempt_tool, events.JUMP | events.PY_START)


def _claim_preempt_tool():
    global _preempt_tool
    with _preempt_tool_lock:
        if _preempt_tool is not None:
            return
        monitoring = _sys.monitoring
        for tool in _PREEMPT_TOOL_IDS:
            if monitoring.get_tool(tool) is None:
                monitoring.use_tool_id(tool, "stackless run(timeout)")
                events = monitoring.events
                monitoring.register_callback(tool, events.PY_START, _on_preempt_start)
                monitoring.register_callback(tool, events.JUMP, _on_preempt_jump)
                monitoring.register_callback(tool, events.INSTRUCTION, _on_preempt_instruction)
                _preempt_tool = tool
                return
        raise RuntimeError(
            "run(timeout) outside the main thread needs a free sys.monitoring tool id "
            f"({' or '.join(map(str, _PREEMPT_TOOL_IDS))}); all are in use"
        )


def run(timeout=0, threadblock=False, soft=False, ignore_nesting=False, totaltimeout=False):
    """Run the queued tasklets until none is runnable and return None; with `timeout` > 0, a
    tasklet that runs `timeout` ticks without switching (a tick is one microsecond of CPU time)
    is taken out of the queue and returned. `soft`: return None at the next switch instead,
    leaving the tasklet queued. `totaltimeout`: the ticks count over the whole run.
    `threadblock`: when nothing is runnable but a tasklet of this thread is blocked and another
    Python thread exists (which may wake it through a channel), wait for that instead of
    returning. A tasklet running code called from C (nesting level > 0) is only interrupted
    with `ignore_nesting` (or its own `ignore_nesting` set)."""
    th = _thread_state()
    me = th.current
    if me is not th.main:
        schedule()
        return None
    preempting = timeout > 0
    by_signal = preempting and th.ident == _MAIN_THREAD and _PREEMPT_SIGNAL is not None
    if preempting and not by_signal:
        _claim_preempt_tool()
    if me._in_ring:
        th.remove(me)
    if th.head is None:
        th.make_first(me)
        return None
    handler_installed, previous_handler = False, None
    th.watchdogs += 1
    try:
        if by_signal:
            previous_handler = _signal.signal(_PREEMPT_SIGNAL, _on_preempt_signal)
            handler_installed = True
        if preempting:
            th.preempt = _Preempt(bool(soft), int(timeout),
                                  _PREEMPT_SIGNAL if by_signal else _preempt_events_on,
                                  not totaltimeout, bool(ignore_nesting))
            th.preempt.arm()
        _switch(th, th.head)
        # Back with only this (main) tasklet runnable: with threadblock, wait while a blocked
        # tasklet of this thread may be woken by another thread, and run what it wakes.
        while threadblock and th.interrupted is None and th.runcount == 1 and _others_may_act() \
                and any(t._blocked_on is not None for t in th.started_list()):
            th.waiting = True
            th.wakeup.acquire(timeout=0.1)
            th.waiting = False
            if th.runcount > 1:
                th.remove(me)
                _switch(th, th.head)
    finally:
        th.watchdogs -= 1
        if preempting:
            _core.disarm_watchdog()
            th.preempt = None
            th.soft_stop = th.interrupt_pending = False
            if th.interrupt_at is not None:
                _stop_interrupting_at(th)
        if handler_installed:
            _signal.signal(_PREEMPT_SIGNAL,
                           previous_handler if previous_handler is not None else _signal.SIG_DFL)
        if not me._in_ring:
            th.make_first(me)
    interrupted, th.interrupted = th.interrupted, None
    return interrupted


class atomic:
    """`with stackless.atomic():` marks the current tasklet atomic for the block."""

    def __enter__(self):
        self._tasklet = getcurrent()
        self._previous = self._tasklet.set_atomic(True)
        return self

    def __exit__(self, *exc_info):
        self._tasklet.set_atomic(self._previous)
        return False


def set_schedule_callback(callback):
    global _schedule_callback
    if callback is not None and not callable(callback):
        raise TypeError("schedule callback must be callable or None")
    previous, _schedule_callback = _schedule_callback, callback
    _core.set_callback_flags(_schedule_callback is not None, _channel_callback is not None)
    return previous


def get_schedule_callback():
    return _schedule_callback


def set_channel_callback(callback):
    global _channel_callback
    if callback is not None and not callable(callback):
        raise TypeError("channel callback must be callable or None")
    previous, _channel_callback = _channel_callback, callback
    _core.set_callback_flags(_schedule_callback is not None, _channel_callback is not None)
    return previous


def get_channel_callback():
    return _channel_callback


def enable_softswitch(flag):
    """This engine always switches C stacks ("hard" switching); soft switching is never used,
    so the answer is always False, whatever is asked."""
    if flag is not None and not isinstance(flag, (bool, int)):
        raise TypeError("enable_softswitch takes a bool or None")
    return False


def switch_trap(delta):
    th = _thread_state()
    previous = th.trap
    th.trap += delta
    return previous


def get_thread_info(thread_id):
    th = _threads.get(thread_id)
    if th is None:
        raise ValueError("unknown thread id")
    return (th.main, th.current, th.runcount)


def __getattr__(name):
    if name == "current":
        return getcurrent()
    if name == "main":
        return getmain()
    if name == "runcount":
        return getruncount()
    if name == "threads":
        return list(_threads)
    raise AttributeError(f"module 'stackless' has no attribute {name!r}")


def _kill_all_at_exit():
    """At interpreter exit, kill this thread's tasklets that still have frames (their finally
    blocks run); never-run tasklets are not started."""
    th = _threads.get(_thread.get_ident())
    if th is not None:
        _kill_started(th)


def _kill_started(th):
    """Kill `th`'s tasklets that have frames, from its main tasklet (on its own thread)."""
    if th.current is not th.main or _current_thread_state() is not th:
        return
    for t in th.started_list():
        if t.alive and t._fiber is not None and t._fiber.started and not t._fiber.dead:
            try:
                t.kill()
            except BaseException:
                pass


def _notify_schedule(prev, next):
    if _schedule_callback is not None:
        _schedule_callback(prev, next)


def _reclaim(t):
    """The garbage collector found `t` (started, not ended, not running) unreachable: nothing
    can wake it any more. Kill it as Stackless does: back in its thread's run queue (which
    resurrects it) with TaskletExit pending, so at its next turn its finally blocks run, it
    ends and is freed. Called by the tasklet's tp_finalize (sched.rs), at most once per
    tasklet. Not while the interpreter shuts down (the exit-time kill has run)."""
    if _sys is None or _sys.is_finalizing():
        return
    th = t._thread
    if t._dead_thread or t is th.current:
        return
    wait = t._blocked_on
    if wait is not None:
        wait._unblock(t)
    t._bomb = TaskletExit()
    if not t._in_ring:
        th.insert(t)
    if th is not _current_thread_state():
        _wake(th)


_core._install(_schedule_py, channel._send_py, channel._receive_py, _thread_state, TaskletExit,
               _notify_schedule, _reclaim)


def _before_full_collection(phase, info):
    """gc.callbacks: the scheduler keeps suspended tasklets from the collector (they are
    nearly always alive); before a full collection it shows them, so that one nothing can
    wake is found and reclaimed."""
    if phase == "start" and info["generation"] == 2 and _threads:
        for th in list(_threads.values()):
            th._track_suspended()


_gc.callbacks.append(_before_full_collection)
_thread_state()
