"""A worker imports every standard-library module that a plain own-GIL sub-interpreter of
the same CPython imports, the C `_datetime` included (the main interpreter holds it first,
see parallel.py's _main_holds_datetime), so zoneinfo and the datetime C API work in tasks,
and dates cross between main and workers as the same C classes.

Run: `pyhost --engine parallel tests/python/parallel/test_stdlib_in_workers.py`.
"""

import datetime
import json
import os
import sys
import tempfile
import unittest

import parallel

# Modules whose import does something visible (opens a browser, prints).
SIDE_EFFECTS = {"antigravity", "this", "__hello__", "__phello__", "idlelib", "turtledemo"}


def candidates():
    return sorted(name for name in sys.stdlib_module_names
                  if name not in SIDE_EFFECTS and not name.startswith("test") and not name.startswith("_test"))


IMPORT_ALL = """
import importlib, json, sys
imported = []
for name in {names!r}:
    try:
        importlib.import_module(name)
    except BaseException:
        continue
    imported.append(name)
"""


def import_all(names):
    namespace = {}
    exec(IMPORT_ALL.format(names=names), namespace)
    return namespace["imported"]


def imported_by_a_plain_subinterpreter(names):
    import _interpreters
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "imported.json")
        interp = _interpreters.create()  # own GIL, isolated: the default config
        try:
            code = IMPORT_ALL.format(names=names) + f"\nwith open({path!r}, 'w') as out: json.dump(imported, out)\n"
            failure = _interpreters.exec(interp, code)
            if failure is not None:
                raise RuntimeError(f"the sub-interpreter failed: {failure}")
        finally:
            _interpreters.destroy(interp)
        with open(path) as source:
            return json.load(source)


def zones(_):
    import _datetime
    import zoneinfo
    paris = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    return (datetime.datetime is _datetime.datetime, paris.utcoffset(), paris,
            paris.astimezone(datetime.timezone.utc))


class StandardLibrary(unittest.TestCase):
    def test_a_worker_imports_what_a_plain_subinterpreter_imports(self):
        names = candidates()
        plain = set(imported_by_a_plain_subinterpreter(names))
        in_worker = set(parallel.submit(import_all, names).result())
        self.assertGreater(len(plain), 200)
        self.assertEqual(sorted(plain - in_worker), [])
        self.assertIn("_datetime", in_worker)
        self.assertIn("zoneinfo", in_worker)

    def test_zoneinfo_and_the_c_datetime_in_tasks(self):
        for is_c, offset, paris, utc in parallel.map(zones, range(4), chunksize=1):
            self.assertTrue(is_c)
            self.assertEqual(offset, datetime.timedelta(hours=2))
            self.assertIs(type(paris), datetime.datetime)
            self.assertEqual(utc, datetime.datetime(2024, 7, 1, 10, tzinfo=datetime.timezone.utc))

    def test_dates_cross_both_ways(self):
        when = datetime.datetime(2020, 2, 29, 23, 59, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
        back = parallel.submit(lambda value: value + datetime.timedelta(minutes=1), when).result()
        self.assertEqual(back, datetime.datetime(2020, 3, 1, 0, 0, tzinfo=when.tzinfo))
        self.assertIs(type(back.tzinfo), datetime.timezone)


if __name__ == "__main__":
    unittest.main()
