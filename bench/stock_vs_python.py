#!/usr/bin/env python3.13
"""Compare `pyhost --engine stock` against plain `python3.13`.

Measures, interleaved in one session:

* start-up: wall time of `<interp> -c pass`, reported as the difference
  pyhost - python in milliseconds with a 95% bootstrap confidence interval;
* CPU-bound programs (bench/programs/*.py): wall time per run, reported as
  the ratio pyhost / python with a 95% bootstrap confidence interval, plus
  the geometric mean of those ratios (also with a CI).

Runs are taken in pairs (one run of each side); the order inside every
pair is randomised and pairs of different programs are interleaved
round-robin, so slow drifts in machine load hit both sides alike.
Warm-up runs are discarded.  Every run must exit 0 and print exactly the
same stdout as python3.13, otherwise the benchmark aborts.

Only the standard library is used.  Run with python3.13:

    python3.13 bench/stock_vs_python.py                 # full run
    python3.13 bench/stock_vs_python.py --quick         # smoke check
    python3.13 bench/stock_vs_python.py --pyhost "$(which python3.13)" \
        --pyhost-args ''                                # python vs python (A/A test)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import random
import resource
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
DEFAULT_PROGRAMS_DIR = HERE / "programs"
PYENV_PYTHON = Path("/root/.pyenv/versions/3.13.0/bin/python3.13")

# Targets (see README.md).
TARGET_CPU_RATIO = 1.01      # geometric mean of pyhost/python wall-time ratios
TARGET_STARTUP_MS = 5.0      # pyhost - python start-up time, milliseconds

PYHOST = "pyhost"
PYTHON = "python"
SIDES = (PYHOST, PYTHON)


class BenchError(Exception):
    """A fatal problem (bad exit status, differing output, missing binary)."""


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

def default_python() -> str:
    found = shutil.which("python3.13")
    if found:
        # pyenv shims may refuse to run when 3.13 is not the active version;
        # prefer the real binary when it is there.
        if "/shims/" in found and PYENV_PYTHON.exists():
            return str(PYENV_PYTHON)
        return found
    if PYENV_PYTHON.exists():
        return str(PYENV_PYTHON)
    return sys.executable


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark `pyhost --engine stock` against python3.13 "
                    "(start-up time and CPU-bound programs).")
    p.add_argument("--pyhost", default=str(DEFAULT_PYHOST),
                   help="pyhost binary (default: %(default)s)")
    p.add_argument("--pyhost-args", default="--engine stock",
                   help="arguments inserted after the pyhost binary, shell-split "
                        "(default: %(default)r; use '' when --pyhost is a plain python)")
    p.add_argument("--python", default=None,
                   help="reference interpreter (default: python3.13 from PATH or pyenv)")
    p.add_argument("--python-args", default="",
                   help="arguments inserted after the python binary (default: none)")
    p.add_argument("--programs", nargs="+", default=None, metavar="PROG",
                   help="programs to run: names in bench/programs (e.g. nbody) or paths "
                        "(default: every *.py in bench/programs)")
    p.add_argument("--runs", type=int, default=None,
                   help="measured runs per side for each program (default 10; 3 with --quick)")
    p.add_argument("--startup-runs", type=int, default=None,
                   help="measured `-c pass` runs per side (default 40; 10 with --quick)")
    p.add_argument("--warmup", type=int, default=1,
                   help="discarded warm-up runs per side for each program (default 1)")
    p.add_argument("--startup-warmup", type=int, default=3,
                   help="discarded warm-up `-c pass` runs per side (default 3)")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up measurement")
    p.add_argument("--no-programs", action="store_true", help="skip the CPU-bound programs")
    p.add_argument("--stat", choices=("mean", "median", "min"), default="mean",
                   help="statistic of the per-run times whose ratio/difference is the "
                        "headline number (default: mean; bootstrap CIs of median/min are "
                        "rough with few runs)")
    p.add_argument("--bootstrap", type=int, default=None,
                   help="bootstrap resamples for the CIs (default 10000; 2000 with --quick)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for run order and bootstrap (default: random, recorded in --json)")
    p.add_argument("--hashseed", default="0",
                   help="PYTHONHASHSEED given to both sides (default '0'; '' leaves the "
                        "environment alone)")
    p.add_argument("--pin", type=int, default=None, metavar="CPU",
                   help="pin the runner (and hence all children) to this CPU")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="per-run timeout in seconds (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="smoke check: 3 runs per program, 10 start-ups, 2000 bootstrap resamples")
    p.add_argument("--json", metavar="FILE", help="write raw timings and summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output on stderr")
    args = p.parse_args(argv)

    if args.runs is None:
        args.runs = 3 if args.quick else 10
    if args.startup_runs is None:
        args.startup_runs = 10 if args.quick else 40
    if args.bootstrap is None:
        args.bootstrap = 2000 if args.quick else 10000
    if args.python is None:
        args.python = default_python()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    if args.runs < 2 or args.startup_runs < 2:
        p.error("--runs and --startup-runs must be at least 2")
    if args.warmup < 0 or args.startup_warmup < 0:
        p.error("warm-up counts must be >= 0")
    return args


# ---------------------------------------------------------------------------
# running things
# ---------------------------------------------------------------------------

def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Runner:
    def __init__(self, args):
        self.args = args
        self.cmd_prefix = {
            PYHOST: [args.pyhost, *shlex.split(args.pyhost_args)],
            PYTHON: [args.python, *shlex.split(args.python_args)],
        }
        self.env = dict(os.environ)
        if args.hashseed != "":
            self.env["PYTHONHASHSEED"] = args.hashseed
        self.timeout = args.timeout

    def command(self, side, tail):
        return [*self.cmd_prefix[side], *tail]

    def run(self, side, tail):
        """Run once; return (wall seconds, user+sys seconds, stdout, stderr, rc)."""
        cmd = self.command(side, tail)
        cpu0 = children_cpu()
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=self.env, timeout=self.timeout)
        except FileNotFoundError as e:
            raise BenchError(f"cannot execute {cmd[0]!r}: {e}") from None
        except PermissionError as e:
            raise BenchError(f"cannot execute {cmd[0]!r}: {e}") from None
        except subprocess.TimeoutExpired:
            raise BenchError(f"timeout after {self.timeout}s: {shlex.join(cmd)}") from None
        wall = time.perf_counter() - t0
        cpu = children_cpu() - cpu0
        return wall, cpu, proc.stdout, proc.stderr, proc.returncode


def tail_text(b: bytes, n=1500) -> str:
    s = b.decode("utf-8", "replace")
    if not s:
        return "    (empty)"
    return s if len(s) <= n else "..." + s[-n:]


def check_run(side, cmd, rc, out, err, expected_out, what):
    if rc != 0:
        raise BenchError(
            f"{what}: {side} exited with status {rc}\n  command: {shlex.join(cmd)}\n"
            f"  stderr:\n{tail_text(err)}")
    if expected_out is not None and out != expected_out:
        raise BenchError(
            f"{what}: {side} printed different stdout than python\n"
            f"  command: {shlex.join(cmd)}\n"
            f"  expected: {tail_text(expected_out, 400)!r}\n"
            f"  got:      {tail_text(out, 400)!r}\n"
            f"  stderr:\n{tail_text(err)}")


# ---------------------------------------------------------------------------
# statistics (stdlib only)
# ---------------------------------------------------------------------------

def percentile(sorted_xs, q):
    """Linear-interpolated percentile of an already sorted list, q in [0, 1]."""
    if not sorted_xs:
        return float("nan")
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    frac = pos - lo
    return sorted_xs[lo] * (1 - frac) + sorted_xs[hi] * frac


def stat_fn(name):
    return {"mean": statistics.fmean, "median": statistics.median, "min": min}[name]


def paired_bootstrap(a, b, fn, rng, n_boot):
    """Bootstrap distribution of fn(a*, b*) resampling *pairs* (same indices for a and b)."""
    n = len(a)
    idx = range(n)
    out = []
    for _ in range(n_boot):
        ix = rng.choices(idx, k=n)
        out.append(fn([a[i] for i in ix], [b[i] for i in ix]))
    return out


def ci95(dist):
    s = sorted(x for x in dist if not math.isnan(x))
    return percentile(s, 0.025), percentile(s, 0.975)


def describe(xs):
    return {
        "n": len(xs),
        "mean": statistics.fmean(xs),
        "median": statistics.median(xs),
        "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "min": min(xs),
        "max": max(xs),
    }


def verdict_upper(point, lo, hi, target):
    """Classify a quantity that should be <= target."""
    if hi <= target:
        return "PASS"
    if lo > target:
        return "FAIL"
    return "likely pass (CI crosses target)" if point <= target else \
        "likely FAIL (CI crosses target)"


# ---------------------------------------------------------------------------
# measurement phases
# ---------------------------------------------------------------------------

def log(args, msg):
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def measure_pair(runner, tail, rng, expected, what):
    """One run of each side in random order; returns {side: (wall, cpu)}, order, outputs."""
    order = list(SIDES)
    rng.shuffle(order)
    res = {}
    outs = {}
    for side in order:
        wall, cpu, out, err, rc = runner.run(side, tail)
        check_run(side, runner.command(side, tail), rc, out, err,
                  expected, what)
        res[side] = (wall, cpu)
        outs[side] = out
    return res, order, outs


def measure_startup(runner, args, rng):
    tail = ["-c", "pass"]
    log(args, f"start-up: {args.startup_warmup} warm-up + {args.startup_runs} measured pairs "
              f"of `-c pass`")
    raw = {PYHOST: {"wall": [], "cpu": []}, PYTHON: {"wall": [], "cpu": []}, "order": []}
    for i in range(args.startup_warmup + args.startup_runs):
        res, order, _ = measure_pair(runner, tail, rng, b"", "start-up (-c pass)")
        if i < args.startup_warmup:
            continue
        raw["order"].append(order[0])
        for side in SIDES:
            raw[side]["wall"].append(res[side][0])
            raw[side]["cpu"].append(res[side][1])
    return raw


def resolve_programs(args):
    if args.programs is None:
        progs = sorted(DEFAULT_PROGRAMS_DIR.glob("*.py"))
        if not progs:
            raise BenchError(f"no programs found in {DEFAULT_PROGRAMS_DIR}")
        return progs
    out = []
    for name in args.programs:
        cands = [Path(name), DEFAULT_PROGRAMS_DIR / name, DEFAULT_PROGRAMS_DIR / f"{name}.py"]
        for c in cands:
            if c.is_file():
                out.append(c.resolve())
                break
        else:
            avail = ", ".join(p.stem for p in sorted(DEFAULT_PROGRAMS_DIR.glob("*.py")))
            raise BenchError(f"unknown program {name!r} (available: {avail})")
    return out


def measure_programs(runner, args, rng, programs):
    raw = {}
    expected = {}
    names = [p.stem for p in programs]
    if len(set(names)) != len(names):
        raise BenchError("program names must be unique")
    # Reference output from python (this run is an extra warm-up), then warm-ups.
    for prog in programs:
        name = prog.stem
        tail = [str(prog)]
        wall, cpu, out, err, rc = runner.run(PYTHON, tail)
        check_run(PYTHON, runner.command(PYTHON, tail), rc, out, err, None, name)
        if not out.strip():
            raise BenchError(f"{name}: python printed nothing; programs must print a checksum")
        expected[name] = out
        for _ in range(args.warmup):
            measure_pair(runner, tail, rng, out, f"{name} (warm-up)")
        log(args, f"  {name:16s} python {wall:6.3f}s  output: {out.decode().strip()[:70]}")
        raw[name] = {"path": str(prog), "stdout": out.decode("utf-8", "replace"),
                     PYHOST: {"wall": [], "cpu": []}, PYTHON: {"wall": [], "cpu": []},
                     "order": []}
    # Measured rounds: round-robin over programs (shuffled each round),
    # randomised side order inside each pair.
    for r in range(args.runs):
        order_progs = list(programs)
        rng.shuffle(order_progs)
        t_round = time.perf_counter()
        for prog in order_progs:
            name = prog.stem
            res, order, _ = measure_pair(runner, [str(prog)], rng, expected[name], name)
            raw[name]["order"].append(order[0])
            for side in SIDES:
                raw[name][side]["wall"].append(res[side][0])
                raw[name][side]["cpu"].append(res[side][1])
        log(args, f"  round {r + 1}/{args.runs} done ({time.perf_counter() - t_round:.1f}s)")
    return raw


# ---------------------------------------------------------------------------
# analysis
# ---------------------------------------------------------------------------

def analyse_startup(raw, args, rng):
    a = [x * 1000 for x in raw[PYHOST]["wall"]]
    b = [x * 1000 for x in raw[PYTHON]["wall"]]
    fn = stat_fn(args.stat)
    diff_mean = statistics.fmean(a) - statistics.fmean(b)
    diff_median = statistics.median(a) - statistics.median(b)
    diff_min = min(a) - min(b)
    dist = paired_bootstrap(a, b, lambda x, y: fn(x) - fn(y), rng, args.bootstrap)
    lo, hi = ci95(dist)
    point = fn(a) - fn(b)
    ca = [x * 1000 for x in raw[PYHOST]["cpu"]]
    cb = [x * 1000 for x in raw[PYTHON]["cpu"]]
    return {
        "unit": "ms",
        PYHOST: describe(a), PYTHON: describe(b),
        "cpu_ms": {PYHOST: describe(ca), PYTHON: describe(cb)},
        "diff_mean_ms": diff_mean, "diff_median_ms": diff_median, "diff_min_ms": diff_min,
        "stat": args.stat, "diff_ms": point, "ci95_ms": [lo, hi],
        "target_ms": TARGET_STARTUP_MS,
        "verdict": verdict_upper(point, lo, hi, TARGET_STARTUP_MS),
    }


def ratio_fn(fn):
    def f(x, y):
        d = fn(y)
        return fn(x) / d if d > 0 else float("nan")
    return f


def analyse_programs(raw, args, rng):
    fn = stat_fn(args.stat)
    rf = ratio_fn(fn)
    res = {}
    boot = {}
    for name, d in raw.items():
        a, b = d[PYHOST]["wall"], d[PYTHON]["wall"]
        ca, cb = d[PYHOST]["cpu"], d[PYTHON]["cpu"]
        dist = paired_bootstrap(a, b, rf, rng, args.bootstrap)
        boot[name] = dist
        lo, hi = ci95(dist)
        cdist = paired_bootstrap(ca, cb, rf, rng, args.bootstrap)
        clo, chi = ci95(cdist)
        res[name] = {
            PYHOST: describe(a), PYTHON: describe(b),
            "cpu": {PYHOST: describe(ca), PYTHON: describe(cb)},
            "ratio_mean": statistics.fmean(a) / statistics.fmean(b),
            "ratio_median": statistics.median(a) / statistics.median(b),
            "ratio_min": min(a) / min(b),
            "ratio": rf(a, b), "ci95": [lo, hi],
            "cpu_ratio": rf(ca, cb), "cpu_ci95": [clo, chi],
        }
    names = list(res)
    if not names:
        return res, None
    # Geometric mean of the per-program ratios; CI from the joint bootstrap
    # (the i-th resample of every program combined).
    def geo(xs):
        xs = [x for x in xs if x > 0 and not math.isnan(x)]
        return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else float("nan")
    g = geo([res[n]["ratio"] for n in names])
    gdist = [geo([boot[n][i] for n in names]) for i in range(args.bootstrap)]
    glo, ghi = ci95(gdist)
    gc = geo([res[n]["cpu_ratio"] for n in names])
    summary = {
        "stat": args.stat, "geomean_ratio": g, "ci95": [glo, ghi],
        "geomean_cpu_ratio": gc,
        "target_ratio": TARGET_CPU_RATIO,
        "verdict": verdict_upper(g, glo, ghi, TARGET_CPU_RATIO),
    }
    return res, summary


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------

def fmt_ci(lo, hi, spec):
    return f"[{format(lo, spec)}, {format(hi, spec)}]"


def report(meta, startup, programs, summary, args):
    w = print
    w()
    w("=" * 115)
    w("pyhost (stock engine) vs python3.13")
    w("=" * 115)
    w(f"pyhost : {meta['commands'][PYHOST]}")
    w(f"python : {meta['commands'][PYTHON]}")
    w(f"host   : {meta['platform']}, {meta['cpu_count']} CPUs, load avg at start "
      f"{meta['loadavg_start']}, at end {meta['loadavg_end']}")
    w(f"runs   : {args.runs} measured pairs per program (+{args.warmup} warm-up), "
      f"{args.startup_runs} start-up pairs (+{args.startup_warmup} warm-up), "
      f"seed {args.seed}, {args.bootstrap} bootstrap resamples, statistic: {args.stat}")
    w(f"targets: CPU-bound geomean ratio <= {TARGET_CPU_RATIO:.2f}, "
      f"start-up overhead <= {TARGET_STARTUP_MS:.0f} ms")

    if startup is not None:
        w()
        w("Start-up (`-c pass`, wall time per process, ms)")
        w(f"  {'':8s} {'mean':>8s} {'median':>8s} {'stdev':>8s} {'min':>8s} {'cpu mean':>9s}")
        for side in (PYTHON, PYHOST):
            s = startup[side]
            w(f"  {side:8s} {s['mean']:8.2f} {s['median']:8.2f} {s['stdev']:8.2f} "
              f"{s['min']:8.2f} {startup['cpu_ms'][side]['mean']:9.2f}")
        w(f"  difference pyhost - python ({startup['stat']}): {startup['diff_ms']:+.2f} ms  "
          f"95% CI {fmt_ci(*startup['ci95_ms'], '+.2f')} ms   "
          f"(mean {startup['diff_mean_ms']:+.2f}, median {startup['diff_median_ms']:+.2f}, "
          f"min {startup['diff_min_ms']:+.2f})")
        w(f"  target <= {TARGET_STARTUP_MS:.0f} ms: {startup['verdict']}")

    if programs:
        w()
        w(f"CPU-bound programs (wall time per run, {args.stat} in seconds; "
          f"ratio = pyhost/python of the {args.stat}s;")
        w("  r(mean)/r(med)/r(min): ratio of means/medians/minima; cpu = user+sys time; "
          "cv = stdev/mean)")
        hdr = (f"  {'program':15s} {'python':>7s} {'pyhost':>7s} {'ratio':>6s} "
               f"{'95% CI':>15s} {'r(mean)':>7s} {'r(med)':>6s} {'r(min)':>6s} "
               f"{'cpu ratio':>9s} {'cpu 95% CI':>15s} {'cv% py/ph':>10s}")
        w(hdr)
        w("  " + "-" * (len(hdr) - 2))
        for name, r in programs.items():
            py, ph = r[PYTHON], r[PYHOST]
            cv_py = 100 * py["stdev"] / py["mean"]
            cv_ph = 100 * ph["stdev"] / ph["mean"]
            w(f"  {name:15s} {py[args.stat]:7.3f} {ph[args.stat]:7.3f} {r['ratio']:6.3f} "
              f"{fmt_ci(*r['ci95'], '.3f'):>15s} {r['ratio_mean']:7.3f} "
              f"{r['ratio_median']:6.3f} {r['ratio_min']:6.3f} "
              f"{r['cpu_ratio']:9.3f} {fmt_ci(*r['cpu_ci95'], '.3f'):>15s} "
              f"{cv_py:5.1f}/{cv_ph:<4.1f}")
        w("  " + "-" * (len(hdr) - 2))
        w(f"  {'geomean':15s} {'':7s} {'':7s} {summary['geomean_ratio']:6.3f} "
          f"{fmt_ci(*summary['ci95'], '.3f'):>15s} {'':7s} {'':6s} {'':6s} "
          f"{summary['geomean_cpu_ratio']:9.3f}")
        w(f"  target geomean ratio <= {TARGET_CPU_RATIO:.2f}: {summary['verdict']}")
    la, n = meta.get("loadavg_start"), meta.get("cpu_count") or 1
    if la and max(la[0], (meta.get("loadavg_end") or [0])[0]) > 0.5 * n:
        w()
        w(f"WARNING: the machine was busy (1-min load average up to "
          f"{max(la[0], (meta.get('loadavg_end') or [0])[0]):.2f} on {n} CPUs); other processes")
        w("         inflate and scatter the timings.  Expect wide CIs; use more --runs or a")
        w("         quieter machine, and run the python-vs-python A/A check (see README).")
    if args.runs < 10 or (startup is not None and args.startup_runs < 20):
        w()
        w("NOTE: few runs -- bootstrap CIs from so few samples are too narrow and unreliable;")
        w("      treat this as a smoke check, not a measurement.")
    w()
    w("Reading: ratio > 1 means pyhost is slower.  A CI that contains 1.00 (or 0 ms) means no")
    w("difference was detected at this noise level; re-run with more --runs to narrow it.")


# ---------------------------------------------------------------------------

def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def interpreter_version(runner, side):
    try:
        wall, cpu, out, err, rc = runner.run(side, ["-c", "import sys; print(sys.version)"])
    except BenchError as e:
        return f"<error: {e}>"
    return (out or err).decode("utf-8", "replace").strip() if rc == 0 else f"<exit {rc}>"


def main(argv=None):
    args = parse_args(argv)
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    pyhost = Path(args.pyhost)
    if not (pyhost.is_file() and os.access(pyhost, os.X_OK)) and not shutil.which(args.pyhost):
        print(f"error: pyhost binary not found or not executable: {args.pyhost}\n"
              f"       build it (cargo build --release) or pass --pyhost PATH",
              file=sys.stderr)
        return 2
    runner = Runner(args)
    rng = random.Random(args.seed)
    meta = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv,
        "commands": {s: shlex.join(runner.cmd_prefix[s]) for s in SIDES},
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "runner_python": sys.version,
        "loadavg_start": loadavg(),
        "seed": args.seed,
        "runs": args.runs, "warmup": args.warmup,
        "startup_runs": args.startup_runs, "startup_warmup": args.startup_warmup,
        "bootstrap": args.bootstrap, "stat": args.stat,
        "hashseed": args.hashseed,
        "targets": {"cpu_ratio": TARGET_CPU_RATIO, "startup_ms": TARGET_STARTUP_MS},
    }
    try:
        meta["versions"] = {s: interpreter_version(runner, s) for s in SIDES}
        log(args, f"pyhost: {meta['commands'][PYHOST]}  ({meta['versions'][PYHOST]})")
        log(args, f"python: {meta['commands'][PYTHON]}  ({meta['versions'][PYTHON]})")
        programs = [] if args.no_programs else resolve_programs(args)
        raw_startup = None if args.no_startup else measure_startup(runner, args, rng)
        raw_programs = {}
        if programs:
            log(args, f"programs: {len(programs)} x ({args.warmup} warm-up + {args.runs} "
                      f"measured) pairs")
            raw_programs = measure_programs(runner, args, rng, programs)
    except BenchError as e:
        print(f"\nBENCHMARK ABORTED: {e}", file=sys.stderr)
        return 1
    meta["loadavg_end"] = loadavg()

    brng = random.Random(args.seed + 1)
    startup = analyse_startup(raw_startup, args, brng) if raw_startup else None
    prog_res, summary = analyse_programs(raw_programs, args, brng) if raw_programs else ({}, None)
    report(meta, startup, prog_res, summary, args)

    if args.json:
        doc = {"meta": meta,
               "raw": {"startup": raw_startup, "programs": raw_programs},
               "results": {"startup": startup, "programs": prog_res, "summary": summary}}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
