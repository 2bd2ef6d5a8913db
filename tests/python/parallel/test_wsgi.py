"""parallel.wsgi_server() / parallel.serve(): a WSGI server, driven over loopback by real
clients (http.client, raw sockets, curl, wrk). Checks PEP 3333's environ and response protocol
(start_response, write(), exc_info, close(), streaming iterables), HTTP/1.1 (keep-alive,
pipelining, chunked request bodies, Expect: 100-continue, HEAD), bad requests (400, 431, 413,
Transfer-Encoding with Content-Length refused, a client too slow to send its
headers), application
failures (500, the worker goes on) and the PX/PY rule in applications.

Run: `pyhost --engine parallel tests/python/parallel/test_wsgi.py`. The curl and wrk tests are
skipped when those are not installed, unless PYHOST_TEST_REQUIRE names them (CI does).
"""

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import parallel

CLOSED = parallel.protect(0)  # close() calls seen
RELEASE = parallel.protect(False)  # lets the streaming route go on
TABLE = parallel.share({"hello": "bonjour"})
UNPROTECTED = []


class Closing:
    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        global CLOSED
        CLOSED += 1


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/environ":
        keys = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
                "SERVER_PROTOCOL", "HTTP_X_THING", "HTTP_COOKIE", "wsgi.url_scheme")
        text = "\n".join(f"{key}={environ.get(key)}" for key in keys)
        text += f"\nversion={environ['wsgi.version']} remote={environ['REMOTE_ADDR']}"
        return respond(start_response, text)
    if path == "/echo":
        return respond(start_response, environ["wsgi.input"].read().decode("latin-1"))
    if path == "/word":
        return respond(start_response, TABLE.get(environ["QUERY_STRING"], "?"))
    if path == "/worker":
        return respond(start_response, str(parallel.current_context().worker))
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return stream()
    if path == "/closing":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"a", b"b"])
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("inner")
        except KeyError:
            import sys
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced"]
    if path == "/pieces":  # a whole body in several pieces and types, no Content-Length
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"one ", bytearray(b"two "), memoryview(b"three"))
    if path == "/nothing":
        start_response("204 No Content", [])
        return []
    if path == "/fail":
        raise ValueError("the application failed")
    if path == "/count":  # reads the body piece by piece
        total, stream_ = 0, environ["wsgi.input"]
        while piece := stream_.read(65536):
            total += len(piece)
        return respond(start_response, str(total))
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        return respond(start_response, f"{len(lines)} {lines[0]!r} {lines[-1]!r}")
    if path == "/fail-late":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return fail_late()
    if path == "/bad-status":
        start_response("OK", [])
        return [b""]
    if path == "/bad-header":
        start_response("200 OK", [("Connection", "close")])
        return [b""]
    if path == "/not-bytes":
        start_response("200 OK", [])
        return ["text"]
    if path == "/px":
        UNPROTECTED.append(1)
        return respond(start_response, "written")
    if path == "/sleep":
        time.sleep(0.5)
        return respond(start_response, "slept")
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * 65536 for _ in range(200))
    return respond(start_response, "not found", "404 Not Found")


def respond(start_response, text, status="200 OK"):
    data = text.encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


def fail_late():
    yield b"part of it"
    raise ValueError("failed after the headers")


def stream():
    yield b"first\n"
    deadline = time.monotonic() + 10
    while not RELEASE.value and time.monotonic() < deadline:
        time.sleep(0.005)
    yield b"second\n"


def client(test, name):
    """The path of the client program `name`; skips the test without it, unless required."""
    path = shutil.which(name)
    if path is None:
        if name in os.environ.get("PYHOST_TEST_REQUIRE", "").split():
            test.fail(f"{name} is required (PYHOST_TEST_REQUIRE) and not installed")
        test.skipTest(f"no {name}")
    return path


def raw(server, data, read_until_close=True):
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while read_until_close:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


class Wsgi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = parallel.wsgi_server(app, port=0, workers=2, timeout=1.0, max_body=100_000)

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def request(self, method, path, body=None, headers=None, connection=None, chunked=False):
        own = connection is None
        connection = connection or http.client.HTTPConnection(*self.server.address, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            response = connection.getresponse()
            return response.status, response.read(), response
        finally:
            if own:
                connection.close()

    def test_the_environ(self):
        status, body, _ = self.request("POST", "/environ?a=1&b=%20", body=b"xyz",
                                       headers={"Content-Type": "text/x", "X-Thing": "v", "Cookie": "c=1"})
        self.assertEqual(status, 200)
        self.assertEqual(body.decode().splitlines(), [
            "REQUEST_METHOD=POST", "SCRIPT_NAME=", "PATH_INFO=/environ", "QUERY_STRING=a=1&b=%20",
            "CONTENT_TYPE=text/x", "CONTENT_LENGTH=3", "SERVER_PROTOCOL=HTTP/1.1", "HTTP_X_THING=v",
            "HTTP_COOKIE=c=1", "wsgi.url_scheme=http", "version=(1, 0) remote=127.0.0.1"])
        self.assertEqual(self.request("GET", "/%77ord?hello")[1], b"bonjour")  # PATH_INFO is decoded

    def test_keep_alive_and_the_workers(self):
        connection = http.client.HTTPConnection(*self.server.address, timeout=10)
        try:
            for _ in range(5):
                self.assertEqual(self.request("GET", "/word?hello", connection=connection)[1], b"bonjour")
        finally:
            connection.close()
        workers = {self.request("GET", "/worker")[1] for _ in range(20)}
        self.assertLessEqual(workers, {b"0", b"1"})

    def test_pipelined_requests_are_answered_in_order(self):
        requests = b"".join(b"GET /word?%s HTTP/1.1\r\nHost: x\r\n\r\n" % word for word in (b"hello", b"no"))
        received = raw(self.server, requests + b"GET /word?hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        bodies = [part.split(b"\r\n\r\n", 1)[1][:7] for part in received.split(b"HTTP/1.1 200 OK")[1:]]
        self.assertEqual([body.rstrip(b"H") for body in bodies], [b"bonjour", b"?", b"bonjour"])

    def test_a_streamed_body_goes_out_as_it_comes(self):
        RELEASE.value = False
        connection = http.client.HTTPConnection(*self.server.address, timeout=10)
        try:
            connection.request("GET", "/stream")
            response = connection.getresponse()
            self.assertEqual(response.readline(), b"first\n")  # while the app waits for RELEASE
            RELEASE.value = True
            self.assertEqual(response.read(), b"second\n")
        finally:
            connection.close()

    def test_close_write_and_exc_info(self):
        before = CLOSED.value
        self.assertEqual(self.request("GET", "/closing")[1], b"ab")
        self.assertEqual(CLOSED.value, before + 1)
        self.assertEqual(self.request("GET", "/write")[1], b"written and returned")
        status, body, _ = self.request("GET", "/exc-info")
        self.assertEqual((status, body), (503, b"replaced"))

    def test_a_list_or_tuple_body_goes_whole_with_its_length(self):
        status, body, response = self.request("GET", "/pieces")
        self.assertEqual((status, body, response.getheader("Content-Length")), (200, b"one two three", "13"))
        status, body, response = self.request("GET", "/nothing")
        self.assertEqual((status, body), (204, b""))
        status, body, response = self.request("HEAD", "/pieces")
        self.assertEqual((status, body), (200, b""))

    def test_request_bodies_chunked_and_with_expect_continue(self):
        chunks = (piece for piece in (b"ab", b"cd", b"ef"))
        status, body, _ = self.request("POST", "/echo", body=chunks, chunked=True)
        self.assertEqual((status, body), (200, b"abcdef"))
        curl = client(self, "curl")  # the rest needs it
        result = subprocess.run([curl, "-s", "-H", "Expect: 100-continue", "--data-binary", "x" * 2000,
                                 f"{self.server.url}/echo"], capture_output=True, timeout=30)
        self.assertEqual(result.stdout, b"x" * 2000)

    def test_wsgi_input_reads_lines_and_pieces(self):
        body = b"".join(b"line %d\n" % i for i in range(1000)) + b"last"
        self.assertEqual(self.request("POST", "/lines", body=body)[1], b"1001 b'line 0\\n' b'last'")
        self.assertEqual(self.request("POST", "/count", body=iter([body[:5000], body[5000:]]), chunked=True)[1],
                         str(len(body)).encode())

    def test_an_upload_is_never_held_whole(self):
        def rss():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

        size = 256 * 1024 * 1024
        with parallel.wsgi_server(app, port=0, workers=1, max_body=size) as big:
            before = rss()
            connection = http.client.HTTPConnection(*big.address, timeout=60)
            try:
                piece = b"u" * (1 << 20)
                connection.request("POST", "/count", body=(piece for _ in range(size >> 20)), encode_chunked=True)
                self.assertEqual(connection.getresponse().read(), str(size).encode())
            finally:
                connection.close()
            grown = rss() - before
        self.assertLess(grown, size // 4, f"RSS grew by {grown >> 20} MB for a {size >> 20} MB upload")

    def test_head_has_no_body(self):
        status, body, response = self.request("HEAD", "/word?hello")
        self.assertEqual((status, body, response.getheader("Content-Length")), (200, b"", "7"))

    def test_bad_requests(self):
        self.assertIn(b" 400 ", raw(self.server, b"NOT A REQUEST\r\n\r\n")[:20])
        huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        self.assertIn(b" 431 ", raw(self.server, huge)[:20])
        # Both framings (either order, after an honest request on the same connection): 400 and
        # the connection closes, so the request hidden behind it is never answered.
        smuggled = b"GET /word?hello HTTP/1.1\r\nHost: x\r\n\r\n"
        honest = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        for framing in (b"Content-Length: 5\r\nTransfer-Encoding: chunked", b"Transfer-Encoding: chunked\r\nContent-length: 5",
                        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nContent-Length: 5"):
            with self.subTest(framing=framing):
                both = b"POST /echo HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n0\r\n\r\n" + smuggled
                answered = raw(self.server, honest + both)
                self.assertEqual(answered.count(b"HTTP/1.1 "), 2, answered)
                self.assertIn(b"HTTP/1.1 200 OK", answered)
                self.assertIn(b"HTTP/1.1 400 Bad Request", answered)
                self.assertNotIn(b"bonjour", answered)
        self.assertEqual(self.request("POST", "/echo", body=b"x" * 100_001)[0], 413)
        # The server answers 413 and closes while the client may still be sending its last
        # chunks: that send can then fail (EPIPE, or a reset) before the answer is read. A few
        # tries; the 413 must come.
        for _ in range(5):
            chunked = (b"x" * 50_000 for _ in range(3))
            try:
                status = self.request("POST", "/echo", body=chunked, chunked=True)[0]
                break
            except (BrokenPipeError, ConnectionResetError):
                status = None
        self.assertEqual(status, 413)

    def test_a_client_too_slow_to_send_its_headers_is_cut(self):
        with socket.create_connection(self.server.address, timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and nothing more: the timeout is 1 s
            received = sock.recv(65536)
            while received and not received.endswith(b"\r\n\r\n") and b"Content-Length" not in received:
                more = sock.recv(65536)
                if not more:
                    break
                received += more
        # hyper closes the connection (408 or nothing) once the header timeout is up.
        self.assertTrue(received == b"" or received.startswith(b"HTTP/1.1 408"), received[:40])

    def test_application_failures_are_500_and_the_workers_go_on(self):
        for path in ("/fail", "/bad-status", "/bad-header", "/not-bytes", "/px"):
            with self.subTest(path=path):
                status, body, _ = self.request("GET", path)
                self.assertEqual((status, body), (500, b"Internal Server Error\n"))
        self.assertEqual(UNPROTECTED, [])
        connection = http.client.HTTPConnection(*self.server.address, timeout=10)
        try:  # a 500 leaves the connection usable
            self.assertEqual(self.request("GET", "/fail", connection=connection)[0], 500)
            self.assertEqual(self.request("GET", "/word?hello", connection=connection)[1], b"bonjour")
        finally:
            connection.close()
        # Failing once the headers went out: the response is cut short, never completed.
        with self.assertRaises((http.client.IncompleteRead, ConnectionError)):
            self.request("GET", "/fail-late")
        for _ in range(4):
            self.assertEqual(self.request("GET", "/word?hello")[1], b"bonjour")

    def test_a_client_that_leaves_mid_response_costs_nothing(self):
        with socket.create_connection(self.server.address, timeout=10) as sock:
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1000)
        for _ in range(4):
            self.assertEqual(self.request("GET", "/word?hello")[1], b"bonjour")

    def test_a_thousand_idle_keep_alive_connections_are_held_until_the_timeout(self):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 4096:
            self.skipTest(f"needs 4096 file descriptors, the limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
        request = b"GET /word?hello HTTP/1.1\r\nHost: x\r\n\r\n"

        def answered(sock):  # the headers and the body may come in two pieces
            received = b""
            while not received.endswith(b"bonjour"):
                piece = sock.recv(65536)
                if not piece:
                    return False
                received += piece
            return True

        idle = []
        server = parallel.wsgi_server(app, port=0, workers=2, timeout=3.0)
        try:
            for _ in range(1000):
                sock = socket.create_connection(server.address, timeout=10)
                idle.append(sock)
                sock.sendall(request)
            for sock in idle:  # each answered, then left open and idle
                self.assertTrue(answered(sock))
            newcomer = http.client.HTTPConnection(*server.address, timeout=10)
            newcomer.request("GET", "/word?hello")
            self.assertEqual(newcomer.getresponse().read(), b"bonjour")
            newcomer.close()
            for sock in idle:  # and each idle one still works
                sock.sendall(request)
            for sock in idle:
                self.assertTrue(answered(sock))
            # Idle longer than the server's timeout (3 s here): closed, as a keep-alive timeout.
            time.sleep(4)
            self.assertEqual({sock.recv(65536) for sock in idle}, {b""})
        finally:
            for sock in idle:
                sock.close()
            server.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def test_curl(self):
        curl = client(self, "curl")
        result = subprocess.run([curl, "-s", "-i", f"{self.server.url}/word?hello"], capture_output=True, timeout=30)
        self.assertTrue(result.stdout.startswith(b"HTTP/1.1 200 OK"), result.stdout[:50])
        self.assertTrue(result.stdout.endswith(b"\r\n\r\nbonjour"))

    def wrk(self, path, script=None):
        """wrk's report of 1 s of load on `path` (2 threads, 16 connections)."""
        command = [client(self, "wrk"), "-t2", "-c16", "-d1s", "--timeout", "5s", f"{self.server.url}{path}"]
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
            if script:
                lua.write(script)
                lua.flush()
                command[1:1] = ["-s", lua.name]
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def assert_all_answered(self, report):
        requests = int(re.search(r"(\d+) requests in", report).group(1))
        self.assertGreater(requests, 100, report)
        self.assertNotIn("Non-2xx", report)  # every answer a 200
        self.assertNotIn("Socket errors", report)  # no refused, cut or timed-out connection
        return requests

    def test_wrk(self):
        self.assert_all_answered(self.wrk("/word?hello"))
        # POST bodies, and a response check in the script: each answer is the body sent.
        checked = self.wrk("/echo", script="""
wrk.method = "POST"
wrk.body = "ping"
wrk.headers["Content-Type"] = "text/plain"
bad = 0
response = function(status, headers, body)
  if body ~= "ping" then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("bad bodies: %d\\n", bad))
end
""")
        self.assert_all_answered(checked)
        self.assertIn("bad bodies: 0", checked)
        # Pipelined: wrk sends 4 requests at once on each connection.
        self.assert_all_answered(self.wrk("/word?hello", script="""
init = function(args)
  local r = {}
  for i = 1, 4 do r[i] = wrk.format("GET", "/word?hello") end
  req = table.concat(r)
end
request = function() return req end
"""))


class Errors(unittest.TestCase):
    def test_what_cannot_be_served(self):
        with self.assertRaisesRegex(TypeError, "WSGI application"):
            parallel.wsgi_server(42, port=0, workers=1)
        with self.assertRaisesRegex(ValueError, "module-level name"):
            parallel.wsgi_server(lambda environ, start_response: [], port=0, workers=1)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            with self.assertRaises(OSError) as raised:
                parallel.wsgi_server(app, port=taken.getsockname()[1], workers=1)
            self.assertIn("cannot listen on 127.0.0.1", str(raised.exception))

    def test_close_answers_the_requests_still_waiting_for_a_worker(self):
        import threading
        server = parallel.wsgi_server(app, port=0, workers=1)
        answers = []
        sent = threading.Semaphore(0)

        def ask():
            connection = http.client.HTTPConnection(*server.address, timeout=30)
            try:
                connection.request("GET", "/sleep")
                sent.release()
                answers.append(connection.getresponse().read())
            finally:
                connection.close()

        clients = [threading.Thread(target=ask) for _ in range(3)]
        for client_ in clients:
            client_.start()
        for _ in clients:
            sent.acquire(timeout=30)
        time.sleep(0.3)  # read by the server: one request runs (0.5 s), two wait in the queue
        server.close()
        for client_ in clients:
            client_.join(30)
        self.assertEqual(answers, [b"slept"] * 3)


SERVED_MODULE = """
import parallel
BUILDS = []

def build():
    BUILDS.append(1)
    return {f"k{i}": f"v{i}" for i in range(1000)}

TABLE = parallel.share(build())
HITS = parallel.protect(0)

def app(environ, start_response):
    global HITS
    HITS += 1
    if environ["PATH_INFO"] == "/slow":  # in flight while the server is told to stop
        import os, time
        open(os.path.join(os.getcwd(), "in-flight"), "w").close()
        time.sleep(0.5)
    if environ["PATH_INFO"] == "/fail":
        raise ValueError("this route fails")
    body = f"{TABLE.get(environ['QUERY_STRING'], '?')} builds={len(BUILDS)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


class Command(unittest.TestCase):
    """pyhost --engine parallel -m parallel.serve MODULE:APP"""

    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        with open(os.path.join(self.folder.name, "served_app.py"), "w") as module:
            module.write(SERVED_MODULE)
        with open(os.path.join(self.folder.name, "broken_app.py"), "w") as module:
            module.write("raise ImportError('this module cannot be imported')\n")

    def tearDown(self):
        self.folder.cleanup()

    def command(self, *args):
        return [sys.executable, "-m", "parallel.serve", *args]

    def run_command(self, *args):
        return subprocess.run(self.command(*args), cwd=self.folder.name, capture_output=True, text=True, timeout=60)

    def start(self):
        server = subprocess.Popen(self.command("served_app:app", "--port", "0", "--workers", "2"),
                                  cwd=self.folder.name, stderr=subprocess.PIPE, text=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        line = server.stderr.readline()
        url = re.search(r"on (http://\S+)", line)
        if url is None:
            server.kill()
            self.fail(f"the server did not start: {line}{server.communicate()[1]}")
        host, port = url.group(1)[len("http://"):].split(":")
        return server, host, int(port)

    def test_sigterm_answers_the_request_in_flight_then_exits_143(self):
        import threading
        server, host, port = self.start()
        answers = []

        def slow_request():
            connection = http.client.HTTPConnection(host, port, timeout=30)
            try:
                connection.request("GET", "/slow?k3")
                answers.append(connection.getresponse().read())
            finally:
                connection.close()

        client = threading.Thread(target=slow_request)
        client.start()
        marker = os.path.join(self.folder.name, "in-flight")
        deadline = time.monotonic() + 30
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGTERM)
        client.join(30)
        server.communicate(timeout=30)
        self.assertEqual(answers, [b"v3 builds=0"])
        self.assertEqual(server.returncode, 143)

    def test_sigterm_right_after_the_start_up_line_still_exits_143(self):
        # The signal can come before serve_forever() is entered: the server closes anyway
        # (it once left its workers serving and the exit waiting for them forever).
        for _ in range(5):
            server, _, _ = self.start()
            server.send_signal(signal.SIGTERM)
            try:
                server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
                self.fail("the server did not exit within 30 s of SIGTERM")
            self.assertEqual(server.returncode, 143)

    def test_serving_a_module_builds_its_data_once(self):
        server, host, port = self.start()
        try:
            bodies = []
            for key in ("k5", "k999", "nope", "k1"):
                connection = http.client.HTTPConnection(host, port, timeout=10)
                try:
                    connection.request("GET", f"/?{key}")
                    bodies.append(connection.getresponse().read())
                finally:
                    connection.close()
            # build() ran in main only: the workers read main's table.
            self.assertEqual(bodies, [b"v5 builds=0", b"v999 builds=0", b"? builds=0", b"v1 builds=0"])
        finally:
            server.send_signal(signal.SIGINT)
            server.communicate(timeout=30)
        self.assertIn(server.returncode, (130, -signal.SIGINT))

    def logged(self, environment, *paths):
        """What the server writes on stderr while answering `paths`, with `environment`."""
        with socket.socket() as probe:  # a free port: the start-up line may be filtered out
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(self.command("served_app:app", "--port", str(port), "--workers", "1",
                                               "--access-log"),
                                  cwd=self.folder.name, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **environment})
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
                    connection.close()
                    break
                except ConnectionRefusedError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        self.fail(f"the server did not start: {server.communicate()[1]}")
                    time.sleep(0.05)
            for path in paths:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    connection.request("GET", path)
                    connection.getresponse().read()
                finally:
                    connection.close()
        finally:
            server.terminate()
            logged = server.communicate(timeout=30)[1]
        return logged

    def test_the_log_goes_through_pyhost_log(self):
        # By default: the start-up line, the access log (asked for) and the application's errors.
        logged = self.logged({"PYHOST_LOG": ""}, "/x?k2", "/fail")
        lines = logged.splitlines()
        self.assertRegex(lines[0], r" INFO parallel: serving served_app:app on http://127\.0\.0\.1:\d+ \(1 worker\)$")
        self.assertTrue(lines[1].endswith(' INFO parallel: 127.0.0.1 - "GET /x?k2 HTTP/1.1" 200 11'), lines[1])
        self.assertTrue(lines[2].endswith(" ERROR parallel: GET /fail failed:"), lines[2])
        self.assertIn("ValueError: this route fails", logged)
        self.assertTrue(lines[-1].endswith(' INFO parallel: 127.0.0.1 - "GET /fail HTTP/1.1" 500 22'), lines[-1])
        # PYHOST_LOG filters them as any of pyhost's messages: errors only, or nothing.
        logged = self.logged({"PYHOST_LOG": "engine=error"}, "/x?k2", "/fail")
        self.assertNotIn("INFO", logged)
        self.assertIn(" ERROR parallel: GET /fail failed:", logged)
        self.assertIn("ValueError: this route fails", logged)
        self.assertEqual(self.logged({"PYHOST_LOG": "off"}, "/x?k2", "/fail"), "")

    def test_out_of_file_descriptors_is_logged_and_survived(self):
        import resource
        server, host, port = self.start()
        try:
            limits = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
            in_use = len(os.listdir(f"/proc/{server.pid}/fd"))
            resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (in_use + 2, limits[1]))
            starved_from = time.monotonic()
            waiting = [socket.create_connection((host, port), timeout=10) for _ in range(6)]
            time.sleep(0.5)  # the accepts past the limit fail meanwhile
            for sock in waiting:
                sock.close()
            resource.prlimit(server.pid, resource.RLIMIT_NOFILE, limits)
            starved = time.monotonic() - starved_from
            connection = http.client.HTTPConnection(host, port, timeout=10)
            try:  # the listener stayed
                connection.request("GET", "/?k7")
                self.assertEqual(connection.getresponse().read(), b"v7 builds=0")
            finally:
                connection.close()
        finally:
            server.terminate()
            logged = server.communicate(timeout=30)[1]
        self.assertIn(" WARN parallel: a server cannot accept a connection: Too many open files", logged)
        # Said once a second at most, for as long as accepts failed (about 0.5 s here).
        self.assertLessEqual(logged.count("cannot accept"), 1 + int(starved), logged)

    def test_what_it_refuses(self):
        bad = self.run_command("no-colon")
        self.assertEqual(bad.returncode, 2)
        self.assertIn("expected MODULE:APP", bad.stderr)
        broken = self.run_command("broken_app:app", "--port", "0")
        self.assertEqual(broken.returncode, 2)
        self.assertIn("parallel.serve: cannot import broken_app: ImportError: this module cannot be imported",
                      broken.stderr)
        missing = self.run_command("served_app:nothing", "--port", "0")
        self.assertEqual(missing.returncode, 2)
        self.assertIn("served_app has no WSGI application 'nothing'", missing.stderr)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            in_use = self.run_command("served_app:app", "--port", str(taken.getsockname()[1]), "--workers", "1")
        self.assertEqual(in_use.returncode, 2)
        self.assertIn("cannot listen on 127.0.0.1", in_use.stderr)


if __name__ == "__main__":
    unittest.main()
