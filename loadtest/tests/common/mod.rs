//! Shared by the harness's end-to-end tests: the binaries under test and a scratch directory.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::Command;

/// The harness binary cargo built for this test.
pub fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadtest"))
}

/// The `palim` binary next to the harness (same target dir and profile), built if missing.
pub fn palim() -> PathBuf {
    let path = harness().with_file_name("palim");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "signaling", "--bin", "palim"])
            .status()
            .expect("run cargo build for palim");
        assert!(status.success(), "building palim failed");
    }
    path
}

/// `name` in a per-process scratch directory for the test file `test`.
pub fn scratch(test: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// Run the scenario `toml` against a spawned debug `palim` (`--spawn --quiet`, the HTML report
/// in `scratch(test, "<name>.html")`): the run's JSON result and the harness's stderr. Panics if
/// the harness fails or writes no valid JSON.
pub fn run_spawned(test: &str, name: &str, toml: &str) -> (serde_json::Value, String) {
    let (scenario, json) = (
        scratch(test, &format!("{name}.toml")),
        scratch(test, &format!("{name}.json")),
    );
    let html = scratch(test, &format!("{name}.html"));
    std::fs::write(&scenario, toml).expect("write scenario");
    let out = Command::new(harness())
        .arg("--spawn")
        .arg("--palim")
        .arg(palim())
        .arg("--scenario")
        .arg(&scenario)
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&html)
        .arg("--quiet")
        .output()
        .expect("run loadtest");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "loadtest failed: {stderr}");
    let text = std::fs::read_to_string(&json).expect("JSON written");
    (serde_json::from_str(&text).expect("valid JSON"), stderr)
}
