"""Ctrl-C (SIGINT) during parallel.map under pyhost's `parallel` engine.

Each test starts a child pyhost (sys.executable is pyhost and PYHOST_ENGINE keeps the
engine) running a long map, waits for its "ready" line, sends SIGINT and checks that
KeyboardInterrupt is raised in the child quickly (< 3 s), that a later map works (on a new
default pool) and that the child exits. Children run both as a script file (workers import
it) and with -c (no script: functions travel with all their globals); with tasks still
running pure-Python code, sleeping in time.sleep(60) (which workers make Ctrl-C aware) or
waiting on a lock, a queue or an event (the engine signals the task's thread out of the wait)
the child exits soon after one Ctrl-C; with tasks blocked in I/O (select on a pipe, which
CPython retries in any thread but the main one) a second Ctrl-C ends it.

Run:  target/debug/pyhost --engine parallel tests/python/parallel/test_ctrl_c.py
"""

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import unittest

CHILD = r'''
import os
import queue
import select
import signal
import sys
import threading
import time

import parallel


def slow(x):
    if MODE == "busy":  # pure-Python work: can be interrupted between bytecodes
        end = time.monotonic() + DELAY
        while time.monotonic() < end:
            pass
    elif MODE == "sleep":  # in time.sleep(), which workers end on Ctrl-C
        time.sleep(DELAY)
    elif MODE == "threaded":  # the task sleeps, and so does a thread it started
        helper = threading.Thread(target=time.sleep, args=(1.0,))
        helper.start()
        time.sleep(DELAY)
    elif MODE == "lock":  # waits that a signal to the thread ends
        lock = threading.Lock()
        lock.acquire()
        lock.acquire(timeout=DELAY)
    elif MODE == "queue":
        try:
            queue.Queue().get(timeout=DELAY)
        except queue.Empty:
            pass
    elif MODE == "event":
        threading.Event().wait(DELAY)
    else:  # blocked in I/O that only its timeout ends
        read_end, _write_end = os.pipe()
        select.select([read_end], [], [], DELAY)
    return x


if __name__ == "__main__":
    # A child started from a non-interactive shell may inherit SIGINT ignored: restore
    # Python's handler (here: workers cannot install signal handlers).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    DELAY = float(sys.argv[1])
    MODE = sys.argv[3] if sys.argv[3:] else "sleep"
    parallel.map(abs, range(100), chunksize=1)  # the pool is up
    print("ready", flush=True)
    started = time.monotonic()
    try:
        parallel.map(slow, range(int(sys.argv[2])), chunksize=1)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("again", parallel.map(abs, [-1, -2]), flush=True)
'''


class Child:
    def __init__(self, test, command):
        self.test = test
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        test.addCleanup(self.kill)

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()

    def line(self, timeout):
        """The child's next stdout line, or None after `timeout` seconds."""
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        return self.process.stdout.readline().strip()

    def wait(self, timeout):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


class CtrlCTest(unittest.TestCase):
    def setUp(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.script = os.path.join(folder.name, "child_map.py")
        with open(self.script, "w") as file:
            file.write(CHILD)

    def interrupt_quickly(self, child):
        self.assertEqual(child.line(60), "ready")
        time.sleep(0.3)  # the long map is running
        sent = time.monotonic()
        child.process.send_signal(signal.SIGINT)
        line = child.line(10)
        elapsed = time.monotonic() - sent
        self.assertEqual(line, "interrupted", child.process.stderr.read() if line is None else line)
        self.assertLess(elapsed, 3.0)
        return sent

    def check_short_tasks(self, command):
        child = Child(self, command)
        self.interrupt_quickly(child)
        self.assertEqual(child.line(30), "again [1, 2]")
        self.assertEqual(child.wait(30), 0, child.process.stderr.read())

    def test_interrupt_a_script_map(self):
        self.check_short_tasks([sys.executable, self.script, "0.02", "2000"])

    def test_interrupt_a_dash_c_map(self):
        self.check_short_tasks([sys.executable, "-c", CHILD, "0.02", "2000"])

    def test_the_engine_is_kept_by_the_child(self):
        result = subprocess.run([sys.executable, "-c", "import parallel; print(parallel.map(abs, [-3]))"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.stdout.strip(), "[3]", result.stderr)

    # Regression tests (a bug of the 2026-11-27 11:19 build, fixed since): Ctrl-C cancelled
    # the queued chunks and shut the default pool down with wait=False, but the tasks already
    # running kept running and at exit _shutdown_all / core::shutdown_all_pools joined every
    # worker with no signal check, so the process could not end before they finished, and a
    # second Ctrl-C was not handled either.
    def test_child_exits_soon_after_interrupting_long_python_tasks(self):
        child = Child(self, [sys.executable, self.script, "60", "100", "busy"])
        self.interrupt_quickly(child)
        self.assertEqual(child.line(30), "again [1, 2]")
        self.assertEqual(child.wait(8), 0, "the child still runs 8 s after Ctrl-C")

    def test_child_exits_soon_after_interrupting_sleeping_tasks(self):
        child = Child(self, [sys.executable, self.script, "60", "100", "sleep"])
        self.interrupt_quickly(child)
        self.assertEqual(child.line(30), "again [1, 2]")
        self.assertEqual(child.wait(8), 0, "the child still runs 8 s after Ctrl-C")

    def test_child_exits_soon_after_interrupting_tasks_waiting_on_locks_queues_and_events(self):
        for mode in ("lock", "queue", "event"):
            with self.subTest(mode):
                child = Child(self, [sys.executable, self.script, "60", "100", mode])
                self.interrupt_quickly(child)
                self.assertEqual(child.line(30), "again [1, 2]")
                self.assertEqual(child.wait(8), 0, "the child still runs 8 s after Ctrl-C")

    def test_ctrl_c_interrupts_the_task_not_the_threads_it_started(self):
        # As in CPython, where Ctrl-C interrupts the main thread only: the helper thread sleeps
        # its second, the task's own sleep(60) ends at once, and the worker ends after both.
        child = Child(self, [sys.executable, self.script, "60", "100", "threaded"])
        self.interrupt_quickly(child)
        self.assertEqual(child.line(30), "again [1, 2]")
        self.assertEqual(child.wait(8), 0, "the child still runs 8 s after Ctrl-C")
        self.assertNotIn("Exception", child.process.stderr.read())

    def test_second_ctrl_c_ends_a_child_waiting_for_tasks_blocked_in_io(self):
        child = Child(self, [sys.executable, self.script, "60", "100", "io"])
        self.interrupt_quickly(child)
        self.assertEqual(child.line(30), "again [1, 2]")
        if child.wait(1) is None:  # at exit, waiting for the tasks blocked in select() for 60 s
            child.process.send_signal(signal.SIGINT)
        self.assertIsNotNone(child.wait(8), "the child still runs 8 s after a second Ctrl-C")


if __name__ == "__main__":
    unittest.main()
