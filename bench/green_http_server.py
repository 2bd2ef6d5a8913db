"""The server bench/green_servers.py measures: HTTP/1.1 keep-alive "Hello, World!" written
with plain blocking sockets and one green thread per connection, run as

    pyhost --engine stackless bench/green_http_server.py --mode stackless --port N
    python3.13 bench/green_http_server.py --mode gevent --port N        (gevent installed)
    python3.13 bench/green_http_server.py --mode asyncio --port N       (the same protocol on asyncio streams)

It answers every complete request head in what it has read (so pipelined requests too); the
load generator sends GETs without bodies. Prints "ready" once listening.
"""

import argparse
import socket
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
END_OF_HEAD = b"\r\n\r\n"


def handle(connection):
    """One connection, in its own green thread: blocking reads and writes."""
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = b""
    with connection:
        while True:
            try:
                data = connection.recv(65536)
            except ConnectionError:
                return
            if not data:
                return
            pending += data
            heads = pending.count(END_OF_HEAD)
            if heads:
                pending = pending[pending.rfind(END_OF_HEAD) + len(END_OF_HEAD):]
                try:
                    connection.sendall(RESPONSE * heads)
                except ConnectionError:
                    return


def serve(listener, spawn):
    while True:
        connection, _ = listener.accept()
        spawn(handle, connection)


def listen(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    return listener


def run_stackless(port):
    import stackless
    stackless.patch_all()
    listener = listen(port)

    def spawn(function, *args):
        stackless.tasklet(function)(*args)

    stackless.tasklet(serve)(listener, spawn)
    print("ready", flush=True)
    stackless.run()


def run_gevent(port):
    from gevent import monkey
    monkey.patch_all()
    import gevent
    listener = listen(port)
    print("ready", flush=True)
    serve(listener, gevent.spawn)


def run_asyncio(port):
    import asyncio

    async def answer(reader, writer):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        try:
            while data := await reader.read(65536):
                pending += data
                heads = pending.count(END_OF_HEAD)
                if heads:
                    pending = pending[pending.rfind(END_OF_HEAD) + len(END_OF_HEAD):]
                    writer.write(RESPONSE * heads)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(answer, "127.0.0.1", port, backlog=4096)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["stackless", "gevent", "asyncio"], required=True)
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    {"stackless": run_stackless, "gevent": run_gevent, "asyncio": run_asyncio}[options.mode](options.port)


if __name__ == "__main__":
    sys.exit(main())
