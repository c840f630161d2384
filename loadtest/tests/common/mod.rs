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
