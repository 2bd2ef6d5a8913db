//! C stacks for tasklets, and how many of them a process can have.
//!
//! # The limit
//!
//! A guarded stack is an `mmap` whose lowest page is made `PROT_NONE`: two kernel VMAs (the
//! guard page and the rest differ in protection, so they never merge). Linux caps the VMAs of a
//! process at `vm.max_map_count` (65,530 by default), so guarded stacks alone stop at about
//! 32,700 tasklets, and long before that every other `mmap` of the process (Python's arenas,
//! `malloc`'s large blocks, thread stacks, `dlopen`) starts failing. No layout of guarded stacks
//! does better: any guard page between two stacks splits the mapping.
//!
//! # The policy
//!
//! * The first [`guarded_limit`] live stacks are guarded (about 28,600 with the default
//!   `vm.max_map_count`: half of what is left after keeping an eighth of the VMAs, at least
//!   4,096, for the rest of the process; `PYHOST_STACKLESS_GUARDED_STACKS=N` sets it). An overflow hits the guard page: SIGSEGV, never a
//!   silent corruption.
//! * Beyond that, stacks are carved from *pooled* slabs: one read-write mapping of
//!   [`SLAB_STACKS`] stacks without guard pages between them (adjacent slabs may even merge
//!   into one VMA), so 100,000 tasklets need a few thousand VMAs instead of 200,000.
//!
//! # The trade-off (pooled stacks)
//!
//! A pooled stack has no guard page: overflowing it writes into the top of the stack below it
//! in the slab, i.e. into the oldest frames of another suspended tasklet. What guards it
//! instead:
//!
//! 1. CPython's C-recursion counter, which the engine sizes to the usable stack (see
//!    `cpython_state::c_recursion_budget_for_stack`): deep recursion through the interpreter
//!    ends in `RecursionError` long before the end of the stack. This is the normal defence on
//!    guarded stacks too; the guard page only catches what the counter does not meter (a C
//!    extension with huge frames, `sorted()` with a recursive key, the parser's own recursion).
//! 2. A red zone: the lowest [`RED_ZONE`] bytes of each pooled stack are outside the coroutine's
//!    stack and are never written by the owner; they are all zero (fresh or `MADV_DONTNEED`ed
//!    memory, never touched, so they cost no RSS). Every time a tasklet on a pooled stack
//!    switches away or finishes, one 8-byte word every 256 bytes of its red zone is checked; a
//!    non-zero word means the stack overflowed into it, and the process is **aborted** with a
//!    message (the neighbour may already be damaged: carrying on would be the silent failure).
//!    An overflow that jumps over the whole red zone with a single frame larger than it, writes
//!    only zeros in it, or corrupts the neighbour and then crashes before the next switch, is
//!    not caught by the check: that is the guarantee given up for the tasklets beyond the
//!    guarded limit.
//!
//! The first pooled stack of the process emits a `RuntimeWarning` saying so (turned into an
//! error by `-W error`, which then refuses to create more tasklets than the guarded limit).
//! Stacks are returned on the tasklet's end: guarded ones are unmapped, pooled ones are given
//! back to their slab's free list after `MADV_DONTNEED` (their pages leave the RSS; the slabs
//! themselves stay mapped for reuse).

use corosensei::stack::{DefaultStack, Stack, StackPointer};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Bytes below each pooled stack that its owner never writes (checked for overflow).
pub const RED_ZONE: usize = 16 * 1024;
/// Pooled stacks per slab mapping (one `mmap`).
pub const SLAB_STACKS: usize = 64;
/// Distance between two checked words of a red zone.
const RED_ZONE_STRIDE: usize = 256;

/// Guarded stacks of finished tasklets kept for reuse (at most this many): a tasklet that
/// starts on one skips `mmap` + `mprotect` now and `munmap` later, and finds its top pages
/// already faulted in. They keep the pages their last tasklet touched (at most
/// `CACHED_STACKS` x the stack size of RSS; typically a few pages each).
pub const CACHED_STACKS: usize = 32;

/// Live guarded stacks (cached ones included: they keep their VMAs), all threads.
static LIVE_GUARDED: AtomicUsize = AtomicUsize::new(0);
/// Pooled stacks handed out so far (statistics).
pub static POOLED_STACKS_USED: AtomicUsize = AtomicUsize::new(0);
/// Whether the one-time warning about unguarded stacks has been emitted.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Free pooled stacks: the lowest address of each slot (red zone included); and guarded
/// stacks kept for reuse.
struct Pool {
    free: Vec<usize>,
    cached: Vec<DefaultStack>,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(Pool { free: Vec::new(), cached: Vec::new() }))
}

/// How many guarded stacks may be live at once (see the module documentation); the
/// environment variable `PYHOST_STACKLESS_GUARDED_STACKS` (a number) overrides the default.
pub fn guarded_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        if let Some(limit) =
            std::env::var("PYHOST_STACKLESS_GUARDED_STACKS").ok().and_then(|text| text.trim().parse().ok())
        {
            return limit;
        }
        let max_maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(65_530);
        let reserve = (max_maps / 8).max(4096);
        max_maps.saturating_sub(reserve) / 2
    })
}

/// A tasklet's C stack: its own guarded mapping, or a slot of a pooled slab.
pub enum TaskletStack {
    /// Always `Some` but inside `drop` (which may hand it to the cache).
    Guarded(ManuallyDrop<DefaultStack>),
    /// `slot` is the lowest address of the slot: the red zone, then the usable stack up to
    /// `slot + size`. All slots have the same size (one pool).
    Pooled { slot: usize, size: usize },
}

/// Why no stack could be had.
pub enum StackError {
    /// The mapping failed (the OS's error).
    Os(std::io::Error),
    /// The one-time warning was turned into an exception (it is set).
    Warning,
}

impl TaskletStack {
    /// A stack of `size` usable bytes (a multiple of the page size): guarded while the guarded
    /// budget lasts, else pooled (a slot of `size` plus the red zone below it).
    ///
    /// `warn` is called once per process, before the first pooled stack is handed out; an
    /// `Err` from it refuses the stack.
    pub fn new(size: usize, warn: impl FnOnce() -> Result<(), ()>) -> Result<Self, StackError> {
        if let Some(stack) = lock(pool()).cached.pop() {
            // All cached stacks have `size` bytes: there is one stack size (fiber::STACK_SIZE).
            return Ok(TaskletStack::Guarded(ManuallyDrop::new(stack)));
        }
        if LIVE_GUARDED.fetch_add(1, Ordering::Relaxed) < guarded_limit() {
            return match DefaultStack::new(size) {
                Ok(stack) => Ok(TaskletStack::Guarded(ManuallyDrop::new(stack))),
                Err(error) => {
                    LIVE_GUARDED.fetch_sub(1, Ordering::Relaxed);
                    Err(StackError::Os(error))
                }
            };
        }
        LIVE_GUARDED.fetch_sub(1, Ordering::Relaxed);
        if !WARNED.swap(true, Ordering::Relaxed) && warn().is_err() {
            WARNED.store(false, Ordering::Relaxed);
            return Err(StackError::Warning);
        }
        let size = size + RED_ZONE;
        let slot = pooled_slot(size).map_err(StackError::Os)?;
        POOLED_STACKS_USED.fetch_add(1, Ordering::Relaxed);
        Ok(TaskletStack::Pooled { slot, size })
    }

    /// The red zone to check after the tasklet ran (pooled stacks), as (start, length).
    pub fn red_zone(&self) -> Option<(usize, usize)> {
        match self {
            TaskletStack::Guarded(_) => None,
            TaskletStack::Pooled { slot, .. } => Some((*slot, RED_ZONE)),
        }
    }
}

/// Whether a red zone is still untouched (all checked words zero).
///
/// # Safety
/// `(start, len)` is the red zone of a live pooled stack (mapped, readable).
pub unsafe fn red_zone_intact(start: usize, len: usize) -> bool {
    let mut at = start;
    while at < start + len {
        // Volatile: the words are written behind the compiler's back (by another stack).
        if std::ptr::read_volatile(at as *const u64) != 0 {
            return false;
        }
        at += RED_ZONE_STRIDE;
    }
    true
}

fn lock(pool: &Mutex<Pool>) -> std::sync::MutexGuard<'_, Pool> {
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes a free slot, mapping a new slab if there is none.
fn pooled_slot(size: usize) -> std::io::Result<usize> {
    let mut pool = lock(pool());
    if let Some(slot) = pool.free.pop() {
        return Ok(slot);
    }
    let len = size * SLAB_STACKS;
    // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
    let slab = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if slab == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let slab = slab as usize;
    // Slot 0 now, the others later in ascending order (`pop` takes from the end).
    pool.free.extend((1..SLAB_STACKS).rev().map(|i| slab + i * size));
    Ok(slab)
}

impl Drop for TaskletStack {
    fn drop(&mut self) {
        match self {
            TaskletStack::Guarded(stack) => {
                // SAFETY: `drop` runs once; the stack is not used after this.
                let stack = unsafe { ManuallyDrop::take(stack) };
                let mut pool = lock(pool());
                if pool.cached.len() < CACHED_STACKS {
                    // Its coroutine has finished or never started: nothing lives on it, and
                    // corosensei initialises a new coroutine's frames itself.
                    pool.cached.push(stack);
                    return;
                }
                drop(pool);
                drop(stack); // munmap
                LIVE_GUARDED.fetch_sub(1, Ordering::Relaxed);
            }
            TaskletStack::Pooled { slot, size } => {
                // SAFETY: the slot belongs to this stack, whose coroutine has finished (or never
                // started): nothing lives on it. MADV_DONTNEED drops its pages (zero-filled on
                // next use), which also resets the red zone to zeros.
                unsafe { libc::madvise(*slot as *mut libc::c_void, *size, libc::MADV_DONTNEED) };
                lock(pool()).free.push(*slot);
            }
        }
    }
}

// SAFETY: base/limit describe memory owned by this value for its whole life, readable and
// writable, 16-byte aligned (page-aligned ends), and the limit is above the red zone.
unsafe impl Stack for TaskletStack {
    #[inline]
    fn base(&self) -> StackPointer {
        match self {
            TaskletStack::Guarded(stack) => stack.base(),
            TaskletStack::Pooled { slot, size } => StackPointer::new(slot + size).expect("non-null stack"),
        }
    }

    #[inline]
    fn limit(&self) -> StackPointer {
        match self {
            TaskletStack::Guarded(stack) => stack.limit(),
            TaskletStack::Pooled { slot, .. } => StackPointer::new(slot + RED_ZONE).expect("non-null stack"),
        }
    }
}
