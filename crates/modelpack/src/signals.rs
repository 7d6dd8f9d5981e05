//! Ctrl-C and SIGTERM: remove the staging directories of unfinished packages, then exit.
//!
//! Why a watcher thread: deleting a directory tree is not async-signal-safe, so the handler
//! only wakes a thread (signal-hook's iterator) that does the cleanup and exits with 130/143.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// Remove `dir` if the process is interrupted before [`unregister_cleanup`].
pub fn register_cleanup(dir: &Path) {
    INSTALL.call_once(install);
    DIRS.lock().unwrap_or_else(|p| p.into_inner()).push(dir.to_path_buf());
}

/// `dir` is committed or already removed: an interrupt must no longer touch it.
pub fn unregister_cleanup(dir: &Path) {
    DIRS.lock().unwrap_or_else(|p| p.into_inner()).retain(|d| d != dir);
}

fn install() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let dirs = std::mem::take(&mut *DIRS.lock().unwrap_or_else(|p| p.into_inner()));
            for d in &dirs {
                let _ = std::fs::remove_dir_all(d);
            }
            eprintln!("modelpack: interrupted; removed {} unfinished output(s)", dirs.len());
            std::process::exit(128 + sig);
        }
    });
}
