//! What a benchmark produced: per engine, every measured run (and the discarded warm-ups).

use super::executor::Measurement;

/// Which number a benchmark compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Whole-process wall time, start-up included (one value per run).
    Wall,
    /// Seconds per call reported by `pyhost.bench()` inside the program (start-up excluded).
    InProcess,
    /// User + system CPU seconds of the run's process tree (its threads, and the child
    /// processes it waited for).
    Cpu,
    /// Instructions the run executed (start-up included), from the CPU's counter or Valgrind:
    /// unlike time, they do not move with the machine's load or clock, so a 1% difference shows
    /// in 5 runs.
    Instructions,
}

impl Metric {
    /// The unit of its values.
    pub fn unit(self) -> Unit {
        match self {
            Metric::Instructions => Unit::Instructions,
            _ => Unit::Seconds,
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Wall => "wall",
            Metric::InProcess => "in-process",
            Metric::Cpu => "cpu",
            Metric::Instructions => "instructions",
        }
    }
}

/// What a metric's values count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Instructions,
}

/// An engine under test, as loaded and checked by the parent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineUnderTest {
    /// Unique label in tables and files: the engine name, `name#2` for a repeated engine.
    pub label: String,
    pub name: String,
    pub version: String,
    pub python: String,
    /// What the child processes get as `--engine`: the library path, or the name of a
    /// built-in engine.
    pub spec: String,
    /// The library path, or `(built into pyhost)`.
    pub location: String,
}

#[derive(Debug, Clone)]
pub struct EngineResults {
    pub engine: EngineUnderTest,
    pub runs: Vec<Measurement>,
    pub warmups: Vec<Measurement>,
}

impl EngineResults {
    /// The values the statistics are computed on (seconds, or instructions).
    pub fn values(&self, metric: Metric) -> Vec<f64> {
        match metric {
            Metric::InProcess => {
                self.runs.iter().flat_map(|m| m.in_process.iter().map(|v| v.value)).collect()
            }
            _ => self.per_run_values(metric),
        }
    }

    /// One value per measured run, in block order: the wall time, or the mean of the run's
    /// in-process values (runs that reported none are skipped).
    pub fn per_run_values(&self, metric: Metric) -> Vec<f64> {
        match metric {
            Metric::Wall => self.runs.iter().map(|m| m.wall).collect(),
            Metric::Cpu => self.runs.iter().map(|m| m.user + m.sys).collect(),
            Metric::Instructions => {
                self.runs.iter().filter_map(|m| m.instructions).map(|n| n as f64).collect()
            }
            Metric::InProcess => self
                .runs
                .iter()
                .filter(|m| !m.in_process.is_empty())
                .map(|m| m.in_process.iter().map(|v| v.value).sum::<f64>() / m.in_process.len() as f64)
                .collect(),
        }
    }

    /// Mean of a per-run quantity.
    pub fn mean_of(&self, quantity: impl Fn(&Measurement) -> f64) -> f64 {
        if self.runs.is_empty() {
            return 0.0;
        }
        self.runs.iter().map(quantity).sum::<f64>() / self.runs.len() as f64
    }

    /// The engine's statistics from its last measured run.
    pub fn engine_statistics(&self) -> Option<&std::collections::BTreeMap<String, f64>> {
        self.runs.last().map(|m| &m.engine_statistics).filter(|s| !s.is_empty())
    }
}

/// One program measured under several engines.
#[derive(Debug, Clone)]
pub struct BenchmarkResult {
    /// Short name of the program (file stem, module name, or `-c`).
    pub name: String,
    /// The python command line each run used after `pyhost --engine E`.
    pub python_args: Vec<String>,
    pub metric: Metric,
    pub engines: Vec<EngineResults>,
    /// When the benchmark started (RFC 3339, UTC).
    pub started: String,
    pub duration_seconds: f64,
    /// With `--precision`: why the runs stopped, and the widest interval then (a fraction).
    pub stop: Option<(super::scheduler::StopReason, Option<f64>)>,
    /// With `--metric instructions`: what counted them.
    pub counted_by: Option<&'static str>,
}
