//! The worker pool's shared state, in plain Rust: no Python object ever crosses between
//! interpreters. Tasks and results are byte strings (pickles) copied in and out.
//!
//! A task's outcome goes to one of two sinks: a [`Batch`] whose caller collects outcomes as
//! they finish (`parallel.map`), or, for `submit`, the pool's completion queue, which a
//! collector thread in the main interpreter drains into `concurrent.futures.Future`s, unless
//! a caller blocked on that one future claimed it (`Pool::wait_task`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker, or a caller waiting for one task, spins before it sleeps. Waking
/// a sleeping thread costs tens of microseconds on a VM (an idle vCPU must be woken); a
/// short spin keeps a submit() round trip far below that when tasks follow each other.
const SPIN: Duration = Duration::from_micros(100);

/// Spins until `ready()` or SPIN has passed; returns `ready()`.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if started.elapsed() >= SPIN {
            return ready();
        }
    }
}

/// How a task ended; says what `Outcome::data` holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OutcomeKind {
    /// The pickled return value.
    Returned = 0,
    /// The task raised: the pickled exception and the worker's traceback.
    Raised = 1,
    /// The pool could not run the task (cancelled, no worker): a UTF-8 message.
    NotRun = 2,
}

/// Outcome of one task.
pub struct Outcome {
    pub kind: OutcomeKind,
    pub data: Vec<u8>,
    /// From the moment a worker took the task to its completion (0 for a task not run): what
    /// `parallel.map` sizes its next chunks of the same function from.
    pub busy_ns: u64,
}

impl Outcome {
    pub fn not_run(message: String) -> Outcome {
        Outcome { kind: OutcomeKind::NotRun, data: message.into_bytes(), busy_ns: 0 }
    }
}

/// Tasks whose outcomes one caller collects as they finish (`parallel.map`), each tagged
/// with its slot (the order the caller queued them in).
pub struct Batch {
    pub id: u64,
    pool: u64,
    state: Mutex<BatchState>,
    changed: Condvar,
}

#[derive(Default)]
struct BatchState {
    done: VecDeque<(usize, Outcome)>,
    /// Ids of the tasks queued so far, by slot.
    tasks: Vec<u64>,
    closed: bool,
    /// The main interpreter's list of the map's items, which workers read in place
    /// (transfer/lend.rs), as an address; 0 when none is lent. The batch holds a reference.
    lent: usize,
    /// Workers reading `lent` now: the list is given back only when none is.
    readers: usize,
    /// Threads blocked on `changed`: only then does a change wake anyone (a system call).
    waiters: usize,
}

impl Batch {
    fn deliver(&self, slot: usize, outcome: Outcome) {
        let mut state = lock(&self.state);
        if !state.closed {
            state.done.push_back((slot, outcome));
            self.notify(&state);
        }
    }

    fn notify(&self, state: &BatchState) {
        if state.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Waits on `changed` while `blocked` holds, up to `timeout`.
    fn wait_while<'a>(
        &self,
        mut state: MutexGuard<'a, BatchState>,
        timeout: Duration,
        blocked: impl FnMut(&mut BatchState) -> bool,
    ) -> MutexGuard<'a, BatchState> {
        state.waiters += 1;
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, timeout, blocked)
            .unwrap_or_else(|poison| poison.into_inner());
        state.waiters -= 1;
        state
    }

    /// Marks the batch closed (outcomes from now on are dropped) and forgets it; returns the
    /// ids of its tasks, for the pool to cancel those still queued.
    pub fn close(&self) -> Vec<u64> {
        let tasks = {
            let mut state = lock(&self.state);
            state.closed = true;
            state.done.clear();
            std::mem::take(&mut state.tasks)
        };
        lock(batches()).remove(&self.id);
        tasks
    }

    /// Lends the batch's items (an address the caller holds a reference to); false when the
    /// batch is closed or has items already.
    pub fn lend(&self, items: usize) -> bool {
        let mut state = lock(&self.state);
        if state.closed || state.lent != 0 {
            return false;
        }
        state.lent = items;
        true
    }

    /// The lent items, counted as being read until [`Batch::end_reading`]; None when the
    /// batch lends nothing or was closed (its caller gave up on the map).
    pub fn begin_reading(&self) -> Option<usize> {
        let mut state = lock(&self.state);
        if state.closed || state.lent == 0 {
            return None;
        }
        state.readers += 1;
        Some(state.lent)
    }

    pub fn end_reading(&self) {
        let mut state = lock(&self.state);
        state.readers -= 1;
        if state.readers == 0 {
            self.notify(&state);
        }
    }

    /// After the batch is closed: waits until no worker reads the lent items (a read copies
    /// one chunk, so this is short) and takes them back, for the caller to release.
    pub fn take_back_lent(&self) -> usize {
        let mut state = lock(&self.state);
        while state.readers > 0 {
            state = self.wait_while(state, Duration::from_secs(1), |s| s.readers > 0);
        }
        std::mem::take(&mut state.lent)
    }

    /// The next finished task (slot, outcome), waiting up to `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<(usize, Outcome)> {
        let mut state = lock(&self.state);
        if state.done.is_empty() {
            state = self.wait_while(state, timeout, |s| s.done.is_empty());
        }
        state.done.pop_front()
    }
}

/// What `Pool::wait_task` found.
pub enum TaskWait {
    Done(Outcome),
    /// Not finished within the timeout (or no longer queued, e.g. cancelled).
    Pending,
    /// Not in this pool any more: its outcome went to the completion queue's reader.
    Gone,
}

enum Sink {
    Batch(Arc<Batch>, usize),
    Completions,
}

struct Task {
    id: u64,
    payload: Vec<u8>,
    sink: Sink,
}

/// A Ctrl-C aimed at the task a worker runs: raised by the main interpreter, taken once by the
/// worker, either at its next bytecode (a pending call) or at once if the task sleeps in
/// `time.sleep()`, which workers replace by [`Interrupt::sleep`] (CPython's would sleep on:
/// only the main interpreter's main thread handles signals).
#[derive(Default)]
pub struct Interrupt {
    pending: Mutex<bool>,
    wake: Condvar,
}

impl Interrupt {
    pub fn raise(&self) {
        *lock(&self.pending) = true;
        self.wake.notify_all();
    }

    /// Whether an interrupt is pending (it is not taken).
    pub fn is_raised(&self) -> bool {
        *lock(&self.pending)
    }

    /// Whether an interrupt was pending (it is taken).
    pub fn take(&self) -> bool {
        std::mem::replace(&mut *lock(&self.pending), false)
    }

    /// Sleeps for `duration` (None: for ever) unless interrupted; true if interrupted (the
    /// interrupt is taken).
    pub fn sleep(&self, duration: Option<Duration>) -> bool {
        let deadline = duration.and_then(|duration| Instant::now().checked_add(duration));
        let mut pending = lock(&self.pending);
        loop {
            if std::mem::replace(&mut *pending, false) {
                return true;
            }
            let wait = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return false,
                },
                None => Duration::from_secs(3600),
            };
            pending = self.wake.wait_timeout(pending, wait).unwrap_or_else(|poison| poison.into_inner()).0;
        }
    }
}

/// What `parallel.workers()` reports about one worker.
#[derive(Clone, Default)]
pub struct WorkerInfo {
    /// The worker's `PyInterpreterState` address, 0 until it exists.
    pub interpreter: usize,
    pub interpreter_id: i64,
    pub native_thread_id: u64,
    /// The worker thread's pthread handle (0 until it runs): a Ctrl-C signals it out of a
    /// blocking wait (see `guard::wake_blocked_thread`).
    pub thread: libc::pthread_t,
    pub tasks_done: u64,
    pub state: &'static str,
    /// Why the worker could not start, or could not import the main script.
    pub error: Option<String>,
    /// Ctrl-C for the worker's running task.
    pub interrupt: Arc<Interrupt>,
}

struct PoolState {
    queue: VecDeque<Task>,
    /// Tasks a worker is running, by id: where their results go, and since when.
    running: HashMap<u64, (Sink, Instant)>,
    completions: VecDeque<(u64, Outcome)>,
    /// `submit` tasks a caller waits for itself (`wait_task`): their outcomes skip the
    /// completion queue and land in `claimed_done`.
    claimed: HashSet<u64>,
    claimed_done: HashMap<u64, Outcome>,
    /// Callers asleep on `claimed_ready` (a notify costs a syscall even when nobody waits).
    claimed_sleepers: usize,
    workers: Vec<WorkerInfo>,
    /// Workers still able to take tasks.
    alive: usize,
    stopping: bool,
    /// Workers blocked on `work_ready`, and wake-ups sent to them not yet received: a push
    /// wakes a worker only when one sleeps and is not being woken already (a futex wake is
    /// a system call, which costs tens of microseconds on a busy VM).
    sleeping: usize,
    wakes_pending: usize,
}

pub struct Pool {
    pub id: u64,
    /// Pickled start-up settings for the workers (sys.path, the main script...).
    pub init_payload: Vec<u8>,
    state: Mutex<PoolState>,
    /// Tasks in the queue, readable without the lock (for spinning workers).
    queued: AtomicUsize,
    /// Workers spinning for a task right now.
    spinning: AtomicUsize,
    /// Bumped by every claimed completion (for spinning waiters).
    completed: AtomicU64,
    stopping: AtomicBool,
    work_ready: Condvar,
    completion_ready: Condvar,
    claimed_ready: Condvar,
    /// Notified when a worker leaves the pool.
    worker_ended: Condvar,
}

/// Engine statistics (all pools): tasks finished by workers, pools and workers started.
pub static TASKS_DONE: AtomicU64 = AtomicU64::new(0);
pub static POOLS_STARTED: AtomicU64 = AtomicU64::new(0);
pub static WORKERS_STARTED: AtomicU64 = AtomicU64::new(0);

static NEXT_TASK_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_BATCH_ID: AtomicU64 = AtomicU64::new(1);

/// Open batches by id.
pub fn batches() -> &'static Mutex<HashMap<u64, Arc<Batch>>> {
    static BATCHES: OnceLock<Mutex<HashMap<u64, Arc<Batch>>>> = OnceLock::new();
    BATCHES.get_or_init(Default::default)
}

/// Live pools by id; a pool leaves when it is shut down.
fn registry() -> &'static Mutex<HashMap<u64, Arc<Pool>>> {
    static POOLS: OnceLock<Mutex<HashMap<u64, Arc<Pool>>>> = OnceLock::new();
    POOLS.get_or_init(Default::default)
}

/// A poisoned lock only means another thread panicked while holding it; the state it guards
/// is updated in single steps, so it stays consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Pool {
    pub fn create(workers: usize, init_payload: Vec<u8>) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            init_payload,
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                running: HashMap::new(),
                completions: VecDeque::new(),
                claimed: HashSet::new(),
                claimed_done: HashMap::new(),
                claimed_sleepers: 0,
                // One by one: each worker has its own Interrupt (vec![x; n] would share one).
                workers: (0..workers)
                    .map(|_| WorkerInfo { state: "starting", ..Default::default() })
                    .collect(),
                alive: workers,
                stopping: false,
                sleeping: 0,
                wakes_pending: 0,
            }),
            queued: AtomicUsize::new(0),
            spinning: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            work_ready: Condvar::new(),
            completion_ready: Condvar::new(),
            claimed_ready: Condvar::new(),
            worker_ended: Condvar::new(),
        });
        lock(registry()).insert(pool.id, pool.clone());
        POOLS_STARTED.fetch_add(1, Ordering::Relaxed);
        pool
    }

    pub fn get(id: u64) -> Option<Arc<Pool>> {
        lock(registry()).get(&id).cloned()
    }

    pub fn all() -> Vec<Arc<Pool>> {
        lock(registry()).values().cloned().collect()
    }

    fn push(&self, payload: Vec<u8>, sink: Sink) -> Result<u64, String> {
        let mut state = lock(&self.state);
        if state.stopping {
            return Err("the pool is shut down".into());
        }
        if state.alive == 0 {
            return Err(no_worker_message(&state));
        }
        let id = NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed);
        state.queue.push_back(Task { id, payload, sink });
        self.queued.fetch_add(1, Ordering::SeqCst);
        // A spinning worker takes a task without being woken; waking a sleeping one for a task
        // a spinner will take would only make it spin, stealing a core from those working.
        let coming = self.spinning.load(Ordering::SeqCst) + state.wakes_pending;
        if state.queue.len() > coming && state.sleeping > state.wakes_pending {
            state.wakes_pending += 1;
            self.work_ready.notify_one();
        }
        Ok(id)
    }

    /// Queues one task whose outcome goes to the completion queue.
    pub fn submit(&self, payload: Vec<u8>) -> Result<u64, String> {
        self.push(payload, Sink::Completions)
    }

    /// A new, empty batch of this pool.
    pub fn open_batch(&self) -> Arc<Batch> {
        let batch = Arc::new(Batch {
            id: NEXT_BATCH_ID.fetch_add(1, Ordering::Relaxed),
            pool: self.id,
            state: Mutex::new(BatchState::default()),
            changed: Condvar::new(),
        });
        lock(batches()).insert(batch.id, batch.clone());
        batch
    }

    /// Queues one task of `batch`; returns its slot.
    pub fn add_to_batch(&self, batch: &Arc<Batch>, payload: Vec<u8>) -> Result<usize, String> {
        if batch.pool != self.id {
            return Err("the batch belongs to another pool".into());
        }
        let mut state = lock(&batch.state);
        if state.closed {
            return Err("the batch is closed".into());
        }
        let slot = state.tasks.len();
        let id = self.push(payload, Sink::Batch(batch.clone(), slot))?;
        state.tasks.push(id);
        Ok(slot)
    }

    /// Ends a batch: its tasks still queued are cancelled, later outcomes are dropped.
    pub fn close_batch(&self, batch: &Batch) {
        self.cancel(&batch.close());
    }

    /// Removes the given tasks from the queue if no worker took them yet; returns how many.
    pub fn cancel(&self, ids: &[u64]) -> usize {
        let ids: HashSet<u64> = ids.iter().copied().collect();
        let mut state = lock(&self.state);
        let before = state.queue.len();
        state.queue.retain(|task| !ids.contains(&task.id));
        let cancelled = before - state.queue.len();
        self.queued.fetch_sub(cancelled, Ordering::Relaxed);
        cancelled
    }

    /// A worker's next task (id, payload), or None when the pool stops. Blocks.
    pub fn next_task(&self, worker: usize) -> Option<(u64, Vec<u8>)> {
        // Spinning ends (the counter drops) before the queue is checked under the lock, so a
        // task pushed meanwhile is either seen here or its push wakes this worker.
        self.spinning.fetch_add(1, Ordering::SeqCst);
        spin_until(|| {
            self.queued.load(Ordering::SeqCst) > 0 || self.stopping.load(Ordering::Relaxed) || fork_pending()
        });
        self.spinning.fetch_sub(1, Ordering::SeqCst);
        let mut state = lock(&self.state);
        loop {
            if fork_pending() {
                // The worker ends its interpreter, and starts a new one once the fork is
                // over and the pool has work (see the fork section); the queue waits.
                state.workers[worker].state = "starting";
                return None;
            }
            if let Some(task) = state.queue.pop_front() {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                state.running.insert(task.id, (task.sink, Instant::now()));
                state.workers[worker].state = "running";
                // A Ctrl-C that came after the previous task ended is not for this one.
                state.workers[worker].interrupt.take();
                return Some((task.id, task.payload));
            }
            if state.stopping {
                return None;
            }
            state.workers[worker].state = "idle";
            state = self.wait_for_work(state);
        }
    }

    /// A worker finished a task.
    pub fn complete(&self, worker: usize, task: u64, mut outcome: Outcome) {
        let mut state = lock(&self.state);
        state.workers[worker].tasks_done += 1;
        TASKS_DONE.fetch_add(1, Ordering::Relaxed);
        state.workers[worker].state = "idle";
        let Some((sink, started)) = state.running.remove(&task) else { return };
        outcome.busy_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match sink {
            Sink::Batch(batch, slot) => {
                drop(state);
                batch.deliver(slot, outcome);
            }
            Sink::Completions => self.deliver_completion(&mut state, task, outcome),
        }
    }

    /// A `submit` task's outcome goes to the caller that claimed it, else to the completion
    /// queue. Each side has its own condition variable: waking the collector thread for a
    /// claimed outcome would make it fight the caller for the GIL.
    fn deliver_completion(&self, state: &mut PoolState, task: u64, outcome: Outcome) {
        if state.claimed.remove(&task) {
            state.claimed_done.insert(task, outcome);
            self.completed.fetch_add(1, Ordering::Release);
            if state.claimed_sleepers > 0 {
                self.claimed_ready.notify_all();
            }
        } else {
            state.completions.push_back((task, outcome));
            self.completion_ready.notify_all();
        }
    }

    /// Waits up to `timeout` for one `submit` task, taking its outcome away from the
    /// completion queue (so that a caller blocked on the future needs no collector thread).
    pub fn wait_task(&self, task: u64, timeout: Duration) -> TaskWait {
        let mut state = lock(&self.state);
        if let Some(position) = state.completions.iter().position(|(id, _)| *id == task) {
            return TaskWait::Done(state.completions.remove(position).map(|(_, o)| o).expect("present"));
        }
        let pending = state.running.contains_key(&task) || state.queue.iter().any(|t| t.id == task);
        if !pending {
            return TaskWait::Gone;
        }
        state.claimed.insert(task);
        drop(state);
        let seen = self.completed.load(Ordering::Acquire);
        spin_until(|| self.completed.load(Ordering::Acquire) != seen);
        let mut state = lock(&self.state);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(outcome) = state.claimed_done.remove(&task) {
                return TaskWait::Done(outcome);
            }
            let now = Instant::now();
            let orphaned = !state.running.contains_key(&task) && !state.queue.iter().any(|t| t.id == task);
            if now >= deadline || orphaned {
                // Give the task back to the completion queue's reader.
                state.claimed.remove(&task);
                return TaskWait::Pending;
            }
            state.claimed_sleepers += 1;
            state = self
                .claimed_ready
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
            state.claimed_sleepers -= 1;
        }
    }

    /// The next finished `submit` task, waiting up to `timeout`. `Err(())` once the pool is
    /// shut down and nothing is left to collect.
    pub fn next_completion(&self, timeout: Duration) -> Result<Option<(u64, Outcome)>, ()> {
        let mut state = lock(&self.state);
        if state.completions.is_empty() && !self.finished(&state) {
            state = self
                .completion_ready
                .wait_timeout_while(state, timeout, |s| s.completions.is_empty() && !self.finished(s))
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
        match state.completions.pop_front() {
            Some(done) => Ok(Some(done)),
            None if self.finished(&state) => Err(()),
            None => Ok(None),
        }
    }

    fn finished(&self, state: &PoolState) -> bool {
        state.stopping && state.queue.is_empty() && state.running.is_empty()
    }

    pub fn set_worker(&self, worker: usize, update: impl FnOnce(&mut WorkerInfo)) {
        update(&mut lock(&self.state).workers[worker]);
    }

    /// A worker leaves the pool (it stopped serving it, or its interpreter could not be
    /// created). When the last one goes, queued tasks fail instead of waiting forever.
    pub fn worker_gone(&self, worker: usize, error: Option<String>) {
        let mut state = lock(&self.state);
        state.workers[worker].state = "stopped";
        if error.is_some() {
            state.workers[worker].error = error;
        }
        state.alive -= 1;
        self.worker_ended.notify_all();
        if state.alive == 0 {
            let message = no_worker_message(&state);
            let orphans: Vec<Task> = state.queue.drain(..).collect();
            self.queued.store(0, Ordering::Relaxed);
            drop(state);
            for task in orphans {
                self.fail(task, &message);
            }
        }
    }

    fn fail(&self, task: Task, message: &str) {
        match task.sink {
            Sink::Batch(batch, slot) => batch.deliver(slot, Outcome::not_run(message.to_string())),
            Sink::Completions => {
                let mut state = lock(&self.state);
                self.deliver_completion(&mut state, task.id, Outcome::not_run(message.to_string()));
            }
        }
    }

    pub fn workers(&self) -> Vec<WorkerInfo> {
        lock(&self.state).workers.clone()
    }

    /// After a fork: a worker whose interpreter ended for it waits here, with none, until the
    /// pool has work (true) or stops (false), so that forks that follow each other (a
    /// multiprocessing pool starting) find nothing to end. Shown as "resting".
    pub fn rest_until_work(&self, worker: usize) -> bool {
        let mut state = lock(&self.state);
        state.workers[worker].state = "resting";
        state.workers[worker].interpreter = 0;
        loop {
            if state.stopping {
                return false;
            }
            if !state.queue.is_empty() {
                state.workers[worker].state = "starting";
                return true;
            }
            state = self.wait_for_work(state);
        }
    }

    fn wait_for_work<'a>(&self, mut state: MutexGuard<'a, PoolState>) -> MutexGuard<'a, PoolState> {
        state.sleeping += 1;
        let mut state = self.work_ready.wait(state).unwrap_or_else(|poison| poison.into_inner());
        state.sleeping -= 1;
        state.wakes_pending = state.wakes_pending.saturating_sub(1);
        state
    }

    pub fn is_stopping(&self) -> bool {
        lock(&self.state).stopping
    }

    /// Wakes the workers waiting for a task (they then look at `fork_pending`).
    fn wake_workers(&self) {
        let _state = lock(&self.state);
        self.work_ready.notify_all();
    }

    /// In a forked child, where no worker thread exists: the pool stops, its queued tasks are
    /// dropped (they are the parent's), and whoever waits for it is woken.
    fn abandon_in_fork_child(&self) {
        let mut state = lock(&self.state);
        state.stopping = true;
        self.stopping.store(true, Ordering::Relaxed);
        state.queue.clear();
        state.running.clear();
        self.queued.store(0, Ordering::Relaxed);
        state.alive = 0;
        for worker in &mut state.workers {
            worker.state = "stopped";
            worker.interpreter = 0;
            worker.thread = 0;
        }
        self.work_ready.notify_all();
        self.completion_ready.notify_all();
        self.claimed_ready.notify_all();
        self.worker_ended.notify_all();
    }

    /// Stops the pool: with `cancel_pending`, queued tasks fail as cancelled; the others still
    /// run. Workers leave after their current task. With `wait`, waits until they all left (the
    /// caller must not hold a GIL that a worker needs: workers need none but their own).
    pub fn shutdown(&self, wait: bool, cancel_pending: bool) {
        let cancelled: Vec<Task> = {
            let mut state = lock(&self.state);
            state.stopping = true;
            self.stopping.store(true, Ordering::Relaxed);
            self.work_ready.notify_all();
            self.completion_ready.notify_all();
            self.claimed_ready.notify_all();
            if cancel_pending {
                self.queued.store(0, Ordering::Relaxed);
                state.queue.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for task in cancelled {
            self.fail(task, "cancelled: the pool was shut down");
        }
        if wait {
            self.wait_all_left();
        }
    }

    fn wait_all_left(&self) {
        let state = lock(&self.state);
        let _left = self.worker_ended.wait_while(state, |s| s.alive > 0).unwrap_or_else(|p| p.into_inner());
    }

    /// Waits up to `timeout` for every worker to leave the pool (after shutdown); true when
    /// they all did.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let state = lock(&self.state);
        let (state, _) = self
            .worker_ended
            .wait_timeout_while(state, timeout, |s| s.alive > 0)
            .unwrap_or_else(|poison| poison.into_inner());
        state.alive == 0
    }

    /// Waits until the workers left and removes the pool from the registry: its id is unknown
    /// from now on. Called once the collector thread has drained the completion queue.
    pub fn forget(&self) {
        self.wait_all_left();
        lock(registry()).remove(&self.id);
    }

    /// Raises the Interrupt of every worker running a task and calls `notify` with its
    /// interpreter address and thread, with the pool locked: a worker leaves the pool (and may
    /// then end its interpreter and thread) only after marking itself "stopped" under that
    /// lock, so every interpreter and thread passed is alive during the call.
    pub fn interrupt_running(&self, notify: impl Fn(usize, libc::pthread_t)) {
        let state = lock(&self.state);
        for worker in &state.workers {
            if worker.state == "running" && worker.interpreter != 0 {
                worker.interrupt.raise();
                notify(worker.interpreter, worker.thread);
            }
        }
    }

    pub fn interrupt_of(&self, worker: usize) -> Option<Arc<Interrupt>> {
        lock(&self.state).workers.get(worker).map(|info| info.interrupt.clone())
    }

    /// "queued", "running" or None (finished, cancelled or unknown) for a task.
    pub fn task_state(&self, task: u64) -> Option<&'static str> {
        let state = lock(&self.state);
        if state.running.contains_key(&task) {
            Some("running")
        } else if state.queue.iter().any(|t| t.id == task) {
            Some("queued")
        } else {
            None
        }
    }
}

fn no_worker_message(state: &PoolState) -> String {
    let reasons: Vec<String> = state
        .workers
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.error.as_ref().map(|e| format!("worker {i}: {e}")))
        .collect();
    if reasons.is_empty() {
        "the pool has no running worker".to_string()
    } else {
        format!("the pool has no running worker ({})", reasons.join("; "))
    }
}

// ----- workers kept for later pools -----
//
// CPython 3.13 does not give back all the memory of a sub-interpreter it ends (a few MB each,
// measured with plain `_interpreters.create`/`destroy`), so a program that opens and closes
// `parallel.Executor`s in a loop would grow without bound. A worker whose pool stopped is
// therefore parked, its interpreter alive and idle (no GIL held), and the next pool takes it
// instead of creating an interpreter; at most [`max_parked`] wait, the others end. At exit,
// [`stop_parked`] ends them all (before CPython finalizes).

/// What a parked worker is told to do next.
pub enum Assignment {
    Serve(Arc<Pool>, usize),
    Exit,
}

/// A worker waiting for a pool.
pub struct Parked {
    assignment: Mutex<Option<Assignment>>,
    assigned: Condvar,
    thread: std::thread::ThreadId,
}

impl Parked {
    /// Hands the worker its next job (it wakes up and takes it).
    pub fn assign(&self, assignment: Assignment) {
        *lock(&self.assignment) = Some(assignment);
        self.assigned.notify_one();
    }

    /// Blocks until an assignment comes.
    pub fn wait(&self) -> Assignment {
        let mut slot = lock(&self.assignment);
        loop {
            if let Some(assignment) = slot.take() {
                return assignment;
            }
            slot = self.assigned.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}

struct ParkingLot {
    parked: Vec<Arc<Parked>>,
    /// Set at exit: workers leaving a pool end instead of parking.
    closed: bool,
    /// Every worker thread ever started, joined at exit.
    threads: Vec<JoinHandle<()>>,
}

fn parking_lot() -> &'static Mutex<ParkingLot> {
    static LOT: OnceLock<Mutex<ParkingLot>> = OnceLock::new();
    LOT.get_or_init(|| Mutex::new(ParkingLot { parked: Vec::new(), closed: false, threads: Vec::new() }))
}

/// Workers kept at most: as many as a default pool has.
pub fn max_parked() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2)
}

/// Workers reused by a later pool instead of a new interpreter (statistics).
pub static WORKERS_REUSED: AtomicU64 = AtomicU64::new(0);

/// Remembers a worker thread, to be joined at exit.
pub fn add_worker_thread(handle: JoinHandle<()>) {
    let mut lot = lock(parking_lot());
    // Forget the ones that already ended (their interpreters are gone).
    lot.threads.retain(|thread| !thread.is_finished());
    lot.threads.push(handle);
}

/// A parked worker for a new pool, if one waits.
pub fn take_parked() -> Option<Arc<Parked>> {
    let parked = lock(parking_lot()).parked.pop();
    if parked.is_some() {
        WORKERS_REUSED.fetch_add(1, Ordering::Relaxed);
    }
    parked
}

/// Parks the calling worker if there is room (None: it should end its interpreter).
pub fn park() -> Option<Arc<Parked>> {
    let mut lot = lock(parking_lot());
    // Checked under the lot's lock: a fork that starts now takes the lot's lock after setting
    // FORK_PENDING (in `end_parked`), so it sees this worker parked, or this sees the fork.
    if lot.closed || lot.parked.len() >= max_parked() || fork_pending() {
        return None;
    }
    let parked = Arc::new(Parked {
        assignment: Mutex::new(None),
        assigned: Condvar::new(),
        thread: std::thread::current().id(),
    });
    lot.parked.push(parked.clone());
    Some(parked)
}

/// Ends the parked workers' interpreters and waits until they are gone (later pools start
/// new workers). Called before a fork (see the fork section below).
pub fn end_parked() {
    let (parked, threads) = {
        let mut lot = lock(parking_lot());
        let parked = std::mem::take(&mut lot.parked);
        let ids: HashSet<std::thread::ThreadId> = parked.iter().map(|worker| worker.thread).collect();
        let (ending, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut lot.threads)
            .into_iter()
            .partition(|thread| ids.contains(&thread.thread().id()));
        lot.threads = kept;
        (parked, ending)
    };
    for worker in parked {
        worker.assign(Assignment::Exit);
    }
    for thread in threads {
        let _ = thread.join();
    }
}

/// At exit: no more parking; every parked worker ends its interpreter; every worker thread
/// is joined. Pools must have been stopped first (a worker still serving one is waited for).
pub fn stop_parked() {
    let (parked, threads) = {
        let mut lot = lock(parking_lot());
        lot.closed = true;
        (std::mem::take(&mut lot.parked), std::mem::take(&mut lot.threads))
    };
    for worker in parked {
        worker.assign(Assignment::Exit);
    }
    for thread in threads {
        // A worker thread does not panic out (its body catches panics); if it did, there is
        // nothing more to clean up here.
        let _ = thread.join();
    }
}

// ----- fork -----
//
// CPython 3.13.0's forked child cannot delete the sub-interpreters it inherits
// (`_PyInterpreterState_DeleteExceptMain` calls `PyInterpreterState_Clear` with no thread
// state current: a fatal error in every child, so a multiprocessing pool that forks keeps
// starting children that die), so no worker interpreter may exist when the process forks.
// Before a fork (`os.register_at_fork`), the workers end their interpreters once their
// running task is done; after it, the parent's workers start new ones when their pool has
// work (`Pool::rest_until_work`), and the child, which has no worker threads, forgets every
// pool.

/// Set from just before a fork until just after it (in the parent).
static FORK_PENDING: AtomicBool = AtomicBool::new(false);

#[derive(Default)]
struct ForkGate {
    pending: bool,
    /// Worker interpreters that exist or are being created.
    interpreters: usize,
}

fn fork_gate() -> &'static (Mutex<ForkGate>, Condvar) {
    static GATE: OnceLock<(Mutex<ForkGate>, Condvar)> = OnceLock::new();
    GATE.get_or_init(Default::default)
}

/// Whether workers must end their interpreters for a fork.
pub fn fork_pending() -> bool {
    FORK_PENDING.load(Ordering::SeqCst)
}

/// A worker is about to create its interpreter: waits while a fork is pending, then counts it.
pub fn interpreter_starting() {
    let (gate, changed) = fork_gate();
    let mut state = changed.wait_while(lock(gate), |s| s.pending).unwrap_or_else(|p| p.into_inner());
    state.interpreters += 1;
}

/// A worker's interpreter has ended, or could not be created.
pub fn interpreter_ended() {
    let (gate, changed) = fork_gate();
    let mut state = lock(gate);
    state.interpreters = state.interpreters.saturating_sub(1);
    changed.notify_all();
}

/// Before a fork (call without any GIL: workers need none but their own): parked workers
/// end, the others end their interpreters after their running task; returns once no worker
/// interpreter exists. New ones wait for [`resume_after_fork`].
pub fn quiesce_for_fork() {
    let (gate, changed) = fork_gate();
    lock(gate).pending = true;
    FORK_PENDING.store(true, Ordering::SeqCst);
    end_parked();
    for pool in Pool::all() {
        pool.wake_workers();
    }
    let _state = changed.wait_while(lock(gate), |s| s.interpreters > 0).unwrap_or_else(|p| p.into_inner());
}

/// After a fork, in the parent: workers may start new interpreters again.
pub fn resume_after_fork() {
    FORK_PENDING.store(false, Ordering::SeqCst);
    let (gate, changed) = fork_gate();
    lock(gate).pending = false;
    changed.notify_all();
}

/// After a fork, in the child: there is no worker thread here, so every pool stops and is
/// forgotten (its queued tasks are the parent's), and so are the parent's worker threads.
/// Later pools start workers of their own.
pub fn forget_all_in_fork_child() {
    FORK_PENDING.store(false, Ordering::SeqCst);
    *lock(&fork_gate().0) = ForkGate::default();
    let pools: Vec<Arc<Pool>> = lock(registry()).drain().map(|(_, pool)| pool).collect();
    for pool in pools {
        pool.abandon_in_fork_child();
    }
    lock(batches()).clear();
    let mut lot = lock(parking_lot());
    lot.parked.clear();
    for thread in lot.threads.drain(..) {
        // The parent's threads: this process cannot join or detach them.
        std::mem::forget(thread);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_is_taken_once_by_a_sleep_or_by_take() {
        let interrupt = Interrupt::default();
        assert!(!interrupt.sleep(Some(Duration::from_millis(1))), "nothing raised: the sleep runs out");
        interrupt.raise();
        assert!(interrupt.sleep(None), "raised before: the sleep ends at once");
        assert!(!interrupt.take(), "the sleep took it");
        interrupt.raise();
        assert!(interrupt.take());
        assert!(!interrupt.sleep(Some(Duration::ZERO)));
    }

    #[test]
    fn an_interrupt_from_another_thread_ends_an_endless_sleep() {
        let interrupt = Arc::new(Interrupt::default());
        let sleeper = {
            let interrupt = interrupt.clone();
            std::thread::spawn(move || interrupt.sleep(None))
        };
        interrupt.raise();
        assert!(sleeper.join().unwrap());
    }

    #[test]
    fn each_worker_has_its_own_interrupt() {
        let pool = Pool::create(2, Vec::new());
        let (first, second) = (pool.interrupt_of(0).unwrap(), pool.interrupt_of(1).unwrap());
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(pool.interrupt_of(2).is_none());
    }

    fn returned(data: &[u8]) -> Outcome {
        Outcome { kind: OutcomeKind::Returned, data: data.to_vec(), busy_ns: 0 }
    }

    #[test]
    fn a_batch_streams_outcomes_tagged_with_their_slots_and_closing_cancels_the_rest() {
        let pool = Pool::create(1, Vec::new());
        let batch = pool.open_batch();
        for payload in [b"a", b"b", b"c"] {
            pool.add_to_batch(&batch, payload.to_vec()).unwrap();
        }
        let (first, _) = pool.next_task(0).unwrap();
        let (second, _) = pool.next_task(0).unwrap();
        assert!(batch.next(Duration::from_millis(1)).is_none());
        pool.complete(0, second, returned(b"B"));
        pool.complete(0, first, returned(b"A"));
        let (slot, outcome) = batch.next(Duration::from_millis(1)).unwrap();
        assert_eq!((slot, outcome.data.as_slice()), (1, &b"B"[..]));
        assert_eq!(batch.next(Duration::from_millis(1)).unwrap().0, 0);
        pool.close_batch(&batch);
        assert!(lock(batches()).get(&batch.id).is_none());
        pool.shutdown(false, false);
        assert!(pool.next_task(0).is_none(), "the third task was cancelled");
        assert!(!pool.wait_stopped(Duration::from_millis(1)), "the worker has not left yet");
        pool.worker_gone(0, None);
        assert!(pool.wait_stopped(Duration::from_millis(1)));
        assert!(Pool::get(pool.id).is_some(), "known until forgotten");
        pool.forget();
        assert!(Pool::get(pool.id).is_none());
    }

    #[test]
    fn a_claimed_task_skips_the_completion_queue() {
        let pool = Pool::create(1, Vec::new());
        let task = pool.submit(b"x".to_vec()).unwrap();
        assert!(matches!(pool.wait_task(task, Duration::from_millis(1)), TaskWait::Pending));
        let (id, _) = pool.next_task(0).unwrap();
        let worker = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                pool.complete(0, id, returned(b"done"));
            })
        };
        match pool.wait_task(task, Duration::from_secs(10)) {
            TaskWait::Done(outcome) => assert_eq!(outcome.data, b"done"),
            _ => panic!("the outcome should reach the waiter"),
        }
        worker.join().unwrap();
        assert!(pool.next_completion(Duration::from_millis(1)).unwrap().is_none());
        assert!(matches!(pool.wait_task(task, Duration::from_millis(1)), TaskWait::Gone));
    }

    #[test]
    fn cancel_removes_queued_tasks_only() {
        let pool = Pool::create(1, Vec::new());
        let a = pool.submit(b"a".to_vec()).unwrap();
        let b = pool.submit(b"b".to_vec()).unwrap();
        assert_eq!(pool.next_task(0).unwrap().0, a);
        assert_eq!(pool.cancel(&[a, b]), 1);
        pool.complete(0, a, returned(b""));
        let (done, outcome) = pool.next_completion(Duration::from_millis(1)).unwrap().unwrap();
        assert_eq!(done, a);
        assert_eq!(outcome.kind, OutcomeKind::Returned);
        pool.shutdown(false, true);
        pool.worker_gone(0, None);
        assert!(pool.next_completion(Duration::from_millis(1)).is_err());
        assert!(pool.submit(Vec::new()).is_err());
    }

    #[test]
    fn a_parked_worker_takes_the_next_assignment() {
        // The parking lot is process-wide: this test alone uses it.
        let parked = park().expect("room for a parked worker");
        let taken = take_parked().expect("the parked worker is offered");
        assert!(Arc::ptr_eq(&parked, &taken));
        assert!(take_parked().is_none());
        let pool = Pool::create(1, Vec::new());
        let waiter = std::thread::spawn(move || match parked.wait() {
            Assignment::Serve(pool, worker) => Some((pool.id, worker)),
            Assignment::Exit => None,
        });
        taken.assign(Assignment::Serve(pool.clone(), 0));
        assert_eq!(waiter.join().unwrap(), Some((pool.id, 0)));
        // At exit: parked workers are told to end, and nothing parks any more.
        let last = park().expect("room again");
        let ender = std::thread::spawn(move || matches!(last.wait(), Assignment::Exit));
        stop_parked();
        assert!(ender.join().unwrap());
        assert!(park().is_none(), "no parking after stop_parked");
        end_parked(); // nothing parked: returns at once
        pool.worker_gone(0, None);
    }

    #[test]
    fn when_the_last_worker_is_gone_queued_tasks_fail_with_the_reason() {
        let pool = Pool::create(2, Vec::new());
        let batch = pool.open_batch();
        pool.add_to_batch(&batch, Vec::new()).unwrap();
        pool.worker_gone(0, Some("cannot create the interpreter".into()));
        assert!(batch.next(Duration::from_millis(1)).is_none());
        pool.worker_gone(1, None);
        let (_, outcome) = batch.next(Duration::from_millis(1)).unwrap();
        assert_eq!(outcome.kind, OutcomeKind::NotRun);
        let message = String::from_utf8(outcome.data).unwrap();
        assert!(message.contains("worker 0: cannot create the interpreter"), "{message}");
        assert!(pool.submit(Vec::new()).unwrap_err().contains("no running worker"));
        pool.shutdown(true, false);
    }
}
