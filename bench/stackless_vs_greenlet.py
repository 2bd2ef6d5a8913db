#!/usr/bin/env python3.13
"""Compare pyhost's `stackless` engine with greenlet and asyncio, side by side.

Four measurements, each in fresh child processes:

1. Switch round trip: stackless `schedule()` between the main tasklet and one other tasklet
   that loops on `schedule()` (two schedule() calls per round trip), under
   `pyhost --engine stackless`; versus a greenlet `g.switch()` round trip between the main
   greenlet and one greenlet that loops switching back to its parent, under python3.13.
1b. One switch in a ring of 100: 100 tasklets in the run queue (more than the engine's 8
   shared stacks per thread, so every switch copies one tasklet's stack off and another's
   back); versus 100 greenlets each switching to the next. No target: it shows what stack
   copying costs.
2. Channel ping-pong round trip: `ch.send(x); ch.receive()` from the main tasklet against an
   echo tasklet (`while True: ch.send(ch.receive())`); versus an asyncio.Queue ping-pong
   between two coroutines (two queues, `await put` / `await get`) under python3.13.
3. Many blocked microthreads: N tasklets each blocked in `ch.receive()`
   (`stackless.tasklet(f)()` N times, then `stackless.run()`); versus N greenlets each
   suspended once (switched into, switched back to the parent). Reported: wall time to create
   and start them, and RSS growth per microthread (/proc/self/statm resident pages x page
   size, after minus before). If the stackless side cannot reach N (memory runs out, or an
   older engine whose every tasklet mapped its own C stack hit vm.max_map_count), the failure is
   reported with the count reached, and both sides are also measured at a smaller count that
   works, labelled as such.

Every measurement runs in its own child process, which prints one JSON line. Each one is
repeated (--runs, default 5; 2 with --quick), the two sides of a measurement run back to back
in random order, the measurements in random order within each round; medians are reported,
with the ratio of the medians and the range of the per-round ratios. Loop counts for 1, 1b and 2
are calibrated once per side so that a timed loop takes about --target-seconds (0.3 s).

greenlet comes from PyPI: a venv at target/bench-venv-greenlet is created on first use
(python3.13 -m venv, pip install greenlet==GREENLET_VERSION). The script itself uses only the
standard library. Run with python3.13 from the repository root:

    python3.13 bench/stackless_vs_greenlet.py [--pyhost PATH] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_PYHOST = REPO / "target" / "release" / "pyhost"
PYENV_PYTHON = Path("/root/.pyenv/versions/3.13.0/bin/python3.13")
GREENLET_VENV = REPO / "target" / "bench-venv-greenlet"
GREENLET_VERSION = "3.5.6"  # pinned: the newest release when this script was written

# Targets (printed with the results).
TARGET_SWITCH_GOAL = 0.75     # stackless / greenlet switch round trip time: goal
TARGET_SWITCH_MIN = 1.00      # ... minimum: faster than greenlet
TARGET_CHANNEL_SPEEDUP = 10.0  # asyncio.Queue round trip / stackless channel round trip
TARGET_CREATE_SPEEDUP = 3.0   # greenlet creation time / stackless creation time
TARGET_RSS_RATIO = 1.0        # stackless RSS per tasklet / greenlet RSS per greenlet

PUBLISHED = """\
Published numbers, for scale only (not measured here, other machines and builds):
  real Stackless 3.7.5: switch ~330 ns, channel round trip ~360 ns,
                        100k blocked tasklets 0.63 KB each, created in 0.11 s
  greenlet 3.5.6:       switch ~470 ns, 6.0 KB per suspended greenlet, 100k in 0.8-2.4 s
  asyncio.Queue ping-pong round trip: ~7.3 us"""

RESULT_MARK = "@@RESULT "

# ---------------------------------------------------------------------------
# the child: `<interpreter> -c CHILD MODE [ARG]`; prints one line RESULT_MARK + JSON
# ---------------------------------------------------------------------------

CHILD = r'''
import json, os, sys, time

MARK = "@@RESULT "


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def emit(result):
    result["python"] = sys.version.split()[0]
    result["executable"] = sys.executable
    sys.stdout.write(MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: killing tens of thousands of microthreads at exit is not
    # what is measured, and an endless loop tasklet/greenlet has nothing to clean up.
    os._exit(0)


def timed(run, n):
    c0 = time.process_time()
    t0 = time.perf_counter()
    run(n)
    t1 = time.perf_counter()
    c1 = time.process_time()
    return t1 - t0, c1 - c0


def loop_benchmark(run, n, check):
    """run(k) does k round trips. n == 0: calibrate (double k until a loop takes >= 0.05 s)."""
    run(2000)  # warm-up
    if n == 0:
        k = 2000
        while True:
            wall, cpu = timed(run, k)
            if wall >= 0.05 or k >= 1 << 30:
                break
            k *= 2
        n, mode = k, "calibrate"
    else:
        wall, cpu = timed(run, n)
        mode = "measure"
    check()
    return {"mode": mode, "n": n, "wall": wall, "cpu": cpu,
            "ns_per_op": wall / n * 1e9, "cpu_ns_per_op": cpu / n * 1e9}


def switch_stackless(n):
    import stackless
    schedule = stackless.schedule

    def other():
        while True:
            schedule()

    t = stackless.tasklet(other)()

    def run(k):
        for _ in range(k):
            schedule()

    def check():
        assert t.alive and stackless.getruncount() == 2, "the other tasklet is gone"

    return loop_benchmark(run, n, check)


def switch_greenlet(n):
    import greenlet

    def other():
        parent = greenlet.getcurrent().parent
        while True:
            parent.switch()

    g = greenlet.greenlet(other)
    g.switch()  # start it; it switches straight back

    def run(k):
        switch = g.switch
        for _ in range(k):
            switch()

    def check():
        assert not g.dead, "the greenlet died"

    r = loop_benchmark(run, n, check)
    r["greenlet"] = greenlet.__version__
    return r


RING = 100  # microthreads in the ring measurement (more than the engine's 8 shared stacks)


def per_switch(r):
    """A ring result counts rounds (`ns_per_op`, what calibration scales); add per switch."""
    r["ring"] = RING
    r["ns_per_switch"] = r["ns_per_op"] / RING
    r["cpu_ns_per_switch"] = r["cpu_ns_per_op"] / RING
    return r


def ring_stackless(n):
    """One switch in a ring of RING tasklets (main + RING - 1 that loop on schedule()):
    with more tasklets than shared stacks, every switch copies stacks off and back."""
    import stackless
    schedule = stackless.schedule

    def other():
        while True:
            schedule()

    for _ in range(RING - 1):
        stackless.tasklet(other)()

    def run(k):
        for _ in range(k):
            schedule()  # once around the ring: RING switches

    def check():
        assert stackless.getruncount() == RING, "a ring tasklet is gone"

    return per_switch(loop_benchmark(run, n, check))


def ring_greenlet(n):
    """One switch in a ring of RING greenlets (main + RING - 1, each switching to the next)."""
    import greenlet
    main = greenlet.getcurrent()
    ring = []

    def other(i):
        while True:
            (ring[i + 1] if i + 1 < len(ring) else main).switch()

    ring.extend(greenlet.greenlet(lambda i=i: other(i)) for i in range(RING - 1))
    first = ring[0]
    first.switch()  # starts each in turn; the last switches back to main

    def run(k):
        switch = first.switch
        for _ in range(k):
            switch()  # once around the ring: RING switches

    def check():
        assert all(not g.dead for g in ring), "a ring greenlet died"

    r = per_switch(loop_benchmark(run, n, check))
    r["greenlet"] = greenlet.__version__
    return r


def channel_stackless(n):
    import stackless
    ch = stackless.channel()

    def echo():
        while True:
            ch.send(ch.receive())

    stackless.tasklet(echo)()
    last = [None, None]

    def run(k):
        send, receive = ch.send, ch.receive
        x = None
        for i in range(k):
            send(i)
            x = receive()
        last[0], last[1] = k - 1, x

    def check():
        assert last[0] == last[1], f"echo returned {last[1]!r}, expected {last[0]!r}"

    return loop_benchmark(run, n, check)


def channel_asyncio(n):
    import asyncio
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    q_in, q_out = asyncio.Queue(), asyncio.Queue()

    async def echo():
        while True:
            await q_out.put(await q_in.get())

    task = loop.create_task(echo())
    last = [None, None]

    async def client(k):
        put, get = q_in.put, q_out.get
        x = None
        for i in range(k):
            await put(i)
            x = await get()
        last[0], last[1] = k - 1, x

    def run(k):
        loop.run_until_complete(client(k))

    def check():
        assert not task.done(), "the echo task ended"
        assert last[0] == last[1], f"echo returned {last[1]!r}, expected {last[0]!r}"

    return loop_benchmark(run, n, check)


def many_stackless(n):
    import gc
    import stackless
    ch = stackless.channel()

    def f():
        ch.receive()

    keep = []
    # Warm-up: one tasklet through the same path, so lazy set-up is not counted.
    keep.append(stackless.tasklet(f)())
    stackless.run()
    base = len(keep)
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    error = None
    append, tasklet = keep.append, stackless.tasklet
    try:
        for _ in range(n):
            append(tasklet(f)())
    except MemoryError as e:
        error = f"{type(e).__name__}: {e}"
    t1 = time.perf_counter()
    if error is not None:
        reached = len(keep) - base
        alive_total = len(keep) + 1  # + the main tasklet
        rss1 = rss_bytes()
        # Give the mappings back before doing anything else that may need memory.
        del keep[base:]
        gc.collect()
        return {"mode": "many", "n": n, "failed": True, "error": error,
                "reached": reached, "alive_total": alive_total,
                "create_s": t1 - t0, "rss_growth": rss1 - rss0}
    stackless.run()  # every new tasklet runs until it blocks in ch.receive()
    t2 = time.perf_counter()
    rss1 = rss_bytes()
    assert ch.balance == -len(keep), f"balance {ch.balance}, expected {-len(keep)}"
    assert stackless.getruncount() == 1
    return {"mode": "many", "n": n, "failed": False,
            "create_s": t1 - t0, "start_s": t2 - t1, "total_s": t2 - t0,
            "rss0": rss0, "rss1": rss1, "rss_growth": rss1 - rss0,
            "rss_per_item": (rss1 - rss0) / n}


def many_greenlet(n):
    import greenlet
    main = greenlet.getcurrent()

    def f():
        main.switch()

    keep = []
    g = greenlet.greenlet(f)
    g.switch()
    keep.append(g)
    base = len(keep)
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    append, new = keep.append, greenlet.greenlet
    for _ in range(n):
        append(new(f))
    t1 = time.perf_counter()
    for g in keep[base:]:
        g.switch()  # runs f until it switches back to the parent (main)
    t2 = time.perf_counter()
    rss1 = rss_bytes()
    suspended = sum(1 for g in keep if g and not g.dead)
    assert suspended == len(keep), f"{suspended} suspended greenlets, expected {len(keep)}"
    return {"mode": "many", "n": n, "failed": False,
            "create_s": t1 - t0, "start_s": t2 - t1, "total_s": t2 - t0,
            "rss0": rss0, "rss1": rss1, "rss_growth": rss1 - rss0,
            "rss_per_item": (rss1 - rss0) / n, "greenlet": greenlet.__version__}


def version_greenlet(_n):
    import greenlet
    return {"mode": "version", "greenlet": greenlet.__version__}


MODES = {
    "switch-stackless": switch_stackless, "switch-greenlet": switch_greenlet,
    "ring-stackless": ring_stackless, "ring-greenlet": ring_greenlet,
    "channel-stackless": channel_stackless, "channel-asyncio": channel_asyncio,
    "many-stackless": many_stackless, "many-greenlet": many_greenlet,
    "version-greenlet": version_greenlet,
}

emit(MODES[sys.argv[1]](int(sys.argv[2]) if len(sys.argv) > 2 else 0))
'''


class BenchError(Exception):
    """A fatal problem: a child failed, or a binary is missing."""


# ---------------------------------------------------------------------------
# command line, environment
# ---------------------------------------------------------------------------

def default_python() -> str:
    found = shutil.which("python3.13")
    if found and "/shims/" in found and PYENV_PYTHON.exists():
        return str(PYENV_PYTHON)
    if found:
        return found
    if PYENV_PYTHON.exists():
        return str(PYENV_PYTHON)
    return sys.executable


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="pyhost's stackless engine against greenlet (switch, many suspended "
                    "microthreads) and asyncio.Queue (channel ping-pong).")
    p.add_argument("--pyhost", default=str(DEFAULT_PYHOST),
                   help="pyhost binary with the stackless engine (default: %(default)s)")
    p.add_argument("--python", default=None,
                   help="python3.13 for the asyncio side and for creating the greenlet venv "
                        "(default: python3.13 from PATH or pyenv)")
    p.add_argument("--greenlet-python", default=None, metavar="PATH",
                   help="interpreter that already has greenlet (default: the venv "
                        f"{GREENLET_VENV.relative_to(REPO)}, created when missing)")
    p.add_argument("--runs", type=int, default=None,
                   help="measured runs per side (default 5; 2 with --quick)")
    p.add_argument("--many", type=int, default=None, metavar="N",
                   help="microthreads in measurement 3 (default 100000; 10000 with --quick)")
    p.add_argument("--fallback", type=int, default=20000, metavar="N",
                   help="count that measurement 3 also uses when stackless fails at N "
                        "(default %(default)s; lowered when the failure comes earlier)")
    p.add_argument("--target-seconds", type=float, default=0.3,
                   help="calibrated duration of one timed loop in 1 and 2 (default %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed for the run order")
    p.add_argument("--pin", type=int, default=None, metavar="CPU",
                   help="pin the runner and its children to this CPU")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="timeout per child in seconds (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="smoke check: 2 runs, N = 10000")
    p.add_argument("--json", metavar="FILE", help="also write every raw result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    if args.many is None:
        args.many = 10000 if args.quick else 100000
    if args.python is None:
        args.python = default_python()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    if args.runs < 1 or args.many < 1 or args.fallback < 1:
        p.error("--runs, --many and --fallback must be at least 1")
    return args


def log(args, msg):
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stackless_engine(pyhost):
    """(path, built) of the stackless engine library pyhost finds, or a reason it has none."""
    try:
        r = subprocess.run([pyhost, "engines", "--json"], capture_output=True, text=True,
                           timeout=60)
        for e in json.loads(r.stdout):
            if e.get("name") == "stackless":
                built = _dt.datetime.fromtimestamp(os.stat(e["path"]).st_mtime)
                return e["path"], built.isoformat(sep=" ", timespec="seconds")
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return None, f"`pyhost engines --json` failed: {e}"
    return None, "pyhost lists no stackless engine (cargo build --release)"


def ensure_greenlet(args) -> str:
    """Return an interpreter with greenlet; create the venv (once) when needed."""
    if args.greenlet_python:
        return args.greenlet_python
    vpy = GREENLET_VENV / "bin" / "python"

    def installed():
        if not vpy.exists():
            return None
        r = subprocess.run([str(vpy), "-c", "import greenlet; print(greenlet.__version__)"],
                           capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    have = installed()
    if have == GREENLET_VERSION:
        return str(vpy)
    if not vpy.exists():
        log(args, f"creating venv {GREENLET_VENV} ({args.python} -m venv)")
        r = subprocess.run([args.python, "-m", "venv", str(GREENLET_VENV)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"python -m venv failed:\n{r.stdout}{r.stderr}")
    log(args, f"installing greenlet=={GREENLET_VERSION} into {GREENLET_VENV}"
              + (f" (had {have})" if have else ""))
    r = subprocess.run([str(vpy), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                        f"greenlet=={GREENLET_VERSION}"], capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"pip install greenlet=={GREENLET_VERSION} failed:\n"
                         f"{r.stdout}{r.stderr}")
    have = installed()
    if have != GREENLET_VERSION:
        raise BenchError(f"greenlet {GREENLET_VERSION} expected in {GREENLET_VENV}, got {have}")
    return str(vpy)


# ---------------------------------------------------------------------------
# running children
# ---------------------------------------------------------------------------

class Runner:
    def __init__(self, args, greenlet_python):
        self.args = args
        self.prefix = {
            "stackless": [args.pyhost, "--engine", "stackless"],
            "greenlet": [greenlet_python],
            "asyncio": [args.python],
        }
        self.env = dict(os.environ)
        self.env.pop("PYHOST_ENGINE", None)
        self.env["PYTHONHASHSEED"] = "0"

    def command(self, side, mode, n):
        return [*self.prefix[side], "-c", CHILD, mode, str(n)]

    def run(self, side, mode, n):
        cmd = self.command(side, mode, n)
        shown = shlex.join([*self.prefix[side], "-c", "<child>", mode, str(n)])
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, env=self.env, timeout=self.args.timeout)
        except (FileNotFoundError, PermissionError) as e:
            raise BenchError(f"cannot execute {cmd[0]!r}: {e}") from None
        except subprocess.TimeoutExpired:
            raise BenchError(f"timeout after {self.args.timeout}s: {shown}") from None
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
        if proc.returncode != 0 or not lines:
            err = proc.stderr if len(proc.stderr) < 3000 else "..." + proc.stderr[-3000:]
            raise BenchError(f"{shown} exited with status {proc.returncode} and "
                             f"{'no' if not lines else 'a'} result\n  stderr:\n{err}")
        return json.loads(lines[-1][len(RESULT_MARK):])


def calibrate(runner, args, side, mode):
    r = runner.run(side, mode, 0)
    n = args.target_seconds / (r["ns_per_op"] * 1e-9)
    digits = max(0, len(str(int(n))) - 2)  # two significant digits
    n = max(1000, int(round(n, -digits)))
    log(args, f"  calibrated {mode:18s} {r['ns_per_op']:9.1f} ns/round trip -> {n:,} per run")
    return n


# ---------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------

def run_all(args, runner):
    rng = random.Random(args.seed)
    raw = {"switch": {"stackless": [], "greenlet": []},
           "ring": {"stackless": [], "greenlet": []},
           "channel": {"stackless": [], "asyncio": []},
           "many": {"stackless": [], "greenlet": []},
           "many_fallback": {"stackless": [], "greenlet": []}}
    meta = {}

    log(args, "calibrating loop counts (one child per side, also a warm-up):")
    loops = {
        ("switch", "stackless"): calibrate(runner, args, "stackless", "switch-stackless"),
        ("switch", "greenlet"): calibrate(runner, args, "greenlet", "switch-greenlet"),
        ("ring", "stackless"): calibrate(runner, args, "stackless", "ring-stackless"),
        ("ring", "greenlet"): calibrate(runner, args, "greenlet", "ring-greenlet"),
        ("channel", "stackless"): calibrate(runner, args, "stackless", "channel-stackless"),
        ("channel", "asyncio"): calibrate(runner, args, "asyncio", "channel-asyncio"),
    }
    meta["loops"] = {f"{k[0]}/{k[1]}": v for k, v in loops.items()}

    # Probe measurement 3 once per side at N (not counted): does stackless reach N?
    N = args.many
    log(args, f"probing {N:,} blocked tasklets / suspended greenlets (warm-up, not counted)")
    probe = runner.run("stackless", "many-stackless", N)
    runner.run("greenlet", "many-greenlet", N)
    failures = []
    fallback = None
    if probe["failed"]:
        failures.append(probe)
        fallback = min(args.fallback, N)
        if probe["reached"] < fallback * 1.25:
            fallback = max(1000, int(probe["reached"] * 0.6) // 1000 * 1000)
        log(args, f"  stackless failed at about {probe['alive_total']:,} tasklets "
                  f"({probe['error']}); also measuring both sides at {fallback:,}")
    meta["many_n"] = N
    meta["fallback_n"] = fallback

    stackless_n_failed = probe["failed"]
    for rnd in range(args.runs):
        log(args, f"round {rnd + 1}/{args.runs}")
        blocks = [
            ("switch", [("stackless", "switch-stackless", loops[("switch", "stackless")]),
                        ("greenlet", "switch-greenlet", loops[("switch", "greenlet")])]),
            ("ring", [("stackless", "ring-stackless", loops[("ring", "stackless")]),
                      ("greenlet", "ring-greenlet", loops[("ring", "greenlet")])]),
            ("channel", [("stackless", "channel-stackless", loops[("channel", "stackless")]),
                         ("asyncio", "channel-asyncio", loops[("channel", "asyncio")])]),
        ]
        many_jobs = [("greenlet", "many-greenlet", N)]
        if not stackless_n_failed:
            many_jobs.append(("stackless", "many-stackless", N))
        blocks.append(("many", many_jobs))
        if fallback is not None:
            blocks.append(("many_fallback", [("stackless", "many-stackless", fallback),
                                             ("greenlet", "many-greenlet", fallback)]))
        rng.shuffle(blocks)
        for name, jobs in blocks:
            jobs = list(jobs)
            rng.shuffle(jobs)
            for side, mode, n in jobs:
                r = runner.run(side, mode, n)
                r["round"] = rnd
                if r.get("failed"):
                    failures.append(r)
                    if name == "many":
                        stackless_n_failed = True
                        log(args, f"  {mode} {n:,}: failed at about {r['alive_total']:,}")
                        if fallback is None:
                            fallback = min(args.fallback, max(1000, r["reached"] // 2))
                            meta["fallback_n"] = fallback
                        continue
                    raise BenchError(f"{mode} {n} failed: {r['error']}")
                raw[name][side].append(r)
                if "ns_per_switch" in r:
                    log(args, f"  {mode:18s} {r['ns_per_switch']:9.1f} ns/switch "
                              f"(cpu {r['cpu_ns_per_switch']:.1f})")
                elif "ns_per_op" in r:
                    log(args, f"  {mode:18s} {r['ns_per_op']:9.1f} ns/round trip "
                              f"(cpu {r['cpu_ns_per_op']:.1f})")
                else:
                    log(args, f"  {mode:18s} {n:>7,}: {r['total_s']:.3f} s, "
                              f"{r['rss_per_item'] / 1024:.2f} KB each")
    meta["probe"] = probe
    return raw, failures, meta


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def pair_ratios(a_runs, b_runs, key):
    """Per-round ratios a/b (runs of the same round, both sides present)."""
    b_by_round = {r["round"]: r for r in b_runs}
    out = []
    for r in a_runs:
        other = b_by_round.get(r["round"])
        if other is not None and other[key]:
            out.append(r[key] / other[key])
    return out


def fmt_range(xs, fmt="{:.2f}"):
    if not xs:
        return "n/a"
    return f"[{fmt.format(min(xs))}, {fmt.format(max(xs))}]"


def summarize(raw, failures, meta, args):
    s = {}

    def against_greenlet(block, key):
        """Medians of `key` (and its cpu_ twin) per side, per-round and overall ratios."""
        st, gl = raw[block]["stackless"], raw[block]["greenlet"]
        d = {
            "stackless_ns": med([r[key] for r in st]),
            "greenlet_ns": med([r[key] for r in gl]),
            "stackless_cpu_ns": med([r["cpu_" + key] for r in st]),
            "greenlet_cpu_ns": med([r["cpu_" + key] for r in gl]),
            "pair_ratios": pair_ratios(st, gl, key),
        }
        d["ratio"] = d["stackless_ns"] / d["greenlet_ns"]
        return d

    s["switch"] = against_greenlet("switch", "ns_per_op")
    s["ring"] = against_greenlet("ring", "ns_per_switch")
    ring_runs = raw["ring"]["stackless"] or raw["ring"]["greenlet"]
    s["ring"]["size"] = ring_runs[0]["ring"]
    ch_s, ch_a = raw["channel"]["stackless"], raw["channel"]["asyncio"]
    s["channel"] = {
        "stackless_ns": med([r["ns_per_op"] for r in ch_s]),
        "asyncio_ns": med([r["ns_per_op"] for r in ch_a]),
        "stackless_cpu_ns": med([r["cpu_ns_per_op"] for r in ch_s]),
        "asyncio_cpu_ns": med([r["cpu_ns_per_op"] for r in ch_a]),
        "pair_speedups": pair_ratios(ch_a, ch_s, "ns_per_op"),
    }
    s["channel"]["speedup"] = s["channel"]["asyncio_ns"] / s["channel"]["stackless_ns"]

    def many(block):
        st, gl = raw[block]["stackless"], raw[block]["greenlet"]
        d = {}
        for side, runs in (("stackless", st), ("greenlet", gl)):
            d[side] = None if not runs else {
                "runs": len(runs),
                "total_s": med([r["total_s"] for r in runs]),
                "create_s": med([r["create_s"] for r in runs]),
                "start_s": med([r["start_s"] for r in runs]),
                "rss_per_item_kb": med([r["rss_per_item"] / 1024 for r in runs]),
                "rss_growth_mb": med([r["rss_growth"] / 2**20 for r in runs]),
            }
        if d["stackless"] and d["greenlet"]:
            d["create_speedup"] = d["greenlet"]["total_s"] / d["stackless"]["total_s"]
            d["rss_ratio"] = d["stackless"]["rss_per_item_kb"] / d["greenlet"]["rss_per_item_kb"]
            d["pair_create_speedups"] = pair_ratios(gl, st, "total_s")
            d["pair_rss_ratios"] = pair_ratios(st, gl, "rss_per_item")
        return d

    s["many"] = many("many")
    s["many"]["n"] = meta["many_n"]
    s["many"]["failures"] = [
        {"alive_total": f["alive_total"], "reached": f["reached"], "error": f["error"]}
        for f in failures]
    if meta.get("fallback_n"):
        s["many_fallback"] = many("many_fallback")
        s["many_fallback"]["n"] = meta["fallback_n"]
    return s


def verdict_upper(x, target):
    return "met" if x <= target else "NOT met"


def verdict_lower(x, target):
    return "met" if x >= target else "NOT met"


def report(s, meta, args, header, load_end):
    out = []
    w = out.append
    w(header)
    w("")
    sw = s["switch"]
    w(f"1. Switch round trip (main <-> one other; stackless: 2 schedule() calls per round trip)")
    w(f"   loops per run: stackless {meta['loops']['switch/stackless']:,}, "
      f"greenlet {meta['loops']['switch/greenlet']:,}")
    w(f"   stackless schedule()   {sw['stackless_ns']:8.1f} ns   (cpu {sw['stackless_cpu_ns']:.1f} ns)")
    w(f"   greenlet g.switch()    {sw['greenlet_ns']:8.1f} ns   (cpu {sw['greenlet_cpu_ns']:.1f} ns)")
    w(f"   ratio stackless/greenlet {sw['ratio']:.2f}x   per-round ratios {fmt_range(sw['pair_ratios'])}")
    w(f"   target <= {TARGET_SWITCH_GOAL:.2f}x (goal): {verdict_upper(sw['ratio'], TARGET_SWITCH_GOAL)};"
      f" < {TARGET_SWITCH_MIN:.2f}x, faster than greenlet (minimum): "
      f"{'met' if sw['ratio'] < TARGET_SWITCH_MIN else 'NOT met'}")
    w("")
    rg = s["ring"]
    RING = rg["size"]
    w(f"1b. One switch in a ring of {RING} (stackless: schedule() with {RING} tasklets in the run "
      f"queue,")
    w(f"    more than its 8 shared stacks, so every switch copies stacks off and back; "
      f"greenlet: {RING} greenlets each switching to the next)")
    w(f"   loops per run (rounds of {RING} switches): stackless {meta['loops']['ring/stackless']:,}, "
      f"greenlet {meta['loops']['ring/greenlet']:,}")
    w(f"   stackless schedule()   {rg['stackless_ns']:8.1f} ns   (cpu {rg['stackless_cpu_ns']:.1f} ns)")
    w(f"   greenlet g.switch()    {rg['greenlet_ns']:8.1f} ns   (cpu {rg['greenlet_cpu_ns']:.1f} ns)")
    w(f"   ratio stackless/greenlet {rg['ratio']:.2f}x   per-round ratios {fmt_range(rg['pair_ratios'])}"
      f"   (no target: shows the cost of stack copying)")
    w("")
    ch = s["channel"]
    w("2. Channel ping-pong round trip (stackless send+receive vs echo tasklet; "
      "asyncio: two Queues, two coroutines)")
    w(f"   loops per run: stackless {meta['loops']['channel/stackless']:,}, "
      f"asyncio {meta['loops']['channel/asyncio']:,}")
    w(f"   stackless channel      {ch['stackless_ns']:8.1f} ns   (cpu {ch['stackless_cpu_ns']:.1f} ns)")
    w(f"   asyncio.Queue          {ch['asyncio_ns']:8.1f} ns   (cpu {ch['asyncio_cpu_ns']:.1f} ns)")
    w(f"   speedup asyncio/stackless {ch['speedup']:.2f}x   per-round {fmt_range(ch['pair_speedups'])}")
    w(f"   target >= {TARGET_CHANNEL_SPEEDUP:.0f}x faster than asyncio.Queue: "
      f"{verdict_lower(ch['speedup'], TARGET_CHANNEL_SPEEDUP)}")
    w("")

    def many_block(d, label):
        n = d["n"]
        w(f"   {label}")
        for side, what in (("stackless", "tasklets blocked in ch.receive()"),
                           ("greenlet", "greenlets suspended")):
            x = d[side]
            if x is None:
                continue
            w(f"   {side:9s} {n:>7,} {what:33s} {x['total_s']:7.3f} s "
              f"(create {x['create_s']:.3f} + start {x['start_s']:.3f}), "
              f"{x['total_s'] / n * 1e6:6.2f} us and {x['rss_per_item_kb']:6.2f} KB each "
              f"(RSS +{x['rss_growth_mb']:.1f} MB)")
        if "create_speedup" in d:
            w(f"   creation speedup greenlet/stackless {d['create_speedup']:.2f}x "
              f"(per-round {fmt_range(d['pair_create_speedups'])}); target >= "
              f"{TARGET_CREATE_SPEEDUP:.0f}x: {verdict_lower(d['create_speedup'], TARGET_CREATE_SPEEDUP)}")
            w(f"   RSS per item stackless/greenlet {d['rss_ratio']:.2f}x "
              f"(per-round {fmt_range(d['pair_rss_ratios'])}); target <= greenlet's: "
              f"{verdict_upper(d['rss_ratio'], TARGET_RSS_RATIO)}")

    m = s["many"]
    w(f"3. Many blocked microthreads (creation = create + run until blocked/suspended; "
      f"RSS growth from /proc/self/statm)")
    if m["failures"]:
        f0 = m["failures"][0]
        others = sorted({f["alive_total"] for f in m["failures"]})
        w(f"   stackless at {m['n']:,}: failed at about {f0['alive_total']:,} tasklets: "
          f"{f0['error']}")
        w(f"     ({len(m['failures'])} attempt(s), reached {', '.join(f'{k:,}' for k in others)}"
          f" tasklets incl. main and warm-up; vm.max_map_count = {meta['max_map_count']})")
    many_block(m, f"at N = {m['n']:,}" + (" (greenlet only: stackless failed)"
                                            if m["stackless"] is None else ""))
    if "many_fallback" in s:
        many_block(s["many_fallback"],
                   f"at N = {s['many_fallback']['n']:,}, a count the stackless engine reaches "
                   f"(fallback, because N = {m['n']:,} failed):")
    w("")
    w("Summary (medians; ratio = stackless/other, < 1 means stackless is faster or smaller;"
      " round trip times include the Python for-loop, the same on both sides)")
    rows = [("measurement", "stackless", "other", "ratio", "target", "verdict")]
    rows.append(("switch round trip", f"{sw['stackless_ns']:.0f} ns",
                 f"{sw['greenlet_ns']:.0f} ns (greenlet)", f"{sw['ratio']:.2f}x",
                 f"<= {TARGET_SWITCH_GOAL}x goal / < 1x min",
                 "goal met" if sw["ratio"] <= TARGET_SWITCH_GOAL else
                 ("minimum met" if sw["ratio"] < TARGET_SWITCH_MIN else "NOT met")))
    rows.append((f"switch in a ring of {rg['size']}", f"{rg['stackless_ns']:.0f} ns",
                 f"{rg['greenlet_ns']:.0f} ns (greenlet)", f"{rg['ratio']:.2f}x", "none (informative)",
                 "-"))
    rows.append(("channel round trip", f"{ch['stackless_ns']:.0f} ns",
                 f"{ch['asyncio_ns']:.0f} ns (asyncio.Queue)", f"{1 / ch['speedup']:.2f}x",
                 f">= {TARGET_CHANNEL_SPEEDUP:.0f}x faster ({ch['speedup']:.1f}x)",
                 verdict_lower(ch["speedup"], TARGET_CHANNEL_SPEEDUP)))
    blocks = [(m, "")]
    if "many_fallback" in s:
        blocks.append((s["many_fallback"], " (fallback)"))
    if m["failures"]:
        rows.append((f"{m['n']:,} blocked", f"failed at ~{m['failures'][0]['alive_total']:,}",
                     f"{m['greenlet']['total_s']:.2f} s, {m['greenlet']['rss_per_item_kb']:.2f} KB each",
                     "-", "reach N", "NOT met"))
    for d, tag in blocks:
        if "create_speedup" not in d:
            continue
        n = d["n"]
        rows.append((f"{n:,} blocked: creation{tag}", f"{d['stackless']['total_s']:.3f} s",
                     f"{d['greenlet']['total_s']:.3f} s (greenlet)",
                     f"{1 / d['create_speedup']:.2f}x",
                     f">= {TARGET_CREATE_SPEEDUP:.0f}x faster ({d['create_speedup']:.2f}x)",
                     verdict_lower(d["create_speedup"], TARGET_CREATE_SPEEDUP)))
        rows.append((f"{n:,} blocked: RSS each{tag}", f"{d['stackless']['rss_per_item_kb']:.2f} KB",
                     f"{d['greenlet']['rss_per_item_kb']:.2f} KB (greenlet)",
                     f"{d['rss_ratio']:.2f}x", "<= greenlet's",
                     verdict_upper(d["rss_ratio"], TARGET_RSS_RATIO)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        w("  " + "  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip())
        if i == 0:
            w("  " + "-" * (sum(widths) + 2 * (len(widths) - 1)))
    w("")
    w(f"load average at start: {meta['load_start']}, at end: {load_end} "
      f"({os.cpu_count()} CPUs)")
    w("  (the benchmark itself keeps about one CPU busy, so it adds about 1 to the load)")
    try:
        busy = float(meta["load_start"].split()[0]) > (os.cpu_count() or 1) / 2 \
            or float(load_end.split()[0]) > (os.cpu_count() or 1) / 2 + 1
    except ValueError:
        busy = False
    if busy:
        w("  note: other jobs were running; times are noisy (compare wall with cpu time and "
          "look at the per-round ranges)")
    return "\n".join(out)


def main(argv=None):
    args = parse_args(argv)
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    pyhost = Path(args.pyhost)
    if not pyhost.exists():
        print(f"pyhost binary not found: {pyhost} (cargo build --release)", file=sys.stderr)
        return 2
    load_start = loadavg()
    engine_path, engine_built = stackless_engine(str(pyhost))
    if engine_path is None:
        print(f"stackless_vs_greenlet: {engine_built}", file=sys.stderr)
        return 2
    try:
        greenlet_python = ensure_greenlet(args)
        runner = Runner(args, greenlet_python)
        gv = runner.run("greenlet", "version-greenlet", 0)
        started = time.perf_counter()
        raw, failures, meta = run_all(args, runner)
        elapsed = time.perf_counter() - started
    except BenchError as e:
        print(f"stackless_vs_greenlet: {e}", file=sys.stderr)
        return 1
    meta["load_start"] = load_start
    meta["max_map_count"] = read_int("/proc/sys/vm/max_map_count")
    meta["greenlet"] = gv["greenlet"]
    meta["stackless_engine"] = {"path": engine_path, "built": engine_built}
    meta["greenlet_python"] = greenlet_python
    sl_py = raw["switch"]["stackless"][0]["python"] if raw["switch"]["stackless"] else "?"
    header = "\n".join([
        "pyhost stackless engine vs greenlet / asyncio",
        f"  date {_dt.datetime.now().isoformat(timespec='seconds')}, host {platform.node()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load_start} at start"
        + (f", pinned to CPU {args.pin}" if args.pin is not None else ""),
        f"  stackless: {args.pyhost} --engine stackless (CPython {sl_py}),",
        f"             engine {engine_path}, built {engine_built}",
        f"  greenlet:  greenlet {gv['greenlet']} on {greenlet_python} (CPython {gv['python']})",
        f"  asyncio:   {args.python}",
        f"  {args.runs} run(s) per side, each a fresh process, sides interleaved in random "
        f"order (seed {args.seed}); medians reported; {elapsed:.0f} s",
        "",
        PUBLISHED,
    ])
    load_end = loadavg()
    summary = summarize(raw, failures, meta, args)
    print(report(summary, meta, args, header, load_end))
    if args.json:
        doc = {"meta": {**meta, "args": vars(args), "load_end": load_end,
                        "date": _dt.datetime.now().isoformat(timespec="seconds"),
                        "host": platform.node(), "cpus": os.cpu_count(),
                        "greenlet_version_pinned": GREENLET_VERSION},
               "summary": summary, "raw": raw, "failures": failures}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
