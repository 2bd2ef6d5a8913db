"""What a share()d table costs: memory per worker, and a lookup against a plain dict's.

A 1,000,000-entry str -> str dict is shared (`parallel.share(table)`); every worker of the
pool then reads the whole table (every item, and every key looked up), and the process's RSS
before and after says what the workers added, as a share of the table's own size (measured
as the RSS its building added). Lookups: the same shuffled keys looked up in the plain dict in
main, in the shared table in main, and in the shared table in a task, best of --rounds.

    pyhost --engine parallel bench/share_table.py [--entries 1000000] [--rounds 5]

Standard library only. Targets (issue 15): each worker adds <= 5% of the table's size; a
lookup in a task costs about a dict lookup (reported as a ratio).
"""

import argparse
import random
import time

import parallel


def rss_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def read_everything(table, keys):
    """Reads every item and looks up every key; returns a checksum."""
    total = 0
    for key, value in table.items():
        total += len(key) + len(value)
    for key in keys:
        total += len(table[key])
    return total


def time_lookups(table, keys):
    """Seconds for one pass of lookups."""
    started = time.perf_counter()
    for key in keys:
        table[key]
    return time.perf_counter() - started


def best_lookups(table, keys, rounds):
    return min(time_lookups(table, keys) for _ in range(rounds))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    parallel.map(abs, [1, 2], chunksize=1)  # start the pool before measuring

    before_build = rss_bytes()
    plain = {f"key {i:08d}": f"value {i:08d} of the table" for i in range(options.entries)}
    table_size = rss_bytes() - before_build
    table = parallel.share(plain)
    keys = list(plain)
    random.Random(1).shuffle(keys)
    shared_keys = parallel.share(tuple(keys))

    before_read = rss_bytes()
    reads = parallel.map(lambda _: (parallel.current_context().worker, read_everything(table, shared_keys.value)),
                         range(8), chunksize=1)
    added = rss_bytes() - before_read
    worker_count = len({worker for worker, _ in reads})
    assert {checksum for _, checksum in reads} == {read_everything(plain, keys)}

    in_main_dict = best_lookups(plain, keys, options.rounds)
    in_main_table = best_lookups(table, keys, options.rounds)
    in_task_table = parallel.submit(lambda: best_lookups(table, shared_keys.value, options.rounds)).result()

    per_lookup = lambda seconds: seconds / len(keys) * 1e9  # noqa: E731
    print(f"{options.entries:,} entries; table: {table_size / 2**20:.1f} MB of RSS to build "
          f"({worker_count} workers read it)")
    print(f"  workers reading all of it: RSS +{added / 2**20:.1f} MB in all, "
          f"{added / max(worker_count, 1) / table_size:.1%} of the table per worker (target <= 5%)")
    print(f"  lookup, plain dict in main:    {per_lookup(in_main_dict):6.1f} ns")
    print(f"  lookup, shared table in main:  {per_lookup(in_main_table):6.1f} ns  "
          f"({in_main_table / in_main_dict:.2f}x the dict)")
    print(f"  lookup, shared table in task:  {per_lookup(in_task_table):6.1f} ns  "
          f"({in_task_table / in_main_dict:.2f}x the dict)")


if __name__ == "__main__":
    main()
