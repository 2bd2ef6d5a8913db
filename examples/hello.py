"""Hello from pyhost: shows which engine runs this program, then does a little work.

    pyhost --engine stock examples/hello.py
"""

import sys

try:
    import pyhost
except ImportError:  # plain python3: still runs, just says so
    pyhost = None


def primes(limit):
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit + 1, n)))
    return [n for n, is_prime in enumerate(sieve) if is_prime]


if __name__ == "__main__":
    if pyhost is None:
        print(f"Hello from plain Python {sys.version.split()[0]} (not pyhost)")
    else:
        print(f"Hello from pyhost {pyhost.host_version}, engine {pyhost.engine!r} {pyhost.engine_version}")
        print(f"  engines available: {', '.join(pyhost.engines())}")
    print(f"  Python {sys.version.split()[0]}, sys.executable={sys.executable}")
    found = primes(100_000)
    print(f"  {len(found)} primes below 100000; the last is {found[-1]}")
