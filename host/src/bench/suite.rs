//! `--suite DIR`: every `*.py` program of a folder (sorted by name) measured under every engine,
//! then one table of per-program ratios against the baseline and their geometric mean.

use super::report::{analyze, format_percent, format_ratio, format_value, ratio_decimals, Criteria};
use super::results::BenchmarkResult;
use super::results::EngineUnderTest;
use super::{export, measure, stats, BenchArgs, BenchError, Program, Settings};
use std::path::{Path, PathBuf};

/// The programs of a suite folder.
pub fn programs(dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|err| BenchError::Usage(format!("cannot read suite folder {}: {err}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "py"))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('_')))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(BenchError::Usage(format!("suite folder {} holds no *.py programs", dir.display())));
    }
    Ok(files)
}

pub fn run(
    dir: &Path,
    engines: &[EngineUnderTest],
    settings: &Settings,
    args: &BenchArgs,
) -> Result<(), BenchError> {
    let files = programs(dir)?;
    let mut results: Vec<BenchmarkResult> = Vec::new();
    for file in &files {
        let program = Program::file(&file.display().to_string(), &[]);
        let result = measure(&program, engines, settings)?;
        print_progress_line(&result, args.criteria());
        results.push(result);
    }
    println!();
    print_table(&results, args.criteria());
    export::write_all(&results, args)
}

fn print_progress_line(result: &BenchmarkResult, criteria: Criteria) {
    let parts: Vec<String> = analyze(result, criteria)
        .iter()
        .map(|a| {
            let mean = a
                .summary
                .as_ref()
                .map(|s| format_value(result.metric.unit(), s.mean))
                .unwrap_or_else(|| "–".into());
            format!("{} {mean}", a.engine.engine.label)
        })
        .collect();
    println!("{:20} {}", result.name, parts.join("   "));
}

/// The suite table: one row per program, one column per non-baseline engine.
pub fn print_table(results: &[BenchmarkResult], criteria: Criteria) {
    let Some(first) = results.first() else { return };
    let baseline = &first.engines[0].engine.label;
    let others: Vec<&str> = first.engines.iter().skip(1).map(|e| e.engine.label.as_str()).collect();
    if others.is_empty() {
        println!("(one engine only: no ratios to show; give a second --engine to compare)");
        return;
    }
    println!(
        "Ratio to {baseline} (mean time; < 1 is faster), with the verdict at level {} (inconclusive: could not see {}):",
        criteria.alpha,
        format_percent(criteria.threshold)
    );
    print!("  {:20}", "program");
    for label in &others {
        print!("  {label:>32}");
    }
    println!();
    let mut per_engine: Vec<Vec<RatioWithInterval>> = vec![Vec::new(); others.len()];
    for result in results {
        print!("  {:20}", result.name);
        for (i, a) in analyze(result, criteria).iter().skip(1).enumerate() {
            let cell = match &a.comparison {
                Some(c) => {
                    per_engine[i].push((c.ratio, c.ratio_ci95));
                    let verdict = match c.verdict {
                        stats::Verdict::NoSignificantDifference => "n.s.",
                        stats::Verdict::Faster => "faster",
                        stats::Verdict::Slower => "slower",
                        stats::Verdict::Inconclusive => "inconclusive",
                    };
                    let d = ratio_decimals(result.metric);
                    format!("{:.d$} [{:.d$}…{:.d$}] {verdict}", c.ratio, c.ratio_ci95.0, c.ratio_ci95.1)
                }
                None => "–".to_string(),
            };
            print!("  {cell:>32}");
        }
        println!();
    }
    print!("  {:20}", "geometric mean");
    for ratios in &per_engine {
        let cell = match geometric_mean_with_interval(ratios) {
            Some((g, (low, high))) => format!("{} [{low:.3}…{high:.3}]", format_ratio(g)),
            None => "–".into(),
        };
        print!("  {cell:>32}");
    }
    println!();
}

/// A program's ratio to the baseline and its 95% interval.
pub type RatioWithInterval = (f64, (f64, f64));

/// The geometric mean of the programs' ratios with a 95% interval that carries their
/// measurement uncertainty: each interval, read on the log scale as ±1.96 standard errors,
/// gives a standard error, and the mean of k independent logs has √(Σ se²)/k. (It says how
/// well this suite's mean is known, not how a different choice of programs would come out.)
pub fn geometric_mean_with_interval(ratios: &[RatioWithInterval]) -> Option<RatioWithInterval> {
    let g = stats::geometric_mean(&ratios.iter().map(|r| r.0).collect::<Vec<_>>())?;
    let k = ratios.len() as f64;
    let z = 1.959_963_984_540_054;
    let mut variance = 0.0;
    for &(_, (low, high)) in ratios {
        if !(low > 0.0 && high >= low && high.is_finite()) {
            return None;
        }
        let se = (high.ln() - low.ln()) / (2.0 * z);
        variance += se * se;
    }
    let half = z * variance.sqrt() / k;
    Some((g, (g * (-half).exp(), g * half.exp())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_geometric_mean_interval_narrows_with_more_programs() {
        let one = geometric_mean_with_interval(&[(1.1, (1.0, 1.21))]).unwrap();
        assert!((one.0 - 1.1).abs() < 1e-12);
        assert!((one.1 .0 - 1.0).abs() < 1e-9 && (one.1 .1 - 1.21).abs() < 1e-9, "{one:?}");
        let four = geometric_mean_with_interval(&[(1.1, (1.0, 1.21)); 4]).unwrap();
        let width = |r: RatioWithInterval| (r.1 .1 / r.1 .0).ln();
        assert!((width(four) - width(one) / 2.0).abs() < 1e-9, "four programs halve the log width");
        assert_eq!(geometric_mean_with_interval(&[]), None);
        assert_eq!(geometric_mean_with_interval(&[(1.0, (0.0, 1.1))]), None);
    }
}
