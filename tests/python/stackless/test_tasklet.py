"""stackless.tasklet under `pyhost --engine stackless`: construction, binding, the run queue,
run/switch/kill/throw/raise_exception and the state attributes.

Written from the Stackless 3.7 documentation (Doc/library/stackless/tasklets.rst) with the
details the docs leave open taken from Stackless/module/taskletobject.c; see SEMANTICS.md.
Run standalone: `pyhost --engine stackless tests/python/stackless/test_tasklet.py`.
"""

import builtins
import sys
import threading
import traceback
import unittest

import stackless
from stackless_support import StacklessTestCase, TaskletExit





def nop(*args, **kwargs):
    return None


class ConstructionTest(StacklessTestCase):
    def test_empty_tasklet_is_not_alive(self):
        t = stackless.tasklet()
        self.assertFalse(t.alive)
        self.assertFalse(t.scheduled)
        self.assertFalse(t.blocked)
        self.assertFalse(t.paused)
        self.assertIsNone(t.next)
        self.assertIsNone(t.prev)

    def test_binding_a_callable_alone_does_not_make_it_alive(self):
        t = stackless.tasklet(nop)
        self.assertFalse(t.alive)
        self.assertFalse(t.scheduled)
        self.assertEqual(stackless.getruncount(), 1)
        # no arguments were supplied yet: it cannot run
        self.assertRaises(RuntimeError, t.run)

    def test_call_supplies_arguments_schedules_and_returns_self(self):
        calls = []

        def func(*args, **kwargs):
            calls.append((args, kwargs))

        t = stackless.tasklet(func)
        self.assertIs(t(1, 2, name="test"), t)
        self.assertTrue(t.alive)
        self.assertTrue(t.scheduled)
        self.assertFalse(t.paused)
        self.assertFalse(t.blocked)
        self.assertEqual(stackless.getruncount(), 2)
        self.assertEqual(calls, [])
        stackless.run()
        self.assertEqual(calls, [((1, 2), {"name": "test"})])
        self.assertFalse(t.alive)

    def test_bind_then_setup_is_equivalent(self):
        calls = []

        def func(*args, **kwargs):
            calls.append((args, kwargs))

        t = stackless.tasklet()
        self.assertIs(t.bind(func), t)
        self.assertIs(t.setup(1, 2, name="test"), t)
        self.assertTrue(t.scheduled)
        stackless.run()
        self.assertEqual(calls, [((1, 2), {"name": "test"})])

    def test_bind_with_arguments_does_not_schedule(self):
        calls = []

        def func(*args, **kwargs):
            calls.append((args, kwargs))

        t = stackless.tasklet()
        self.assertIs(t.bind(func, (1, 2, 3), {"name": "test"}), t)
        self.assertTrue(t.alive)
        self.assertTrue(t.paused)
        self.assertFalse(t.scheduled)
        self.assertEqual(stackless.getruncount(), 1)
        self.assertIs(t.insert(), t)
        self.assertTrue(t.scheduled)
        self.assertFalse(t.paused)
        stackless.run()
        self.assertEqual(calls, [((1, 2, 3), {"name": "test"})])

    def test_bind_keyword_arguments(self):
        calls = []

        def func(*args, **kwargs):
            calls.append((args, kwargs))

        stackless.tasklet().bind(func, kwargs={"hello": "world"}).run()
        stackless.tasklet().bind(func, args=("a",)).run()
        self.assertEqual(calls, [((), {"hello": "world"}), (("a",), {})])

    def test_bind_arguments_without_function_keeps_the_bound_function(self):
        calls = []

        def func(*args, **kwargs):
            calls.append((args, kwargs))

        t = stackless.tasklet(func)
        t.bind(None, ("x",), {"y": 1})
        t.run()
        self.assertEqual(calls, [(("x",), {"y": 1})])

    def test_bind_rejects_non_callable(self):
        self.assertRaises(TypeError, stackless.tasklet().bind, object())
        self.assertRaises(TypeError, stackless.tasklet, 42)

    def test_bind_refuses_current_and_scheduled_tasklets(self):
        self.assertRaises(RuntimeError, stackless.getcurrent().bind, None)
        t = stackless.tasklet(nop)()
        self.assertRaises(RuntimeError, t.bind, nop)
        self.assertRaises(RuntimeError, t.bind, None)
        self.assertTrue(t.scheduled)

    def test_setup_refuses_alive_tasklet(self):
        t = stackless.tasklet(nop)()
        self.assertRaises(RuntimeError, t.setup)
        self.assertRaises(RuntimeError, t, 1)
        self.assertEqual(stackless.getruncount(), 2)

    def test_construction_argument_errors(self):
        with self.assertRaisesRegex(TypeError, "at most 3 arguments"):
            stackless.tasklet(nop, (), {}, 4)
        with self.assertRaisesRegex(TypeError, "unexpected keyword argument 'function'"):
            stackless.tasklet(function=nop)
        with self.assertRaisesRegex(TypeError, "multiple values for argument 'func'"):
            stackless.tasklet(nop, func=nop)
        with self.assertRaisesRegex(TypeError, "at most 3 arguments"):
            stackless.tasklet().bind(nop, (), {}, 4)
        with self.assertRaises(TypeError):
            stackless.tasklet().bind(nop, 42)  # args must be a sequence
        with self.assertRaises(TypeError):
            stackless.tasklet().bind(nop, (), 42)  # kwargs must be a mapping

    def test_arguments_without_any_function_are_refused_and_change_nothing(self):
        t = stackless.tasklet()
        with self.assertRaisesRegex(RuntimeError, "no function to bind arguments to"):
            t.bind(None, (1,))
        self.assertFalse(t.alive)
        with self.assertRaisesRegex(RuntimeError, "no function"):
            t.setup(1)
        self.assertFalse(t.alive)
        self.assertFalse(t.scheduled)
        self.assertEqual(stackless.getruncount(), 1)

    def test_setup_keeps_its_own_copy_of_the_arguments(self):
        calls = []
        options = {"a": 1}
        values = [1, 2]
        t = stackless.tasklet(lambda *args, **kwargs: calls.append((args, kwargs)))
        t(*values, **options)
        options["b"] = 2
        values.append(3)
        u = stackless.tasklet().bind(lambda *args: calls.append(args), values)
        values.append(4)
        stackless.run()
        u.run()
        self.assertEqual(calls, [((1, 2), {"a": 1}), (1, 2, 3)])

    def test_finished_tasklet_can_be_rebound_and_keeps_identity(self):
        results = []
        t = stackless.tasklet(results.append)("first")
        stackless.run()
        self.assertFalse(t.alive)
        t.bind(results.append)
        self.assertIs(t.setup("second"), t)
        stackless.run()
        self.assertEqual(results, ["first", "second"])

    def test_tasklet_is_subclassable(self):
        class NamedTasklet(stackless.tasklet):
            __slots__ = ("name",)

            def __init__(self, func, name):
                stackless.tasklet.__init__(self, func)
                self.name = name

        seen = []

        def body():
            current = stackless.getcurrent()
            seen.append((type(current), current.name))

        t = NamedTasklet(body, "worker")()
        self.assertIsInstance(t, stackless.tasklet)
        stackless.run()
        self.assertEqual(seen, [(NamedTasklet, "worker")])


class StateAttributesTest(StacklessTestCase):
    def test_main_tasklet_attributes(self):
        main = stackless.getmain()
        self.assertTrue(main.is_main)
        self.assertTrue(main.is_current)
        self.assertTrue(main.alive)
        self.assertTrue(main.scheduled)
        self.assertFalse(main.paused)
        self.assertFalse(main.blocked)
        self.assertEqual(main.thread_id, threading.get_ident())

    def test_attributes_seen_from_inside_a_tasklet(self):
        main = stackless.getmain()
        seen = {}

        def body():
            me = stackless.getcurrent()
            seen.update(
                is_current=me.is_current,
                is_main=me.is_main,
                scheduled=me.scheduled,
                alive=me.alive,
                main_is_current=main.is_current,
                main_scheduled=main.scheduled,
                thread_id=me.thread_id,
            )

        t = stackless.tasklet(body)()
        self.assertFalse(t.is_current)
        self.assertFalse(t.is_main)
        stackless.run()
        self.assertEqual(
            seen,
            dict(
                is_current=True,
                is_main=False,
                scheduled=True,
                alive=True,
                main_is_current=False,
                main_scheduled=False,  # main is the watchdog of stackless.run(): paused
                thread_id=threading.get_ident(),
            ),
        )

    def test_blocked_tasklet_states(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.receive)()
        t.run()
        self.assertTrue(t.alive)
        self.assertTrue(t.blocked)
        self.assertTrue(t.scheduled)  # "scheduled" includes waiting on a channel
        self.assertFalse(t.paused)
        self.assertEqual(stackless.getruncount(), 1)
        ch.send(None)
        self.assertFalse(t.alive)
        self.assertFalse(t.blocked)
        self.assertFalse(t.scheduled)
        self.assertFalse(t.paused)

    def test_remove_pauses_and_insert_reschedules(self):
        ran = []
        t = stackless.tasklet(ran.append)(1)
        self.assertIs(t.remove(), t)
        self.assertTrue(t.paused)
        self.assertFalse(t.scheduled)
        self.assertEqual(stackless.getruncount(), 1)
        self.assertIs(t.remove(), t)  # removing an unscheduled tasklet is harmless
        stackless.run()
        self.assertEqual(ran, [])
        t.insert()
        t.insert()  # inserting a scheduled tasklet does not queue it twice
        self.assertEqual(stackless.getruncount(), 2)
        stackless.run()
        self.assertEqual(ran, [1])

    def test_remove_refuses_blocked_and_current(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.receive)()
        t.run()
        self.assertRaises(RuntimeError, t.remove)
        self.assertRaises(RuntimeError, stackless.getcurrent().remove)
        t.kill()

    def test_insert_refuses_blocked_and_dead(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.receive)()
        t.run()
        self.assertRaises(RuntimeError, t.insert)
        t.kill()
        self.assertFalse(t.alive)
        self.assertRaises(RuntimeError, t.insert)

    def test_next_and_prev_follow_the_run_queue(self):
        main = stackless.getmain()
        t1 = stackless.tasklet(nop)()
        t2 = stackless.tasklet(nop)()
        self.assertIs(main.next, t1)
        self.assertIs(t1.next, t2)
        self.assertIs(t2.next, main)
        self.assertIs(main.prev, t2)
        self.assertIs(t2.prev, t1)
        self.assertIs(t1.prev, main)
        t1.remove()
        self.assertIsNone(t1.next)
        self.assertIsNone(t1.prev)
        self.assertIs(main.next, t2)

    def test_tempval_is_readable_and_writable(self):
        t = stackless.tasklet()
        marker = object()
        t.tempval = marker
        self.assertIs(t.tempval, marker)

    def test_new_tasklet_belongs_to_creating_thread(self):
        self.assertEqual(stackless.tasklet(nop).thread_id, threading.get_ident())

    def test_returning_tasklet_ends_not_alive(self):
        t = stackless.tasklet(lambda: 42)()
        stackless.run()
        self.assertFalse(t.alive)
        self.assertFalse(t.scheduled)
        self.assertFalse(t.paused)
        self.assertRaisesRegex(RuntimeError, "dead", t.run)


class RunAndSwitchTest(StacklessTestCase):
    def test_run_of_a_scheduled_tasklet_continues_along_the_queue(self):
        log = []
        t1, t2, t3 = (stackless.tasklet(log.append)(name) for name in ("t1", "t2", "t3"))
        t2.run()
        # t2 runs, then whatever follows it in the chain (t3), then main again: t1 is before
        # t2 in the chain and has not run yet.
        self.assertEqual(log, ["t2", "t3"])
        self.assertTrue(t1.scheduled)
        stackless.run()
        self.assertEqual(log, ["t2", "t3", "t1"])

    def test_run_of_a_removed_tasklet_runs_only_it(self):
        log = []
        t1, t2, t3 = (stackless.tasklet(log.append)(name) for name in ("t1", "t2", "t3"))
        t2.remove()
        t2.run()
        self.assertEqual(log, ["t2"])
        stackless.run()
        self.assertEqual(log, ["t2", "t1", "t3"])

    def test_run_returns_when_the_tasklet_blocks(self):
        ch = stackless.channel()
        log = []

        def body():
            log.append("before")
            log.append(ch.receive())

        t = stackless.tasklet(body)()
        t.run()
        self.assertEqual(log, ["before"])
        self.assertTrue(t.blocked)
        ch.send("value")
        self.assertEqual(log, ["before", "value"])

    def test_run_refuses_blocked_tasklet(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.receive)()
        t.run()
        self.assertRaises(RuntimeError, t.run)
        self.assertRaises(RuntimeError, t.switch)
        t.kill()

    def test_switch_pauses_the_caller(self):
        main = stackless.getmain()
        seen = []

        def body():
            seen.append((main.scheduled, main.paused, main.alive))

        t = stackless.tasklet(body)()
        t.switch()
        self.assertEqual(seen, [(False, True, True)])
        self.assertTrue(main.scheduled)
        self.assertFalse(t.alive)

    def test_switch_to_current_is_a_no_op(self):
        current = stackless.getcurrent()
        current.switch()
        current.switch()
        self.assertIs(stackless.getcurrent(), current)


class KillTest(StacklessTestCase):
    def test_tasklet_exit_class(self):
        self.assertTrue(issubclass(TaskletExit, SystemExit))
        self.assertTrue(issubclass(TaskletExit, BaseException))
        self.assertFalse(issubclass(TaskletExit, Exception))
        # exported consistently if exported twice
        for owner in (builtins, stackless):
            if hasattr(owner, "TaskletExit"):
                self.assertIs(owner.TaskletExit, TaskletExit)

    def test_kill_blocked_tasklet(self):
        ch = stackless.channel()
        log = []

        def body():
            try:
                ch.receive()
            except BaseException as exc:
                log.append(type(exc))
                raise
            finally:
                log.append("finally")

        t = stackless.tasklet(body)()
        t.run()
        self.assertEqual(ch.balance, -1)
        t.kill()
        self.assertEqual(log, [TaskletExit, "finally"])
        self.assertFalse(t.alive)
        self.assertFalse(t.blocked)
        self.assertFalse(t.scheduled)
        self.assertEqual(ch.balance, 0)
        self.assertIsNone(ch.queue)

    def test_kill_never_run_tasklet_does_not_run_its_body(self):
        ran = []
        t = stackless.tasklet(ran.append)("ran")
        self.assertTrue(t.alive)
        t.kill()
        self.assertFalse(t.alive)
        self.assertFalse(t.scheduled)
        self.assertEqual(stackless.getruncount(), 1)
        stackless.run()
        self.assertEqual(ran, [])
        self.assertRaisesRegex(RuntimeError, "dead", t.run)

    def test_kill_of_a_queued_tasklet_lets_the_queue_continue(self):
        # kill() switches to the victim; once it has died the scheduler goes on with the
        # tasklet that followed it in the run queue, so the tasklets queued behind it run
        # (normally) before control returns to the caller.
        log = []
        t1, t2, t3 = (stackless.tasklet(log.append)(name) for name in ("t1", "t2", "t3"))
        t1.kill()
        self.assertEqual(log, ["t2", "t3"])
        self.assertFalse(t1.alive or t2.alive or t3.alive)

    def test_kill_of_removed_tasklets_returns_to_the_caller(self):
        log = []
        tasklets = [stackless.tasklet(log.append)(name) for name in ("t1", "t2", "t3")]
        for t in tasklets:
            t.remove()
        tasklets[0].kill()
        self.assertEqual(log, [])
        self.assertFalse(tasklets[0].alive)
        self.assertTrue(tasklets[1].paused and tasklets[2].paused)
        for t in tasklets[1:]:
            t.kill()
        self.assertEqual(log, [])

    def test_kill_paused_tasklet(self):
        log = []

        def body():
            try:
                stackless.schedule_remove()
                log.append("resumed normally")
            finally:
                log.append("finally")

        t = stackless.tasklet(body)()
        stackless.run()
        self.assertTrue(t.paused)
        t.kill()
        self.assertEqual(log, ["finally"])
        self.assertFalse(t.alive)

    def test_kill_pending_waits_for_the_tasklet_to_run(self):
        killed = []

        def body():
            try:
                stackless.schedule()
            except TaskletExit:
                killed.append(True)
                raise

        t = stackless.tasklet(body)()
        t.run()
        self.assertEqual(killed, [])
        t.kill(pending=True)
        self.assertEqual(killed, [])
        self.assertTrue(t.alive)
        self.assertTrue(t.scheduled)
        t.run()
        self.assertEqual(killed, [True])
        self.assertFalse(t.alive)

    def test_kill_pending_unblocks_a_blocked_tasklet(self):
        ch = stackless.channel()
        log = []

        def body():
            try:
                ch.receive()
            finally:
                log.append("finally")

        t = stackless.tasklet(body)()
        t.run()
        t.kill(pending=True)
        self.assertFalse(t.blocked)
        self.assertTrue(t.scheduled)
        self.assertEqual(ch.balance, 0)
        self.assertEqual(log, [])
        stackless.run()
        self.assertEqual(log, ["finally"])
        self.assertFalse(t.alive)

    def test_kill_not_pending_runs_immediately(self):
        killed = []

        def body():
            try:
                stackless.schedule()
            except TaskletExit:
                killed.append(True)
                raise

        t = stackless.tasklet(body)()
        t.run()
        t.kill(pending=False)
        self.assertEqual(killed, [True])
        self.assertFalse(t.alive)

    def test_kill_dead_tasklet_is_harmless(self):
        t = stackless.tasklet(nop)()
        stackless.run()
        t.kill()
        t.kill(pending=True)
        self.assertFalse(t.alive)
        self.assertEqual(stackless.getruncount(), 1)

    def test_kill_current_tasklet_raises_in_place(self):
        log = []

        def body():
            try:
                stackless.getcurrent().kill()
                log.append("not reached")
            except TaskletExit:
                log.append("caught")
                raise

        t = stackless.tasklet(body)()
        t.run()  # must not raise: TaskletExit ends the tasklet silently
        self.assertEqual(log, ["caught"])
        self.assertFalse(t.alive)

    def test_except_exception_does_not_catch_kill(self):
        ch = stackless.channel()
        log = []

        def body():
            try:
                ch.receive()
            except Exception:
                log.append("caught by except Exception")
            finally:
                log.append("finally")

        t = stackless.tasklet(body)()
        t.run()
        t.kill()
        self.assertEqual(log, ["finally"])

    def test_raising_tasklet_exit_ends_the_tasklet_silently(self):
        log = []

        def body():
            log.append("start")
            raise TaskletExit("bye")

        t = stackless.tasklet(body)()
        stackless.run()  # no exception reaches main
        self.assertEqual(log, ["start"])
        self.assertFalse(t.alive)

    def test_caught_kill_lets_the_tasklet_return(self):
        log = []

        def body():
            try:
                stackless.schedule_remove()
            except TaskletExit:
                log.append("cleanup")
            return "done"

        t = stackless.tasklet(body)()
        stackless.run()
        t.kill()
        self.assertEqual(log, ["cleanup"])
        self.assertFalse(t.alive)


class ThrowTest(StacklessTestCase):
    def blocked_catcher(self, log):
        ch = stackless.channel()

        def body():
            try:
                ch.receive()
            except Exception as exc:
                log.append(exc)

        t = stackless.tasklet(body)()
        t.run()
        self.assertTrue(t.blocked)
        return t

    def test_throw_class_is_raised_in_the_tasklet_immediately(self):
        log = []
        t = self.blocked_catcher(log)
        t.throw(IndexError)
        self.assertEqual(len(log), 1)
        self.assertIsInstance(log[0], IndexError)
        self.assertFalse(t.alive)

    def test_throw_class_with_argument_tuple(self):
        log = []
        t = self.blocked_catcher(log)
        t.throw(IndexError, (1, 2, 3))
        self.assertEqual(log[0].args, (1, 2, 3))

    def test_throw_instance_keeps_identity(self):
        log = []
        t = self.blocked_catcher(log)
        exc = IndexError("mine")
        t.throw(exc)
        self.assertIs(log[0], exc)

    def test_throw_with_traceback(self):
        log = []
        t = self.blocked_catcher(log)

        def errfunc():
            1 / 0

        try:
            errfunc()
        except ZeroDivisionError:
            t.throw(*sys.exc_info())
        self.assertIsInstance(log[0], ZeroDivisionError)
        names = [frame.name for frame in traceback.extract_tb(log[0].__traceback__)]
        self.assertIn("errfunc", names)

    def test_throw_pending_only_makes_the_tasklet_runnable(self):
        log = []
        t = self.blocked_catcher(log)
        t.throw(KeyError, pending=True)
        self.assertEqual(log, [])
        self.assertTrue(t.alive)
        self.assertFalse(t.blocked)
        self.assertTrue(t.scheduled)
        stackless.run()
        self.assertIsInstance(log[0], KeyError)
        self.assertFalse(t.alive)

    def test_uncaught_thrown_exception_reaches_the_thrower(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.receive)()
        t.run()
        self.assertRaises(KeyError, t.throw, KeyError)
        self.assertFalse(t.alive)
        self.assertEqual(ch.balance, 0)

    def test_throw_into_never_run_tasklet(self):
        ran = []
        t = stackless.tasklet(ran.append)(1)
        self.assertRaises(IndexError, t.throw, IndexError)
        self.assertEqual(ran, [])
        self.assertFalse(t.alive)

    def test_throw_pending_into_never_run_tasklet(self):
        ran = []
        t = stackless.tasklet(ran.append)(1)
        t.throw(IndexError, pending=True)
        self.assertTrue(t.alive)
        self.assertRaises(IndexError, stackless.run)
        self.assertEqual(ran, [])
        self.assertFalse(t.alive)

    def test_throw_into_dead_tasklet(self):
        t = stackless.tasklet(nop)()
        stackless.run()
        self.assertRaises(RuntimeError, t.throw, IndexError)
        t.throw(TaskletExit)  # allowed on an ended tasklet: nothing happens
        self.assertFalse(t.alive)

    def test_throw_into_current_raises_at_once(self):
        with self.assertRaises(ValueError) as cm:
            stackless.getcurrent().throw(ValueError("here"))
        self.assertEqual(cm.exception.args, ("here",))

    def test_throw_argument_errors(self):
        log = []
        t = self.blocked_catcher(log)
        self.assertRaises(TypeError, t.throw)
        self.assertRaises(TypeError, t.throw, IndexError(1), (1, 2, 3))
        self.assertRaises(TypeError, t.throw, 42)
        self.assertRaises(TypeError, t.throw, IndexError, None, "not a traceback")
        self.assertTrue(t.blocked)
        self.assertEqual(log, [])
        t.kill()


class RaiseExceptionTest(StacklessTestCase):
    def test_raise_exception_instantiates_with_args(self):
        ch = stackless.channel()
        log = []

        def body():
            try:
                ch.receive()
            except ValueError as exc:
                log.append(exc.args)

        t = stackless.tasklet(body)()
        t.run()
        t.raise_exception(ValueError, 1, "two")
        self.assertEqual(log, [(1, "two")])
        self.assertFalse(t.alive)

    def test_raise_exception_requires_an_exception_class(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.receive)()
        t.run()
        self.assertRaises(TypeError, t.raise_exception, 42)
        self.assertRaises(TypeError, t.raise_exception)
        self.assertTrue(t.blocked)
        t.kill()

    def test_raise_exception_on_dead_tasklet(self):
        t = stackless.tasklet(nop)()
        stackless.run()
        self.assertRaises(RuntimeError, t.raise_exception, ValueError, "x")
        t.raise_exception(TaskletExit)  # allowed: the tasklet already ended
        self.assertFalse(t.alive)


class ExceptionPropagationTest(StacklessTestCase):
    def test_uncaught_exception_is_raised_from_run(self):
        def body():
            raise ZeroDivisionError("catch this")

        t = stackless.tasklet(body)()
        with self.assertRaises(ZeroDivisionError) as cm:
            stackless.run()
        self.assertEqual(cm.exception.args, ("catch this",))
        self.assertFalse(t.alive)

    def test_other_tasklets_stay_scheduled_after_an_error(self):
        log = []

        def looper():
            for i in range(3):
                log.append(i)
                stackless.schedule()

        def failer():
            raise KeyError("boom")

        t1 = stackless.tasklet(looper)()
        t2 = stackless.tasklet(failer)()
        self.assertRaises(KeyError, stackless.run)
        self.assertFalse(t2.alive)
        self.assertTrue(t1.alive)
        self.assertTrue(t1.scheduled)
        stackless.run()
        self.assertEqual(log, [0, 1, 2])
        self.assertFalse(t1.alive)

    def test_exception_reaches_main_inside_schedule(self):
        def body():
            raise LookupError("from tasklet")

        stackless.tasklet(body)()
        self.assertRaises(LookupError, stackless.schedule)
        self.assertEqual(stackless.getruncount(), 1)

    def test_exception_reaches_main_inside_tasklet_run(self):
        def body():
            raise LookupError("from tasklet")

        t = stackless.tasklet(body)()
        self.assertRaises(LookupError, t.run)

    def test_exception_reaches_main_blocked_on_a_channel(self):
        ch = stackless.channel()

        def body():
            raise ZeroDivisionError("mumbai")

        stackless.tasklet(body)()
        self.assertRaisesRegex(ZeroDivisionError, "mumbai", ch.receive)
        self.assertEqual(ch.balance, 0)
        self.assertFalse(stackless.getmain().blocked)


if __name__ == "__main__":
    unittest.main()
