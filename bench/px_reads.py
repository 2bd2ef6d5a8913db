"""What the PX/PY guard costs a task, against the same code in the main interpreter.

    pyhost --engine parallel bench/px_reads.py [--rounds 15]

In a worker the script's module-level objects are guarded (the list and deque retyped to
read-only siblings, the Counter and dict watched) and calls are watched for mutators given the
script's objects explicitly (sys.monitoring, switched off per call site once seen harmless). In
the main interpreter nothing is guarded. Each workload runs in a task and in main, in shuffled
rounds; each value is the time spent in the workload's loop only (no transfer, no pool), and
the report gives the medians and their ratio (task / main). Workloads: reading 100,000-item
module-level objects (sum, iteration, indexing, membership), and writing the task's own objects
(appends to a list and a deque, heapq pushes), which the guarded twins of those mutators must
leave at full speed.
"""

import argparse
import collections
import heapq
import random
import statistics
import time

SIZE = 100_000
LIST = list(range(SIZE))
DQ = collections.deque(range(SIZE))
COUNTER = collections.Counter({i: 1 for i in range(SIZE)})
TABLE = {i: 1 for i in range(SIZE)}


def read_sequence(seq):
    total = sum(seq)
    for item in seq:
        total += item
    for index in range(0, len(seq), 7):
        total += seq[index]
    return total


def read_mapping(mapping):
    total = sum(mapping.values())
    for key in mapping:
        total += key
    for key in range(0, len(mapping), 7):
        total += mapping[key]
    return total + (len(mapping) // 2 in mapping)


def append_to_list():
    out = []
    for i in range(SIZE):
        out.append(i)
    return len(out)


def append_to_deque():
    out = collections.deque()
    for i in range(SIZE):
        out.append(i)
    return len(out)


def push_onto_heap():
    heap = []
    for i in range(SIZE):
        heapq.heappush(heap, -i)
    return heap[0]


WORKLOADS = {
    "read global list": lambda: read_sequence(LIST),
    "read global deque": lambda: read_sequence(DQ),
    "read global Counter": lambda: read_mapping(COUNTER),
    "read global dict": lambda: read_mapping(TABLE),
    "append to own list": append_to_list,
    "append to own deque": append_to_deque,
    "heappush onto own list": push_onto_heap,
}


def measure(name):
    workload = WORKLOADS[name]
    start = time.perf_counter()
    workload()
    return time.perf_counter() - start


def main():
    import parallel
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="rounds of every workload (default 15)")
    args = parser.parse_args()
    parallel.map(measure, list(WORKLOADS) * 2, chunksize=1)  # workers up and warm
    in_task = {name: [] for name in WORKLOADS}
    in_main = {name: [] for name in WORKLOADS}
    for _ in range(args.rounds):
        names = list(WORKLOADS)
        random.shuffle(names)
        for name in names:
            in_main[name].append(measure(name))
            in_task[name].append(parallel.submit(measure, name).result())
    print(f"{SIZE:,} items per workload, {args.rounds} rounds, medians")
    print(f"  {'workload':24} {'main':>9} {'task':>9} {'task/main':>10}")
    for name in WORKLOADS:
        main_time, task_time = statistics.median(in_main[name]), statistics.median(in_task[name])
        print(f"  {name:24} {main_time * 1e3:6.2f} ms {task_time * 1e3:6.2f} ms {task_time / main_time:9.2f}x")


if __name__ == "__main__":
    main()
