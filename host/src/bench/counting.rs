//! `--metric instructions`: every run's instruction count, from Valgrind.
//!
//! A run becomes `valgrind --tool=cachegrind --cache-sim=no … pyhost --engine E PROGRAM`, and
//! its count is cachegrind's `summary:` line (the `Ir` event: instructions the program executed,
//! its threads included, Valgrind's own work excluded). Cachegrind with the cache simulation off
//! is Valgrind's cheapest instruction-counting tool (about 20–50× slower than native).
//!
//! Valgrind runs a program's threads one at a time, so for the parallel engine this metric
//! speaks of the work done, not of how long many cores take to do it.
//!
//! Reproducibility: every engine's runs get the same environment and argv, with
//! `PYTHONHASHSEED` fixed (`--hash-seed`, default 0) so that str hashing, and with it dict and
//! set layouts, are the same from run to run; address-space layout randomization is turned off
//! for the counted process (its effect is a few instructions per hundred million: see
//! bench/instruction_counts.py).

use super::executor::RunError;
use std::path::{Path, PathBuf};

/// Differences in instruction counts below this (as a log ratio, 0.01%) are below what the
/// metric resolves: run-to-run jitter from the environment is a few parts per million, and a
/// difference this small is not one a user can act on.
pub const RESOLUTION: f64 = 1e-4;

/// How instructions are counted.
#[derive(Debug, Clone, PartialEq)]
pub struct InstructionCounter {
    valgrind: PathBuf,
}

/// Debian's and most distributions' package that holds it.
const INSTALL_HINT: &str =
    "install Valgrind (Debian/Ubuntu: `apt-get install valgrind`; Fedora: `dnf install valgrind`)";

impl InstructionCounter {
    /// Finds Valgrind on PATH and checks that it runs.
    pub fn find() -> Result<InstructionCounter, String> {
        let Some(valgrind) = find_on_path("valgrind") else {
            return Err(format!(
                "--metric instructions counts with Valgrind, which is not on PATH: {INSTALL_HINT}"
            ));
        };
        let works = std::process::Command::new(&valgrind)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !works {
            return Err(format!(
                "--metric instructions: {} --version failed; {INSTALL_HINT}",
                valgrind.display()
            ));
        }
        Ok(InstructionCounter { valgrind })
    }

    /// The command that runs `program args…` under Valgrind, writing its count to `output`.
    pub fn command(&self, program: &Path, args: &[String], output: &Path) -> (PathBuf, Vec<String>) {
        let mut wrapped = vec![
            "--tool=cachegrind".to_string(),
            "--cache-sim=no".to_string(),
            "--branch-sim=no".to_string(),
            format!("--cachegrind-out-file={}", output.display()),
            // Valgrind's banner and summary would bury the program's own stderr.
            "--quiet".to_string(),
            program.display().to_string(),
        ];
        wrapped.extend(args.iter().cloned());
        (self.valgrind.clone(), wrapped)
    }
}

/// Reads the instruction count from a cachegrind output file: its `summary:` line, whose first
/// number is `Ir` (the only event counted with the simulations off).
pub fn read_count(output: &Path) -> Result<u64, RunError> {
    let text = std::fs::read_to_string(output).map_err(|err| {
        RunError::Count(format!("cannot read Valgrind's output {}: {err}", output.display()))
    })?;
    let summary = text.lines().find_map(|line| line.strip_prefix("summary:")).ok_or_else(|| {
        RunError::Count(format!("Valgrind's output {} has no summary line", output.display()))
    })?;
    summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| RunError::Count(format!("Valgrind's summary line is not a count: {summary:?}")))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        use std::os::unix::fs::PermissionsExt;
        candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_the_summary_lines_first_number() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cachegrind.out");
        std::fs::write(&file, "desc: I1 cache: none\ncmd: x\nevents: Ir\nfl=a\n1 5\nsummary: 76752525\n")
            .unwrap();
        assert_eq!(read_count(&file).unwrap(), 76_752_525);
        std::fs::write(&file, "events: Ir\n").unwrap();
        assert!(read_count(&file).unwrap_err().to_string().contains("no summary line"));
        std::fs::write(&file, "summary: lots\n").unwrap();
        assert!(read_count(&file).unwrap_err().to_string().contains("not a count"));
        assert!(read_count(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn the_counted_run_is_the_same_command_under_cachegrind() {
        let counter = InstructionCounter { valgrind: "/usr/bin/valgrind".into() };
        let args: Vec<String> = ["--engine", "stock", "-c", "pass"].map(String::from).to_vec();
        let (program, wrapped) = counter.command(Path::new("/x/pyhost"), &args, Path::new("/tmp/out"));
        assert_eq!(program, PathBuf::from("/usr/bin/valgrind"));
        assert!(wrapped.contains(&"--tool=cachegrind".to_string()));
        assert!(wrapped.contains(&"--cachegrind-out-file=/tmp/out".to_string()));
        assert_eq!(wrapped[wrapped.len() - 5..], ["/x/pyhost", "--engine", "stock", "-c", "pass"]);
    }
}
