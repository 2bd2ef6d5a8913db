#!/usr/bin/env python3.13
"""How honest are `pyhost bench` verdicts? Measures, on this machine, with real processes:

1. A-vs-A: the same engine twice (`-e stock -e stock`). The verdict should be "no significant
   difference" in at least 95% of trials (the bar: 40 trials).
2. A 5% slowdown: engine B is the test fixture engine with a fixed busy-wait before the program
   runs, sized to 5% of the program's mean time. The verdict should be "significantly slower"
   with 20 runs per engine in at least 90% of trials.

    python3.13 bench/verdict_honesty.py [--pyhost target/release/pyhost] [--trials 40] [--runs 20]

Standard library only. Builds the fixture engine with cargo if needed. Takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
VERDICT = re.compile(r"→ (no significant difference|significantly slower|significantly faster)")


AFFINITY: list[str] = []


def bench(pyhost: Path, engines: list[str], runs: int, env: dict[str, str] | None = None,
          json_out: Path | None = None) -> str:
    cmd = [str(pyhost), "bench", "--runs", str(runs), "--warmup", "1", *AFFINITY]
    for engine in engines:
        cmd += ["-e", engine]
    if json_out:
        cmd += ["--json", str(json_out)]
    cmd += ["-c", PROGRAM]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        sys.exit(f"verdict_honesty: `{' '.join(cmd)}` failed ({out.returncode}):\n{out.stderr}")
    return out.stdout


def verdict(stdout: str) -> str:
    found = VERDICT.search(stdout)
    if not found:
        sys.exit(f"verdict_honesty: no verdict in pyhost bench output:\n{stdout}")
    return found.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyhost", type=Path, default=REPO / "target" / "release" / "pyhost")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--slowdown", type=float, default=0.05, help="fraction added by engine B")
    parser.add_argument("--json", type=Path, help="write the measured rates here")
    parser.add_argument("--affinity", help="pass --affinity CPUS to pyhost bench")
    args = parser.parse_args()
    if args.affinity:
        AFFINITY[:] = ["--affinity", args.affinity]
    if not args.pyhost.is_file():
        sys.exit(f"verdict_honesty: no pyhost at {args.pyhost}; build it with `cargo build --release`")
    if not FIXTURE_LIB.is_file():
        subprocess.run(["cargo", "build", "--quiet", "--manifest-path", str(FIXTURE / "Cargo.toml"),
                        "--target-dir", str(REPO / "target" / "fixtures")], check=True)

    with tempfile.TemporaryDirectory() as tmp:
        calibration = Path(tmp) / "calibration.json"
        bench(args.pyhost, ["stock"], 10, json_out=calibration)
        runs = json.loads(calibration.read_text())["benchmarks"][0]["runs"]
        mean = statistics.mean(v for run in runs for v in run.get("values", []))
    busy_ms = mean * args.slowdown * 1e3
    print(f"program: -c {PROGRAM!r}, mean {mean * 1e3:.1f} ms per process; engine B adds {busy_ms:.2f} ms "
          f"({args.slowdown:.0%}); {args.trials} trials of {args.runs} runs per engine each")

    started = time.perf_counter()
    same = [verdict(bench(args.pyhost, ["stock", "stock"], args.runs)) for _ in range(args.trials)]
    slow_env = {"FIXTURE_ENGINE_MODE": f"busy-before_run:{busy_ms:.3f}"}
    slower = [verdict(bench(args.pyhost, ["stock", str(FIXTURE_LIB)], args.runs, env=slow_env))
              for _ in range(args.trials)]
    no_difference_rate = same.count("no significant difference") / len(same)
    detection_rate = slower.count("significantly slower") / len(slower)
    print(f"A-vs-A: 'no significant difference' in {same.count('no significant difference')}/{len(same)} "
          f"trials = {no_difference_rate:.1%} (bar: >= 95%)")
    print(f"{args.slowdown:.0%} slower: 'significantly slower' in {slower.count('significantly slower')}/{len(slower)} "
          f"trials = {detection_rate:.1%} (bar: >= 90%)")
    print(f"took {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "program": PROGRAM, "mean_seconds": mean, "busy_ms": busy_ms, "trials": args.trials,
            "runs": args.runs, "a_vs_a": same, "slower": slower,
            "no_difference_rate": no_difference_rate, "detection_rate": detection_rate,
        }, indent=2) + "\n")
    ok = no_difference_rate >= 0.95 and detection_rate >= 0.90
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
