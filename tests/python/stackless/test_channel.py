"""stackless.channel under `pyhost --engine stackless`: blocking send/receive, who runs next
(preference / schedule_all), exceptions over channels, send_sequence, iteration, close/open,
balance and queue.

Written from Doc/library/stackless/channels.rst; scheduling order and closed-channel errors are
taken from Stackless/module/channelobject.c (see SEMANTICS.md).
Run standalone: `pyhost --engine stackless tests/python/stackless/test_channel.py`.
"""

import sys
import traceback
import unittest

import stackless
import stackless_support




class StacklessTestCase(stackless_support.StacklessTestCase):
    def setUp(self):
        super().setUp()
        self.current_block_trap = stackless.getcurrent().block_trap

    def tearDown(self):
        stackless.getcurrent().block_trap = self.current_block_trap
        super().tearDown()

    def kill_later(self, *tasklets):
        self.addCleanup(lambda: [t.kill() for t in tasklets])


class BasicsTest(StacklessTestCase):
    def test_new_channel_state(self):
        ch = stackless.channel()
        self.assertEqual(ch.balance, 0)
        self.assertEqual(ch.preference, -1)
        self.assertIsNone(ch.queue)
        self.assertFalse(ch.closing)
        self.assertFalse(ch.closed)

    def test_send_without_receiver_blocks(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.send)("value")
        t.run()
        self.assertTrue(t.blocked)
        self.assertEqual(ch.balance, 1)
        self.assertIs(ch.queue, t)
        self.assertEqual(ch.receive(), "value")
        self.assertEqual(ch.balance, 0)
        self.assertFalse(t.blocked)
        stackless.run()
        self.assertFalse(t.alive)

    def test_receive_without_sender_blocks(self):
        ch = stackless.channel()
        got = []
        t = stackless.tasklet(lambda: got.append(ch.receive()))()
        t.run()
        self.assertTrue(t.blocked)
        self.assertEqual(ch.balance, -1)
        self.assertIs(ch.queue, t)
        ch.send(5)
        self.assertEqual(got, [5])
        self.assertEqual(ch.balance, 0)

    def test_waiting_tasklets_are_served_in_order(self):
        ch = stackless.channel()
        senders = [stackless.tasklet(ch.send)(i) for i in range(3)]
        stackless.run()
        self.assertEqual(ch.balance, 3)
        self.assertIs(ch.queue, senders[0])
        self.assertIs(senders[0].next, senders[1])
        self.assertIs(senders[1].next, senders[2])
        self.assertIsNone(senders[2].next)
        self.assertEqual([ch.receive() for _ in range(3)], [0, 1, 2])
        self.assertEqual(ch.balance, 0)
        self.assertIsNone(ch.queue)
        stackless.run()
        self.assertFalse(any(t.alive for t in senders))

    def test_balance_counts_waiting_receivers_negatively(self):
        ch = stackless.channel()
        receivers = [stackless.tasklet(ch.receive)() for _ in range(4)]
        stackless.run()
        self.assertEqual(ch.balance, -4)
        for i in range(4):
            ch.send(i)
        self.assertEqual(ch.balance, 0)
        self.assertFalse(any(t.alive for t in receivers))

    def test_main_receives_from_tasklet_scheduled_later(self):
        ch = stackless.channel()
        log = []

        def sender():
            ch.send("hello")
            log.append("sender resumed")

        t = stackless.tasklet(sender)()
        # main blocks, the sender runs, and the receiver (main) is preferred on the send
        self.assertEqual(ch.receive(), "hello")
        self.assertEqual(log, [])
        self.assertTrue(t.scheduled)
        stackless.run()
        self.assertEqual(log, ["sender resumed"])

    def test_channel_is_subclassable(self):
        class NamedChannel(stackless.channel):
            def __init__(self, name):
                super().__init__()
                self.name = name

        ch = NamedChannel("bong")
        self.assertEqual(ch.name, "bong")
        t = stackless.tasklet(ch.send)(1)
        t.run()
        self.assertEqual(ch.receive(), 1)


class PreferenceTest(StacklessTestCase):
    """Who continues after a send/receive that meets a waiting partner."""

    def send_to_waiting_receiver(self, preference):
        ch = stackless.channel()
        ch.preference = preference
        log = []

        def receiver():
            log.append(("received", ch.receive()))

        t = stackless.tasklet(receiver)()
        t.run()  # blocks on the receive
        ch.send(1)
        log.append("sender continued")
        stackless.run()
        self.assertFalse(t.alive)
        return log

    def receive_from_waiting_sender(self, preference):
        ch = stackless.channel()
        ch.preference = preference
        log = []

        def sender():
            ch.send(1)
            log.append("sender resumed")

        t = stackless.tasklet(sender)()
        t.run()  # blocks on the send
        log.append(("received", ch.receive()))
        stackless.run()
        self.assertFalse(t.alive)
        return log

    def test_default_prefers_the_receiver(self):
        self.assertEqual(self.send_to_waiting_receiver(-1), [("received", 1), "sender continued"])
        self.assertEqual(self.receive_from_waiting_sender(-1), [("received", 1), "sender resumed"])

    def test_prefer_sender(self):
        self.assertEqual(self.send_to_waiting_receiver(1), ["sender continued", ("received", 1)])
        self.assertEqual(self.receive_from_waiting_sender(1), ["sender resumed", ("received", 1)])

    def test_prefer_nobody_lets_the_caller_continue(self):
        self.assertEqual(self.send_to_waiting_receiver(0), ["sender continued", ("received", 1)])
        self.assertEqual(self.receive_from_waiting_sender(0), [("received", 1), "sender resumed"])

    def test_preference_is_normalised(self):
        ch = stackless.channel()
        ch.preference = 7
        self.assertEqual(ch.preference, 1)
        ch.preference = -3
        self.assertEqual(ch.preference, -1)
        ch.preference = 0
        self.assertEqual(ch.preference, 0)
        with self.assertRaises(TypeError):
            ch.preference = "sender"

    def order_with_bystander(self, configure):
        ch = stackless.channel()
        configure(ch)
        log = []

        def receiver():
            log.append(("received", ch.receive()))

        t = stackless.tasklet(receiver)()
        t.run()
        stackless.tasklet(log.append)("bystander")  # queued behind main
        ch.send(1)
        log.append("sender continued")
        stackless.run()
        self.assertFalse(t.alive)
        return log

    def test_schedule_all_queues_the_partner_last(self):
        def schedule_all(ch):
            ch.schedule_all = 1

        def default(ch):
            pass

        # schedule_all: the receiver goes to the end of the queue and the sender yields, so the
        # bystander runs first; by default the receiver is run at once, ahead of it.
        self.assertEqual(
            self.order_with_bystander(schedule_all), ["bystander", ("received", 1), "sender continued"]
        )
        self.assertEqual(
            self.order_with_bystander(default), [("received", 1), "bystander", "sender continued"]
        )

    def test_schedule_all_attribute(self):
        ch = stackless.channel()
        self.assertFalse(ch.schedule_all)
        ch.schedule_all = 5
        self.assertEqual(ch.schedule_all, 1)
        ch.schedule_all = 0
        self.assertEqual(ch.schedule_all, 0)


class ExceptionsOverChannelsTest(StacklessTestCase):
    def test_send_exception(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.send_exception)(ValueError, 1, 2, 3)
        t.run()
        self.assertEqual(ch.balance, 1)
        with self.assertRaises(ValueError) as cm:
            ch.receive()
        self.assertEqual(cm.exception.args, (1, 2, 3))
        stackless.run()
        self.assertFalse(t.alive)

    def test_send_exception_to_waiting_receiver(self):
        ch = stackless.channel()
        log = []

        def receiver():
            try:
                ch.receive()
            except KeyError as exc:
                log.append(exc.args)

        stackless.tasklet(receiver)().run()
        ch.send_exception(KeyError, "k")
        self.assertEqual(log, [("k",)])

    def test_send_exception_requires_an_exception_class(self):
        ch = stackless.channel()
        self.assertRaises(TypeError, ch.send_exception, 42)
        self.assertRaises(TypeError, ch.send_exception)
        self.assertEqual(ch.balance, 0)

    def test_send_throw_keeps_instance_and_traceback(self):
        ch = stackless.channel()

        def bar():
            raise ValueError(1, 2, 3)

        def sender():
            try:
                bar()
            except Exception:
                ch.send_throw(*sys.exc_info())

        stackless.tasklet(sender)().run()
        try:
            ch.receive()
        except ValueError as exc:
            self.assertEqual(exc.args, (1, 2, 3))
            names = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
            self.assertEqual(names[-1], "bar")
        else:
            self.fail("ValueError was not raised by receive()")

    def test_send_throw_instance_alone(self):
        ch = stackless.channel()
        exc = LookupError("mine")
        stackless.tasklet(ch.send_throw)(exc).run()
        with self.assertRaises(LookupError) as cm:
            ch.receive()
        self.assertIs(cm.exception, exc)

    def test_send_throw_argument_errors(self):
        ch = stackless.channel()
        self.assertRaises(TypeError, ch.send_throw, ValueError("x"), "separate value")
        self.assertRaises(TypeError, ch.send_throw, 42)
        self.assertRaises(TypeError, ch.send_throw)
        self.assertEqual(ch.balance, 0)


class SequenceAndIterationTest(StacklessTestCase):
    def test_send_sequence_returns_length(self):
        ch = stackless.channel()
        received = []
        lengths = []

        def sender(seq):
            lengths.append(ch.send_sequence(seq))

        def receiver(n):
            for _ in range(n):
                received.append(ch.receive())

        stackless.tasklet(sender)(range(4))
        stackless.tasklet(receiver)(4)
        stackless.run()
        self.assertEqual(lengths, [4])
        self.assertEqual(received, [0, 1, 2, 3])

    def test_send_sequence_from_generator(self):
        ch = stackless.channel()
        received = []
        lengths = []

        def gen():
            for i in range(5):
                yield i * i

        stackless.tasklet(lambda: lengths.append(ch.send_sequence(gen())))()
        stackless.tasklet(lambda: received.extend(ch.receive() for _ in range(5)))()
        stackless.run()
        self.assertEqual(received, [0, 1, 4, 9, 16])
        self.assertEqual(lengths, [5])

    def test_iter_returns_the_channel(self):
        ch = stackless.channel()
        self.assertIs(iter(ch), ch)

    def test_iteration_ends_on_sent_stop_iteration(self):
        ch = stackless.channel()
        received = []

        def sender():
            ch.send_sequence(["a", "b", "c"])
            ch.send_exception(StopIteration)

        def receiver():
            for value in ch:
                received.append(value)
            received.append("loop ended")

        stackless.tasklet(sender)()
        stackless.tasklet(receiver)()
        stackless.run()
        self.assertEqual(received, ["a", "b", "c", "loop ended"])

    def test_iteration_drains_a_closing_channel_then_stops(self):
        ch = stackless.channel()
        senders = [stackless.tasklet(ch.send)(i) for i in range(3)]
        stackless.run()
        self.assertEqual(ch.balance, 3)
        ch.close()
        self.assertTrue(ch.closing)
        self.assertFalse(ch.closed)
        self.assertEqual(list(ch), [0, 1, 2])
        self.assertTrue(ch.closed)
        stackless.run()
        self.assertFalse(any(t.alive for t in senders))


class CloseTest(StacklessTestCase):
    def test_close_empty_channel(self):
        ch = stackless.channel()
        ch.close()
        self.assertTrue(ch.closing)
        self.assertTrue(ch.closed)
        self.assertRaisesRegex(ValueError, "closed channel", ch.send, None)
        self.assertRaisesRegex(ValueError, "closed channel", ch.receive)
        self.assertRaises(StopIteration, next, iter(ch))
        self.assertEqual(list(ch), [])
        self.assertEqual(ch.balance, 0)

    def test_closing_channel_still_serves_waiting_tasklets(self):
        ch = stackless.channel()
        got = []
        t = stackless.tasklet(lambda: got.append(ch.receive()))()
        t.run()
        ch.close()
        self.assertTrue(ch.closing)
        self.assertFalse(ch.closed)
        ch.send("last")  # a receiver is waiting, so the queue does not grow
        self.assertEqual(got, ["last"])
        self.assertTrue(ch.closed)
        self.assertRaises(ValueError, ch.send, "more")

    def test_close_does_not_wake_a_blocked_tasklet(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.receive)()
        t.run()
        ch.close()
        stackless.run()
        self.assertTrue(t.blocked)
        self.assertEqual(ch.balance, -1)
        t.kill()
        self.assertTrue(ch.closed)

    def test_blocking_in_a_tasklet_on_closed_channel_raises(self):
        ch = stackless.channel()
        ch.close()
        errors = []

        def body():
            try:
                ch.receive()
            except ValueError as exc:
                errors.append(exc)

        stackless.tasklet(body)()
        stackless.run()
        self.assertEqual(len(errors), 1)

    def test_open_reopens(self):
        ch = stackless.channel()
        ch.close()
        ch.open()
        self.assertFalse(ch.closing)
        self.assertFalse(ch.closed)
        t = stackless.tasklet(ch.send)("again")
        t.run()
        self.assertEqual(ch.receive(), "again")


class BlockTrapTest(StacklessTestCase):
    def test_block_trap_on_main(self):
        ch = stackless.channel()
        main = stackless.getcurrent()
        main.block_trap = True
        self.assertTrue(main.block_trap)
        self.assertRaises(RuntimeError, ch.receive)
        self.assertRaises(RuntimeError, ch.send, None)
        self.assertEqual(ch.balance, 0)

    def test_block_trap_allows_non_blocking_actions(self):
        ch = stackless.channel()
        t = stackless.tasklet(ch.send)(3)
        t.run()
        stackless.getcurrent().block_trap = True
        self.assertEqual(ch.receive(), 3)  # a sender was waiting: no blocking needed

    def test_block_trap_in_tasklet(self):
        ch = stackless.channel()
        errors = []

        def body():
            stackless.getcurrent().block_trap = True
            try:
                ch.send(None)
            except RuntimeError as exc:
                errors.append(exc)

        stackless.tasklet(body)()
        stackless.run()
        self.assertEqual(len(errors), 1)
        self.assertEqual(ch.balance, 0)


if __name__ == "__main__":
    unittest.main()
