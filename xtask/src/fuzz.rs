//! `cargo xtask fuzz [--smoke | --seconds N] [TARGET...]`: run the cargo-fuzz targets of `fuzz/`
//! (every parser of untrusted input) on the stable toolchain (`RUSTC_BOOTSTRAP=1`).
//!
//! cargo-fuzz is installed into the cache (`~/.cache/modelpack/cargo-fuzz`) on first use. The
//! seed corpus in `fuzz/corpus/<target>` is read, never written: new inputs go to a scratch
//! corpus in the cache, and crashes to `fuzz/artifacts/<target>/` (git-ignored) with the command
//! that reproduces them. `--smoke` runs each target for 10 s (CI); the default is 60 s each.

use crate::util::{cache_dir, root, run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo-fuzz version installed when none is found (`--locked`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Entry point of `cargo xtask fuzz`.
pub fn run_cmd(args: &[String]) -> anyhow::Result<()> {
    let mut seconds = 60u64;
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => seconds = 10,
            "--seconds" => {
                seconds = it.next().and_then(|s| s.parse().ok()).ok_or_else(|| anyhow::anyhow!("--seconds N"))?;
            }
            t if !t.starts_with('-') => only.push(t.to_string()),
            other => {
                anyhow::bail!("unknown option {other}; usage: cargo xtask fuzz [--smoke | --seconds N] [TARGET...]")
            }
        }
    }
    let bin_dir = ensure_cargo_fuzz()?;
    let targets = targets(&root().join("fuzz/fuzz_targets"))?;
    for t in &only {
        anyhow::ensure!(targets.contains(t), "no fuzz target {t} (have: {})", targets.join(", "));
    }
    let chosen: Vec<&String> = targets.iter().filter(|t| only.is_empty() || only.contains(t)).collect();
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )?;
    let target_dir = cache_dir().join("fuzz-target");
    for t in chosen {
        let seeds = root().join("fuzz/corpus").join(t);
        let scratch = cache_dir().join("fuzz-corpus").join(t);
        let artifacts = root().join("fuzz/artifacts").join(t);
        std::fs::create_dir_all(&scratch)?;
        std::fs::create_dir_all(&artifacts)?;
        eprintln!("fuzz: {t} for {seconds} s");
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root())
            .env("PATH", &path)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "--target-dir"])
            .arg(&target_dir)
            .arg(t)
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        run(&mut cmd)
            .map_err(|e| anyhow::anyhow!("fuzz target {t} failed (crash input in {}): {e}", artifacts.display()))?;
    }
    Ok(())
}

/// Target names: the files of `fuzz/fuzz_targets`, sorted.
fn targets(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_owned))
        .collect();
    v.sort();
    Ok(v)
}

/// The directory holding `cargo-fuzz`: from PATH if present, else the cache, installing it there.
fn ensure_cargo_fuzz() -> anyhow::Result<PathBuf> {
    let on_path =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).find(|d| d.join("cargo-fuzz").is_file());
    if let Some(d) = on_path {
        return Ok(d);
    }
    let root_dir = cache_dir().join("cargo-fuzz");
    let bin = root_dir.join("bin");
    if !bin.join("cargo-fuzz").is_file() {
        eprintln!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}", root_dir.display());
        run(Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION, "--root"])
            .arg(&root_dir))?;
    }
    Ok(bin)
}
