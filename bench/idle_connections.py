"""What idle keep-alive connections cost `pyhost -m parallel.serve`: RSS per connection.

Starts the server on bench/wsgi_app.py (2 workers), opens --connections connections (default
10,000) that each make one keep-alive request and then stay open and idle, reads the server's
RSS before and after, checks that a new client is still answered at once, and closes them.

    python3.13 bench/idle_connections.py [--pyhost target/release/pyhost] [--connections 10000]

Standard library only. Raises this process's open-file limit to what it needs (the server
needs as many: run it where `ulimit -Hn` allows).
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def rss(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyhost", type=Path, default=REPO / "target" / "release" / "pyhost")
    parser.add_argument("--connections", type=int, default=10_000)
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = options.connections + 100
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"the open-file limit is {hard}: {needed} are needed (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(options.pyhost), "--engine", "parallel", "-m", "parallel.serve", "wsgi_app:app",
                               "--port", str(port), "--workers", "2"], cwd=REPO / "bench",
                              stderr=subprocess.DEVNULL)
    clients = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/plaintext", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("the server did not start")
                time.sleep(0.1)
        before = rss(server.pid)
        request = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(options.connections):
            client = socket.create_connection(("127.0.0.1", port), timeout=30)
            client.sendall(request)
            clients.append(client)
        answered = 0
        for client in clients:
            data = b""
            while b"Hello, World!" not in data:
                data += client.recv(4096)
            answered += 1
        time.sleep(1)
        after = rss(server.pid)
        started = time.perf_counter()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/plaintext", timeout=10).read()
        fresh = time.perf_counter() - started
        print(f"{answered:,} idle keep-alive connections: server RSS {before / 2**20:.1f} MB -> "
              f"{after / 2**20:.1f} MB, {(after - before) / answered / 1024:.1f} KiB per connection; "
              f"a new request meanwhile took {fresh * 1000:.1f} ms")
    finally:
        for client in clients:
            client.close()
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
