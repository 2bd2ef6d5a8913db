"""Generator pipeline plus string building/joining.

Chains of generators (yield, yield from, generator expressions) feeding
string formatting, splitting and joining.  Deterministic; prints a
checksum line.
"""
import sys

N = 300_000


def numbers(n):
    x = 12345
    for _ in range(n):
        # small LCG so the data is deterministic but not trivially regular
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        yield x


def scaled(it):
    for v in it:
        yield v % 10007


def only_odd(it):
    for v in it:
        if v & 1:
            yield v


def chunks(it, size):
    buf = []
    for v in it:
        buf.append(v)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def flatten(nested):
    for seq in nested:
        yield from seq


def words(it):
    for v in it:
        yield f"w{v:x}"


def lines(n):
    for chunk in chunks(words(only_odd(scaled(numbers(n)))), 7):
        yield "-".join(chunk)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else N
    checksum = 0
    nlines = 0
    total_len = 0
    for rnd in range(4):
        text = "\n".join(lines(n))
        total_len += len(text)
        parts = (line.split("-") for line in text.splitlines())
        lengths = (len(p) for p in flatten(parts))
        s = sum(lengths)
        upper = "".join(c.upper() for c in text[: 2000 + rnd])
        rev = "".join(reversed(text[-500:]))
        nlines += text.count("\n") + 1
        checksum = (checksum * 31 + s + len(rev)
                    + sum(ord(ch) for ch in upper[:200])) % 1_000_000_007
    print(f"generators n={n} lines={nlines} len={total_len} checksum={checksum}")


if __name__ == "__main__":
    main()
