//! `--markdown FILE`: the results as Markdown tables (one per benchmark, and for a suite a
//! table of ratios against the baseline with their geometric mean).

use super::super::report::{analyze, format_value, ratio_decimals, verdict_sentence, Criteria};
use super::super::results::BenchmarkResult;
use super::super::stats;
use super::super::suite::{geometric_mean_with_interval, RatioWithInterval};

pub fn render(results: &[BenchmarkResult], criteria: Criteria) -> String {
    let mut out = String::new();
    for result in results {
        let analyses = analyze(result, criteria);
        let unit = result.metric.unit();
        let d = ratio_decimals(result.metric);
        out.push_str(&format!("### {}\n\n", result.name));
        if let Some(text) = super::super::report::stop_text(result) {
            out.push_str(&format!("{}{}.\n\n", text[..1].to_uppercase(), &text[1..]));
        }
        out.push_str(
            "| Engine | Mean | ± SD | Median | Min | Max | Runs | vs baseline (95% CI) | Verdict |\n",
        );
        out.push_str("|:---|---:|---:|---:|---:|---:|---:|:---|:---|\n");
        for a in &analyses {
            let Some(s) = &a.summary else { continue };
            let (ratio, verdict) = match &a.comparison {
                Some(c) => (
                    format!("{:.d$} ({:.d$} … {:.d$})", c.ratio, c.ratio_ci95.0, c.ratio_ci95.1),
                    verdict_sentence(c),
                ),
                None => ("1.000 (baseline)".to_string(), String::new()),
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                a.engine.engine.label,
                format_value(unit, s.mean),
                format_value(unit, s.stddev),
                format_value(unit, s.median),
                format_value(unit, s.min),
                format_value(unit, s.max),
                s.n,
                ratio,
                verdict
            ));
        }
        out.push('\n');
    }
    if results.len() > 1 {
        out.push_str(&suite_table(results, criteria));
    }
    out
}

/// Ratio of every non-baseline engine per program, and the geometric mean per engine.
pub fn suite_table(results: &[BenchmarkResult], criteria: Criteria) -> String {
    let Some(first) = results.first() else { return String::new() };
    let labels: Vec<&str> = first.engines.iter().skip(1).map(|e| e.engine.label.as_str()).collect();
    let mut out =
        format!("### Suite: ratio to `{}` (lower is faster)\n\n| Program |", first.engines[0].engine.label);
    for label in &labels {
        out.push_str(&format!(" `{label}` |"));
    }
    out.push_str("\n|:---|");
    out.push_str(&"---:|".repeat(labels.len()));
    out.push('\n');
    let mut per_engine: Vec<Vec<RatioWithInterval>> = vec![Vec::new(); labels.len()];
    for result in results {
        out.push_str(&format!("| {} |", result.name));
        for (i, a) in analyze(result, criteria).iter().skip(1).enumerate() {
            match &a.comparison {
                Some(c) => {
                    per_engine[i].push((c.ratio, c.ratio_ci95));
                    let mark = match c.verdict {
                        stats::Verdict::Faster | stats::Verdict::Slower => " *",
                        stats::Verdict::Inconclusive => " ?",
                        stats::Verdict::NoSignificantDifference => "",
                    };
                    out.push_str(&format!(" {:.3}{mark} |", c.ratio));
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out.push_str("| **geometric mean** |");
    for ratios in &per_engine {
        match geometric_mean_with_interval(ratios) {
            Some((g, (low, high))) => out.push_str(&format!(" **{g:.3}** ({low:.3} … {high:.3}) |")),
            None => out.push_str(" – |"),
        }
    }
    out.push_str("\n\n`*`: significant at the chosen level; `?`: inconclusive (this run could not have seen a difference of the threshold).\n");
    out
}
