"""share() of a dict: a read-only table that every worker reads in place (PyParallel's wiki
server case). Checks the Mapping interface in tasks against main, that every worker reads the
main interpreter's own dict (no copy), that no write gets through, that the caller's dict stays
theirs, and what share() refuses.

Run: `pyhost --engine parallel tests/python/parallel/test_share_tables.py`.
"""

import collections.abc
import gc
import unittest

import parallel
from parallel import share

TABLE = parallel.share({f"key {i}": f"value {i}" for i in range(20_000)})
MIXED = parallel.share({1: "one", 2.5: (1, "a"), b"raw": None, ("a", 1): frozenset({1, 2}), "flag": True})

BUILDS = []  # one entry per build() run in this interpreter


def build(size):
    BUILDS.append(size)
    return {i: str(i) for i in range(size)}


# A worker importing the script does not build these again: main's are used.
BUILT = parallel.share(build(100))
BUILT_TOO = share(
    build(5)
)
COUNTER = parallel.protect(len(build(3)))


def read_all(_):
    """Every way of reading the table, as plain values."""
    return (len(TABLE), TABLE["key 7"], TABLE.get("key 8"), TABLE.get("missing", "dflt"),
            "key 9" in TABLE, "missing" in TABLE, sum(1 for _ in TABLE), list(TABLE)[:3],
            list(TABLE.keys())[-2:], list(TABLE.values())[:2], list(TABLE.items())[5:7],
            isinstance(TABLE, collections.abc.Mapping), TABLE == dict(TABLE))


def underlying_dict_id(table):
    return id(gc.get_referents(table)[0])


class Tables(unittest.TestCase):
    def test_module_level_shares_are_built_once(self):
        self.assertEqual(BUILDS, [100, 5, 3])
        seen = parallel.map(lambda _: (list(BUILDS), len(BUILT), BUILT[99], dict(BUILT_TOO), COUNTER.value),
                            range(4), chunksize=1)
        self.assertEqual(seen, [([], 100, "99", {i: str(i) for i in range(5)}, 3)] * 4)

    def test_tasks_read_what_main_reads(self):
        expected = read_all(None)
        self.assertEqual(expected[:6], (20_000, "value 7", "value 8", "dflt", True, False))
        for seen in parallel.map(read_all, range(4), chunksize=1):
            self.assertEqual(seen, expected)

    def test_every_worker_reads_the_main_interpreter_s_dict(self):
        ids = set(parallel.map(lambda _: underlying_dict_id(TABLE), range(6), chunksize=1))
        self.assertEqual(ids, {underlying_dict_id(TABLE)})

    def test_keys_and_values_of_every_shareable_kind(self):
        def lookups(_):
            return MIXED[1], MIXED[2.5], MIXED[b"raw"], MIXED[("a", 1)], MIXED["flag"], 1.0 in MIXED

        self.assertEqual(parallel.map(lookups, range(2)), [lookups(None)] * 2)

    def test_a_table_crosses_as_itself(self):
        self.assertEqual(parallel.submit(lambda table: table["key 3"], TABLE).result(), "value 3")
        self.assertIs(parallel.submit(lambda: TABLE).result(), TABLE)
        self.assertIs(parallel.submit(lambda: {"t": [TABLE]}).result()["t"][0], TABLE)
        self.assertIs(parallel.share(TABLE), TABLE)

    def test_no_write_gets_through(self):
        writes = [lambda: TABLE.__setitem__("key 1", "x"), lambda: TABLE.__delitem__("key 1"),
                  lambda: TABLE.update({"a": 1}), lambda: TABLE.pop("key 1"), lambda: TABLE.clear(),
                  lambda: TABLE.setdefault("a", 1), lambda: TABLE.popitem()]
        for write in writes:
            with self.assertRaises((TypeError, AttributeError)):
                write()
            with self.assertRaises((TypeError, AttributeError)):
                parallel.submit(write).result()
        with self.assertRaises(TypeError):
            exec("TABLE['key 1'] = 'x'", {"TABLE": TABLE})
        self.assertEqual(TABLE["key 1"], "value 1")
        self.assertEqual(parallel.submit(lambda: TABLE["key 1"]).result(), "value 1")

    def test_a_copy_is_a_plain_dict(self):
        copied = parallel.submit(lambda: TABLE.copy()).result()
        self.assertIs(type(copied), dict)
        self.assertEqual(len(copied), 20_000)
        copied["new"] = 1  # the copy is the task's, then main's: writable
        self.assertNotIn("new", TABLE)

    def test_the_callers_dict_stays_theirs(self):
        source = {"a": 1}
        table = parallel.share(source)
        source["a"] = 2
        source["b"] = 3
        self.assertEqual(dict(table), {"a": 1})
        self.assertEqual(parallel.submit(lambda t: dict(t), table).result(), {"a": 1})

    def test_what_share_refuses(self):
        for data, where in [({"a": [1]}, "at ['a']"), ({"a": {"b": 1}}, "at ['a']"),
                            ({"a": (1, bytearray())}, "at ['a'][1]"),
                            ({Key(): 1}, "(a key)")]:
            with self.subTest(where=where):
                with self.assertRaises(TypeError) as refused:
                    parallel.share(data)
                self.assertIn(where, str(refused.exception))
        with self.assertRaises(RuntimeError):
            parallel.submit(parallel.share, {"a": 1}).result()

    def test_reading_while_collectors_run(self):
        def read_and_collect(_):
            total = 0
            for round_ in range(3):
                total += sum(len(value) for value in TABLE.values())
                gc.collect()
            return total

        expected = read_and_collect(None)
        self.assertEqual(parallel.map(read_and_collect, range(4), chunksize=1), [expected] * 4)


class Key:
    """A hashable object that is not immutable data."""

    def __hash__(self):
        return 1


if __name__ == "__main__":
    unittest.main()
