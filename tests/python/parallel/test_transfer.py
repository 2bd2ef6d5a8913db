"""How arguments and results cross between the main interpreter and the workers.

Builtin data (None, bool, int, float, complex, str, bytes — exact types — and tuples, lists and
dicts of them) crosses in the engine's own format, and a map's immutable items are copied by
the workers in place from the main interpreter's objects; everything else goes by pickle.

Covers: every transferred type, both ways and through each path (items read in place, the
native format, pickle), with values kept exactly (huge ints, NaN payloads, -0.0, infinities,
every str kind, lone surrogates, empty containers, dict order and key types); subclasses of
int, str, tuple, list and dict keep their type (pickle); a list or dict met twice, or a cycle,
keeps its sharing (pickle); nesting up to the native limit, past it (pickle), and too deep for
pickle (a TransferError saying so); transfer_check's answers; corrupt or truncated data is a
ValueError, never a crash; a map abandoned while workers read its items; a reference to a map
that has ended.

Run:  target/debug/pyhost --engine parallel tests/python/parallel/test_transfer.py
"""

import enum
import math
import struct
import unittest

import _parallel_core as core
import parallel


def identity(value):
    return value


def typed(value):
    return type(value).__name__, value


def make(kind):
    """Values made in the worker, for the results path."""
    return SAMPLES[kind]


def fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def depth_of(value):
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Pair(tuple):
    pass


class Items(list):
    pass


class Table(dict):
    pass


NAN_WITH_PAYLOAD = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_1234))[0]

SAMPLES = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "small ints": (-5, 256, 257, -6),
    "i64 edges": (2**63 - 1, -2**63),
    "past i64": (2**63, -2**63 - 1, 2**64),
    "huge ints": (10**1000, -(7**5000), 2**100000 + 1),
    "floats": (0.0, 1.5, -2.25, 1e308, 5e-324, math.inf, -math.inf),
    "negative zero": -0.0,
    "nan": math.nan,
    "nan payload": NAN_WITH_PAYLOAD,
    "complex": (1 + 2j, complex(-0.0, math.inf), complex(math.nan, -0.0)),
    "str kinds": ("", "ascii", "latin-1 é\xff", "bmp \u20ac\uffff", "astral \U0001f600\U0010ffff"),
    "surrogates": ("\ud800", "a\udfffb", "\udc80" * 3, "\U0001f600\ud83d"),
    "bytes": (b"", b"\x00\xff" * 1000),
    "tuples": ((), (1,), ((), ((),)), (1, "a", (b"b", None))),
    "lists": [[], [1, [2, [3]]], [(1, 2), {"k": [4]}]],
    "dicts": {"a": 1, 2: "b", (3, "c"): [4], None: {}, 1.5: -0.0, b"x": True, 10**30: 10**30},
    "long str": "x" * 1_000_000,
}


def same(a, b):
    """Equal, of the same types all the way down, with floats equal bit for bit (NaN payloads,
    -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a) and \
            all(same(x, y) for x, y in zip(a, b))
    return a == b


class NativeFormatTest(unittest.TestCase):
    """transfer_dumps / transfer_loads in one interpreter."""

    def test_every_sample_comes_back_the_same(self):
        for name, value in SAMPLES.items():
            with self.subTest(name):
                data = core.transfer_dumps(value)
                self.assertIsInstance(data, bytes)
                self.assertEqual(data[0], 0x01)
                self.assertTrue(same(core.transfer_loads(data, 0), value))

    def test_not_builtin_data_is_refused(self):
        a = [1]
        cycle = []
        cycle.append(cycle)
        for value in ({1}, frozenset(), bytearray(b"x"), Color.RED, Name("n"), Pair(), Items(),
                      Table(), [a, a], {"x": a, "y": a}, cycle, (object(),), nested(101)):
            with self.subTest(value=type(value)):
                self.assertIsNone(core.transfer_dumps(value))
                self.assertEqual(core.transfer_check(value), 0)

    def test_check_says_what_workers_may_read_in_place(self):
        self.assertEqual(core.transfer_check([1, "a", b"b", 1.5, 2j, None, (1, ("x",))]), 2)
        self.assertEqual(core.transfer_check([2**63]), 1)  # past i64: written by main
        self.assertEqual(core.transfer_check([[1]]), 1)  # a list inside: main writes it
        self.assertEqual(core.transfer_check([{"k": 1}]), 1)
        self.assertEqual(core.transfer_check(nested(99)), 1)  # 100 lists, one in the other
        self.assertEqual(core.transfer_check(nested(100)), 0)

    def test_truncated_or_corrupt_data_is_a_value_error(self):
        data = core.transfer_dumps([1, 2**70, "é\U0001f600", b"xy", (1.5, 2j), {"k": [None]}])
        for end in range(len(data)):
            with self.assertRaises(ValueError):
                core.transfer_loads(data[:end], 0)
        with self.assertRaises(ValueError):
            core.transfer_loads(data + b"\x00", 0)
        for corrupt in (b"\x01\x63", b"\x01\x07\x03", b"\x01\x0a" + (2**62).to_bytes(8, "little"),
                        b"\x01\x04\x03\x00\x00\x00\x00\x00\x00\x00zzz"):
            with self.assertRaises(ValueError):
                core.transfer_loads(corrupt, 0)
        with self.assertRaises(ValueError):
            core.transfer_loads(data, len(data) + 1)

    def test_loads_into_a_list(self):
        target = [None] * 5
        self.assertEqual(core.transfer_loads_into(core.transfer_dumps([7, 8]), target, 2), 2)
        self.assertEqual(target, [None, None, 7, 8, None])
        with self.assertRaises(IndexError):
            core.transfer_loads_into(core.transfer_dumps([1, 2]), target, 4)
        with self.assertRaises(ValueError):
            core.transfer_loads_into(core.transfer_dumps((1, 2)), target, 0)

    def test_a_reference_to_an_ended_map_is_refused(self):
        with self.assertRaisesRegex(RuntimeError, "has ended"):
            core.transfer_borrow(core.transfer_lent(123456789, 0, 1), 0)
        with self.assertRaisesRegex(ValueError, "not a lent chunk"):
            core.transfer_borrow(b"\x02short", 0)


class AcrossInterpretersTest(unittest.TestCase):
    def check_round_trip(self, values):
        back = parallel.map(identity, values, chunksize=1)
        for value, came_back in zip(values, back, strict=True):
            if not same(came_back, value):
                self.fail(f"{type(value).__name__} {str(value)[:80]!r} came back as "
                          f"{type(came_back).__name__} {str(came_back)[:80]!r}")

    def test_immutable_items_read_in_place(self):
        values = [v for v in SAMPLES.values() if core.transfer_check([v]) == 2]
        self.assertGreater(len(values), 10)
        self.check_round_trip(values)

    def test_builtin_data_in_the_native_format(self):
        values = list(SAMPLES.values())
        self.assertEqual(core.transfer_check(values), 1)
        self.check_round_trip(values)

    def test_mixed_with_data_that_needs_pickle(self):
        values = list(SAMPLES.values()) + [{1, 2}]
        self.assertEqual(core.transfer_check(values), 0)
        self.check_round_trip(values)

    def test_results_made_in_a_worker(self):
        back = parallel.map(make, list(SAMPLES))
        for name, came_back in zip(SAMPLES, back):
            self.assertTrue(same(came_back, SAMPLES[name]), name)

    def test_submit_and_executor(self):
        value = SAMPLES["dicts"]
        self.assertTrue(same(parallel.submit(identity, value).result(timeout=30), value))
        self.assertEqual(parallel.submit(typed, value=3.5).result(timeout=30), ("float", 3.5))
        with parallel.Executor(2) as executor:
            self.assertEqual(list(executor.map(identity, [1, "a", (2,)], chunksize=2)), [1, "a", (2,)])

    def test_subclasses_keep_their_type(self):
        values = [Color.RED, Name("n"), Pair((1, 2)), Items([3]), Table(k=4), True]
        back = parallel.map(typed, values, chunksize=1)
        self.assertEqual([name for name, _ in back], ["Color", "Name", "Pair", "Items", "Table", "bool"])
        self.assertEqual([type(v) for _, v in back], [type(v) for v in values])
        self.assertEqual([v for _, v in back], values)
        self.assertEqual([type(v) for v in parallel.map(identity, values, chunksize=1)],
                         [type(v) for v in values])

    def test_shared_and_cyclic_containers_keep_their_shape(self):
        shared = [1]
        back = parallel.submit(identity, [shared, shared]).result(timeout=30)
        self.assertIs(back[0], back[1])
        cycle = {"name": "loop"}
        cycle["self"] = cycle
        back = parallel.submit(identity, cycle).result(timeout=30)
        self.assertIs(back["self"], back)

    def test_nesting_up_to_and_past_the_native_limit(self):
        for depth in (1, 98, 99, 100, 101, 300):
            with self.subTest(depth=depth):
                self.assertEqual(parallel.map(depth_of, [nested(depth)]), [depth])
                self.assertEqual(depth_of(parallel.submit(nested, depth).result(timeout=30)), depth)

    def test_nesting_too_deep_to_pickle_is_a_clear_error(self):
        with self.assertRaisesRegex(parallel.TransferError, "nested too deeply"):
            parallel.map(depth_of, [nested(100_000)])

    def test_many_items_in_order(self):
        items = list(range(-50_000, 50_000)) + [str(i) for i in range(1000)]
        self.assertEqual(parallel.map(identity, items), items)
        pairs = [(i, str(i)) for i in range(20_000)]
        self.assertEqual(parallel.map(identity, pairs), pairs)
        self.assertEqual(parallel.map(lambda a, b: (b, a), range(5000), "xy" * 2500),
                         [(c, i) for i, c in zip(range(5000), "xy" * 2500)])

    def test_a_map_abandoned_while_workers_read_its_items(self):
        for _ in range(20):
            with self.assertRaisesRegex(ValueError, "three"):
                parallel.map(fail_on_three, list(range(20_000)), chunksize=5)
        self.assertEqual(parallel.map(identity, list(range(1000))), list(range(1000)))


if __name__ == "__main__":
    unittest.main()
