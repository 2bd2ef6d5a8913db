"""Ordinary Python semantics inside tasklets under `pyhost --engine stackless`: recursion,
tracebacks, exception state across switches, generators, with/finally on kill, contextvars.

Stackless keeps a separate frame chain, recursion depth and exception state per tasklet
(Stackless/module/scheduling.c: "Every tasklet has its own exception state"; taskletobject.c
recursion_depth: "They all start running with a recursion_depth of zero"). The contextvars
rules are those of Stackless 3.7.6+ (Doc/library/stackless/tasklets.rst, "Tasklets and Context
Variables"). See SEMANTICS.md.
Run standalone: `pyhost --engine stackless tests/python/stackless/test_python_semantics.py`.
"""

import contextvars
import sys
import traceback
import unittest

import stackless
from stackless_support import StacklessTestCase, TaskletExit





def recurse(n, at_bottom):
    if n == 0:
        return at_bottom()
    return 1 + recurse(n - 1, at_bottom)


class RecursionTest(StacklessTestCase):
    def test_deep_recursion_with_switches_at_the_bottom(self):
        results = {}

        def body(name, depth):
            def bottom():
                for _ in range(3):
                    stackless.schedule()
                return 0

            results[name] = recurse(depth, bottom)

        for name, depth in (("a", 500), ("b", 450), ("c", 300)):
            stackless.tasklet(body)(name, depth)
        stackless.run()
        self.assertEqual(results, {"a": 500, "b": 450, "c": 300})

    def test_recursion_depth_is_counted_per_tasklet(self):
        limit = sys.getrecursionlimit()
        depth = int(limit * 0.6)
        results = []

        def body():
            results.append(recurse(depth, lambda: 0))

        def main_side():
            stackless.tasklet(body)()
            stackless.run()  # runs the tasklet while main is itself ~0.6 * limit deep
            return 0

        self.assertEqual(recurse(depth, main_side), depth)
        self.assertEqual(results, [depth])

    def test_recursion_error_stays_in_its_tasklet(self):
        caught = []

        def runaway(n):
            return runaway(n + 1) + 1

        def body():
            try:
                runaway(0)
            except RecursionError as exc:
                caught.append(type(exc))
            caught.append(recurse(100, lambda: 0))  # the tasklet is usable afterwards

        stackless.tasklet(body)()
        stackless.run()
        self.assertEqual(caught, [RecursionError, 100])
        self.assertEqual(recurse(100, lambda: 0), 100)

    def test_c_recursion_as_deep_as_on_the_main_thread(self):
        # Regression test (a bug of the 2026-11-27 16:39 build, fixed since): tasklets ran on
        # 256 KiB stacks, and C recursion with big frames (sorted's key, ~5 KB a level) or
        # unmetered (the parser) hit the guard page, a SIGSEGV, where python3.13 raises
        # RecursionError or succeeds. Tasklet stacks are now as large as the main thread's.
        import ast
        outcomes = []

        def sort_key(x):
            return sorted([x - 1, x], key=sort_key)[0] if x > 0 else 0

        def body():
            try:
                sort_key(2000)
            except RecursionError:
                outcomes.append("RecursionError")
            outcomes.append(type(ast.parse("-" * 3000 + "1")).__name__)

        stackless.tasklet(body)()
        stackless.run()
        self.assertEqual(outcomes, ["RecursionError", "Module"])


class TracebackTest(StacklessTestCase):
    def test_traceback_of_tasklet_error_shows_tasklet_frames(self):
        def innermost():
            raise ValueError("deep")

        def middle():
            innermost()

        def tasklet_entry():
            middle()

        stackless.tasklet(tasklet_entry)()
        try:
            stackless.run()
        except ValueError as exc:
            names = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
            self.assertEqual(names[-3:], ["tasklet_entry", "middle", "innermost"])
            formatted = "".join(traceback.format_exception(exc))
            self.assertIn("innermost", formatted)
            self.assertIn("ValueError: deep", formatted)
        else:
            self.fail("the tasklet's ValueError did not reach main")

    def test_stack_of_a_tasklet_starts_at_its_callable(self):
        stacks = []

        def tasklet_entry():
            helper()

        def helper():
            stacks.append([frame.name for frame in traceback.extract_stack()])

        stackless.tasklet(tasklet_entry)()
        stackless.run()
        names = stacks[0]
        self.assertEqual(names[-2:], ["tasklet_entry", "helper"])
        self.assertNotIn("test_stack_of_a_tasklet_starts_at_its_callable", names)

    def test_sys_getframe_inside_tasklet(self):
        seen = []

        def tasklet_entry():
            frame = sys._getframe()
            seen.append((frame.f_code.co_name, stackless.getcurrent().frame is frame))

        t = stackless.tasklet(tasklet_entry)()
        stackless.run()
        self.assertEqual(seen, [("tasklet_entry", True)])
        self.assertIsNone(t.frame)


class ExceptionStateTest(StacklessTestCase):
    def test_exc_info_survives_a_switch_in_both_directions(self):
        seen = []

        def body():
            try:
                raise KeyError("tasklet's")
            except KeyError:
                stackless.schedule()  # main runs while we are inside the except block
                seen.append(("tasklet", sys.exc_info()[0], sys.exception()))
                stackless.schedule()
                seen.append(("tasklet again", sys.exc_info()[0]))
            seen.append(("tasklet after", sys.exc_info()[0]))

        stackless.tasklet(body)()
        stackless.schedule()  # run the tasklet up to its first schedule()
        self.assertEqual(sys.exc_info(), (None, None, None))
        try:
            raise ValueError("main's")
        except ValueError as mine:
            stackless.schedule()  # the tasklet resumes inside its except block
            self.assertIs(sys.exc_info()[1], mine)
            self.assertIs(sys.exception(), mine)
            stackless.schedule()
            self.assertIs(sys.exception(), mine)
        self.assertIsNone(sys.exception())
        self.assertEqual(seen[0][0:2], ("tasklet", KeyError))
        self.assertIsInstance(seen[0][2], KeyError)
        self.assertEqual(seen[1:], [("tasklet again", KeyError), ("tasklet after", None)])

    def test_new_tasklet_starts_without_the_creators_exception(self):
        seen = []

        def body():
            seen.append(sys.exc_info())
            try:
                raise KeyError("fresh")
            except KeyError as exc:
                seen.append(exc.__context__)

        try:
            raise ValueError("main is handling this")
        except ValueError:
            stackless.tasklet(body)()
            stackless.run()
        self.assertEqual(seen, [(None, None, None), None])

    def test_exception_chaining_inside_a_tasklet(self):
        caught = []

        def body():
            try:
                try:
                    raise KeyError("first")
                except KeyError:
                    stackless.schedule()
                    raise ValueError("second")
            except ValueError as exc:
                caught.append((type(exc.__context__), exc.__context__.args))

        stackless.tasklet(body)()
        stackless.tasklet(stackless.schedule)()
        stackless.run()
        self.assertEqual(caught, [(KeyError, ("first",))])


class KillCleanupTest(StacklessTestCase):
    def test_with_and_finally_run_on_kill(self):
        log = []
        ch = stackless.channel()

        class Manager:
            def __init__(self, name):
                self.name = name

            def __enter__(self):
                log.append(("enter", self.name))
                return self

            def __exit__(self, exc_type, exc, tb):
                log.append(("exit", self.name, exc_type))
                return False

        def body():
            with Manager("outer"):
                try:
                    with Manager("inner"):
                        ch.receive()
                finally:
                    log.append("finally")

        t = stackless.tasklet(body)()
        t.run()
        log.append("killing")
        t.kill()
        self.assertEqual(
            log,
            [
                ("enter", "outer"),
                ("enter", "inner"),
                "killing",
                ("exit", "inner", TaskletExit),
                "finally",
                ("exit", "outer", TaskletExit),
            ],
        )
        self.assertFalse(t.alive)

    def test_generator_finally_runs_when_owner_is_killed_and_gen_closed(self):
        log = []

        def gen():
            try:
                yield 1
                yield 2
            finally:
                log.append("generator finally")

        def body():
            g = gen()
            next(g)
            try:
                stackless.schedule_remove()
            finally:
                g.close()
                log.append("tasklet finally")

        t = stackless.tasklet(body)()
        stackless.run()
        t.kill()
        self.assertEqual(log, ["generator finally", "tasklet finally"])


class GeneratorTest(StacklessTestCase):
    def test_generators_interleaved_in_two_tasklets(self):
        results = {"a": [], "b": []}

        def counter(start):
            n = start
            while True:
                yield n
                n += 1

        def body(name, start):
            g = counter(start)
            for _ in range(5):
                results[name].append(next(g))
                stackless.schedule()

        stackless.tasklet(body)("a", 0)
        stackless.tasklet(body)("b", 100)
        stackless.run()
        self.assertEqual(results, {"a": [0, 1, 2, 3, 4], "b": [100, 101, 102, 103, 104]})

    def test_switching_inside_a_generator_body(self):
        log = []

        def gen(name):
            for i in range(3):
                log.append((name, i))
                stackless.schedule()  # switch tasklets while the generator frame runs
                yield i

        def body(name):
            log.append((name, "sum", sum(gen(name))))

        stackless.tasklet(body)("x")
        stackless.tasklet(body)("y")
        stackless.run()
        self.assertIn(("x", "sum", 3), log)
        self.assertIn(("y", "sum", 3), log)
        self.assertEqual(log[:2], [("x", 0), ("y", 0)])

    def test_generator_resumed_by_another_tasklet(self):
        ch = stackless.channel()
        values = []

        def gen():
            for i in range(6):
                yield i

        def first():
            g = gen()
            values.append(("first", next(g)))
            values.append(("first", next(g)))
            ch.send(g)

        def second():
            g = ch.receive()
            values.extend(("second", v) for v in g)

        stackless.tasklet(first)()
        stackless.tasklet(second)()
        stackless.run()
        self.assertEqual(
            values,
            [("first", 0), ("first", 1)] + [("second", i) for i in range(2, 6)],
        )

    def test_running_generator_cannot_be_entered_from_another_tasklet(self):
        errors = []
        started = []

        def gen():
            started.append(True)
            stackless.schedule()  # suspended inside the running generator
            yield "done"

        g = gen()

        def owner():
            errors.append(("owner", next(g)))

        def intruder():
            try:
                next(g)
            except ValueError as exc:
                errors.append(("intruder", "already executing" in str(exc)))

        stackless.tasklet(owner)()
        stackless.tasklet(intruder)()
        stackless.run()
        self.assertEqual(started, [True])
        self.assertEqual(sorted(errors), [("intruder", True), ("owner", "done")])


class ContextVarsTest(StacklessTestCase):
    def test_copy_context_run_is_isolated_across_switches(self):
        var = contextvars.ContextVar("copy_run_var", default="default")
        seen = []

        def inside():
            var.set("inside")
            seen.append(("before switch", var.get()))
            stackless.schedule()  # main runs while this tasklet is inside ctx.run
            seen.append(("after switch", var.get()))

        def body():
            contextvars.copy_context().run(inside)
            seen.append(("after run", var.get()))

        stackless.tasklet(body)()
        stackless.schedule()
        self.assertEqual(seen, [("before switch", "inside")])
        self.assertEqual(var.get(), "default")  # main does not see the tasklet's context
        stackless.run()
        self.assertEqual(
            seen,
            [("before switch", "inside"), ("after switch", "inside"), ("after run", "default")],
        )
        self.assertEqual(var.get(), "default")

    def test_new_tasklet_shares_the_creators_context(self):
        var = contextvars.ContextVar("shared_var", default="default")
        token = var.set("set by main")
        try:
            seen = []

            def body():
                seen.append(var.get())
                var.set("set by tasklet")

            t = stackless.tasklet(body)()
            self.assertEqual(t.context_id, stackless.getcurrent().context_id)
            stackless.run()
            self.assertEqual(seen, ["set by main"])
            # same Context object: the sub-tasklet's change is visible to its creator
            self.assertEqual(var.get(), "set by tasklet")
        finally:
            var.reset(token)

    def test_tasklet_with_its_own_context(self):
        var = contextvars.ContextVar("own_var", default="default")
        token = var.set("main value")
        try:
            ctx = contextvars.Context()
            seen = []

            def body():
                seen.append(var.get())
                var.set("tasklet value")
                stackless.schedule()
                seen.append(var.get())

            t = stackless.tasklet(body)
            self.assertIs(t.set_context(ctx), t)
            self.assertEqual(t.context_id, id(ctx))
            self.assertNotEqual(t.context_id, stackless.getcurrent().context_id)
            t()
            stackless.schedule()
            self.assertEqual(var.get(), "main value")
            stackless.run()
            self.assertEqual(seen, ["default", "tasklet value"])
            self.assertEqual(var.get(), "main value")
            self.assertEqual(ctx[var], "tasklet value")
        finally:
            var.reset(token)

    def test_context_run_uses_the_tasklets_context(self):
        var = contextvars.ContextVar("context_run_var", default="default")
        ctx = contextvars.Context()
        ctx.run(var.set, "in ctx")
        t = stackless.tasklet().set_context(ctx)
        self.assertEqual(t.context_run(var.get), "in ctx")
        self.assertEqual(var.get(), "default")
        copied = t.context_run(contextvars.copy_context)
        self.assertEqual(copied[var], "in ctx")
        with self.assertRaises(ZeroDivisionError):
            t.context_run(lambda: 1 / 0)
        self.assertEqual(var.get(), "default")

    def test_set_context_inside_context_run_is_refused(self):
        def attempt():
            stackless.getcurrent().set_context(contextvars.Context())

        self.assertRaises(RuntimeError, contextvars.copy_context().run, attempt)


if __name__ == "__main__":
    unittest.main()
