//! The execute step: run block-aligned tasks in parallel, write their bytes in place and hash
//! every output file in file order.
//!
//! Why this shape: SHA-256 of a file is sequential, and on a 2-core machine it is the single
//! biggest serial cost of a run (≈0.65 s per GB of output here). So the hashing thread does
//! nothing else: workers claim tasks in order, compute them, and `pwrite` their pieces straight
//! to the final offsets (the file is sized up front), then hand the bytes to the hasher, which
//! consumes them in file order. There is no barrier between groups of tasks: a worker starts the
//! next task as soon as it is done, as long as the output bytes in flight stay under a budget
//! (memory stays flat whatever the model size). Pieces that arrive for a later part of a file
//! (e.g. a quantized module's scales, stored after all packed weights) wait in a reorder buffer;
//! past a memory limit they are not kept at all but read back from the file when the hasher
//! reaches them. Gaps between planned regions are alignment padding: zeros in the sized file,
//! hashed as zeros and never written.
//!
//! Every output file is reserved before any work (`posix_fallocate`, or a free-space check on
//! tmpfs, where fallocate would zero every page up front), so a full disk fails early, and
//! writes are plain `pwrite(2)` calls whose errors (ENOSPC) are reported, never a SIGBUS as with
//! a shared writable mapping.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

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

/// A buffer of `len` bytes for a task's output, recycled from pieces already hashed.
///
/// Its content is arbitrary (old output): only for callers that overwrite every byte, such as
/// the block quantizers, which write whole blocks. Why: zeroing a fresh buffer for every task
/// costs a memset over the whole output (3% of a Q8_0 run) that the kernel then overwrites.
pub fn recycled_buffer(len: usize) -> Vec<u8> {
    let found = {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        pool.iter().position(|b| b.capacity() >= len).map(|i| pool.swap_remove(i))
    };
    let mut b = found.unwrap_or_default();
    if b.len() >= len {
        b.truncate(len);
    } else {
        b.resize(len, 0);
    }
    b
}

/// Return a hashed piece's buffer to the pool (bounded: extra buffers are freed).
fn recycle(b: Vec<u8>) {
    const MAX_BUFFERS: usize = 16;
    if b.capacity() < (64 << 10) {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < MAX_BUFFERS {
        pool.push(b);
    }
}

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

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

/// Tuning of [`execute`]; [`Limits::new`] gives the production values.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Output bytes of tasks in flight (computing, or computed and not yet hashed): bounds
    /// memory. At least one task is always admitted, however big.
    pub window_bytes: u64,
    /// Bytes the reorder buffer may hold in memory; pieces beyond it are re-read from the file.
    pub pending_bytes: u64,
    /// Worker threads (at least 1).
    pub workers: usize,
}

impl Limits {
    /// `window_bytes` in flight, 64 MiB of reorder buffer, one worker per rayon thread of the
    /// current pool (so `--threads` applies).
    pub fn new(window_bytes: u64) -> Self {
        Limits { window_bytes, pending_bytes: 64 << 20, workers: rayon::current_num_threads().max(1) }
    }
}

/// Run `tasks` with `run` and write the resulting pieces into `files`.
///
/// `cost` gives each task's output size estimate for the in-flight budget. `progress` is called
/// on the hashing thread with the number of source bytes just done. Returns one [`FileResult`]
/// per file and each task's side result, in task order. On failure the first error in task order
/// is returned (a task's own error, or the I/O error of writing its pieces).
pub fn execute<T, S, F>(
    files: &[OutFileSpec],
    tasks: &[T],
    cost: impl Fn(&T) -> u64 + Sync,
    run: F,
    limits: Limits,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Vec<FileResult>, Vec<S>), ExecError>
where
    T: Sync,
    S: Send,
    F: Fn(&T) -> anyhow::Result<TaskOutput<S>> + Sync,
{
    let mut outs: Vec<OutFile> = Vec::with_capacity(files.len());
    let mut tmpfs_needed = 0u64;
    for spec in files {
        outs.push(OutFile::create(spec, &mut tmpfs_needed)?);
    }
    // Workers write through their own descriptors while the hasher owns `outs`.
    let handles = outs
        .iter()
        .map(|o| o.file.try_clone().map(|f| (f, o.path.clone(), o.size)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ExecError::Io { op: "opening", path: files[0].path.clone(), source })?;
    let st = Shared {
        admit: Mutex::new(Admission { next: 0, in_flight: 0 }),
        room: Condvar::new(),
        done: Mutex::new(BTreeMap::new()),
        ready: Condvar::new(),
        stop: AtomicBool::new(false),
    };
    let n = tasks.len();
    let hashed = std::thread::scope(|scope| {
        let hasher = scope.spawn(|| hash_in_order(&st, &mut outs, n, limits.pending_bytes, progress));
        rayon::scope(|rs| {
            for _ in 0..limits.workers.max(1) {
                rs.spawn(|_| work(&st, tasks, &cost, &run, &handles, limits.window_bytes));
            }
        });
        hasher.join().unwrap_or_else(|_| Err(internal("the hashing thread panicked")))
    });
    let side = hashed?;
    let results = outs.into_iter().map(OutFile::finish).collect::<Result<Vec<_>, _>>()?;
    Ok((results, side))
}

fn internal(msg: &str) -> ExecError {
    ExecError::Layout { path: PathBuf::new(), msg: msg.to_string() }
}

/// Admission of tasks, in task order, under the in-flight budget.
struct Admission {
    next: usize,
    in_flight: u64,
}

/// A computed task waiting for the hasher: its pieces (already written), side result, source
/// bytes and admitted cost.
type Done<S> = Result<(Vec<Piece>, S, u64, u64), ExecError>;

struct Shared<S> {
    admit: Mutex<Admission>,
    room: Condvar,
    done: Mutex<BTreeMap<usize, Done<S>>>,
    ready: Condvar,
    stop: AtomicBool,
}

impl<S> Shared<S> {
    fn halt(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Take each lock before notifying so a thread between its check and its wait can't miss it.
        drop(self.admit.lock().unwrap_or_else(|p| p.into_inner()));
        self.room.notify_all();
        drop(self.done.lock().unwrap_or_else(|p| p.into_inner()));
        self.ready.notify_all();
    }
}

/// A worker: claim the next task when the budget allows, compute it, write its pieces in place,
/// hand it to the hasher. Claiming is in task order under one lock, so everything in flight is
/// older than the task waiting for room, and the hasher always frees room eventually.
fn work<T, S, F>(
    st: &Shared<S>,
    tasks: &[T],
    cost: &(impl Fn(&T) -> u64 + Sync),
    run: &F,
    files: &[(File, PathBuf, u64)],
    window: u64,
) where
    F: Fn(&T) -> anyhow::Result<TaskOutput<S>> + Sync,
{
    loop {
        let (i, c) = {
            let mut a = st.admit.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if st.stop.load(Ordering::SeqCst) || a.next >= tasks.len() {
                    return;
                }
                let c = cost(&tasks[a.next]).max(1);
                if a.in_flight == 0 || a.in_flight + c <= window {
                    let i = a.next;
                    a.next += 1;
                    a.in_flight += c;
                    break (i, c);
                }
                a = st.room.wait(a).unwrap_or_else(|p| p.into_inner());
            }
        };
        // A panicking task (a bug) must not leave the hasher waiting forever.
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&tasks[i])))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("internal error: task {i} panicked")));
        let done = match out {
            Ok((pieces, s, src)) => write_pieces(files, &pieces).map(|()| (pieces, s, src, c)),
            Err(e) => Err(ExecError::Task(e)),
        };
        if done.is_err() {
            // Later tasks are pointless; earlier ones are already claimed and will finish.
            st.stop.store(true, Ordering::SeqCst);
        }
        st.done.lock().unwrap_or_else(|p| p.into_inner()).insert(i, done);
        st.ready.notify_all();
    }
}

/// Write pieces at their offsets (bounds-checked against the plan).
fn write_pieces(files: &[(File, PathBuf, u64)], pieces: &[Piece]) -> Result<(), ExecError> {
    for p in pieces {
        let (file, path, size) =
            files.get(p.file).ok_or_else(|| internal(&format!("piece for unknown file {}", p.file)))?;
        if p.offset.checked_add(p.bytes.len() as u64).is_none_or(|end| end > *size) {
            return Err(ExecError::Layout {
                path: path.clone(),
                msg: format!("piece at {} ({} bytes) runs past the planned size {size}", p.offset, p.bytes.len()),
            });
        }
        crate::fault::charge_write(p.bytes.len())
            .and_then(|()| file.write_all_at(&p.bytes, p.offset))
            .map_err(|source| ExecError::Io { op: "writing", path: path.clone(), source })?;
    }
    Ok(())
}

/// The hashing thread: take tasks in order, feed their pieces to each file's hash in offset order,
/// release their budget. Returns the side results in task order.
fn hash_in_order<S>(
    st: &Shared<S>,
    outs: &mut [OutFile],
    n: usize,
    pending_limit: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<S>, ExecError> {
    let mut side = Vec::with_capacity(n);
    let mut held = 0u64;
    let r = (|| {
        for i in 0..n {
            let done = {
                let mut d = st.done.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(x) = d.remove(&i) {
                        break x;
                    }
                    d = st.ready.wait(d).unwrap_or_else(|p| p.into_inner());
                }
            };
            let (pieces, s, src, c) = done?;
            for p in pieces {
                let out = outs.get_mut(p.file).ok_or_else(|| internal("piece for unknown file"))?;
                out.accept(p.offset, p.bytes, &mut held, pending_limit)?;
            }
            side.push(s);
            progress(src);
            let mut a = st.admit.lock().unwrap_or_else(|p| p.into_inner());
            a.in_flight -= c;
            drop(a);
            st.room.notify_all();
        }
        Ok(())
    })();
    if r.is_err() {
        st.halt();
    }
    r.map(|()| side)
}

/// A piece waiting in the reorder buffer: its bytes, or only its length when it is read back
/// from the file (where a worker already wrote it).
enum Pending {
    Mem(Vec<u8>),
    OnDisk(u64),
}

/// One output file: its running hash over the bytes before `next` and its reorder buffer.
struct OutFile {
    path: PathBuf,
    file: File,
    size: u64,
    next: u64,
    /// Zero gaps `(start, end)` in order; hashed when the cursor reaches them.
    gaps: Vec<(u64, u64)>,
    gap_idx: usize,
    pending: BTreeMap<u64, Pending>,
    hasher: Sha256,
    /// Bytes handed to the kernel's writeback so far (see [`OutFile::start_writeback`]).
    written_back: u64,
}

/// Start disk writeback every this many bytes, so the final fsync has little left to do.
const WRITEBACK_STEP: u64 = 32 << 20;
/// Read-back chunk for pieces that left the reorder buffer.
const READ_BACK: usize = 1 << 20;

impl OutFile {
    fn create(spec: &OutFileSpec, tmpfs_needed: &mut u64) -> Result<Self, ExecError> {
        let io = |op, source| ExecError::Io { op, path: spec.path.clone(), source };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&spec.path)
            .map_err(|e| io("creating", e))?;
        reserve(&file, spec.size, tmpfs_needed).map_err(|e| io("reserving space for", e))?;
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
        let mut f = OutFile {
            path: spec.path.clone(),
            file,
            size: spec.size,
            next: 0,
            gaps,
            gap_idx: 0,
            pending: BTreeMap::new(),
            hasher: Sha256::new(),
            written_back: 0,
        };
        f.hash_gaps()?;
        Ok(f)
    }

    /// Take a written piece; hash every piece that is now contiguous with the cursor.
    fn accept(&mut self, offset: u64, bytes: Vec<u8>, held: &mut u64, limit: u64) -> Result<(), ExecError> {
        if offset < self.next || self.pending.contains_key(&offset) {
            return Err(self.layout_err(format!("piece at {offset} overlaps written data")));
        }
        if offset == self.next {
            self.hash(&bytes)?;
            recycle(bytes);
        } else {
            let len = bytes.len() as u64;
            if *held + len <= limit {
                *held += len;
                self.pending.insert(offset, Pending::Mem(bytes));
            } else {
                self.pending.insert(offset, Pending::OnDisk(len));
                recycle(bytes);
            }
        }
        self.hash_gaps()?;
        while let Some(p) = self.pending.remove(&self.next) {
            match p {
                Pending::Mem(b) => {
                    *held -= b.len() as u64;
                    self.hash(&b)?;
                    recycle(b);
                }
                Pending::OnDisk(len) => self.hash_from_file(len)?,
            }
            self.hash_gaps()?;
        }
        self.start_writeback()
    }

    fn hash_gaps(&mut self) -> Result<(), ExecError> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        while let Some(&(s, e)) = self.gaps.get(self.gap_idx) {
            if s != self.next {
                break;
            }
            self.gap_idx += 1;
            let mut left = e - s;
            while left > 0 {
                let k = left.min(ZEROS.len() as u64) as usize;
                self.hash(&ZEROS[..k])?;
                left -= k as u64;
            }
        }
        Ok(())
    }

    fn hash(&mut self, bytes: &[u8]) -> Result<(), ExecError> {
        self.hasher.update(bytes);
        self.next += bytes.len() as u64;
        if self.next > self.size {
            return Err(self.layout_err(format!("data runs past the planned size {}", self.size)));
        }
        Ok(())
    }

    /// Hash `len` bytes at the cursor from the file itself (a piece that left the buffer).
    fn hash_from_file(&mut self, len: u64) -> Result<(), ExecError> {
        let mut buf = vec![0u8; (len.min(READ_BACK as u64)) as usize];
        let mut left = len;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..k], self.next).map_err(|source| ExecError::Io {
                op: "reading back",
                path: self.path.clone(),
                source,
            })?;
            self.hash(&buf[..k])?;
            left -= k as u64;
        }
        Ok(())
    }

    /// Ask the kernel to start writing the hashed bytes to disk, without waiting.
    ///
    /// Why: the package must be fsynced before its rename. Left alone, the kernel keeps a whole
    /// multi-GB output dirty in the page cache and the final fsync then writes it all while
    /// every core idles; started early, disk writes overlap with quantization. (Every byte
    /// before the cursor has been written: workers write before handing pieces over.)
    fn start_writeback(&mut self) -> Result<(), ExecError> {
        if self.next < self.written_back + WRITEBACK_STEP {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (off, len) = (self.written_back as libc::off64_t, (self.next - self.written_back) as libc::off64_t);
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
        self.written_back = self.next;
        Ok(())
    }

    fn layout_err(&self, msg: String) -> ExecError {
        ExecError::Layout { path: self.path.clone(), msg }
    }

    fn finish(self) -> Result<FileResult, ExecError> {
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

/// Reserve `size` bytes so that running out of space is found before any work, and give the
/// file its final size (unwritten padding reads as zeros).
///
/// On tmpfs, `posix_fallocate` allocates and zeroes every page up front on one thread (0.16 s per
/// GB here) only for the workers to overwrite them; there a free-space check of everything this
/// run puts on tmpfs (`tmpfs_needed`, cumulative) stands in, and writes still report ENOSPC.
fn reserve(file: &File, size: u64, tmpfs_needed: &mut u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: plain syscall on a descriptor we own, into a zeroed struct.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        if size > 0 && unsafe { libc::fstatfs(fd, &mut fs) } == 0 && fs.f_type == libc::TMPFS_MAGIC {
            *tmpfs_needed += size;
            let avail = (fs.f_bavail as u64).saturating_mul(fs.f_bsize as u64);
            // tmpfs without a size limit reports no blocks at all.
            if fs.f_blocks != 0 && avail < *tmpfs_needed {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            return file.set_len(size);
        }
        if size > 0 {
            let len = libc::off_t::try_from(size)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "file too large"))?;
            // SAFETY: plain syscall on a file descriptor we own.
            match unsafe { libc::posix_fallocate(fd, 0, len) } {
                0 => {}
                // Filesystems without fallocate support: the writes still report ENOSPC.
                libc::EOPNOTSUPP | libc::EINVAL => {}
                e => return Err(std::io::Error::from_raw_os_error(e)),
            }
        }
    }
    let _ = tmpfs_needed;
    file.set_len(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, name: &str, size: u64, regions: Vec<(u64, u64)>) -> OutFileSpec {
        OutFileSpec { path: dir.join(name), size, regions }
    }

    fn limits(window_bytes: u64, pending_bytes: u64, workers: usize) -> Limits {
        Limits { window_bytes, pending_bytes, workers }
    }

    #[test]
    fn out_of_order_pieces_and_gaps_give_the_planned_bytes_and_hash() {
        for pending in [1 << 20, 0] {
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
            let (res, side) = execute(&files, &tasks, |_| 1, run, limits(1, pending, 2), &|_| {}).unwrap();
            let want = [0u8, 0, 1, 2, 3, 0, 0, 0, 9, 9, 0, 0];
            assert_eq!(std::fs::read(dir.path().join("a.bin")).unwrap(), want);
            assert_eq!(res[0].sha256, <[u8; 32]>::from(Sha256::digest(want)));
            assert_eq!(side, vec![0, 10]);
        }
    }

    /// Many tasks over two files, each task writing one piece near the start and one near the end
    /// of its file (so the reorder buffer fills, and with a tiny limit spills to the file): the
    /// bytes and hashes equal an independently assembled image for every worker count, window
    /// and buffer limit, and side results come back in task order.
    #[test]
    fn bytes_and_hashes_do_not_depend_on_workers_window_or_buffer_limit() {
        let n = 120usize;
        let piece = |t: usize, k: usize| -> Vec<u8> {
            let len = 1 + (t * 7 + k * 13) % 40;
            (0..len).map(|j| (t * 31 + k * 17 + j) as u8).collect()
        };
        // Layout: file f gets tasks t with t % 2 == f; first halves in task order, then a gap of 3,
        // then second halves in task order.
        let mut images = [Vec::new(), Vec::new()];
        let mut offsets = vec![[0u64; 2]; n];
        for k in 0..2 {
            for (t, off) in offsets.iter_mut().enumerate() {
                let img = &mut images[t % 2];
                off[k] = img.len() as u64;
                img.extend(piece(t, k));
            }
            for img in &mut images {
                img.extend([0, 0, 0]);
            }
        }
        let mut regions = [Vec::new(), Vec::new()];
        for (t, off) in offsets.iter().enumerate() {
            for (k, &o) in off.iter().enumerate() {
                regions[t % 2].push((o, piece(t, k).len() as u64));
            }
        }
        let tasks: Vec<usize> = (0..n).collect();
        let run = |t: &usize| -> anyhow::Result<(Vec<Piece>, usize, u64)> {
            let ps = (0..2).map(|k| Piece { file: t % 2, offset: offsets[*t][k], bytes: piece(*t, k) }).collect();
            Ok((ps, *t, 1))
        };
        for (workers, window, pending) in [(1, 1, 1 << 20), (2, 50, 1 << 20), (4, 10_000, 0), (3, 7, 64)] {
            let dir = tempfile::tempdir().unwrap();
            let files: Vec<_> = (0..2)
                .map(|f| spec(dir.path(), &format!("{f}.bin"), images[f].len() as u64, regions[f].clone()))
                .collect();
            let cost = |t: &usize| (piece(*t, 0).len() + piece(*t, 1).len()) as u64;
            let (res, side) = execute(&files, &tasks, cost, run, limits(window, pending, workers), &|_| {}).unwrap();
            assert_eq!(side, tasks, "workers {workers}");
            for f in 0..2 {
                assert_eq!(std::fs::read(&files[f].path).unwrap(), images[f], "workers {workers} file {f}");
                assert_eq!(res[f].sha256, <[u8; 32]>::from(Sha256::digest(&images[f])), "workers {workers}");
            }
        }
    }

    #[test]
    fn a_missing_piece_is_a_layout_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![spec(dir.path(), "a.bin", 4, vec![(0, 4)])];
        let tasks = vec![()];
        let run = |_: &()| -> anyhow::Result<(Vec<Piece>, (), u64)> {
            Ok((vec![Piece { file: 0, offset: 0, bytes: vec![1, 2] }], (), 0))
        };
        let err = execute(&files, &tasks, |_| 1, run, limits(1 << 20, 1 << 20, 2), &|_| {}).unwrap_err();
        assert!(err.to_string().contains("wrote 2 of 4"), "{err}");
    }

    #[test]
    fn a_piece_past_the_planned_size_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![spec(dir.path(), "a.bin", 4, vec![(0, 4)])];
        let tasks = vec![()];
        let run = |_: &()| -> anyhow::Result<(Vec<Piece>, (), u64)> {
            Ok((vec![Piece { file: 0, offset: 2, bytes: vec![1; 4] }], (), 0))
        };
        let err = execute(&files, &tasks, |_| 1, run, limits(1 << 20, 1 << 20, 1), &|_| {}).unwrap_err();
        assert!(err.to_string().contains("runs past the planned size 4"), "{err}");
        assert_eq!(std::fs::metadata(&files[0].path).unwrap().len(), 4);
    }

    #[test]
    fn the_first_failing_task_in_task_order_is_reported() {
        for workers in [1, 2, 4] {
            let dir = tempfile::tempdir().unwrap();
            let files = vec![spec(dir.path(), "a.bin", 0, vec![])];
            let tasks: Vec<u64> = (0..40).collect();
            let run = |t: &u64| -> anyhow::Result<(Vec<Piece>, (), u64)> {
                // Task 2 is slow, so later failing tasks finish first on other workers.
                if *t == 2 {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                anyhow::ensure!(*t < 2, "task {t} failed");
                Ok((vec![], (), 0))
            };
            let err = execute(&files, &tasks, |_| 1, run, limits(1 << 20, 1 << 20, workers), &|_| {}).unwrap_err();
            assert_eq!(err.to_string(), "task 2 failed", "workers {workers}");
        }
    }

    #[test]
    fn a_panicking_task_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![spec(dir.path(), "a.bin", 0, vec![])];
        let tasks = vec![0, 1, 2];
        let run = |t: &i32| -> anyhow::Result<(Vec<Piece>, (), u64)> {
            assert!(*t != 1, "boom");
            Ok((vec![], (), 0))
        };
        let err = execute(&files, &tasks, |_| 1, run, limits(1, 1, 2), &|_| {}).unwrap_err();
        assert!(err.to_string().contains("task 1 panicked"), "{err}");
    }
}
