"""The child side of bench/parallel_vs_multiprocessing.py: one contender on one task size.

    <interpreter> bench/parallel_workloads.py CONTENDER SIZE

prints one line "@@RESULT {json}". The pool (or process pool) is started and warmed up
first; the timed part is the map call only, so start-up costs are reported separately. The
map runs REPEATS times in the process (memory the first call took from the system is reused by
the next, as in a program that maps more than once) and the best call is reported.
Workers import this file (multiprocessing's spawn, the parallel engine's workers), so it
defines the task functions at module level and does its work under the main guard.
"""

import json
import os
import sys
import time

WORKERS = 2
SIZES = {
    # name: (number of tasks, loop iterations per task): trivial, ~0.1 ms, ~0.1 s tasks
    "trivial": (200_000, 0),
    "small": (4_000, 1_500),
    "large": (8, 1_500_000),
}
CHUNKSIZE_FOR_EXECUTOR = {"trivial": 5_000, "small": 100, "large": 1}


def task(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def trivial(x):
    return x + 1


def rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def wait_until_workers_ready(parallel, timeout=30.0):
    """Start the default pool and wait until every worker has finished starting: workers start
    one after another (sub-interpreter creation and first imports are serialised), and a
    warm-up map of a few tasks can be done by the first worker alone while the others are still
    starting, which would leave their start-up inside the timed call."""
    deadline = time.monotonic() + timeout
    while any(w.state in ("starting", "importing") for w in parallel.workers()):
        if time.monotonic() > deadline:
            sys.exit("the parallel pool's workers did not start")
        time.sleep(0.001)


def prepare(size):
    count, work = SIZES[size]
    if work == 0:
        return trivial, list(range(count))
    return task, [work] * count


def bare(fn, items):
    """The same work with no pool: WORKERS forked processes take chunks of the items (16 per
    worker, as parallel.map does: one vCPU of a shared VM may run slower than the other, and
    a static split would measure that, not the machine) by reading their numbers from a pipe,
    and compute them; no arguments or results are sent. What this machine allows at that
    minute (it moves from minute to minute, so it is measured in every round beside the
    pools); a pool that beats it did so by noise."""
    [fn(x) for x in items[:WORKERS * 4]]  # warm-up, inherited by the children (as pools warm up)
    started = time.perf_counter()
    chunksize = -(-len(items) // (WORKERS * 16))
    chunk_count = -(-len(items) // chunksize)
    stop = 255
    assert chunk_count < stop
    queue_read, queue_write = os.pipe()
    children = []
    for _ in range(WORKERS):
        pid = os.fork()
        if pid == 0:
            os.close(queue_write)
            # Slicing copies the pages it touches before the clock starts.
            chunks = [items[i:i + chunksize] for i in range(0, len(items), chunksize)]
            while (number := os.read(queue_read, 1)[0]) != stop:
                [fn(x) for x in chunks[number]]
            os._exit(0)
        children.append(pid)
    os.close(queue_read)
    time.sleep(0.05)  # every child forked, sliced and waiting for work
    warm = time.perf_counter()
    os.write(queue_write, bytes(range(chunk_count)) + bytes([stop]) * WORKERS)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"a bare child failed ({status})")
    elapsed = time.perf_counter() - warm
    os.close(queue_write)
    return {"contender": "bare", "seconds": elapsed, "startup": warm - started,
            "tasks": len(items)}


REPEATS = 3  # timed calls per process: the best one is reported (threads: one call, ~3 s)


def run(contender, size):
    fn, items = prepare(size)
    repeats = 1 if contender == "threads" else REPEATS
    if contender == "bare":
        return {**min((bare(fn, items) for _ in range(repeats)), key=lambda r: r["seconds"]),
                "size": size}
    started = time.perf_counter()
    if contender == "sequential":
        mapper, close = (lambda f, xs: [f(x) for x in xs]), (lambda: None)
    elif contender == "parallel":
        import parallel
        wait_until_workers_ready(parallel)
        mapper, close = parallel.map, (lambda: None)
    elif contender == "multiprocessing":
        import multiprocessing
        pool = multiprocessing.Pool(WORKERS)
        mapper, close = pool.map, pool.close
    elif contender == "processpool":
        from concurrent.futures import ProcessPoolExecutor
        executor = ProcessPoolExecutor(WORKERS)
        chunksize = CHUNKSIZE_FOR_EXECUTOR[size]
        mapper = lambda f, xs: list(executor.map(f, xs, chunksize=chunksize))  # noqa: E731
        close = executor.shutdown
    elif contender == "threads":
        from concurrent.futures import ThreadPoolExecutor
        executor = ThreadPoolExecutor(WORKERS)
        mapper = lambda f, xs: list(executor.map(f, xs))  # noqa: E731
        close = executor.shutdown
    else:
        sys.exit(f"unknown contender {contender!r}")
    mapper(fn, items[:WORKERS * 4])  # warm-up: every worker started and running
    warm = time.perf_counter()
    elapsed = []
    for _ in range(repeats):
        call = time.perf_counter()
        result = mapper(fn, items)
        elapsed.append(time.perf_counter() - call)
        if result != [fn(x) for x in items[:len(result)]] or len(result) != len(items):
            sys.exit(f"{contender} returned wrong results")
        result = None
    elapsed = min(elapsed)
    close()
    return {"contender": contender, "size": size, "seconds": elapsed, "startup": warm - started,
            "tasks": len(items)}


def submit_round_trip(contender, count=2_000):
    """Seconds per submit-and-wait of a trivial task, one at a time."""
    close = lambda: None  # noqa: E731
    if contender == "parallel":
        import parallel
        wait_until_workers_ready(parallel)  # else the timed loop shares the CPUs with start-up
        call = lambda: parallel.submit(trivial, 1).result()  # noqa: E731
    elif contender == "multiprocessing":
        import multiprocessing
        pool = multiprocessing.Pool(WORKERS)
        call, close = (lambda: pool.apply_async(trivial, (1,)).get()), pool.close  # noqa: E731
    elif contender == "processpool":
        from concurrent.futures import ProcessPoolExecutor
        executor = ProcessPoolExecutor(WORKERS)
        call, close = (lambda: executor.submit(trivial, 1).result()), executor.shutdown  # noqa: E731
    else:
        sys.exit(f"no submit round trip for {contender!r}")
    for _ in range(200):
        call()
    started = time.perf_counter()
    for _ in range(count):
        call()
    elapsed = time.perf_counter() - started
    close()
    return {"contender": contender, "size": "submit", "seconds": elapsed / count}


def total_length(data, start, stop):
    import itertools
    return sum(len(text) for text in itertools.islice(data.value, start, stop))


def share_rss(contender, megabytes=100):
    """RSS the workers add when every one of them reads a whole share()d dataset of about
    `megabytes` MB (the process's RSS, after minus before the reading tasks)."""
    if contender != "parallel":
        sys.exit("the share measurement is for the parallel engine")
    import parallel
    count = megabytes * 1_000_000 // 100  # str objects of ~100 bytes (49 header + 51 chars)
    data = parallel.share(tuple(f"{i:011d}" + "x" * 40 for i in range(count)))
    # Warm-up: every worker started and has run the task once (on a small dataset), so that
    # what is measured is what reading the big one adds.
    small = parallel.share(tuple(f"{i:011d}" for i in range(1000)))
    tasks = WORKERS * 4
    parallel.map(total_length, [small] * tasks, [0] * tasks, [1000] * tasks, chunksize=1)
    before = rss_bytes()
    # Every task reads the whole dataset, so every worker does.
    parallel.map(total_length, [data] * tasks, [0] * tasks, [count] * tasks, chunksize=1)
    added = rss_bytes() - before
    return {"contender": contender, "size": "share", "dataset_bytes": megabytes * 1_000_000,
            "added_rss_bytes": added, "per_worker_fraction": added / WORKERS / (megabytes * 1_000_000)}


class _TimedCore:
    """Stands in for the parallel module's `_parallel_core` and adds up the main thread's
    seconds in each of its functions (what `parallel.map` spends where)."""

    def __init__(self, core):
        self._core = core
        self.seconds = {}

    def __getattr__(self, name):
        function = getattr(self._core, name)

        def timed(*args):
            started = time.perf_counter()
            try:
                return function(*args)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        return timed


def profile(size):
    """Where one timed `parallel.map` of SIZE spends its time: wall time; the main thread's CPU
    time and its seconds in each engine call (waiting for results is `batch_next`); the
    workers' CPU time (the process's, less the main thread's)."""
    import parallel
    fn, items = prepare(size)
    wait_until_workers_ready(parallel)
    parallel.map(fn, items[:WORKERS * 4])
    timed = _TimedCore(parallel._core)
    parallel._core = timed
    try:
        process, thread, started = time.process_time(), time.thread_time(), time.perf_counter()
        result = parallel.map(fn, items)
        wall = time.perf_counter() - started
        main_cpu = time.thread_time() - thread
        workers_cpu = time.process_time() - process - main_cpu
    finally:
        parallel._core = timed._core
    if len(result) != len(items):
        sys.exit("parallel returned wrong results")
    return {"contender": "parallel", "size": f"profile-{size}", "seconds": wall,
            "main_cpu": main_cpu, "workers_cpu": workers_cpu, "main_calls": timed.seconds}


if __name__ == "__main__":
    contender, size = sys.argv[1], sys.argv[2]
    if size.startswith("profile-"):
        result = profile(size.removeprefix("profile-"))
    elif size == "submit":
        result = submit_round_trip(contender)
    elif size == "share":
        result = share_rss(contender)
    else:
        result = run(contender, size)
    result["rss"] = rss_bytes()
    print("@@RESULT " + json.dumps(result), flush=True)
