//! Helpers for the interop tests: the pinned venv's Python (the external judges) and the
//! helper scripts in `xtask/py/`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv Python, or `None` (skip) when absent and `MODELPACK_REQUIRE_INTEROP` is unset.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MODELPACK_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = std::env::var_os("HOME").map(PathBuf::from).map(|h| h.join(".cache/modelpack/venv/bin/python"));
    if let Some(p) = p.filter(|p| p.exists()) {
        return Some(p);
    }
    assert!(
        std::env::var_os("MODELPACK_REQUIRE_INTEROP").is_none(),
        "interop required but no Python venv: run `cargo xtask venv`"
    );
    eprintln!("skipping interop check: no venv (run `cargo xtask venv`)");
    None
}

/// A script in `xtask/py/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/py").join(name)
}

/// Run `py args...`, panic with its output on failure, return stdout parsed as JSON.
pub fn run_json(py: &Path, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = Command::new(py).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
