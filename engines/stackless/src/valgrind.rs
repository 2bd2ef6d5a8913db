//! Valgrind client requests: what the engine tells Valgrind's tools about its tasklet stacks.
//!
//! A client request is a "magic" instruction sequence that Valgrind's JIT recognises and turns
//! into a call into the tool, and that a real CPU runs as a few no-op instructions (on x86_64:
//! four rotates of `rdi` by 3, 13, 61 and 51 bits, 128 in all, so `rdi` is unchanged, then
//! `xchg rbx, rbx`), returning the default. So the requests cost a handful of instructions when
//! the program does not run under Valgrind, and need no Valgrind headers or library to build.
//!
//! # What the engine tells Valgrind, and why
//!
//! - **Its stacks.** Valgrind takes a stack-pointer move of more than `--max-stackframe` (2 MB)
//!   that does not land in a known stack for a stack switch it cannot explain ("Warning: client
//!   switching stacks?"), and memcheck leaves the state of stack memory alone for it. The shared
//!   stacks (`stack::ThreadStacks`) are corosensei's `DefaultStack` mappings, and corosensei
//!   registers each with `VALGRIND_STACK_REGISTER` when it maps it and deregisters it
//!   (`VALGRIND_STACK_DEREGISTER`) before unmapping it (its `stack::valgrind` module), so a
//!   tasklet switch is a switch between registered stacks, which Valgrind accepts silently. The
//!   engine makes no registration of its own (a second one of the same range would only be
//!   another entry in Valgrind's list).
//! - **The bytes it copies** (memcheck). memcheck marks stack memory below the stack pointer
//!   inaccessible as the pointer rises (as frames return). Copying a suspended tasklet's bytes
//!   off its shared stack reads [`crate::stack::BELOW_SP_MARGIN`] bytes below its recorded
//!   stack pointer, and copying a tasklet's bytes back writes where the stack's last occupant
//!   had already returned from (so that memory is inaccessible): memcheck would report both as
//!   invalid reads and writes, and then every read the resumed tasklet makes of its own
//!   restored frames. So `stack::SavedStack` marks the margin below the
//!   stack pointer defined before copying it off ([`make_mem_defined`]), and the destination
//!   accessible before copying bytes back ([`make_mem_undefined`]: the copy then carries each
//!   byte's definedness back from the saved block, so uninitialised locals stay uninitialised).
//!
//! greenlet, whose stack copying ours follows, needs neither, and its sources make no client
//! requests: its greenlets all run on the thread's own stack (a switch moves the stack pointer
//! within it), so Valgrind sees no stack switch; what it copies to the heap lies at or above
//! the stack pointer, and it moves the stack pointer down to the target's before copying the
//! target's bytes back, so memcheck already counts that memory as accessible.

/// `VG_USERREQ__RUNNING_ON_VALGRIND` (valgrind.h): Valgrind's nesting depth, 0 on a real CPU.
#[cfg(test)]
const RUNNING_ON_VALGRIND: usize = 0x1001;
/// memcheck's requests (memcheck.h) are numbered from `VG_USERREQ_TOOL_BASE('M', 'C')`, that is
/// `'M' << 24 | 'C' << 16`; their order there is fixed ("DO NOT CHANGE THE ORDER").
const MEMCHECK_BASE: usize = (b'M' as usize) << 24 | (b'C' as usize) << 16;
/// `VG_USERREQ__MAKE_MEM_UNDEFINED`: the range becomes accessible, its bytes undefined.
const MAKE_MEM_UNDEFINED: usize = MEMCHECK_BASE + 1;
/// `VG_USERREQ__MAKE_MEM_DEFINED`: the range becomes accessible, its bytes defined.
const MAKE_MEM_DEFINED: usize = MEMCHECK_BASE + 2;

/// Makes client request `request` with arguments `args`; returns Valgrind's answer, or
/// `default` when not running under Valgrind (or under a tool that does not handle it).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn client_request(default: usize, request: usize, args: [usize; 5]) -> usize {
    let block: [usize; 6] = [request, args[0], args[1], args[2], args[3], args[4]];
    let result: usize;
    // SAFETY: Valgrind's client-request ABI for amd64 (valgrind.h, `PLAT_amd64_linux`; the same
    // in every Valgrind release that runs amd64 code, checked against 3.19's header): the
    // "special instruction preamble" `rol rdi, 3; rol rdi, 13; rol rdi, 61; rol rdi, 51`
    // followed by `xchg rbx, rbx` makes the request whose six words (request code, five
    // arguments) `rax` points to, and leaves the answer in `rdx`, which holds the default on
    // entry. On a real CPU the rotates add up to 128 bits (rdi unchanged) and the exchange is a
    // no-op: only the flags change, which the asm! default (no `preserves_flags`) declares
    // clobbered. Valgrind reads `block` through `rax` (no `nomem`/`readonly`: the compiler
    // assumes memory may be read or written, so the block is stored before the sequence) and,
    // for the requests made here, changes only its own shadow state of the client's memory,
    // never the memory itself. No stack is used.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") block.as_ptr(),
            inout("rdx") default => result,
            options(nostack),
        );
    }
    result
}

/// Elsewhere no request is made: the default, as on a real CPU. (Valgrind runs on aarch64
/// too, with a different sequence; it is not wired up here, untested.)
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn client_request(default: usize, _request: usize, _args: [usize; 5]) -> usize {
    default
}

/// `RUNNING_ON_VALGRIND`: 0 on a real CPU, 1 under Valgrind (more when Valgrind runs itself
/// under Valgrind).
#[cfg(test)]
pub fn running_on_valgrind() -> usize {
    client_request(0, RUNNING_ON_VALGRIND, [0; 5])
}

/// `VALGRIND_MAKE_MEM_UNDEFINED(addr, len)` (memcheck; nothing elsewhere): `[addr, addr + len)`
/// becomes accessible, its bytes undefined until written. Changes no byte of the range.
#[inline(always)]
pub fn make_mem_undefined(addr: usize, len: usize) {
    client_request(0, MAKE_MEM_UNDEFINED, [addr, len, 0, 0, 0]);
}

/// `VALGRIND_MAKE_MEM_DEFINED(addr, len)` (memcheck; nothing elsewhere): `[addr, addr + len)`
/// becomes accessible and its bytes defined. Changes no byte of the range.
#[inline(always)]
pub fn make_mem_defined(addr: usize, len: usize) {
    client_request(0, MAKE_MEM_DEFINED, [addr, len, 0, 0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcheck_request_codes_match_memcheck_h() {
        // VG_USERREQ_TOOL_BASE('M','C') + 1 and + 2.
        assert_eq!(MAKE_MEM_UNDEFINED, 0x4d43_0001);
        assert_eq!(MAKE_MEM_DEFINED, 0x4d43_0002);
    }

    #[test]
    fn requests_are_no_ops_on_a_real_cpu() {
        // Under Valgrind (any tool) the depth is 1 or more instead, which checks that Valgrind
        // recognises the sequence: `PYHOST_TEST_UNDER_VALGRIND=1 valgrind --tool=memcheck
        // target/release/deps/pyhost_engine_stackless-<hash> valgrind::`.
        let depth = running_on_valgrind();
        if std::env::var_os("PYHOST_TEST_UNDER_VALGRIND").is_some() {
            assert!(depth >= 1, "the client-request sequence was not recognised by Valgrind");
        } else {
            assert_eq!(depth, 0);
        }
        let bytes = [7u8; 64];
        make_mem_undefined(bytes.as_ptr() as usize, bytes.len());
        make_mem_defined(bytes.as_ptr() as usize, bytes.len());
        assert_eq!(std::hint::black_box(bytes), [7u8; 64]);
        // The rotates leave every register a caller relies on as it was.
        let mut sum = 0usize;
        for i in 0..100usize {
            make_mem_defined(bytes.as_ptr() as usize, i % bytes.len());
            sum = sum.wrapping_add(i);
        }
        assert_eq!(sum, 4950);
    }
}
