//! Memory for what every tasklet keeps: its fiber's state (`fiber`), its saved C-stack bytes
//! (`stack::SavedStack`) and its root data-stack chunk (`cpython_state`), carved from regions
//! whose pages are faulted in ahead of use, one system call per region.
//!
//! # Why
//!
//! Starting many tasklets writes about 2.7 KB of fresh memory each. Taken from malloc, every
//! fresh page is faulted in on first touch, one page-fault exception per 4 KiB page; on the
//! virtual machines we measure on that costs ~2.6 us per page (a third of a tasklet's start),
//! while `madvise(MADV_POPULATE_WRITE)` over 1 MiB costs ~1.2 us per page (measured with
//! python3.13: touching 330 MB page by page vs mapping it populated). Transparent huge pages
//! would be cheaper still in principle, but with `defrag=madvise` (the common default) each
//! 2 MiB fault compacts memory: ~10 us per 4 KiB here.
//!
//! # How
//!
//! Blocks come in size classes of [`GRANULE`] bytes up to [`MAX_POOLED`]; bigger requests go to
//! the global allocator. A freed block goes on its class's free list (kept outside the blocks,
//! see below) and is reused first; otherwise blocks are cut from the current [`REGION_SIZE`]
//! region, mapped at its own alignment so that a block's region is found from its address.
//! Each region counts its live blocks; once one has none and the pool holds more than
//! [`RETAINED_FREE_BYTES`] of free blocks, its pages are given back with `MADV_DONTNEED` (its
//! blocks stay listed and fault in lazily if reused; which is why the free lists cannot live
//! inside the blocks). Regions are never unmapped: address space only.
//!
//! All state is behind one mutex (allocation and release happen with the GIL held anyway).

use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr;
use std::sync::Mutex;

/// Size-class step (and block alignment; at least the 16 bytes CPython's chunks need).
pub const GRANULE: usize = 64;
/// Largest pooled block.
pub const MAX_POOLED: usize = 16 * 1024;
/// Bytes per region (also its alignment).
pub const REGION_SIZE: usize = 1 << 20;
/// Free bytes the pool keeps resident before it gives whole free regions back to the kernel.
pub const RETAINED_FREE_BYTES: usize = 16 << 20;

const CLASSES: usize = MAX_POOLED / GRANULE;

struct Region {
    live: usize,
    /// Pages given back (`MADV_DONTNEED`) since the region was last fully populated.
    released: bool,
}

struct Pool {
    free: [Vec<usize>; CLASSES],
    free_bytes: usize,
    /// Bump allocation in the newest region: next free address and end.
    bump: usize,
    bump_end: usize,
    regions: HashMap<usize, Region>,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn class_of(size: usize) -> usize {
    size.div_ceil(GRANULE).max(1) - 1
}

fn class_size(class: usize) -> usize {
    (class + 1) * GRANULE
}

fn global_layout(size: usize) -> Layout {
    Layout::from_size_align(size.max(1), GRANULE).expect("valid layout")
}

/// Maps one region aligned to its size, its pages populated; None if mapping fails.
fn map_region() -> Option<usize> {
    // SAFETY: anonymous private mapping of fresh memory; the unaligned head and tail of the
    // over-sized mapping are unmapped again, leaving exactly one aligned region.
    unsafe {
        let span = 2 * REGION_SIZE;
        let raw = libc::mmap(
            ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if raw == libc::MAP_FAILED {
            return None;
        }
        let raw = raw as usize;
        let base = (raw + REGION_SIZE - 1) & !(REGION_SIZE - 1);
        if base > raw {
            libc::munmap(raw as *mut _, base - raw);
        }
        let end = raw + span;
        if end > base + REGION_SIZE {
            libc::munmap((base + REGION_SIZE) as *mut _, end - (base + REGION_SIZE));
        }
        populate(base, REGION_SIZE);
        Some(base)
    }
}

/// Faults the pages of `[base, base + len)` in with one call (a kernel without
/// MADV_POPULATE_WRITE, before Linux 5.14, leaves them to fault lazily: slower, same result).
pub fn populate(base: usize, len: usize) {
    // SAFETY: advice on a private writable mapping; populating changes no contents.
    unsafe { libc::madvise(base as *mut _, len, libc::MADV_POPULATE_WRITE) };
}

impl Pool {
    fn new() -> Pool {
        Pool {
            free: std::array::from_fn(|_| Vec::new()),
            free_bytes: 0,
            bump: 0,
            bump_end: 0,
            regions: HashMap::new(),
        }
    }

    fn allocate(&mut self, class: usize) -> Option<usize> {
        let size = class_size(class);
        let block = if let Some(block) = self.free[class].pop() {
            self.free_bytes -= size;
            block
        } else {
            if self.bump + size > self.bump_end {
                let base = map_region()?;
                self.regions.insert(base, Region { live: 0, released: false });
                // The rest of the old region stays unused: under MAX_POOLED bytes.
                self.bump = base;
                self.bump_end = base + REGION_SIZE;
            }
            let block = self.bump;
            self.bump += size;
            block
        };
        let Some(region) = self.regions.get_mut(&(block & !(REGION_SIZE - 1))) else {
            unreachable!("every pooled block lies in a region of the pool")
        };
        if region.released {
            region.released = false;
            populate(block & !(REGION_SIZE - 1), REGION_SIZE);
        }
        region.live += 1;
        Some(block)
    }

    fn release(&mut self, block: usize, class: usize) {
        let base = block & !(REGION_SIZE - 1);
        self.free[class].push(block);
        self.free_bytes += class_size(class);
        let Some(region) = self.regions.get_mut(&base) else { return };
        region.live -= 1;
        let current = self.bump > base && self.bump <= base + REGION_SIZE;
        if region.live == 0 && !region.released && !current && self.free_bytes > RETAINED_FREE_BYTES {
            region.released = true;
            // SAFETY: no live block in the region; free blocks hold no data the pool needs.
            unsafe { libc::madvise(base as *mut _, REGION_SIZE, libc::MADV_DONTNEED) };
        }
    }
}

/// `size` bytes aligned to [`GRANULE`] (from the global allocator when too big for the pool
/// or when no region can be mapped), or None if memory is exhausted. Release with [`release`]
/// and the same `size`.
pub fn allocate(size: usize) -> Option<*mut u8> {
    if size <= MAX_POOLED {
        let mut guard = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(block) = guard.get_or_insert_with(Pool::new).allocate(class_of(size)) {
            return Some(block as *mut u8);
        }
    }
    // SAFETY: non-zero size.
    let block = unsafe { std::alloc::alloc(global_layout(size)) };
    (!block.is_null()).then_some(block)
}

/// Gives back a block from [`allocate`].
///
/// # Safety
/// `block` came from `allocate(size)` with this `size` and is not used afterwards.
pub unsafe fn release(block: *mut u8, size: usize) {
    if size <= MAX_POOLED {
        let mut guard = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let pool = guard.as_mut().filter(|p| p.regions.contains_key(&(block as usize & !(REGION_SIZE - 1))));
        if let Some(pool) = pool {
            pool.release(block as usize, class_of(size));
            return;
        }
    }
    std::alloc::dealloc(block, global_layout(size));
}

/// `Box::new(value)`, in a pool block: the pointer to give to [`unboxed`]; None if memory is
/// exhausted (`value` is dropped then).
pub fn boxed<T>(value: T) -> Option<*mut T> {
    const { assert!(std::mem::align_of::<T>() <= GRANULE) };
    let block = allocate(std::mem::size_of::<T>().max(1))?.cast::<T>();
    // SAFETY: a fresh block, large enough and aligned for T (checked above).
    unsafe { block.write(value) };
    Some(block)
}

/// Takes back the value from a [`boxed`] block and frees the block.
///
/// # Safety
/// `block` came from `boxed::<T>` and is not used afterwards.
pub unsafe fn unboxed<T>(block: *mut T) -> T {
    let value = block.read();
    release(block.cast(), std::mem::size_of::<T>().max(1));
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_the_granule() {
        assert_eq!(class_size(class_of(1)), GRANULE);
        assert_eq!(class_size(class_of(GRANULE)), GRANULE);
        assert_eq!(class_size(class_of(GRANULE + 1)), 2 * GRANULE);
        assert_eq!(class_size(class_of(MAX_POOLED)), MAX_POOLED);
    }
}
