"""The WSGI application bench/wsgi_servers.py serves with every server (stdlib only).

Routes: /plaintext, /json, /work (~1 ms of pure Python), /table?KEY (a lookup in TABLE, a
~70 MB read-only str -> str table built when BENCH_TABLE=1: `parallel.share()`d under
`pyhost --engine parallel`, a plain dict elsewhere).
"""

import json
import os


def build_table():
    return {f"key {i:07d}": f"value {i:07d} " + "x" * 24 for i in range(500_000)}


if os.environ.get("BENCH_TABLE") == "1":
    try:
        import parallel
    except ImportError:  # another server: every process builds and holds its own copy
        TABLE = build_table()
    else:
        TABLE = parallel.share(build_table())
else:
    TABLE = {}


def work():
    total = 0
    for i in range(12_000):
        total += i * i % 7
    return total


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/plaintext":
        body = b"Hello, World!"
        content_type = "text/plain"
    elif path == "/json":
        body = json.dumps({"message": "Hello, World!"}).encode()
        content_type = "application/json"
    elif path == "/work":
        body = str(work()).encode()
        content_type = "text/plain"
    elif path == "/table":
        body = TABLE.get(environ["QUERY_STRING"].replace("%20", " "), "?").encode()
        content_type = "text/plain"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
