//! `fixtures/families/`: tiny checkpoints of the MoE-era families (Qwen3, Qwen3-MoE, GLM-4,
//! GLM-4.5, MiniMax-M2, DeepSeek-V3 and its FP8 twin, Kimi K2) written by transformers' own
//! classes, with the GGUFs llama.cpp's `convert_hf_to_gguf.py` makes from them (the judges of the
//! cpu target).
//!
//! Making them needs torch, so it is a local task, not CI:
//! `cargo xtask family-fixtures [FAMILY...]` runs `xtask/py/make_family_fixtures.py` in the
//! hf-check venv against the cached llama.cpp source tree. CI checks, without torch, that the
//! committed set is complete and unchanged (`SHA256SUMS`) and that the pinned `gguf` package reads
//! every reference GGUF with the architecture and file type its name promises
//! (`xtask/py/check_family_fixtures.py`).
use crate::util::{root, run};
use anyhow::{ensure, Context};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files of the directory that are not listed in `SHA256SUMS` (they describe the list).
const UNLISTED: &[&str] = &["SHA256SUMS", "PROVENANCE.md"];

fn dir() -> PathBuf {
    root().join("fixtures/families")
}

/// Regular files under `d`, relative, `/`-separated, sorted.
fn files(d: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).with_context(|| format!("reading {}", p.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(d)?.to_string_lossy().replace('\\', "/");
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Fixture directories made with torch (so CI cannot regenerate them): each holds a
/// `SHA256SUMS` that must list exactly its files, and the command that rewrites it.
const TORCH_MADE: &[(&str, &str)] = &[
    ("fixtures/families", "cargo xtask family-fixtures"),
    ("fixtures/packed", "cargo xtask packed-fixtures"),
    ("fixtures/fp8", "hf-venv/bin/python xtask/py/make_fp8_fixtures.py fixtures/fp8"),
];

/// Problems of `d` against its `SHA256SUMS`: files missing, extra or changed.
fn sum_problems(d: &Path) -> anyhow::Result<(Vec<String>, usize)> {
    let sums =
        std::fs::read_to_string(d.join("SHA256SUMS")).with_context(|| format!("reading {}/SHA256SUMS", d.display()))?;
    let mut want = BTreeMap::new();
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (hash, name) = line.split_once("  ").with_context(|| format!("bad SHA256SUMS line `{line}`"))?;
        want.insert(name.to_string(), hash.to_string());
    }
    let have: Vec<String> = files(d)?.into_iter().filter(|f| !UNLISTED.contains(&f.as_str())).collect();
    let mut problems = Vec::new();
    for f in &have {
        match want.get(f) {
            None => problems.push(format!("extra (not in SHA256SUMS): {f}")),
            Some(h) => {
                let got = hex::encode(sha2::Sha256::digest(std::fs::read(d.join(f))?));
                if &got != h {
                    problems.push(format!("differs from SHA256SUMS: {f}"));
                }
            }
        }
    }
    for f in want.keys().filter(|f| !have.contains(f)) {
        problems.push(format!("missing: {f}"));
    }
    Ok((problems, have.len()))
}

/// Torch-free consistency check of the committed torch-made fixtures (part of `fixtures --check`):
/// every directory of [`TORCH_MADE`] matches its `SHA256SUMS`, and the pinned `gguf` package
/// reads every family reference GGUF as its name promises.
pub fn check() -> anyhow::Result<()> {
    for (rel, regen) in TORCH_MADE {
        let d = root().join(rel);
        let (problems, n) = sum_problems(&d)?;
        ensure!(
            problems.is_empty(),
            "{rel} is inconsistent (regenerate with `{regen}`, which rewrites SHA256SUMS):\n  {}",
            problems.join("\n  ")
        );
        eprintln!("xtask: {rel} complete ({n} files, SHA256SUMS)");
    }
    let d = dir();
    let py = crate::venv::ensure()?;
    run(Command::new(py).arg(root().join("xtask/py/check_family_fixtures.py")).arg(&d))
        .context("the gguf/safetensors packages disagree with fixtures/families")?;
    eprintln!("xtask: fixtures/families readable by the gguf package");
    Ok(())
}

/// `cargo xtask family-fixtures [FAMILY...]`: regenerate (needs the torch venv and llama.cpp).
pub fn regenerate(args: &[String]) -> anyhow::Result<()> {
    let py = crate::hfcheck::ensure_venv()?;
    let llama = crate::llama::ensure()?;
    run(Command::new(py)
        .arg(root().join("xtask/py/make_family_fixtures.py"))
        .arg(dir())
        .arg(llama.join("src"))
        .args(args))?;
    check()
}

/// `cargo xtask packed-fixtures`: regenerate `fixtures/packed/` (the deepseek-v3 family fixture
/// written as compressed-tensors pack-quantized int4 g32 by the library itself, and the
/// converter's references from it); needs the torch venv and llama.cpp, not run in CI.
pub fn regenerate_packed() -> anyhow::Result<()> {
    let py = crate::hfcheck::ensure_venv()?;
    let llama = crate::llama::ensure()?;
    run(Command::new(py)
        .arg(root().join("xtask/py/make_packed_fixtures.py"))
        .arg(root().join("fixtures/packed"))
        .arg(llama.join("src")))
}
