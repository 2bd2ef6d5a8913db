//! The bookkeeping behind the hook, in plain Rust (no CPython calls): which functions were seen,
//! how often they were called and how long they ran.
//!
//! A function is identified by its qualified name, file and first line. The hook finds it by the
//! address of its code object (one cheap hash lookup per call); distinct code objects with the same
//! identity (the same source compiled twice) share one entry.
//!
//! Cumulative time is the wall time during which at least one call of the function was in
//! progress: a recursive call does not count its time twice, and neither do overlapping calls in
//! two threads. A generator or coroutine is in progress while its body runs, not while it is
//! suspended.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// Hashes code-object addresses: a multiplication by a large odd constant, folded so that the
/// low bits (the bucket index) depend on every bit of the address. Addresses are aligned, so their
/// own low bits carry nothing.
#[derive(Default)]
pub struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

/// One function's counters.
#[derive(Debug, Clone)]
pub struct Function {
    pub qualname: String,
    pub file: String,
    pub line: u32,
    /// Fresh calls (a frame that starts at its first instruction).
    pub calls: u64,
    /// Re-entries of a suspended generator or coroutine frame (`next()`, `send()`, `throw()`).
    pub resumes: u64,
    /// Frames of this function being evaluated now, in all threads.
    active: u32,
    /// When `active` last went from 0 to 1.
    since: Option<Instant>,
    /// Time with `active > 0`, up to the last time it fell back to 0.
    total: Duration,
}

impl Function {
    fn new(qualname: String, file: String, line: u32) -> Self {
        Function { qualname, file, line, calls: 0, resumes: 0, active: 0, since: None, total: Duration::ZERO }
    }

    /// Cumulative time up to `now`, including a call still in progress.
    pub fn total_at(&self, now: Instant) -> Duration {
        match self.since {
            Some(since) if self.active > 0 => self.total.saturating_add(now.saturating_duration_since(since)),
            _ => self.total,
        }
    }
}

/// Every function seen so far.
#[derive(Default)]
pub struct Registry {
    /// Code-object address → index into `functions`.
    by_code: HashMap<usize, usize, BuildHasherDefault<AddressHasher>>,
    /// (qualname, file, first line) → index into `functions`; consulted only for a new code object.
    by_identity: HashMap<(String, String, u32), usize>,
    functions: Vec<Function>,
    /// Whether the hook still records new frames (cleared at exit).
    pub recording: bool,
    pub calls_total: u64,
    pub resumes_total: u64,
}

/// What [`Registry::insert`] did with the code object the caller holds a reference to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The registry now owns the caller's strong reference (release it with [`Registry::take_codes`]).
    Kept(usize),
    /// This address was already known: the caller must release its own reference.
    Known(usize),
}

impl Registry {
    /// The function whose code object lives at `code`, if it was seen before.
    #[inline]
    pub fn lookup(&self, code: usize) -> Option<usize> {
        self.by_code.get(&code).copied()
    }

    /// Registers the code object at `code`, described by the caller.
    pub fn insert(&mut self, code: usize, qualname: String, file: String, line: u32) -> Inserted {
        if let Some(&index) = self.by_code.get(&code) {
            return Inserted::Known(index);
        }
        let key = (qualname, file, line);
        let index = match self.by_identity.get(&key) {
            Some(&index) => index,
            None => {
                let index = self.functions.len();
                self.functions.push(Function::new(key.0.clone(), key.1.clone(), key.2));
                self.by_identity.insert(key, index);
                index
            }
        };
        self.by_code.insert(code, index);
        Inserted::Kept(index)
    }

    /// A frame of function `index` starts (`fresh`) or resumes being evaluated at `now`.
    #[inline]
    pub fn enter(&mut self, index: usize, fresh: bool, now: Instant) {
        let Some(function) = self.functions.get_mut(index) else { return };
        if fresh {
            function.calls += 1;
            self.calls_total += 1;
        } else {
            function.resumes += 1;
            self.resumes_total += 1;
        }
        if function.active == 0 {
            function.since = Some(now);
        }
        function.active = function.active.saturating_add(1);
    }

    /// A frame of function `index` returned, raised or yielded at `now`.
    #[inline]
    pub fn leave(&mut self, index: usize, now: Instant) {
        let Some(function) = self.functions.get_mut(index) else { return };
        function.active = function.active.saturating_sub(1);
        if function.active == 0 {
            if let Some(since) = function.since.take() {
                function.total = function.total.saturating_add(now.saturating_duration_since(since));
            }
        }
    }

    /// Forgets every code-object address and returns them, so that the caller releases the strong
    /// references the registry held. The counters stay.
    pub fn take_codes(&mut self) -> Vec<usize> {
        self.by_code.drain().map(|(code, _)| code).collect()
    }

    pub fn functions_seen(&self) -> usize {
        self.functions.len()
    }

    /// The `n` functions with the most cumulative time up to `now` (ties: more calls first, then
    /// by name), with that time.
    pub fn top(&self, n: usize, now: Instant) -> Vec<(&Function, Duration)> {
        let mut all: Vec<(&Function, Duration)> =
            self.functions.iter().map(|f| (f, f.total_at(now))).collect();
        all.sort_by(|(a, ta), (b, tb)| {
            tb.cmp(ta)
                .then(b.calls.cmp(&a.calls))
                .then_with(|| a.qualname.cmp(&b.qualname))
                .then_with(|| a.file.cmp(&b.file))
                .then(a.line.cmp(&b.line))
        });
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn recursion_and_overlap_count_their_time_once() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        let Inserted::Kept(f) = r.insert(0x1000, "f".into(), "a.py".into(), 1) else { panic!() };
        r.enter(f, true, at(t0, 0));
        r.enter(f, true, at(t0, 1)); // recursive call
        r.leave(f, at(t0, 3));
        r.leave(f, at(t0, 10));
        assert_eq!(r.top(1, at(t0, 10))[0].1, Duration::from_millis(10));
        assert_eq!(r.functions[f].calls, 2);
        assert_eq!(r.calls_total, 2);
    }

    #[test]
    fn resumes_are_not_calls_and_suspended_time_does_not_count() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        let Inserted::Kept(g) = r.insert(0x2000, "gen".into(), "a.py".into(), 5) else { panic!() };
        r.enter(g, true, at(t0, 0));
        r.leave(g, at(t0, 1));
        r.enter(g, false, at(t0, 50));
        r.leave(g, at(t0, 52));
        let top = r.top(5, at(t0, 100));
        assert_eq!(top[0].1, Duration::from_millis(3));
        assert_eq!((top[0].0.calls, top[0].0.resumes), (1, 1));
    }

    #[test]
    fn same_identity_shares_an_entry_and_known_addresses_are_reported() {
        let mut r = Registry::default();
        let a = r.insert(0x1000, "f".into(), "a.py".into(), 1);
        let b = r.insert(0x3000, "f".into(), "a.py".into(), 1);
        assert_eq!((a, b), (Inserted::Kept(0), Inserted::Kept(0)));
        assert_eq!(r.insert(0x1000, "f".into(), "a.py".into(), 1), Inserted::Known(0));
        assert_eq!(r.functions_seen(), 1);
        let mut codes = r.take_codes();
        codes.sort();
        assert_eq!(codes, [0x1000, 0x3000]);
        assert_eq!(r.lookup(0x1000), None);
    }

    #[test]
    fn top_orders_by_time_then_calls() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        for (i, (name, ms, calls)) in [("a", 1, 1), ("b", 5, 1), ("c", 1, 3)].into_iter().enumerate() {
            let Inserted::Kept(f) = r.insert(i * 16, name.into(), "x.py".into(), 1) else { panic!() };
            for c in 0..calls {
                r.enter(f, true, at(t0, 0));
                r.leave(f, at(t0, if c == 0 { ms } else { 0 }));
            }
        }
        let names: Vec<&str> = r.top(10, at(t0, 10)).iter().map(|(f, _)| f.qualname.as_str()).collect();
        assert_eq!(names, ["b", "c", "a"]);
        assert_eq!(r.top(1, at(t0, 10)).len(), 1);
    }
}
