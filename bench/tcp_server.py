"""parallel.server() against asyncio: round trips per second over loopback.

The same line protocol is served by `pyhost --engine parallel` (parallel.server, 2 workers and
1 worker) and by an asyncio server under python3.13 (one process, one core). Clients are
python3.13 processes (--clients, default 2) each keeping --connections connections (default 8)
busy with request/response round trips of one line for --seconds; each server is measured
--rounds times in a shuffled order and the median is reported. Two workloads: `echo` (the
line back) and `work` (~0.2 ms of pure Python per request, where using both cores counts).
The load generator shares the machine's cores with the server: compare ratios.

    python3.13 bench/tcp_server.py [--pyhost target/release/pyhost] [--rounds 3] [--seconds 3]

Standard library only. This file is also the server (`--serve`) and the client (`--client`).
"""

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def work(line):
    """~0.2 ms of pure Python for the `work` workload."""
    total = 0
    for i in range(3000):
        total += i * i % 7
    return line + str(total % 10).encode()


class LineProtocol:
    """parallel.server's protocol: one reply line per request line."""

    def __init__(self):
        self.buffer = b""
        self.heavy = os.environ.get("BENCH_WORKLOAD") == "work"

    def data_received(self, transport, data):
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return b"".join((work(line) if self.heavy else line) + b"\n" for line in lines) or None


def serve_parallel(port, workers):
    import parallel
    with parallel.server("127.0.0.1", port, LineProtocol, workers=workers) as server:
        print(server.address[1], flush=True)
        server.serve_forever()


def serve_asyncio(port):
    import asyncio

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.line = transport, LineProtocol()

        def data_received(self, data):
            reply = self.line.data_received(self.transport, data)
            if reply:
                self.transport.write(reply)

    async def main():
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


def client(port, connections, seconds):
    """Round trips done by `connections` connections in `seconds` (one process)."""
    import selectors
    selector = selectors.DefaultSelector()
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"ping\n")
        selector.register(sock, selectors.EVENT_READ, [b""])
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            data = key.fileobj.recv(65536)
            if not data:
                raise SystemExit("the server closed a connection")
            key.data[0] += data
            replies = key.data[0].count(b"\n")
            if replies:
                key.data[0] = key.data[0].rsplit(b"\n", 1)[1]
                done += replies
                key.fileobj.sendall(b"ping\n" * replies)
    print(done)


def measure(command, env, options):
    server = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    try:
        port = int(server.stdout.readline())
        clients = [subprocess.Popen([sys.executable, __file__, "--client", str(port),
                                     "--connections", str(options.connections),
                                     "--seconds", str(options.seconds)],
                                    stdout=subprocess.PIPE, text=True) for _ in range(options.clients)]
        total = sum(int(c.communicate(timeout=options.seconds + 60)[0]) for c in clients)
        return total / options.seconds
    finally:
        server.terminate()
        server.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyhost", type=Path, default=REPO / "target" / "release" / "pyhost")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--serve", choices=["parallel", "asyncio"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client", type=int, metavar="PORT")
    options = parser.parse_args()
    if options.serve == "parallel":
        return serve_parallel(0, options.workers)
    if options.serve == "asyncio":
        return serve_asyncio(0)
    if options.client is not None:
        return client(options.client, options.connections, options.seconds)

    servers = {
        "parallel, 2 workers": [str(options.pyhost), "--engine", "parallel", __file__, "--serve", "parallel",
                                "--workers", "2"],
        "parallel, 1 worker": [str(options.pyhost), "--engine", "parallel", __file__, "--serve", "parallel",
                               "--workers", "1"],
        "asyncio (python3.13)": [sys.executable, __file__, "--serve", "asyncio"],
    }
    print(f"{options.clients} client processes x {options.connections} connections, "
          f"{options.seconds:g} s per measurement, median of {options.rounds} rounds")
    for workload in ("echo", "work"):
        env = {**os.environ, "BENCH_WORKLOAD": workload}
        results = {name: [] for name in servers}
        for _ in range(options.rounds):
            order = list(servers)
            random.shuffle(order)
            for name in order:
                results[name].append(measure(servers[name], env, options))
        baseline = statistics.median(results["asyncio (python3.13)"])
        print(f"\n{workload}:")
        for name, values in results.items():
            median = statistics.median(values)
            print(f"  {name:24} {median:10.0f} round trips/s  {median / baseline:5.2f}x asyncio "
                  f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
