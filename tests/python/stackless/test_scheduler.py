"""The stackless scheduler under `pyhost --engine stackless`: run() (cooperative and with a
timeout), schedule(), schedule_remove(), getcurrent/getmain/getruncount, atomic, the schedule
and channel callbacks, deadlock detection, switch_trap and enable_softswitch.

Written from Doc/library/stackless/stackless.rst and scheduler.rst; exact messages and the
preemption rules come from Stackless/module/scheduling.c and stacklessmodule.c (SEMANTICS.md).
Run standalone: `pyhost --engine stackless tests/python/stackless/test_scheduler.py`.
"""

import os
import subprocess
import sys
import threading
import unittest

import stackless
import stackless_support

DEADLOCK_MESSAGE = "Deadlock: the last runnable tasklet cannot be blocked."
# A busy loop long enough (seconds) that a scheduler which never preempts makes run() return
# None instead of hanging the test; preemption after ~1000 ticks ends it far earlier.
BUSY_ITERATIONS = 20_000_000
# Busy code well over the 1000-tick slices the tests use (milliseconds), far under a second.
NESTED_ITERATIONS = 300_000





class StacklessTestCase(stackless_support.StacklessTestCase):
    def tearDown(self):
        stackless.set_schedule_callback(None)
        stackless.set_channel_callback(None)
        super().tearDown()


class CooperativeRunTest(StacklessTestCase):
    def test_run_without_tasklets_returns_none(self):
        self.assertIsNone(stackless.run())

    def test_run_runs_every_tasklet_to_completion(self):
        log = []

        def body(name, n):
            for i in range(n):
                log.append((name, i))
                stackless.schedule()

        a = stackless.tasklet(body)("a", 2)
        b = stackless.tasklet(body)("b", 3)
        self.assertIsNone(stackless.run())
        self.assertEqual(log, [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2)])
        self.assertFalse(a.alive or b.alive)
        self.assertEqual(stackless.getruncount(), 1)

    def test_run_returns_when_only_blocked_tasklets_remain(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.receive)()
        self.assertIsNone(stackless.run())
        self.assertTrue(t.blocked)
        self.assertIs(stackless.getcurrent(), stackless.getmain())
        t.kill()

    def test_run_accepts_documented_keywords(self):
        for kwargs in (
            dict(timeout=0),
            dict(threadblock=False),
            dict(soft=False),
            dict(soft=True),
            dict(ignore_nesting=True),
            dict(totaltimeout=False),
            dict(timeout=0, threadblock=False, soft=False, ignore_nesting=False, totaltimeout=False),
        ):
            with self.subTest(**kwargs):
                done = []
                stackless.tasklet(done.append)(1)
                self.assertIsNone(stackless.run(**kwargs))
                self.assertEqual(done, [1])
        done = []
        stackless.tasklet(done.append)(2)
        self.assertIsNone(stackless.run(0, False, False, False, False))
        self.assertEqual(done, [2])


class QueriesTest(StacklessTestCase):
    def test_getcurrent_and_getmain_in_main(self):
        self.assertIs(stackless.getcurrent(), stackless.getmain())
        self.assertIs(stackless.current, stackless.getcurrent())
        self.assertIs(stackless.main, stackless.getmain())
        self.assertIsInstance(stackless.getmain(), stackless.tasklet)

    def test_getcurrent_in_tasklet(self):
        main = stackless.getmain()
        seen = []

        def body():
            seen.append((stackless.getcurrent(), stackless.current, stackless.getmain()))

        t = stackless.tasklet(body)()
        stackless.run()
        self.assertEqual(seen, [(t, t, main)])

    def test_getruncount_counts_main_and_runnables_only(self):
        self.assertEqual(stackless.getruncount(), 1)
        self.assertEqual(stackless.runcount, 1)
        ch = stackless.channel()
        t1 = stackless.tasklet(lambda: None)()
        t2 = stackless.tasklet(lambda: None)()
        self.assertEqual(stackless.getruncount(), 3)
        self.assertEqual(stackless.runcount, 3)
        blocked = stackless.tasklet(ch.receive)()
        blocked.run()
        self.assertEqual(stackless.getruncount(), 3)  # a blocked tasklet is not runnable
        counts = []
        stackless.tasklet(lambda: counts.append(stackless.getruncount()))()
        stackless.run()
        # inside run() main is the (paused) watchdog: only the running tasklet is counted
        self.assertEqual(counts, [1])
        self.assertEqual(stackless.getruncount(), 1)
        blocked.kill()
        self.assertFalse(t1.alive or t2.alive)


class ScheduleTest(StacklessTestCase):
    def test_schedule_from_main_runs_the_queue_once(self):
        log = []

        def body(name):
            log.append(name + "1")
            stackless.schedule()
            log.append(name + "2")

        stackless.tasklet(body)("a")
        stackless.tasklet(body)("b")
        stackless.schedule()
        self.assertEqual(log, ["a1", "b1"])
        stackless.schedule()
        self.assertEqual(log, ["a1", "b1", "a2", "b2"])
        self.assertEqual(stackless.getruncount(), 1)

    def test_schedule_returns_retval(self):
        self.assertIs(stackless.schedule(), stackless.getcurrent())
        self.assertEqual(stackless.schedule(42), 42)
        seen = []

        def body():
            seen.append(stackless.schedule("tasklet value"))

        stackless.tasklet(body)()
        stackless.tasklet(lambda: None)()
        stackless.run()
        self.assertEqual(seen, ["tasklet value"])

    def test_schedule_keeps_the_caller_scheduled(self):
        seen = []
        main = stackless.getmain()

        def body():
            seen.append(main.scheduled)

        stackless.tasklet(body)()
        stackless.schedule()
        self.assertEqual(seen, [True])

    def test_schedule_remove_pauses_and_tempval_carries_the_result(self):
        waiting = []
        results = []

        def wait_for_result():
            waiting.append(stackless.getcurrent())
            return stackless.schedule_remove()

        def body():
            results.append(wait_for_result())

        t = stackless.tasklet(body)()
        stackless.run()
        self.assertEqual(waiting, [t])
        self.assertTrue(t.paused)
        self.assertFalse(t.scheduled)
        self.assertIs(t.tempval, t)  # retval defaults to the current tasklet
        t.tempval = "the result"
        t.insert()
        stackless.run()
        self.assertEqual(results, ["the result"])
        self.assertFalse(t.alive)

    def test_schedule_remove_stores_retval_in_tempval(self):
        results = []
        t = stackless.tasklet(lambda: results.append(stackless.schedule_remove(99)))()
        stackless.run()
        self.assertEqual(t.tempval, 99)
        t.insert()
        stackless.run()
        self.assertEqual(results, [99])

    def test_schedule_remove_from_main(self):
        main = stackless.getcurrent()
        seen = []

        def body():
            seen.append(main.scheduled)
            main.insert()
            seen.append(main.scheduled)

        stackless.tasklet(body)()
        stackless.schedule_remove()
        self.assertEqual(seen, [False, True])
        self.assertTrue(main.scheduled)


class AtomicTest(StacklessTestCase):
    def test_set_atomic_returns_previous_value(self):
        current = stackless.getcurrent()
        old = current.set_atomic(False)
        try:
            self.assertFalse(current.atomic)
            self.assertFalse(current.set_atomic(True))
            self.assertTrue(current.atomic)
            self.assertTrue(current.set_atomic(True))
            self.assertTrue(current.set_atomic(False))
            self.assertFalse(current.atomic)
        finally:
            current.set_atomic(old)

    def test_atomic_context_manager(self):
        current = stackless.getcurrent()
        old = current.set_atomic(False)
        try:
            with stackless.atomic():
                self.assertTrue(current.atomic)
                with stackless.atomic():
                    self.assertTrue(current.atomic)
                self.assertTrue(current.atomic)
            self.assertFalse(current.atomic)
            with self.assertRaises(KeyError):
                with stackless.atomic():
                    raise KeyError("x")
            self.assertFalse(current.atomic)
        finally:
            current.set_atomic(old)

    def test_atomic_in_tasklet_is_per_tasklet(self):
        seen = []
        main = stackless.getmain()

        def body():
            with stackless.atomic():
                seen.append((stackless.getcurrent().atomic, main.atomic))

        stackless.tasklet(body)()
        stackless.run()
        self.assertEqual(seen, [(True, False)])


class PreemptionTest(StacklessTestCase):
    def test_run_timeout_interrupts_a_busy_tasklet(self):
        state = {"n": 0}

        def busy():
            for i in range(BUSY_ITERATIONS):
                state["n"] = i

        t = stackless.tasklet(busy)()
        interrupted = stackless.run(1000)
        self.assertIsInstance(interrupted, stackless.tasklet)
        self.assertIsNot(interrupted, stackless.getmain())
        self.assertIs(interrupted, t)
        self.assertTrue(t.alive)
        self.assertTrue(t.paused)  # the interrupted tasklet is no longer scheduled
        self.assertFalse(t.scheduled)
        self.assertLess(state["n"], BUSY_ITERATIONS - 1)
        t.insert()
        self.assertTrue(t.scheduled)
        t.kill()
        self.assertFalse(t.alive)

    def test_kill_and_throw_reach_an_interrupted_tasklet_where_it_stopped(self):
        state = {"n": 0, "ended_by": None}

        def busy():
            try:
                for i in range(BUSY_ITERATIONS):
                    state["n"] = i
            except BaseException as e:
                state["ended_by"] = type(e)
                raise

        t = stackless.tasklet(busy)()
        self.assertIs(stackless.run(1000), t)
        stopped_at = state["n"]
        t.kill()  # paused (out of the queue): killed at once, where the timeslice stopped it
        self.assertFalse(t.alive)
        self.assertIs(state["ended_by"], stackless.TaskletExit)
        self.assertEqual(state["n"], stopped_at)

        state.update(n=0, ended_by=None)
        u = stackless.tasklet(busy)()
        self.assertIs(stackless.run(1000), u)
        stopped_at = state["n"]
        with self.assertRaises(KeyError):
            u.throw(KeyError("stop"))  # uncaught in the tasklet: it comes back to the thrower
        self.assertIs(state["ended_by"], KeyError)
        self.assertEqual(state["n"], stopped_at)
        self.assertFalse(u.alive)

        state.update(n=0, ended_by=None)
        w = stackless.tasklet(busy)()
        self.assertIs(stackless.run(1000), w)
        w.kill(pending=True)  # back in the queue, killed when it next runs
        self.assertTrue(w.alive)
        stackless.run()
        self.assertIs(state["ended_by"], stackless.TaskletExit)
        self.assertFalse(w.alive)
        self.assertLess(state["n"], BUSY_ITERATIONS - 1)

    def test_run_timeout_returns_none_when_all_finish(self):
        done = []
        stackless.tasklet(done.append)(1)
        self.assertIsNone(stackless.run(100000))
        self.assertEqual(done, [1])

    def test_run_timeout_with_ignore_nesting(self):
        def busy():
            for _ in range(BUSY_ITERATIONS):
                pass

        t = stackless.tasklet(busy)()
        self.assertIs(stackless.run(1000, ignore_nesting=True), t)
        t.kill()

    def test_cooperative_tasklets_are_not_interrupted_by_the_timeslice(self):
        counts = [0, 0]
        cap = 5000

        def coop(i):
            while counts[i] < cap:
                counts[i] += 1
                stackless.schedule()

        stackless.tasklet(coop)(0)
        stackless.tasklet(coop)(1)
        # Each tasklet yields after microseconds; the slice is generous because a tick is CPU
        # time, and a garbage collection that happens to start in a tasklet (milliseconds in
        # a debug build) counts against it.
        self.assertIsNone(stackless.run(20_000))
        self.assertEqual(counts, [cap, cap])

    def test_totaltimeout_bounds_the_whole_run(self):
        counts = [0, 0]
        cap = 100_000

        def coop(i):
            while counts[i] < cap:
                counts[i] += 1
                stackless.schedule()

        a = stackless.tasklet(coop)(0)
        b = stackless.tasklet(coop)(1)
        interrupted = stackless.run(1000, totaltimeout=True)
        self.assertIn(interrupted, (a, b))
        self.assertLess(sum(counts), 2 * cap)
        self.assertFalse(interrupted.scheduled)
        interrupted.kill()
        a.kill()
        b.kill()

    def test_soft_timeout_returns_none_and_leaves_the_tasklet_scheduled(self):
        state = {"n": 0}
        cap = 2_000_000

        def worker():
            while state["n"] < cap:
                state["n"] += 1
                if state["n"] % 10 == 0:
                    stackless.schedule()

        t = stackless.tasklet(worker)()
        self.assertIsNone(stackless.run(1000, soft=True))
        self.assertTrue(t.alive)
        self.assertTrue(t.scheduled)
        self.assertLess(state["n"], cap)
        t.kill()

    def run_with_nested_busy_code(self, **run_args):
        """A tasklet that first runs busy code called from C (map() calls it: nesting level
        1), then busy code of its own (level 0). Returns (interrupted tasklet, whether the
        nested part had finished)."""
        state = {"nested_done": False}

        def nested_busy(x):
            for _ in range(NESTED_ITERATIONS):
                pass
            state["nested_done"] = True
            return x

        def worker():
            list(map(nested_busy, [1]))
            for _ in range(BUSY_ITERATIONS):
                pass

        t = stackless.tasklet(worker)()
        return t, stackless.run(1000, **run_args), state["nested_done"]

    def test_nested_code_is_interrupted_only_back_at_level_0(self):
        # Stackless: any nesting level > 0 inhibits the interrupt unless ignore_nesting.
        t, interrupted, nested_done = self.run_with_nested_busy_code()
        self.assertIs(interrupted, t)
        self.assertTrue(nested_done)
        t.kill()

    def test_ignore_nesting_interrupts_nested_code(self):
        t, interrupted, nested_done = self.run_with_nested_busy_code(ignore_nesting=True)
        self.assertIs(interrupted, t)
        self.assertFalse(nested_done)
        t.kill()

    def test_a_tasklets_own_ignore_nesting_lets_it_be_interrupted_nested(self):
        state = {"nested_done": False}

        def nested_busy(x):
            for _ in range(NESTED_ITERATIONS):
                pass
            state["nested_done"] = True

        def worker():
            stackless.getcurrent().set_ignore_nesting(True)
            list(map(nested_busy, [1]))

        t = stackless.tasklet(worker)()
        self.assertIs(stackless.run(1000), t)
        self.assertFalse(state["nested_done"])
        t.kill()

    def test_switch_trap_defers_the_interrupt(self):
        state = {"trapped_done": False}

        def worker():
            stackless.switch_trap(1)
            try:
                for _ in range(NESTED_ITERATIONS):
                    pass
                state["trapped_done"] = True
            finally:
                stackless.switch_trap(-1)
            for _ in range(BUSY_ITERATIONS):
                pass

        t = stackless.tasklet(worker)()
        self.assertIs(stackless.run(1000), t)
        self.assertTrue(state["trapped_done"])
        t.kill()

    def test_atomic_section_is_not_interrupted(self):
        state = {"atomic_done": False, "n": 0}

        def worker():
            with stackless.atomic():
                for _ in range(200_000):
                    pass
                state["atomic_done"] = True
            for i in range(BUSY_ITERATIONS):
                state["n"] = i

        t = stackless.tasklet(worker)()
        self.assertIs(stackless.run(1000), t)
        self.assertTrue(state["atomic_done"])
        self.assertFalse(t.atomic)
        t.kill()


class PreemptionOnAnotherThreadTest(PreemptionTest):
    """The same rules on a thread other than the main one, which has its own scheduler: there
    Python runs no signal handlers, so the watchdog delivers through sys.monitoring events."""

    def _callTestMethod(self, method):
        failures = []

        def body():
            try:
                method()
            except BaseException as e:
                failures.append(e)

        thread = threading.Thread(target=body)
        thread.start()
        thread.join()
        if failures:
            raise failures[0]

    def test_events_are_off_once_the_tasklet_is_out(self):
        t = stackless.tasklet(busy_loop)()
        self.assertIs(stackless.run(1000), t)
        tool = next(i for i in range(6) if sys.monitoring.get_tool(i) == "stackless run(timeout)")
        self.assertEqual(sys.monitoring.get_events(tool), 0)
        t.kill()

    def test_a_second_tasklet_is_interrupted_while_the_first_is_still_out(self):
        # The first was switched out from inside a monitoring callback; events must still
        # reach the tasklets that run meanwhile.
        t = stackless.tasklet(busy_loop)()
        self.assertIs(stackless.run(1000), t)
        u = stackless.tasklet(busy_recursion)()
        self.assertIs(stackless.run(1000), u)
        t.insert()
        self.assertIs(stackless.run(1000), t)
        t.kill()
        u.kill()
        self.assertFalse(t.alive or u.alive)

    def test_kill_unwinds_a_tasklet_interrupted_at_a_loop_or_a_call_through_its_handlers(self):
        # Interrupted either at a loop's jump or at the call of f (whichever event comes first
        # after the slice expires); in both cases the kill must run the tasklet's own handlers.
        for _ in range(20):
            ended = []

            def calls():
                def f():
                    return 1

                try:
                    while True:
                        f()
                finally:
                    ended.append(True)

            t = stackless.tasklet(calls)()
            self.assertIs(stackless.run(500), t)
            t.kill()
            self.assertEqual(ended, [True])
            self.assertFalse(t.alive)


def busy_loop():
    for _ in range(BUSY_ITERATIONS):
        pass


def busy_recursion():
    def down(n):
        return down(n - 1) if n else 0

    for _ in range(BUSY_ITERATIONS):
        down(50)


class PreemptionOnSeveralThreadsTest(StacklessTestCase):
    def test_each_thread_interrupts_its_own_busy_tasklet_at_the_same_time(self):
        results = {}
        start = threading.Barrier(3)

        def body(name):
            t = stackless.tasklet(busy_loop)()
            start.wait()
            interrupted = stackless.run(2000)
            results[name] = (interrupted is t, t.alive, t.paused)
            t.kill()

        threads = [threading.Thread(target=body, args=(f"thread {i}",)) for i in range(2)]
        for thread in threads:
            thread.start()
        body("main")
        for thread in threads:
            thread.join()
        self.assertEqual(results, {name: (True, True, True) for name in ("main", "thread 0", "thread 1")})

    def test_no_free_monitoring_tool_is_a_clear_error(self):
        code = """if True:
            import sys, stackless, threading
            for tool in (3, 4):
                sys.monitoring.use_tool_id(tool, "someone else")
            def body():
                stackless.tasklet(lambda: None)()
                try:
                    stackless.run(1000)
                except RuntimeError as e:
                    print("error:", e)
                print("runcount", stackless.getruncount())
                stackless.run()
                print("runcount", stackless.getruncount())
            threading.Thread(target=body).start()
        """
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.splitlines(), [
            "error: run(timeout) outside the main thread needs a free sys.monitoring tool id "
            "(4 or 3); all are in use",
            "runcount 2",
            "runcount 1",
        ])


class CallbackTest(StacklessTestCase):
    def test_schedule_callback_set_get_and_previous(self):
        def cb1(prev, next):
            pass

        def cb2(prev, next):
            pass

        self.assertIsNone(stackless.get_schedule_callback())
        self.assertIsNone(stackless.set_schedule_callback(cb1))
        self.assertIs(stackless.get_schedule_callback(), cb1)
        self.assertIs(stackless.set_schedule_callback(cb2), cb1)
        self.assertIs(stackless.set_schedule_callback(None), cb2)
        self.assertIsNone(stackless.get_schedule_callback())
        self.assertRaises(TypeError, stackless.set_schedule_callback, 42)

    def test_schedule_callback_sees_switches(self):
        calls = []

        def cb(prev, next):
            calls.append((prev, next))

        main = stackless.getmain()
        t = stackless.tasklet(lambda: None)()
        stackless.set_schedule_callback(cb)
        stackless.run()
        stackless.set_schedule_callback(None)
        self.assertIn((main, t), calls)
        self.assertIn((t, main), calls)
        for prev, next in calls:
            self.assertTrue(prev is None or isinstance(prev, stackless.tasklet))
            self.assertTrue(next is None or isinstance(next, stackless.tasklet))
            self.assertIsNot(prev, next)
        count = len(calls)
        stackless.tasklet(lambda: None)()
        stackless.run()
        self.assertEqual(len(calls), count, "callback called after it was removed")

    def test_schedule_callback_counts_cooperative_switches(self):
        calls = []
        stackless.set_schedule_callback(lambda prev, next: calls.append(1))

        def body():
            for _ in range(5):
                stackless.schedule()

        stackless.tasklet(body)()
        stackless.tasklet(body)()
        stackless.run()
        stackless.set_schedule_callback(None)
        self.assertGreaterEqual(len(calls), 2 * 5)

    def test_channel_callback_set_get_and_previous(self):
        def cb(channel, tasklet, sending, willblock):
            pass

        self.assertIsNone(stackless.get_channel_callback())
        self.assertIsNone(stackless.set_channel_callback(cb))
        self.assertIs(stackless.get_channel_callback(), cb)
        self.assertIs(stackless.set_channel_callback(None), cb)
        self.assertIsNone(stackless.get_channel_callback())
        self.assertRaises(TypeError, stackless.set_channel_callback, 42)

    def test_channel_callback_arguments(self):
        calls = []

        def cb(channel, tasklet, sending, willblock):
            calls.append((channel, tasklet, bool(sending), bool(willblock), tasklet.tempval))

        ch = stackless.channel()
        main = stackless.getmain()
        t = stackless.tasklet(ch.receive)()
        stackless.set_channel_callback(cb)
        t.run()  # the receiver blocks
        ch.send(42)  # main sends without blocking
        stackless.set_channel_callback(None)
        self.assertEqual(
            calls,
            [(ch, t, False, True, calls[0][4]), (ch, main, True, False, 42)],
        )
        self.assertFalse(t.alive)


class DeadlockTest(StacklessTestCase):
    def test_main_receiving_alone_is_a_deadlock(self):
        ch = stackless.channel()
        with self.assertRaises(RuntimeError) as cm:
            ch.receive()
        self.assertEqual(str(cm.exception), DEADLOCK_MESSAGE)
        self.assertEqual(ch.balance, 0)
        self.assertFalse(stackless.getmain().blocked)

    def test_main_sending_alone_is_a_deadlock(self):
        ch = stackless.channel()
        with self.assertRaises(RuntimeError) as cm:
            ch.send(1)
        self.assertEqual(str(cm.exception), DEADLOCK_MESSAGE)
        self.assertEqual(ch.balance, 0)

    def test_main_receiving_when_the_last_tasklet_ends(self):
        ch = stackless.channel()
        t = stackless.tasklet(lambda: None)()
        with self.assertRaises(RuntimeError) as cm:
            ch.receive()
        self.assertEqual(str(cm.exception), "the main tasklet is receiving without a sender available.")
        self.assertFalse(t.alive)
        self.assertEqual(ch.balance, 0)

    def test_main_sending_when_the_last_tasklet_ends(self):
        ch = stackless.channel()
        stackless.tasklet(lambda: None)()
        with self.assertRaises(RuntimeError) as cm:
            ch.send(None)
        self.assertEqual(str(cm.exception), "the main tasklet is sending without a receiver available.")
        self.assertEqual(ch.balance, 0)

    def test_tasklet_gets_the_deadlock_when_main_is_blocked(self):
        main_channel = stackless.channel()
        seen = []

        def body():
            try:
                stackless.channel().receive()
            except RuntimeError as exc:
                seen.append(str(exc))
            main_channel.send("released")

        stackless.tasklet(body)()
        self.assertEqual(main_channel.receive(), "released")
        self.assertEqual(seen, [DEADLOCK_MESSAGE])

    def test_uncaught_tasklet_deadlock_reaches_blocked_main(self):
        main_channel = stackless.channel()
        t = stackless.tasklet(lambda: stackless.channel().receive())()
        with self.assertRaises(RuntimeError) as cm:
            main_channel.receive()
        self.assertEqual(str(cm.exception), DEADLOCK_MESSAGE)
        self.assertFalse(t.alive)


class SwitchTrapTest(StacklessTestCase):
    def test_switch_trap_forbids_switching(self):
        t = stackless.tasklet(lambda: None)()
        self.assertEqual(stackless.switch_trap(1), 0)
        try:
            self.assertRaisesRegex(RuntimeError, "switch_trap", stackless.schedule)
            self.assertRaisesRegex(RuntimeError, "switch_trap", stackless.run)
            self.assertRaisesRegex(RuntimeError, "switch_trap", t.run)
            self.assertTrue(t.alive)
        finally:
            self.assertEqual(stackless.switch_trap(-1), 1)
        self.assertEqual(stackless.switch_trap(0), 0)
        stackless.run()
        self.assertFalse(t.alive)


class SoftswitchTest(StacklessTestCase):
    def test_enable_softswitch_answers_consistently(self):
        state = stackless.enable_softswitch(None)
        self.assertIsInstance(state, bool)
        try:
            previous = stackless.enable_softswitch(state)
            self.assertIsInstance(previous, bool)
            self.assertEqual(previous, state)
            self.assertEqual(stackless.enable_softswitch(None), state)
            self.assertIsInstance(stackless.enable_softswitch(False), bool)
            self.assertIs(stackless.enable_softswitch(None), False)
            reported = stackless.enable_softswitch(True)
            self.assertIs(reported, False)
            now = stackless.enable_softswitch(None)
            self.assertIsInstance(now, bool)
            self.assertIs(stackless.enable_softswitch(None), now)  # inquiry changes nothing
            # switching still works whatever the flag says
            done = []
            stackless.tasklet(done.append)(1)
            stackless.run()
            self.assertEqual(done, [1])
        finally:
            stackless.enable_softswitch(state)
        self.assertEqual(stackless.enable_softswitch(None), state)


if __name__ == "__main__":
    unittest.main()
