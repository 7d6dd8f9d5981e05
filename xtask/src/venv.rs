//! The pinned Python venv of external judges, and the full test run that needs it.
use crate::util::{cache_dir, root, run};
use anyhow::Context;
use sha2::Digest;
use std::path::PathBuf;
use std::process::Command;

/// Create (or reuse) the venv for `.ci/requirements.txt`; returns its python.
/// A marker holding the requirements' hash makes a changed pin rebuild the venv.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let req = root().join(".ci/requirements.txt");
    let text = std::fs::read(&req).with_context(|| format!("reading {}", req.display()))?;
    let hash = hex::encode(sha2::Sha256::digest(&text));
    let dir = cache_dir().join("venv");
    let py = dir.join("bin/python");
    let marker = dir.join(".modelpack-requirements");
    if py.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(hash.as_str()) {
        return Ok(py);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!("xtask: creating Python venv in {}", dir.display());
    run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    run(Command::new(&py).args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"]).arg(&req))?;
    std::fs::write(&marker, hash)?;
    Ok(py)
}

/// `cargo xtask test`: the README's test command. Interop tests are required, not skipped.
pub fn test(extra: &[String]) -> anyhow::Result<()> {
    let py = ensure()?;
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root())
        .args(["test", "--workspace", "--profile", "ci-test", "--features", "modelpack/fault-injection"])
        .args(extra)
        .env("MODELPACK_PYTHON", &py)
        .env("MODELPACK_LLAMA_DIR", crate::llama::ensure()?)
        // Real weights for the end-to-end embedding check (tests/it/compare.rs).
        .env("MODELPACK_MINILM_DIR", crate::quality::fetch_minilm()?)
        .env("MODELPACK_QUALITY_PYTHON", crate::quality::quality_python()?)
        .env("MODELPACK_REQUIRE_INTEROP", "1");
    run(&mut cmd)
}
