//! `--metric instructions`: every run's instruction count, from the CPU's instruction counter
//! where the machine has one, else from Valgrind.
//!
//! - **Hardware counter** (`perf_event_open`, user-space instructions): opened on the thread
//!   that starts the run, disabled, with `inherit` and `enable_on_exec`, so that it counts the
//!   child from its `exec` on, its threads and its child processes, and nothing of `pyhost
//!   bench` itself; read after the child is reaped (the kernel adds an exited child's count to
//!   the counter it inherited from). No slowdown. Virtual machines often have no counters (this
//!   one: `perf stat -e instructions` says "not supported").
//! - **Valgrind**: a run becomes `valgrind --tool=cachegrind --cache-sim=no … pyhost --engine E
//!   PROGRAM`, and its count is cachegrind's `summary:` line (the `Ir` event: instructions the
//!   program executed, its threads included, Valgrind's own work excluded). About 20–50× slower.
//!   Valgrind runs a program's threads one at a time, so for the parallel engine this counts the
//!   work done, not how long many cores take to do it.
//!
//! `--counter hardware|valgrind` chooses; `auto` (the default) takes the hardware counter when
//! it can be opened.
//!
//! Reproducibility: every engine's runs get the same environment and argv, with
//! `PYTHONHASHSEED` fixed (`--hash-seed`, default 0) so that str hashing, and with it dict and
//! set layouts, are the same from run to run; address-space layout randomization is turned off
//! for the counted process.

use super::executor::RunError;
use std::path::{Path, PathBuf};

/// Differences in instruction counts below this (as a log ratio, 0.01%) are below what the
/// metric resolves: run-to-run jitter from the environment is a few parts per million, and a
/// difference this small is not one a user can act on.
pub const RESOLUTION: f64 = 1e-4;

/// Which counter `--counter` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CounterChoice {
    /// The hardware counter if it can be opened, else Valgrind.
    Auto,
    /// The CPU's instruction counter (perf_event_open); an error where there is none.
    Hardware,
    /// Valgrind's cachegrind.
    Valgrind,
}

/// How instructions are counted.
#[derive(Debug, Clone, PartialEq)]
pub enum InstructionCounter {
    Hardware,
    Valgrind { valgrind: PathBuf },
}

/// Debian's and most distributions' package that holds it.
const INSTALL_HINT: &str =
    "install Valgrind (Debian/Ubuntu: `apt-get install valgrind`; Fedora: `dnf install valgrind`)";

impl InstructionCounter {
    /// The counter `choice` names, checked to work.
    pub fn choose(choice: CounterChoice) -> Result<InstructionCounter, String> {
        let hardware = || open_hardware_counter().map(|_| InstructionCounter::Hardware);
        match choice {
            CounterChoice::Hardware => hardware().map_err(|err| {
                format!(
                    "--counter hardware: this machine's instruction counter cannot be opened ({err}); \
                     virtual machines often have none: use --counter valgrind"
                )
            }),
            CounterChoice::Valgrind => find_valgrind(),
            CounterChoice::Auto => hardware().or_else(|_| find_valgrind()),
        }
    }

    /// What the report says about the counter.
    pub fn describe(&self) -> &'static str {
        match self {
            InstructionCounter::Hardware => "the CPU's instruction counter",
            InstructionCounter::Valgrind { .. } => "Valgrind, threads run one at a time",
        }
    }

    /// The command that runs `program args…`: unchanged for the hardware counter, under
    /// Valgrind writing its count to `output` otherwise.
    pub fn command(&self, program: &Path, args: &[String], output: &Path) -> (PathBuf, Vec<String>) {
        let InstructionCounter::Valgrind { valgrind } = self else {
            return (program.to_path_buf(), args.to_vec());
        };
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
        (valgrind.clone(), wrapped)
    }
}

fn find_valgrind() -> Result<InstructionCounter, String> {
    let Some(valgrind) = find_on_path("valgrind") else {
        return Err(format!(
            "--metric instructions needs the CPU's instruction counter, which this machine does not \
             offer, or Valgrind, which is not on PATH: {INSTALL_HINT}"
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
    Ok(InstructionCounter::Valgrind { valgrind })
}

/// A counter of user-space instructions for the next process this thread starts.
fn open_hardware_counter() -> std::io::Result<ChildCounter> {
    ChildCounter::open(perf_event::events::Hardware::INSTRUCTIONS)
}

/// A perf event that counts what the processes this thread starts from now on do after their
/// `exec` (and their threads and children), and nothing of this process.
pub struct ChildCounter(perf_event::Counter);

impl ChildCounter {
    pub fn open<E: perf_event::events::Event>(event: E) -> std::io::Result<ChildCounter> {
        // The builder's defaults: disabled, kernel and hypervisor excluded, calling thread.
        let counter = perf_event::Builder::new(event)
            .observe_self()
            .any_cpu()
            .inherit(true)
            .enable_on_exec(true)
            .build()?;
        Ok(ChildCounter(counter))
    }

    /// For the next run under `counter`: a fresh counter, or none for Valgrind.
    pub fn for_run(counter: &InstructionCounter) -> Result<Option<ChildCounter>, RunError> {
        match counter {
            InstructionCounter::Hardware => open_hardware_counter()
                .map(Some)
                .map_err(|err| RunError::Count(format!("cannot open the instruction counter: {err}"))),
            InstructionCounter::Valgrind { .. } => Ok(None),
        }
    }

    /// The count, once the child has been reaped. A counter that the kernel had to share with
    /// other users (multiplexed, so its count is an estimate) is an error.
    pub fn read(mut self) -> Result<u64, RunError> {
        let data =
            self.0.read_full().map_err(|err| RunError::Count(format!("cannot read the counter: {err}")))?;
        if let (Some(enabled), Some(running)) = (data.time_enabled(), data.time_running()) {
            if running < enabled {
                return Err(RunError::Count(format!(
                    "the instruction counter ran {:.0}% of the time (shared with other perf users), \
                     so its count would be an estimate",
                    100.0 * running.as_secs_f64() / enabled.as_secs_f64().max(f64::MIN_POSITIVE)
                )));
            }
        }
        Ok(data.count())
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
        let counter = InstructionCounter::Valgrind { valgrind: "/usr/bin/valgrind".into() };
        let args: Vec<String> = ["--engine", "stock", "-c", "pass"].map(String::from).to_vec();
        let (program, wrapped) = counter.command(Path::new("/x/pyhost"), &args, Path::new("/tmp/out"));
        assert_eq!(program, PathBuf::from("/usr/bin/valgrind"));
        assert!(wrapped.contains(&"--tool=cachegrind".to_string()));
        assert!(wrapped.contains(&"--cachegrind-out-file=/tmp/out".to_string()));
        assert_eq!(wrapped[wrapped.len() - 5..], ["/x/pyhost", "--engine", "stock", "-c", "pass"]);
        let (program, same) =
            InstructionCounter::Hardware.command(Path::new("/x/pyhost"), &args, Path::new("/o"));
        assert_eq!((program, same), (PathBuf::from("/x/pyhost"), args));
    }

    #[test]
    fn a_child_counter_counts_the_child_after_exec_and_not_this_process() {
        // The hardware event may be missing here (virtual machines); the software task clock
        // goes through the same inherit/enable-on-exec path, in nanoseconds.
        let counter = ChildCounter::open(perf_event::events::Software::TASK_CLOCK).expect("task clock");
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let mut own = 0u64;
        for i in 0..20_000_000u64 {
            own = std::hint::black_box(own.wrapping_add(i));
        }
        let nanoseconds = counter.read().unwrap();
        // The shell's loop takes milliseconds; this process's own loop (tens of ms in a debug
        // build) must not be in the count, nor anything before the counter was opened.
        assert!(nanoseconds > 1_000_000, "{nanoseconds} ns");
        let again = ChildCounter::open(perf_event::events::Software::TASK_CLOCK).unwrap();
        for i in 0..20_000_000u64 {
            own = std::hint::black_box(own.wrapping_add(i));
        }
        assert_eq!(again.read().unwrap(), 0, "no child ran: nothing counted");
    }
}
