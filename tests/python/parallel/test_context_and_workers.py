"""parallel.workers(), parallel.current_context() and how workers import the main script,
under pyhost's `parallel` engine.

Covers: workers() lists one WorkerInfo per CPU (os.process_cpu_count()) with indexes 0..n-1,
distinct non-zero interpreter ids and native thread ids, a known state, no error, and
tasks_done counts that grow by the number of tasks run; current_context() is None in the
main interpreter and a TaskContext inside a task whose fields agree with workers(); every
worker imports this script as `__mp_main__` and runs its module-level code in its own thread,
while the script's `if __name__ == "__main__":` block does not run there; tasks may start
threads of their own, and nothing is left to complain at exit.

Run:  target/debug/pyhost --engine parallel tests/python/parallel/test_context_and_workers.py
(workers re-import this file as `__mp_main__`, so its module level only defines things).
"""

import os
import sys
import threading
import time
import unittest

import parallel

CPUS = os.process_cpu_count() or 1
STATES = {"starting", "importing", "idle", "running"}

# Module-level code: runs in the main interpreter and once in each worker's import.
IMPORTED_BY_THREAD = threading.get_native_id()
IMPORTED_AS = __name__
SCRIPT_LEVEL_VALUE = sum(i * i for i in range(100))


# ----- task functions -----

def context_fields(_):
    context = parallel.current_context()
    return (type(context).__name__, context.worker, context.interpreter_id, context.thread_id,
            context.task_id, threading.get_native_id())


def slow_context_fields(x):
    time.sleep(0.02)
    return context_fields(x)


def script_import_facts(_):
    main = sys.modules["__main__"]
    return {
        "imported_as": IMPORTED_AS,
        "main_module_name": main.__name__,
        "same_module_as_mp_main": sys.modules.get("__mp_main__") is main,
        "imported_by_this_thread": IMPORTED_BY_THREAD == threading.get_native_id(),
        "script_level_value": SCRIPT_LEVEL_VALUE,
        # Looked up by a computed name, so the function does not carry the value with it.
        "guard_ran": main.__dict__.get("GUARD_" + "BLOCK_RAN", False),
        "guard_ran_in_this_interpreter": bool(globals().get("GUARD_" + "BLOCK_RAN")),
    }


def slow_script_import_facts(x):
    time.sleep(0.02)
    return script_import_facts(x)


def started_workers(timeout=20.0):
    """workers() once every worker has its interpreter (a map of slow tasks starts them)."""
    deadline = time.monotonic() + timeout
    while True:
        infos = parallel.workers()
        if all(info.interpreter_id is not None for info in infos) or time.monotonic() > deadline:
            return infos
        parallel.map(time.sleep, [0.01] * (4 * CPUS), chunksize=1)


# ----- tests -----

class WorkersTest(unittest.TestCase):
    def test_one_worker_per_cpu(self):
        infos = parallel.workers()
        self.assertEqual(len(infos), CPUS)
        self.assertEqual([info.index for info in infos], list(range(CPUS)))
        for info in infos:
            self.assertIsInstance(info, parallel.WorkerInfo)
            self.assertIn(info.state, STATES)
            self.assertIn(info.index, range(CPUS))
            self.assertIn(repr(info.index), repr(info))

    def test_interpreters_and_threads_are_distinct(self):
        infos = started_workers()
        ids = [info.interpreter_id for info in infos]
        self.assertNotIn(None, ids)
        self.assertEqual(len(set(ids)), CPUS)
        for info in infos:
            self.assertIsInstance(info.interpreter_id, int)
            self.assertGreater(info.interpreter_id, 0)  # 0 is the main interpreter
            self.assertIn(info.state, STATES)
            self.assertIsNone(info.error)
            self.assertGreater(info.thread_id, 0)
            self.assertNotEqual(info.thread_id, threading.get_native_id())
        self.assertEqual(len({info.thread_id for info in infos}), CPUS)

    def test_tasks_done_grows_by_the_number_of_tasks(self):
        started_workers()
        before = sum(info.tasks_done for info in parallel.workers())
        parallel.map(abs, range(25), chunksize=1)
        after = sum(info.tasks_done for info in parallel.workers())
        self.assertEqual(after - before, 25)
        parallel.submit(abs, -1).result(timeout=30)
        deadline = time.monotonic() + 10
        while sum(info.tasks_done for info in parallel.workers()) < after + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(sum(info.tasks_done for info in parallel.workers()), after + 1)


class CurrentContextTest(unittest.TestCase):
    def test_none_in_main(self):
        self.assertIsNone(parallel.current_context())
        parallel.map(abs, [1])
        self.assertIsNone(parallel.current_context())

    def test_task_context_fields(self):
        infos = {info.index: info for info in started_workers()}
        main_thread = threading.get_native_id()
        results = parallel.map(slow_context_fields, range(6 * CPUS), chunksize=1)
        task_ids = []
        for type_name, worker, interpreter_id, thread_id, task_id, native_id in results:
            self.assertEqual(type_name, "TaskContext")
            self.assertIn(worker, infos)
            self.assertEqual(interpreter_id, infos[worker].interpreter_id)
            self.assertEqual(thread_id, infos[worker].thread_id)
            self.assertEqual(thread_id, native_id)
            self.assertNotEqual(thread_id, main_thread)
            self.assertIsInstance(task_id, int)
            self.assertGreater(task_id, 0)
            task_ids.append(task_id)
        self.assertEqual(len(set(task_ids)), len(task_ids))  # one id per task

    def test_context_is_a_task_context_object(self):
        context = parallel.submit(parallel.current_context).result(timeout=30)
        self.assertIsInstance(context, parallel.TaskContext)
        self.assertIn(context.worker, range(CPUS))
        self.assertIn("TaskContext", repr(context))


class ScriptImportTest(unittest.TestCase):
    def test_module_level_code_runs_in_each_worker(self):
        facts = parallel.map(slow_script_import_facts, range(8 * CPUS), chunksize=1)
        for fact in facts:
            self.assertEqual(fact["imported_as"], "__mp_main__")
            self.assertEqual(fact["main_module_name"], "__mp_main__")
            self.assertTrue(fact["same_module_as_mp_main"])
            self.assertTrue(fact["imported_by_this_thread"])
            self.assertEqual(fact["script_level_value"], SCRIPT_LEVEL_VALUE)
        self.assertEqual(IMPORTED_AS, "__main__")

    def test_main_guard_block_does_not_run_in_workers(self):
        self.assertTrue(GUARD_BLOCK_RAN)  # noqa: F821  (set under the guard below, in main)
        facts = parallel.map(slow_script_import_facts, range(8 * CPUS), chunksize=1)
        for fact in facts:
            self.assertFalse(fact["guard_ran"])
            self.assertFalse(fact["guard_ran_in_this_interpreter"])


SIGNAL_CHILD = """
import parallel, signal
signal.signal(signal.SIGTERM, lambda *args: None)  # module level: runs in workers too
def double(x):
    return x * 2
if __name__ == "__main__":
    print(parallel.map(double, [1, 2]), callable(signal.getsignal(signal.SIGTERM)))
"""


def sleep_facts(_):
    """What time.sleep is and does in a worker."""
    errors = []
    for bad in (-1, -0.5, float("nan"), "1", None, 1j):
        try:
            time.sleep(bad)
        except (ValueError, TypeError) as error:
            errors.append((type(error).__name__, str(error)))
    started = time.monotonic()
    returned = time.sleep(0.05)
    slept = time.monotonic() - started
    time.sleep(0)
    time.sleep(True)  # an int, as for the built-in
    return time.sleep.__name__, returned, slept, errors


def the_sleep_function(_):
    return time.sleep


class SleepInWorkersTest(unittest.TestCase):
    """Workers replace time.sleep so that Ctrl-C can end it (tests/python/parallel/test_ctrl_c.py);
    everything else about it must be the built-in's."""

    def test_sleep_checks_and_sleeps_like_the_builtin(self):
        expected_errors = []
        for bad in (-1, -0.5, float("nan"), "1", None, 1j):
            try:
                time.sleep(bad)
            except (ValueError, TypeError) as error:
                expected_errors.append((type(error).__name__, str(error)))
        [(name, returned, slept, errors)] = parallel.map(sleep_facts, [0])
        self.assertEqual(name, "sleep")
        self.assertIsNone(returned)
        self.assertGreaterEqual(slept, 0.05)
        self.assertEqual(errors, expected_errors)  # the same exceptions, the same messages

    def test_the_workers_sleep_comes_back_as_the_builtin(self):
        self.assertIs(parallel.map(the_sleep_function, [0])[0], time.sleep)
        self.assertEqual(parallel.map(time.sleep, [0, 0.01]), [None, None])


class ScriptWithSignalHandlersTest(unittest.TestCase):
    def test_a_module_level_signal_handler_does_not_stop_the_workers(self):
        import subprocess
        import tempfile
        with tempfile.TemporaryDirectory() as folder:
            script = os.path.join(folder, "signal_child.py")
            with open(script, "w") as file:
                file.write(SIGNAL_CHILD)
            child = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60)
        self.assertEqual(child.returncode, 0, child.stderr)
        self.assertEqual(child.stdout.strip(), "[2, 4] True")


THREADS_CHILD = """
import threading
import parallel

def with_a_thread(x):
    result = []
    helper = threading.Thread(target=lambda: result.append(x * 2))
    helper.start()
    helper.join()
    return result[0], threading.current_thread().name.startswith("Dummy")

if __name__ == "__main__":
    print(parallel.map(with_a_thread, [1, 2, 3, 4], chunksize=1))
"""


class TasksStartingThreadsTest(unittest.TestCase):
    def test_threads_started_by_tasks_work_and_leave_nothing_at_exit(self):
        # Thread() makes the worker thread a threading._DummyThread; CPython 3.13.0 would
        # drop its bookkeeping after clearing the modules when the worker's interpreter ends
        # ("Exception ignored in ... _DeleteDummyThreadOnDel.__del__"): the worker drops it
        # first (parallel._worker_end).
        import subprocess
        import tempfile
        with tempfile.TemporaryDirectory() as folder:
            script = os.path.join(folder, "threads_child.py")
            with open(script, "w") as file:
                file.write(THREADS_CHILD)
            child = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=60)
        self.assertEqual(child.returncode, 0, child.stderr)
        self.assertEqual(child.stdout.strip(), "[(2, True), (4, True), (6, True), (8, True)]")
        self.assertEqual(child.stderr, "")


if __name__ == "__main__":
    GUARD_BLOCK_RAN = True
    unittest.main()
