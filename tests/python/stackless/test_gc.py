"""The stackless engine and the cyclic garbage collector: a started tasklet that nothing can
wake any more (blocked on a channel only it and other garbage reach, or paused and dropped)
is collected as Stackless collects it — killed with TaskletExit (its finally blocks run) and
freed — while a tasklet something can still wake is left alone.

Run standalone: `pyhost --engine stackless tests/python/stackless/test_gc.py`.
"""

import gc
import socket
import sys
import threading
import unittest
import weakref

import stackless
from stackless_support import StacklessTestCase, TaskletExit


def fibers_alive():
    return stackless._core.stats()["fibers_alive"]


class Payload:
    """Something a blocked tasklet holds, to watch it being freed."""


def collect_and_run():
    """One collection, then let the tasklets it killed run to their end."""
    gc.collect()
    stackless.run()
    gc.collect()


class BlockedOnAChannel(StacklessTestCase):
    def spawn_receivers(self, count, log):
        """`count` tasklets blocked in receive() on channels only they hold; returns weak
        references to (tasklet, channel, payload) of each."""

        def receiver(ch, name, payload):
            try:
                ch.receive()
                log.append(("received", name))
            finally:
                log.append(("finally", name))

        refs = []
        for name in range(count):
            ch, payload = stackless.channel(), Payload()
            t = stackless.tasklet(receiver)(ch, name, payload)
            refs.append((weakref.ref(t), weakref.ref(ch), weakref.ref(payload)))
        stackless.run()
        return refs

    def test_unreachable_receivers_are_killed_and_freed(self):
        log = []
        before = fibers_alive()
        refs = self.spawn_receivers(5, log)
        self.assertTrue(all(t().blocked for t, _, _ in refs))
        self.assertEqual(fibers_alive(), before + 5)
        collect_and_run()
        self.assertEqual(sorted(log), [("finally", n) for n in range(5)])
        for t, ch, payload in refs:
            self.assertIsNone(t())
            self.assertIsNone(ch())
            self.assertIsNone(payload())
        self.assertEqual(fibers_alive(), before)

    def test_a_blocked_sender_and_its_value_are_freed(self):
        log = []

        def sender(ch):
            try:
                ch.send(Payload())
            except TaskletExit:
                log.append("killed")
                raise

        ch = stackless.channel()
        t = stackless.tasklet(sender)(ch)
        stackless.run()
        value = weakref.ref(t.tempval)
        t_ref, ch_ref = weakref.ref(t), weakref.ref(ch)
        del t, ch
        collect_and_run()
        self.assertEqual(log, ["killed"])
        self.assertIsNone(t_ref())
        self.assertIsNone(ch_ref())
        self.assertIsNone(value())

    def test_a_reachable_channel_keeps_its_tasklet(self):
        log = []
        ch = stackless.channel()

        def receiver():
            log.append(ch.receive())

        t = weakref.ref(stackless.tasklet(receiver)())
        stackless.run()
        gc.collect()
        stackless.run()
        self.assertIsNotNone(t())
        self.assertTrue(t().blocked)
        ch.send("hello")
        self.assertEqual(log, ["hello"])

    def test_a_tasklet_held_from_outside_is_kept(self):
        held = []

        def receiver():
            stackless.channel().receive()

        held.append(stackless.tasklet(receiver)())
        stackless.run()
        gc.collect()
        stackless.run()
        self.assertTrue(held[0].blocked)
        held[0].kill()
        self.assertFalse(held[0].alive)

    def test_a_tasklet_that_references_itself_is_collected(self):
        log = []

        def receiver():
            me = stackless.getcurrent()
            me.mine = stackless.channel()
            try:
                me.mine.receive()
            finally:
                log.append("finally")

        t = weakref.ref(stackless.tasklet(receiver)())
        stackless.run()
        collect_and_run()
        self.assertEqual(log, ["finally"])
        self.assertIsNone(t())

    def test_blocked_deep_in_calls_and_with_a_bound_method(self):
        log = []

        def deep(ch, depth):
            if depth:
                return deep(ch, depth - 1)
            receive = ch.receive  # a bound method: another way of making the call
            try:
                return receive()
            finally:
                log.append("finally")

        refs = []
        for _ in range(3):
            ch = stackless.channel()
            refs.append(weakref.ref(stackless.tasklet(deep)(ch, 50)))
        del ch
        stackless.run()
        collect_and_run()
        self.assertEqual(log, ["finally"] * 3)
        self.assertTrue(all(r() is None for r in refs))

    def test_blocked_through_the_python_implementation(self):
        # A channel callback sends every channel operation through stackless.py.
        calls = []
        stackless.set_channel_callback(lambda *args: calls.append(len(args)))  # keeps no tasklet
        try:
            log = []
            refs = self.spawn_receivers(3, log)
            collect_and_run()
        finally:
            stackless.set_channel_callback(None)
        self.assertTrue(calls)
        self.assertEqual(len([entry for entry in log if entry[0] == "finally"]), 3)
        self.assertTrue(all(t() is None for t, _, _ in refs))

    def test_two_tasklets_blocked_on_each_others_channels(self):
        log = []

        def waiter(mine, name):
            try:
                mine.receive()
            finally:
                log.append(name)

        a, b = stackless.channel(), stackless.channel()
        a.peer, b.peer = b, a  # a cycle between the two channels
        ta = weakref.ref(stackless.tasklet(waiter)(a, "a"))
        tb = weakref.ref(stackless.tasklet(waiter)(b, "b"))
        del a, b
        stackless.run()
        collect_and_run()
        self.assertEqual(sorted(log), ["a", "b"])
        self.assertIsNone(ta())
        self.assertIsNone(tb())

    def test_a_tasklet_that_refuses_to_die_is_left_not_crashed(self):
        # Killed once by the collector, it catches TaskletExit and blocks again on a channel
        # nobody has: Stackless finalizes an object once, so it now stays (no crash, no loop).
        log = []

        def stubborn():
            try:
                stackless.channel().receive()
            except TaskletExit:
                log.append("caught")
            stackless.channel().receive()

        t = weakref.ref(stackless.tasklet(stubborn)())
        stackless.run()
        gc.collect()
        stackless.run()
        gc.collect()
        gc.collect()
        self.assertEqual(log, ["caught"])
        if t() is not None:
            self.assertTrue(t().blocked)
            t().kill()

    def test_the_channel_is_visible_to_gc(self):
        ch = stackless.channel()

        def receiver(ch):
            ch.receive()

        t = stackless.tasklet(receiver)(ch)
        stackless.run()
        self.assertIn(ch, gc.get_referents(t))
        ch.send(None)


class Paused(StacklessTestCase):
    def test_a_dropped_paused_tasklet_is_killed(self):
        log = []

        def pauser():
            try:
                stackless.schedule_remove()
            finally:
                log.append("finally")

        t = stackless.tasklet(pauser)()
        stackless.run()
        self.assertTrue(t.paused)
        ref = weakref.ref(t)
        del t
        collect_and_run()
        self.assertEqual(log, ["finally"])
        self.assertIsNone(ref())


class LeftAlone(StacklessTestCase):
    def test_inside_a_generator_the_tasklet_is_kept(self):
        # Collecting it would finalize a generator that is running: it stays, silently.
        unraisable = []
        old_hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
        try:

            def messages(ch):
                while True:
                    yield ch.receive()

            def consumer(ch):
                for _ in messages(ch):
                    pass

            ch = stackless.channel()
            t = stackless.tasklet(consumer)(ch)
            ch_ref, t_ref = weakref.ref(ch), weakref.ref(t)
            del ch, t
            stackless.run()
            gc.collect()
            stackless.run()
            self.assertIsNotNone(t_ref())
            self.assertTrue(t_ref().blocked)
            ch_ref().send("last")
            t_ref().kill()
        finally:
            sys.unraisablehook = old_hook
        self.assertEqual(unraisable, [])

    def test_a_tasklet_waiting_for_io_is_kept(self):
        # Data may still arrive on its socket: the reactor holds it, as gevent's hub does.
        a, b = socket.socketpair()
        got = []

        def reader(sock):
            stackless.wait_readable(sock)
            got.append(sock.recv(10))
            sock.close()

        stackless.tasklet(reader)(a)
        del a
        stackless.schedule()  # it now waits in the reactor
        gc.collect()
        b.send(b"late")
        stackless.run()
        self.assertEqual(got, [b"late"])
        b.close()

    def test_a_sleeping_tasklet_is_kept(self):
        log = []

        def sleeper():
            stackless.sleep(0.05)
            log.append("woke")

        stackless.tasklet(sleeper)()
        stackless.schedule()
        gc.collect()
        stackless.run()
        self.assertEqual(log, ["woke"])


class OtherThreads(StacklessTestCase):
    def test_another_threads_garbage_tasklet_is_killed_in_its_thread(self):
        log = []
        blocked = threading.Event()
        finish = stackless.channel()  # crosses threads: the thread's main waits on it

        def receiver():
            try:
                stackless.channel().receive()
            finally:
                log.append(threading.current_thread().name)

        def thread_main():
            stackless.tasklet(receiver)()
            stackless.schedule()
            blocked.set()
            finish.receive()
            stackless.run()

        thread = threading.Thread(target=thread_main, name="worker")
        thread.start()
        self.assertTrue(blocked.wait(10))
        gc.collect()
        finish.send(None)
        thread.join(10)
        self.assertFalse(thread.is_alive())
        self.assertEqual(log, ["worker"])


class LongRunningServer(StacklessTestCase):
    def test_lost_handlers_do_not_accumulate(self):
        # A server whose handlers wait on per-connection channels that get dropped: with
        # collection, the number of live fibers stays flat over many rounds.
        before = fibers_alive()
        finished = []

        def handler(ch, state):
            try:
                ch.receive()
            finally:
                finished.append(1)

        for _ in range(20):
            for _ in range(500):
                stackless.tasklet(handler)(stackless.channel(), {"buffer": bytearray(1024)})
            stackless.run()
            self.assertLessEqual(fibers_alive(), before + 500)
            collect_and_run()
            self.assertEqual(fibers_alive(), before)
        self.assertEqual(len(finished), 20 * 500)


if __name__ == "__main__":
    unittest.main()
