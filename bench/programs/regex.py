"""Regular expressions: compile, search, findall, sub and split over
generated log-like text.  Exercises the re module (C engine) plus
Python-level callbacks and match object handling.

Self-contained, deterministic; prints a checksum line.
"""
import re
import sys

LINES = 30_000


def make_text(n):
    levels = ["INFO", "WARN", "ERROR", "DEBUG"]
    hosts = ["alpha.example.com", "beta.example.org", "gamma.local", "10.0.3.17"]
    out = []
    x = 42
    for i in range(n):
        x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
        h = x >> 8          # low LCG bits have short periods; use the high ones
        lvl = levels[h % 4]
        host = hosts[(h >> 2) % 4]
        ms = (h >> 4) % 5000
        user = f"user{(h >> 6) % 300}"
        out.append(
            f"2024-{1 + (h >> 3) % 12:02d}-{1 + (h >> 7) % 28:02d} "
            f"{(h >> 9) % 24:02d}:{(h >> 11) % 60:02d}:{(h >> 13) % 60:02d} "
            f"[{lvl}] host={host} user={user} took={ms}ms "
            f"msg=\"request {i} path=/api/v{1 + h % 3}/items/{h % 9973}?q={h % 97}\""
        )
    return "\n".join(out)


LINE_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2}) (?P<time>\d{2}:\d{2}:\d{2}) "
    r"\[(?P<level>[A-Z]+)\] host=(?P<host>\S+) user=(?P<user>\w+) "
    r"took=(?P<ms>\d+)ms msg=\"(?P<msg>[^\"]*)\"$",
    re.M,
)
PATH_RE = re.compile(r"/api/v(\d)/items/(\d+)\?q=(\d+)")
IP_RE = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
WORD_RE = re.compile(r"[A-Za-z]+")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else LINES
    text = make_text(n)
    checksum = 0
    per_level = {}
    slow = 0
    for m in LINE_RE.finditer(text):
        lvl = m.group("level")
        per_level[lvl] = per_level.get(lvl, 0) + 1
        ms = int(m.group("ms"))
        if ms > 4000:
            slow += 1
        p = PATH_RE.search(m.group("msg"))
        if p:
            checksum = (checksum + int(p.group(1)) * int(p.group(2)) + int(p.group(3))) % 1_000_000_007
    ips = len(IP_RE.findall(text))
    words = WORD_RE.findall(text)
    redacted = re.sub(r"user(\d+)", lambda m: "u" + str(int(m.group(1)) % 7), text)
    fields = re.split(r"[\s=]+", redacted)
    swapped = re.sub(r"(\d{4})-(\d{2})-(\d{2})", r"\3/\2/\1", text)
    case_ins = len(re.findall(r"error|warn", text, re.I))
    checksum = (checksum + len(redacted) + len(fields) + len(swapped) + len(words) * 3
                + ips * 5 + case_ins * 7 + slow) % 1_000_000_007
    levels = ",".join(f"{k}:{v}" for k, v in sorted(per_level.items()))
    print(f"regex lines={n} levels={levels} checksum={checksum}")


if __name__ == "__main__":
    main()
