//! The terminal report: per engine the summary of its values and its resources; against the
//! baseline (the first engine) the ratio, its confidence interval and a plain-words verdict;
//! then warnings about unstable measurements, as first-class output.

use super::results::{BenchmarkResult, EngineResults, Metric};
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
    }
}

/// An engine against the baseline: the ratio (above 1: slower), its 95% interval, the test
/// behind the verdict and its p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Versus {
    pub ratio: f64,
    pub ratio_ci95: (f64, f64),
    pub test: &'static str,
    pub p_value: f64,
    pub verdict: Verdict,
}

/// Compares an engine with the baseline. When both have one value per interleaved block (the
/// usual case), the runs are paired by block, so that drift of the machine between blocks
/// cancels out: Wilcoxon signed-rank test on the log ratios, geometric mean ratio. Otherwise
/// (e.g. several in-process values per run) the samples are compared as independent ones:
/// Mann–Whitney U and the ratio of means with a bootstrap interval.
pub fn versus(baseline: &EngineResults, other: &EngineResults, metric: Metric, alpha: f64) -> Option<Versus> {
    let (paired_a, paired_b) = (baseline.per_run_values(metric), other.per_run_values(metric));
    if paired_a.len() == paired_b.len() && paired_a.len() == baseline.runs.len() {
        if let Some(c) = stats::compare_paired(&paired_a, &paired_b, alpha) {
            return Some(Versus {
                ratio: c.ratio,
                ratio_ci95: c.ratio_ci95,
                test: "paired Wilcoxon signed-rank",
                p_value: c.signed_rank.p_two_sided,
                verdict: c.verdict,
            });
        }
    }
    let c = stats::compare(&baseline.values(metric), &other.values(metric), alpha)?;
    Some(Versus {
        ratio: c.ratio,
        ratio_ci95: c.ratio_ci95,
        test: "Mann–Whitney U",
        p_value: c.mann_whitney.p_two_sided,
        verdict: c.verdict,
    })
}

/// Summary and comparison (against the baseline) of every engine.
pub struct Analysis<'a> {
    pub engine: &'a EngineResults,
    pub values: Vec<f64>,
    pub summary: Option<Summary>,
    /// `None` for the baseline itself, or when either side has too few values.
    pub comparison: Option<Versus>,
}

pub fn analyze(result: &BenchmarkResult, alpha: f64) -> Vec<Analysis<'_>> {
    result
        .engines
        .iter()
        .enumerate()
        .map(|(i, engine)| {
            let values = engine.values(result.metric);
            let summary = stats::summarize(&values);
            let comparison = match (i, result.engines.first()) {
                (0, _) | (_, None) => None,
                (_, Some(baseline)) => versus(baseline, engine, result.metric, alpha),
            };
            Analysis { engine, values, summary, comparison }
        })
        .collect()
}

fn metric_text(metric: Metric) -> &'static str {
    match metric {
        Metric::Wall => "wall time per process, start-up included",
        Metric::InProcess => "seconds per call reported by pyhost.bench(), start-up excluded",
    }
}

/// Prints the report of one benchmark to stdout.
pub fn print(result: &BenchmarkResult, alpha: f64, seed: u64) {
    let analyses = analyze(result, alpha);
    let runs = result.engines.first().map(|e| e.runs.len()).unwrap_or(0);
    let warmups = result.engines.first().map(|e| e.warmups.len()).unwrap_or(0);
    println!("Benchmark {}: {}", result.name, metric_text(result.metric));
    println!(
        "  {runs} runs per engine after {warmups} warm-up run(s), interleaved in shuffled blocks (seed {seed}), {:.1} s in all",
        result.duration_seconds
    );
    let width = analyses.iter().map(|a| a.engine.engine.label.len()).max().unwrap_or(6).max(6);
    println!();
    for analysis in &analyses {
        let label = &analysis.engine.engine.label;
        match &analysis.summary {
            Some(s) => {
                println!(
                    "  {label:width$}  mean {} ± {} ({:.1}%)   median {}   min … max {} … {}   95% CI [{}, {}]   n={}",
                    format_seconds(s.mean),
                    format_seconds(s.stddev),
                    s.relative_stddev().unwrap_or(0.0) * 100.0,
                    format_seconds(s.median),
                    format_seconds(s.min),
                    format_seconds(s.max),
                    format_seconds(s.ci95_low),
                    format_seconds(s.ci95_high),
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
        let baseline = &analyses[0].engine.engine.label;
        println!();
        println!("Against {baseline} (baseline), significance level {alpha}:");
        for analysis in &analyses[1..] {
            let label = &analysis.engine.engine.label;
            match &analysis.comparison {
                Some(c) => println!(
                    "  {label:width$}  {}   ratio {:.3} [95% CI {:.3} … {:.3}]   {} p = {:.4}   → {}",
                    format_ratio(c.ratio),
                    c.ratio,
                    c.ratio_ci95.0,
                    c.ratio_ci95.1,
                    c.test,
                    c.p_value,
                    verdict_text(c.verdict)
                ),
                None => println!("  {label:width$}  too few values to compare"),
            }
        }
    }
    let warnings: Vec<String> = analyses
        .iter()
        .flat_map(|a| {
            let label = a.engine.engine.label.clone();
            a.summary
                .as_ref()
                .map(|s| stats::stability_warnings(s, &a.values))
                .unwrap_or_default()
                .into_iter()
                .map(move |w| format!("{label}: {w}"))
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
    fn ratios_read_as_slower_or_faster() {
        assert_eq!(format_ratio(1.05), "1.050× slower");
        assert_eq!(format_ratio(0.5), "2.000× faster");
        assert_eq!(format_ratio(1.0), "1.000×");
    }
}
