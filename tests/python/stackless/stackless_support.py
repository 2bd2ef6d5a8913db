"""Shared by the stackless test scripts in this folder (imported from the script's own folder,
which Python puts first on sys.path): where TaskletExit lives, emptying the run queue, and the
base test case that checks each test leaves the scheduler as it found it."""

import builtins
import unittest

import stackless


def _find_tasklet_exit():
    # Stackless defines TaskletExit as a builtin; an engine may also (or only) export it
    # from the stackless module. Either is accepted, but it must be one class.
    found = [getattr(owner, "TaskletExit", None) for owner in (builtins, stackless)]
    found = [exc for exc in found if exc is not None]
    if not found:
        raise AssertionError("TaskletExit is neither a builtin nor stackless.TaskletExit")
    return found[0]


TaskletExit = _find_tasklet_exit()


def kill_runnables():
    """Kill every tasklet left in this thread's run queue (besides main).

    They are taken out of the queue first: killing a queued tasklet switches to it, and once it
    has died the scheduler carries on with the tasklet that followed it in the queue.
    """
    main = stackless.getmain()
    queued = []
    t = main.next
    while t is not None and t is not main:
        queued.append(t)
        t = t.next
    for t in queued:
        t.remove()
    for t in queued:
        t.kill()


class StacklessTestCase(unittest.TestCase):
    """Each test starts and ends in the main tasklet with nothing else runnable."""

    def setUp(self):
        self.assertIs(stackless.getcurrent(), stackless.getmain())
        self.assertEqual(stackless.getruncount(), 1, "runnable tasklets left by an earlier test")

    def tearDown(self):
        kill_runnables()
        self.assertEqual(stackless.getruncount(), 1)
