//! What an engine says about itself, and the rule for which CPython it can run on.

use abi_stable::{std_types::RString, StableAbi};
use std::fmt;

/// How an engine uses the CPython C API, like a wheel tag.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PythonTargetKind {
    /// Limited API only: runs on any CPython at or above `major.minor` (`abi3`).
    Abi3,
    /// Full, version-specific API: runs on exactly the minor versions `minor..=max_minor`
    /// (`cp313`; `cp312.cp313` for an engine known to match both, like a compressed wheel tag).
    Exact,
}

/// The CPython an engine was built for.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PythonTarget {
    pub kind: PythonTargetKind,
    pub major: u8,
    pub minor: u8,
    /// For `Exact`: the newest minor version accepted (`minor` for a single version).
    pub max_minor: u8,
}

impl PythonTarget {
    /// Full C API of exactly this CPython (`cp3XY`).
    pub const fn exact(major: u8, minor: u8) -> Self {
        Self { kind: PythonTargetKind::Exact, major, minor, max_minor: minor }
    }

    /// Full C API of each CPython from `major.minor` to `major.max_minor` (`cp312.cp313`): for
    /// an engine built once whose use of the version-specific API is the same in all of them.
    pub const fn exact_range(major: u8, minor: u8, max_minor: u8) -> Self {
        Self { kind: PythonTargetKind::Exact, major, minor, max_minor }
    }

    /// Limited API, this CPython or newer (`abi3`).
    pub const fn abi3(major: u8, minor: u8) -> Self {
        Self { kind: PythonTargetKind::Abi3, major, minor, max_minor: minor }
    }

    /// Whether an engine with this target may run inside CPython `major.minor`.
    pub fn accepts(&self, major: u8, minor: u8) -> bool {
        match self.kind {
            PythonTargetKind::Exact => major == self.major && (self.minor..=self.max_minor).contains(&minor),
            PythonTargetKind::Abi3 => major == self.major && minor >= self.minor,
        }
    }

    /// The short tag: `cp313`, `cp312.cp313` or `abi3`.
    pub fn tag(&self) -> String {
        match self.kind {
            PythonTargetKind::Exact => (self.minor..=self.max_minor.max(self.minor))
                .map(|minor| format!("cp{}{minor}", self.major))
                .collect::<Vec<_>>()
                .join("."),
            PythonTargetKind::Abi3 => "abi3".to_string(),
        }
    }
}

impl fmt::Display for PythonTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PythonTargetKind::Exact if self.max_minor > self.minor => write!(
                f,
                "{} (CPython {}.{} to {}.{} only)",
                self.tag(),
                self.major,
                self.minor,
                self.major,
                self.max_minor
            ),
            PythonTargetKind::Exact => {
                write!(f, "{} (CPython {}.{} only)", self.tag(), self.major, self.minor)
            }
            PythonTargetKind::Abi3 => write!(f, "abi3 (CPython >= {}.{})", self.major, self.minor),
        }
    }
}

/// An engine's identity.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct EngineDescriptor {
    /// The name users pass to `--engine`; lowercase letters, digits, `_` and `-`.
    pub name: RString,
    /// The engine's own version (semver).
    pub version: RString,
    /// One line saying what the engine does.
    pub description: RString,
    /// The CPython the engine needs.
    pub python: PythonTarget,
}

/// One named number an engine reports about its work (switches made, tasks run…).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct EngineStat {
    pub name: RString,
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_target_accepts_only_its_own_minor_version() {
        let t = PythonTarget::exact(3, 13);
        assert!(t.accepts(3, 13));
        assert!(!t.accepts(3, 12));
        assert!(!t.accepts(3, 14));
        assert_eq!(t.tag(), "cp313");
    }

    #[test]
    fn an_exact_range_accepts_each_listed_minor_version() {
        let t = PythonTarget::exact_range(3, 12, 13);
        assert!(t.accepts(3, 12) && t.accepts(3, 13));
        assert!(!t.accepts(3, 11) && !t.accepts(3, 14));
        assert_eq!(t.tag(), "cp312.cp313");
        assert_eq!(t.to_string(), "cp312.cp313 (CPython 3.12 to 3.13 only)");
        assert_eq!(PythonTarget::exact(3, 13).to_string(), "cp313 (CPython 3.13 only)");
    }

    #[test]
    fn abi3_target_accepts_its_minimum_and_newer() {
        let t = PythonTarget::abi3(3, 12);
        assert!(t.accepts(3, 12));
        assert!(t.accepts(3, 13));
        assert!(!t.accepts(3, 11));
        assert!(!t.accepts(4, 0));
        assert_eq!(t.to_string(), "abi3 (CPython >= 3.12)");
    }
}
