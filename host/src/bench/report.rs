//! The terminal report: per engine the summary of its values and its resources; against the
//! baseline (the first engine) the ratio, its confidence interval and a plain-words verdict;
//! then warnings about unstable measurements, as first-class output.

use super::counting;
use super::power::{self, Sensitivity};
use super::results::{BenchmarkResult, EngineResults, Metric, Unit};
use super::scheduler::StopReason;
use super::stats::{self, Summary, Verdict};

/// Formats seconds with a unit that keeps 3–4 significant digits.
pub fn format_seconds(seconds: f64) -> String {
    let abs = seconds.abs();
    if abs >= 1.0 {
        format!("{seconds:.3} s")
    } else if abs >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else if abs >= 1e-6 {
        format!("{:.2} µs", seconds * 1e6)
    } else {
        format!("{:.1} ns", seconds * 1e9)
    }
}

/// Formats an instruction count in full, digits grouped: "76,746,512 instr" (counts repeat to
/// the last few digits, which is the point of counting them).
pub fn format_count(count: f64) -> String {
    let digits = format!("{:.0}", count.abs());
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if count < 0.0 && digits != "0" { "-" } else { "" };
    format!("{sign}{grouped} instr")
}

/// Formats a value of `unit`.
pub fn format_value(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Seconds => format_seconds(value),
        Unit::Instructions => format_count(value),
    }
}

/// Decimals that show a ratio of this metric to its resolution: 3 for times, 5 for counts.
pub fn ratio_decimals(metric: Metric) -> usize {
    match metric.unit() {
        Unit::Seconds => 3,
        Unit::Instructions => 5,
    }
}

pub fn format_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// "1.032× slower", "1.250× faster" (as a speed-up factor), "1.000×".
pub fn format_ratio(ratio: f64) -> String {
    if ratio > 1.0 {
        format!("{ratio:.3}× slower")
    } else if ratio < 1.0 && ratio > 0.0 {
        format!("{:.3}× faster", 1.0 / ratio)
    } else {
        format!("{ratio:.3}×")
    }
}

pub fn verdict_text(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Faster => "significantly faster",
        Verdict::Slower => "significantly slower",
        Verdict::NoSignificantDifference => "no significant difference",
        Verdict::Inconclusive => "inconclusive",
    }
}

/// "3.1%", "0.042%", "any" (nothing was detectable).
pub fn format_percent(fraction: f64) -> String {
    if !fraction.is_finite() {
        return "any".to_string();
    }
    let percent = fraction * 100.0;
    if percent >= 10.0 {
        format!("{percent:.0}%")
    } else if percent >= 0.1 {
        format!("{percent:.1}%")
    } else if percent > 0.0 {
        // Two significant digits: 0.042%, 0.0013%.
        let decimals = (1 - percent.log10().floor() as i32).clamp(2, 12) as usize;
        format!("{percent:.decimals$}%")
    } else {
        "0%".to_string()
    }
}

/// The verdict in full: for an inconclusive one, what this run could not see and how many runs
/// would; otherwise the smallest difference it could see.
pub fn verdict_sentence(c: &Versus) -> String {
    let s = &c.sensitivity;
    let runs = match s.runs_for_threshold {
        Some(m) => format!("about {m} runs would see {}", format_percent(s.threshold)),
        None => format!("no number of runs would see {} at this noise", format_percent(s.threshold)),
    };
    match c.verdict {
        Verdict::Inconclusive if s.detectable.is_finite() => format!(
            "inconclusive: differences under {} cannot be seen with {} runs at this noise; {runs}",
            format_percent(s.detectable),
            c.runs
        ),
        Verdict::Inconclusive => format!(
            "inconclusive: {} runs cannot show any difference with the {} test; {runs}",
            c.runs, c.test
        ),
        verdict => format!(
            "{} (differences of {} or more were detectable)",
            verdict_text(verdict),
            format_percent(s.detectable)
        ),
    }
}

/// What makes a verdict: the significance level, and the smallest difference that matters
/// (`--threshold`), below which a run that could not see it is called inconclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    pub alpha: f64,
    pub threshold: f64,
}

/// An engine against the baseline: the ratio (above 1: slower), its 95% interval, the test
/// behind the verdict and its p-value, and what the test could have detected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Versus {
    pub ratio: f64,
    pub ratio_ci95: (f64, f64),
    pub test: &'static str,
    pub p_value: f64,
    pub verdict: Verdict,
    pub sensitivity: Sensitivity,
    /// Runs per engine the comparison used.
    pub runs: usize,
}

/// Compares an engine with the baseline. When both have one value per interleaved block (the
/// usual case), the runs are paired by block, so that drift of the machine between blocks
/// cancels out: Wilcoxon signed-rank test on the log ratios, geometric mean ratio. Otherwise
/// (e.g. several in-process values per run) the samples are compared as independent ones:
/// Mann–Whitney U and the ratio of means with a bootstrap interval. A "no significant
/// difference" that could not have seen a difference of `criteria.threshold` becomes
/// [`Verdict::Inconclusive`].
pub fn versus(
    baseline: &EngineResults,
    other: &EngineResults,
    metric: Metric,
    criteria: Criteria,
) -> Option<Versus> {
    let alpha = criteria.alpha;
    let (paired_a, paired_b) = (baseline.per_run_values(metric), other.per_run_values(metric));
    let mut found = None;
    if metric == Metric::Instructions {
        let c = stats::compare_paired_min_effect(&paired_a, &paired_b, alpha, counting::RESOLUTION)?;
        let log_sd = power::log_ratio_sd(&paired_a, &paired_b)?;
        let n = paired_a.len();
        let test = power::Test::PairedT { resolution: counting::RESOLUTION };
        found = Some(Versus {
            ratio: c.ratio,
            ratio_ci95: c.ratio_ci95,
            test: "paired t beyond the 0.01% resolution",
            p_value: c.p_value,
            verdict: c.verdict,
            sensitivity: power::paired(test, n, log_sd, alpha, criteria.threshold),
            runs: n,
        });
    } else if paired_a.len() == paired_b.len() && paired_a.len() == baseline.runs.len() {
        if let Some(c) = stats::compare_paired(&paired_a, &paired_b, alpha) {
            let log_sd = power::log_ratio_sd(&paired_a, &paired_b)?;
            let n = paired_a.len();
            found = Some(Versus {
                ratio: c.ratio,
                ratio_ci95: c.ratio_ci95,
                test: "paired Wilcoxon signed-rank",
                p_value: c.signed_rank.p_two_sided,
                verdict: c.verdict,
                sensitivity: power::paired(power::Test::SignedRank, n, log_sd, alpha, criteria.threshold),
                runs: n,
            });
        }
    }
    let mut versus = match found {
        Some(v) => v,
        None => {
            let (a, b) = (baseline.values(metric), other.values(metric));
            let c = stats::compare(&a, &b, alpha)?;
            let (sa, sb) = (stats::summarize(&a)?, stats::summarize(&b)?);
            let sensitivity = power::independent(
                a.len(),
                b.len(),
                sa.relative_stddev()?,
                sb.relative_stddev()?,
                alpha,
                criteria.threshold,
            );
            Versus {
                ratio: c.ratio,
                ratio_ci95: c.ratio_ci95,
                test: "Mann–Whitney U",
                p_value: c.mann_whitney.p_two_sided,
                verdict: c.verdict,
                sensitivity,
                runs: a.len().min(b.len()),
            }
        }
    };
    if versus.verdict == Verdict::NoSignificantDifference && versus.sensitivity.too_weak() {
        versus.verdict = Verdict::Inconclusive;
    }
    Some(versus)
}

/// Summary and comparison (against the baseline) of every engine.
pub struct Analysis<'a> {
    pub engine: &'a EngineResults,
    pub values: Vec<f64>,
    pub summary: Option<Summary>,
    /// `None` for the baseline itself, or when either side has too few values.
    pub comparison: Option<Versus>,
}

pub fn analyze(result: &BenchmarkResult, criteria: Criteria) -> Vec<Analysis<'_>> {
    result
        .engines
        .iter()
        .enumerate()
        .map(|(i, engine)| {
            let values = engine.values(result.metric);
            let summary = stats::summarize(&values);
            let comparison = match (i, result.engines.first()) {
                (0, _) | (_, None) => None,
                (_, Some(baseline)) => versus(baseline, engine, result.metric, criteria),
            };
            Analysis { engine, values, summary, comparison }
        })
        .collect()
}

fn metric_text(result: &BenchmarkResult) -> String {
    match result.metric {
        Metric::Wall => "wall time per process, start-up included".into(),
        Metric::InProcess => "seconds per call reported by pyhost.bench(), start-up excluded".into(),
        Metric::Cpu => "user + system CPU time of the process tree, start-up included".into(),
        Metric::Instructions => format!(
            "instructions per process ({}), start-up included",
            result.counted_by.unwrap_or("counted")
        ),
    }
}

/// Instruction counts need neither many runs nor outlier checks (pyperf's timing checks would
/// flag a 500-instruction wobble); what matters is whether they repeat to within the metric's
/// resolution.
fn counted_spread_warning(summary: &Summary) -> Option<String> {
    let spread = summary.relative_stddev()?;
    (spread > counting::RESOLUTION).then(|| {
        format!(
            "instruction counts vary by {} between runs, more than the {} resolution: the program's work \
             is not the same every run (threads, time, randomness, I/O); more runs narrow the interval",
            format_percent(spread),
            format_percent(counting::RESOLUTION)
        )
    })
}

/// With `--precision`: why the runs stopped.
pub fn stop_text(result: &BenchmarkResult) -> Option<String> {
    let (reason, width) = result.stop?;
    let interval = |verb: &str| match width {
        Some(w) => format!("the widest 95% interval {verb} ±{}", format_percent(w)),
        None => "no interval yet".to_string(),
    };
    Some(match reason {
        StopReason::PrecisionReached => format!("stopped when {} (--precision)", interval("reached")),
        StopReason::MaxRuns => format!("stopped at --max-runs with {}, short of --precision", interval("at")),
        StopReason::MaxTime => format!("stopped at --max-time with {}, short of --precision", interval("at")),
    })
}

/// Prints the report of one benchmark to stdout.
pub fn print(result: &BenchmarkResult, criteria: Criteria, seed: u64) {
    let analyses = analyze(result, criteria);
    let value = |v: f64| format_value(result.metric.unit(), v);
    let runs = result.engines.first().map(|e| e.runs.len()).unwrap_or(0);
    let warmups = result.engines.first().map(|e| e.warmups.len()).unwrap_or(0);
    println!("Benchmark {}: {}", result.name, metric_text(result));
    println!(
        "  {runs} runs per engine after {warmups} warm-up run(s), interleaved in shuffled blocks (seed {seed}), {:.1} s in all",
        result.duration_seconds
    );
    if let Some(text) = stop_text(result) {
        println!("  {text}");
    }
    let width = analyses.iter().map(|a| a.engine.engine.label.len()).max().unwrap_or(6).max(6);
    println!();
    for analysis in &analyses {
        let label = &analysis.engine.engine.label;
        match &analysis.summary {
            Some(s) => {
                println!(
                    "  {label:width$}  mean {} ± {} ({})   median {}   min … max {} … {}   95% CI [{}, {}]   n={}",
                    value(s.mean),
                    value(s.stddev),
                    format_percent(s.relative_stddev().unwrap_or(0.0)),
                    value(s.median),
                    value(s.min),
                    value(s.max),
                    value(s.ci95_low),
                    value(s.ci95_high),
                    s.n
                );
            }
            None => println!("  {label:width$}  no values"),
        }
        let e = analysis.engine;
        let peak = e.runs.iter().map(|m| m.peak_rss_bytes).max().unwrap_or(0);
        println!(
            "  {:width$}  user {}  sys {}  peak RSS {}   ({} {} {})",
            "",
            format_seconds(e.mean_of(|m| m.user)),
            format_seconds(e.mean_of(|m| m.sys)),
            format_bytes(peak),
            e.engine.name,
            e.engine.version,
            e.engine.python
        );
        if let Some(engine_stats) = e.engine_statistics() {
            let text: Vec<String> = engine_stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("  {:width$}  engine statistics: {}", "", text.join(", "));
        }
    }
    if analyses.len() > 1 {
        let d = ratio_decimals(result.metric);
        let baseline = &analyses[0].engine.engine.label;
        println!();
        println!(
            "Against {baseline} (baseline), significance level {}, differences that matter: {} (--threshold):",
            criteria.alpha,
            format_percent(criteria.threshold)
        );
        for analysis in &analyses[1..] {
            let label = &analysis.engine.engine.label;
            match &analysis.comparison {
                Some(c) => println!(
                    "  {label:width$}  {}   ratio {:.d$} [95% CI {:.d$} … {:.d$}]   {} p = {:.4}   → {}",
                    format_ratio(c.ratio),
                    c.ratio,
                    c.ratio_ci95.0,
                    c.ratio_ci95.1,
                    c.test,
                    c.p_value,
                    verdict_sentence(c)
                ),
                None => println!("  {label:width$}  too few values to compare"),
            }
        }
    }
    let warnings: Vec<String> = analyses
        .iter()
        .flat_map(|a| {
            let label = a.engine.engine.label.clone();
            let texts: Vec<String> = match (&a.summary, result.metric) {
                (Some(s), Metric::Instructions) => counted_spread_warning(s).into_iter().collect(),
                (Some(s), _) => {
                    stats::stability_warnings(s, &a.values).iter().map(|w| w.to_string()).collect()
                }
                (None, _) => vec![],
            };
            texts.into_iter().map(move |w| format!("{label}: {w}"))
        })
        .collect();
    if !warnings.is_empty() {
        println!();
        for warning in warnings {
            println!("  Warning: {warning}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_get_readable_units() {
        assert_eq!(format_seconds(1.5), "1.500 s");
        assert_eq!(format_seconds(0.0123), "12.30 ms");
        assert_eq!(format_seconds(4.2e-6), "4.20 µs");
        assert_eq!(format_seconds(3.3e-7), "330.0 ns");
    }

    #[test]
    fn counts_are_shown_in_full() {
        assert_eq!(format_count(76_746_512.4), "76,746,512 instr");
        assert_eq!(format_count(56.0), "56 instr");
        assert_eq!(format_count(1000.0), "1,000 instr");
        assert_eq!(format_count(-1234.0), "-1,234 instr");
    }

    #[test]
    fn percentages_keep_two_significant_digits_when_small() {
        assert_eq!(format_percent(0.02), "2.0%");
        assert_eq!(format_percent(0.31), "31%");
        assert_eq!(format_percent(1e-4), "0.010%");
        assert_eq!(format_percent(7.3e-7), "0.000073%");
        assert_eq!(format_percent(f64::INFINITY), "any");
    }

    #[test]
    fn ratios_read_as_slower_or_faster() {
        assert_eq!(format_ratio(1.05), "1.050× slower");
        assert_eq!(format_ratio(0.5), "2.000× faster");
        assert_eq!(format_ratio(1.0), "1.000×");
    }
}
