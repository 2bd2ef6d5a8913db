//! pyhost's own diagnostics: silent by default, `PYHOST_LOG=debug` (any `tracing` filter) or
//! `--verbose` shows discovery, loading, ABI checks and lifecycle timings on stderr. What an
//! engine logs at info and above (target `engine`: a server's start-up line, access log and
//! application errors) is shown unless `PYHOST_LOG` says otherwise.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Without `PYHOST_LOG`: the host says nothing, engines speak at info and above.
const DEFAULT_FILTER: &str = "off,engine=info";

pub fn init(verbose: u8) {
    let filter = match (std::env::var("PYHOST_LOG"), verbose) {
        (_, 1) => EnvFilter::new("debug"),
        (_, v) if v >= 2 => EnvFilter::new("trace"),
        (Ok(spec), _) if !spec.is_empty() => match EnvFilter::try_new(&spec) {
            Ok(filter) => filter,
            Err(err) => {
                eprintln!("pyhost: ignoring PYHOST_LOG={spec:?}: {err}");
                EnvFilter::new(DEFAULT_FILTER)
            }
        },
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
