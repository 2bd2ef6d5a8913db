# Python part of the built-in `pyhost` module, executed into its namespace when it is imported.
# `pyhost.bench` times a function inside the running process, so that `pyhost bench
# --metric in-process` measures the work and not interpreter start-up. (It is compiled only
# when a program imports pyhost; nothing here runs at start-up.)


def bench(func, loops=None, *, repeat=1, name=None):
    """Time ``func()`` and return a list of ``repeat`` values, each in seconds per call.

    With ``loops=None`` the loop count is calibrated (1, 2, 5, 10, 20, ... calls) until one value
    takes at least 0.1 s; calibration calls are warm-ups and are not reported. Under
    ``pyhost bench`` every value is also sent to the parent (through the file named by
    $PYHOST_BENCH_OUTPUT, which pyhost takes out of the environment at start-up: child
    processes report nothing).
    """
    import json
    from time import perf_counter

    if not callable(func):
        raise TypeError(f"pyhost.bench() needs a callable, not {type(func).__name__}")
    if repeat < 1:
        raise ValueError("pyhost.bench(): repeat must be at least 1")
    if loops is not None and (not isinstance(loops, int) or loops < 1):
        raise ValueError("pyhost.bench(): loops must be a positive int or None")

    def timed(count):
        started = perf_counter()
        for _ in range(count):
            func()
        return perf_counter() - started

    if loops is None:
        loops = 1
        while True:
            for factor in (1, 2, 5):
                count = loops * factor
                if timed(count) >= 0.1:
                    loops = count
                    break
            else:
                loops *= 10
                continue
            break

    label = name if name is not None else getattr(func, "__qualname__", repr(func))
    values = [timed(loops) / loops for _ in range(repeat)]
    report = _bench_output  # noqa: F821 (set by the module's native part)
    if report is not None:
        with open(report, "a", encoding="utf-8") as out:
            for value in values:
                out.write(json.dumps({"name": label, "value": value, "loops": loops}) + "\n")
    return values

