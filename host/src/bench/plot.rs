//! `--plot FILE.svg`: one box plot per engine (quartiles, whiskers) with every value drawn as a
//! dot, so the spread and the outliers are visible at a glance.

use super::results::BenchmarkResult;
use plotters::prelude::*;
use std::path::Path;

/// A time unit that keeps the axis numbers readable.
fn unit_for(max_seconds: f64) -> (&'static str, f64) {
    if max_seconds >= 1.0 {
        ("s", 1.0)
    } else if max_seconds >= 1e-3 {
        ("ms", 1e3)
    } else if max_seconds >= 1e-6 {
        ("µs", 1e6)
    } else {
        ("ns", 1e9)
    }
}

/// Draws the box plot of `result` into `path` (SVG).
pub fn write_box_plot(result: &BenchmarkResult, path: &Path) -> Result<(), String> {
    let labels: Vec<String> = result.engines.iter().map(|e| e.engine.label.clone()).collect();
    let values: Vec<Vec<f64>> = result.engines.iter().map(|e| e.values(result.metric)).collect();
    let all = values.iter().flatten().cloned();
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() || !hi.is_finite() {
        return Err("no values to plot".into());
    }
    let (unit, scale) = match result.metric.unit() {
        super::results::Unit::Instructions => ("million instructions", 1e-6),
        super::results::Unit::Seconds => unit_for(hi),
    };
    let pad = ((hi - lo) * 0.1).max(hi * 0.01);
    let y_range = ((lo - pad).max(0.0) * scale) as f32..((hi + pad) * scale) as f32;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (200 + 160 * labels.len() as u32, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let title = match result.metric {
            super::results::Metric::Wall => format!("{}: wall time per process", result.name),
            super::results::Metric::InProcess => format!("{}: time per call (pyhost.bench)", result.name),
            super::results::Metric::Cpu => format!("{}: CPU time per process", result.name),
            super::results::Metric::Instructions => format!("{}: instructions per process", result.name),
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(labels[..].into_segmented(), y_range.clone())?;
        chart
            .configure_mesh()
            .y_desc(unit)
            .x_desc("engine")
            .disable_x_mesh()
            .x_label_formatter(&|segment| match segment {
                SegmentValue::Exact(label) | SegmentValue::CenterOf(label) => label.to_string(),
                SegmentValue::Last => String::new(),
            })
            .draw()?;
        let scaled: Vec<Vec<f64>> = values.iter().map(|v| v.iter().map(|x| x * scale).collect()).collect();
        chart.draw_series(labels.iter().zip(&scaled).filter(|(_, v)| !v.is_empty()).map(|(label, v)| {
            Boxplot::new_vertical(SegmentValue::CenterOf(label), &Quartiles::new(v))
                .width(40)
                .whisker_width(0.5)
                .style(BLUE)
        }))?;
        chart.draw_series(labels.iter().zip(&scaled).flat_map(|(label, v)| {
            v.iter().map(move |y| {
                Circle::new((SegmentValue::CenterOf(label), *y as f32), 2, RED.mix(0.5).filled())
            })
        }))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::executor::Measurement;
    use crate::bench::results::{EngineResults, EngineUnderTest, Metric};

    fn engine(label: &str, walls: &[f64]) -> EngineResults {
        EngineResults {
            engine: EngineUnderTest {
                label: label.into(),
                name: label.into(),
                version: "0.1.0".into(),
                python: "abi3".into(),
                spec: "/x".into(),
                location: "/x".into(),
            },
            runs: walls.iter().map(|&wall| Measurement { wall, ..Default::default() }).collect(),
            warmups: vec![],
        }
    }

    #[test]
    fn box_plot_is_an_svg_naming_every_engine() {
        let result = BenchmarkResult {
            name: "demo".into(),
            python_args: vec!["demo.py".into()],
            metric: Metric::Wall,
            engines: vec![
                engine("stock", &[0.10, 0.11, 0.12, 0.105]),
                engine("other", &[0.2, 0.21, 0.19, 0.2]),
            ],
            started: "2026-11-27T00:00:00Z".into(),
            duration_seconds: 1.0,
            stop: None,
            counted_by: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.svg");
        write_box_plot(&result, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("stock") && svg.contains("other") && svg.contains("ms"));
    }
}
