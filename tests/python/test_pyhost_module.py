"""The built-in `pyhost` module, as Python code sees it. Run under every engine by
host/tests/python_scripts.rs (`pyhost --engine NAME tests/python/test_pyhost_module.py`)."""

import os
import subprocess
import sys
import unittest

import pyhost


class PyhostModuleTest(unittest.TestCase):
    def test_engine_identity_is_filled_in(self):
        self.assertRegex(pyhost.engine, r"^[a-z0-9_-]+$")
        self.assertRegex(pyhost.engine_version, r"^\d+\.\d+\.\d+")
        self.assertTrue(pyhost.engine_description)
        if pyhost.engine_path is None:  # only stock may be built into pyhost
            self.assertEqual(pyhost.engine, "stock")
        else:
            self.assertTrue(os.path.isfile(pyhost.engine_path), pyhost.engine_path)
        self.assertRegex(pyhost.engine_python, r"^(abi3|cp3\d+)$")
        self.assertRegex(pyhost.abi_version, r"^\d+\.\d+\.\d+$")
        self.assertRegex(pyhost.host_version, r"^\d+\.\d+\.\d+$")

    def test_running_engine_is_among_the_discovered_ones(self):
        engines = pyhost.engines()
        self.assertIsInstance(engines, list)
        self.assertIn("stock", engines)
        self.assertEqual(engines, sorted(engines))

    def test_engine_statistics_is_a_dict_of_floats(self):
        stats = pyhost.engine_statistics()
        self.assertIsInstance(stats, dict)
        for name, value in stats.items():
            self.assertIsInstance(name, str)
            self.assertIsInstance(value, float)

    def test_engine_environment_is_exported_for_children(self):
        self.assertEqual(os.environ["PYHOST_ENGINE"], pyhost.engine_path or pyhost.engine)
        child = subprocess.run(
            [sys.executable, "-c", "import pyhost; print(pyhost.engine, pyhost.engine_path)"],
            capture_output=True, text=True, check=True,
        )
        self.assertEqual(child.stdout.split(), [pyhost.engine, str(pyhost.engine_path)])

    def test_module_imports_in_a_subinterpreter(self):
        try:
            import _interpreters
        except ImportError:
            self.skipTest("no _interpreters module")
        interp = _interpreters.create()
        try:
            result = _interpreters.run_string(interp, "import pyhost; assert pyhost.engine")
            self.assertIsNone(result)
        finally:
            _interpreters.destroy(interp)


if __name__ == "__main__":
    unittest.main()
