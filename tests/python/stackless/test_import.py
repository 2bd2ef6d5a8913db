"""`import stackless` under `pyhost --engine stackless`: the module imports, is the engine's,
and offers the documented API (Doc/library/stackless/stackless.rst, Lib/stackless.py __all__).
That other engines refuse the import with an ImportError naming the engine is checked elsewhere.
Run standalone: `pyhost --engine stackless tests/python/stackless/test_import.py`.
"""

import builtins
import importlib
import sys
import threading
import unittest

import stackless

FUNCTIONS = (
    "run",
    "schedule",
    "schedule_remove",
    "getcurrent",
    "getmain",
    "getruncount",
    "get_thread_info",
    "set_schedule_callback",
    "get_schedule_callback",
    "set_channel_callback",
    "get_channel_callback",
    "enable_softswitch",
    "switch_trap",
)
TASKLET_METHODS = (
    "bind",
    "setup",
    "insert",
    "remove",
    "run",
    "switch",
    "kill",
    "throw",
    "raise_exception",
    "set_atomic",
    "set_ignore_nesting",
    "bind_thread",
)
TASKLET_ATTRIBUTES = (
    "alive",
    "blocked",
    "scheduled",
    "paused",
    "is_main",
    "is_current",
    "next",
    "prev",
    "tempval",
    "thread_id",
    "atomic",
    "block_trap",
    "ignore_nesting",
    "restorable",
)
CHANNEL_METHODS = ("send", "receive", "send_exception", "send_throw", "send_sequence", "open", "close")
CHANNEL_ATTRIBUTES = ("balance", "preference", "queue", "closing", "closed", "schedule_all")


class ImportTest(unittest.TestCase):
    def test_module_is_importable_and_cached(self):
        self.assertEqual(stackless.__name__, "stackless")
        self.assertIs(sys.modules["stackless"], stackless)
        self.assertIs(importlib.import_module("stackless"), stackless)

    def test_running_under_the_stackless_engine(self):
        import pyhost

        self.assertEqual(pyhost.engine, "stackless")

    def test_module_functions(self):
        for name in FUNCTIONS:
            with self.subTest(name=name):
                self.assertTrue(callable(getattr(stackless, name)))

    def test_classes(self):
        for name in ("tasklet", "channel", "atomic"):
            with self.subTest(name=name):
                self.assertIsInstance(getattr(stackless, name), type)
        for name in TASKLET_METHODS:
            with self.subTest(tasklet_method=name):
                self.assertTrue(callable(getattr(stackless.tasklet, name)))
        t = stackless.tasklet()
        for name in TASKLET_ATTRIBUTES:
            with self.subTest(tasklet_attribute=name):
                getattr(t, name)
        for name in CHANNEL_METHODS:
            with self.subTest(channel_method=name):
                self.assertTrue(callable(getattr(stackless.channel, name)))
        ch = stackless.channel()
        for name in CHANNEL_ATTRIBUTES:
            with self.subTest(channel_attribute=name):
                getattr(ch, name)

    def test_module_attributes(self):
        self.assertIs(stackless.current, stackless.getcurrent())
        self.assertIs(stackless.main, stackless.getmain())
        self.assertEqual(stackless.runcount, stackless.getruncount())
        self.assertIsInstance(stackless.threads, list)
        self.assertIn(threading.get_ident(), stackless.threads)

    def test_all_names_exist(self):
        for name in getattr(stackless, "__all__", ()):
            with self.subTest(name=name):
                self.assertTrue(hasattr(stackless, name))

    def test_star_import(self):
        namespace = {}
        exec("from stackless import *", namespace)
        for name in ("tasklet", "channel", "run", "schedule", "getcurrent"):
            with self.subTest(name=name):
                self.assertIs(namespace[name], getattr(stackless, name))

    def test_tasklet_exit_is_available(self):
        owners = [owner for owner in (builtins, stackless) if hasattr(owner, "TaskletExit")]
        self.assertTrue(owners, "TaskletExit is neither a builtin nor stackless.TaskletExit")
        exits = {owner.TaskletExit for owner in owners}
        self.assertEqual(len(exits), 1)
        (exit_class,) = exits
        self.assertTrue(issubclass(exit_class, SystemExit))

    def test_import_and_use_in_another_thread(self):
        box = {}

        def in_thread():
            import stackless as again

            box["same"] = again is stackless
            box["main"] = again.getcurrent() is again.getmain()
            done = []
            again.tasklet(done.append)(1)
            again.run()
            box["done"] = done

        th = threading.Thread(target=in_thread)
        th.start()
        th.join(10)
        self.assertFalse(th.is_alive())
        self.assertEqual(box, {"same": True, "main": True, "done": [1]})


if __name__ == "__main__":
    unittest.main()
