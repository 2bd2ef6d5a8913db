"""Naive recursive Fibonacci: pure Python call overhead.

Self-contained, deterministic; prints a checksum line.
"""
import sys

N = 32


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else N
    total = 0
    for k in range(n - 2, n + 1):
        total += fib(k)
    print(f"fib n={n} sum(fib({n - 2}..{n}))={total}")


if __name__ == "__main__":
    main()
