#!/usr/bin/env python3.13
"""How honest are `pyhost bench` verdicts? Measures, on this machine, with real processes:

1. A-vs-A: the same engine twice (`-e stock -e stock`). The verdict should be "no significant
   difference" or "inconclusive" in at least 95% of trials (the bar: 40 trials).
2. A 5% slowdown: engine B is the test fixture engine with a fixed busy-wait before the program
   runs, sized to 5% of the program's mean time. The verdict should be "significantly slower"
   or "inconclusive" (the run could not have seen 2%) in at least 95% of trials with 20 runs
   per engine, and never "no significant difference". (The older bar, "significantly slower"
   in 90%, is printed too: on this machine's noise it is out of reach.)

    python3.13 bench/verdict_honesty.py [--pyhost target/release/pyhost] [--trials 40] [--runs 20]

With `--metric instructions` (Valgrind) the same questions are asked of counted runs, with
the bar of issue 17: 5 runs per engine, 20 trials;
1. A-vs-A under stock, and under stackless and parallel on programs that use tasklets and
   parallel.map: "no significant difference" in 20 of 20, every ratio within 0.1% of 1;
2. engine B (the fixture engine running a fixed loop sized to 1% of the program's count):
   "significantly slower" in 20 of 20, every ratio within 0.2% of the true one, which is
   measured separately by running both under Valgrind directly.

    python3.13 bench/verdict_honesty.py --metric instructions [--trials 20] [--runs 5]

`--metric cpu` asks the wall-time questions of CPU time (the busy-wait is CPU time too).

Standard library only. Builds the fixture engine with cargo if needed. Takes a few minutes
(about half an hour counted).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "misbehaving-engine"
FIXTURE_LIB = REPO / "target" / "fixtures" / "debug" / "libpyhost_engine_misbehaving.so"
PROGRAM = "sum(range(2_500_000))"
VERDICT = re.compile(r"→ (no significant difference|significantly slower|significantly faster|inconclusive)")
RATIO = re.compile(r" ratio ([0-9.]+) \[95% CI")

# Programs for counted A-vs-A runs under the other engines: they use what the engine adds.
TASKLETS = ("import stackless\n"
            "ch = stackless.channel()\n"
            "def send(n):\n"
            "    for i in range(n): ch.send(i)\n"
            "def receive(n):\n"
            "    total = 0\n"
            "    for i in range(n): total += ch.receive()\n"
            "stackless.tasklet(send)(20_000); stackless.tasklet(receive)(20_000); stackless.run()\n")
COUNTED = "sum(range(250_000))"
PARALLEL_MAP = "import parallel\nassert parallel.map(abs, range(-2_000, 2_000)) == [abs(i) for i in range(-2_000, 2_000)]\n"


AFFINITY: list[str] = []


def bench(pyhost: Path, engines: list[str], runs: int, env: dict[str, str] | None = None,
          json_out: Path | None = None, extra: list[str] | None = None, program: str = PROGRAM) -> str:
    cmd = [str(pyhost), "bench", "--runs", str(runs), *AFFINITY, *(extra or ["--warmup", "1"])]
    for engine in engines:
        cmd += ["-e", engine]
    if json_out:
        cmd += ["--json", str(json_out)]
    cmd += ["-c", program]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        sys.exit(f"verdict_honesty: `{' '.join(cmd)}` failed ({out.returncode}):\n{out.stderr}")
    return out.stdout


def verdict(stdout: str) -> str:
    found = VERDICT.search(stdout)
    if not found:
        sys.exit(f"verdict_honesty: no verdict in pyhost bench output:\n{stdout}")
    return found.group(1)


def ratio(stdout: str) -> float:
    found = RATIO.search(stdout)
    if not found:
        sys.exit(f"verdict_honesty: no ratio in pyhost bench output:\n{stdout}")
    return float(found.group(1))


def count(pyhost: Path, engine: str, program: str, env: dict[str, str] | None = None) -> int:
    """One run's instructions under cachegrind, run directly (not through pyhost bench)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cachegrind.out"
        subprocess.run(["setarch", "-R", "valgrind", "--tool=cachegrind", "--cache-sim=no", "--quiet",
                        f"--cachegrind-out-file={out}", str(pyhost), "--engine", engine, "-c", program],
                       check=True, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": "0", **(env or {})})
        summary = next(line for line in out.read_text().splitlines() if line.startswith("summary:"))
        return int(summary.split()[1])


def extra_work_case(args: argparse.Namespace, name: str, engine: str, env: dict[str, str], program: str,
                    _expected: None, tolerance: float, wanted: str) -> tuple:
    """The same engine twice, from two copies of its library (paths of equal length); under copy
    B the program runs a Python loop sized to 1% of its count, so B is "an engine that adds 1%
    of work" under that engine. The true ratio is counted directly."""
    library = args.pyhost.parent / f"libpyhost_engine_{engine}.so"
    copies = []
    for side in ("a", "b"):
        folder = Path(tempfile.mkdtemp(prefix="vh-")) / side
        folder.mkdir()
        shutil.copy(library, folder / library.name)
        copies.append(str(folder / library.name))
    loop = "import pyhost\nif '/b/libpyhost' in pyhost.engine_path:\n    for _ in range({n}): pass\n"
    base = count(args.pyhost, copies[0], program + loop.format(n=0))
    per_round = (count(args.pyhost, copies[1], program + loop.format(n=200_000)) - base) / 200_000
    rounds = round(base * 0.01 / per_round)
    sized = program + loop.format(n=rounds)
    true_ratio = (statistics.median(count(args.pyhost, copies[1], sized) for _ in range(3))
                  / statistics.median(count(args.pyhost, copies[0], sized) for _ in range(3)))
    print(f"{name}: {base:,.0f} instructions under {engine}; copy B loops {rounds} times "
          f"({per_round:.1f} instructions each); true ratio {true_ratio:.5f}")
    return (name, copies, env, sized, true_ratio, tolerance, wanted)


def counted(args: argparse.Namespace) -> None:
    """The bar of issue 17 for --metric instructions."""
    extra = ["--metric", "instructions", "--warmup", "0"]
    fixture = str(FIXTURE_LIB)
    base = statistics.median(count(args.pyhost, "stock", COUNTED) for _ in range(3))
    unit = count(args.pyhost, fixture, COUNTED, {"FIXTURE_ENGINE_MODE": "loop-before_run:1000000"})
    plain = count(args.pyhost, fixture, COUNTED)
    per_round = (unit - plain) / 1_000_000
    rounds = round(base * 0.01 / per_round)
    loop_env = {"FIXTURE_ENGINE_MODE": f"loop-before_run:{rounds}"}
    true_ratio = statistics.median(count(args.pyhost, fixture, COUNTED, loop_env) for _ in range(3)) / base
    print(f"program: -c {COUNTED!r}, {base:,.0f} instructions under stock; engine B adds {rounds} loop rounds "
          f"({per_round:.1f} instructions each, {rounds * per_round / base:.2%}); true ratio {true_ratio:.5f}; "
          f"{args.trials} trials of {args.runs} runs per engine each")
    started = time.perf_counter()
    cases = [("stock A-vs-A", ["stock", "stock"], {}, COUNTED, 1.0, 0.001, "no significant difference"),
             ("stackless A-vs-A (tasklets)", ["stackless", "stackless"], {}, TASKLETS, 1.0, 0.001,
              "no significant difference"),
             ("parallel A-vs-A (parallel.map)", ["parallel", "parallel"], {}, PARALLEL_MAP, 1.0, 0.001,
              "no significant difference"),
             ("1% more work", ["stock", fixture], loop_env, COUNTED, true_ratio, 0.002, "significantly slower"),
             ("stackless, 1% more work", "stackless", {}, TASKLETS, None, 0.002, "significantly slower"),
             ("parallel, 1% more work", "parallel", {}, PARALLEL_MAP, None, 0.002, "significantly slower")]
    cases = [case for case in cases if not args.only or any(word in case[0] for word in args.only)]
    cases = [extra_work_case(args, *case) if isinstance(case[1], str) else case for case in cases]
    report = {"program": COUNTED, "base_instructions": base, "loop_rounds": rounds, "true_ratio": true_ratio,
              "trials": args.trials, "runs": args.runs, "cases": {}}
    ok = True
    for name, engines, env, program, expected, tolerance, wanted in cases:
        outcomes = []
        for _ in range(args.trials):
            stdout = bench(args.pyhost, engines, args.runs, env=env, extra=extra, program=program)
            outcomes.append((verdict(stdout), ratio(stdout)))
        hits = sum(v == wanted for v, _ in outcomes)
        worst = max(abs(r - expected) for _, r in outcomes)
        ratios = [r for _, r in outcomes]
        print(f"{name}: '{wanted}' in {hits}/{len(outcomes)}; ratios {min(ratios):.5f}-{max(ratios):.5f}, "
              f"at most {worst:.5f} from {expected:.5f} (bar: {args.trials}/{args.trials}, within {tolerance})")
        ok = ok and hits == len(outcomes) and worst <= tolerance
        report["cases"][name] = {"engines": engines, "wanted": wanted, "hits": hits, "ratios": ratios,
                                 "verdicts": [v for v, _ in outcomes], "expected_ratio": expected}
    print(f"took {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if ok else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyhost", type=Path, default=REPO / "target" / "release" / "pyhost")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--slowdown", type=float, default=0.05, help="fraction added by engine B")
    parser.add_argument("--json", type=Path, help="write the measured rates here")
    parser.add_argument("--affinity", help="pass --affinity CPUS to pyhost bench")
    parser.add_argument("--metric", choices=["wall", "cpu", "instructions"], default="wall")
    parser.add_argument("--only", nargs="+", help="with --metric instructions: only the cases whose name holds "
                        "one of these words (e.g. stackless parallel)")
    args = parser.parse_args()
    if args.affinity:
        AFFINITY[:] = ["--affinity", args.affinity]
    if not args.pyhost.is_file():
        sys.exit(f"verdict_honesty: no pyhost at {args.pyhost}; build it with `cargo build --release`")
    if not FIXTURE_LIB.is_file():
        subprocess.run(["cargo", "build", "--quiet", "--manifest-path", str(FIXTURE / "Cargo.toml"),
                        "--target-dir", str(REPO / "target" / "fixtures")], check=True)
    if args.metric == "instructions":
        if "--trials" not in sys.argv:
            args.trials = 20
        if "--runs" not in sys.argv:
            args.runs = 5
        counted(args)

    with tempfile.TemporaryDirectory() as tmp:
        calibration = Path(tmp) / "calibration.json"
        bench(args.pyhost, ["stock"], 10, json_out=calibration)
        runs = json.loads(calibration.read_text())["benchmarks"][0]["runs"]
        mean = statistics.mean(v for run in runs for v in run.get("values", []))
    busy_ms = mean * args.slowdown * 1e3
    print(f"metric: {args.metric}; program: -c {PROGRAM!r}, mean {mean * 1e3:.1f} ms per process; engine B adds {busy_ms:.2f} ms "
          f"({args.slowdown:.0%}); {args.trials} trials of {args.runs} runs per engine each")

    started = time.perf_counter()
    timed = ["--warmup", "1", "--metric", args.metric]
    same = [verdict(bench(args.pyhost, ["stock", "stock"], args.runs, extra=timed)) for _ in range(args.trials)]
    slow_env = {"FIXTURE_ENGINE_MODE": f"busy-before_run:{busy_ms:.3f}"}
    slower = [verdict(bench(args.pyhost, ["stock", str(FIXTURE_LIB)], args.runs, env=slow_env, extra=timed))
              for _ in range(args.trials)]
    no_difference_rate = same.count("no significant difference") / len(same)
    detection_rate = slower.count("significantly slower") / len(slower)
    # Issue 17's bar: a verdict may say "inconclusive" (it could not have seen the threshold),
    # but must never call the real slowdown "no significant difference".
    honest_same = (same.count("no significant difference") + same.count("inconclusive")) / len(same)
    honest_slower = (slower.count("significantly slower") + slower.count("inconclusive")) / len(slower)
    print(f"A-vs-A: 'no significant difference' in {same.count('no significant difference')}/{len(same)} "
          f"trials = {no_difference_rate:.1%}, 'inconclusive' in {same.count('inconclusive')}; "
          f"together {honest_same:.1%} (bar: >= 95%)")
    print(f"{args.slowdown:.0%} slower: 'significantly slower' in {slower.count('significantly slower')}/{len(slower)} "
          f"trials = {detection_rate:.1%}, 'inconclusive' in {slower.count('inconclusive')}, "
          f"'no significant difference' in {slower.count('no significant difference')}; "
          f"slower or inconclusive {honest_slower:.1%} (bar: >= 95%)")
    print(f"took {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "program": PROGRAM, "mean_seconds": mean, "busy_ms": busy_ms, "trials": args.trials,
            "runs": args.runs, "a_vs_a": same, "slower": slower,
            "no_difference_rate": no_difference_rate, "detection_rate": detection_rate,
            "no_difference_or_inconclusive_rate": honest_same, "slower_or_inconclusive_rate": honest_slower,
        }, indent=2) + "\n")
    ok = honest_same >= 0.95 and honest_slower >= 0.95
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
