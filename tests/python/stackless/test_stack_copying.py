"""Tasklets share a few C stacks per thread: a suspended tasklet's live stack bytes are copied to
the heap when another tasklet needs its stack, and copied back before it runs again (see
engines/stackless/src/stack.rs). These tests make that happen constantly (many more tasklets
than shared stacks, at different depths) and check that nothing a tasklet can observe changes:
its locals, its C-level callers (C functions that call back into Python), its frame chain seen
from outside while it is off its stack, and the data-stack chunks CPython pushes for deep
frames.

Run standalone: `pyhost --engine stackless tests/python/stackless/test_stack_copying.py`.
"""

import functools
import sys
import traceback
import unittest

import stackless
import _stackless_core
from stackless_support import StacklessTestCase

# Comfortably more than the shared stacks of a thread (stack::SHARED_STACKS).
MANY = 200


def evictions():
    return _stackless_core.stats()["stack_evictions"]


class CopyingTest(StacklessTestCase):
    def test_many_tasklets_at_different_depths_keep_their_state(self):
        ch = stackless.channel()
        results = {}

        def dive(i, depth):
            if depth == 0:
                return ch.receive() + i
            marker = depth * 1000 + i
            # map() calls back into Python from C: Python and C frames alternate, so the bytes
            # copied include interpreter entry frames at several depths.
            below = next(map(lambda d: dive(i, d - 1), [depth]))
            return below + marker - depth * 1000 - i

        def body(i):
            results[i] = dive(i, i % 17)

        before = evictions()
        for i in range(MANY):
            stackless.tasklet(body)(i)
        stackless.run()
        self.assertEqual(ch.balance, -MANY)
        self.assertGreater(evictions() - before, MANY // 2)
        for i in range(MANY):
            ch.send(i * 10)
        self.assertEqual(results, {i: i * 11 for i in range(MANY)})

    def test_c_callers_survive_being_copied(self):
        # map() and functools.reduce() hold their state in C frames on the tasklet's stack
        # while they call back into Python, which blocks.
        ch = stackless.channel()
        results = {}

        def body(i):
            total = functools.reduce(lambda acc, x: acc + ch.receive() * x, range(1, 4), 0)
            doubled = list(map(lambda x: x + ch.receive(), [i, i]))
            results[i] = (total, doubled)

        for i in range(MANY):
            stackless.tasklet(body)(i)
        stackless.run()
        # Three reduce steps, then two map steps, each a receive: serve them round by round.
        for _ in range(5):
            for _ in range(MANY):
                ch.send(1)
        self.assertEqual(results, {i: (6, [i + 1, i + 1]) for i in range(MANY)})

    def test_frames_of_a_tasklet_off_its_stack_can_be_walked(self):
        def chain(tag, ch, captured):
            def innermost():
                captured.append(sys._getframe())
                return ch.receive()

            def middle():
                here = tag
                # A C function (sorted) between two Python frames: an interpreter entry frame
                # lives on the C stack in between.
                return sorted([1], key=lambda _: innermost()) and here

            def outer():
                here = tag
                return middle() and here

            return outer

        ch = stackless.channel()
        captured = []
        stackless.tasklet(chain("target", ch, captured))()
        stackless.run()
        # Decoys with the same shape take every shared stack, so the target's bytes are off
        # its stack and the decoys' entry frames sit at the very addresses its own had.
        decoys = stackless.channel()
        for _ in range(MANY):
            stackless.tasklet(chain("decoy", decoys, []))()
        stackless.run()
        walked = []
        frame = captured[0]
        while frame is not None:
            walked.append((frame.f_code.co_name, frame.f_locals.get("here")))
            frame = frame.f_back
        self.assertEqual(
            walked[:4],
            [("innermost", None), ("<lambda>", None), ("middle", "target"), ("outer", "target")],
        )
        stack = traceback.extract_stack(captured[0])
        self.assertEqual([entry.name for entry in stack][-4:], ["outer", "middle", "<lambda>", "innermost"])
        ch.send(7)
        for _ in range(MANY):
            decoys.send(None)
        del captured[:]

    def test_frames_deeper_than_the_root_chunk(self):
        # Each level has many locals, so the tasklets' frames overflow their small root
        # data-stack chunk into chunks CPython allocates; they block there and are copied.
        ch = stackless.channel()
        results = {}

        def level(i, n):
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = i
            b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = b8 = b9 = n
            if n == 0:
                return ch.receive() + a0 + b9
            return level(i, n - 1) + a9 + b0

        def body(i):
            results[i] = level(i, 30)

        for i in range(MANY):
            stackless.tasklet(body)(i)
        stackless.run()
        for i in range(MANY):
            ch.send(i)
        # The bottom adds i (and 0), each of the 30 levels above it i + n.
        self.assertEqual(results, {i: i + i + sum(i + n for n in range(1, 31)) for i in range(MANY)})

    def test_loop_calling_past_the_root_chunk(self):
        # A loop whose calls cross the root chunk's end on every iteration: CPython pushes and
        # pops a data-stack chunk each time (the engine caches them); the results must be exact.
        def deep(n):
            x0 = x1 = x2 = x3 = x4 = x5 = x6 = x7 = n
            return n if n == 0 else deep(n - 1) + 1 + x0 - x7

        out = []

        def body():
            for k in range(2000):
                out.append(deep(8))
                if k % 100 == 0:
                    stackless.schedule()

        stackless.tasklet(body)()
        stackless.tasklet(body)()
        stackless.run()
        self.assertEqual(out, [8] * 4000)

    def test_recursion_at_the_bottom_of_many_copied_tasklets(self):
        ch = stackless.channel()
        results = []

        def recurse(n):
            if n == 0:
                return ch.receive()
            return recurse(n - 1) + 1

        def body():
            results.append(recurse(300))

        for _ in range(50):
            stackless.tasklet(body)()
        stackless.run()
        for _ in range(50):
            ch.send(0)
        self.assertEqual(results, [300] * 50)

    def test_exception_state_and_tracebacks_survive_copying(self):
        ch = stackless.channel()
        seen = []

        def body(i):
            try:
                raise KeyError(i)
            except KeyError:
                ch.receive()
                seen.append((sys.exception().args[0], traceback.format_exc().count("KeyError")))

        for i in range(MANY):
            stackless.tasklet(body)(i)
        stackless.run()
        for _ in range(MANY):
            ch.send(None)
        self.assertEqual(seen, [(i, 2) for i in range(MANY)])


class FiberCoreTest(StacklessTestCase):
    """The switching core under tasklets: Fiber(func, context=None, arg=None)."""

    def test_fiber_passes_its_arg_before_the_switch_value(self):
        seen = []

        def body(first, value):
            seen.append((first, value))
            return (None, "done")  # back to the main context with this value

        fiber = _stackless_core.Fiber(body, None, "first")
        self.assertEqual(_stackless_core.switch(fiber, "value"), "done")
        self.assertEqual(seen, [("first", "value")])
        self.assertTrue(fiber.dead)

    def test_fiber_argument_count_is_checked(self):
        with self.assertRaises(TypeError):
            _stackless_core.Fiber()
        with self.assertRaises(TypeError):
            _stackless_core.Fiber(print, None, 1, 2)


if __name__ == "__main__":
    unittest.main()
