"""Third-party blocking clients, unchanged, made concurrent by `stackless.patch_all()`:
requests (over urllib3) fetching from a local HTTP server in 1,000 tasklets at once, and
redis-py against a real redis-server from 1,000 tasklets. Run by host/tests/stackless_clients.rs
with the python of a venv made by pyhost that has requests and redis installed, under
`--engine stackless`:

    python real_clients.py REDIS_PORT
"""

import sys
import time

import stackless

stackless.patch_all()

import http.server  # noqa: E402  (after patch_all, as a program would)
import socketserver  # noqa: E402

import redis  # noqa: E402
import requests  # noqa: E402

TASKLETS = 1000


def run_until(predicate, seconds):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        stackless.sleep(0.01)
    return predicate()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    inside = 0
    most_inside = 0

    def do_GET(self):
        cls = type(self)
        cls.inside += 1
        cls.most_inside = max(cls.most_inside, cls.inside)
        time.sleep(0.05)  # other connections' tasklets run meanwhile
        cls.inside -= 1
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TaskletServer(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 2048

    def process_request(self, request, client_address):
        stackless.tasklet(self._serve)(request, client_address)

    def _serve(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


def check_requests():
    server = TaskletServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    stackless.tasklet(server.serve_forever)(0.05)
    answers = []

    def fetch(i):
        response = requests.get(f"http://127.0.0.1:{port}/item/{i}", timeout=60)
        answers.append((response.status_code, response.text))

    started = time.monotonic()
    for i in range(TASKLETS):
        stackless.tasklet(fetch)(i)
    assert run_until(lambda: len(answers) == TASKLETS, 120), f"{len(answers)} of {TASKLETS} answers"
    took = time.monotonic() - started
    assert sorted(answers) == sorted((200, f"/item/{i}") for i in range(TASKLETS)), "wrong answers"
    # 1,000 handlers of 50 ms each, one after the other, would take 50 s.
    assert Handler.most_inside >= 50, f"at most {Handler.most_inside} requests were handled at once"
    server._BaseServer__shutdown_request = True
    server.server_close()
    print(f"requests: {TASKLETS} GETs in {took:.2f} s, up to {Handler.most_inside} handled at once", flush=True)


def check_redis(port):
    # A connection per blocked tasklet (redis-py 8 bounds its pool by default).
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60, max_connections=TASKLETS + 10)
    client.flushall()
    popped = []

    def waiter(i):
        # BLPOP blocks on the server until something is pushed: 1,000 at once, each on its
        # own connection, only possible if a blocked tasklet does not block the thread.
        key, value = client.blpop([f"list:{i}"], timeout=60)
        popped.append((key.decode(), value.decode()))
        client.set(f"done:{i}", i)

    started = time.monotonic()
    for i in range(TASKLETS):
        stackless.tasklet(waiter)(i)
    assert run_until(lambda: client.info("clients")["blocked_clients"] == TASKLETS, 60), \
        f"{client.info('clients')['blocked_clients']} clients blocked in BLPOP"
    for i in range(TASKLETS):
        client.rpush(f"list:{i}", f"value {i}")
    assert run_until(lambda: len(popped) == TASKLETS, 60), f"{len(popped)} of {TASKLETS} popped"
    took = time.monotonic() - started
    assert sorted(popped) == sorted((f"list:{i}", f"value {i}") for i in range(TASKLETS))
    assert [int(v) for v in client.mget([f"done:{i}" for i in range(TASKLETS)])] == list(range(TASKLETS))
    print(f"redis: {TASKLETS} BLPOPs blocked at once, all answered in {took:.2f} s", flush=True)


if __name__ == "__main__":
    check_requests()
    check_redis(int(sys.argv[1]))
    print("OK", flush=True)
