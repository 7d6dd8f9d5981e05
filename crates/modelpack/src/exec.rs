//! The execute step: run block-aligned tasks in parallel, write their bytes in file order and
//! hash every output file on the way out.
//!
//! Why ordered: SHA-256 of a file is sequential, so hashing while writing needs the bytes in
//! order. Tasks are computed on rayon in bounded windows (so memory stays flat whatever the
//! model size) while a single writer thread appends the previous window to the files and feeds
//! the hashers; the output is therefore never read back. Pieces that a task produces for a later
//! part of a file (e.g. a quantized module's scales, stored after its packed weights) wait in a
//! small reorder buffer until the writer reaches their offset. Gaps between planned regions are
//! alignment padding and are written as zeros.
//!
//! Every output file is reserved with `posix_fallocate` before any work, so a full disk fails
//! up front, and later writes are plain `write(2)` calls whose errors (ENOSPC) are reported,
//! never a SIGBUS as with a shared writable mapping.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;

/// A planned output file: where it goes and the exact size the layout computed.
#[derive(Debug, Clone)]
pub struct OutFileSpec {
    /// Path of the file to create (inside the temporary package directory).
    pub path: PathBuf,
    /// Final size in bytes.
    pub size: u64,
    /// Planned data regions `(offset, len)`: every byte outside them is zero padding.
    pub regions: Vec<(u64, u64)>,
}

/// Bytes for one place in one output file.
#[derive(Debug)]
pub struct Piece {
    /// Index into the file specs.
    pub file: usize,
    /// Absolute offset in that file.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What one task hands back: its pieces, its side result and the source bytes it consumed.
pub type TaskOutput<S> = (Vec<Piece>, S, u64);

/// What a finished output file looks like, for the manifest and the signature.
#[derive(Debug, Clone)]
pub struct FileResult {
    /// Its path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of its content.
    pub sha256: [u8; 32],
}

/// Errors of the execute step.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// I/O on an output file (creating, reserving space, writing, syncing).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Which file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A task failed; the first failure in task order is reported.
    #[error("{0}")]
    Task(anyhow::Error),
    /// The plan and the produced pieces disagree: a bug, never the user's input.
    #[error("internal layout error in {path}: {msg}")]
    Layout {
        /// Which file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
}

/// Run `tasks` with `run` and write the resulting pieces into `files`.
///
/// `window_bytes` bounds the output bytes of in-flight tasks (approximately: at least one task
/// is always in flight); `cost` gives each task's output size estimate for that bound.
/// `progress` is called on the writer thread with the number of source bytes just done.
/// Returns one [`FileResult`] per file and each task's side result, in task order.
pub fn execute<T, S, F>(
    files: &[OutFileSpec],
    tasks: &[T],
    cost: impl Fn(&T) -> u64 + Sync,
    run: F,
    window_bytes: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Vec<FileResult>, Vec<S>), ExecError>
where
    T: Sync,
    S: Send,
    F: Fn(&T) -> anyhow::Result<(Vec<Piece>, S, u64)> + Sync,
{
    use rayon::prelude::*;

    let mut writers = Vec::with_capacity(files.len());
    for spec in files {
        writers.push(FileWriter::create(spec)?);
    }

    // Windows of consecutive tasks whose estimated output fits `window_bytes`.
    let mut windows = Vec::new();
    let mut start = 0;
    let mut acc = 0u64;
    for (i, t) in tasks.iter().enumerate() {
        let c = cost(t);
        if i > start && acc + c > window_bytes {
            windows.push(start..i);
            start = i;
            acc = 0;
        }
        acc += c;
    }
    if start < tasks.len() {
        windows.push(start..tasks.len());
    }

    let (tx, rx) = mpsc::sync_channel::<Vec<(Vec<Piece>, u64)>>(1);
    let mut side = Vec::with_capacity(tasks.len());
    let mut task_err = None;
    let writer_result = std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<Vec<FileWriter>, ExecError> {
            let mut writers = writers;
            for batch in rx {
                for (pieces, src_bytes) in batch {
                    for p in pieces {
                        let w = writers.get_mut(p.file).ok_or_else(|| ExecError::Layout {
                            path: PathBuf::new(),
                            msg: format!("piece for unknown file {}", p.file),
                        })?;
                        w.accept(p.offset, p.bytes)?;
                    }
                    progress(src_bytes);
                }
            }
            Ok(writers)
        });
        for w in &windows {
            let results: Vec<_> = tasks[w.clone()].par_iter().map(&run).collect();
            let mut batch = Vec::with_capacity(results.len());
            for r in results {
                match r {
                    Ok((pieces, s, src)) => {
                        batch.push((pieces, src));
                        side.push(s);
                    }
                    Err(e) => {
                        task_err = Some(e);
                        break;
                    }
                }
            }
            if task_err.is_some() || tx.send(batch).is_err() {
                break;
            }
        }
        drop(tx);
        writer.join().expect("writer thread panicked")
    });
    if let Some(e) = task_err {
        return Err(ExecError::Task(e));
    }
    let writers = writer_result?;
    writers.into_iter().map(FileWriter::finish).collect::<Result<Vec<_>, _>>().map(|f| (f, side))
}

/// One output file being written in order, with its running hash and reorder buffer.
struct FileWriter {
    path: PathBuf,
    file: File,
    size: u64,
    next: u64,
    /// Zero gaps `(start, end)` in order; the writer fills one when it reaches its start.
    gaps: Vec<(u64, u64)>,
    gap_idx: usize,
    pending: BTreeMap<u64, Vec<u8>>,
    hasher: Sha256,
    buf: Vec<u8>,
    /// Bytes handed to the kernel's writeback so far (see [`FileWriter::start_writeback`]).
    written_back: u64,
}

const WRITE_BUF: usize = 8 << 20;
/// Pieces at least this big are written without passing through the gathering buffer.
const DIRECT_WRITE: usize = 256 << 10;
/// Start disk writeback every this many bytes, so the final fsync has little left to do.
const WRITEBACK_STEP: u64 = 32 << 20;

impl FileWriter {
    fn create(spec: &OutFileSpec) -> Result<Self, ExecError> {
        let io = |op, source| ExecError::Io { op, path: spec.path.clone(), source };
        let file =
            std::fs::OpenOptions::new().write(true).create_new(true).open(&spec.path).map_err(|e| io("creating", e))?;
        reserve(&file, spec.size).map_err(|e| io("reserving space for", e))?;
        let mut regions = spec.regions.clone();
        regions.sort_unstable();
        let mut gaps = Vec::new();
        let mut at = 0u64;
        for &(off, len) in &regions {
            if off < at {
                return Err(ExecError::Layout {
                    path: spec.path.clone(),
                    msg: format!("overlapping regions at {off}"),
                });
            }
            if off > at {
                gaps.push((at, off));
            }
            at = off + len;
        }
        if at > spec.size {
            return Err(ExecError::Layout {
                path: spec.path.clone(),
                msg: format!("regions end at {at}, past the file size {}", spec.size),
            });
        }
        if at < spec.size {
            gaps.push((at, spec.size));
        }
        let mut w = FileWriter {
            path: spec.path.clone(),
            file,
            size: spec.size,
            next: 0,
            gaps,
            gap_idx: 0,
            pending: BTreeMap::new(),
            hasher: Sha256::new(),
            buf: Vec::with_capacity(WRITE_BUF),
            written_back: 0,
        };
        w.fill_gaps()?;
        Ok(w)
    }

    fn accept(&mut self, offset: u64, bytes: Vec<u8>) -> Result<(), ExecError> {
        if offset < self.next || self.pending.contains_key(&offset) {
            return Err(self.layout_err(format!("piece at {offset} overlaps written data")));
        }
        self.pending.insert(offset, bytes);
        while let Some(bytes) = self.pending.remove(&self.next) {
            self.emit(&bytes)?;
            self.fill_gaps()?;
        }
        Ok(())
    }

    fn fill_gaps(&mut self) -> Result<(), ExecError> {
        while let Some(&(s, e)) = self.gaps.get(self.gap_idx) {
            if s != self.next {
                break;
            }
            self.gap_idx += 1;
            let zeros = vec![0u8; (e - s) as usize];
            self.emit(&zeros)?;
        }
        Ok(())
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), ExecError> {
        self.hasher.update(bytes);
        self.next += bytes.len() as u64;
        if self.next > self.size {
            return Err(self.layout_err(format!("data runs past the planned size {}", self.size)));
        }
        // Small pieces (headers, padding, scales) are gathered; big ones go straight to the
        // kernel, saving a copy of every weight byte.
        if bytes.len() >= DIRECT_WRITE || self.buf.len() + bytes.len() > WRITE_BUF {
            self.flush()?;
        }
        if bytes.len() >= DIRECT_WRITE {
            self.write(bytes)
        } else {
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn flush(&mut self) -> Result<(), ExecError> {
        let buf = std::mem::take(&mut self.buf);
        let r = self.write(&buf);
        self.buf = buf;
        self.buf.clear();
        r
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ExecError> {
        crate::fault::charge_write(bytes.len())
            .and_then(|()| self.file.write_all(bytes))
            .map_err(|source| ExecError::Io { op: "writing", path: self.path.clone(), source })?;
        self.start_writeback()
    }

    /// Ask the kernel to start writing the bytes written so far to disk, without waiting.
    ///
    /// Why: the package must be fsynced before its rename. Left alone, the kernel keeps a whole
    /// multi-GB output dirty in the page cache and the final fsync then writes it all while
    /// every core idles; started early, disk writes overlap with quantization.
    fn start_writeback(&mut self) -> Result<(), ExecError> {
        let flushed = self.next - self.buf.len() as u64;
        if flushed < self.written_back + WRITEBACK_STEP {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (off, len) = (self.written_back as libc::off64_t, (flushed - self.written_back) as libc::off64_t);
            // SAFETY: plain syscall on a file descriptor we own.
            let rc = unsafe { libc::sync_file_range(self.file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                // Not supported on this filesystem: the final fsync does all the work instead.
                if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP | libc::ESPIPE)) {
                    return Err(ExecError::Io { op: "writing back", path: self.path.clone(), source: e });
                }
            }
        }
        self.written_back = flushed;
        Ok(())
    }

    fn layout_err(&self, msg: String) -> ExecError {
        ExecError::Layout { path: self.path.clone(), msg }
    }

    fn finish(mut self) -> Result<FileResult, ExecError> {
        self.flush()?;
        if self.next != self.size || !self.pending.is_empty() {
            return Err(self.layout_err(format!(
                "wrote {} of {} bytes ({} pieces left unplaced)",
                self.next,
                self.size,
                self.pending.len()
            )));
        }
        self.file.sync_all().map_err(|source| ExecError::Io { op: "syncing", path: self.path.clone(), source })?;
        Ok(FileResult { path: self.path, size: self.size, sha256: self.hasher.finalize().into() })
    }
}

/// Reserve `size` bytes on disk so that running out of space is found before any work.
fn reserve(file: &File, size: u64) -> std::io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(size)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "file too large"))?;
        // SAFETY: plain syscall on a file descriptor we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        match rc {
            0 => Ok(()),
            // Filesystems without fallocate support (some tmpfs/overlay setups): fall through,
            // the ordered writes still report ENOSPC as an error.
            libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, name: &str, size: u64, regions: Vec<(u64, u64)>) -> OutFileSpec {
        OutFileSpec { path: dir.join(name), size, regions }
    }

    #[test]
    fn out_of_order_pieces_and_gaps_give_the_planned_bytes_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        // Regions [2,5) and [8,10): bytes 0..2, 5..8 and 10..12 are zero padding.
        let files = vec![spec(dir.path(), "a.bin", 12, vec![(2, 3), (8, 2)])];
        // Task 0 produces the later region first, task 1 the earlier one.
        let tasks = vec![0usize, 1];
        let run = |t: &usize| -> anyhow::Result<(Vec<Piece>, usize, u64)> {
            let p = if *t == 0 {
                Piece { file: 0, offset: 8, bytes: vec![9, 9] }
            } else {
                Piece { file: 0, offset: 2, bytes: vec![1, 2, 3] }
            };
            Ok((vec![p], *t * 10, 1))
        };
        let (res, side) = execute(&files, &tasks, |_| 1, run, 1, &|_| {}).unwrap();
        let want = [0u8, 0, 1, 2, 3, 0, 0, 0, 9, 9, 0, 0];
        assert_eq!(std::fs::read(dir.path().join("a.bin")).unwrap(), want);
        assert_eq!(res[0].sha256, <[u8; 32]>::from(Sha256::digest(want)));
        assert_eq!(side, vec![0, 10]);
    }

    #[test]
    fn a_missing_piece_is_a_layout_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![spec(dir.path(), "a.bin", 4, vec![(0, 4)])];
        let tasks = vec![()];
        let run = |_: &()| -> anyhow::Result<(Vec<Piece>, (), u64)> {
            Ok((vec![Piece { file: 0, offset: 0, bytes: vec![1, 2] }], (), 0))
        };
        let err = execute(&files, &tasks, |_| 1, run, 1 << 20, &|_| {}).unwrap_err();
        assert!(err.to_string().contains("wrote 2 of 4"), "{err}");
    }

    #[test]
    fn the_first_failing_task_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![spec(dir.path(), "a.bin", 0, vec![])];
        let tasks = vec![1, 2, 3];
        let run = |t: &i32| -> anyhow::Result<(Vec<Piece>, (), u64)> {
            anyhow::ensure!(*t < 2, "task {t} failed");
            Ok((vec![], (), 0))
        };
        let err = execute(&files, &tasks, |_| 1, run, 1 << 20, &|_| {}).unwrap_err();
        assert_eq!(err.to_string(), "task 2 failed");
    }
}
