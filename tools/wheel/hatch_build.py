"""Builds pyhost's wheel (hatchling runs this hook; `pip wheel .` and `pip install .` start it).

cargo builds the launcher, the host library and the shipped engines against the Python running
this build (PYO3_PYTHON), so the wheel is for that CPython minor version, with the engines that
load into it. The wheel puts the
launcher in `scripts/` (a venv's `bin/pyhost`), the libraries in `data/lib/pyhost/` (the venv's
`lib/pyhost/`, where the launcher looks for them) and the pyhost-abi crate, as `cargo package`
writes it, in `data/share/pyhost/abi/` (for `pyhost new-engine`).
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tarfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ENGINES = ("stock", "stackless", "parallel")
SUPPORTED = ((3, 12), (3, 13))


class BuildError(Exception):
    pass


def platform_tag():
    """manylinux_X_Y for the glibc this build links against (what it needs at least)."""
    libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    if libc and libc.startswith("glibc "):
        major, minor = libc.split()[1].split(".")[:2]
        return f"manylinux_{major}_{minor}_{platform.machine()}"
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def check_python():
    version = sys.version_info[:2]
    if version not in SUPPORTED:
        raise BuildError(f"pyhost builds for CPython 3.12 and 3.13; this is {sys.version.split()[0]} "
                         f"({sys.executable})")
    if sys.implementation.name != "cpython":
        raise BuildError(f"pyhost embeds CPython; this is {sys.implementation.name}")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise BuildError(f"pyhost embeds CPython's shared library, and {sys.executable} has none "
                         f"(a static build): use a shared build (pyenv: PYTHON_CONFIGURE_OPTS="
                         f"--enable-shared pyenv install {version[0]}.{version[1]}; Debian and "
                         f"Ubuntu: apt install libpython{version[0]}.{version[1]})")


class CargoBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version, build_data):
        if self.target_name != "wheel":
            return
        if version == "editable":
            raise BuildError("pyhost is a compiled program: install it with `pip install .`, "
                             "not in editable mode")
        check_python()
        cargo = shutil.which(os.environ.get("CARGO", "cargo"))
        if cargo is None:
            raise BuildError("building pyhost needs Rust's cargo on PATH (https://rustup.rs)")
        tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
        target = os.path.join(self.root, "target", f"wheel-{tag}")
        env = dict(os.environ, PYO3_PYTHON=sys.executable, CARGO_TARGET_DIR=target)
        packages = ["-p", "pyhost"] + [arg for e in ENGINES for arg in ("-p", f"pyhost-engine-{e}")]
        run([cargo, "build", "--release", "--locked", *packages], self.root, env)
        release = os.path.join(target, "release")

        data = {os.path.join(release, "libpyhost_host.so"): "lib/pyhost/libpyhost_host.so"}
        for path in loadable_engines(release, env):
            data[path] = f"lib/pyhost/engines/{os.path.basename(path)}"
        # File by file: hatchling would skip a folder's files that .gitignore names (target/).
        abi = packaged_abi_crate(cargo, self.root, target, env)
        for folder, _, files in os.walk(abi):
            for name in files:
                path = os.path.join(folder, name)
                data[path] = "share/pyhost/abi/" + os.path.relpath(path, abi).replace(os.sep, "/")
        build_data["shared_scripts"] = {os.path.join(release, "pyhost"): "pyhost"}
        build_data["shared_data"] = data
        build_data["pure_python"] = False
        build_data["tag"] = f"{tag}-{tag}-{platform_tag()}"


def loadable_engines(release, env):
    """The engines the built pyhost loads (`pyhost engines --json`): all three for 3.13; for
    3.12 only stock, as stackless and parallel are built for CPython 3.13's internals."""
    env = {k: v for k, v in env.items() if k not in ("PYHOST_ENGINE", "PYHOST_ENGINE_PATH")}
    result = subprocess.run([os.path.join(release, "pyhost"), "engines", "--json"], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"the pyhost just built does not run: {result.stderr.strip()}")
    engines = [engine for engine in json.loads(result.stdout)
               if engine["status"] == "ok" and engine["name"] in ENGINES
               and os.path.realpath(os.path.dirname(engine["path"])) == os.path.realpath(release)]
    if not any(engine["name"] == "stock" for engine in engines):
        raise BuildError(f"the pyhost just built cannot load its stock engine: {result.stdout}")
    return [engine["path"] for engine in engines]


def packaged_abi_crate(cargo, root, target, env):
    """The pyhost-abi crate as `cargo package` makes it (a Cargo.toml that stands alone, outside
    the workspace), unpacked into a folder."""
    run([cargo, "package", "--no-verify", "--allow-dirty", "--locked", "-p", "pyhost-abi"], root, env)
    package_dir = os.path.join(target, "package")
    crates = sorted(f for f in os.listdir(package_dir) if f.startswith("pyhost-abi-") and f.endswith(".crate"))
    if not crates:
        raise BuildError(f"cargo package wrote no pyhost-abi crate into {package_dir}")
    unpacked = os.path.join(target, "wheel-abi")
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(os.path.join(package_dir, crates[-1])) as archive:
        archive.extractall(unpacked, filter="data")
    (folder,) = os.listdir(unpacked)
    return os.path.join(unpacked, folder)


def run(command, cwd, env):
    print("pyhost wheel:", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=cwd, env=env)
    if result.returncode != 0:
        raise BuildError(f"`{' '.join(command)}` failed with exit status {result.returncode}")
