"""parallel.map under pyhost's `parallel` engine.

Covers: results in input order for 0, 1 and many items and for several iterables (zip
semantics, the shortest iterable wins); chunksize None / explicit / invalid (ValueError), and
the chunk sizes map picks from the item count and the cost it measured in earlier maps;
that the work really runs in the workers (current_context() inside a task) and that both
workers of a 2-CPU pool take part; what kinds of callables cross to the workers: lambdas,
closures (over ints, lists and other functions), nested and recursive functions, defaults and
keyword-only defaults, a global the script binds only under its `if __name__ == "__main__":`
guard, instances of the script's classes (as argument and as result), builtins (`abs`),
stdlib methods (`str.upper`), functools.partial, and a lambda returned by a task.

Run:  target/debug/pyhost --engine parallel tests/python/parallel/test_map.py
(workers re-import this file as `__mp_main__`, so its module level only defines things).
"""

import array
import functools
import os
import time
import unittest

import parallel

CPUS = os.process_cpu_count() or 1


# ----- task functions (module level: workers find them in their import of this script) -----

def square(x):
    return x * x


def add3(a, b, c):
    return a + b + c


def where(x):
    """(x, worker index or None) of the interpreter running the task."""
    context = parallel.current_context()
    return x, None if context is None else context.worker


def slow_worker_index(x):
    time.sleep(0.02)
    return parallel.current_context().worker


def factorial(n):
    return 1 if n <= 1 else n * factorial(n - 1)


def with_defaults(a, b=10, *, c=100):
    return a + b + c


def uses_guard_only_name(x):
    # GUARD_ONLY_OFFSET is bound only under the `if __name__ == "__main__":` guard below: a
    # worker's import of this script never defines it, so it must travel with the function.
    return GUARD_ONLY_OFFSET + x  # noqa: F821


def returns_adder(k):
    return lambda y: y + k


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return type(other) is type(self) and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


def move(point):
    return Point(point.x + 1, point.y * 2)


def point_x(point):
    return point.x


# ----- tests -----

class OrderAndShapeTest(unittest.TestCase):
    def test_no_items(self):
        self.assertEqual(parallel.map(square, []), [])
        self.assertEqual(parallel.map(square, iter(())), [])
        self.assertEqual(parallel.map(add3, [], [], []), [])

    def test_one_item(self):
        self.assertEqual(parallel.map(square, [7]), [49])

    def test_many_items_keep_input_order(self):
        values = list(range(5000))
        self.assertEqual(parallel.map(square, values), [v * v for v in values])

    def test_any_iterable(self):
        self.assertEqual(parallel.map(square, (x for x in range(10))), [x * x for x in range(10)])
        self.assertEqual(parallel.map(str.upper, "abc"), ["A", "B", "C"])

    def test_results_in_order_although_tasks_finish_out_of_order(self):
        # Early items sleep longest, so later chunks finish first.
        delays = [0.05, 0.04, 0.03, 0.0, 0.0, 0.0, 0.0, 0.0]
        self.assertEqual(parallel.map(time.sleep, delays, chunksize=1), [None] * len(delays))
        values = list(range(40))
        self.assertEqual(parallel.map(lambda x: (time.sleep(0.001 * (40 - x)), x)[1], values, chunksize=1),
                         values)

    def test_several_iterables_zip(self):
        self.assertEqual(parallel.map(add3, [1, 2, 3], [10, 20, 30], [100, 200, 300]), [111, 222, 333])
        self.assertEqual(parallel.map(pow, [2, 3, 4], [2, 2, 2]), [4, 9, 16])

    def test_shortest_iterable_wins(self):
        self.assertEqual(parallel.map(pow, [2, 3, 4, 5], [3, 2]), [8, 9])
        self.assertEqual(parallel.map(add3, range(100), range(5), range(50)), [3 * i for i in range(5)])
        self.assertEqual(parallel.map(pow, [1, 2], []), [])

    def test_no_iterable_is_a_type_error(self):
        with self.assertRaises(TypeError):
            parallel.map(square)


class ChunksizeTest(unittest.TestCase):
    def test_default_and_explicit_chunksizes_give_the_same_list(self):
        values = list(range(1001))
        expected = [v * v for v in values]
        for chunksize in (None, 1, 2, 7, 1000, 1001, 5000):
            with self.subTest(chunksize=chunksize):
                self.assertEqual(parallel.map(square, values, chunksize=chunksize), expected)

    def test_explicit_chunksize_with_several_iterables(self):
        self.assertEqual(parallel.map(add3, range(10), range(10), range(10), chunksize=3),
                         [3 * i for i in range(10)])

    def test_invalid_chunksize_is_a_value_error(self):
        for chunksize in (0, -1, 1.5, "2"):
            with self.subTest(chunksize=chunksize):
                with self.assertRaises(ValueError):
                    parallel.map(square, range(10), chunksize=chunksize)
        self.assertEqual(parallel.map(square, range(3)), [0, 1, 4])  # still usable

    def test_invalid_chunksize_is_a_value_error_even_without_items(self):
        # Regression test (a bug of the 2026-11-27 11:19 build, fixed since):
        # _Pool.map returns [] for empty input before it validates chunksize, so
        # parallel.map(f, [], chunksize=0) returns [] while parallel.map(f, [1], chunksize=0)
        # raises ValueError (ProcessPoolExecutor.map checks chunksize first).
        with self.assertRaises(ValueError):
            parallel.map(square, [], chunksize=0)


def task_id(_):
    return parallel.current_context().task_id


def task_id_of_another_function(_):
    return parallel.current_context().task_id


class MeasuredChunkSizeTest(unittest.TestCase):
    def test_chunk_sizes_from_the_count_and_the_measured_cost(self):
        size = parallel._chunk_size
        # No measure yet: 16 chunks per worker, at most one item each.
        self.assertEqual(size(200_000, 2, None), 6250)
        self.assertEqual(size(8, 2, None), 1)
        self.assertEqual(size(4000, 2, None), 125)
        # Measured cheap: fewer chunks of about 0.5 ms, one per worker at least.
        self.assertEqual(size(200_000, 2, 60.0), 8334)  # 12 ms of work: 24 chunks
        self.assertEqual(size(1000, 2, 60.0), 500)  # 60 us of work: 2 chunks
        self.assertEqual(size(8, 2, 60.0), 4)  # a stale measure still uses both workers
        # Measured heavy: as without a measure.
        self.assertEqual(size(4000, 2, 100_000.0), 125)
        self.assertEqual(size(8, 2, 100_000_000.0), 1)

    def test_a_second_map_of_a_cheap_function_goes_in_fewer_chunks(self):
        parallel._item_costs.clear()
        first = set(parallel.map(task_id, range(640)))
        self.assertEqual(len(first), min(640, 16 * len(parallel.workers())))
        second = set(parallel.map(task_id, range(640)))
        self.assertLess(len(second), len(first))
        self.assertGreaterEqual(len(second), min(2, len(parallel.workers())))
        # The measure is the function's own.
        self.assertEqual(len(set(parallel.map(task_id_of_another_function, range(640)))), len(first))

    def test_an_explicit_chunksize_is_kept(self):
        parallel.map(task_id, range(640))
        self.assertEqual(len(set(parallel.map(task_id, range(640), chunksize=10))), 64)


class RunsInWorkersTest(unittest.TestCase):
    def test_current_context_is_none_in_main(self):
        self.assertIsNone(parallel.current_context())

    def test_tasks_run_in_workers(self):
        results = parallel.map(where, range(20), chunksize=1)
        self.assertEqual([x for x, _ in results], list(range(20)))
        for _, worker in results:
            self.assertIsNotNone(worker)
            self.assertIn(worker, range(CPUS))
        self.assertIsNone(parallel.current_context())

    @unittest.skipUnless(CPUS >= 2, "needs 2 CPUs")
    def test_every_worker_takes_part(self):
        indexes = set()
        for _ in range(3):  # a slow start of one worker must not fail the test
            indexes |= set(parallel.map(slow_worker_index, range(8 * CPUS), chunksize=1))
            if indexes == set(range(CPUS)):
                break
        self.assertEqual(indexes, set(range(CPUS)))


class CallablesCrossTest(unittest.TestCase):
    def test_lambda(self):
        self.assertEqual(parallel.map(lambda x: x + 1, range(5)), [1, 2, 3, 4, 5])

    def test_closure_over_int(self):
        k = 7
        self.assertEqual(parallel.map(lambda x: x * k, range(4)), [0, 7, 14, 21])

    def test_closure_over_list_sends_its_current_value(self):
        table = [10, 20, 30]
        lookup = lambda i: table[i]  # noqa: E731
        self.assertEqual(parallel.map(lookup, [2, 0, 1]), [30, 10, 20])
        table.append(40)
        table[0] = 11
        self.assertEqual(parallel.map(lookup, [3, 0]), [40, 11])

    def test_closure_over_another_function(self):
        def double(x):
            return 2 * x

        def double_plus_one(x):
            return double(x) + 1

        self.assertEqual(parallel.map(double_plus_one, range(4)), [1, 3, 5, 7])

    def test_closure_over_a_module_function(self):
        f = square
        self.assertEqual(parallel.map(lambda x: f(x) + 1, [3]), [10])

    def test_nested_function(self):
        def outer(x):
            def inner(y):
                return y * 3
            return inner(x) + 1
        self.assertEqual(parallel.map(outer, [1, 2]), [4, 7])

    def test_recursive_nested_function(self):
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        self.assertEqual(parallel.map(fib, range(10)), [0, 1, 1, 2, 3, 5, 8, 13, 21, 34])

    def test_recursive_module_function(self):
        self.assertEqual(parallel.map(factorial, [0, 1, 5, 10]), [1, 1, 120, 3628800])

    def test_defaults_and_kwdefaults(self):
        self.assertEqual(parallel.map(with_defaults, [1, 2]), [111, 112])
        self.assertEqual(parallel.map(with_defaults, [1, 2], [0, 0]), [101, 102])

        def local(a, b=[5], *, c=(1, 2)):  # noqa: B006
            return a + b[0] + sum(c)
        self.assertEqual(parallel.map(local, [0, 1]), [8, 9])

    def test_changed_defaults_are_sent(self):
        def f(x, k=1):
            return x * k
        self.assertEqual(parallel.map(f, [2]), [2])
        f.__defaults__ = (5,)
        self.assertEqual(parallel.map(f, [2]), [10])
        f.__kwdefaults__ = None
        f.__defaults__ = (7,)
        self.assertEqual(parallel.map(f, [2]), [14])

    def test_name_bound_only_under_the_main_guard(self):
        self.assertEqual(parallel.map(uses_guard_only_name, [1, 2], chunksize=1), [1001, 1002])

    def test_instances_of_script_classes_as_argument_and_result(self):
        points = [Point(i, i + 1) for i in range(6)]
        moved = parallel.map(move, points)
        self.assertEqual(moved, [Point(i + 1, (i + 1) * 2) for i in range(6)])
        self.assertIs(type(moved[0]), Point)
        self.assertEqual(parallel.map(point_x, points), list(range(6)))

    def test_builtin_function(self):
        self.assertEqual(parallel.map(abs, [-1, 2, -3]), [1, 2, 3])
        self.assertEqual(parallel.map(len, ["", "ab", [1, 2, 3]]), [0, 2, 3])

    def test_stdlib_method(self):
        self.assertEqual(parallel.map(str.upper, ["a", "bc"]), ["A", "BC"])
        self.assertEqual(parallel.map("-".join, [["a", "b"], ["c"]]), ["a-b", "c"])

    def test_functools_partial(self):
        self.assertEqual(parallel.map(functools.partial(with_defaults, c=0), [1, 2]), [11, 12])
        self.assertEqual(parallel.map(functools.partial(pow, 2), [3, 4]), [8, 16])
        self.assertEqual(parallel.map(functools.partial(lambda a, b: a - b, 10), [1, 2]), [9, 8])

    def test_lambda_returned_by_a_task(self):
        adders = parallel.map(returns_adder, [1, 10])
        self.assertEqual([adder(5) for adder in adders], [6, 15])

    def test_bound_method_of_script_instance(self):
        class_method = Point(3, 4).__repr__
        self.assertEqual(parallel.map(lambda f: f(), [class_method]), ["Point(3, 4)"])


class ValuesCrossTest(unittest.TestCase):
    def test_buffers_keep_their_type_both_ways(self):
        # marshal, the fast path, would send any object with a buffer as bytes.
        values = [bytearray(b"ab"), array.array("i", [1, 2]), {"k": [bytearray(b"z")]}, (b"x", 1.5, None, {1})]
        back = parallel.map(lambda value: value, values, chunksize=1)
        self.assertEqual(back, values)
        self.assertEqual([type(value) for value in back], [type(value) for value in values])
        self.assertIs(type(back[2]["k"][0]), bytearray)
        self.assertIs(type(parallel.submit(lambda: bytearray(b"made in a task")).result()), bytearray)


if __name__ == "__main__":
    GUARD_ONLY_OFFSET = 1000
    unittest.main()
