#!/usr/bin/env python3.13
"""Compare pyhost's `parallel` engine with sequential code, multiprocessing, ProcessPoolExecutor
and threads, side by side, at three task sizes; and the submit() round trip.

Every measurement is a fresh child process running bench/parallel_workloads.py:

    sequential       pyhost --engine stock     [fn(x) for x in items]
    bare             python3.13                no pool: 2 forked processes take chunks of the
                                               items from a pipe; nothing pickled, nothing
                                               collected: what this machine allows this minute
    parallel         pyhost --engine parallel  parallel.map(fn, items)  (automatic chunks)
    multiprocessing  python3.13                multiprocessing.Pool(2).map(fn, items)
    processpool      python3.13                ProcessPoolExecutor(2).map(fn, items, chunksize=...)
    threads          python3.13                ThreadPoolExecutor(2).map(fn, items)

Sizes: 200,000 trivial tasks; 4,000 tasks of ~0.1 ms; 8 tasks of ~0.1 s. With the trivial
size, a profile of parallel.map: the main thread's CPU time and its time in each engine call,
the workers' CPU time (parallel_workloads.py `profile-trivial`). Also: the RSS that the
workers add when each reads a whole 100 MB `share()`d dataset. The pools are started
and warmed up before the timed map call (start-up is reported apart). Rounds run every
(size, contender) pair in a new random order; medians over --runs rounds are reported, with
speed-ups over sequential, the ratio to multiprocessing and the share of bare's speed reached.
`--sizes large` (comma-separated) runs only those sizes, without submit and share.

    python3.13 bench/parallel_vs_multiprocessing.py [--pyhost PATH] [--runs 5] [--json FILE]

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKLOADS = HERE / "parallel_workloads.py"
SIZES = ["trivial", "small", "large"]
CONTENDERS = ["sequential", "bare", "parallel", "multiprocessing", "processpool", "threads"]
SUBMIT_CONTENDERS = ["parallel", "multiprocessing", "processpool"]
# Targets (issue 18): ratios of medians, and for the trivial size against multiprocessing,
# in every round.
TARGET_TRIVIAL_VS_MP = 2.0
TARGET_TRIVIAL_OF_LOOP = 0.7  # parallel's speed as a share of the plain loop's
TARGET_SMALL_VS_MP = 1.1
TARGET_LARGE_OF_BARE = 0.97
TARGET_LARGE_SPEEDUP = 1.85  # an earlier target, kept for reference
TARGET_SUBMIT_SECONDS = 10e-6
TARGET_SHARE_FRACTION = 0.05


def command(contender: str, pyhost: Path, python: str) -> list[str]:
    if contender == "sequential":
        return [str(pyhost), "--engine", "stock"]
    if contender == "parallel":
        return [str(pyhost), "--engine", "parallel"]
    return [python]


def measure(contender: str, size: str, pyhost: Path, python: str) -> dict:
    cmd = command(contender, pyhost, python) + [str(WORKLOADS), contender, size]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("@@RESULT "):
            return json.loads(line[len("@@RESULT "):])
    sys.exit(f"`{' '.join(cmd)}` failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyhost", type=Path, default=REPO / "target" / "release" / "pyhost")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the peers")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--sizes", default=",".join(SIZES),
                        help="comma-separated task sizes to run (default: all); "
                             "submit and share run only with all of them")
    args = parser.parse_args()
    sizes = [size for size in args.sizes.split(",") if size]
    if not sizes or any(size not in SIZES for size in sizes):
        parser.error(f"--sizes takes names from {', '.join(SIZES)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not args.pyhost.is_file():
        sys.exit(f"no pyhost at {args.pyhost}; build it with `cargo build --release`")

    everything = sizes == SIZES
    pairs = [(c, s) for s in sizes for c in CONTENDERS]
    if "trivial" in sizes:
        pairs.append(("parallel", "profile-trivial"))
    if everything:
        pairs += [(c, "submit") for c in SUBMIT_CONTENDERS] + [("parallel", "share")]
    samples: dict[tuple[str, str], list[dict]] = {pair: [] for pair in pairs}
    for round_number in range(args.runs):
        random.shuffle(pairs)
        for contender, size in pairs:
            samples[(contender, size)].append(measure(contender, size, args.pyhost, args.python))
        print(f"round {round_number + 1}/{args.runs} done", file=sys.stderr, flush=True)

    def median(contender: str, size: str, key: str = "seconds") -> float:
        return statistics.median(sample[key] for sample in samples[(contender, size)])

    def per_round(slower: str, faster: str, size: str, target: float) -> str:
        """The ratio slower/faster in each round (both ran in it), and how many rounds reach
        `target`: at the machine's parallel limit the medians alone hide how much it moves."""
        ratios = [a["seconds"] / b["seconds"]
                  for a, b in zip(samples[(slower, size)], samples[(faster, size)])]
        held = sum(ratio >= target for ratio in ratios)
        return (f"; per round {min(ratios):.2f}-{max(ratios):.2f}x, "
                f"held in {held} of {len(ratios)}")

    print(f"parallel engine vs peers: {os.cpu_count()} CPUs, {args.runs} rounds, medians "
          f"(peers under {args.python})\n")
    print(f"{'size':8} {'contender':16} {'seconds':>9} {'speed-up':>9} {'vs mp':>7} "
          f"{'of bare':>8} {'start-up':>9}")
    def verdict(label: str, ratio: float, target: float, slower: str, size: str, of: str) -> str:
        return (f"{label} {ratio:.2f}x {of} ({'PASS' if ratio >= target else 'FAIL'}: "
                f">= {target}x){per_round(slower, 'parallel', size, target)}")

    verdicts = []
    for size in sizes:
        base = median("sequential", size)
        mp = median("multiprocessing", size)
        bare = median("bare", size)
        for contender in CONTENDERS:
            seconds = median(contender, size)
            print(f"{size:8} {contender:16} {seconds:9.4f} {base / seconds:8.2f}x {mp / seconds:6.2f}x "
                  f"{bare / seconds:7.0%} {median(contender, size, 'startup'):8.3f}s")
        par = median("parallel", size)
        if size == "trivial":
            ratios = [m["seconds"] / p["seconds"] for m, p in
                      zip(samples[("multiprocessing", size)], samples[("parallel", size)])]
            every = min(ratios) >= TARGET_TRIVIAL_VS_MP
            verdicts.append(f"trivial: parallel.map {mp / par:.2f}x multiprocessing.Pool.map "
                            f"({'PASS' if every else 'FAIL'}: >= {TARGET_TRIVIAL_VS_MP}x in every "
                            f"round){per_round('multiprocessing', 'parallel', size, TARGET_TRIVIAL_VS_MP)}")
            verdicts.append(verdict("trivial: parallel.map at", base / par, TARGET_TRIVIAL_OF_LOOP,
                                    "sequential", size, "the plain loop's speed"))
        elif size == "small":
            verdicts.append(verdict("small: parallel.map", mp / par, TARGET_SMALL_VS_MP,
                                    "multiprocessing", size, "multiprocessing.Pool.map"))
        else:
            verdicts.append(verdict("large: parallel.map at", bare / par, TARGET_LARGE_OF_BARE,
                                    "bare", size, "bare's speed"))
            verdicts.append(f"large: speed-up over sequential {base / par:.2f}x (earlier target "
                            f">= {TARGET_LARGE_SPEEDUP}x)"
                            f"{per_round('sequential', 'parallel', size, TARGET_LARGE_SPEEDUP)}; "
                            f"two bare processes {base / bare:.2f}x")
        print()
    if "trivial" in sizes:
        runs = samples[("parallel", "profile-trivial")]
        print("where a trivial parallel.map spends its time (medians):")
        print(f"  wall {median('parallel', 'profile-trivial') * 1e3:7.2f} ms; main thread CPU "
              f"{median('parallel', 'profile-trivial', 'main_cpu') * 1e3:.2f} ms, workers' CPU "
              f"{median('parallel', 'profile-trivial', 'workers_cpu') * 1e3:.2f} ms "
              f"(the plain loop: {median('sequential', 'trivial') * 1e3:.2f} ms)")
        calls = sorted({name for run in runs for name in run["main_calls"]},
                       key=lambda name: -statistics.median(run["main_calls"].get(name, 0.0) for run in runs))
        for name in calls:
            seconds = statistics.median(run["main_calls"].get(name, 0.0) for run in runs)
            if seconds >= 5e-6:
                print(f"  main thread in _core.{name:20} {seconds * 1e3:7.2f} ms")
        print()
    if everything:
        print("submit() round trip, one trivial task at a time:")
        for contender in SUBMIT_CONTENDERS:
            print(f"  {contender:16} {median(contender, 'submit') * 1e6:8.1f} us")
        submit = median("parallel", "submit")
        verdicts.append(f"submit round trip {submit * 1e6:.1f} us "
                        f"({'PASS' if submit <= TARGET_SUBMIT_SECONDS else 'FAIL'}: "
                        f"<= {TARGET_SUBMIT_SECONDS * 1e6:.0f} us)")
        fraction = median("parallel", "share", "per_worker_fraction")
        added = median("parallel", "share", "added_rss_bytes")
        print(f"\nshare(): every worker reads a whole 100 MB shared dataset: RSS +{added / 1e6:.1f} MB in all, "
              f"{fraction:.1%} of the dataset per worker")
        verdicts.append(f"share() RSS per worker {fraction:.1%} of the dataset "
                        f"({'PASS' if fraction <= TARGET_SHARE_FRACTION else 'FAIL'}: <= 5%)")
        print()
    print("Targets:")
    for verdict in verdicts:
        print("  " + verdict)
    if args.json:
        args.json.write_text(json.dumps({f"{c}/{s}": v for (c, s), v in samples.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
