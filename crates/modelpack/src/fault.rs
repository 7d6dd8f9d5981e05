//! Fault injection for the fault-tolerance tests (`tests/it/faults.rs`), compiled in only with the
//! `fault-injection` cargo feature; without it every hook is an empty inline function.
//!
//! Why: a full disk, a kill at the worst moment or an input rewritten mid-run must be tested
//! with the real binary, deterministically, on any CI machine (not every CI may mount a tiny
//! filesystem). The hooks are driven by environment variables that a release build ignores:
//! - `MODELPACK_FAULT_ENOSPC_AFTER_BYTES=N`: package writes fail with ENOSPC once N bytes (over
//!   all output files of the process) have been written.
//! - `MODELPACK_FAULT_PAUSE_AT=POINT` and `MODELPACK_FAULT_PAUSE_FILE=F`: on reaching `POINT`
//!   (see [`pause`]) the process creates `F.reached` and waits until `F` exists (up to 120 s),
//!   so a test can act (kill, signal, modify the input) at exactly that moment.

/// Count `n` bytes about to be written to a package file; an injected full disk fails here.
#[cfg(feature = "fault-injection")]
pub fn charge_write(n: usize) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    let Some(limit) = std::env::var("MODELPACK_FAULT_ENOSPC_AFTER_BYTES").ok().and_then(|v| v.parse::<u64>().ok())
    else {
        return Ok(());
    };
    let total = WRITTEN.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
    if total > limit {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    Ok(())
}

/// Count `n` bytes about to be written to a package file (no-op without `fault-injection`).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn charge_write(_n: usize) -> std::io::Result<()> {
    Ok(())
}

/// A named point of the run where a test may hold the process: `staged` (staging directory
/// created, nothing written), `before-commit` (package complete and signed in the staging
/// directory, not yet renamed).
#[cfg(feature = "fault-injection")]
pub fn pause(point: &str) {
    if std::env::var("MODELPACK_FAULT_PAUSE_AT").ok().as_deref() != Some(point) {
        return;
    }
    let Some(go) = std::env::var_os("MODELPACK_FAULT_PAUSE_FILE").map(std::path::PathBuf::from) else {
        return;
    };
    let mut reached = go.clone().into_os_string();
    reached.push(".reached");
    let _ = std::fs::write(&reached, point);
    let t0 = std::time::Instant::now();
    while !go.exists() && t0.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A named point of the run where a test may hold the process (no-op without `fault-injection`).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn pause(_point: &str) {}
