"""Richards-style operating-system task scheduler simulation.

An independent re-implementation of the classic idea (idle task, worker,
two handlers and two devices exchanging packets via a scheduler), written
with plain classes and method calls.  Deterministic; prints a checksum line.
"""
import sys

ITERATIONS = 16

IDLE, WORKER, HANDLER_A, HANDLER_B, DEVICE_A, DEVICE_B = range(6)
NUM_TASKS = 6

KIND_DEVICE = 0
KIND_WORK = 1
DATA_SIZE = 4


class Packet:
    __slots__ = ("link", "dest", "kind", "count", "data")

    def __init__(self, link, dest, kind):
        self.link = link
        self.dest = dest
        self.kind = kind
        self.count = 0
        self.data = [0] * DATA_SIZE

    def append_to(self, queue):
        self.link = None
        if queue is None:
            return self
        p = queue
        while p.link is not None:
            p = p.link
        p.link = self
        return queue


class Task:
    """Base task: a state machine with a packet queue."""

    def __init__(self, sched, ident, priority, queue):
        self.sched = sched
        self.ident = ident
        self.priority = priority
        self.queue = queue
        self.waiting = queue is None   # waiting for a packet
        self.held = False
        self.next = None

    def runnable(self):
        return not self.held and not (self.waiting and self.queue is None)

    def take_packet(self):
        p = self.queue
        if p is not None:
            self.queue = p.link
            p.link = None
        self.waiting = False
        return p

    def add_packet(self, p, current):
        """Queue p on this task; returns the task that should run next."""
        if self.queue is None:
            self.queue = p
            p.link = None
            if self.waiting:
                self.waiting = False
                if self.priority > current.priority:
                    return self
        else:
            self.queue = p.append_to(self.queue)
        return current

    def step(self, packet):
        raise NotImplementedError


class IdleTask(Task):
    def __init__(self, sched, ident, priority, count):
        super().__init__(sched, ident, priority, None)
        self.waiting = False
        self.seed = 1
        self.count = count

    def step(self, packet):
        self.count -= 1
        if self.count == 0:
            return self.sched.hold_self()
        if self.seed & 1 == 0:
            self.seed >>= 1
            return self.sched.release(DEVICE_A)
        self.seed = (self.seed >> 1) ^ 0xD008
        return self.sched.release(DEVICE_B)


class WorkerTask(Task):
    def __init__(self, sched, ident, priority, queue):
        super().__init__(sched, ident, priority, queue)
        self.dest = HANDLER_A
        self.letter = 0

    def step(self, packet):
        if packet is None:
            return self.sched.wait()
        self.dest = HANDLER_B if self.dest == HANDLER_A else HANDLER_A
        packet.dest = self.dest
        packet.count = 0
        data = packet.data
        for i in range(DATA_SIZE):
            self.letter += 1
            if self.letter > 26:
                self.letter = 1
            data[i] = self.letter
        return self.sched.queue_packet(packet)


class HandlerTask(Task):
    def __init__(self, sched, ident, priority, queue):
        super().__init__(sched, ident, priority, queue)
        self.work_queue = None
        self.device_queue = None

    def step(self, packet):
        if packet is not None:
            if packet.kind == KIND_WORK:
                self.work_queue = packet.append_to(self.work_queue)
            else:
                self.device_queue = packet.append_to(self.device_queue)
        work = self.work_queue
        if work is not None:
            idx = work.count
            if idx < DATA_SIZE:
                dev = self.device_queue
                if dev is not None:
                    self.device_queue = dev.link
                    dev.data[0] = work.data[idx]
                    work.count = idx + 1
                    return self.sched.queue_packet(dev)
            else:
                self.work_queue = work.link
                return self.sched.queue_packet(work)
        return self.sched.wait()


class DeviceTask(Task):
    def __init__(self, sched, ident, priority, queue):
        super().__init__(sched, ident, priority, queue)
        self.pending = None

    def step(self, packet):
        if packet is None:
            p = self.pending
            if p is None:
                return self.sched.wait()
            self.pending = None
            return self.sched.queue_packet(p)
        self.pending = packet
        self.sched.hold_count += 1
        return self.sched.hold_self()


class Scheduler:
    def __init__(self):
        self.tasks = [None] * NUM_TASKS
        self.task_list = None   # linked by priority, highest first
        self.current = None
        self.queue_count = 0
        self.hold_count = 0

    def add(self, task):
        self.tasks[task.ident] = task
        # insert sorted by priority (descending)
        prev = None
        t = self.task_list
        while t is not None and t.priority >= task.priority:
            prev = t
            t = t.next
        task.next = t
        if prev is None:
            self.task_list = task
        else:
            prev.next = task

    def run(self):
        task = self.task_list
        while task is not None:
            if task.runnable():
                self.current = task
                packet = task.take_packet() if task.queue is not None else None
                task = task.step(packet)
            else:
                task = task.next

    # --- operations available to tasks -------------------------------
    def wait(self):
        cur = self.current
        cur.waiting = True
        return cur

    def hold_self(self):
        cur = self.current
        cur.held = True
        return cur.next

    def release(self, ident):
        t = self.tasks[ident]
        t.held = False
        if t.priority > self.current.priority:
            return t
        return self.current

    def queue_packet(self, packet):
        t = self.tasks[packet.dest]
        self.queue_count += 1
        packet.link = None
        packet.dest = self.current.ident
        return t.add_packet(packet, self.current)


def run_once(count):
    s = Scheduler()
    s.add(IdleTask(s, IDLE, 0, count))

    q = Packet(None, WORKER, KIND_WORK)
    q = Packet(q, WORKER, KIND_WORK)
    s.add(WorkerTask(s, WORKER, 1000, q))

    q = Packet(None, DEVICE_A, KIND_DEVICE)
    q = Packet(q, DEVICE_A, KIND_DEVICE)
    q = Packet(q, DEVICE_A, KIND_DEVICE)
    s.add(HandlerTask(s, HANDLER_A, 2000, q))

    q = Packet(None, DEVICE_B, KIND_DEVICE)
    q = Packet(q, DEVICE_B, KIND_DEVICE)
    q = Packet(q, DEVICE_B, KIND_DEVICE)
    s.add(HandlerTask(s, HANDLER_B, 3000, q))

    s.add(DeviceTask(s, DEVICE_A, 4000, None))
    s.add(DeviceTask(s, DEVICE_B, 5000, None))
    s.run()
    return s.queue_count, s.hold_count


def main():
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else ITERATIONS
    total_q = total_h = 0
    for _ in range(iterations):
        qc, hc = run_once(10000)
        total_q += qc
        total_h += hc
    print(f"richards iterations={iterations} queue_count={total_q} hold_count={total_h}")


if __name__ == "__main__":
    main()
