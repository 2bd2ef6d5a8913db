"""PyParallel's PX/PY rule under `pyhost --engine parallel`, table-driven: every way a task can
write main-thread (PY) state (the script's globals and what they reach) raises
parallel.ProtectionError naming the operation and the type, changes nothing, and leaves the
worker's view of the script unchanged for the next task; the same write on a protect()ed
object succeeds and the main interpreter sees it. Also: protect/unprotect/protected, share(),
is_px/is_py.

Run: `pyhost --engine parallel tests/python/parallel/test_protection.py`.
"""

import threading
import unittest

import parallel

# ----- PY state of the script (each worker imports its own copy) -----

COUNTER = 0
ITEMS = [3, 1, 2]
TABLE = {"a": 1, "b": 2}
TAGS = {"x", "y"}
BUFFER = bytearray(b"ab")
NESTED = {"inner": [1, 2], "deep": {"k": 1}, "pair": ([1], 2)}


class Config:
    level = 1


CONFIG = Config()
CONFIG.name = "main"

# ----- the same shapes, protected -----

P_COUNTER = parallel.protect(0)
P_ITEMS = parallel.protect([3, 1, 2])
P_TABLE = parallel.protect({"a": 1, "b": 2})
P_TAGS = parallel.protect({"x", "y"})
P_BUFFER = parallel.protect(bytearray(b"ab"))
P_NESTED = parallel.protect({"inner": [1, 2], "deep": {"k": 1}})
P_CONFIG = parallel.protect({"level": 1, "name": "main"})
WORDS = parallel.share(tuple(f"word {i}" for i in range(1000)))


def word_and_address(i):
    return WORDS.value[i], WORDS._address


def rebind_global():
    global COUNTER
    COUNTER = 5


def augment_global():
    global COUNTER
    COUNTER += 1


def delete_global():
    global COUNTER
    del COUNTER


def p_rebind_global():
    P_COUNTER.value = 5


def p_augment_global():
    global P_COUNTER
    P_COUNTER += 1


# (name, unprotected write, words the message must contain, protected write, check in main)
TABLE_OF_WRITES = [
    ("global rebinding", rebind_global, ["global COUNTER", "'int'"], p_rebind_global,
     lambda: P_COUNTER.value == 5),
    ("global +=", augment_global, ["global COUNTER"], p_augment_global, lambda: P_COUNTER.value == 1),
    ("global del", delete_global, ["delete the global COUNTER"], None, None),
    ("list.append", lambda: ITEMS.append(4), ["append to", "'list'"], lambda: P_ITEMS.append(4),
     lambda: P_ITEMS.copy() == [3, 1, 2, 4]),
    ("list.extend", lambda: ITEMS.extend([4]), ["extend", "'list'"], lambda: P_ITEMS.extend([4, 5]),
     lambda: P_ITEMS.copy() == [3, 1, 2, 4, 5]),
    ("list.insert", lambda: ITEMS.insert(0, 4), ["insert into", "'list'"], lambda: P_ITEMS.insert(0, 9),
     lambda: P_ITEMS[0] == 9),
    ("list item assignment", lambda: ITEMS.__setitem__(0, 9), ["assign an item", "'list'"],
     lambda: P_ITEMS.__setitem__(1, 7), lambda: P_ITEMS[1] == 7),
    ("list slice assignment", lambda: ITEMS.__setitem__(slice(0, 2), [9]), ["'list'"],
     lambda: P_ITEMS.__setitem__(slice(0, 2), [8]), lambda: P_ITEMS.copy() == [8, 2]),
    ("list del item", lambda: ITEMS.__delitem__(0), ["delete an item", "'list'"],
     lambda: P_ITEMS.__delitem__(0), lambda: P_ITEMS.copy() == [1, 2]),
    ("list.pop", lambda: ITEMS.pop(), ["pop from", "'list'"], lambda: P_ITEMS.pop(),
     lambda: P_ITEMS.copy() == [3, 1]),
    ("list.remove", lambda: ITEMS.remove(1), ["remove from", "'list'"], lambda: P_ITEMS.remove(1),
     lambda: P_ITEMS.copy() == [3, 2]),
    ("list.clear", lambda: ITEMS.clear(), ["clear", "'list'"], lambda: P_ITEMS.clear(),
     lambda: P_ITEMS.copy() == []),
    ("list.sort", lambda: ITEMS.sort(), ["sort", "'list'"], lambda: P_ITEMS.sort(),
     lambda: P_ITEMS.copy() == [1, 2, 3]),
    ("list.reverse", lambda: ITEMS.reverse(), ["reverse", "'list'"], lambda: P_ITEMS.reverse(),
     lambda: P_ITEMS.copy() == [2, 1, 3]),
    ("list +=", "ITEMS += [4]", ["extend (+=)", "'list'"], "P_ITEMS += [4]",
     lambda: P_ITEMS.copy() == [3, 1, 2, 4]),
    ("list *=", "ITEMS *= 2", ["repeat (*=)", "'list'"], None, None),
    ("dict item assignment", lambda: TABLE.__setitem__("c", 3), ["store key 'c'", "'dict'"],
     lambda: P_TABLE.__setitem__("c", 3), lambda: P_TABLE.copy() == {"a": 1, "b": 2, "c": 3}),
    ("dict del", lambda: TABLE.__delitem__("a"), ["delete key 'a'", "'dict'"],
     lambda: P_TABLE.__delitem__("a"), lambda: P_TABLE.copy() == {"b": 2}),
    ("dict.update", lambda: TABLE.update(z=26), ["'dict'"], lambda: P_TABLE.update(z=26),
     lambda: P_TABLE["z"] == 26),
    ("dict.pop", lambda: TABLE.pop("a"), ["'dict'"], lambda: P_TABLE.pop("a"), lambda: "a" not in P_TABLE),
    ("dict.setdefault", lambda: TABLE.setdefault("n", 0), ["'dict'"], lambda: P_TABLE.setdefault("n", 0),
     lambda: P_TABLE["n"] == 0),
    ("dict.popitem", lambda: TABLE.popitem(), ["'dict'"], lambda: P_TABLE.popitem(),
     lambda: len(P_TABLE) == 1),
    ("dict.clear", lambda: TABLE.clear(), ["clear a 'dict'"], lambda: P_TABLE.clear(),
     lambda: len(P_TABLE) == 0),
    ("dict |=", "TABLE |= {'q': 1}", ["'dict'"], "P_TABLE |= {'q': 1}", lambda: P_TABLE["q"] == 1),
    ("set.add", lambda: TAGS.add("z"), ["add to", "'set'"], lambda: P_TAGS.add("z"),
     lambda: P_TAGS.copy() == {"x", "y", "z"}),
    ("set.discard", lambda: TAGS.discard("x"), ["discard from", "'set'"], lambda: P_TAGS.discard("x"),
     lambda: P_TAGS.copy() == {"y"}),
    ("set.remove", lambda: TAGS.remove("x"), ["remove from", "'set'"], lambda: P_TAGS.remove("x"),
     lambda: P_TAGS.copy() == {"y"}),
    ("set.update", lambda: TAGS.update({"q"}), ["update", "'set'"], None, None),
    ("set |=", "TAGS |= {'q'}", ["update (|=)", "'set'"], "P_TAGS |= {'q'}", lambda: "q" in P_TAGS),
    ("set -=", "TAGS -= {'x'}", ["update (-=)", "'set'"], "P_TAGS -= {'x'}", lambda: "x" not in P_TAGS),
    ("set.clear", lambda: TAGS.clear(), ["clear", "'set'"], lambda: P_TAGS.clear(), lambda: len(P_TAGS) == 0),
    ("bytearray.extend", lambda: BUFFER.extend(b"c"), ["extend", "'bytearray'"],
     lambda: P_BUFFER.set(P_BUFFER.value + b"c"), lambda: P_BUFFER.value == bytearray(b"abc")),
    ("bytearray item", lambda: BUFFER.__setitem__(0, 65), ["'bytearray'"], None, None),
    ("nested list", lambda: NESTED["inner"].append(3), ["append to", "'list'"],
     "inner = P_NESTED['inner']; inner.append(3); P_NESTED['inner'] = inner",
     lambda: P_NESTED["inner"] == [1, 2, 3]),
    ("nested dict", lambda: NESTED["deep"].__setitem__("k", 2), ["store key 'k'", "'dict'"],
     "deep = P_NESTED['deep']; deep['k'] = 2; P_NESTED['deep'] = deep", lambda: P_NESTED["deep"] == {"k": 2}),
    ("list inside a tuple", lambda: NESTED["pair"][0].append(1), ["append to", "'list'"], None, None),
    ("class attribute", lambda: setattr(Config, "level", 2), ["attribute 'level' of class 'Config'"],
     lambda: P_CONFIG.__setitem__("level", 2), lambda: P_CONFIG["level"] == 2),
    ("new class attribute", lambda: setattr(Config, "extra", 1), ["attribute 'extra' of class 'Config'"],
     None, None),
    ("instance attribute", lambda: setattr(CONFIG, "name", "task"), ["attribute 'name' of a 'Config'"],
     lambda: P_CONFIG.__setitem__("name", "task"), lambda: P_CONFIG["name"] == "task"),
    ("instance attribute del", lambda: delattr(CONFIG, "name"), ["delete attribute 'name'"], None, None),
]


def run_write(write):
    if isinstance(write, str):
        exec(write, globals(), {})  # names it binds are the task's own (locals)
    else:
        write()
    return "done"


def caught_write():
    try:
        ITEMS.append(4)
    except parallel.ProtectionError:
        pass
    return "went on"


def read_state():
    return (COUNTER, list(ITEMS), dict(TABLE), set(TAGS), bytes(BUFFER), NESTED["inner"][:],
            dict(NESTED["deep"]), Config.level, getattr(CONFIG, "name", None), hasattr(Config, "extra"))


ORIGINAL = (0, [3, 1, 2], {"a": 1, "b": 2}, {"x", "y"}, b"ab", [1, 2], {"k": 1}, 1, "main", False)


def reset_protected():
    global P_TAGS
    P_COUNTER.value = 0
    P_ITEMS[:] = [3, 1, 2]
    P_TABLE.clear()
    P_TABLE.update({"a": 1, "b": 2})
    P_TAGS.clear()
    P_TAGS |= {"x", "y"}
    P_BUFFER.value = bytearray(b"ab")
    P_NESTED.clear()
    P_NESTED.update({"inner": [1, 2], "deep": {"k": 1}})
    P_CONFIG.clear()
    P_CONFIG.update({"level": 1, "name": "main"})


def make_px_list():
    mine = [1]
    mine.append(2)  # a PX object: the task's own, writable
    return parallel.is_px(mine), parallel.is_py(mine), parallel.is_py(ITEMS), parallel.is_px(ITEMS), mine


def total_length(data, start, stop):
    return sum(len(text) for text in data.value[start:stop])


class WriteTable(unittest.TestCase):
    def test_every_unprotected_write_raises_and_changes_nothing(self):
        for name, write, words, _, _ in TABLE_OF_WRITES:
            with self.subTest(name):
                with self.assertRaises(parallel.ProtectionError) as raised:
                    parallel.submit(run_write, write).result()
                message = str(raised.exception)
                for word in words:
                    self.assertIn(word, message)
                self.assertIn("of the main script from a parallel task", message)
                # Neither the main interpreter's objects nor the workers' copies changed.
                self.assertEqual(read_state(), ORIGINAL)
                for state in parallel.map(lambda _: read_state(), range(4), chunksize=1):
                    self.assertEqual(state, ORIGINAL)

    def test_every_protected_write_succeeds_and_main_sees_it(self):
        for name, _, _, write, check in TABLE_OF_WRITES:
            if write is None:
                continue
            with self.subTest(name):
                reset_protected()
                self.assertEqual(parallel.submit(run_write, write).result(), "done")
                self.assertTrue(check(), f"{name}: the main interpreter does not see the write")

    def test_a_caught_protection_error_still_fails_the_task(self):
        with self.assertRaises(parallel.ProtectionError):
            parallel.submit(caught_write).result()
        self.assertEqual(parallel.submit(read_state).result(), ORIGINAL)

    def test_map_reports_the_first_violation(self):
        with self.assertRaises(parallel.ProtectionError):
            parallel.map(lambda i: ITEMS.append(i), range(10))


class Protect(unittest.TestCase):
    def test_types_and_round_trips(self):
        self.assertIsInstance(parallel.protect([]), parallel.SharedList)
        self.assertIsInstance(parallel.protect({}), parallel.SharedDict)
        self.assertIsInstance(parallel.protect(set()), parallel.SharedSet)
        self.assertIsInstance(parallel.protect(0), parallel.SharedValue)
        shared = parallel.protect([1, "a", (2, 3)])
        self.assertIs(parallel.protect(shared), shared)
        self.assertTrue(parallel.protected(shared))
        self.assertFalse(parallel.protected([1]))
        self.assertEqual(parallel.unprotect(shared), [1, "a", (2, 3)])
        self.assertEqual(parallel.unprotect(parallel.protect(7)), 7)
        self.assertEqual(parallel.unprotect({"plain": 1}), {"plain": 1})

    def test_concurrent_increments_are_atomic(self):
        hits = parallel.protect(0)

        def bump(_):
            nonlocal hits
            for _ in range(200):
                hits += 1

        parallel.map(bump, range(20), chunksize=1)
        self.assertEqual(hits.value, 4000)

    def test_concurrent_appends_are_all_kept(self):
        seen = parallel.protect([])
        parallel.map(lambda i: seen.append(i), range(500), chunksize=10)
        self.assertEqual(sorted(seen.copy()), list(range(500)))

    def test_values_are_copies(self):
        shared = parallel.protect({"inner": [1]})
        inner = shared["inner"]
        inner.append(2)
        self.assertEqual(shared["inner"], [1])

    def test_an_update_cannot_use_its_own_container(self):
        shared = parallel.protect([1])
        with self.assertRaises(RuntimeError):
            shared._update(lambda items: [*items, *[b for b in shared._op("snapshot")]])

    def test_unpicklable_values_are_refused_by_name(self):
        with self.assertRaises(parallel.TransferError):
            parallel.protect([1]).append(threading.Lock())


class Share(unittest.TestCase):
    def test_shared_data_is_read_in_place(self):
        data = parallel.share(tuple(f"line {i}" for i in range(10_000)))
        expected = sum(len(f"line {i}") for i in range(10_000))
        parts = parallel.map(total_length, [data] * 10, range(0, 10_000, 1000), range(1000, 10_001, 1000))
        self.assertEqual(sum(parts), expected)
        self.assertIs(parallel.share(data), data)

    def test_module_level_shares_and_protects_are_the_main_interpreters(self):
        # Workers re-run the script's module level: those calls give back main's objects.
        for word, address in parallel.map(word_and_address, [0, 999], chunksize=1):
            self.assertIn(word, ("word 0", "word 999"))
            self.assertEqual(address, WORDS._address)
        parallel.submit(P_ITEMS.append, "from a task").result()
        self.assertEqual(P_ITEMS[-1], "from a task")
        P_ITEMS.pop()

    def test_share_in_a_task_is_refused(self):
        with self.assertRaises(RuntimeError):
            parallel.submit(parallel.share, (1, 2)).result()

    def test_mutable_data_is_refused_with_its_place(self):
        with self.assertRaises(TypeError) as raised:
            parallel.share((1, (2, [3])))
        self.assertIn("'list' object at [1][1]", str(raised.exception))


class PxPy(unittest.TestCase):
    def test_is_px_and_is_py(self):
        self.assertTrue(parallel.is_py(ITEMS))
        self.assertFalse(parallel.is_px([]))
        px, py, items_py, items_px, mine = parallel.submit(make_px_list).result()
        self.assertEqual((px, py, items_py, items_px, mine), (True, False, True, False, [1, 2]))


if __name__ == "__main__":
    unittest.main()
