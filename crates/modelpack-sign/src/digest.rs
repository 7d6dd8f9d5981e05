//! Which files a package consists of, and their SHA-256 digests.
//!
//! The rules mirror `model_signing` 1.1.1 (`files` serialization, default configuration) so
//! both tools see the same resources: every regular file under the root, named by its
//! `/`-separated relative path, except the top-level ignore paths ([`DEFAULT_IGNORE_PATHS`]);
//! a path is ignored when its leading components equal an ignore path (`.git/x` too).
//! Symbolic links and special files anywhere (ignored directories included, as
//! `model_signing` checks them too) are errors when signing.

use crate::sha256::{compress_one, compress_x2, Sha256State, BLOCK};
use crate::SignError;
use std::cmp::Ordering;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;

/// The signature file's name inside a package.
pub const SIGNATURE_FILE: &str = "model.sig";

/// Paths never part of the signed resources, in the order we write them into the statement's
/// `ignore_paths` (`model_signing` writes the same set in hash-set order, which varies from
/// run to run; verifiers treat it as a set).
pub const DEFAULT_IGNORE_PATHS: [&str; 5] = [SIGNATURE_FILE, ".git", ".gitattributes", ".github", ".gitignore"];

/// Read buffer per file being hashed. Reading through a buffer that stays in L2 measured
/// faster than hashing an mmap straight from memory (1.45 vs 1.08 GB/s per core here: SHA-NI
/// stalls on cache misses more than the kernel's copy costs), needs no `unsafe` and cannot
/// SIGBUS when a file is truncated under us. Buffer size barely matters from 64 KiB to 1 MiB;
/// a worker holds two (one per lane), so both stay in L2 while they are hashed together.
const READ_BUF: usize = 256 << 10;

/// Files a worker thread hashes at once: two messages interleaved on one core go ~1.6× as
/// fast as one (see [`crate::sha256`]).
const LANES: usize = 2;

/// One package file: its name in the bundle, SHA-256 and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Path relative to the package root, `/`-separated, validated by [`validate_rel_path`].
    pub path: String,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

/// Order resource names by path components, as `model_signing` does (it sorts `PurePosixPath`
/// objects): `a/b` sorts before `a.txt` because component `a` < `a.txt`, although the plain
/// strings sort the other way (`.` < `/`).
pub fn cmp_paths(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Check a resource name, from our own walk or from an untrusted bundle: relative, `/`
/// separators, no empty, `.` or `..` components, no backslashes or NULs. Such names cannot
/// escape the package root when joined to it.
pub fn validate_rel_path(p: &str) -> Result<(), SignError> {
    let bad = |reason| Err(SignError::BadPath { path: p.to_string(), reason });
    if p.is_empty() {
        return bad("empty");
    }
    if p.starts_with('/') {
        return bad("absolute path");
    }
    if p.contains('\\') {
        return bad("backslash in path");
    }
    if p.contains('\0') {
        return bad("NUL in path");
    }
    for c in p.split('/') {
        match c {
            "" => return bad("empty path component"),
            "." => return bad("'.' path component"),
            ".." => return bad("'..' escapes the package"),
            _ => {}
        }
    }
    Ok(())
}

/// Is `rel` equal to or inside one of `ignore` (component-wise prefix)?
pub(crate) fn is_ignored(rel: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|ig| {
        let mut r = rel.split('/');
        ig.split('/').all(|c| r.next() == Some(c))
    })
}

/// What the walk found at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A regular file of this size.
    File(u64),
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device.
    Special,
}

/// One non-directory entry under the root.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub rel: String,
    pub kind: EntryKind,
    pub ignored: bool,
}

/// Walk `root` without following links. Directories are descended into (ignored ones too);
/// every other entry is returned, sorted by [`cmp_paths`]. Names that are not UTF-8 are
/// errors (they cannot appear in a bundle).
pub(crate) fn walk(root: &Path, ignore: &[String]) -> Result<Vec<Entry>, SignError> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| SignError::io(root, e))?;
    if meta.file_type().is_symlink() {
        return Err(SignError::Symlink { path: root.to_path_buf() });
    }
    if !meta.is_dir() {
        return Err(SignError::io(
            root,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "package is not a directory"),
        ));
    }
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| SignError::io(&dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| SignError::io(&dir, e))?;
            let path = ent.path();
            let name = ent.file_name().into_string().map_err(|_| SignError::NonUtf8Path { path: path.clone() })?;
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let ft = ent.file_type().map_err(|e| SignError::io(&path, e))?;
            let kind = if ft.is_symlink() {
                EntryKind::Symlink
            } else if ft.is_dir() {
                stack.push((path, rel));
                continue;
            } else if ft.is_file() {
                let m = ent.metadata().map_err(|e| SignError::io(&path, e))?;
                EntryKind::File(m.len())
            } else {
                EntryKind::Special
            };
            let ignored = is_ignored(&rel, ignore);
            out.push(Entry { rel, kind, ignored });
        }
    }
    out.sort_by(|a, b| cmp_paths(&a.rel, &b.rel));
    Ok(out)
}

/// The signable resources of `root` (sizes only, not hashed), enforcing the signing rules:
/// no symlinks or special files anywhere, valid names, at least one file.
pub(crate) fn list_resources(root: &Path) -> Result<Vec<(String, u64)>, SignError> {
    let ignore: Vec<String> = DEFAULT_IGNORE_PATHS.iter().map(|s| s.to_string()).collect();
    let mut files = Vec::new();
    for e in walk(root, &ignore)? {
        match e.kind {
            EntryKind::Symlink => return Err(SignError::Symlink { path: root.join(&e.rel) }),
            EntryKind::Special => return Err(SignError::NotRegular { path: root.join(&e.rel) }),
            EntryKind::File(_) if e.ignored => {}
            EntryKind::File(size) => {
                validate_rel_path(&e.rel)?;
                files.push((e.rel, size));
            }
        }
    }
    if files.is_empty() {
        return Err(SignError::EmptyPackage { root: root.to_path_buf() });
    }
    Ok(files)
}

/// SHA-256 and size of one file, in bounded memory (one 256 KiB buffer, whatever the file
/// size; no anonymous copy of the file). The file must be a regular file; a symlink is
/// refused (opened with `O_NOFOLLOW`). A file whose size changes while it is hashed is an
/// error, not a silently wrong digest.
pub fn hash_file(path: &Path) -> Result<([u8; 32], u64), SignError> {
    let mut lane = Lane::open(path.to_path_buf(), 0, Vec::new())?;
    loop {
        lane.refill()?;
        if lane.done() {
            let (sha256, size, _) = lane.finish()?;
            return Ok((sha256, size));
        }
        let n = lane.blocks();
        let (st, data) = lane.whole_blocks(n);
        compress_one(st, data);
        lane.consume(n);
    }
}

/// One file being hashed: its descriptor, SHA-256 state and read buffer. The buffer holds
/// `buf[start..end]` not yet hashed; whole blocks are compressed straight from it (by the
/// caller, alone or paired with another lane), and the last partial block at the end.
struct Lane {
    /// Position of the file in the caller's list.
    idx: usize,
    path: PathBuf,
    file: File,
    /// Size when opened; the file must still have it when done.
    len: u64,
    read: u64,
    eof: bool,
    state: Sha256State,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Lane {
    /// Open `path` for hashing (regular files only, links not followed), reusing `buf`.
    fn open(path: PathBuf, idx: usize, mut buf: Vec<u8>) -> Result<Lane, SignError> {
        let file = open_nofollow(&path)?;
        let meta = file.metadata().map_err(|e| SignError::io(&path, e))?;
        if !meta.is_file() {
            return Err(SignError::NotRegular { path });
        }
        let len = meta.len();
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            // A hint for cold files (bigger read-ahead); failure is harmless.
            // SAFETY: plain syscall on a descriptor we own.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
        }
        // Small files get a small buffer; a reused buffer keeps its size.
        let want = usize::try_from(len).map_or(READ_BUF, |l| l.clamp(BLOCK, READ_BUF));
        if buf.len() < want {
            buf.resize(want, 0);
        }
        Ok(Lane { idx, path, file, len, read: 0, eof: false, state: Sha256State::new(), buf, start: 0, end: 0 })
    }

    /// Unless at end of file, make at least one whole block available: move the partial
    /// block left over to the front and read until the buffer is full or the file ends.
    fn refill(&mut self) -> Result<(), SignError> {
        if self.eof || self.end - self.start >= BLOCK {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let mut f = &self.file;
        while self.end < self.buf.len() {
            match f.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.end += n;
                    self.read += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SignError::io(&self.path, e)),
            }
        }
        Ok(())
    }

    /// Whole blocks ready to compress.
    fn blocks(&self) -> usize {
        (self.end - self.start) / BLOCK
    }

    /// Read to the end and fewer than one block left: only [`Lane::finish`] remains.
    fn done(&self) -> bool {
        self.eof && self.blocks() == 0
    }

    /// The chaining value and the next `n` whole blocks, for the caller to compress.
    fn whole_blocks(&mut self, n: usize) -> (&mut [u32; 8], &[u8]) {
        (self.state.chaining_mut(), &self.buf[self.start..self.start + n * BLOCK])
    }

    /// Record that the caller compressed the next `n` blocks.
    fn consume(&mut self, n: usize) {
        self.state.count(n * BLOCK);
        self.start += n * BLOCK;
    }

    /// Digest and size, after checking the file kept its size; gives the buffer back.
    fn finish(mut self) -> Result<([u8; 32], u64, Vec<u8>), SignError> {
        self.state.update(&self.buf[self.start..self.end]);
        let after = self.file.metadata().map_err(|e| SignError::io(&self.path, e))?.len();
        if self.read != self.len || after != self.len {
            return Err(changed_while_hashing(&self.path));
        }
        Ok((self.state.finalize(), self.len, self.buf))
    }
}

fn changed_while_hashing(path: &Path) -> SignError {
    SignError::io(path, std::io::Error::other("file changed size while being hashed"))
}

fn open_nofollow(path: &Path) -> Result<File, SignError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    opts.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            SignError::Symlink { path: path.to_path_buf() }
        } else {
            SignError::io(path, e)
        }
    })
}

/// Hash many files of `root` in parallel on the current rayon pool and return their digests
/// in the order of `files`.
///
/// Each worker thread hashes up to [`LANES`] files at once with [`compress_x2`]. Files are
/// handed out biggest first (so one large file does not start last): worker `w` starts with
/// the `w`-th biggest, so every thread has a file of its own before any thread takes a second
/// lane; a lane that finishes takes the next file from a shared queue. The digests do not
/// depend on the schedule. On an error the workers stop; the error of the first file (in
/// `files` order) that failed is returned.
pub(crate) fn hash_many(root: &Path, files: &[(String, u64)]) -> Result<Vec<FileDigest>, SignError> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| files[b].1.cmp(&files[a].1));
    let workers = rayon::current_num_threads().clamp(1, files.len().max(1));
    let next = AtomicUsize::new(workers);
    let stop = AtomicBool::new(false);
    let done: Results = Mutex::new(vec![None; files.len()]);
    let failed: Mutex<Option<(usize, SignError)>> = Mutex::new(None);
    let job = Job { root, files, order: &order, next: &next, stop: &stop, done: &done };
    rayon::scope(|s| {
        for w in 0..workers.min(files.len()) {
            let (job, failed) = (&job, &failed);
            s.spawn(move |_| {
                if let Err((i, e)) = job.work(job.order[w]) {
                    job.stop.store(true, AtomicOrdering::Relaxed);
                    let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
                    if f.as_ref().is_none_or(|(j, _)| i < *j) {
                        *f = Some((i, e));
                    }
                }
            });
        }
    });
    if let Some((_, e)) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    files
        .iter()
        .zip(done)
        .map(|((rel, _), d)| {
            // Every file is handed to exactly one worker; a gap would be our bug, reported
            // as an error rather than a panic or a missing digest.
            let (sha256, size) = d.ok_or_else(|| {
                SignError::io(root.join(rel), std::io::Error::other("file was not hashed (internal error)"))
            })?;
            Ok(FileDigest { path: rel.clone(), sha256, size })
        })
        .collect()
}

/// Digest and size per file of [`hash_many`]'s list, filled in by the workers.
type Results = Mutex<Vec<Option<([u8; 32], u64)>>>;

/// What the workers of [`hash_many`] share.
struct Job<'a> {
    root: &'a Path,
    files: &'a [(String, u64)],
    /// Indices into `files`, biggest first.
    order: &'a [usize],
    /// Next position in `order` to hand out.
    next: &'a AtomicUsize,
    /// Set when a worker failed: the others stop at their next block run.
    stop: &'a AtomicBool,
    done: &'a Results,
}

impl Job<'_> {
    /// One worker: hash `first`, then files from the queue, [`LANES`] at a time.
    fn work(&self, first: usize) -> Result<(), (usize, SignError)> {
        let mut lanes: [Option<Lane>; LANES] = [None, None];
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut first = Some(first);
        loop {
            if self.stop.load(AtomicOrdering::Relaxed) {
                return Ok(());
            }
            for slot in lanes.iter_mut() {
                while slot.is_none() {
                    let Some(i) = first
                        .take()
                        .or_else(|| self.order.get(self.next.fetch_add(1, AtomicOrdering::Relaxed)).copied())
                    else {
                        break;
                    };
                    let buf = spare.pop().unwrap_or_default();
                    let mut lane = Lane::open(self.root.join(&self.files[i].0), i, buf).map_err(|e| (i, e))?;
                    lane.refill().map_err(|e| (i, e))?;
                    if lane.done() {
                        // Shorter than a block: nothing to pair, finish now and take another.
                        spare.push(self.finish(lane)?);
                    } else {
                        *slot = Some(lane);
                    }
                }
            }
            match &mut lanes {
                [Some(a), Some(b)] => {
                    let n = a.blocks().min(b.blocks());
                    let (sa, da) = a.whole_blocks(n);
                    let (sb, db) = b.whole_blocks(n);
                    compress_x2(sa, da, sb, db);
                    a.consume(n);
                    b.consume(n);
                }
                [Some(a), None] | [None, Some(a)] => {
                    let n = a.blocks();
                    let (st, data) = a.whole_blocks(n);
                    compress_one(st, data);
                    a.consume(n);
                }
                [None, None] => return Ok(()),
            }
            for slot in lanes.iter_mut() {
                if let Some(lane) = slot {
                    lane.refill().map_err(|e| (lane.idx, e))?;
                    if lane.done() {
                        let lane = slot.take().expect("lane present");
                        spare.push(self.finish(lane)?);
                    }
                }
            }
        }
    }

    /// Check and record one finished file; returns its buffer for reuse.
    fn finish(&self, lane: Lane) -> Result<Vec<u8>, (usize, SignError)> {
        let i = lane.idx;
        let (sha, size, buf) = lane.finish().map_err(|e| (i, e))?;
        self.done.lock().unwrap_or_else(|p| p.into_inner())[i] = Some((sha, size));
        Ok(buf)
    }
}

/// Every resource of the package at `root` with its digest, in bundle order ([`cmp_paths`]).
/// Files are hashed in parallel on the current rayon pool. Errors on symlinks, special files,
/// unreadable files and an empty package.
pub fn hash_package(root: &Path) -> Result<Vec<FileDigest>, SignError> {
    let files = list_resources(root)?;
    hash_many(root, &files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    #[test]
    fn component_order_differs_from_string_order() {
        let mut v = vec!["a.txt", "a/b", "b", "a/a/z", "a-b", "A"];
        v.sort_by(|a, b| cmp_paths(a, b));
        // Component order: "A" < "a" (then a/a/z, a/b) < "a-b" < "a.txt" < "b".
        assert_eq!(v, ["A", "a/a/z", "a/b", "a-b", "a.txt", "b"]);
        assert!("a.txt" < "a/b", "plain strings sort the other way");
    }

    #[test]
    fn path_validation() {
        for ok in ["a", "a/b.c", ".hidden", "x/..y", "...", "dir/.git"] {
            validate_rel_path(ok).unwrap();
        }
        for bad in ["", "/abs", "a/../b", "..", "a\\b", "a//b", "a/", "./a", "a/.", "a\0b"] {
            assert!(validate_rel_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ignore_is_component_prefix_at_top_level() {
        let ig: Vec<String> = DEFAULT_IGNORE_PATHS.iter().map(|s| s.to_string()).collect();
        assert!(is_ignored(".git", &ig));
        assert!(is_ignored(".git/HEAD", &ig));
        assert!(is_ignored("model.sig", &ig));
        assert!(!is_ignored("sub/.git", &ig));
        assert!(!is_ignored(".gitfoo", &ig));
        assert!(!is_ignored("model.sig.bak", &ig));
    }

    #[test]
    fn hash_file_matches_known_vectors() {
        let dir = tempfile::tempdir().unwrap();
        // SHA-256("abc") from FIPS 180-2.
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        let (d, n) = hash_file(&p).unwrap();
        assert_eq!(hex::encode(d), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(n, 3);
        // 5 MiB of 'a' (many buffer refills) equals the digest of the same bytes hashed in one
        // call by a second route: the `sha2` one-shot API over an in-memory vector.
        let big = vec![b'a'; 5 << 20];
        let p = dir.path().join("big");
        std::fs::write(&p, &big).unwrap();
        let (d, n) = hash_file(&p).unwrap();
        assert_eq!(d, <[u8; 32]>::from(Sha256::digest(&big)));
        assert_eq!(n, 5 << 20);
        // Empty file: SHA-256 of the empty string.
        let p = dir.path().join("empty");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(
            hex::encode(hash_file(&p).unwrap().0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parallel_hashing_is_in_path_order_whatever_the_threads() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        // Sizes out of order, so the biggest-first schedule differs from the listing order.
        for (i, n) in [3usize, 1 << 20, 0, 700_001, 5].into_iter().enumerate() {
            let name = format!("f{i}");
            let bytes: Vec<u8> = (0..n).map(|j| (j * 31 + i) as u8).collect();
            std::fs::write(dir.path().join(&name), &bytes).unwrap();
            files.push((name, n as u64, <[u8; 32]>::from(Sha256::digest(&bytes))));
        }
        let list: Vec<(String, u64)> = files.iter().map(|(n, s, _)| (n.clone(), *s)).collect();
        for threads in [1, 2, 5] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let got = pool.install(|| hash_many(dir.path(), &list)).unwrap();
            let want: Vec<FileDigest> =
                files.iter().map(|(n, s, d)| FileDigest { path: n.clone(), sha256: *d, size: *s }).collect();
            assert_eq!(got, want, "{threads} threads");
        }
    }

    #[test]
    fn paired_lanes_give_each_file_its_own_digest() {
        // Sizes around the block (64) and buffer (256 KiB) edges, so lanes paired by
        // `compress_x2` end at different points, some mid-buffer, and refill at different times.
        let dir = tempfile::tempdir().unwrap();
        let sizes =
            [0usize, 1, 63, 64, 65, 127, 4096, READ_BUF - 1, READ_BUF, READ_BUF + 1, 3 * READ_BUF + 17, 777_777];
        let mut files = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let name = format!("d/f{i:02}");
            let mut x = 0x2545_f491_4f6c_dd1du64 ^ (i as u64) << 32;
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            std::fs::create_dir_all(dir.path().join("d")).unwrap();
            std::fs::write(dir.path().join(&name), &bytes).unwrap();
            files.push((name, n as u64, <[u8; 32]>::from(Sha256::digest(&bytes))));
        }
        let list: Vec<(String, u64)> = files.iter().map(|(n, s, _)| (n.clone(), *s)).collect();
        let want: Vec<FileDigest> =
            files.iter().map(|(n, s, d)| FileDigest { path: n.clone(), sha256: *d, size: *s }).collect();
        for threads in [1, 2, 3, 16] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            assert_eq!(pool.install(|| hash_many(dir.path(), &list)).unwrap(), want, "{threads} threads");
        }
        for (n, s, d) in &files {
            assert_eq!(hash_file(&dir.path().join(n)).unwrap(), (*d, *s), "hash_file {n}");
        }
    }

    #[test]
    fn a_file_that_cannot_be_hashed_is_an_error_whatever_the_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let mut list = Vec::new();
        for i in 0..6 {
            let name = format!("f{i}");
            std::fs::write(dir.path().join(&name), vec![i as u8; 100_000 * (i + 1)]).unwrap();
            list.push((name, 100_000 * (i as u64 + 1)));
        }
        list.insert(3, ("gone".to_string(), 5));
        for threads in [1, 2, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let err = pool.install(|| hash_many(dir.path(), &list)).unwrap_err();
            assert!(err.to_string().contains("gone"), "{threads} threads: {err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn package_rules() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        assert!(matches!(hash_package(r), Err(SignError::EmptyPackage { .. })));
        std::fs::create_dir_all(r.join(".git/objects")).unwrap();
        std::fs::write(r.join(".git/objects/x"), b"g").unwrap();
        std::fs::write(r.join("model.sig"), b"sig").unwrap();
        std::fs::write(r.join(".gitignore"), b"*").unwrap();
        assert!(matches!(hash_package(r), Err(SignError::EmptyPackage { .. })));
        std::fs::create_dir_all(r.join("a")).unwrap();
        std::fs::write(r.join("a/b"), b"1").unwrap();
        std::fs::write(r.join("a.txt"), b"2").unwrap();
        std::fs::write(r.join("sub.sig"), b"3").unwrap();
        let got: Vec<String> = hash_package(r).unwrap().into_iter().map(|d| d.path).collect();
        assert_eq!(got, ["a/b", "a.txt", "sub.sig"]);
        std::os::unix::fs::symlink("a.txt", r.join(".git/link")).unwrap();
        assert!(matches!(hash_package(r), Err(SignError::Symlink { .. })), "symlink inside .git");
        std::fs::remove_file(r.join(".git/link")).unwrap();
        std::fs::write(r.join("a\\b"), b"x").unwrap();
        assert!(matches!(hash_package(r), Err(SignError::BadPath { .. })));
    }
}
