//! `pyhost bench`: A/B benchmarking of engines on the same program.
//!
//! - [`scheduler`]: warm-ups, then interleaved shuffled blocks (one run per engine each).
//! - [`executor`]: one fresh process per run; wall, CPU, peak RSS, in-process values.
//! - [`counting`]: `--metric instructions`, each run's instruction count (CPU counter or Valgrind).
//! - [`results`]: the measured data.
//! - [`stats`]: summaries, confidence intervals, significance tests, outliers, warnings.
//! - [`power`]: the smallest difference a comparison could detect, and the runs it would take.
//! - [`report`]: the terminal table and verdicts.
//! - [`export`]: `--json` (pyperf's format), `--markdown`; [`plot`]: `--plot FILE.svg`.
//! - [`suite`]: `--suite DIR`, every program of a folder, one table of ratios.

pub mod counting;
pub mod executor;
pub mod export;
pub mod plot;
pub mod power;
pub mod report;
pub mod results;
pub mod scheduler;
pub mod stats;
pub mod suite;

use crate::loader;
use executor::{run_once, ProcessSpec, RunError};
use indicatif::{ProgressBar, ProgressStyle};
use results::{BenchmarkResult, EngineResults, EngineUnderTest, Metric};
use scheduler::{Progress, RunCount, Scheduler};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of `pyhost bench` (see `pyhost bench --help`).
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "A/B-benchmark engines on the same program: fresh processes, interleaved runs, honest statistics",
    after_help = "The first engine is the baseline. Examples:\n  \
        pyhost bench -e stock -e parallel app.py --runs 20\n  \
        pyhost bench -e stock -e stock -c 'sum(range(10**6))'      # A-vs-A check\n  \
        pyhost bench -e stock --metric in-process bench/programs/fib.py\n  \
        pyhost bench -e stock -e stackless --suite bench/programs"
)]
pub struct BenchArgs {
    /// An engine to benchmark (NAME or PATH); repeat for more. The first is the baseline.
    #[arg(short = 'e', long = "engine", value_name = "NAME|PATH")]
    pub engines: Vec<String>,
    /// Measured runs per engine (default: at least --min-runs and --min-time).
    #[arg(short = 'r', long, value_name = "N")]
    pub runs: Option<usize>,
    /// Warm-up runs per engine, discarded.
    #[arg(short = 'w', long, value_name = "N", default_value_t = 1)]
    pub warmup: usize,
    /// Without --runs: keep measuring until every engine has this much measured time.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    pub min_time: f64,
    /// Without --runs: at least this many runs per engine.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub min_runs: usize,
    /// Without --runs: at most this many runs per engine.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub max_runs: usize,
    /// Without --runs: keep measuring until every ratio's 95% interval is within ±P of it (e.g.
    /// `1%`), at least --min-runs and at most --max-runs runs or --max-time.
    #[arg(long, value_name = "PERCENT", value_parser = parse_fraction, conflicts_with = "runs")]
    pub precision: Option<f64>,
    /// With --precision: stop measuring after this many seconds even if it is not reached.
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    pub max_time: f64,
    /// Kill a run that takes longer than this, and stop with an error.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// What to compare: whole-process wall time; the values the program reports through
    /// `pyhost.bench()` (start-up excluded); the CPU time of the run's processes; or the
    /// instructions it executed (see --counter), which the machine's noise does not move: a 1%
    /// difference shows in 5 runs.
    #[arg(long, value_enum, default_value_t = Metric::Wall)]
    pub metric: Metric,
    /// What counts instructions for --metric instructions: the CPU's counter where it can be
    /// opened (auto), or Valgrind (exact but 20-50x slower).
    #[arg(long, value_enum, default_value_t = counting::CounterChoice::Auto)]
    pub counter: counting::CounterChoice,
    /// PYTHONHASHSEED of every run with --metric instructions (a number, or `random`), so that
    /// runs repeat exactly. Other metrics leave the environment's PYTHONHASHSEED alone.
    #[arg(long, value_name = "N|random", default_value = "0")]
    pub hash_seed: String,
    /// Significance level of the verdicts.
    #[arg(long, value_name = "ALPHA", default_value_t = stats::DEFAULT_ALPHA)]
    pub alpha: f64,
    /// The smallest difference that matters (e.g. `2%` or `0.02`): a comparison that finds no
    /// significant difference but could not have detected one this large is "inconclusive".
    #[arg(long, value_name = "PERCENT", default_value = "2%", value_parser = parse_fraction)]
    pub threshold: f64,
    /// Pin every run to these CPUs (e.g. `1` or `0,2-3`), like pyperf's --affinity: on a shared
    /// or virtual machine, CPUs can differ in speed and load, which scatters the timings.
    #[arg(long, value_name = "CPUS")]
    pub affinity: Option<String>,
    /// Seed of the run-order shuffle (default: random, printed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Write the results in pyperf's JSON format (one benchmark per engine).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the results as a Markdown table.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Draw a box plot per engine into an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Benchmark every *.py program of this folder and print one table of ratios.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["command", "module", "program"])]
    pub suite: Option<PathBuf>,
    /// Program passed in as a string (as python -c).
    #[arg(short = 'c', value_name = "CMD", conflicts_with = "module")]
    pub command: Option<String>,
    /// Library module run as a script (as python -m).
    #[arg(short = 'm', value_name = "MOD")]
    pub module: Option<String>,
    /// FILE [ARGS…], or with -c/-m the program's ARGS…
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "FILE [ARGS]")]
    pub program: Vec<String>,
}

impl BenchArgs {
    /// The verdicts' significance level and threshold.
    pub fn criteria(&self) -> report::Criteria {
        report::Criteria { alpha: self.alpha, threshold: self.threshold }
    }
}

/// Parses `2%`, `0.5 %` or `0.02` as a fraction (0.02).
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let (number, scale) = match trimmed.strip_suffix('%') {
        Some(number) => (number.trim(), 0.01),
        None => (trimmed, 1.0),
    };
    match number.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value * scale),
        _ => Err(format!("expected a percentage such as 2% or a fraction such as 0.02, not {text:?}")),
    }
}

/// Measurement settings shared by a single benchmark and a suite.
#[derive(Debug, Clone)]
pub struct Settings {
    pub runs: RunCount,
    pub warmup: usize,
    pub timeout: Option<Duration>,
    pub metric: Metric,
    pub seed: u64,
    /// Set for `--metric instructions`.
    pub instructions: Option<counting::InstructionCounter>,
    /// Environment variables every run of every engine gets.
    pub env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("engine '{engine}', {phase} run {index}: {source}")]
    Run { engine: String, phase: &'static str, index: usize, source: RunError },
    #[error(
        "engine '{engine}': the program reported no values through pyhost.bench(), \
         which --metric in-process needs (call pyhost.bench(func) in the program, or use --metric wall)"
    )]
    NoInProcessValues { engine: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

impl BenchError {
    pub fn exit_code(&self) -> i32 {
        match self {
            BenchError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// A program to benchmark: the python arguments after `pyhost --engine E`.
#[derive(Debug, Clone)]
pub struct Program {
    pub name: String,
    pub python_args: Vec<String>,
}

impl Program {
    fn from_args(args: &BenchArgs) -> Result<Program, BenchError> {
        if let Some(command) = &args.command {
            let mut python_args = vec!["-c".to_string(), command.clone()];
            python_args.extend(args.program.iter().cloned());
            return Ok(Program { name: "-c".into(), python_args });
        }
        if let Some(module) = &args.module {
            let mut python_args = vec!["-m".to_string(), module.clone()];
            python_args.extend(args.program.iter().cloned());
            return Ok(Program { name: module.clone(), python_args });
        }
        let Some(file) = args.program.first() else {
            return Err(BenchError::Usage(
                "nothing to benchmark: give FILE, -c CMD, -m MOD or --suite DIR".into(),
            ));
        };
        if !std::path::Path::new(file).is_file() {
            return Err(BenchError::Usage(format!("no such program file: {file}")));
        }
        Ok(Program::file(file, &args.program[1..]))
    }

    pub fn file(path: &str, args: &[String]) -> Program {
        let name = std::path::Path::new(path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string());
        let mut python_args = vec![path.to_string()];
        python_args.extend(args.iter().cloned());
        Program { name, python_args }
    }
}

/// `pyhost bench`; returns the exit status.
pub fn run(mut args: BenchArgs, host_engine: Option<String>) -> i32 {
    if let Some(engine) = host_engine {
        args.engines.insert(0, engine);
    }
    match run_checked(&args) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("pyhost bench: error: {err}");
            err.exit_code()
        }
    }
}

fn settings(args: &BenchArgs) -> Result<Settings, BenchError> {
    let usage = |m: &str| Err(BenchError::Usage(m.to_string()));
    if args.engines.is_empty() {
        return usage("give at least one --engine (the first is the baseline)");
    }
    if args.runs.is_some_and(|n| n < 2) {
        return usage("--runs must be at least 2 (statistics need two values)");
    }
    if !(args.alpha > 0.0 && args.alpha < 0.5) {
        return usage("--alpha must be between 0 and 0.5");
    }
    if !(args.threshold > 0.0 && args.threshold < 1.0) {
        return usage("--threshold must be between 0% and 100% (e.g. 2%)");
    }
    if !(args.min_time >= 0.0 && args.min_time.is_finite()) {
        return usage("--min-time must be a non-negative number of seconds");
    }
    // With --precision at most 5 of --min-runs are required (the interval decides the rest),
    // and never more than --max-runs.
    let required_runs =
        if args.precision.is_some() { args.min_runs.min(5).min(args.max_runs) } else { args.min_runs };
    if args.min_runs < 2 || args.max_runs < required_runs.max(2) {
        return usage("--min-runs must be at least 2 and at most --max-runs");
    }
    let timeout = match args.timeout {
        Some(t) if !(t > 0.0 && t.is_finite()) => {
            return usage("--timeout must be a positive number of seconds")
        }
        Some(t) => Some(Duration::from_secs_f64(t)),
        None => None,
    };
    let hash_seed = args.hash_seed.trim();
    if hash_seed != "random" && hash_seed.parse::<u32>().is_err() {
        return usage("--hash-seed must be a number from 0 to 4294967295, or `random`");
    }
    let (instructions, env) = match args.metric {
        Metric::Instructions => {
            let counter = counting::InstructionCounter::choose(args.counter).map_err(BenchError::Usage)?;
            let env = if hash_seed == "random" {
                vec![]
            } else {
                vec![("PYTHONHASHSEED".to_string(), hash_seed.to_string())]
            };
            (Some(counter), env)
        }
        _ => (None, vec![]),
    };
    if !(args.max_time > 0.0 && args.max_time.is_finite()) {
        return usage("--max-time must be a positive number of seconds");
    }
    let runs = match (args.runs, args.precision) {
        (Some(n), _) => RunCount::Exactly(n),
        (None, Some(p)) if !(p > 0.0 && p < 1.0) => {
            return usage("--precision must be between 0% and 100% (e.g. 1%)");
        }
        (None, Some(precision)) => RunCount::Precision {
            precision,
            min_runs: required_runs,
            max_runs: args.max_runs,
            max_time: args.max_time,
        },
        (None, None) => {
            RunCount::Auto { min_runs: args.min_runs, min_time: args.min_time, max_runs: args.max_runs }
        }
    };
    Ok(Settings {
        runs,
        warmup: args.warmup,
        timeout,
        metric: args.metric,
        seed: args.seed.unwrap_or_else(|| fastrand::u64(..)),
        instructions,
        env,
    })
}

/// Loads and checks every engine in the parent, before any run, so a bad engine fails fast.
pub fn engines_under_test(specs: &[String]) -> Result<Vec<EngineUnderTest>, BenchError> {
    let mut engines: Vec<EngineUnderTest> = Vec::new();
    for spec in specs {
        let loaded = loader::resolve(spec).map_err(|err| BenchError::Usage(err.to_string()))?;
        let name = loaded.name().to_string();
        let repeats = engines.iter().filter(|e| e.name == name).count();
        let label = if repeats == 0 { name.clone() } else { format!("{name}#{}", repeats + 1) };
        engines.push(EngineUnderTest {
            label,
            name,
            version: loaded.descriptor.version.to_string(),
            python: loaded.descriptor.python.tag(),
            spec: loaded.spec(),
            location: loaded.location(),
        });
    }
    Ok(engines)
}

fn run_checked(args: &BenchArgs) -> Result<(), BenchError> {
    let settings = settings(args)?;
    if let Some(cpus) = &args.affinity {
        // Children inherit the affinity of this process.
        executor::pin_to_cpus(&executor::parse_cpu_list(cpus).map_err(BenchError::Usage)?)
            .map_err(|err| BenchError::Usage(format!("--affinity {cpus}: {err}")))?;
    }
    let engines = engines_under_test(&args.engines)?;
    if let Some(dir) = &args.suite {
        return suite::run(dir, &engines, &settings, args);
    }
    let program = Program::from_args(args)?;
    let result = measure(&program, &engines, &settings)?;
    report::print(&result, args.criteria(), settings.seed);
    export::write_all(std::slice::from_ref(&result), args)?;
    Ok(())
}

/// The exact per-run process: this pyhost binary, the engine's library, the program.
fn process_spec(engine: &EngineUnderTest, program: &Program, settings: &Settings) -> ProcessSpec {
    let mut args = vec!["--engine".to_string(), engine.spec.clone()];
    args.extend(program.python_args.iter().cloned());
    ProcessSpec {
        program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("pyhost")),
        args,
        env: settings.env.clone(),
        timeout: settings.timeout,
        instructions: settings.instructions.clone(),
    }
}

fn progress_bar(program: &Program, engines: usize, settings: &Settings) -> ProgressBar {
    let bar = match settings.runs {
        RunCount::Exactly(n) => ProgressBar::new(((n + settings.warmup) * engines) as u64),
        RunCount::Auto { .. } | RunCount::Precision { .. } => ProgressBar::new_spinner(),
    };
    let template = "{spinner} {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} runs  {msg}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(program.name.clone());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Measures `program` under every engine, interleaved.
pub fn measure(
    program: &Program,
    engines: &[EngineUnderTest],
    settings: &Settings,
) -> Result<BenchmarkResult, BenchError> {
    let started_at = jiff::Timestamp::now().to_string();
    let started = Instant::now();
    let specs: Vec<ProcessSpec> = engines.iter().map(|e| process_spec(e, program, settings)).collect();
    let mut results: Vec<EngineResults> = engines
        .iter()
        .map(|engine| EngineResults { engine: engine.clone(), runs: Vec::new(), warmups: Vec::new() })
        .collect();
    let mut scheduler = Scheduler::new(engines.len(), settings.runs, settings.seed);
    let bar = progress_bar(program, engines.len(), settings);
    let interval_text = std::cell::RefCell::new(String::new());
    let last_width = std::cell::RefCell::new(None);
    let run = |index: usize, phase: &'static str, number: usize| {
        bar.set_message(format!("{phase} {}{}", engines[index].label, interval_text.borrow()));
        let measured = run_once(&specs[index]).map_err(|source| BenchError::Run {
            engine: engines[index].label.clone(),
            phase,
            index: number,
            source,
        });
        bar.inc(1);
        measured
    };
    let outcome = (|| {
        for index in scheduler.warmup_order(settings.warmup) {
            let number = results[index].warmups.len() + 1;
            let m = run(index, "warm-up", number)?;
            results[index].warmups.push(m);
        }
        let measuring_since = Instant::now();
        loop {
            // The time budget (--min-time) is in seconds whatever the metric compares.
            let budget_metric = match settings.metric {
                Metric::Instructions => Metric::Wall,
                metric => metric,
            };
            let progress = Progress {
                measured_seconds: results.iter().map(|r| r.values(budget_metric).iter().sum()).collect(),
                elapsed: measuring_since.elapsed().as_secs_f64(),
                widest_interval: widest_interval(&results, settings.metric),
            };
            *last_width.borrow_mut() = progress.widest_interval;
            if let (RunCount::Precision { precision, .. }, Some(width)) =
                (settings.runs, progress.widest_interval)
            {
                *interval_text.borrow_mut() = format!(
                    "   95% interval ±{} (wanted ±{})",
                    report::format_percent(width),
                    report::format_percent(precision)
                );
            }
            let Some(block) = scheduler.next_block(&progress) else { break };
            for index in block {
                let number = results[index].runs.len() + 1;
                let m = run(index, "measured", number)?;
                if settings.metric == Metric::InProcess && m.in_process.is_empty() {
                    return Err(BenchError::NoInProcessValues { engine: engines[index].label.clone() });
                }
                results[index].runs.push(m);
            }
            if scheduler.planned_blocks().is_none() {
                bar.set_length(bar.position());
            }
        }
        Ok(())
    })();
    bar.finish_and_clear();
    outcome?;
    Ok(BenchmarkResult {
        name: program.name.clone(),
        python_args: program.python_args.clone(),
        metric: settings.metric,
        engines: results,
        started: started_at,
        duration_seconds: started.elapsed().as_secs_f64(),
        stop: scheduler.stop_reason().map(|reason| (reason, last_width.into_inner())),
        counted_by: settings.instructions.as_ref().map(|c| c.describe()),
    })
}

/// The widest 95% interval of the benchmark so far, as a fraction of its center: of every
/// engine's ratio to the baseline, or with one engine of its mean. `None` until there is one.
fn widest_interval(results: &[EngineResults], metric: Metric) -> Option<f64> {
    let relative = |low: f64, center: f64, high: f64| (center / low - 1.0).max(high / center - 1.0);
    let widths: Vec<f64> = match results {
        [] => return None,
        [only] => {
            let s = stats::summarize(&only.values(metric)).filter(|s| s.n >= 2 && s.mean > 0.0)?;
            vec![(s.ci95_high - s.mean) / s.mean]
        }
        [baseline, others @ ..] => others
            .iter()
            .map(|other| {
                // The interval does not depend on the significance level or threshold.
                let criteria = report::Criteria { alpha: stats::DEFAULT_ALPHA, threshold: 0.02 };
                report::versus(baseline, other, metric, criteria)
                    .filter(|v| v.ratio_ci95.0 > 0.0)
                    .map(|v| relative(v.ratio_ci95.0, v.ratio, v.ratio_ci95.1))
            })
            .collect::<Option<Vec<f64>>>()?,
    };
    widths.into_iter().filter(|w| w.is_finite()).reduce(f64::max)
}
