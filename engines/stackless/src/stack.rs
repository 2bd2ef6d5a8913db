//! C stacks for tasklets: a few shared stacks per OS thread, and stack copying.
//!
//! # Why not one stack per tasklet
//!
//! A stack of its own per tasklet costs at least one page of RSS (the deepest frames touch
//! it), an `mmap` + `mprotect` + `munmap` per tasklet, and two of the process's
//! `vm.max_map_count` (65,530) memory mappings: guarded stacks stop near 32,700 tasklets.
//!
//! # The design (greenlet's idea, with fixed slots)
//!
//! Every OS thread that runs tasklets owns [`SHARED_STACKS`] guarded stacks of [`STACK_SIZE`]
//! bytes ([`ThreadStacks`]). A tasklet is bound to one of them when it first runs and always
//! runs there, at the same addresses (its frames hold pointers into its own stack). At most
//! one tasklet *occupies* a shared stack at a time: the one whose bytes are live in it. To run
//! a tasklet whose stack is occupied by another, the dispatcher (on the thread's own stack,
//! see `fiber`) first copies the occupant's live bytes — from its stack pointer at suspension
//! to the top: typically 1–3 KiB — to the heap ([`SavedStack`]), then copies the incoming
//! tasklet's bytes back. A tasklet that finds its stack still holding its own bytes (the
//! common case when a few tasklets alternate) costs no copy at all.
//!
//! So a suspended tasklet costs only the bytes it really used; creating one maps nothing; the
//! number of tasklets is bounded by memory, not by mappings; and every shared stack has a real
//! guard page: an overflow is a SIGSEGV at the guard, never a silent corruption.
//!
//! Under Valgrind, the shared stacks are registered stacks (corosensei's `DefaultStack` does it),
//! so a tasklet switch is no "client switching stacks?", and the copies tell memcheck what
//! they do to the memory below a stack pointer (see `valgrind`).
//!
//! The one cross-stack pointer CPython 3.13 keeps is the interpreter-frame chain: each C → Python
//! entry puts an `entry_frame` on the C stack, linked from the heap frame above it. While a
//! tasklet's bytes are off its stack, `cpython_state::unlink_c_stack_frames` links its heap
//! frames around those entry frames (and `relink_frames` puts them back before it runs), so
//! `f_back` and tracebacks of a suspended tasklet never read another tasklet's stack.

use corosensei::stack::{DefaultStack, Stack, StackPointer};
use std::cell::RefCell;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

/// Usable bytes of each shared C stack: 8 MiB, the size of a Linux main thread's stack, so a
/// tasklet gets CPython's main-thread C-recursion budget (10,000 units, 839 bytes each) and
/// what stays inside it there stays inside it here. (256 KiB stacks with a 512-byte unit let
/// `sorted(key=f)` recursion and `ast.parse` of deeply nested source run into the guard page
/// where python3.13 raises RecursionError.) Only address space: pages are touched lazily, so
/// RSS grows only with the deepest use, and suspended tasklets keep only their used bytes.
pub const STACK_SIZE: usize = 8 * 1024 * 1024;

/// Shared stacks per OS thread: this many tasklets of one thread alternate without copying.
pub const SHARED_STACKS: usize = 8;

/// Bytes saved below a suspended tasklet's recorded stack pointer: what the suspend routine
/// puts below the frame that recorded it, with a margin (over 2.5x in release builds; every
/// byte here is copied, and kept, per evicted tasklet). Measured on x86_64 (rustc 1.9x,
/// corosensei 0.3): 24 bytes in release builds (the suspend is inlined: three pushes), about
/// 330 in debug builds (corosensei's `Yielder::suspend` is a call with its own frame).
/// `fiber::check_suspended_sp` verifies it at every suspension, so a toolchain that needs
/// more stops with a message instead of corrupting a stack.
pub const BELOW_SP_MARGIN: usize = if cfg!(debug_assertions) { 1024 } else { 64 };

/// Bytes copied off and back onto shared stacks, all threads (statistics).
pub static BYTES_COPIED: AtomicUsize = AtomicUsize::new(0);
/// Evictions (a tasklet's bytes copied off its stack to make room), all threads.
pub static EVICTIONS: AtomicUsize = AtomicUsize::new(0);

/// One shared stack: its guarded mapping and the tasklet whose bytes are live in it.
pub struct SharedStack {
    mapping: DefaultStack,
    /// Opaque identity of the occupant (the `fiber` module's per-fiber state), or NULL.
    occupant: AtomicPtr<()>,
}

/// The shared stacks of one OS thread. Kept alive by the thread and by every tasklet bound to
/// one of them: a tasklet that outlives its thread never has its stack unmapped under it.
pub struct ThreadStacks {
    stacks: Vec<SharedStack>,
    /// Round-robin cursor for binding new tasklets when every stack is occupied.
    next: AtomicUsize,
}

// SAFETY: the mappings are plain memory; every access to a stack's bytes and occupant happens
// with the GIL held (dispatch, fiber deallocation), which serialises them.
unsafe impl Send for ThreadStacks {}
// SAFETY: as for Send.
unsafe impl Sync for ThreadStacks {}

thread_local! {
    static THREAD_STACKS: RefCell<Option<Arc<ThreadStacks>>> = const { RefCell::new(None) };
}

impl ThreadStacks {
    /// This thread's shared stacks, mapped on first use.
    pub fn for_current_thread() -> std::io::Result<Arc<ThreadStacks>> {
        THREAD_STACKS.with(|slot| {
            let mut slot = slot.borrow_mut();
            if let Some(stacks) = slot.as_ref() {
                return Ok(Arc::clone(stacks));
            }
            // Each mapping is registered with Valgrind (VALGRIND_STACK_REGISTER, guard page
            // included) by `DefaultStack::new`, and deregistered by its drop before the unmap.
            let stacks = (0..SHARED_STACKS)
                .map(|_| {
                    DefaultStack::new(STACK_SIZE).map(|mapping| SharedStack {
                        mapping,
                        occupant: AtomicPtr::new(std::ptr::null_mut()),
                    })
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            let stacks = Arc::new(ThreadStacks { stacks, next: AtomicUsize::new(0) });
            *slot = Some(Arc::clone(&stacks));
            Ok(stacks)
        })
    }

    /// The stack a tasklet starting now is bound to: a free one if any, else the next in turn.
    pub fn pick(&self) -> usize {
        if let Some(free) = self.stacks.iter().position(|s| s.occupant.load(Ordering::Relaxed).is_null()) {
            return free;
        }
        self.next.fetch_add(1, Ordering::Relaxed) % self.stacks.len()
    }

    pub fn occupant(&self, index: usize) -> *mut () {
        self.stacks[index].occupant.load(Ordering::Relaxed)
    }

    pub fn set_occupant(&self, index: usize, occupant: *mut ()) {
        self.stacks[index].occupant.store(occupant, Ordering::Relaxed);
    }

    /// Clears the occupant of `index` if it is `occupant` (a tasklet let go of while its bytes
    /// are live there).
    pub fn vacate(&self, index: usize, occupant: *mut ()) {
        let _ = self.stacks[index].occupant.compare_exchange(
            occupant,
            std::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The view of stack `index` that a coroutine runs on.
    pub fn view(self: &Arc<Self>, index: usize) -> StackView {
        let mapping = &self.stacks[index].mapping;
        StackView { base: mapping.base(), limit: mapping.limit(), _owner: Arc::clone(self) }
    }

    /// Lowest and one-past-highest address of stack `index`'s usable bytes.
    pub fn bounds(&self, index: usize) -> (usize, usize) {
        let mapping = &self.stacks[index].mapping;
        (mapping.limit().get(), mapping.base().get())
    }
}

/// A shared stack as one coroutine sees it. Dropping it leaves the stack alone (it is shared).
pub struct StackView {
    base: StackPointer,
    limit: StackPointer,
    /// Keeps the mapping alive as long as a coroutine may run on it.
    _owner: Arc<ThreadStacks>,
}

// SAFETY: base/limit describe a mapping owned by `_owner` (kept alive by this value), readable
// and writable, page-aligned. Several views of one stack exist, but only the occupant's
// coroutine ever runs on it: the dispatcher copies bytes off and back before resuming another.
unsafe impl Stack for StackView {
    #[inline]
    fn base(&self) -> StackPointer {
        self.base
    }

    #[inline]
    fn limit(&self) -> StackPointer {
        self.limit
    }
}

/// The live bytes of a suspended tasklet, copied off its shared stack: they belong at
/// `[low, low + len)`, which ends at the stack's top. Held in a `pool` block (pre-faulted
/// memory: starting many tasklets is mostly page faults otherwise).
pub struct SavedStack {
    low: usize,
    len: usize,
    block: *mut u8,
}

impl SavedStack {
    /// Copies `[low, top)` off a shared stack; None if memory is exhausted. `sp` is the
    /// tasklet's recorded stack pointer: `[low, sp)` is the margin below it.
    ///
    /// # Safety
    /// `[low, top)` lies inside one mapped shared stack and holds the bytes of a suspended
    /// tasklet; nothing runs on that stack during the copy (the caller is on another stack).
    pub unsafe fn copy_off(low: usize, sp: usize, top: usize) -> Option<SavedStack> {
        let len = top - low;
        let block = crate::pool::allocate(len)?;
        // Under memcheck, the margin is below the tasklet's stack pointer, so inaccessible where
        // it held frames that returned: made defined (the bytes the suspend pushed are among
        // them), the copy reads it without a report. Above `sp`, the tasklet's frames are
        // accessible, and the copy carries their definedness to the block. A no-op elsewhere.
        crate::valgrind::make_mem_defined(low, sp.clamp(low, top) - low);
        std::ptr::copy_nonoverlapping(low as *const u8, block, len);
        BYTES_COPIED.fetch_add(len, Ordering::Relaxed);
        EVICTIONS.fetch_add(1, Ordering::Relaxed);
        Some(SavedStack { low, len, block })
    }

    /// Copies the bytes back where they came from.
    ///
    /// # Safety
    /// The stack they came from is mapped, and nothing runs on it (its previous occupant's
    /// bytes have been copied off, or it had none).
    pub unsafe fn copy_back(self) {
        // Under memcheck, where the stack's last occupant has returned from is inaccessible:
        // made accessible (undefined), the copy then writes the bytes and their definedness
        // from the block without a report, and the tasklet reads its restored frames freely.
        // A no-op elsewhere.
        crate::valgrind::make_mem_undefined(self.low, self.len);
        std::ptr::copy_nonoverlapping(self.block, self.low as *mut u8, self.len);
        BYTES_COPIED.fetch_add(self.len, Ordering::Relaxed);
    }
}

impl Drop for SavedStack {
    fn drop(&mut self) {
        // SAFETY: the block came from `pool::allocate(self.len)` and is dropped once.
        unsafe { crate::pool::release(self.block, self.len) };
    }
}

/// The current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads a register; no memory access, no side effect.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the stackless engine's stack copying supports x86_64 and aarch64 only");
