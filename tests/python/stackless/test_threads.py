"""Tasklets and OS threads under `pyhost --engine stackless`: one main tasklet and one scheduler
per thread, tasklets stay in the thread that created them, thread_id, tasklets of a dead thread,
and channels used across threads.

Written from Doc/library/stackless/threads.rst and tasklets.rst (thread_id, switch); the
cross-thread channel wake-up rules come from Stackless/module/scheduling.c (SEMANTICS.md).
Run standalone: `pyhost --engine stackless tests/python/stackless/test_threads.py`.
"""

import threading
import time
import unittest

import stackless
from stackless_support import StacklessTestCase

JOIN_TIMEOUT = 10.0




class ThreadResult:
    """Runs `func` in a new thread and keeps its result or exception."""

    def __init__(self, func, *args):
        self.value = None
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(func, args), daemon=True)

    def _run(self, func, args):
        try:
            self.value = func(*args)
        except BaseException as exc:  # reported to the test by result()
            self.error = exc

    def start(self):
        self.thread.start()
        return self

    def result(self, testcase):
        self.thread.join(JOIN_TIMEOUT)
        testcase.assertFalse(self.thread.is_alive(), "thread did not finish in time")
        if self.error is not None:
            raise self.error
        return self.value


class PerThreadSchedulerTest(StacklessTestCase):
    def test_each_thread_has_its_own_main_tasklet(self):
        main_here = stackless.getmain()

        def in_thread():
            main = stackless.getmain()
            return dict(
                main_is_other=main is not main_here,
                is_main=main.is_main,
                current_is_main=stackless.getcurrent() is main,
                runcount=stackless.getruncount(),
                thread_id_ok=main.thread_id == threading.get_ident(),
            )

        info = ThreadResult(in_thread).start().result(self)
        self.assertEqual(
            info,
            dict(main_is_other=True, is_main=True, current_is_main=True, runcount=1, thread_id_ok=True),
        )
        self.assertIs(stackless.getmain(), main_here)
        self.assertTrue(main_here.is_main)

    def test_tasklets_run_in_the_thread_that_created_them(self):
        def in_thread():
            ident = threading.get_ident()
            seen = []
            tasklets = []
            for i in range(3):
                t = stackless.tasklet(lambda i=i: seen.append((i, threading.get_ident())))()
                tasklets.append(t)
            ids = [t.thread_id for t in tasklets]
            stackless.run()
            return ident, ids, seen, [t.alive for t in tasklets]

        ident, ids, seen, alive = ThreadResult(in_thread).start().result(self)
        self.assertNotEqual(ident, threading.get_ident())
        self.assertEqual(ids, [ident] * 3)
        self.assertEqual(seen, [(0, ident), (1, ident), (2, ident)])
        self.assertEqual(alive, [False] * 3)

    def test_run_queues_are_independent(self):
        ready = threading.Event()
        release = threading.Event()
        box = {}

        def in_thread():
            box["tasklets"] = [stackless.tasklet(lambda: None)() for _ in range(3)]
            box["runcount"] = stackless.getruncount()
            ready.set()
            release.wait(JOIN_TIMEOUT)
            stackless.run()
            return [t.alive for t in box["tasklets"]]

        worker = ThreadResult(in_thread).start()
        self.assertTrue(ready.wait(JOIN_TIMEOUT))
        try:
            self.assertEqual(box["runcount"], 4)
            self.assertEqual(stackless.getruncount(), 1)  # not affected by the other thread
            stackless.run()  # runs nothing of the other thread
            self.assertTrue(all(t.alive for t in box["tasklets"]))
            self.assertTrue(all(t.thread_id == worker.thread.ident for t in box["tasklets"]))
        finally:
            release.set()
        self.assertEqual(worker.result(self), [False, False, False])

    def test_get_thread_info_and_threads(self):
        ready = threading.Event()
        release = threading.Event()
        box = {}

        def in_thread():
            box["main"] = stackless.getmain()
            box["t"] = stackless.tasklet(lambda: None)()
            box["in_threads"] = threading.get_ident() in stackless.threads
            ready.set()
            release.wait(JOIN_TIMEOUT)
            stackless.run()

        worker = ThreadResult(in_thread).start()
        self.assertTrue(ready.wait(JOIN_TIMEOUT))
        try:
            main, current, runcount = stackless.get_thread_info(worker.thread.ident)
            self.assertIs(main, box["main"])
            self.assertEqual(runcount, 2)
            self.assertTrue(box["in_threads"])
            here = stackless.get_thread_info(threading.get_ident())
            self.assertEqual(here, (stackless.getmain(), stackless.getcurrent(), stackless.getruncount()))
            self.assertEqual(stackless.threads[0], threading.main_thread().ident)
        finally:
            release.set()
        worker.result(self)

    def test_each_thread_runs_its_own_scheduler_concurrently(self):
        n_threads = 4
        n_messages = 2000
        barrier = threading.Barrier(n_threads)

        def in_thread(index):
            barrier.wait(JOIN_TIMEOUT)
            ident = threading.get_ident()
            ch = stackless.channel()
            received = []
            where = set()

            def producer():
                where.add(threading.get_ident())
                for i in range(n_messages):
                    ch.send((index, i))

            def consumer():
                where.add(threading.get_ident())
                for _ in range(n_messages):
                    received.append(ch.receive())
                    if len(received) % 100 == 0:
                        stackless.schedule()

            p = stackless.tasklet(producer)()
            c = stackless.tasklet(consumer)()
            stackless.run()
            return received, where, {p.alive, c.alive}, ident

        workers = [ThreadResult(in_thread, i).start() for i in range(n_threads)]
        for index, worker in enumerate(workers):
            received, where, alive, ident = worker.result(self)
            self.assertEqual(received, [(index, i) for i in range(n_messages)])
            self.assertEqual(where, {ident})
            self.assertEqual(alive, {False})


class CrossThreadRulesTest(StacklessTestCase):
    def test_switch_to_a_tasklet_of_another_thread_fails(self):
        ready = threading.Event()
        release = threading.Event()
        box = {}

        def in_thread():
            box["t"] = stackless.tasklet(lambda: None)()
            ready.set()
            release.wait(JOIN_TIMEOUT)
            stackless.run()
            return box["t"].alive

        worker = ThreadResult(in_thread).start()
        self.assertTrue(ready.wait(JOIN_TIMEOUT))
        try:
            t = box["t"]
            self.assertEqual(t.thread_id, worker.thread.ident)
            self.assertFalse(t.is_main)
            self.assertFalse(t.is_current)
            self.assertRaisesRegex(RuntimeError, "different thread", t.switch)
        finally:
            release.set()
        self.assertFalse(worker.result(self))

    def test_tasklets_of_a_dead_thread(self):
        box = {}

        def in_thread():
            box["never_run"] = stackless.tasklet(lambda: None)()
            return threading.get_ident()

        ident = ThreadResult(in_thread).start().result(self)
        t = box["never_run"]
        deadline = time.monotonic() + 2.0
        while t.thread_id != -1 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertNotEqual(ident, -1)
        self.assertEqual(t.thread_id, -1)
        self.assertFalse(t.alive)
        self.assertFalse(t.scheduled)
        self.assertRaises(RuntimeError, t.insert)
        self.assertRaises(RuntimeError, t.run)

    def test_blocked_tasklet_is_killed_when_its_thread_ends(self):
        log = []
        box = {}

        def in_thread():
            ch = stackless.channel()
            box["ch"] = ch

            def body():
                try:
                    ch.receive()
                finally:
                    log.append(threading.get_ident())

            box["t"] = stackless.tasklet(body)()
            stackless.run()  # the tasklet blocks; run() returns
            return threading.get_ident()

        ident = ThreadResult(in_thread).start().result(self)
        deadline = time.monotonic() + 2.0
        while not log and time.monotonic() < deadline:
            time.sleep(0.01)
        # a hard-switched tasklet (it has its own C stack) is killed in its own thread
        self.assertEqual(log, [ident])
        self.assertFalse(box["t"].alive)
        self.assertEqual(box["t"].thread_id, -1)


    def test_threads_ending_with_many_suspended_tasklets(self):
        per_thread = 300
        n_threads = 4
        log = []
        tasklets = []
        idents = []

        def in_thread():
            ch = stackless.channel()
            again = stackless.channel()

            class Managed:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    log.append("exit")

            def gen():
                try:
                    yield ch.receive()
                finally:
                    log.append("gen")

            def blocked(i):
                try:
                    if i % 3 == 0:
                        with Managed():
                            ch.receive()
                    elif i % 3 == 1:
                        next(gen())
                    else:
                        sorted([1], key=lambda _: ch.receive())
                finally:
                    log.append(threading.get_ident())

            def blocks_again_while_dying():
                try:
                    ch.receive()
                finally:
                    again.receive()  # dies blocked: left behind, never resumed

            mine = [stackless.tasklet(blocked)(i) for i in range(per_thread)]
            mine.append(stackless.tasklet(blocks_again_while_dying)())
            stackless.run()
            tasklets.extend(mine)
            idents.append(threading.get_ident())

        threads = [threading.Thread(target=in_thread) for _ in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
            self.assertFalse(thread.is_alive())
        deadline = time.monotonic() + 5.0
        while any(t.thread_id != -1 for t in tasklets) and time.monotonic() < deadline:
            time.sleep(0.01)
        # Every blocked tasklet ran its finally block in its own thread.
        killed_in = [entry for entry in log if isinstance(entry, int)]
        self.assertEqual(sorted(set(killed_in)), sorted(idents))
        self.assertEqual(len(killed_in), n_threads * per_thread)
        self.assertEqual(log.count("exit"), n_threads * len(range(0, per_thread, 3)))
        self.assertEqual(log.count("gen"), n_threads * len(range(1, per_thread, 3)))
        self.assertFalse(any(t.alive for t in tasklets))
        self.assertTrue(all(t.thread_id == -1 for t in tasklets))


class ChannelsAcrossThreadsTest(StacklessTestCase):
    def test_documented_interthread_example(self):
        commands = stackless.channel()
        log = []
        deadline = time.monotonic() + JOIN_TIMEOUT

        def master_func():
            for command in ("ECHO 1", "ECHO 2", "ECHO 3", "QUIT"):
                commands.send(command)

        def slave_func():
            while True:
                command = commands.receive()
                log.append(command)
                if command == "QUIT":
                    break

        def scheduler_run(tasklet_func):
            t = stackless.tasklet(tasklet_func)()
            while t.alive and time.monotonic() < deadline:
                stackless.run()
                time.sleep(0)
            return t.alive

        worker = ThreadResult(scheduler_run, master_func).start()
        self.assertFalse(scheduler_run(slave_func), "receiving tasklet did not finish")
        self.assertFalse(worker.result(self), "sending tasklet did not finish")
        self.assertEqual(log, ["ECHO 1", "ECHO 2", "ECHO 3", "QUIT"])

    def test_main_tasklet_waits_for_a_sender_in_another_thread(self):
        ch = stackless.channel()

        def sender():
            time.sleep(0.05)
            for i in range(100):
                ch.send(i)
            return True

        worker = ThreadResult(sender).start()
        # main blocks on the channel: another thread can still send, so this is no deadlock
        received = [ch.receive() for _ in range(100)]
        self.assertEqual(received, list(range(100)))
        self.assertTrue(worker.result(self))
        self.assertEqual(ch.balance, 0)

    def test_run_with_threadblock_waits_for_another_thread_to_wake_a_tasklet(self):
        # Stackless docs: with threadblock, when nothing else can run and other Python threads
        # exist, run() blocks expecting them to wake a tasklet, instead of returning.
        for threadblock in (False, True):
            ch = stackless.channel()
            log = []

            def in_thread():
                stackless.tasklet(lambda: log.append(ch.receive()))()
                stackless.run(threadblock=threadblock)
                log.append("run returned")
                return True

            worker = ThreadResult(in_thread).start()
            if threadblock:
                deadline = time.monotonic() + JOIN_TIMEOUT
                while ch.balance != -1 and time.monotonic() < deadline:
                    time.sleep(0.001)
                self.assertEqual(ch.balance, -1, "the receiver did not block")
                time.sleep(0.05)
                self.assertEqual(log, [], "run(threadblock=True) returned with a tasklet blocked")
                ch.send("hello")
                self.assertTrue(worker.result(self))
                self.assertEqual(log, ["hello", "run returned"])
            else:
                self.assertTrue(worker.result(self))  # returned at once; the receiver is killed
                self.assertEqual(log, ["run returned"])


if __name__ == "__main__":
    unittest.main()
