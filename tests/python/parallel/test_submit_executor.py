"""parallel.submit and parallel.Executor under pyhost's `parallel` engine.

Covers: submit's result and exception (type and args kept, the worker's traceback text in
__cause__), keyword arguments (also ones named like submit's own parameters), Future.cancel
of queued work and of running work, concurrent.futures.wait / as_completed over these
futures, Executor as a context manager, Executor.map with chunksize 1 and > 1 and with a
timeout, shutdown(wait=False) and shutdown(cancel_futures=True), submit/map after shutdown
(RuntimeError), max_workers validation, isinstance(Executor(), concurrent.futures.Executor),
and code written for a concurrent.futures executor switched by changing one line. Tests
whose comment says "Regression test" showed engine bugs fixed since.

Run:  target/debug/pyhost --engine parallel tests/python/parallel/test_submit_executor.py
(workers re-import this file as `__mp_main__`, so its module level only defines things).
"""

import concurrent.futures as cf
import os
import tempfile
import threading
import time
import unittest

import parallel


# ----- task functions -----

def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def echo_kwargs(**kwargs):
    return kwargs


def raise_value_error(message, code):
    raise ValueError(message, code)


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def mark_then_sleep(path, seconds, value):
    with open(path, "w"):
        pass
    time.sleep(seconds)
    return value


REBOUND = 0


def rebind_a_global():
    global REBOUND
    REBOUND += 1


def worker_index():
    return parallel.current_context().worker


def sleep_chunked(seconds):
    time.sleep(seconds)
    return seconds


def factorial(n):
    return 1 if n <= 1 else n * factorial(n - 1)


class SlowToRebuild:
    """Rebuilding it in the main interpreter takes 5 ms (in a worker: no time)."""

    def __init__(self, n):
        self.n = n

    def __reduce__(self):
        return rebuild_slowly, (self.n,)


def rebuild_slowly(n):
    if parallel.current_context() is None:
        time.sleep(0.005)
    return SlowToRebuild(n)


def make_slow_to_rebuild(n):
    return SlowToRebuild(n)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def occupy_default_workers(seconds):
    """Submits one sleeping task per default-pool worker and waits until all of them run."""
    count = len(parallel.workers())
    parallel.map(abs, range(4 * count), chunksize=1)  # the workers are up
    futures = [parallel.submit(time.sleep, seconds) for _ in range(count)]
    if not wait_until(lambda: all(w.state == "running" for w in parallel.workers())):
        raise AssertionError(f"workers never all ran: {parallel.workers()}")
    return futures


# ----- tests -----

class SubmitTest(unittest.TestCase):
    def test_result(self):
        future = parallel.submit(square, 12)
        self.assertIsInstance(future, cf.Future)
        self.assertEqual(future.result(timeout=30), 144)
        self.assertTrue(future.done())
        self.assertIsNone(future.exception())

    def test_args_and_kwargs(self):
        self.assertEqual(parallel.submit(add, 1, 2, c=3).result(timeout=30), 6)
        self.assertEqual(parallel.submit(add, a=5).result(timeout=30), 5)
        self.assertEqual(parallel.submit(lambda *a, **k: (a, k), 1, x=2).result(timeout=30), ((1,), {"x": 2}))

    def test_kwargs_named_like_submit_parameters(self):
        self.assertEqual(parallel.submit(echo_kwargs, fn=1, args=2, kwargs=3).result(timeout=30),
                         {"fn": 1, "args": 2, "kwargs": 3})

    def test_exception_keeps_type_args_and_worker_traceback(self):
        future = parallel.submit(raise_value_error, "bad value", 42)
        error = future.exception(timeout=30)
        self.assertIs(type(error), ValueError)
        self.assertEqual(error.args, ("bad value", 42))
        cause = error.__cause__
        self.assertIsNotNone(cause)
        text = str(cause)
        self.assertIn("Traceback", text)
        self.assertIn("raise_value_error", text)
        self.assertIn("ValueError", text)
        with self.assertRaises(ValueError) as caught:
            future.result()
        self.assertEqual(caught.exception.args, ("bad value", 42))

    def test_add_done_callback(self):
        called = threading.Event()
        seen = []
        future = parallel.submit(square, 3)
        future.add_done_callback(lambda f: (seen.append(f.result()), called.set()))
        self.assertTrue(called.wait(30))
        self.assertEqual(seen, [9])

    def test_cancel_queued_task(self):
        running = occupy_default_workers(0.5)
        queued = parallel.submit(square, 5)
        self.assertTrue(queued.cancel())
        self.assertTrue(queued.cancelled())
        self.assertTrue(queued.done())
        with self.assertRaises(cf.CancelledError):
            queued.result(timeout=5)
        # Running tasks cannot be cancelled and complete normally.
        self.assertFalse(running[0].cancel())
        self.assertEqual([f.result(timeout=30) for f in running], [None] * len(running))
        self.assertFalse(running[0].cancelled())
        self.assertEqual(parallel.submit(square, 6).result(timeout=30), 36)

    def test_cancelled_futures_are_not_kept(self):
        # Regression test (a bug of the 2026-11-27 16:39 build, fixed since): a cancelled
        # task never completes, and the pool kept its future (and what it refers to) forever.
        import gc
        import weakref
        running = occupy_default_workers(0.3)
        queued = [parallel.submit(square, i) for i in range(20)]
        refs = [weakref.ref(future) for future in queued]
        self.assertTrue(all(future.cancel() for future in queued))
        del queued
        gc.collect()
        self.assertEqual([ref() for ref in refs], [None] * 20)
        self.assertEqual([f.result(timeout=30) for f in running], [None] * len(running))

    def test_running_reports_a_running_task(self):
        # Regression test (a bug of the 2026-11-27 11:19 build, fixed since):
        # a _TaskFuture stays PENDING until its outcome is collected
        # (set_running_or_notify_cancel is only called in _Pool._collect / result()), so
        # Future.running() is never True, unlike concurrent.futures executors.
        future = parallel.submit(sleep_then, 1.0, "done")
        self.assertTrue(wait_until(future.running, timeout=0.9) or future.running())

    def test_wait_and_as_completed(self):
        futures = [parallel.submit(sleep_then, delay, i) for i, delay in enumerate([0.3, 0.0, 0.1, 0.0])]
        done, not_done = cf.wait(futures, timeout=30, return_when=cf.FIRST_COMPLETED)
        self.assertGreaterEqual(len(done), 1)
        self.assertEqual(len(done) + len(not_done), 4)
        self.assertEqual(sorted(f.result() for f in cf.as_completed(futures, timeout=30)), [0, 1, 2, 3])
        done, not_done = cf.wait(futures, timeout=30)
        self.assertEqual((len(done), len(not_done)), (4, 0))

    def test_wait_first_exception(self):
        futures = [parallel.submit(sleep_then, 2.0, 0), parallel.submit(raise_value_error, "x", 1)]
        done, not_done = cf.wait(futures, timeout=30, return_when=cf.FIRST_EXCEPTION)
        self.assertIn(futures[1], done)
        self.assertIsInstance(futures[1].exception(), ValueError)
        futures[0].result(timeout=30)


class ExecutorTest(unittest.TestCase):
    def test_is_a_concurrent_futures_executor(self):
        executor = parallel.Executor()
        try:
            self.assertIsInstance(executor, cf.Executor)
        finally:
            executor.shutdown()

    def test_max_workers_validation(self):
        for bad in (0, -1, "2", 1.5):
            with self.subTest(max_workers=bad):
                with self.assertRaises(ValueError):
                    parallel.Executor(max_workers=bad)
        with parallel.Executor(max_workers=1) as executor:
            self.assertEqual(executor.submit(square, 4).result(timeout=30), 16)

    def test_context_manager(self):
        with parallel.Executor(2) as executor:
            futures = [executor.submit(square, i) for i in range(20)]
            self.assertEqual([f.result(timeout=30) for f in futures], [i * i for i in range(20)])
        with self.assertRaises(RuntimeError):
            executor.submit(square, 1)

    def test_submit_and_map_after_shutdown(self):
        executor = parallel.Executor(1)
        self.assertEqual(executor.submit(square, 2).result(timeout=30), 4)
        executor.shutdown()
        with self.assertRaises(RuntimeError):
            executor.submit(square, 1)
        with self.assertRaises(RuntimeError):
            executor.map(square, [1])
        executor.shutdown()  # a second shutdown is harmless
        never_started = parallel.Executor(1)
        never_started.shutdown()
        with self.assertRaises(RuntimeError):
            never_started.submit(square, 1)

    def test_map_chunksize_one_and_more(self):
        with parallel.Executor(2) as executor:
            for chunksize in (1, 2, 7, 100):
                with self.subTest(chunksize=chunksize):
                    self.assertEqual(list(executor.map(square, range(30), chunksize=chunksize)),
                                     [i * i for i in range(30)])
                    self.assertEqual(list(executor.map(add, range(5), range(10), chunksize=chunksize)),
                                     [0, 2, 4, 6, 8])
                    self.assertEqual(list(executor.map(square, [], chunksize=chunksize)), [])
            for bad in (0, -1):
                with self.assertRaises(ValueError):
                    executor.map(square, range(3), chunksize=bad)

    def test_map_raises_the_task_exception(self):
        with parallel.Executor(2) as executor:
            for chunksize in (1, 3):
                results = executor.map(raise_value_error, ["m"] * 4, [1, 2, 3, 4], chunksize=chunksize)
                with self.assertRaises(ValueError):
                    list(results)

    def test_map_timeout(self):
        for chunksize in (1, 2):
            with self.subTest(chunksize=chunksize):
                executor = parallel.Executor(2)
                try:
                    started = time.monotonic()
                    results = executor.map(sleep_chunked, [1.5] * 4, timeout=0.3, chunksize=chunksize)
                    with self.assertRaises(TimeoutError):
                        list(results)
                    self.assertLess(time.monotonic() - started, 1.3)
                finally:
                    executor.shutdown(wait=False, cancel_futures=True)

    def test_map_timeout_counts_from_the_map_call_with_chunks(self):
        # Regression test (a bug of the 2026-11-27 11:19 build, fixed since):
        # with chunksize > 1, Executor.map returns the generator _chained(futures,
        # timeout), whose deadline is computed at the first next(), not when map() is called
        # as concurrent.futures documents ("timeout seconds from the original call to
        # Executor.map()"); with chunksize=1 (the stdlib code path) it is right.
        executor = parallel.Executor(2)
        try:
            # One chunk of one 2-second task; the caller comes back 2 s after map(), when
            # the 1-second timeout has long expired.
            results = executor.map(sleep_chunked, [2.0], timeout=1.0, chunksize=2)
            time.sleep(2.0)
            with self.assertRaises(TimeoutError):
                next(results)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def test_shutdown_cancel_futures(self):
        executor = parallel.Executor(1)
        with tempfile.TemporaryDirectory() as folder:
            marker = os.path.join(folder, "started")
            first = executor.submit(mark_then_sleep, marker, 0.4, "first")
            self.assertTrue(wait_until(lambda: os.path.exists(marker)))
        self.assertFalse(first.cancel())  # it runs, so it cannot be cancelled
        queued = [executor.submit(square, i) for i in range(5)]
        executor.shutdown(wait=True, cancel_futures=True)
        self.assertEqual(first.result(timeout=10), "first")
        for future in queued:
            self.assertTrue(future.cancelled())

    def test_shutdown_without_wait(self):
        executor = parallel.Executor(1)
        future = executor.submit(sleep_then, 0.3, "late")
        started = time.monotonic()
        executor.shutdown(wait=False)
        self.assertLess(time.monotonic() - started, 0.25)
        self.assertEqual(future.result(timeout=30), "late")

    def test_shutdown_wait_without_cancel_runs_queued_tasks(self):
        executor = parallel.Executor(1)
        futures = [executor.submit(sleep_then, 0.02, i) for i in range(10)]
        executor.shutdown(wait=True)
        self.assertEqual([f.result(timeout=10) for f in futures], list(range(10)))

    def test_futures_are_done_after_shutdown_wait(self):
        # Regression test (a bug of the 2026-11-27 11:19 build, fixed since):
        # shutdown(wait=True) joins the workers and removes the pool from the registry
        # (pool.rs Pool::shutdown), while the collector thread may still have completions to
        # fetch; its next _core.pool_next_completion(self.id) then raises "ValueError: no
        # parallel pool with id N (it was shut down)", the collector thread dies and the
        # futures whose outcome it had not collected yet never complete (result() hangs).
        # Any result that takes a little time to unpickle in the main interpreter shows it.
        hook_errors = []
        old_hook = threading.excepthook
        threading.excepthook = lambda args: hook_errors.append(args.exc_value)
        try:
            with parallel.Executor(2) as executor:
                futures = [executor.submit(make_slow_to_rebuild, i) for i in range(100)]
            not_done = [f for f in futures if not f.done()]
            self.assertEqual(not_done, [])
            self.assertEqual([f.result(timeout=5).n for f in futures], list(range(100)))
            self.assertEqual(hook_errors, [])
        finally:
            threading.excepthook = old_hook

    def test_closed_executors_hand_their_workers_to_the_next(self):
        # Ending a sub-interpreter does not give all its memory back (CPython 3.13: MBs each),
        # so the workers of a closed executor serve the next one instead of new interpreters.
        import pyhost

        def statistics():
            return pyhost.engine_statistics()

        with parallel.Executor(2) as ex:
            self.assertEqual(list(ex.map(square, range(4))), [0, 1, 4, 9])
        started, reused = statistics()["workers_started"], statistics()["workers_reused"]
        for _ in range(5):
            with parallel.Executor(2) as ex:
                self.assertEqual(list(ex.map(square, range(6))), [0, 1, 4, 9, 16, 25])
                # Each knows its place in the new pool, and the script stays protected.
                indexes = {ex.submit(worker_index).result() for _ in range(20)}
                self.assertLessEqual(indexes, {0, 1})
                with self.assertRaises(parallel.ProtectionError):
                    ex.submit(rebind_a_global).result()
        self.assertEqual(statistics()["workers_started"], started)
        self.assertEqual(statistics()["workers_reused"], reused + 10)
        self.assertEqual(REBOUND, 0)

    def test_switch_from_another_executor_by_one_line(self):
        def job(executor_class):
            # Code written for ProcessPoolExecutor / ThreadPoolExecutor.
            with executor_class(max_workers=2) as executor:
                by_future = {executor.submit(factorial, n): n for n in range(12)}
                by_n = {by_future[f]: f.result() for f in cf.as_completed(by_future)}
                mapped = list(executor.map(square, range(10), chunksize=3))
                mapped_pairs = list(executor.map(add, range(5), range(5, 10)))
            return by_n, mapped, mapped_pairs

        self.assertEqual(job(parallel.Executor), job(cf.ThreadPoolExecutor))


if __name__ == "__main__":
    unittest.main()
