//! Shared helpers for the end-to-end tests in `tests/`: the built binary, fixture paths and the
//! pinned Python venv whose packages (`gguf`, `safetensors`, `model_signing`, `numpy`) are the
//! external judges.
#![allow(dead_code)]

pub mod llama;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A path under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// The `modelpack` binary built for this test run.
pub fn modelpack() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("modelpack").unwrap()
}

/// Run `modelpack quantize INPUT -o OUT ARGS... --json`, require success and return the report.
pub fn quantize(input: &Path, out: &Path, args: &[&str]) -> serde_json::Value {
    let o = modelpack().arg("quantize").arg(input).arg("-o").arg(out).args(args).arg("--json").output().unwrap();
    assert!(
        o.status.success(),
        "quantize failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("one JSON document on stdout")
}

/// The venv's Python, when interop tests can run. `cargo xtask test` sets `MODELPACK_PYTHON`
/// and `MODELPACK_REQUIRE_INTEROP=1`, so in CI a missing venv fails instead of skipping.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MODELPACK_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let p = home.join(".cache/modelpack/venv/bin/python");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("MODELPACK_REQUIRE_INTEROP").is_none(),
        "interop required but no Python venv: run `cargo xtask venv`"
    );
    eprintln!("skipping interop check: no venv (run `cargo xtask test`)");
    None
}

/// Run a Python script (inline source) with arguments in the venv; panics with its output on failure.
/// Returns stdout.
pub fn run_python(py: &Path, script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(py).arg("-c").arg(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The independent compressed-tensors numpy judge in `../shared/reference/`, beside the
/// repository in CI. It is not part of the repository (a judge is run, never copied), so a clone
/// without `../shared` skips the tests that need it, saying so, instead of failing.
pub fn shared_ct_reference() -> Option<PathBuf> {
    let p = root().join("../shared/reference/compressed_tensors_ref.py");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not present (../shared is beside the repository in CI)", p.display());
        None
    }
}
