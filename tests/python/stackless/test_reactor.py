"""The stackless engine's reactor: `stackless.sleep()`, `wait_readable()` and `wait_writable()`
block the calling tasklet, not the thread; other tasklets run meanwhile, and `run()` returns
only once nothing is runnable and nothing waits.

Run standalone: `pyhost --engine stackless tests/python/stackless/test_reactor.py`.
"""

import errno
import os
import signal
import socket
import tempfile
import threading
import time
import unittest

import stackless
from stackless_support import StacklessTestCase, TaskletExit


def fill(sock):
    """Writes into `sock` until its buffers are full; returns how much went in."""
    sock.setblocking(False)
    total = 0
    try:
        while True:
            total += sock.send(b"x" * 65536)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return total


class Sleep(StacklessTestCase):
    def test_sleepers_overlap_and_wake_in_deadline_order(self):
        events = []

        def sleeper(name, seconds):
            events.append(("start", name))
            stackless.sleep(seconds)
            events.append(("end", name))

        for name, seconds in (("c", 0.15), ("a", 0.05), ("b", 0.1)):
            stackless.tasklet(sleeper)(name, seconds)
        stackless.run()
        # All three started before any ended: they slept at the same time.
        self.assertEqual(events, [("start", "c"), ("start", "a"), ("start", "b"),
                                  ("end", "a"), ("end", "b"), ("end", "c")])
        self.assertEqual(stackless.getruncount(), 1)

    def test_run_returns_only_when_nothing_waits(self):
        done = []
        stackless.tasklet(lambda: (stackless.sleep(0.05), done.append(1)))()
        started = time.monotonic()
        stackless.run()
        self.assertEqual(done, [1])
        self.assertGreaterEqual(time.monotonic() - started, 0.04)

    def test_the_main_tasklet_sleeps_while_others_run(self):
        ran = []
        stackless.tasklet(ran.append)("other")
        started = time.monotonic()
        stackless.sleep(0.05)
        self.assertGreaterEqual(time.monotonic() - started, 0.04)
        self.assertEqual(ran, ["other"])

    def test_a_busy_tasklet_that_yields_does_not_starve_a_sleeper(self):
        woke = []

        def busy():
            while not woke:
                stackless.schedule()

        stackless.tasklet(lambda: (stackless.sleep(0.02), woke.append(1)))()
        stackless.tasklet(busy)()
        stackless.run()
        self.assertEqual(woke, [1])

    def test_sleep_zero_yields_and_bad_lengths_are_refused(self):
        ran = []
        stackless.tasklet(ran.append)(1)
        self.assertIsNone(stackless.sleep(0))
        self.assertEqual(ran, [1])
        with self.assertRaises(ValueError):
            stackless.sleep(-1)
        with self.assertRaises(ValueError):
            stackless.sleep(float("nan"))
        with self.assertRaises(TypeError):
            stackless.sleep("1")

    def test_a_channel_wait_is_not_a_deadlock_while_a_sleeper_can_send(self):
        channel = stackless.channel()

        def sender():
            stackless.sleep(0.02)
            channel.send("late")

        stackless.tasklet(sender)()
        self.assertEqual(channel.receive(), "late")

    def test_a_deadlock_is_still_reported_once_nothing_waits(self):
        stackless.tasklet(stackless.sleep)(0.01)
        stackless.run()
        with self.assertRaisesRegex(RuntimeError, "Deadlock"):
            stackless.channel().receive()

    def test_a_signal_handler_exception_reaches_the_main_tasklet(self):
        class Alarm(Exception):
            pass

        def handler(signum, frame):
            raise Alarm

        previous = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            started = time.monotonic()
            with self.assertRaises(Alarm):
                stackless.sleep(30)
            self.assertLess(time.monotonic() - started, 20)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        stackless.run()  # the hub ends: nothing waits any more


class WaitForFiles(StacklessTestCase):
    def setUp(self):
        super().setUp()
        self.a, self.b = socket.socketpair()

    def tearDown(self):
        self.a.close()
        self.b.close()
        super().tearDown()

    def test_a_reader_waits_for_a_writer(self):
        got = []

        def reader():
            stackless.wait_readable(self.a)  # an object with fileno()
            got.append(self.a.recv(10))

        def writer():
            got.append("writing")
            self.b.send(b"hello")

        stackless.tasklet(reader)()
        stackless.tasklet(writer)()
        stackless.run()
        self.assertEqual(got, ["writing", b"hello"])

    def test_a_ready_fd_ends_the_wait_at_once(self):
        self.b.send(b"x")
        stackless.wait_readable(self.a.fileno(), timeout=5)
        stackless.wait_writable(self.b.fileno(), timeout=5)

    def test_a_writer_waits_until_the_reader_makes_room(self):
        filled = fill(self.b)
        order = []

        def writer():
            stackless.wait_writable(self.b)
            order.append("writable")

        def drain():
            order.append("draining")
            self.a.setblocking(False)
            taken = 0
            while taken < filled:
                try:
                    taken += len(self.a.recv(1 << 20))
                except BlockingIOError:
                    stackless.sleep(0.001)

        stackless.tasklet(writer)()
        stackless.tasklet(drain)()
        stackless.run()
        self.assertEqual(order, ["draining", "writable"])

    def test_the_peer_closing_ends_a_read_wait(self):
        stackless.tasklet(self.b.close)()
        stackless.wait_readable(self.a, timeout=5)
        self.assertEqual(self.a.recv(10), b"")

    def test_a_timeout_raises_timeout_error(self):
        started = time.monotonic()
        with self.assertRaisesRegex(TimeoutError, "timed out"):
            stackless.wait_readable(self.a, timeout=0.05)
        self.assertGreaterEqual(time.monotonic() - started, 0.04)
        # The wait is forgotten: the fd can be waited for again.
        self.b.send(b"x")
        stackless.wait_readable(self.a, timeout=5)

    def test_kill_throw_and_raise_exception_wake_a_waiting_tasklet(self):
        for deliver in (lambda t: t.kill(), lambda t: t.throw(KeyError("thrown")),
                        lambda t: t.raise_exception(KeyError, "raised")):
            seen = []

            def waiter():
                try:
                    stackless.wait_readable(self.a)
                except BaseException as error:
                    seen.append(type(error))
                    raise

            t = stackless.tasklet(waiter)()
            stackless.schedule()
            self.assertTrue(t.blocked)
            try:
                deliver(t)
            except KeyError:
                pass  # a tasklet's uncaught exception goes to main
            self.assertFalse(t.alive)
            self.assertIn(seen[0], (TaskletExit, KeyError))
            # Its wait is gone: another tasklet may wait to read the same fd.
            self.b.send(b"y")
            stackless.wait_readable(self.a, timeout=5)
            self.a.recv(10)
        stackless.run()

    def test_one_reader_per_fd(self):
        stackless.tasklet(stackless.wait_readable)(self.a, 5)
        stackless.schedule()
        with self.assertRaisesRegex(RuntimeError, "already waits for file descriptor"):
            stackless.wait_readable(self.a)
        # A writer may wait on the same fd meanwhile.
        stackless.wait_writable(self.a, timeout=5)
        self.b.send(b"z")
        stackless.run()

    def test_bad_arguments(self):
        with self.assertRaises(OSError) as caught:
            closed = socket.socket()
            fd = closed.fileno()
            closed.close()
            stackless.wait_readable(fd, timeout=1)
        self.assertEqual(caught.exception.errno, errno.EBADF)
        with self.assertRaises(ValueError):
            stackless.wait_readable(-1)
        with self.assertRaises(TypeError):
            stackless.wait_readable("3")
        with self.assertRaises(ValueError):
            stackless.wait_readable(self.a, timeout=-1)

    def test_a_regular_file_is_always_ready(self):
        with tempfile.TemporaryFile() as file:
            stackless.wait_readable(file, timeout=1)
            stackless.wait_writable(file.fileno(), timeout=1)

    def test_a_block_trapped_tasklet_cannot_wait(self):
        stackless.getcurrent().block_trap = True
        try:
            with self.assertRaisesRegex(RuntimeError, "does not like to be blocked"):
                stackless.wait_readable(self.a)
        finally:
            stackless.getcurrent().block_trap = False


class Threads(StacklessTestCase):
    def test_each_thread_has_its_own_reactor(self):
        results = {}

        def thread_main(name):
            order = []
            for delay in (0.04, 0.02):
                stackless.tasklet(lambda d=delay: (stackless.sleep(d), order.append(d)))()
            stackless.run()
            results[name] = order

        threads = [threading.Thread(target=thread_main, args=(n,)) for n in ("x", "y")]
        for thread in threads:
            thread.start()
        stackless.sleep(0.03)
        for thread in threads:
            thread.join(10)
        self.assertEqual(results, {"x": [0.02, 0.04], "y": [0.02, 0.04]})

    def test_another_thread_wakes_a_thread_blocked_in_its_reactor(self):
        channel = stackless.channel()
        outcome = {}

        def thread_main():
            sleeper = stackless.tasklet(stackless.sleep)(30)  # keeps the reactor blocking
            stackless.schedule()
            started = time.monotonic()
            outcome["value"] = channel.receive()
            outcome["waited"] = time.monotonic() - started
            sleeper.kill()

        thread = threading.Thread(target=thread_main)
        thread.start()
        while channel.balance == 0 and thread.is_alive():
            time.sleep(0.01)
        channel.send("across")
        thread.join(20)
        self.assertEqual(outcome["value"], "across")
        self.assertLess(outcome["waited"], 20)


if __name__ == "__main__":
    unittest.main()
