//! `--json FILE` in pyperf's JSON format (file format version "1.0", checked with pyperf 2.11).
//!
//! Two kinds of file, holding the same runs:
//! - `FILE`: one benchmark per program and engine, named `"<program> [<engine>]"`, so that
//!   `pyperf stats/show/check/hist FILE` show every engine, and two such files from different
//!   sessions compare with `pyperf compare_to`.
//! - `<stem>-<engine>.json`, one per engine, the benchmark named `"<program>"`, so that
//!   `pyperf compare_to FILE-<baseline>.json FILE-<other>.json` compares engines.
//!
//! pyperf's rules this follows: values are seconds per loop and strictly positive; `loops` and
//! warm-up loop counts are integers; metadata values are non-empty one-line strings or numbers;
//! a warm-up process becomes a run holding only `warmups`.

use super::super::report::{analyze, verdict_sentence, Criteria, Versus};
use super::super::results::{BenchmarkResult, EngineResults, Metric, Unit};
use super::sibling;
use crate::services::HOST_VERSION;
use serde_json::{json, Map, Value};
use std::path::Path;

/// Writes `FILE` and one `<stem>-<engine>.json` per engine.
/// The comparison of an engine with the baseline is in its benchmark's metadata:
/// `pyhost_ratio`, `pyhost_ratio_ci95_low`/`_high`, `pyhost_p_value`, `pyhost_verdict` (the
/// full sentence), `pyhost_detectable_difference` (a fraction) and, when some number of runs
/// would see `--threshold`, `pyhost_runs_for_threshold`.
pub fn write(results: &[BenchmarkResult], path: &Path, criteria: Criteria) -> Result<(), String> {
    let Some(first) = results.first() else { return Err("no results to write".into()) };
    let analyses: Vec<Vec<Option<Versus>>> =
        results.iter().map(|r| analyze(r, criteria).iter().map(|a| a.comparison).collect()).collect();
    let unit = match first.metric.unit() {
        Unit::Seconds => "second",
        Unit::Instructions => "integer",
    };
    let mut suite = Vec::new();
    for (r, comparisons) in results.iter().zip(&analyses) {
        for (e, comparison) in r.engines.iter().zip(comparisons) {
            suite.push(benchmark(r, e, &format!("{} [{}]", r.name, e.engine.label), comparison.as_ref())?);
        }
    }
    write_file(path, suite, unit)?;
    for (index, engine) in first.engines.iter().enumerate() {
        let per_engine: Vec<Value> = results
            .iter()
            .zip(&analyses)
            .filter_map(|(r, c)| r.engines.get(index).map(|e| benchmark(r, e, &r.name, c[index].as_ref())))
            .collect::<Result<_, _>>()?;
        write_file(&sibling(path, &engine.engine.label, "json"), per_engine, unit)?;
    }
    Ok(())
}

fn write_file(path: &Path, benchmarks: Vec<Value>, unit: &str) -> Result<(), String> {
    let document = json!({
        "version": "1.0",
        "metadata": { "unit": unit, "pyhost_version": HOST_VERSION },
        "benchmarks": benchmarks,
    });
    let text = serde_json::to_string(&document).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| e.to_string())
}

/// A metadata string as pyperf accepts it: one line, trimmed, not empty.
fn meta_str(map: &mut Map<String, Value>, key: &str, value: &str) {
    let clean = value.replace(['\n', '\r'], " ");
    let clean = clean.trim();
    if !clean.is_empty() {
        map.insert(key.to_string(), Value::from(clean));
    }
}

fn positive(value: f64, what: &str) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("{what} is {value}, but pyperf only accepts positive finite values"))
    }
}

fn benchmark(
    result: &BenchmarkResult,
    engine: &EngineResults,
    name: &str,
    comparison: Option<&Versus>,
) -> Result<Value, String> {
    let mut metadata = Map::new();
    meta_str(&mut metadata, "name", name);
    let command = std::iter::once(format!("pyhost --engine {}", engine.engine.name))
        .chain(result.python_args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    meta_str(&mut metadata, "command", &command);
    meta_str(&mut metadata, "engine", &engine.engine.name);
    meta_str(&mut metadata, "engine_label", &engine.engine.label);
    meta_str(&mut metadata, "engine_version", &engine.engine.version);
    meta_str(&mut metadata, "engine_python", &engine.engine.python);
    meta_str(&mut metadata, "engine_path", &engine.engine.location);
    meta_str(&mut metadata, "pyhost_metric", result.metric.name());
    meta_str(&mut metadata, "date", &result.started);
    if let Some(c) = comparison {
        for (key, value) in [
            ("pyhost_ratio", c.ratio),
            ("pyhost_ratio_ci95_low", c.ratio_ci95.0),
            ("pyhost_ratio_ci95_high", c.ratio_ci95.1),
            ("pyhost_p_value", c.p_value),
            ("pyhost_detectable_difference", c.sensitivity.detectable),
        ] {
            if value.is_finite() {
                metadata.insert(key.to_string(), json!(value));
            }
        }
        meta_str(&mut metadata, "pyhost_verdict", &verdict_sentence(c));
        if let Some(runs) = c.sensitivity.runs_for_threshold {
            metadata.insert("pyhost_runs_for_threshold".to_string(), json!(runs));
        }
    }
    if let Some(stats) = engine.engine_statistics() {
        for (key, value) in stats {
            if value.is_finite() {
                metadata.insert(format!("engine_stat_{key}"), json!(value));
            }
        }
    }
    let mut runs = Vec::new();
    for warmup in &engine.warmups {
        let value = match result.metric {
            Metric::Wall => Some((1, warmup.wall)),
            Metric::Cpu => Some((1, warmup.user + warmup.sys)),
            Metric::Instructions => warmup.instructions.map(|n| (1, n as f64)),
            Metric::InProcess => warmup.in_process.first().map(|v| (v.loops.max(1), v.value)),
        };
        if let Some((loops, value)) = value {
            runs.push(json!({ "warmups": [[loops, positive(value, "a warm-up value")?]] }));
        }
    }
    for run in &engine.runs {
        let (loops, values): (u64, Vec<f64>) = match result.metric {
            Metric::Wall => (1, vec![run.wall]),
            Metric::Cpu => (1, vec![run.user + run.sys]),
            Metric::Instructions => (1, run.instructions.map(|n| n as f64).into_iter().collect()),
            Metric::InProcess => (
                run.in_process.first().map(|v| v.loops.max(1)).unwrap_or(1),
                run.in_process.iter().map(|v| v.value).collect(),
            ),
        };
        let values: Vec<f64> =
            values.into_iter().map(|v| positive(v, "a value")).collect::<Result<_, _>>()?;
        runs.push(json!({
            "metadata": {
                "loops": loops,
                "duration": run.wall,
                "command_max_rss": run.peak_rss_bytes,
                "cpu_user": run.user,
                "cpu_sys": run.sys,
            },
            "values": values,
        }));
    }
    Ok(json!({ "metadata": metadata, "runs": runs }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::executor::{InProcessValue, Measurement};
    use crate::bench::results::EngineUnderTest;

    const CRITERIA: Criteria = Criteria { alpha: 0.05, threshold: 0.02 };

    fn engine(label: &str, walls: &[f64]) -> EngineResults {
        EngineResults {
            engine: EngineUnderTest {
                label: label.into(),
                name: label.trim_end_matches("#2").into(),
                version: "0.1.0".into(),
                python: "abi3".into(),
                spec: "/lib/libpyhost_engine_stock.so".into(),
                location: "/lib/libpyhost_engine_stock.so".into(),
            },
            runs: walls
                .iter()
                .map(|&wall| Measurement {
                    wall,
                    peak_rss_bytes: 10 << 20,
                    in_process: vec![InProcessValue { name: "f".into(), value: wall / 100.0, loops: 100 }],
                    ..Default::default()
                })
                .collect(),
            warmups: vec![Measurement { wall: walls[0], ..Default::default() }],
        }
    }

    fn result(metric: Metric) -> BenchmarkResult {
        BenchmarkResult {
            name: "nbody".into(),
            python_args: vec!["nbody.py".into()],
            metric,
            engines: vec![engine("stock", &[0.5, 0.6]), engine("stock#2", &[0.55, 0.52])],
            started: "2026-11-27T09:00:00Z".into(),
            duration_seconds: 3.0,
            stop: None,
            counted_by: None,
        }
    }

    #[test]
    fn writes_a_suite_file_and_one_file_per_engine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write(&[result(Metric::Wall)], &path, CRITERIA).unwrap();
        let suite: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(suite["version"], "1.0");
        let names: Vec<&str> = suite["benchmarks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["nbody [stock]", "nbody [stock#2]"]);
        let first = &suite["benchmarks"][0];
        assert_eq!(first["runs"][0]["warmups"], json!([[1, 0.5]]));
        assert_eq!(first["runs"][1]["values"], json!([0.5]));
        assert_eq!(first["runs"][1]["metadata"]["loops"], json!(1));
        let per_engine: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("out-stock_2.json")).unwrap())
                .unwrap();
        assert_eq!(per_engine["benchmarks"][0]["metadata"]["name"], "nbody");
        assert_eq!(per_engine["benchmarks"][0]["metadata"]["engine_label"], "stock#2");
    }

    #[test]
    fn in_process_values_keep_their_loop_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.json");
        write(&[result(Metric::InProcess)], &path, CRITERIA).unwrap();
        let suite: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // The fixture's warm-up reported no in-process value, so the first run is measured.
        let runs = &suite["benchmarks"][0]["runs"];
        assert_eq!(runs.as_array().unwrap().len(), 2);
        assert_eq!(runs[0]["metadata"]["loops"], json!(100));
        assert_eq!(runs[0]["values"], json!([0.5 / 100.0]));
    }

    #[test]
    fn non_positive_values_are_refused() {
        let mut r = result(Metric::Wall);
        r.engines[0].runs[0].wall = 0.0;
        let dir = tempfile::tempdir().unwrap();
        assert!(write(&[r], &dir.path().join("x.json"), CRITERIA).unwrap_err().contains("positive"));
    }
}
