//! Runs every Python-level test script in tests/python/ under every engine pyhost ships (each
//! engine `pyhost engines` lists as loadable); each script must exit 0.

mod common;

use common::*;

fn shipped_engines() -> Vec<String> {
    let out = run(pyhost().args(["engines", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let engines: serde_json::Value = serde_json::from_slice(&out.stdout).expect("engines --json is JSON");
    engines
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["status"] == "ok")
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn python_test_scripts_pass_under_every_engine() {
    let engines = shipped_engines();
    assert!(engines.contains(&"stock".to_string()), "{engines:?}");
    let scripts = python_test_scripts("tests/python");
    assert!(!scripts.is_empty());
    let mut failures = Vec::new();
    for engine in &engines {
        for script in &scripts {
            let out = run(pyhost().args(["--engine", engine]).arg(script));
            if !out.status.success() {
                failures.push(format!("{} under {engine}:\n{}", script.display(), text(&out.stderr)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hello_example_runs() {
    let out = run(pyhost().arg(workspace_root().join("examples/hello.py")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("Hello from pyhost"));
}
