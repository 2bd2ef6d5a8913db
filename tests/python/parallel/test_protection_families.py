"""PX/PY beyond dicts, lists and the script's classes, table-driven: every family of objects
the main script can hold at module level (standard-library containers, buffers, data holders,
instances with __slots__, iterators, random generators, in-memory streams, locks and queues)
is either refused with parallel.ProtectionError naming the operation and the type, the
script's state left unchanged in main and in every worker, or readable as in main.

Run: `pyhost --engine parallel tests/python/parallel/test_protection_families.py`.
"""

import argparse
import array
import collections
import copy
import dataclasses
import decimal
import enum
import functools
import heapq  # noqa: F401  (used by the writes below)
import io
import ipaddress
import itertools
import logging
import os
import pickle
import queue
import random
import re
import socket
import struct  # noqa: F401  (used by the writes below)
import tempfile
import threading
import time
import types
import unittest

import parallel

# ----- PY state of the script, one object per family -----

C = collections.Counter("aab")
OD = collections.OrderedDict(a=1, b=2)
DD = collections.defaultdict(list, a=[1])
DQ = collections.deque([1, 2, 3])
AR = array.array("i", [1, 2, 3])
BA = bytearray(b"abcd")
NS = types.SimpleNamespace(a=1, items=[1])
ARGS = argparse.Namespace(verbose=False, files=["x"])
CM = collections.ChainMap({"k": 1}, {"z": 2})
UD = collections.UserDict(a=1)
UL = collections.UserList([1, 2])
MP = types.MappingProxyType({"inner": [1]})
PAIR = collections.namedtuple("Pair", "items count")([1], 2)


class Slotted:
    __slots__ = ("v", "__hidden")

    def __init__(self, v):
        self.v = v
        self.__hidden = [v]

    def hidden(self):
        return self.__hidden


SL = Slotted(1)


class Stack(list):
    def push(self, item):
        self.append(item)


STACK = Stack([1])


class Money:
    def __init__(self, amount):
        self.amount = amount

    @functools.cached_property
    def cents(self):
        return self.amount * 100


MONEY = Money(3)


@dataclasses.dataclass
class Item:
    name: str
    tags: list


ITEM = Item("pen", ["blue"])


class Color(enum.Enum):
    RED = 1


@functools.lru_cache(maxsize=None)
def square(n):
    return n * n


CNT = itertools.count()
GEN = (i for i in range(10))
IT = iter([1, 2, 3])
RNG = random.Random(1)
BUF = io.BytesIO(b"data")
SBUF = io.StringIO("text\nmore\n")
LOCK = threading.Lock()
RLOCK = threading.RLock()
SEM = threading.Semaphore()
BSEM = threading.BoundedSemaphore()
EVENT = threading.Event()
COND = threading.Condition()
BARRIER = threading.Barrier(1)
Q = queue.Queue()
SQ = queue.SimpleQueue()
LQ = queue.LifoQueue()
PQ = queue.PriorityQueue()
LOCKS = [threading.Lock()]
CHANNELS = {"jobs": queue.Queue()}
LOCK_AND_COUNT = (threading.Lock(), itertools.count())  # inside a tuple
NAMED = collections.namedtuple("Named", "lock items")(threading.RLock(), iter([1, 2]))


class Holder:
    __slots__ = ("lock", "numbers")

    def __init__(self):
        self.lock, self.numbers = threading.Lock(), iter(range(3))


HOLDER = Holder()  # a lock and an iterator in slots

# Files: "a", as every worker opens the file again when it imports the script.
LOG_PATH = os.path.join(tempfile.gettempdir(), f"pyhost-px-families-{os.getpid()}.log")
LOG = open(LOG_PATH, "a")
FILES = {"null": open(os.devnull, "a")}
LINES_PATH = os.path.join(tempfile.gettempdir(), f"pyhost-px-families-{os.getpid()}.txt")
if not os.path.exists(LINES_PATH):  # main makes it; the workers open it again
    with open(LINES_PATH, "w") as lines:
        lines.write("a\nb\nc\nd\n")
LINES = open(LINES_PATH)
SENDER, RECEIVER = socket.socketpair()  # a socket, as a file
COUNT = parallel.protect(0)


class Registry:
    lock = threading.Lock()
LOGGER = logging.getLogger("px-families-test")
LOGGER.addHandler(logging.NullHandler())
LOGGER.propagate = False
PATTERN = re.compile(r"(\d+)")
NET = ipaddress.ip_network("10.0.0.0/24")
PRICE = decimal.Decimal("1.10")
HEAP = [1, 3, 2]
TAGS = {1, 2}
# Mutators bound to the script's objects at import, before any guard could see them.
APPEND_TO_HEAP = HEAP.append
PUSH_ONTO_HEAP = functools.partial(heapq.heappush, HEAP)
APPEND_TO_DQ = DQ.appendleft


def state():
    """Everything the writes below could change, as plain values."""
    return (dict(C), list(OD.items()), {k: list(v) for k, v in DD.items()}, DD.default_factory,
            list(DQ), AR.tolist(), bytes(BA), vars(NS).copy(), vars(ARGS).copy(), CM.maps,
            dict(UD), list(UL), dict(MP), list(PAIR.items), SL.v, SL.hidden(), list(STACK),
            BUF.getvalue(), BUF.tell(), SBUF.getvalue(), SBUF.tell(), RNG.getstate(),
            LOGGER.level, vars(MONEY).get("amount"), ITEM.tags, list(HEAP), TAGS.copy())


ORIGINAL = state()

# (name, write, words the message must contain). Each runs alone in a task.
WRITES = [
    ("Counter +=", "C['k'] += 1", ["store key 'k' into a 'Counter'"]),
    ("Counter item", "C['a'] = 5", ["'Counter'"]),
    ("Counter.update", "C.update('xy')", ["'Counter'"]),
    ("Counter.subtract", "C.subtract('a')", ["'Counter'"]),
    ("Counter del", "del C['a']", ["delete key 'a' of a 'Counter'"]),
    ("Counter.clear", "C.clear()", ["clear a 'Counter'"]),
    ("OrderedDict item", "OD['k'] = 1", ["store key 'k' into an 'OrderedDict'"]),
    ("OrderedDict.move_to_end", "OD.move_to_end('a')", ["reorder an 'OrderedDict'"]),
    ("OrderedDict.popitem", "OD.popitem()", ["'OrderedDict'"]),
    ("OrderedDict.pop", "OD.pop('a')", ["'OrderedDict'"]),
    ("OrderedDict.setdefault", "OD.setdefault('n', 0)", ["'OrderedDict'"]),
    ("OrderedDict.update", "OD.update(z=1)", ["'OrderedDict'"]),
    ("defaultdict missing key", "DD['k'].append(1)", ["store key 'k' into a 'defaultdict'"]),
    ("defaultdict read of a missing key", "DD['missing']", ["'defaultdict'"]),
    ("defaultdict factory", "DD.default_factory = int", ["set attribute 'default_factory' of a 'defaultdict'"]),
    ("defaultdict value", "DD['a'].append(2)", ["append to a 'list'"]),
    ("deque.append", "DQ.append(4)", ["append to a 'deque'"]),
    ("deque.appendleft", "DQ.appendleft(0)", ["append to a 'deque'"]),
    ("deque.extend", "DQ.extend([4])", ["extend a 'deque'"]),
    ("deque.extendleft", "DQ.extendleft([0])", ["extend a 'deque'"]),
    ("deque.pop", "DQ.pop()", ["pop from a 'deque'"]),
    ("deque.popleft", "DQ.popleft()", ["pop from a 'deque'"]),
    ("deque.remove", "DQ.remove(2)", ["remove from a 'deque'"]),
    ("deque.rotate", "DQ.rotate(1)", ["rotate a 'deque'"]),
    ("deque.clear", "DQ.clear()", ["clear a 'deque'"]),
    ("deque.insert", "DQ.insert(0, 9)", ["insert into a 'deque'"]),
    ("deque.reverse", "DQ.reverse()", ["reverse a 'deque'"]),
    ("deque item", "DQ[0] = 9", ["assign an item or slice of a 'deque'"]),
    ("deque del", "del DQ[0]", ["delete an item or slice of a 'deque'"]),
    ("deque +=", "DQ += [4]", ["extend (+=) a 'deque'"]),
    ("deque *=", "DQ *= 2", ["repeat (*=) a 'deque'"]),
    ("array.append", "AR.append(4)", ["append to an 'array'"]),
    ("array.extend", "AR.extend([4])", ["extend an 'array'"]),
    ("array.insert", "AR.insert(0, 9)", ["insert into an 'array'"]),
    ("array.pop", "AR.pop()", ["pop from an 'array'"]),
    ("array.remove", "AR.remove(2)", ["remove from an 'array'"]),
    ("array.reverse", "AR.reverse()", ["reverse an 'array'"]),
    ("array.byteswap", "AR.byteswap()", ["byteswap an 'array'"]),
    ("array.frombytes", "AR.frombytes(bytes(4))", ["extend an 'array'"]),
    ("array.fromlist", "AR.fromlist([5])", ["extend an 'array'"]),
    ("array item", "AR[0] = 9", ["assign an item or slice of an 'array'"]),
    ("array del", "del AR[0]", ["delete an item or slice of an 'array'"]),
    ("array +=", "AR += array.array('i', [4])", ["extend (+=) an 'array'"]),
    ("array *=", "AR *= 2", ["repeat (*=) an 'array'"]),
    ("bytearray struct.pack_into", "struct.pack_into('i', BA, 0, 7)", ["write through the buffer of a 'bytearray'"]),
    ("bytearray readinto", "io.BytesIO(b'zz').readinto(BA)", ["write through the buffer of a 'bytearray'"]),
    ("array struct.pack_into", "struct.pack_into('i', AR, 0, 7)", ["write through the buffer of an 'array'"]),
    ("SimpleNamespace attribute", "NS.a = 2", ["set attribute 'a' of a 'SimpleNamespace' object"]),
    ("SimpleNamespace new attribute", "NS.new = 1", ["set attribute 'new' of a 'SimpleNamespace' object"]),
    ("SimpleNamespace del", "del NS.a", ["delete attribute 'a' of a 'SimpleNamespace' object"]),
    ("SimpleNamespace vars()", "vars(NS)['a'] = 3", ["'SimpleNamespace'"]),
    ("SimpleNamespace nested list", "NS.items.append(2)", ["append to a 'list'"]),
    ("argparse.Namespace attribute", "ARGS.verbose = True", ["set attribute 'verbose' of a 'Namespace' object"]),
    ("argparse.Namespace list", "ARGS.files.append('y')", ["append to a 'list'"]),
    ("ChainMap item", "CM['k'] = 5", ["store key 'k' into a 'dict'"]),
    ("ChainMap maps", "CM.maps.append({})", ["append to a 'list'"]),
    ("UserDict item", "UD['b'] = 2", ["store key 'b' into a 'dict'"]),
    ("UserList.append", "UL.append(3)", ["append to a 'list'"]),
    ("mappingproxy nested list", "MP['inner'].append(2)", ["append to a 'list'"]),
    ("named tuple nested list", "PAIR.items.append(1)", ["append to a 'list'"]),
    ("slot attribute", "SL.v = 5", ["set attribute 'v' of a 'Slotted' object"]),
    ("slot del", "del SL.v", ["delete attribute 'v' of a 'Slotted' object"]),
    ("slot setattr()", "setattr(SL, 'v', 6)", ["set attribute 'v' of a 'Slotted' object"]),
    ("list in a private slot", "SL.hidden().append(2)", ["append to a 'list'"]),
    ("list subclass method", "STACK.push(2)", ["append to a 'list'"]),
    ("list subclass append", "STACK.append(2)", ["append to a 'list'"]),
    ("dataclass list field", "ITEM.tags.append('red')", ["append to a 'list'"]),
    ("itertools.count", "next(CNT)", ["advance a 'count'"]),
    ("generator next", "next(GEN)", ["advance a 'generator'"]),
    ("generator list()", "list(GEN)", ["advance a 'generator'"]),
    ("generator send", "GEN.send(None)", ["advance a 'generator'", "'send'"]),
    ("list iterator", "next(IT)", ["advance a 'list_iterator'"]),
    ("Random.random", "RNG.random()", ["draw from a 'Random'"]),
    ("Random.randint", "RNG.randint(1, 6)", ["draw from a 'Random'"]),
    ("Random.shuffle", "RNG.shuffle([1, 2, 3])", ["draw from a 'Random'"]),
    ("Random.choice", "RNG.choice('ab')", ["draw from a 'Random'"]),
    ("Random.gauss", "RNG.gauss()", ["draw from a 'Random'"]),
    ("Random.seed", "RNG.seed(2)", ["seed a 'Random'"]),
    ("BytesIO.write", "BUF.write(b'x')", ["write to a 'BytesIO'"]),
    ("BytesIO.seek", "BUF.seek(2)", ["seek in a 'BytesIO'"]),
    ("BytesIO.read", "BUF.read()", ["read from a 'BytesIO'"]),
    ("BytesIO.truncate", "BUF.truncate(0)", ["truncate a 'BytesIO'"]),
    ("BytesIO.getbuffer", "BUF.getbuffer()", ["export the buffer of a 'BytesIO'"]),
    ("BytesIO with", "with BUF: pass", ["close a 'BytesIO'"]),
    ("StringIO.write", "SBUF.write('x')", ["write to a 'StringIO'"]),
    ("StringIO.readline", "SBUF.readline()", ["read from a 'StringIO'"]),
    ("StringIO iteration", "next(iter(SBUF))", ["read from a 'StringIO'"]),
    ("lock inside a list", "LOCKS[0].acquire()", ["use a 'lock'", "module-level name"]),
    ("queue inside a dict", "CHANNELS['jobs'].put(1)", ["use a 'Queue'", "module-level name"]),
    ("lock inside a tuple", "LOCK_AND_COUNT[0].acquire()", ["use a 'lock'", "module-level name"]),
    ("iterator inside a tuple", "next(LOCK_AND_COUNT[1])", ["advance a 'count'"]),
    ("RLock inside a named tuple", "NAMED.lock.acquire()", ["use a 'RLock'", "inside another object"]),
    ("iterator inside a named tuple", "next(NAMED.items)", ["advance a 'list_iterator'"]),
    ("lock in a slot", "HOLDER.lock.acquire()", ["use a 'lock'", "inside another object"]),
    ("file inside a dict", "FILES['null'].write('x')", ["use a 'TextIOWrapper'", "file or socket"]),
    ("iterator in a slot", "next(HOLDER.numbers)", ["advance a 'range_iterator'"]),
    ("Logger.setLevel", "LOGGER.setLevel(10)", ["set attribute 'level' of a 'Logger' object"]),
    ("class of another library: attribute", "NET.extra = 1", ["set attribute 'extra' of an 'IPv4Network' object"]),
    # The script's object passed explicitly to a mutator (its read-only type is not asked).
    ("heapq.heappush", "heapq.heappush(HEAP, 0)", ["push onto a 'list' through heapq.heappush()"]),
    ("heapq.heappop", "heapq.heappop(HEAP)", ["pop from a 'list' through heapq.heappop()"]),
    ("heapq.heapify", "heapq.heapify(HEAP)", ["heapify a 'list' through heapq.heapify()"]),
    ("heapq.heapreplace", "heapq.heapreplace(HEAP, 5)", ["through heapq.heapreplace()"]),
    ("heapq.heappushpop", "heapq.heappushpop(HEAP, 5)", ["through heapq.heappushpop()"]),
    ("from heapq import heappush", "from heapq import heappush; heappush(HEAP, 0)", ["through heapq.heappush()"]),
    ("list.append through the base type", "list.append(HEAP, 4)", ["append to a 'list' through list.append()"]),
    ("list.__setitem__ through the base type", "list.__setitem__(HEAP, 0, 9)", ["through list.__setitem__()"]),
    ("list.sort through the base type", "list.sort(HEAP)", ["sort a 'list' through list.sort()"]),
    ("list.extend held in a variable", "extend = list.extend; extend(HEAP, [4])", ["through list.extend()"]),
    ("list.clear through getattr", "getattr(list, 'clear')(HEAP)", ["through list.clear()"]),
    ("set.add through the base type", "set.add(TAGS, 3)", ["add to a 'set' through set.add()"]),
    ("deque.append through the base type", "collections.deque.append(DQ, 4)", ["through deque.append()"]),
    ("array.append through the base type", "array.array.append(AR, 4)", ["through array.append()"]),
    ("bytearray.extend through the base type", "bytearray.extend(BA, b'x')", ["through bytearray.extend()"]),
    ("OrderedDict.move_to_end through the base type", "collections.OrderedDict.move_to_end(OD, 'a')",
     ["reorder an 'OrderedDict' through OrderedDict.move_to_end()"]),
    # ...by C code, by a call site that called something harmless first, bound at import.
    ("map(list.append, ...)", "list(map(list.append, [HEAP], [4]))", ["append to a 'list' through list.append()"]),
    ("functools.partial of list.append", "functools.partial(list.append, HEAP)(4)", ["through list.append()"]),
    ("sorted() of a key that mutates", "sorted([1], key=lambda _: HEAP.clear())", ["clear a 'list'"]),
    ("a call site that called len() first", "[f(HEAP) for f in (len, list.clear)]", ["clear a 'list' through list.clear()"]),
    ("a method bound at import", "APPEND_TO_HEAP(4)", ["append to a 'list' through list.append()"]),
    ("a deque method bound at import", "APPEND_TO_DQ(0)", ["append to a 'deque' through deque.appendleft()"]),
    ("a functools.partial of heapq made at import", "PUSH_ONTO_HEAP(0)", ["push onto a 'list' through heapq.heappush()"]),
    ("set.update through map", "list(map(set.update, [TAGS], [[7]]))", ["update a 'set' through set.update()"]),
    ("bytearray.__iadd__ through the base type", "bytearray.__iadd__(BA, b'x')", ["extend (+=) a 'bytearray'"]),
    ("list.__imul__ through the base type", "list.__imul__(HEAP, 2)", ["repeat (*=) a 'list' through list.__imul__()"]),
    ("list.__delitem__ through the base type", "list.__delitem__(HEAP, 0)", ["delete an item or slice of a 'list'"]),
    ("deque.__setitem__ through the base type", "collections.deque.__setitem__(DQ, 0, 9)", ["through deque.__setitem__()"]),
    ("set.__ior__ through the base type", "set.__ior__(TAGS, {7})", ["update (|=) a 'set' through set.__ior__()"]),
    ("BytesIO.write through the base type", "io.BytesIO.write(BUF, b'x')", ["write to a 'BytesIO' through BytesIO.write()"]),
    ("BytesIO.__next__ through the base type", "io.BytesIO.__next__(BUF)", ["read from a 'BytesIO'"]),
    ("Random.random through the C base", "random.Random.random(RNG)", ["draw from a 'Random'"]),
    ("Random.seed through the base type", "random.Random.seed(RNG, 5)", ["seed a 'Random'"]),
    ("object.__setattr__ on a slot", "object.__setattr__(SL, 'v', 5)", ["through object.__setattr__()"]),
    ("object.__delattr__ on a slot", "object.__delattr__(SL, 'v')", ["through object.__delattr__()"]),
]

# Refused by CPython itself, as for a view of bytes: a read-only view.
READ_ONLY_VIEWS = [
    ("memoryview of a bytearray", "memoryview(BA)[0] = 9"),
    ("memoryview of an array", "memoryview(AR)[0] = 9"),
]

# (name, expression): each gives in a task what it gives in main.
READS = [
    ("len(deque)", "len(DQ)"), ("deque item", "DQ[0]"), ("deque iteration", "list(DQ)"),
    ("deque.count", "DQ.count(1)"), ("deque.index", "DQ.index(2)"), ("deque sum", "sum(DQ)"),
    ("Counter iteration", "[key for key in C]"), ("Counter.most_common", "C.most_common(1)"),
    ("Counter missing key", "C['zz']"), ("Counter total", "C.total()"),
    ("OrderedDict item", "OD['a']"), ("OrderedDict order", "list(OD)"),
    ("defaultdict item", "DD['a']"), ("defaultdict.get", "DD.get('nope')"),
    ("array items", "AR.tolist()"), ("array item", "AR[0]"), ("bytes(array)", "bytes(AR)"),
    ("bytes(bytearray)", "bytes(BA)"), ("bytearray.hex", "BA.hex()"), ("bytearray.find", "BA.find(b'c')"),
    ("memoryview read", "memoryview(BA).tobytes()"), ("struct.unpack_from", "struct.unpack_from('i', BA)"),
    ("SimpleNamespace attribute", "NS.a"), ("argparse.Namespace", "ARGS.files[0]"),
    ("ChainMap lookup", "CM['z']"), ("UserDict item", "UD['a']"), ("UserList item", "UL[0]"),
    ("mappingproxy", "MP['inner'][0]"), ("named tuple", "PAIR.count"), ("slot", "SL.v"),
    ("private slot", "SL.hidden()[0]"), ("list subclass", "len(STACK)"),
    ("Random.getstate", "RNG.getstate()[1][0]"), ("BytesIO.getvalue", "BUF.getvalue()"),
    ("StringIO.getvalue", "SBUF.getvalue()"), ("generator repr", "repr(GEN)[:10]"),
    ("logging through a module-level logger", "LOGGER.info('hello') or LOGGER.isEnabledFor(10)"),
    ("compiled regex", "PATTERN.match('42').group(1)"), ("lru_cache function", "square(12)"),
    ("dataclass field", "ITEM.name"), ("enum member", "Color.RED.value"),
    ("heapq.nsmallest of a global list", "heapq.nsmallest(2, HEAP)"), ("list.count through the base type", "list.count(HEAP, 1)"),
    ("Decimal arithmetic", "str(PRICE * 3)"),
    ("cached_property of another library", "str(NET.broadcast_address)"),
    ("cached_property of the script", "MONEY.cents"),
    ("copy of a deque", "copy.copy(DQ)"), ("pickle of an OrderedDict", "pickle.loads(pickle.dumps(OD))"),
]


def run_write(code):
    exec(code, globals(), {})
    return "done"


def evaluate(expression):
    return eval(expression, globals(), {})


def copies_are_plain_and_writable():
    mine = DQ.copy()
    mine.append(4)
    added = DQ + collections.deque([5])
    added.append(6)
    ordered = OD.copy()
    ordered.move_to_end("a")
    return list(mine), list(added), list(ordered)


def guard_report():
    import _parallel_guard
    return list(_parallel_guard.unguarded)


class Writes(unittest.TestCase):
    def test_every_write_is_refused_by_name_and_changes_nothing(self):
        self.assertGreaterEqual(len(WRITES), 60)
        for name, write, words in WRITES:
            with self.subTest(name):
                with self.assertRaises(parallel.ProtectionError) as raised:
                    parallel.submit(run_write, write).result()
                message = str(raised.exception)
                for word in words:
                    self.assertIn(word, message)
                self.assertIn("of the main script from a parallel task", message)
                self.assertIn("parallel.protect()", message)
                self.assertEqual(state(), ORIGINAL)
        for view in parallel.map(lambda _: state(), range(4), chunksize=1):
            self.assertEqual(view, ORIGINAL)

    def test_views_of_buffers_are_read_only(self):
        for name, write in READ_ONLY_VIEWS:
            with self.subTest(name):
                with self.assertRaisesRegex(TypeError, "read-only"):
                    parallel.submit(run_write, write).result()
        self.assertEqual(parallel.submit(state).result(), ORIGINAL)

    def test_the_same_writes_work_in_main(self):
        # Nothing is refused outside tasks: the main interpreter owns its state.
        mine = collections.deque(DQ)
        mine.append(4)
        self.assertEqual(list(mine), [1, 2, 3, 4])
        self.assertFalse(parallel.is_px(DQ))


def locked_increments(_):
    for _ in range(20):
        with LOCK:
            value = COUNT.value
            time.sleep(0.0002)  # another worker would come in here without the lock
            COUNT.value = value + 1


def reentrant():
    with RLOCK:
        with RLOCK:
            return RLOCK._is_owned()


def put_from_task(item):
    Q.put(item)
    SQ.put(item)


def meet_at_barrier(_):
    return BARRIER2.wait(10)


def wait_for_condition():
    with COND:
        return COND.wait(10)


BARRIER2 = threading.Barrier(2)


class SharedWithMain(unittest.TestCase):
    """Module-level locks, conditions, events, semaphores, barriers and queues are the main
    interpreter's own objects in every task."""

    def test_a_module_level_lock_excludes_every_worker(self):
        COUNT.value = 0
        parallel.map(locked_increments, range(4), chunksize=1)
        self.assertEqual(COUNT.value, 80)  # 40 of 80 were lost before, each worker with its own lock

    def test_an_rlock_is_reentrant_in_a_task(self):
        self.assertEqual(parallel.map(lambda _: reentrant(), range(2), chunksize=1), [True, True])
        self.assertFalse(RLOCK._is_owned())

    def test_what_tasks_put_main_gets_and_the_other_way(self):
        parallel.map(put_from_task, range(10), chunksize=1)
        self.assertEqual(sorted(Q.get_nowait() for _ in range(10)), list(range(10)))
        self.assertEqual(sorted(SQ.get_nowait() for _ in range(10)), list(range(10)))
        for item in (3, 1, 2):
            PQ.put(item)
            LQ.put(item)
        self.assertEqual(parallel.submit(lambda: [PQ.get() for _ in range(3)]).result(), [1, 2, 3])
        self.assertEqual(parallel.submit(lambda: [LQ.get() for _ in range(3)]).result(), [2, 1, 3])
        self.assertEqual(parallel.submit(lambda: (Q.qsize(), Q.maxsize, Q.empty())).result(), (0, 0, True))

    def test_errors_of_main_objects_reach_the_task(self):
        with self.assertRaises(queue.Empty):
            parallel.submit(lambda: Q.get(timeout=0.01)).result()
        with self.assertRaisesRegex(ValueError, "released too many times"):
            parallel.submit(lambda: BSEM.release()).result()
        with self.assertRaises(parallel.TransferError):
            parallel.submit(lambda: Q.put(threading.Lock())).result()
        self.assertTrue(Q.empty())

    def test_events_and_conditions_wake_tasks(self):
        EVENT.clear()
        waiting = parallel.submit(lambda: EVENT.wait(10))
        time.sleep(0.1)
        EVENT.set()
        self.assertTrue(waiting.result())
        parallel.submit(lambda: EVENT.clear()).result()
        self.assertFalse(EVENT.is_set())
        waiting = parallel.submit(wait_for_condition)
        deadline = time.monotonic() + 10
        while not waiting.done() and time.monotonic() < deadline:
            with COND:
                COND.notify_all()  # until the task has come to wait and is woken
            time.sleep(0.01)
        self.assertTrue(waiting.result(timeout=1))

    def test_a_barrier_meets_two_tasks_in_two_workers(self):
        self.assertEqual(sorted(parallel.map(meet_at_barrier, range(2), chunksize=1)), [0, 1])

    def test_class_attribute_locks_and_semaphores(self):
        self.assertTrue(parallel.submit(lambda: Registry.lock.acquire(timeout=5)).result())
        self.assertTrue(Registry.lock.locked())  # the task's acquire holds main's lock
        Registry.lock.release()
        self.assertEqual(parallel.submit(lambda: (SEM.acquire(), SEM.release())).result(), (True, None))

    def test_a_module_level_file_is_main_s_file(self):
        # Each write is one call on main's file (two tasks' print()s interleave as two
        # threads' would: text and end are two writes).
        parallel.map(lambda n: LOG.write(f"line {n}\n"), range(6), chunksize=1)
        LOG.write("from main\n")
        LOG.flush()  # one file object: the tasks' lines are in its buffer, before main's
        with open(LOG_PATH) as written:
            lines = written.read().splitlines()
        self.assertEqual(sorted(lines[:6]), [f"line {n}" for n in range(6)])
        self.assertEqual(lines[6:], ["from main"])
        self.assertEqual(parallel.submit(lambda: (LOG.name, LOG.closed, LOG.mode)).result(), (LOG_PATH, False, "a"))
        # Reading: one position for main and every task.
        self.assertEqual(parallel.submit(lambda: next(LINES)).result(), "a\n")
        self.assertEqual(parallel.submit(lambda: LINES.readline()).result(), "b\n")
        self.assertEqual(LINES.readline(), "c\n")
        self.assertEqual(parallel.submit(lambda: [line for line in LINES]).result(), ["d\n"])

    def test_a_module_level_socket_is_main_s_socket(self):
        self.assertEqual(sum(parallel.map(lambda n: SENDER.send(b"%d" % n), range(5), chunksize=1)), 5)
        RECEIVER.settimeout(5)
        received = b""
        while len(received) < 5:
            received += RECEIVER.recv(16)
        self.assertEqual(sorted(received), sorted(b"01234"))
        self.assertEqual(parallel.submit(lambda: SENDER.family).result(), SENDER.family)

    def test_a_main_lock_cannot_be_sent(self):
        with self.assertRaises((parallel.TransferError, parallel.ProtectionError)):
            parallel.submit(lambda: LOCK).result()


class Reads(unittest.TestCase):
    def test_every_read_gives_what_it_gives_in_main(self):
        expressions = [expression for _, expression in READS]
        expected = [evaluate(expression) for expression in expressions]
        got = parallel.map(evaluate, expressions, chunksize=1)
        for (name, _), want, have in zip(READS, expected, got):
            with self.subTest(name):
                self.assertEqual(have, want)
        self.assertEqual(parallel.submit(state).result(), ORIGINAL)

    def test_results_and_copies_are_plain_objects(self):
        for obj in (DQ, OD, AR, BA, C, DD):
            with self.subTest(type(obj).__name__):
                back = parallel.submit(copy.copy, obj).result()
                self.assertIs(type(back), type(obj))
                self.assertEqual(back, obj)
        self.assertEqual(parallel.submit(copies_are_plain_and_writable).result(),
                         ([1, 2, 3, 4], [1, 2, 3, 5, 6], ["b", "a"]))

    def test_nothing_reachable_was_left_unguarded(self):
        self.assertEqual(parallel.submit(guard_report).result(), [])

    def test_the_objects_a_task_sees_are_py(self):
        self.assertEqual(parallel.map(lambda name: parallel.is_py(globals()[name]), ["DQ", "C", "SL", "LOCK"]),
                         [True] * 4)


if __name__ == "__main__":
    try:
        unittest.main()
    finally:
        LOG.close()
        LINES.close()
        FILES["null"].close()
        SENDER.close()
        RECEIVER.close()
        for path in (LOG_PATH, LINES_PATH):
            os.remove(path)
