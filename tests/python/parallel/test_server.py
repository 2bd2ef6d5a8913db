"""parallel.server(): PyParallel's TCP protocol servers, driven by real sockets over loopback.
Checks the protocol callbacks (initial bytes, connection_made, data_received's reply,
connection_lost), one connection's callbacks in order in one worker, connections spread over
the workers, large and concurrent transfers, closing from either side, errors and PX/PY
violations in callbacks (the connection closes, the server goes on), backpressure
(pause_writing/resume_writing, a client that never reads), and the errors of bad arguments and
of a port in use.

Run: `pyhost --engine parallel tests/python/parallel/test_server.py`.
"""

import errno
import socket
import threading
import unittest

import parallel

EVENTS = parallel.protect([])  # what the callbacks saw, for main to check
SEEN = []  # the script's unprotected state: callbacks may read it, not change it
WORDS = parallel.share({"hello": "bonjour", "world": "monde"})


class Echo:
    initial_bytes_to_send = b"ready\n"

    def data_received(self, transport, data):
        return data


class Translate:
    """Replies with the table's word for each line; keeps per-connection state."""

    def connection_made(self, transport):
        self.buffer = b""
        self.count = 0
        EVENTS.append(("made", transport.peer[1]))

    def data_received(self, transport, data):
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        replies = []
        for line in lines:
            self.count += 1
            word = line.decode()
            if word == "worker":
                replies.append(str(parallel.current_context().worker))
            elif word == "count":
                replies.append(str(self.count))
            elif word == "quit":
                transport.write("".join(f"{reply}\n" for reply in replies).encode() + b"bye\n")
                transport.close()
                return None
            elif word == "fail":
                raise ValueError("asked to fail")
            elif word == "write-py":
                SEEN.append(1)
            else:
                replies.append(WORDS.get(word, "?"))
        return "".join(f"{reply}\n" for reply in replies).encode() or None

    def connection_lost(self, transport, exc):
        EVENTS.append(("lost", transport.peer[1], self.count))


class Producer:
    """Streams 512 chunks of 64 KiB as fast as the client takes them: writes until paused,
    goes on when resumed (asyncio's flow-control protocol)."""

    CHUNK = b"x" * 65536

    def connection_made(self, transport):
        self.left = 512
        self.paused = False
        self.pump(transport)

    def pump(self, transport):
        while self.left and not self.paused:
            transport.write(self.CHUNK)
            self.left -= 1
        if not self.left:
            transport.close()

    def pause_writing(self, transport):
        self.paused = True
        EVENTS.append(("pause", transport.get_write_buffer_size()))

    def resume_writing(self, transport):
        self.paused = False
        EVENTS.append(("resume", transport.get_write_buffer_size()))
        self.pump(transport)

    def data_received(self, transport, data):
        return None


class WatchedEcho(Echo):
    initial_bytes_to_send = None

    def connection_made(self, transport):
        transport.set_write_buffer_limits(high=256 * 1024)

    def pause_writing(self, transport):
        EVENTS.append(("pause", transport.get_write_buffer_size()))


class Limits:
    def connection_made(self, transport):
        for high, low in ((10, 20), (-1, None), (None, -4)):
            try:
                transport.set_write_buffer_limits(high, low)
            except ValueError:
                EVENTS.append("refused")
        transport.write(b"done\n")

    def data_received(self, transport, data):
        return None


def connect(server):
    return socket.create_connection(server.address, timeout=10)


def read_line(sock, buffered):
    while b"\n" not in buffered[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(buffered[0])
        buffered[0] += chunk
    line, buffered[0] = buffered[0].split(b"\n", 1)
    return line.decode()


def ask(sock, buffered, word):
    sock.sendall(word.encode() + b"\n")
    return read_line(sock, buffered)


def read_to_end(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class Servers(unittest.TestCase):
    def setUp(self):
        EVENTS.clear()

    def test_echo_with_initial_bytes(self):
        with parallel.server("127.0.0.1", 0, Echo, workers=2) as server:
            self.assertEqual(server.address[0], "127.0.0.1")
            self.assertGreater(server.address[1], 0)
            with connect(server) as client:
                buffered = [b""]
                self.assertEqual(read_line(client, buffered), "ready")
                self.assertEqual(ask(client, buffered, "ping"), "ping")

    def test_callbacks_see_the_script_s_shared_data_and_keep_per_connection_state(self):
        with parallel.server("127.0.0.1", 0, Translate, workers=2) as server:
            with connect(server) as first, connect(server) as second:
                a, b = [b""], [b""]
                self.assertEqual(ask(first, a, "hello"), "bonjour")
                self.assertEqual(ask(second, b, "world"), "monde")
                self.assertEqual(ask(first, a, "count"), "2")
                self.assertEqual(ask(second, b, "count"), "2")
                self.assertEqual(ask(first, a, "nothing"), "?")

    def test_one_connection_s_callbacks_run_in_order_in_one_worker(self):
        with parallel.server("127.0.0.1", 0, Translate, workers=2) as server:
            with connect(server) as client:
                # Many small pieces sent at once: replies come back in order, all counted.
                client.sendall(b"".join(b"worker\n" if i % 2 else b"count\n" for i in range(400)))
                buffered = [b""]
                replies = [read_line(client, buffered) for _ in range(400)]
        workers = set(replies[1::2])
        self.assertEqual(len(workers), 1)
        self.assertEqual(replies[0::2], [str(i + 1) for i in range(0, 400, 2)])

    def test_connections_are_spread_over_the_workers(self):
        with parallel.server("127.0.0.1", 0, Translate, workers=2) as server:
            clients = [connect(server) for _ in range(6)]
            try:
                workers = {ask(client, [b""], "worker") for client in clients}
            finally:
                for client in clients:
                    client.close()
        self.assertEqual(workers, {"0", "1"})

    def test_connection_made_and_lost_are_called(self):
        with parallel.server("127.0.0.1", 0, Translate, workers=2) as server:
            with connect(server) as client:
                port = client.getsockname()[1]
                ask(client, [b""], "hello")
            self._wait_for(lambda: ("lost", port, 1) in list(EVENTS))
        self.assertIn(("made", port), list(EVENTS))

    def test_the_protocol_closes_the_connection(self):
        with parallel.server("127.0.0.1", 0, Translate, workers=1) as server:
            with connect(server) as client:
                client.sendall(b"hello\nquit\nhello\n")
                self.assertEqual(read_to_end(client), b"bonjour\nbye\n")
            self._wait_for(lambda: server.connections == 0)

    def test_an_error_in_a_callback_closes_that_connection_only(self):
        with parallel.server("127.0.0.1", 0, Translate, workers=1) as server:
            with connect(server) as healthy, connect(server) as failing:
                self.assertEqual(ask(healthy, [b""], "hello"), "bonjour")
                failing.sendall(b"fail\n")
                self.assertEqual(read_to_end(failing), b"")
                self.assertEqual(ask(healthy, [b""], "world"), "monde")

    def test_a_write_to_the_script_s_state_in_a_callback_is_refused(self):
        with parallel.server("127.0.0.1", 0, Translate, workers=1) as server:
            with connect(server) as client:
                client.sendall(b"write-py\n")
                self.assertEqual(read_to_end(client), b"")  # closed: ProtectionError
            with connect(server) as client:
                self.assertEqual(ask(client, [b""], "hello"), "bonjour")
        self.assertEqual(SEEN, [])

    def test_large_and_concurrent_transfers(self):
        payload = bytes(range(256)) * 4096  # 1 MiB

        def exchange(results, index):
            with connect(server) as client:
                buffered = [b""]
                read_line(client, buffered)  # "ready"
                sender = threading.Thread(target=client.sendall, args=(payload,))
                sender.start()
                received = buffered[0]
                while len(received) < len(payload):
                    chunk = client.recv(1 << 16)
                    if not chunk:
                        break
                    received += chunk
                sender.join()
                results[index] = received == payload

        with parallel.server("127.0.0.1", 0, Echo, workers=2) as server:
            results = [False] * 8
            threads = [threading.Thread(target=exchange, args=(results, i)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        self.assertEqual(results, [True] * 8)

    def test_clients_that_leave_early_cost_nothing(self):
        with parallel.server("127.0.0.1", 0, Echo, workers=2) as server:
            for _ in range(20):
                client = connect(server)
                client.sendall(b"x" * 1000)
                client.close()
            with connect(server) as client:
                buffered = [b""]
                self.assertEqual(read_line(client, buffered), "ready")
                self.assertEqual(ask(client, buffered, "still here"), "still here")
            self._wait_for(lambda: server.connections == 0)

    def test_closing_the_server_closes_its_connections(self):
        server = parallel.server("127.0.0.1", 0, Echo, workers=2)
        client = connect(server)
        self.assertEqual(read_line(client, [b""]), "ready")
        server.close()
        self.assertEqual(read_to_end(client), b"")
        client.close()
        server.close()  # twice: nothing more
        with self.assertRaises(OSError):
            connect(server)

    def test_a_slow_client_pauses_the_writer_and_resumes_it(self):
        import time
        with parallel.server("127.0.0.1", 0, Producer, workers=1) as server:
            with connect(server) as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                time.sleep(0.3)  # not reading: the writes queue up to the high-water mark
                received, buffer = 0, bytearray(65536)
                while count := client.recv_into(buffer):
                    received += count
        self.assertEqual(received, 512 * 65536)
        kinds = [kind for kind, _ in EVENTS]
        self.assertGreater(len(kinds), 1, EVENTS)
        # Alternating (the last pause may have no resume: the producer was done and closed).
        self.assertEqual((set(kinds[::2]), set(kinds[1::2])), ({"pause"}, {"resume"}), EVENTS)
        for kind, queued in EVENTS:
            if kind == "pause":  # at most the write that crossed 64 KiB (less if sent meanwhile)
                self.assertLessEqual(queued, 128 * 1024, EVENTS)
            else:
                self.assertLessEqual(queued, 16 * 1024, EVENTS)

    def test_a_client_that_sends_without_reading_is_not_read_either(self):
        import time
        with parallel.server("127.0.0.1", 0, WatchedEcho, workers=1) as server:
            with connect(server) as client:
                client.setblocking(False)
                sent, chunk, deadline = 0, b"y" * 65536, time.monotonic() + 20
                stalled_since = None
                # Send until the server stops taking bytes for 0.5 s (at most 512 MiB, 20 s).
                while sent < 512 * 2**20 and time.monotonic() < deadline:
                    try:
                        sent += client.send(chunk)
                        stalled_since = None
                    except BlockingIOError:
                        stalled_since = stalled_since or time.monotonic()
                        if time.monotonic() - stalled_since > 0.5:
                            break
                        time.sleep(0.01)
        # What the kernel buffers hold on both sides plus the server's 256 KiB mark, not all
        # (whether pause_writing came depends on where the server was when the client stalled:
        # a write stuck in the kernel stops the reading too).
        self.assertLess(sent, 128 * 2**20)
        self.assertTrue(all(kind == "pause" and queued <= 512 * 1024 for kind, queued in EVENTS), EVENTS)

    def test_write_buffer_limits_are_checked(self):
        with parallel.server("127.0.0.1", 0, Limits, workers=1) as server:
            with connect(server) as client:
                self.assertEqual(read_line(client, [b""]), "done")
        self.assertEqual(list(EVENTS), ["refused"] * 3)

    def test_bad_arguments_and_a_port_in_use(self):
        with self.assertRaisesRegex(TypeError, "protocol class"):
            parallel.server("127.0.0.1", 0, Echo(), workers=1)
        with self.assertRaisesRegex(TypeError, "data_received"):
            parallel.server("127.0.0.1", 0, type("Nothing", (), {}), workers=1)
        with self.assertRaisesRegex(ValueError, "workers"):
            parallel.server("127.0.0.1", 0, Echo, workers=0)
        with self.assertRaises(OverflowError):
            parallel.server("127.0.0.1", 70000, Echo, workers=1)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with self.assertRaises(OSError) as raised:
                parallel.server("127.0.0.1", taken.getsockname()[1], Echo, workers=1)
            self.assertEqual(raised.exception.errno, errno.EADDRINUSE)
            self.assertIn("cannot listen on 127.0.0.1", str(raised.exception))

    def _wait_for(self, condition, seconds=10):
        import time
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                self.fail("condition not reached in time")
            time.sleep(0.01)


if __name__ == "__main__":
    unittest.main()
