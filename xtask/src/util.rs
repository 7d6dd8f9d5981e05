//! Small helpers shared by the tasks.
use std::path::PathBuf;

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("workspace root")
}

/// `~/.cache/modelpack`, where heavy, reusable artefacts (venv, llama.cpp build) live outside the repo.
pub fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    let dir = std::env::var_os("MODELPACK_CACHE").map(PathBuf::from).unwrap_or(home.join(".cache/modelpack"));
    std::fs::create_dir_all(&dir).ok();
    dir
}

/// Run a command, failing with its name on a non-zero exit.
pub fn run(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let status = cmd.status().map_err(|e| anyhow::anyhow!("cannot run {cmd:?}: {e}"))?;
    anyhow::ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}
