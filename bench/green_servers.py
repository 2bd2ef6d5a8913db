"""Tasklet-per-connection servers: the stackless engine with `stackless.patch_all()` against
gevent with `monkey.patch_all()` and asyncio streams, all serving bench/green_http_server.py
(HTTP/1.1 keep-alive, plain blocking sockets, a green thread per connection; asyncio: the same
protocol on streams), on python3.13.

Requests/s and p99 latency under the same `wrk -t1` command at each `--connections` count, in
paired rounds: every server stays up, each round measures all of them back to back in a
shuffled order, and the ratio to gevent is taken within the round (median and range over
rounds are reported; wrk shares the machine's 2 cores with the server). Then the RSS each
server adds per idle keep-alive connection: a python3.13 client opens `--idle` connections,
each answered once and then left open, and the server's RSS is read before and after.

    python3.13 bench/green_servers.py [--pyhost target/release/pyhost] [--seconds 3] [--rounds 5]
                                      [--connections 256 1000] [--idle 5000] [--venv target/bench-venv]

Needs wrk (Debian's `wrk`) and gevent, which it installs with pip into --venv (made with this
python3.13) when missing.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from wsgi_servers import free_port, spread, wrk  # the same wrk runs and parsing

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "bench" / "green_http_server.py"
ORDER = ("stackless", "gevent", "asyncio")

IDLE_CLIENT = r"""
import resource, socket, sys
count, port = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 100), hard))
sockets = []
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b"Hello, World!"):
        answer += sock.recv(4096)
    sockets.append(sock)
print("open", flush=True)
sys.stdin.readline()
"""


def ensure_venv(venv):
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if subprocess.run([str(python), "-c", "import gevent"], capture_output=True).returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "gevent"], check=True)
    return python


def commands(options, gevent_python):
    server = str(SERVER)
    return {
        "stackless": lambda port: [str(options.pyhost), "--engine", "stackless", server, "--mode", "stackless",
                                   "--port", str(port)],
        "gevent": lambda port: [str(gevent_python), server, "--mode", "gevent", "--port", str(port)],
        "asyncio": lambda port: [sys.executable, server, "--mode", "asyncio", "--port", str(port)],
    }


def start(command):
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    line = process.stdout.readline()
    if line.strip() != b"ready":
        process.kill()
        raise RuntimeError(f"{command[0]} did not start: {process.stderr.read().decode()[-2000:]}")
    return process


def stop(process):
    try:
        os.killpg(process.pid, 9)
    except ProcessLookupError:
        pass
    process.wait(30)


def rss(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def throughput(options, servers):
    ports = {name: free_port() for name in ORDER}
    processes = {}
    try:
        for name in ORDER:
            processes[name] = start(servers[name](ports[name]))
        for connections in options.connections:
            for name in ORDER:
                wrk(ports[name], "/", 1, 1, connections)  # warm-up
            rounds = []
            for _ in range(options.rounds):
                order = random.sample(ORDER, len(ORDER))
                rounds.append({name: wrk(ports[name], "/", options.seconds, 1, connections) for name in order})
            print(f"\nwrk -t1 -c{connections} -d{options.seconds}s:")
            for name in ORDER:
                rate = statistics.median(r[name][0] for r in rounds)
                p99 = statistics.median(r[name][1] for r in rounds)
                to_gevent = [r[name][0] / r["gevent"][0] for r in rounds]
                p99_to_gevent = [r[name][1] / r["gevent"][1] for r in rounds]
                notes = "; ".join(sorted({r[name][2] for r in rounds if r[name][2]}))
                print(f"  {name:10} {rate:9.0f} req/s  {spread(to_gevent)} gevent   p99 {p99:7.2f} ms "
                      f" {spread(p99_to_gevent)} gevent's{'   ' + notes if notes else ''}")
            to_asyncio = [r["stackless"][0] / r["asyncio"][0] for r in rounds]
            print(f"  stackless to asyncio, requests/s: {spread(to_asyncio)}")
    finally:
        for process in processes.values():
            stop(process)


def idle_memory(options, servers):
    print(f"\nRSS per idle keep-alive connection ({options.idle} connections, each answered once):")
    for name in ORDER:
        port = free_port()
        process = start(servers[name](port))
        try:
            time.sleep(0.5)
            before = rss(process.pid)
            client = subprocess.Popen([sys.executable, "-c", IDLE_CLIENT, str(options.idle), str(port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                if client.stdout.readline().strip() != b"open":
                    raise RuntimeError(f"the idle client failed: {client.stderr.read().decode()[-2000:]}")
                time.sleep(0.5)
                after = rss(process.pid)
            finally:
                client.kill()
                client.wait()
            print(f"  {name:10} {(after - before) / options.idle / 1024:6.1f} KB per connection "
                  f"({before / 2**20:.1f} MB -> {after / 2**20:.1f} MB)")
        finally:
            stop(process)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyhost", type=Path, default=REPO / "target" / "release" / "pyhost")
    parser.add_argument("--venv", type=Path, default=REPO / "target" / "bench-venv")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, nargs="+", default=[256, 1000])
    parser.add_argument("--idle", type=int, default=5000)
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("green_servers.py needs wrk (Debian: apt-get install wrk)")
    servers = commands(options, ensure_venv(options.venv))
    print(f"{os.cpu_count()} cores shared by wrk and the server; paired rounds: {options.rounds}")
    throughput(options, servers)
    if options.idle:
        idle_memory(options, servers)


if __name__ == "__main__":
    main()
