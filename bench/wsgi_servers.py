"""parallel.serve against granian and gunicorn: requests/s and p99 latency under wrk, and the
RSS of a server holding a large read-only table.

Every server serves the same module, bench/wsgi_app.py, on loopback, measured by the same wrk
command (-t2 -c64, --seconds each). wrk shares the machine's cores with the server, and a
shared machine's speed drifts by 10-20% within a minute, so the design is paired: every
server is started once and stays up (idle between its runs), and each round measures all of
them back to back in a shuffled order. A ratio (to granian --workers 2; 2 workers to 1) is
taken within each round and the median over rounds is reported with its range, beside the
median requests/s and p99 latency.
Memory: each server imports the module with BENCH_TABLE=1 (a ~70 MB table: share()d under
pyhost, a plain dict in every process elsewhere), answers a few lookups, and the RSS of its
whole process tree is read from /proc.

    python3.13 bench/wsgi_servers.py [--pyhost target/release/pyhost] [--seconds 3] [--rounds 7]
                                     [--venv target/bench-venv]

Needs wrk (Debian's `wrk`) and granian and gunicorn, which it installs with pip into --venv
(made with this python3.13) when they are missing.
"""

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_venv(venv):
    python = venv / "bin" / "python"
    if not (venv / "bin" / "granian").exists() or not (venv / "bin" / "gunicorn").exists():
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "granian", "gunicorn"], check=True)
    return venv


SERVER_ORDER = ("parallel.serve -w 2", "parallel.serve -w 1", "granian -w 2", "granian -w 1", "gunicorn -w 2 gthread")


def servers(options, venv):
    pyhost = [str(options.pyhost), "--engine", "parallel", "-m", "parallel.serve", "wsgi_app:app"]
    granian = [str(venv / "bin" / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--no-ws"]
    gunicorn = [str(venv / "bin" / "gunicorn"), "-k", "gthread", "--threads", "2", "-b"]
    return {
        "parallel.serve -w 2": lambda port: pyhost + ["--port", str(port), "--workers", "2"],
        "parallel.serve -w 1": lambda port: pyhost + ["--port", str(port), "--workers", "1"],
        "granian -w 2": lambda port: granian + ["--port", str(port), "--workers", "2", "wsgi_app:app"],
        "granian -w 1": lambda port: granian + ["--port", str(port), "--workers", "1", "wsgi_app:app"],
        "gunicorn -w 2 gthread": lambda port: gunicorn + [f"127.0.0.1:{port}", "-w", "2", "wsgi_app:app"],
    }


def start(command, port, env):
    process = subprocess.Popen(command, cwd=BENCH, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/plaintext", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"{command[0]} did not answer within 120 s")


def stop(process):
    try:
        os.killpg(process.pid, 15)
        process.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, 9)
        process.wait(30)


def tree_rss(pid):
    """RSS (bytes) of a process and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except OSError:
                continue
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        pending.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/status") as status:
                total += next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def wrk(port, path, seconds, threads=2, connections=64):
    """(requests/s, p99 in ms, error notes) of one wrk run (green_servers.py uses it too)."""
    result = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
                             f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=seconds + 60)
    requests = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", result.stdout).groups()
    p99 = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", result.stdout)
    return requests, p99, errors.group(0) if errors else ""


def spread(values):
    """'median (min-max)' of ratios."""
    return f"{statistics.median(values):5.2f}x ({min(values):.2f}-{max(values):.2f})"


def report(path, rounds):
    """Medians of each server's requests/s and p99, and of the ratios taken within rounds."""
    print(f"\n{path}:")
    for name in sorted(rounds[0], key=list(SERVER_ORDER).index):
        rate = statistics.median(r[name][0] for r in rounds)
        p99 = statistics.median(r[name][1] for r in rounds)
        to_granian = [r[name][0] / r["granian -w 2"][0] for r in rounds]
        notes = "; ".join(sorted({r[name][2] for r in rounds if r[name][2]}))
        print(f"  {name:24} {rate:9.0f} req/s  {spread(to_granian)} granian -w 2   p99 {p99:7.2f} ms"
              f"{'   ' + notes if notes else ''}")
    for server in ("parallel.serve", "granian"):
        scaling = [r[f"{server} -w 2"][0] / r[f"{server} -w 1"][0] for r in rounds]
        print(f"  {server} 2 workers / 1 worker: {spread(scaling)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyhost", type=Path, default=REPO / "target" / "release" / "pyhost")
    parser.add_argument("--venv", type=Path, default=REPO / "target" / "bench-venv")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--routes", nargs="+", default=["/plaintext", "/json", "/work"],
                        choices=["/plaintext", "/json", "/work"])
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the RSS comparison")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wsgi_servers.py needs wrk (Debian: apt-get install wrk)")
    venv = ensure_venv(options.venv)
    commands = servers(options, venv)
    env = {**os.environ, "PYTHONHASHSEED": "0", "BENCH_TABLE": "0"}
    print(f"wrk -t2 -c64 -d{options.seconds}s, {options.rounds} paired rounds, loopback, this machine's "
          f"{os.cpu_count()} cores shared by wrk and the server")
    ports = {name: free_port() for name in commands}
    processes = {}
    try:
        for name, command in commands.items():
            processes[name] = start(command(ports[name]), ports[name], env)
        for path in options.routes:
            for name in commands:
                wrk(ports[name], path, 1)  # warm-up
            rounds = []
            for _ in range(options.rounds):
                order = random.sample(list(commands), len(commands))
                rounds.append({name: wrk(ports[name], path, options.seconds) for name in order})
            report(path, rounds)
    finally:
        for process in processes.values():
            stop(process)
    if options.memory:
        memory(commands, env)


def memory(commands, env):
    print("\nRSS with BENCH_TABLE=1 (a ~70 MB table), whole process tree:")
    table_env = {**env, "BENCH_TABLE": "1"}
    sizes = {}
    for name in ("parallel.serve -w 2", "granian -w 2", "gunicorn -w 2 gthread"):
        port = free_port()
        process = start(commands[name](port), port, table_env)
        try:
            for i in range(0, 500_000, 50_000):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/table?key%20{i:07d}", timeout=30).read()
            sizes[name] = tree_rss(process.pid)
        finally:
            stop(process)
    for name, size in sizes.items():
        print(f"  {name:24} {size / 2**20:7.1f} MB  {size / sizes['granian -w 2']:5.2f}x granian -w 2")


if __name__ == "__main__":
    main()
