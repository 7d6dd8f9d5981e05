//! The package directory's life cycle: a locked, temporary staging directory beside the
//! destination that is renamed into place only when complete.
//!
//! Why: a CI pipeline that is killed, runs out of disk or races another run must never leave a
//! directory that looks like a finished package. The staging name is clearly temporary
//! (`.NAME.modelpack-tmp-PID`), a lock file serialises runs writing the same destination, and a
//! later run removes stale staging directories it finds (their owner is gone: it held the lock).

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Errors of preparing or committing a package directory.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The destination is unusable as given (user error).
    #[error("{0}")]
    Refused(String),
    /// Another run holds the destination's lock.
    #[error("another modelpack run is writing {0} (lock {1} is held)")]
    Locked(PathBuf, PathBuf),
    /// An I/O error on the destination side.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PackageError + 'a {
    move |source| PackageError::Io { op, path: path.to_path_buf(), source }
}

/// A staging directory for one package; removed on drop unless committed.
pub struct Staging {
    dest: PathBuf,
    tmp: PathBuf,
    _lock: File,
    lock_path: PathBuf,
    committed: bool,
    /// Stale staging directories of killed runs that were cleaned up.
    pub cleaned: Vec<PathBuf>,
}

impl Staging {
    /// Prepare to write the package `dest` from the input at `input` (file or directory).
    ///
    /// Refuses a destination inside the input (or the input inside the destination, which
    /// `--force` would delete), a non-empty destination without `force`, and a destination that
    /// another run is writing.
    pub fn begin(dest: &Path, input: &Path, force: bool) -> Result<Staging, PackageError> {
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .ok_or_else(|| PackageError::Refused(format!("output path {} has no usable name", dest.display())))?
            .to_string();
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
        let parent = parent.canonicalize().map_err(io("resolving", &parent))?;
        let dest = parent.join(&name);

        let input_abs = input.canonicalize().map_err(io("resolving", input))?;
        let input_dir = if input_abs.is_dir() {
            input_abs.clone()
        } else {
            input_abs.parent().map(Path::to_path_buf).unwrap_or_else(|| input_abs.clone())
        };
        if dest.starts_with(&input_dir) {
            return Err(PackageError::Refused(format!(
                "output {} is inside the input {}: modelpack never writes into its input",
                dest.display(),
                input_dir.display()
            )));
        }
        if input_abs.starts_with(&dest) {
            return Err(PackageError::Refused(format!(
                "input {} is inside the output {}",
                input_abs.display(),
                dest.display()
            )));
        }

        let lock_path = parent.join(format!(".{name}.modelpack.lock"));
        let lock = acquire_lock(&lock_path, &dest)?;

        match std::fs::symlink_metadata(&dest) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return Err(PackageError::Refused(format!("output {} exists and is not a directory", dest.display())));
            }
            Ok(_) => {
                let non_empty = std::fs::read_dir(&dest).map_err(io("reading", &dest))?.next().is_some();
                if non_empty && !force {
                    return Err(PackageError::Refused(format!(
                        "output {} exists and is not empty (use --force to replace it)",
                        dest.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("reading", &dest)(e)),
        }

        // We hold the lock: any staging directory for this name belongs to a dead run.
        let prefix = format!(".{name}.modelpack-");
        let mut cleaned = Vec::new();
        for entry in std::fs::read_dir(&parent).map_err(io("reading", &parent))?.flatten() {
            let fname = entry.file_name();
            let Some(f) = fname.to_str() else { continue };
            if f.starts_with(&prefix) && (f.contains("-tmp-") || f.contains("-old-")) {
                let p = entry.path();
                if std::fs::remove_dir_all(&p).is_ok() {
                    cleaned.push(p);
                }
            }
        }

        let tmp = parent.join(format!("{prefix}tmp-{}", std::process::id()));
        std::fs::create_dir(&tmp).map_err(io("creating", &tmp))?;
        crate::signals::register_cleanup(&tmp);
        crate::signals::register_cleanup(&lock_path);
        Ok(Staging { dest, tmp, _lock: lock, lock_path, committed: false, cleaned })
    }

    /// The staging directory to write into.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// The final destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// fsync the staging directory and move it into place (replacing an old package last, so
    /// a crash at any point leaves either the old or the new package, plus temporaries).
    pub fn commit(mut self) -> Result<PathBuf, PackageError> {
        sync_dir(&self.tmp)?;
        let parent = self.dest.parent().map(Path::to_path_buf).unwrap_or_default();
        let old = if self.dest.exists() {
            let name = self.dest.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let old = parent.join(format!(".{name}.modelpack-old-{}", std::process::id()));
            std::fs::rename(&self.dest, &old).map_err(io("moving aside", &self.dest))?;
            Some(old)
        } else {
            None
        };
        std::fs::rename(&self.tmp, &self.dest).map_err(io("renaming into place", &self.dest))?;
        self.committed = true;
        crate::signals::unregister_cleanup(&self.tmp);
        sync_dir(&parent)?;
        if let Some(old) = old {
            std::fs::remove_dir_all(&old).map_err(io("removing the replaced package", &old))?;
        }
        Ok(self.dest.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
            crate::signals::unregister_cleanup(&self.tmp);
        }
        let _ = std::fs::remove_file(&self.lock_path);
        crate::signals::unregister_cleanup(&self.lock_path);
    }
}

/// Open and lock `lock_path`, retrying when the file we locked was unlinked meanwhile.
///
/// Why the retry: the owner removes the lock file when it finishes. A second run may open the
/// old file just before that and lock it just after, while a third run creates and locks a new
/// file: two "owners". Holding the lock counts only if the path still names the locked inode.
fn acquire_lock(lock_path: &Path, dest: &Path) -> Result<File, PackageError> {
    for _ in 0..100 {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path)
            .map_err(io("creating lock", lock_path))?;
        try_lock(&lock).map_err(|_| PackageError::Locked(dest.to_path_buf(), lock_path.to_path_buf()))?;
        if same_file(&lock, lock_path) {
            return Ok(lock);
        }
    }
    Err(PackageError::Locked(dest.to_path_buf(), lock_path.to_path_buf()))
}

/// Whether `path` still names the open file `f`.
fn same_file(f: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (f.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (f, path);
        true
    }
}

/// If `dir` is the staging directory of an unfinished (or killed) run, the name of the
/// package it was for. Such a directory is never a package: `verify` refuses it even when a
/// run was killed after signing, just before the rename.
pub fn staging_target(dir: &Path) -> Option<String> {
    let abs = dir.canonicalize().ok();
    let name = abs.as_deref().unwrap_or(dir).file_name()?.to_str()?;
    let rest = name.strip_prefix('.')?;
    let (target, pid) = rest.rsplit_once(".modelpack-tmp-")?;
    (!target.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| target.to_string())
}

fn try_lock(f: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(unix))]
    let _ = f;
    Ok(())
}

/// fsync a directory so renames and new entries in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), PackageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing", dir))
}

/// Copy `src` to `dst` (which must not exist), hashing the bytes on the way: the package's
/// digest of a copied file comes from the same read that produced the copy.
pub fn copy_hashed(src: &Path, dst: &Path) -> Result<(u64, [u8; 32]), PackageError> {
    let mut input = File::open(src).map_err(io("opening", src))?;
    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(dst).map_err(io("creating", dst))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(io("reading", src))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        crate::fault::charge_write(n).and_then(|()| out.write_all(&buf[..n])).map_err(io("writing", dst))?;
        total += n as u64;
    }
    out.sync_all().map_err(io("syncing", dst))?;
    Ok((total, hasher.finalize().into()))
}

/// Write `bytes` to a new file `dst`, fsynced, and return its digest.
pub fn write_hashed(dst: &Path, bytes: &[u8]) -> Result<[u8; 32], PackageError> {
    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(dst).map_err(io("creating", dst))?;
    crate::fault::charge_write(bytes.len()).and_then(|()| out.write_all(bytes)).map_err(io("writing", dst))?;
    out.sync_all().map_err(io("syncing", dst))?;
    Ok(Sha256::digest(bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_output_inside_input_and_non_empty_output() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in");
        std::fs::create_dir(&input).unwrap();
        let e = Staging::begin(&input.join("pkg"), &input, false).err().unwrap();
        assert!(e.to_string().contains("inside the input"), "{e}");
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("x"), b"x").unwrap();
        let e = Staging::begin(&out, &input, false).err().unwrap();
        assert!(e.to_string().contains("not empty"), "{e}");
    }

    #[test]
    fn commit_replaces_with_force_and_drop_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in");
        std::fs::create_dir(&input).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("old"), b"x").unwrap();

        let s = Staging::begin(&out, &input, true).unwrap();
        let tmp = s.dir().to_path_buf();
        write_hashed(&tmp.join("new"), b"y").unwrap();
        drop(s);
        assert!(!tmp.exists(), "an abandoned staging directory is removed");
        assert!(out.join("old").exists(), "the old package survives an abandoned run");

        let s = Staging::begin(&out, &input, true).unwrap();
        write_hashed(&s.dir().join("new"), b"y").unwrap();
        s.commit().unwrap();
        assert!(out.join("new").exists() && !out.join("old").exists());
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "only in/ and out/ remain: {left:?}");
    }

    #[test]
    fn a_second_run_on_the_same_output_fails_fast() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in");
        std::fs::create_dir(&input).unwrap();
        let out = d.path().join("out");
        let _first = Staging::begin(&out, &input, false).unwrap();
        let e = Staging::begin(&out, &input, false).err().unwrap();
        assert!(matches!(e, PackageError::Locked(..)), "{e}");
    }

    #[test]
    fn a_lock_file_unlinked_by_its_finishing_owner_is_not_a_lock() {
        let d = tempfile::tempdir().unwrap();
        let lock_path = d.path().join(".out.modelpack.lock");
        let first = acquire_lock(&lock_path, d.path()).unwrap();
        // A late run opened the old file before the owner unlinked it.
        let stale = File::open(&lock_path).unwrap();
        drop(first);
        std::fs::remove_file(&lock_path).unwrap();
        try_lock(&stale).unwrap();
        assert!(!same_file(&stale, &lock_path), "the unlinked file no longer names the lock");
        // A new run creates a new lock file and owns it.
        let fresh = acquire_lock(&lock_path, d.path()).unwrap();
        assert!(same_file(&fresh, &lock_path));
    }

    #[test]
    fn staging_directories_are_recognised_by_name() {
        use std::path::Path;
        assert_eq!(staging_target(Path::new("/x/.llama-q4.modelpack-tmp-1234")).as_deref(), Some("llama-q4"));
        assert_eq!(staging_target(Path::new(".a.b.modelpack-tmp-7/")).as_deref(), Some("a.b"));
        assert_eq!(staging_target(Path::new("/x/llama-q4")), None);
        assert_eq!(staging_target(Path::new("/x/.llama.modelpack-old-12")), None);
        assert_eq!(staging_target(Path::new("/x/.llama.modelpack-tmp-")), None);
        assert_eq!(staging_target(Path::new("/x/.llama.modelpack-tmp-12x")), None);
    }
}
