//! Result files: one small module per format, all behind [`Exporter`].

pub mod markdown;
pub mod pyperf;

use super::report::Criteria;
use super::results::BenchmarkResult;
use super::{plot, BenchArgs, BenchError};
use std::path::{Path, PathBuf};

/// A file format for benchmark results.
pub trait Exporter {
    /// Writes `results` (one per program) to `path`.
    fn write(&self, results: &[BenchmarkResult], path: &Path) -> Result<(), String>;
}

pub struct PyperfJson {
    pub criteria: Criteria,
}
pub struct Markdown {
    pub criteria: Criteria,
}
pub struct BoxPlot;

impl Exporter for PyperfJson {
    fn write(&self, results: &[BenchmarkResult], path: &Path) -> Result<(), String> {
        pyperf::write(results, path, self.criteria)
    }
}

impl Exporter for Markdown {
    fn write(&self, results: &[BenchmarkResult], path: &Path) -> Result<(), String> {
        std::fs::write(path, markdown::render(results, self.criteria)).map_err(|e| e.to_string())
    }
}

impl Exporter for BoxPlot {
    fn write(&self, results: &[BenchmarkResult], path: &Path) -> Result<(), String> {
        match results {
            [single] => plot::write_box_plot(single, path),
            many => {
                // One plot per program: FILE.svg becomes FILE-<program>.svg.
                for result in many {
                    plot::write_box_plot(result, &sibling(path, &result.name, "svg"))?;
                }
                Ok(())
            }
        }
    }
}

/// `dir/stem.ext` → `dir/stem-<suffix>.<ext>`.
pub fn sibling(path: &Path, suffix: &str, ext: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let safe: String =
        suffix.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    path.with_file_name(format!("{stem}-{safe}.{ext}"))
}

/// Writes every file the user asked for.
pub fn write_all(results: &[BenchmarkResult], args: &BenchArgs) -> Result<(), BenchError> {
    let requested: [(&Option<PathBuf>, &dyn Exporter); 3] = [
        (&args.json, &PyperfJson { criteria: args.criteria() }),
        (&args.markdown, &Markdown { criteria: args.criteria() }),
        (&args.plot, &BoxPlot),
    ];
    for (path, exporter) in requested {
        if let Some(path) = path {
            exporter
                .write(results, path)
                .map_err(|reason| BenchError::Write { path: path.clone(), reason })?;
            eprintln!("pyhost bench: wrote {}", path.display());
        }
    }
    Ok(())
}
