"""`stackless.patch_all()`: the standard library's blocking calls (sockets, name lookups,
select, selectors, time.sleep) block the calling tasklet, not the thread, with the blocking
call's results, errors and timeouts.

Run standalone: `pyhost --engine stackless tests/python/stackless/test_patch_all.py`.
"""

import errno
import io
import os
import resource
import select
import selectors
import socket
import threading
import time
import unittest

import stackless
from stackless_support import StacklessTestCase

UNPATCHED = (socket.socket, time.sleep, select.select, select.poll, selectors.DefaultSelector, select.epoll)
stackless.patch_all()

import http.client  # noqa: E402  (after patch_all, as a program would)
import http.server  # noqa: E402
import socketserver  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


def run_until(predicate, seconds=20):
    """Lets the tasklets run (the main tasklet sleeping) until `predicate()` or `seconds`."""
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        stackless.sleep(0.005)
    return predicate()


def run_until_woken(t, seconds=10):
    """Schedules until `t` is runnable again (woken by the hub) but has not run yet."""
    deadline = time.monotonic() + seconds
    while t.blocked and time.monotonic() < deadline:
        stackless.schedule()
    return not t.blocked


class TaskletServer(socketserver.TCPServer):
    """socketserver with a tasklet per connection."""

    allow_reuse_address = True
    request_queue_size = 1024

    def process_request(self, request, client_address):
        stackless.tasklet(self._serve)(request, client_address)

    def _serve(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    inside = 0
    most_inside = 0

    def do_GET(self):
        cls = type(self)
        cls.inside += 1
        cls.most_inside = max(cls.most_inside, cls.inside)
        time.sleep(0.02)  # patched: the other connections' tasklets run meanwhile
        cls.inside -= 1
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class PatchAll(StacklessTestCase):

    def test_what_it_replaces(self):
        self.assertEqual(type(UNPATCHED[1]).__name__, "builtin_function_or_method")
        self.assertIsNot(socket.socket, UNPATCHED[0])
        self.assertTrue(issubclass(socket.socket, UNPATCHED[0]))
        self.assertIsNot(time.sleep, UNPATCHED[1])
        self.assertIsNot(select.select, UNPATCHED[2])
        self.assertIs(selectors.DefaultSelector, selectors.PollSelector)
        stackless.patch_all()  # a second call changes nothing
        self.assertTrue(issubclass(socket.socket, UNPATCHED[0]))
        self.assertNotIn(UNPATCHED[0], socket.socket.__mro__[:1])

    def test_http_server_and_clients_with_a_tasklet_each(self):
        Handler.most_inside = 0
        server = TaskletServer(("127.0.0.1", 0), Handler)
        port = server.server_address[1]
        serving = stackless.tasklet(server.serve_forever)(0.05)
        results = []

        def client(i):
            connection = http.client.HTTPConnection("localhost", port, timeout=30)
            try:
                connection.request("GET", f"/{i}")
                response = connection.getresponse()
                results.append((response.status, response.read()))
            finally:
                connection.close()

        for i in range(200):
            stackless.tasklet(client)(i)
        self.assertTrue(run_until(lambda: len(results) == 200, 60), f"{len(results)} answers")
        self.assertEqual(sorted(results), sorted((200, f"hello /{i}".encode()) for i in range(200)))
        self.assertGreater(Handler.most_inside, 1, "the handlers never overlapped")
        server._BaseServer__shutdown_request = True
        self.assertTrue(run_until(lambda: not serving.alive, 10))
        server.server_close()

    def test_timeouts_and_modes_are_the_programs(self):
        a, b = socket.socketpair()
        with a, b:
            self.assertIsNone(a.gettimeout())
            self.assertTrue(a.getblocking())
            a.settimeout(0.05)
            self.assertEqual(a.gettimeout(), 0.05)
            started = time.monotonic()
            with self.assertRaisesRegex(TimeoutError, "timed out"):
                a.recv(10)
            self.assertGreaterEqual(time.monotonic() - started, 0.04)
            a.setblocking(False)
            self.assertEqual(a.gettimeout(), 0.0)
            self.assertFalse(a.getblocking())
            with self.assertRaises(BlockingIOError):
                a.recv(10)
            a.setblocking(True)
            self.assertIsNone(a.gettimeout())
            with self.assertRaises(ValueError):
                a.settimeout(-1)
            self.assertIsNone(a.gettimeout())
            b.sendall(b"partial")
            self.assertEqual(a.recv(3), b"par")  # a partial read, as the blocking call gives
            self.assertEqual(a.recv(100), b"tial")
            b.sendall(b"into")
            buffer = bytearray(10)
            self.assertEqual(a.recv_into(buffer, nbytes=4, flags=0), 4)  # keywords, as C's
            self.assertEqual(bytes(buffer[:4]), b"into")

    def test_recv_and_recv_into_are_the_blocking_calls(self):
        # They try once in Rust and wait on "would block": the C calls' results and errors.
        a, b = socket.socketpair()
        with a, b:
            with self.assertRaisesRegex(ValueError, "negative buffersize in recv"):
                a.recv(-1)
            buffer = bytearray(4)
            with self.assertRaisesRegex(ValueError, "negative buffersize in recv_into"):
                a.recv_into(buffer, -1)
            with self.assertRaisesRegex(ValueError, "buffer too small for requested bytes"):
                a.recv_into(buffer, 5)
            with self.assertRaisesRegex(TypeError, "read-write bytes-like object, not bytes"):
                a.recv_into(b"read-only")
            with self.assertRaisesRegex(TypeError, "read-write bytes-like object, not memoryview"):
                a.recv_into(memoryview(bytearray(8))[::2])
            got = []
            stackless.tasklet(lambda: got.append(a.recv(300_000)))()  # past the scratch buffer
            stackless.schedule()
            self.assertEqual(got, [])  # it waits, and the main tasklet runs
            b.sendall(b"first")
            self.assertTrue(run_until(lambda: len(got) == 1))
            stackless.tasklet(lambda: got.append(a.recv_into(buffer)))()
            stackless.schedule()
            self.assertEqual(len(got), 1)
            b.sendall(b"more")
            self.assertTrue(run_until(lambda: len(got) == 2))
            self.assertEqual(got, [b"first", 4])
            self.assertEqual(bytes(buffer), b"more")
            b.sendall(b"peek")
            self.assertEqual(a.recv(0), b"")  # with data waiting (AF_UNIX waits for some)
            self.assertEqual(a.recv(10, socket.MSG_PEEK), b"peek")
            self.assertEqual(a.recv(10), b"peek")
            b.shutdown(socket.SHUT_WR)
            self.assertEqual(a.recv(10), b"")  # end of stream
            self.assertEqual(a.recv_into(buffer), 0)
        with self.assertRaises(OSError) as closed:
            a.recv(10)
        self.assertEqual(closed.exception.errno, errno.EBADF)
        c, d = socket.socketpair()
        with c, d:
            d.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.sendall(b"unread")  # closing with unread data: the peer sees a reset
            d.close()
            with self.assertRaises(OSError):
                while c.recv(10):
                    pass
                c.sendall(b"x" * 1_000_000)

    def test_sendall_while_another_tasklet_reads(self):
        a, b = socket.socketpair()
        data = bytes(range(256)) * 16384  # 4 MiB: many times the socket buffers
        received = bytearray()

        def reader():
            while len(received) < len(data):
                chunk = b.recv(1 << 16)
                if not chunk:
                    break
                received.extend(chunk)

        with a, b:
            stackless.tasklet(reader)()
            a.sendall(data)
            self.assertTrue(run_until(lambda: len(received) == len(data)))
            self.assertEqual(bytes(received), data)

    def test_closing_a_socket_wakes_its_waiting_tasklet_with_ebadf(self):
        a, b = socket.socketpair()
        outcome = []

        def waiter():
            try:
                a.recv(10)
            except OSError as error:
                outcome.append(error.errno)

        stackless.tasklet(waiter)()
        stackless.schedule()
        a.close()
        self.assertTrue(run_until(lambda: outcome))
        self.assertEqual(outcome, [errno.EBADF])
        b.close()

    def test_connect_errors_and_accept(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        with socket.create_server(("127.0.0.1", 0)) as server:
            accepted = []
            stackless.tasklet(lambda: accepted.append(server.accept()))()
            with socket.create_connection(server.getsockname(), timeout=5) as client:
                self.assertTrue(run_until(lambda: accepted))
                connection, _ = accepted[0]
                with connection:
                    self.assertIsInstance(connection, socket.socket)
                    self.assertIsNone(connection.gettimeout())
                    client.sendall(b"line one\nline two\n")
                    with connection.makefile("rb") as lines:
                        self.assertEqual(lines.readline(), b"line one\n")
                        self.assertEqual(lines.readline(), b"line two\n")

    def test_time_sleep_blocks_only_the_tasklet(self):
        events = []

        def sleeper(name, seconds):
            events.append(("start", name))
            time.sleep(seconds)
            events.append(("end", name))

        stackless.tasklet(sleeper)("long", 0.06)
        stackless.tasklet(sleeper)("short", 0.02)
        stackless.run()
        self.assertEqual(events, [("start", "long"), ("start", "short"), ("end", "short"), ("end", "long")])
        with self.assertRaises(ValueError):
            time.sleep(-1)
        with self.assertRaises(TypeError):
            time.sleep("1")

    def test_select_and_selectors_wait_cooperatively(self):
        a, b = socket.socketpair()
        with a, b:
            order = []

            def writer():
                order.append("writer ran")
                b.send(b"x")

            stackless.tasklet(writer)()
            self.assertEqual(select.select([a], [], [], 10), ([a], [], []))
            self.assertEqual(order, ["writer ran"])
            self.assertEqual(select.select([b], [], [], 0.02), ([], [], []))
            a.recv(1)
            stackless.tasklet(writer)()
            with selectors.DefaultSelector() as selector:
                selector.register(a, selectors.EVENT_READ, "a")
                ready = selector.select(10)
            self.assertEqual([(key.data, events) for key, events in ready], [("a", selectors.EVENT_READ)])
            self.assertEqual(order, ["writer ran", "writer ran"])

    def test_epoll_and_the_epoll_selector_wait_cooperatively(self):
        a, b = socket.socketpair()
        with a, b, select.epoll() as poller:
            self.assertIsNot(type(poller), UNPATCHED[5])
            poller.register(a.fileno(), select.EPOLLIN)
            self.assertEqual(poller.poll(0), [])
            started = time.monotonic()
            self.assertEqual(poller.poll(0.03), [])  # the timeout, in seconds
            self.assertGreaterEqual(time.monotonic() - started, 0.02)
            order = []

            def writer():
                order.append("writer ran")
                b.send(b"x")

            stackless.tasklet(writer)()
            self.assertEqual(poller.poll(), [(a.fileno(), select.EPOLLIN)])  # no timeout: waits
            self.assertEqual(order, ["writer ran"])
            self.assertEqual(poller.poll(-1, 1), [(a.fileno(), select.EPOLLIN)])  # still ready
            a.recv(1)
            with self.assertRaises(TypeError):
                poller.poll("soon")
            with self.assertRaises(FileNotFoundError):
                poller.unregister(b.fileno())  # the real object's errors
            stackless.tasklet(writer)()
            with selectors.EpollSelector() as selector:
                selector.register(a, selectors.EVENT_READ, "a")
                ready = selector.select(10)
            self.assertEqual([(key.data, events) for key, events in ready], [("a", selectors.EVENT_READ)])
            self.assertEqual(order, ["writer ran", "writer ran"])
        self.assertTrue(poller.closed)

    def test_a_woken_select_lets_go_of_its_fds_before_it_runs(self):
        a, b = socket.socketpair()
        number = a.fileno()
        result = []
        selecting = stackless.tasklet(lambda: result.append(select.select([number], [], [], 0.01)))()
        stackless.schedule()
        self.assertTrue(selecting.blocked)
        # Its timeout wakes it; the main tasklet runs before it does, closes the fd it
        # selected on and waits on a new fd with the same number: that fd is free to wait on.
        self.assertTrue(run_until_woken(selecting))
        self.assertEqual(result, [])
        a.close()
        c, d = socket.socketpair()
        with b, c, d:
            self.assertIn(number, (c.fileno(), d.fileno()))
            with self.assertRaises(TimeoutError):
                stackless.wait_readable(number, timeout=0.01)
            stackless.run()
            self.assertEqual(result, [([], [], [])])

    def test_tls_servers_and_clients_in_tasklets(self):
        import ssl
        import test  # CPython's test package: its certificate for "localhost"
        certificate = os.path.join(os.path.dirname(test.__file__), "certdata", "keycert.pem")
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(certificate)
        client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_context.load_verify_locations(certificate)
        answers = []
        with server_context.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True) as listener:
            address = listener.getsockname()

            def serve():
                while True:
                    connection, _ = listener.accept()  # the handshake too, in this tasklet
                    stackless.tasklet(upper)(connection)

            def upper(connection):
                with connection:
                    while data := connection.recv(1024):
                        connection.sendall(data.upper())

            def client(i):
                with socket.create_connection(address, timeout=30) as raw:
                    with client_context.wrap_socket(raw, server_hostname="localhost") as tls:
                        tls.sendall(b"hello %d" % i)
                        answers.append(tls.recv(100))

            serving = stackless.tasklet(serve)()
            for i in range(50):
                stackless.tasklet(client)(i)
            self.assertTrue(run_until(lambda: len(answers) == 50, 60), f"{len(answers)} of 50")
            self.assertEqual(sorted(answers), sorted(b"HELLO %d" % i for i in range(50)))
            with socket.create_connection(address, timeout=30) as raw:
                with client_context.wrap_socket(raw, server_hostname="localhost") as tls:
                    self.assertIsInstance(tls, ssl.SSLSocket)
                    tls.settimeout(0.05)
                    with self.assertRaisesRegex(TimeoutError, "The read operation timed out"):
                        tls.recv(10)
            serving.kill()

    def test_subprocesses_run_while_their_tasklets_wait(self):
        events = []

        def run(name, seconds):
            events.append(("start", name))
            done = subprocess.run(["sh", "-c", f"sleep {seconds}; echo {name}"], capture_output=True, text=True)
            events.append(("end", name, done.stdout, done.returncode))

        stackless.tasklet(run)("slow", 0.3)
        stackless.tasklet(run)("quick", 0.05)
        stackless.run()
        self.assertEqual(events, [("start", "slow"), ("start", "quick"),
                                  ("end", "quick", "quick\n", 0), ("end", "slow", "slow\n", 0)])
        child = subprocess.Popen(["sleep", "30"])
        with self.assertRaises(subprocess.TimeoutExpired):
            child.wait(timeout=0.05)
        child.kill()
        self.assertEqual(child.wait(), -9)
        self.assertEqual(subprocess.run(["cat"], input=b"in and out", capture_output=True).stdout, b"in and out")

    def test_reading_a_childs_pipe_blocks_only_the_tasklet(self):
        ticks = []

        def ticker():
            while len(ticks) < 1000:
                ticks.append(1)
                stackless.sleep(0.01)

        ticking = stackless.tasklet(ticker)()
        stackless.schedule()
        try:
            child = subprocess.Popen(["sh", "-c", "sleep 0.2; echo out"], stdout=subprocess.PIPE)
            before = len(ticks)
            self.assertEqual(child.stdout.read(), b"out\n")  # to the end, as a blocking pipe
            self.assertGreater(len(ticks) - before, 5)
            self.assertIsInstance(child.stdout.raw, io.FileIO)
            self.assertEqual(child.wait(), 0)
            child.stdout.close()
            lines = subprocess.Popen(["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.05; done"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            before = len(ticks)
            self.assertEqual([line.rstrip() for line in lines.stdout], ["line1", "line2", "line3"])
            self.assertEqual(lines.stderr.read(), "")
            self.assertGreater(len(ticks) - before, 5)
            self.assertEqual(lines.wait(), 0)
            lines.stdout.close()
            lines.stderr.close()
            partial = subprocess.Popen(["sh", "-c", "printf ab; sleep 0.1; printf cd"], stdout=subprocess.PIPE,
                                       bufsize=0)
            self.assertEqual(partial.stdout.read(10), b"ab")  # what is there, as a blocking read
            self.assertEqual(partial.stdout.read(), b"cd")
            self.assertEqual(partial.wait(), 0)
            partial.stdout.close()
        finally:
            ticking.kill()

    def test_a_child_fed_and_drained_by_two_tasklets(self):
        # 4 MiB through `cat`: with blocking pipes in one thread the writer would fill the pipe
        # and wait forever for a reader that never gets to run.
        blob = bytes(range(256)) * (4 * 4096)
        for bufsize in (0, -1):
            with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=bufsize) as child:
                got = []

                def writer():
                    view = memoryview(blob)
                    while view:
                        view = view[child.stdin.write(view) or len(view):]
                    child.stdin.close()

                stackless.tasklet(writer)()
                stackless.tasklet(lambda: got.append(child.stdout.read()))()
                stackless.run()
                self.assertEqual(got, [blob])
            self.assertEqual(child.returncode, 0)
        with subprocess.Popen(["true"], stdin=subprocess.PIPE, bufsize=0) as gone:
            gone.wait()
            with self.assertRaises(BrokenPipeError):  # the reader is gone: as a blocking pipe
                gone.stdin.write(b"x" * 1_000_000)

    def test_os_read_and_write_on_a_pipe_block_only_the_tasklet(self):
        r, w = os.pipe()
        try:
            got = []
            stackless.tasklet(lambda: got.append(os.read(r, 100)))()
            stackless.schedule()
            self.assertEqual(got, [])  # waiting, and the main tasklet runs
            self.assertEqual(os.write(w, b"through the pipe"), 16)
            stackless.run()
            self.assertEqual(got, [b"through the pipe"])
        finally:
            os.close(r)
            os.close(w)

    def test_name_lookups_run_in_a_helper_thread(self):
        import _socket
        self.assertEqual(socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM),
                         _socket.getaddrinfo("localhost", 80, 0, socket.SOCK_STREAM))
        self.assertEqual(socket.gethostbyname("localhost"), _socket.gethostbyname("localhost"))
        self.assertTrue(any(t.name.startswith("stackless-helper") for t in threading.enumerate()))
        with self.assertRaises(socket.gaierror):  # the lookup's error, raised in the tasklet
            socket.getaddrinfo("localhost", "no-such-service-name")

    def test_no_fd_or_memory_leak_over_100_000_connections(self):
        total, at_once = 100_000, 100
        served = [0]

        def open_fds():
            return len(os.listdir("/proc/self/fd"))

        def rss():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

        with socket.create_server(("127.0.0.1", 0), backlog=1024) as server:
            address = server.getsockname()

            def serve():
                while True:
                    connection, _ = server.accept()
                    stackless.tasklet(echo)(connection)

            def echo(connection):
                with connection:
                    connection.sendall(connection.recv(16))
                    served[0] += 1

            def clients(count):
                for _ in range(count):
                    with socket.create_connection(address, timeout=30) as sock:
                        sock.sendall(b"ping")
                        assert sock.recv(16) == b"ping"

            serving = stackless.tasklet(serve)()

            def wave(connections):
                done = served[0] + connections
                for _ in range(at_once):
                    stackless.tasklet(clients)(connections // at_once)
                self.assertTrue(run_until(lambda: served[0] == done, 300), f"{served[0]} of {done}")
                run_until(lambda: stackless.getruncount() == 1, 10)

            wave(10_000)  # warm: caches, the reactor's tables, obmalloc's arenas
            fds, memory = open_fds(), rss()
            wave(total - 10_000)
            self.assertEqual(open_fds(), fds)
            grown = rss() - memory
            self.assertLess(grown, 16 << 20, f"RSS grew by {grown >> 20} MiB over {total - 10_000} connections")
            serving.kill()

    def test_ten_thousand_connections_open_at_once(self):
        # The clients run in a child process (the same engine, patched too): each side then
        # needs 10,000 file descriptors, which the usual hard limit of 20,000 allows.
        count = 10_000
        raise_fd_limit(self, count + 200)
        opened, live, closed_by_peer = [], [0], []
        release = stackless.channel()
        with socket.create_server(("127.0.0.1", 0), backlog=1024) as server:
            def serve():
                for _ in range(count):
                    connection, _ = server.accept()
                    stackless.tasklet(echo)(connection)

            def echo(connection):
                with connection:
                    live[0] += 1
                    connection.sendall(connection.recv(100))
                    opened.append(1)
                    release.receive()  # held open until every connection is
                    live[0] -= 1
                    closed_by_peer.append(connection.recv(100) == b"")

            stackless.tasklet(serve)()
            client = subprocess.Popen([sys.executable, "-c", CLIENTS, str(count), str(server.getsockname()[1])],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                self.assertTrue(run_until(lambda: len(opened) == count or client.poll() is not None, 240),
                                f"{len(opened)} of {count} connections")
                self.assertEqual(len(opened), count, client.stderr.read() if client.poll() is not None else "")
                self.assertEqual(live[0], count)  # all open at the same time
                for _ in range(count):
                    release.send(None)
                self.assertTrue(run_until(lambda: len(closed_by_peer) == count, 120))
                out, err = client.communicate(timeout=60)
            finally:
                if client.poll() is None:
                    client.kill()
                    client.wait()
        self.assertEqual(client.returncode, 0, err.decode())
        self.assertEqual(out.decode().split(), ["echoed", str(count)])
        self.assertEqual(closed_by_peer, [True] * count)


CLIENTS = """
import resource, socket, sys, stackless
stackless.patch_all()
count, port = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 200), hard))
echoed = []
def client(i):
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(b"%d" % i)
        echoed.append(int(sock.recv(100)) == i)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(100)  # the server closes once every connection was open
for i in range(count):
    stackless.tasklet(client)(i)
    if i % 500 == 499:  # the kernel's accept queue is bounded (somaxconn)
        while len(echoed) <= i - 500:
            stackless.sleep(0.005)
stackless.run()
print("echoed", sum(echoed))
"""


def raise_fd_limit(test, wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            test.skipTest(f"RLIMIT_NOFILE's hard limit {hard} is under {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


if __name__ == "__main__":
    unittest.main()
