"""A workload for running the stackless engine under Valgrind (memcheck, cachegrind, callgrind).

A ring of 100 tasklets passes a token over channels 2,000 times, with far more tasklets than
shared C stacks per thread (8, see engines/stackless/src/stack.rs), so tasklets' stack bytes
are copied off and back onto shared stacks at nearly every switch; plus a producer/consumer
pair. Under Valgrind the shared stacks are registered stacks (VALGRIND_STACK_REGISTER, made by
corosensei when it maps them), so a tasklet switch is no "client switching stacks?"; and the
stack copying tells memcheck what it does below a stack pointer (client requests in
engines/stackless/src/valgrind.rs), so memcheck reports no invalid reads or writes.

Run: valgrind --tool=memcheck --error-exitcode=99 target/release/pyhost --engine stackless \
    tests/python/valgrind/stackless_ring.py
Expected: exit status 0, "ERROR SUMMARY: 0 errors from 0 contexts", no "switching stacks" in
Valgrind's output. It prints "ring ok", "pipe ok" and the engine's counters (the bytes copied
depend on the build's frame sizes); it exits 1 if a result is wrong.
"""

import sys

import stackless
import _stackless_core

RING = 100
PASSES = 2_000
ITEMS = 1_000


def ring():
    channels = [stackless.channel() for _ in range(RING)]
    seen = [0] * RING

    def member(i):
        inbox, outbox = channels[i], channels[(i + 1) % RING]
        while True:
            token = inbox.receive()
            if token is None:
                outbox.send(None)
                return
            seen[i] += 1
            outbox.send(token + 1 if token + 1 < PASSES else None)

    for i in range(RING):
        stackless.tasklet(member)(i)
    channels[0].send(0)
    stackless.run()
    # The token made PASSES hops, then None went once around the ring.
    return sum(seen)


def pipe():
    ch = stackless.channel()
    received = []

    def producer():
        for i in range(ITEMS):
            ch.send(i)
        ch.send(None)

    def consumer():
        while (item := ch.receive()) is not None:
            received.append(item * 2)

    stackless.tasklet(producer)()
    stackless.tasklet(consumer)()
    stackless.run()
    return received


def main():
    hops = ring()
    if hops != PASSES:
        print(f"ring FAILED: {hops} hops, expected {PASSES}")
        return 1
    print("ring ok")
    received = pipe()
    if received != [i * 2 for i in range(ITEMS)]:
        print(f"pipe FAILED: {len(received)} items")
        return 1
    print("pipe ok")
    stats = _stackless_core.stats()
    print("switches", stats["switches"], "evictions", stats["stack_evictions"],
          "bytes copied", stats["stack_bytes_copied"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
