//! Ctrl-C and SIGTERM: remove the staging directories of unfinished packages, then exit.
//!
//! Why a watcher thread: deleting a directory tree is not async-signal-safe, so the handler
//! only wakes a thread (signal-hook's iterator) that does the cleanup and exits with 130/143.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// Remove `dir` (a directory tree, or a single file such as a lock file) if the process is
/// interrupted before [`unregister_cleanup`].
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
            let mut removed = 0;
            for d in &dirs {
                // Directories are staging outputs; files are our lock files.
                if d.is_dir() {
                    removed += usize::from(std::fs::remove_dir_all(d).is_ok());
                } else {
                    let _ = std::fs::remove_file(d);
                }
            }
            eprintln!("modelpack: interrupted; removed {removed} unfinished output(s)");
            std::process::exit(128 + sig);
        }
    });
}
