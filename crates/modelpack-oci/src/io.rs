//! Streaming copies that hash and count as they go, staging directories, progress hooks.

use crate::error::{OciError, Result};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Copy buffer: bounded memory whatever the blob size.
pub(crate) const BUF: usize = 1 << 20;

/// Progress of byte transfers, driven by the library and drawn by the CLI.
pub trait Progress: Sync {
    /// A transfer of `total` bytes named `what` starts.
    fn start(&self, _what: &str, _total: u64) {}
    /// `n` more bytes went through.
    fn advance(&self, _n: u64) {}
    /// The transfer ended (successfully or not).
    fn finish(&self) {}
}

/// No progress output.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A reader that feeds SHA-256 and the progress hook with everything read through it.
pub(crate) struct HashingReader<'a, R> {
    pub inner: R,
    pub hasher: Sha256,
    pub count: u64,
    pub progress: &'a dyn Progress,
}

impl<'a, R: Read> HashingReader<'a, R> {
    pub fn new(inner: R, progress: &'a dyn Progress) -> Self {
        HashingReader { inner, hasher: Sha256::new(), count: 0, progress }
    }
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Copy exactly `size` bytes of `src` into a new file `dest` (fsynced), checking that the
/// source ends there and that the bytes hash to `digest`. On any failure `dest` is removed.
pub(crate) fn copy_verified(
    src: &mut dyn Read,
    dest: &Path,
    digest: &str,
    size: u64,
    what: &str,
    progress: &dyn Progress,
) -> Result<()> {
    let r = (|| {
        let mut f = std::fs::File::create(dest).map_err(|e| OciError::io(format!("creating {}", dest.display()), e))?;
        // One byte more than expected reveals an over-long source without reading it all.
        let mut hr = HashingReader::new(src.take(size + 1), progress);
        let mut buf = vec![0u8; BUF];
        loop {
            let n = hr.read(&mut buf).map_err(|e| read_error(what, e))?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).map_err(|e| OciError::io(format!("writing {}", dest.display()), e))?;
        }
        if hr.count != size {
            return Err(OciError::Mismatch {
                what: format!("{what}: size"),
                expected: size.to_string(),
                actual: if hr.count > size { format!("more than {size}") } else { hr.count.to_string() },
            });
        }
        let got = hr.digest();
        if got != digest {
            return Err(OciError::Mismatch { what: format!("{what}: digest"), expected: digest.into(), actual: got });
        }
        f.sync_all().map_err(|e| OciError::io(format!("syncing {}", dest.display()), e))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    r
}

/// Reading the source failed: a network error reads as one, anything else as local I/O.
fn read_error(what: &str, e: std::io::Error) -> OciError {
    match e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>()) {
        Some(u) => OciError::Network { url: what.to_string(), detail: u.to_string() },
        None => OciError::io(format!("reading {what}"), e),
    }
}

/// A staging directory beside `dest` (`.NAME.modelpack-tmp-PID`), removed on drop unless
/// [`Staging::commit`] renamed it into place.
/// Callbacks run when a staging directory is created and when it is committed or removed: the
/// CLI registers it with its SIGINT/SIGTERM handler, so an interrupted pull leaves nothing.
static STAGING_HOOKS: std::sync::OnceLock<(StagingHook, StagingHook)> = std::sync::OnceLock::new();

/// A staging-directory callback (see [`set_staging_hooks`]).
pub type StagingHook = fn(&Path);

/// Install `(created, finished)` staging hooks (first call wins): `created(dir)` runs right after
/// a staging directory exists, `finished(dir)` after it was renamed into place or removed.
pub fn set_staging_hooks(created: StagingHook, finished: StagingHook) {
    let _ = STAGING_HOOKS.set((created, finished));
}

pub(crate) struct Staging {
    pub path: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl Staging {
    pub fn new(dest: &Path) -> Result<Self> {
        let name = dest
            .file_name()
            .ok_or_else(|| OciError::malformed("destination", format!("{} has no file name", dest.display())))?;
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let path = parent.join(format!(".{}.modelpack-tmp-{}", name.to_string_lossy(), std::process::id()));
        if path.exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
        std::fs::create_dir_all(&path).map_err(|e| OciError::io(format!("creating {}", path.display()), e))?;
        if let Some((created, _)) = STAGING_HOOKS.get() {
            created(&path);
        }
        Ok(Staging { path, dest: dest.to_path_buf(), done: false })
    }

    /// Rename into place; the destination must not exist (checked again here, not only at start).
    pub fn commit(mut self) -> Result<()> {
        if self.dest.exists() {
            return Err(OciError::Exists(self.dest.clone()));
        }
        if let Ok(d) = std::fs::File::open(&self.path) {
            let _ = d.sync_all();
        }
        std::fs::rename(&self.path, &self.dest)
            .map_err(|e| OciError::io(format!("renaming into {}", self.dest.display()), e))?;
        self.done = true;
        if let Some((_, finished)) = STAGING_HOOKS.get() {
            finished(&self.path);
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.path);
            if let Some((_, finished)) = STAGING_HOOKS.get() {
                finished(&self.path);
            }
        }
    }
}
