//! `parallel.map` / `submit` / `Executor` on a real Dask cluster: tests/python/cluster/, run by
//! the pyhost of a venv that pyhost made, with Dask from PyPI (the script starts a LocalCluster
//! of two worker processes, each `pyhost --engine parallel`).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn parallel_work_runs_on_a_dask_cluster_of_pyhost_workers() {
    let python = dask_venv();
    let script = workspace_root().join("tests/python/cluster/test_cluster.py");
    let out = run_with_limit(
        std::process::Command::new(&python)
            .args(["--engine", "parallel"])
            .arg(&script)
            .env_remove("PYHOST_ENGINE")
            .env_remove("PYHOST_PARALLEL_CLUSTER")
            // Dask's workers log their shutdown as errors; the test's own output is what counts.
            .env("DASK_LOGGING__DISTRIBUTED", "critical"),
        Duration::from_secs(600),
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success() && stderr.contains("\nOK"), "{stderr}");
}

#[test]
fn a_cluster_without_dask_installed_says_what_to_install() {
    let out = run(pyhost().args([
        "--engine",
        "parallel",
        "-c",
        "import parallel; parallel.Executor(cluster='tcp://127.0.0.1:1')",
    ]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("a cluster needs Dask's `distributed` package"), "{stderr}");
}
