//! Runs one benchmark process and measures it: wall time (from spawn to exit), user and system
//! CPU time and peak RSS (from the child's `rusage`), and whatever the program reported through
//! `pyhost.bench` (in-process values) plus the engine's statistics at exit.
//!
//! The child is awaited with `waitid(WNOWAIT)` so that a timeout watchdog can never signal a
//! recycled pid: the child is reaped (with `wait4`, for its rusage) only after the watchdog has
//! been told it exited.

use super::counting::{self, InstructionCounter};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The environment variable through which a child reports in-process values and engine
/// statistics (JSON lines appended to the named file).
pub const BENCH_OUTPUT_ENV: &str = "PYHOST_BENCH_OUTPUT";

/// One finished process.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    pub wall: f64,
    pub user: f64,
    pub sys: f64,
    pub peak_rss_bytes: u64,
    /// Instructions executed, when they were counted (`--metric instructions`).
    pub instructions: Option<u64>,
    /// Seconds per loop reported through `pyhost.bench`, in order.
    pub in_process: Vec<InProcessValue>,
    pub engine_statistics: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InProcessValue {
    pub name: String,
    pub value: f64,
    pub loops: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("cannot create a temporary file for the run: {0}")]
    TempFile(std::io::Error),
    #[error("waiting for the benchmark process failed: {0}")]
    Wait(std::io::Error),
    #[error("the program exited with status {code}{}", stderr_tail(.stderr))]
    ExitCode { code: i32, stderr: String },
    #[error("the program was killed by signal {signal}{}", stderr_tail(.stderr))]
    Signal { signal: i32, stderr: String },
    #[error("the program ran longer than the --timeout of {0:.1} s and was killed")]
    Timeout(f64),
    #[error("counting instructions failed: {0}")]
    Count(String),
}

fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(15)..];
    format!("; its stderr ended with:\n    {}", tail.join("\n    "))
}

/// What to run: the program, its arguments and environment.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// Count the run's instructions with this (and run it without address-space layout
    /// randomization, so that its counts repeat).
    pub instructions: Option<InstructionCounter>,
}

/// Runs `spec` once, to completion, and measures it.
pub fn run_once(spec: &ProcessSpec) -> Result<Measurement, RunError> {
    let report = tempfile::NamedTempFile::new().map_err(RunError::TempFile)?;
    let stderr_file = tempfile::tempfile().map_err(RunError::TempFile)?;
    // Valgrind writes its count to a file; nothing else needs one.
    let count_file = match &spec.instructions {
        Some(InstructionCounter::Valgrind { .. }) => {
            Some(tempfile::NamedTempFile::new().map_err(RunError::TempFile)?)
        }
        _ => None,
    };
    let (program, args) = match (&spec.instructions, &count_file) {
        (Some(counter), Some(file)) => counter.command(&spec.program, &spec.args, file.path()),
        _ => (spec.program.clone(), spec.args.clone()),
    };
    let mut command = Command::new(&program);
    if spec.instructions.is_some() {
        without_address_randomization(&mut command);
    }
    command
        .args(&args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(BENCH_OUTPUT_ENV, report.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file.try_clone().map_err(RunError::TempFile)?);
    // Opened on this thread just before the spawn: the child inherits it (see `counting`).
    let child_counter = match &spec.instructions {
        Some(counter) => counting::ChildCounter::for_run(counter)?,
        None => None,
    };
    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|source| RunError::Spawn { program: program.display().to_string(), source })?;
    let pid = child.id() as libc::pid_t;
    let (exited_tx, exited_rx) = mpsc::channel::<()>();
    let watchdog = spec.timeout.map(|timeout| {
        std::thread::spawn(move || match exited_rx.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // SAFETY: the child is not reaped yet (we only waited with WNOWAIT), so `pid`
                // still names it.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                true
            }
            _ => false,
        })
    });
    let wait_result = wait_without_reaping(pid);
    let wall = started.elapsed().as_secs_f64();
    let _ = exited_tx.send(());
    let timed_out = watchdog.map(|w| w.join().unwrap_or(false)).unwrap_or(false);
    // Reap (always, even after a wait error) and collect the child's resource usage.
    let (status, usage) = reap(pid);
    wait_result.map_err(RunError::Wait)?;
    let status = status.map_err(RunError::Wait)?;
    if timed_out {
        return Err(RunError::Timeout(spec.timeout.map(|t| t.as_secs_f64()).unwrap_or_default()));
    }
    if libc::WIFSIGNALED(status) {
        return Err(RunError::Signal { signal: libc::WTERMSIG(status), stderr: read_all(&stderr_file) });
    }
    let code = libc::WEXITSTATUS(status);
    if code != 0 {
        return Err(RunError::ExitCode { code, stderr: read_all(&stderr_file) });
    }
    let (in_process, engine_statistics) = parse_report(report.path());
    let instructions = match (child_counter, &count_file) {
        (Some(counter), _) => Some(counter.read()?),
        (None, Some(file)) => Some(counting::read_count(file.path())?),
        (None, None) => None,
    };
    Ok(Measurement {
        wall,
        user: timeval_seconds(usage.ru_utime),
        sys: timeval_seconds(usage.ru_stime),
        peak_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
        instructions,
        in_process,
        engine_statistics,
    })
}

/// Starts the child with address-space layout randomization off (`setarch -R`), as far as the
/// kernel allows; a refusal leaves the layout random, which only adds jitter to the counts.
fn without_address_randomization(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec and only makes the
    // async-signal-safe personality(2) system call.
    unsafe {
        command.pre_exec(|| {
            let current = libc::personality(0xffff_ffff);
            if current != -1 {
                libc::personality((current as libc::c_ulong) | libc::ADDR_NO_RANDOMIZE as libc::c_ulong);
            }
            Ok(())
        });
    }
}

fn wait_without_reaping(pid: libc::pid_t) -> std::io::Result<()> {
    loop {
        // SAFETY: `info` is a plain C struct that waitid fills; `pid` is our unreaped child.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn reap(pid: libc::pid_t) -> (std::io::Result<libc::c_int>, libc::rusage) {
    // SAFETY: zeroed rusage is a valid value; wait4 reaps our own child `pid`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status: libc::c_int = 0;
    loop {
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return (Ok(status), usage);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return (Err(err), usage);
        }
    }
}

/// Parses a CPU list like `1`, `0,2` or `0-3,6`.
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("--affinity expects a CPU list such as 1 or 0,2-3, not {text:?}");
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => {
                (a.trim().parse::<usize>().map_err(|_| bad())?, b.trim().parse::<usize>().map_err(|_| bad())?)
            }
            None => {
                let cpu = part.trim().parse::<usize>().map_err(|_| bad())?;
                (cpu, cpu)
            }
        };
        if first > last || last >= libc::CPU_SETSIZE as usize {
            return Err(bad());
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Restricts this process (and the children it starts afterwards) to `cpus`, which must all be
/// among the CPUs this process may use now.
pub fn pin_to_cpus(cpus: &[usize]) -> Result<(), String> {
    // SAFETY: cpu_set_t is a plain bit set; CPU_ZERO/CPU_SET/CPU_ISSET stay within it (indices
    // were checked against CPU_SETSIZE); sched_{get,set}affinity read or fill it.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let available: Vec<usize> =
            (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &allowed)).collect();
        if let Some(cpu) = cpus.iter().find(|cpu| !available.contains(cpu)) {
            let list: Vec<String> = available.iter().map(usize::to_string).collect();
            return Err(format!(
                "CPU {cpu} is not available to this process (available: {})",
                list.join(",")
            ));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(())
}

fn timeval_seconds(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

fn read_all(mut file: &std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

/// Reads the JSON lines a child appended: `{"name", "value", "loops"}` per in-process value, and
/// one `{"engine_statistics": {...}}` at exit. Malformed lines are ignored.
pub fn parse_report(path: &Path) -> (Vec<InProcessValue>, BTreeMap<String, f64>) {
    let mut values = Vec::new();
    let mut stats = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else { return (values, stats) };
    for line in text.lines() {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let Some(map) = json.get("engine_statistics").and_then(|v| v.as_object()) {
            for (name, value) in map {
                if let Some(value) = value.as_f64() {
                    stats.insert(name.clone(), value);
                }
            }
        } else if let Some(value) = json.get("value").and_then(|v| v.as_f64()) {
            values.push(InProcessValue {
                name: json.get("name").and_then(|v| v.as_str()).unwrap_or("").to_string(),
                value,
                loops: json.get("loops").and_then(|v| v.as_u64()).unwrap_or(1),
            });
        }
    }
    (values, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> ProcessSpec {
        ProcessSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
            timeout: Some(Duration::from_secs(20)),
            instructions: None,
        }
    }

    #[test]
    fn measures_wall_cpu_and_reads_the_report() {
        let m = run_once(&sh(
            "echo '{\"name\": \"f\", \"value\": 0.5, \"loops\": 10}' >> \"$PYHOST_BENCH_OUTPUT\"; \
             echo 'junk' >> \"$PYHOST_BENCH_OUTPUT\"; \
             echo '{\"engine_statistics\": {\"switches\": 3}}' >> \"$PYHOST_BENCH_OUTPUT\"; sleep 0.05",
        ))
        .unwrap();
        assert!(m.wall >= 0.05 && m.wall < 5.0, "{}", m.wall);
        assert!(m.peak_rss_bytes > 0);
        assert_eq!(m.in_process, vec![InProcessValue { name: "f".into(), value: 0.5, loops: 10 }]);
        assert_eq!(m.engine_statistics.get("switches"), Some(&3.0));
    }

    #[test]
    fn nonzero_exit_is_an_error_with_the_stderr_tail() {
        let err = run_once(&sh("echo boom >&2; exit 3")).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("the program exited with status 3"), "{message}");
        assert!(message.contains("boom"), "{message}");
    }

    #[test]
    fn signals_and_timeouts_are_errors() {
        assert!(matches!(run_once(&sh("kill -9 $$")).unwrap_err(), RunError::Signal { signal: 9, .. }));
        let mut spec = sh("sleep 5");
        spec.timeout = Some(Duration::from_millis(100));
        let started = Instant::now();
        assert!(matches!(run_once(&spec).unwrap_err(), RunError::Timeout(_)));
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn cpu_lists_parse_like_taskset() {
        assert_eq!(parse_cpu_list("1").unwrap(), [1]);
        assert_eq!(parse_cpu_list("0,2-3").unwrap(), [0, 2, 3]);
        assert_eq!(parse_cpu_list("3,1-2,2").unwrap(), [1, 2, 3]);
        for bad in ["", "x", "2-1", "1-", "99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let spec = ProcessSpec {
            program: "/no/such/program".into(),
            args: vec![],
            env: vec![],
            timeout: None,
            instructions: None,
        };
        assert!(matches!(run_once(&spec).unwrap_err(), RunError::Spawn { .. }));
    }
}
