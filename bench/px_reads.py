"""What the PX/PY guard costs a task that reads the main script's state.

    pyhost --engine parallel bench/px_reads.py [--rounds 15]

Tasks read module-level objects of the script (guarded in every worker: the list and deque
retyped to read-only siblings, the Counter and dict watched) and, for comparison, the same data
as the task's own objects (copies made in the task: nothing guarded). Each measurement is the
time one task spends in its reading loop (sum, iteration, indexing, membership), so pool and
transfer costs are left out; rounds run the workloads in a new random order each time, and the
report gives medians and the ratio to the guarded list (the target: a 100,000-item global
deque or Counter reads no slower than a global list of the same size).
"""

import argparse
import collections
import random
import statistics
import time

SIZE = 100_000
LIST = list(range(SIZE))
DQ = collections.deque(range(SIZE))
COUNTER = collections.Counter({i: 1 for i in range(SIZE)})
TABLE = {i: 1 for i in range(SIZE)}


def read_sequence(seq, size):
    total = sum(seq)
    for item in seq:
        total += item
    for index in range(0, size, 7):
        total += seq[index]
    return total + len(seq)


def read_mapping(mapping, size):
    total = sum(mapping.values())
    for key in mapping:
        total += key
    for key in range(0, size, 7):
        total += mapping[key]
    return total + (size // 2 in mapping)


WORKLOADS = {
    # name: (object, reader, whether a task's own copy is read)
    "global list": ("LIST", read_sequence, False),
    "global deque": ("DQ", read_sequence, False),
    "global Counter": ("COUNTER", read_mapping, False),
    "global dict": ("TABLE", read_mapping, False),
    "own list (PX)": ("LIST", read_sequence, True),
    "own deque (PX)": ("DQ", read_sequence, True),
    "own Counter (PX)": ("COUNTER", read_mapping, True),
    "own dict (PX)": ("TABLE", read_mapping, True),
}


def measure(name):
    global_name, reader, own = WORKLOADS[name]
    data = globals()[global_name]
    if own:  # a plain copy made in the task
        data = {"LIST": list, "DQ": collections.deque, "COUNTER": collections.Counter,
                "TABLE": dict}[global_name](data)
    size = len(data)
    start = time.perf_counter()
    reader(data, size)
    return time.perf_counter() - start


def main():
    import parallel
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of every workload (default 15)")
    args = parser.parse_args()
    parallel.map(measure, list(WORKLOADS) * 2, chunksize=1)  # workers up and warm
    times = {name: [] for name in WORKLOADS}
    for _ in range(args.rounds):
        names = list(WORKLOADS)
        random.shuffle(names)
        for name, seconds in zip(names, parallel.map(measure, names, chunksize=1)):
            times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"in-task read of {SIZE:,} items, {args.rounds} rounds, median per task")
    print(f"  {'object':10} {'global (PY)':>12} {'own (PX)':>10} {'global/own':>11} {'global/global list':>19}")
    for kind in ("list", "deque", "Counter", "dict"):
        py, px = medians[f"global {kind}"], medians[f"own {kind} (PX)"]
        print(f"  {kind:10} {py * 1e3:9.2f} ms {px * 1e3:7.2f} ms {py / px:10.2f}x "
              f"{py / medians['global list']:18.2f}x")
    print("  (a deque's item access walks its blocks: reading one costs more than a list, guarded or not)")


if __name__ == "__main__":
    main()
