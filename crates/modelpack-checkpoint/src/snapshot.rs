//! Detecting input files that change while a job reads them.
//!
//! Why: a package records SHA-256 digests of its sources, and the weights are quantized from a
//! memory map while the digests are computed by a separate read. If a source file is rewritten
//! or replaced during the run, the two reads can see different bytes, and the package would
//! claim a provenance it was not made from. Each file's identity and version (device, inode,
//! size, modification and status-change times) is recorded when it is opened and compared again
//! before the package is committed; any difference fails the job. The status-change time
//! (`ctime`) catches in-place rewrites that restore size and `mtime`, because no unprivileged
//! process can set it back.

use crate::CheckpointError;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

/// The identity and version of one file, as `stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Device and inode: a replaced file (rename over it) gets a new one.
    pub dev_ino: (u64, u64),
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time, nanoseconds since the epoch (0 where the platform has none).
    pub ctime_ns: i128,
}

impl FileStamp {
    /// The stamp of already-fetched metadata (e.g. `fstat` of the descriptor that was mapped).
    pub fn of(meta: &Metadata) -> FileStamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
            FileStamp {
                dev_ino: (meta.dev(), meta.ino()),
                len: meta.len(),
                mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
                ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            FileStamp { dev_ino: (0, 0), len: meta.len(), mtime_ns, ctime_ns: 0 }
        }
    }

    /// What differs from `now`, in words, or `None` when nothing does.
    fn difference(&self, now: &FileStamp) -> Option<String> {
        if self.dev_ino != now.dev_ino {
            Some("it was replaced by another file".into())
        } else if self.len != now.len {
            Some(format!("its size went from {} to {} bytes", self.len, now.len))
        } else if self.mtime_ns != now.mtime_ns {
            Some("its modification time changed".into())
        } else if self.ctime_ns != now.ctime_ns {
            Some("it was modified (status change time moved)".into())
        } else {
            None
        }
    }
}

/// Stamps of a set of input files, taken when they were opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSnapshot {
    files: Vec<(PathBuf, FileStamp)>,
}

impl SourceSnapshot {
    /// Stamp every path now (links are followed: the content is what matters).
    pub fn capture<P: AsRef<Path>>(paths: &[P]) -> Result<SourceSnapshot, CheckpointError> {
        let mut s = SourceSnapshot::default();
        for p in paths {
            let p = p.as_ref();
            let meta = std::fs::metadata(p).map_err(|e| CheckpointError::io(p, e))?;
            s.push(p.to_path_buf(), FileStamp::of(&meta));
        }
        Ok(s)
    }

    /// Record a stamp taken elsewhere (from the descriptor a file was read through). A path
    /// recorded twice keeps its first stamp.
    pub fn push(&mut self, path: PathBuf, stamp: FileStamp) {
        if !self.files.iter().any(|(p, _)| *p == path) {
            self.files.push((path, stamp));
        }
    }

    /// The recorded files, in the order they were added.
    pub fn files(&self) -> &[(PathBuf, FileStamp)] {
        &self.files
    }

    /// Fail with [`CheckpointError::SourceChanged`] naming the first file whose stamp differs
    /// now (or that is gone).
    pub fn verify_unchanged(&self) -> Result<(), CheckpointError> {
        for (path, then) in &self.files {
            let what = match std::fs::metadata(path) {
                Ok(m) => then.difference(&FileStamp::of(&m)),
                Err(e) => Some(format!("it can no longer be read ({e})")),
            };
            if let Some(what) = what {
                return Err(CheckpointError::SourceChanged { path: path.clone(), what });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rewrite_append_replace_and_removal_are_caught() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.bin");
        std::fs::write(&a, b"0123456789").unwrap();
        let snap = SourceSnapshot::capture(&[&a]).unwrap();
        snap.verify_unchanged().unwrap();

        // Same size, same bytes count, rewritten in place.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::OpenOptions::new().write(true).open(&a).unwrap().write_all(b"X").unwrap();
        let e = snap.verify_unchanged().unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}: changed while modelpack was reading it", a.display())), "{e}");

        let snap = SourceSnapshot::capture(&[&a]).unwrap();
        std::fs::OpenOptions::new().append(true).open(&a).unwrap().write_all(b"more").unwrap();
        let e = snap.verify_unchanged().unwrap_err().to_string();
        assert!(e.ends_with(", so no package was written: its size went from 10 to 14 bytes"), "{e}");

        let snap = SourceSnapshot::capture(&[&a]).unwrap();
        let b = d.path().join("b.bin");
        std::fs::write(&b, b"0123456789more").unwrap();
        std::fs::rename(&b, &a).unwrap();
        let e = snap.verify_unchanged().unwrap_err().to_string();
        assert!(e.ends_with("it was replaced by another file"), "{e}");

        let snap = SourceSnapshot::capture(&[&a]).unwrap();
        std::fs::remove_file(&a).unwrap();
        let e = snap.verify_unchanged().unwrap_err().to_string();
        assert!(e.contains("it can no longer be read"), "{e}");
    }
}
