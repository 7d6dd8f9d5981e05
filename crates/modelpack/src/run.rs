//! `quantize` end to end: open → plan (every tensor's name, type and
//! offset, before the output is touched) → execute → seal (manifest, signature, rename).
//!
//! Inputs are only ever read (mmap); every output goes to a locked staging directory that is
//! renamed into place after the manifest and signature are written and synced.

use crate::checkpoint::Checkpoint;
use crate::exec::{self, FileResult};
use crate::package::{copy_hashed, write_hashed, PackageError, Staging};
use crate::plan::{PlanError, QuantizeOptions, Target};
use crate::quant::metrics::ErrorStats;
use crate::sign::manifest::{self, PackageManifest, SourceFile, SourceInfo, TensorRecord, ToolInfo};
use crate::sign::{FileDigest, PrivateKey, SignError};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A quantization job.
pub struct QuantizeJob {
    /// Checkpoint directory or safetensors file.
    pub input: PathBuf,
    /// Package directory to create.
    pub output: PathBuf,
    /// What to produce.
    pub options: QuantizeOptions,
    /// Replace a non-empty output directory.
    pub force: bool,
    /// Sign the package with this key.
    pub sign_key: Option<PrivateKey>,
    /// Put these certificates (leaf certifying `sign_key`, intermediates) in the bundle.
    pub sign_certs: Option<crate::sign::CertMaterial>,
    /// Unix time recorded in the manifest (`SOURCE_DATE_EPOCH`), if any.
    pub source_date_epoch: Option<u64>,
    /// Record the SHA-256 of every input file in the manifest (provenance). Off, the manifest
    /// lists the inputs with their sizes only.
    pub source_digests: bool,
    /// Caps on what the input may declare (tensor count, header and JSON sizes, ...).
    pub limits: crate::checkpoint::Limits,
}

/// What a finished job reports (the `--json` document of `quantize`).
#[derive(Debug, serde::Serialize)]
pub struct QuantizeReport {
    /// `ok`.
    pub status: &'static str,
    /// The package directory.
    pub package: PathBuf,
    /// `cpu` or `cuda`.
    pub target: String,
    /// `int8` or `int4`.
    pub scheme: String,
    /// `rtn` or `mse`.
    pub method: String,
    /// Stale temporary directories of killed runs that were removed first.
    pub cleaned: Vec<PathBuf>,
    /// Every file of the package with size and SHA-256.
    pub files: Vec<ReportFile>,
    /// Per-tensor types, sizes and error metrics.
    pub tensors: Vec<TensorRecord>,
    /// Checkpoint tensors left out on purpose, as the reference converter leaves them out
    /// (`{tensor, reason}`; DeepSeek's multi-token-prediction layer).
    pub dropped: Vec<DroppedTensor>,
    /// Tensor bytes read from the checkpoint.
    pub input_bytes: u64,
    /// Bytes of the weight files written.
    pub output_bytes: u64,
    /// Median SQNR over quantized tensors ([`crate::stats::median`]), when metrics were computed.
    pub median_sqnr_db: Option<f64>,
    /// Wall time of the whole job.
    pub seconds: f64,
    /// `input_bytes / seconds`, in GB/s (10^9).
    pub input_gb_per_s: f64,
    /// Whether `model.sig` was written.
    pub signed: bool,
}

/// A checkpoint tensor the package does not contain, and why.
#[derive(Debug, serde::Serialize)]
pub struct DroppedTensor {
    /// HF name.
    pub tensor: String,
    /// Why it is left out.
    pub reason: String,
}

/// A package file in the report.
#[derive(Debug, serde::Serialize)]
pub struct ReportFile {
    /// Path relative to the package.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
}

/// Why a job failed; [`RunError::is_input`] separates the user's input from I/O and internals.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The job could not be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The output directory could not be prepared or committed.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// Writing the weights failed.
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    /// Hashing or signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
}

impl RunError {
    /// True when the input or the options are at fault (exit code 2), false for I/O (3).
    pub fn is_input(&self) -> bool {
        match self {
            RunError::Checkpoint(_) | RunError::Plan(_) => true,
            RunError::Package(p) => matches!(p, PackageError::Refused(_) | PackageError::Locked(..)),
            // A task error is a kernel refusing the data (NaN/Inf, shapes).
            RunError::Exec(e) => matches!(e, exec::ExecError::Task(_)),
            RunError::Sign(_) => false,
        }
    }
}

/// Output bytes in flight (computing or waiting for the hasher): bounds memory whatever the model size.
const WINDOW_BYTES: u64 = 64 << 20;

/// Run a job; `progress(done, total)` gets source bytes, on the writer thread.
pub fn quantize(job: &QuantizeJob, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<QuantizeReport, RunError> {
    let t0 = Instant::now();
    let ckpt = Checkpoint::open_with_limits(&job.input, &job.limits)?;
    let opts = &job.options;
    // Plan fully before touching the output, so a bad input leaves nothing behind.
    let planned = match opts.target {
        Target::Cpu => Planned::Cpu(crate::cpu::plan(&ckpt, opts)?),
        Target::Cuda => Planned::Cuda(crate::cuda::plan(&ckpt, opts)?),
    };
    let staging = Staging::begin(&job.output, &job.input, job.force)?;
    let dir = staging.dir().to_path_buf();
    crate::fault::pause("staged");

    let total = planned.input_bytes();
    let done = std::sync::atomic::AtomicU64::new(0);
    let prog = |n: u64| {
        let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        progress(d, total);
    };
    // Provenance digests of the inputs are computed beside the quantization, from the shards'
    // existing mappings (no second read, no second set of page-table entries).
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (executed, source_files) = std::thread::scope(|scope| {
        let hashing = scope.spawn(|| hash_sources(&ckpt, job.source_digests, &cancel));
        let executed = (|| -> Result<_, RunError> {
            Ok(match &planned {
                Planned::Cpu(p) => {
                    let specs = p.files(&dir);
                    let tasks = p.tasks();
                    let (files, side) = exec::execute(
                        &specs,
                        &tasks,
                        |t| p.task_cost(t),
                        |t| p.run_task(&ckpt, t, opts.metrics),
                        exec::Limits::new(WINDOW_BYTES),
                        &prog,
                    )?;
                    (files, merge_metrics(p.records(), side), Vec::new())
                }
                Planned::Cuda(p) => {
                    let specs = p.files(&dir);
                    let tasks = p.tasks();
                    let (files, side) = exec::execute(
                        &specs,
                        &tasks,
                        |t| p.task_cost(t),
                        |t| p.run_task(&ckpt, t, opts.metrics),
                        exec::Limits::new(WINDOW_BYTES),
                        &prog,
                    )?;
                    let extra = p.write_side_files(&dir)?;
                    (files, merge_metrics(p.records(), side), extra)
                }
            })
        })();
        if executed.is_err() {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let hashed = hashing.join().unwrap_or_else(|_| {
            Err(SignError::Io {
                path: ckpt.root().to_path_buf(),
                source: std::io::Error::other("hashing thread panicked"),
            })
        });
        (executed, hashed)
    });
    let (files, mut records, extra_files) = executed?;
    let dropped = match &planned {
        Planned::Cpu(p) => {
            p.dropped.iter().map(|(t, r)| DroppedTensor { tensor: t.clone(), reason: r.clone() }).collect()
        }
        Planned::Cuda(_) => Vec::new(),
    };
    let output_bytes = files.iter().map(|f| f.size).sum();

    let mut digests: Vec<FileDigest> = files.iter().map(|f| digest_of(&dir, f)).collect();
    digests.extend(extra_files);
    for aux in ckpt.aux_files() {
        let name = aux.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if digests.iter().any(|d| d.path == name) {
            continue; // the target writes its own version (e.g. config.json for cuda)
        }
        let (size, sha256) = copy_hashed(&aux, &dir.join(&name))?;
        digests.push(FileDigest { path: name, sha256, size });
    }

    let source_files = source_files?;
    for r in &mut records {
        r.sqnr_db = r.sqnr_db.and_then(manifest::finite);
    }
    let m = PackageManifest {
        format_version: manifest::MANIFEST_FORMAT_VERSION,
        tool: ToolInfo { name: "modelpack".into(), version: env!("CARGO_PKG_VERSION").into() },
        target: target_name(opts.target).into(),
        scheme: format!("{:?}", opts.scheme).to_lowercase(),
        method: opts.method.name().into(),
        options: opts.to_json(),
        source: SourceInfo { files: source_files },
        tensors: records.clone(),
        source_date_epoch: job.source_date_epoch,
    };
    let json = m.to_json();
    let sha = write_hashed(&dir.join(manifest::MANIFEST_FILE), json.as_bytes())?;
    digests.push(FileDigest { path: manifest::MANIFEST_FILE.into(), sha256: sha, size: json.len() as u64 });

    let final_name = staging.dest().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some(key) = &job.sign_key {
        let all = crate::sign::complete_digests(&dir, digests.clone())?;
        let bundle = crate::sign::sign_package_with(&dir, &final_name, key, job.sign_certs.as_ref(), Some(all))?;
        crate::sign::write_signature(&dir, &bundle)?;
    }
    let cleaned = staging.cleaned.clone();
    crate::fault::pause("before-commit");
    // The digests above and the weights must describe the same input: refuse to publish if any
    // source changed since it was opened (the staging directory is removed on return).
    ckpt.snapshot().verify_unchanged()?;
    let package = staging.commit()?;

    digests.sort_by(|a, b| a.path.cmp(&b.path));
    let seconds = t0.elapsed().as_secs_f64();
    let sq: Vec<f64> = records.iter().filter_map(|r| r.sqnr_db).collect();
    Ok(QuantizeReport {
        status: "ok",
        package,
        target: m.target,
        scheme: m.scheme,
        method: m.method,
        cleaned,
        files: digests
            .iter()
            .map(|d| ReportFile { path: d.path.clone(), size: d.size, sha256: hex::encode(d.sha256) })
            .collect(),
        tensors: records,
        dropped,
        input_bytes: total,
        output_bytes,
        median_sqnr_db: crate::stats::median(&sq),
        seconds,
        input_gb_per_s: total as f64 / seconds / 1e9,
        signed: job.sign_key.is_some(),
    })
}

enum Planned {
    Cpu(crate::cpu::CpuPlan),
    Cuda(crate::cuda::CudaPlan),
}

impl Planned {
    fn input_bytes(&self) -> u64 {
        match self {
            Planned::Cpu(p) => p.input_bytes(),
            Planned::Cuda(p) => p.input_bytes(),
        }
    }
}

fn target_name(t: Target) -> &'static str {
    match t {
        Target::Cpu => "cpu",
        Target::Cuda => "cuda",
    }
}

fn digest_of(dir: &Path, f: &FileResult) -> FileDigest {
    let rel = f.path.strip_prefix(dir).unwrap_or(&f.path);
    FileDigest { path: rel.to_string_lossy().replace('\\', "/"), sha256: f.sha256, size: f.size }
}

/// Merge per-task statistics (in task order, so the sums never depend on thread timing).
fn merge_metrics(mut records: Vec<TensorRecord>, side: Vec<(usize, Option<ErrorStats>)>) -> Vec<TensorRecord> {
    let mut acc: Vec<Option<ErrorStats>> = vec![None; records.len()];
    for (t, s) in side {
        if let Some(s) = s {
            acc[t].get_or_insert_with(ErrorStats::default).merge(&s);
        }
    }
    for (r, s) in records.iter_mut().zip(acc) {
        if let Some(s) = s.filter(|s| s.count > 0) {
            r.sqnr_db = manifest::finite(s.sqnr_db());
            r.rel_rmse = manifest::finite(s.rel_rmse());
            r.max_abs_err = manifest::finite(f64::from(s.max_abs_err));
        }
    }
    records
}

/// Provenance of the inputs: name, size and (with `with_digests`) SHA-256 of every source file,
/// sorted by name. Shards are hashed from the checkpoint's own mappings, on up to as many threads
/// as the pool has (one file is one sequential hash); `cancel` stops early when the run failed.
fn hash_sources(
    ckpt: &Checkpoint,
    with_digests: bool,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Vec<SourceFile>, SignError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let root = ckpt.root();
    let files = ckpt.source_files();
    let one = |p: &PathBuf| -> Result<SourceFile, SignError> {
        let name = p.strip_prefix(root).unwrap_or(p).to_string_lossy().replace('\\', "/");
        let shard = ckpt.shards().iter().find(|s| s.path() == p.as_path());
        let (sha256, size) = match (with_digests, shard) {
            (true, Some(s)) => {
                let mut h = <sha2::Sha256 as sha2::Digest>::new();
                for chunk in s.bytes().chunks(8 << 20) {
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    sha2::Digest::update(&mut h, chunk);
                }
                (Some(hex::encode(sha2::Digest::finalize(h))), s.size())
            }
            (true, None) => {
                // Inputs may be links (a Hugging Face cache snapshot): hash what they point to.
                // The no-symlink rule is for packages, not for checkpoints.
                let real = std::fs::canonicalize(p).map_err(|source| SignError::Io { path: p.clone(), source })?;
                let (sha, size) = crate::sign::hash_file(&real)?;
                (Some(hex::encode(sha)), size)
            }
            (false, Some(s)) => (None, s.size()),
            (false, None) => {
                let meta = std::fs::metadata(p).map_err(|source| SignError::Io { path: p.clone(), source })?;
                (None, meta.len())
            }
        };
        Ok(SourceFile { name, size, sha256 })
    };
    // With digests, the shards (memory-mapped) are hashed two at a time by one thread,
    // interleaved with SHA-NI (`digest_pair`): one SHA-256 stream is bound by the rounds'
    // latency, so a pair costs far less than two streams one after the other. Biggest first,
    // so the two of a pair have about the same length. Everything else goes one at a time.
    let shard_of = |p: &PathBuf| ckpt.shards().iter().find(|s| s.path() == p.as_path());
    let mut items: Vec<(usize, Option<usize>)> = Vec::new();
    if with_digests {
        let mut sh: Vec<usize> = (0..files.len()).filter(|&i| shard_of(&files[i]).is_some()).collect();
        sh.sort_by_key(|&i| std::cmp::Reverse(shard_of(&files[i]).map_or(0, |s| s.size())));
        for pair in sh.chunks(2) {
            items.push((pair[0], pair.get(1).copied()));
        }
        items.extend((0..files.len()).filter(|&i| shard_of(&files[i]).is_none()).map(|i| (i, None)));
    } else {
        items.extend((0..files.len()).map(|i| (i, None)));
    }
    let pair = |i: usize, j: usize| -> Vec<SourceFile> {
        let (a, b) = (shard_of(&files[i]), shard_of(&files[j]));
        let (Some(a), Some(b)) = (a, b) else { unreachable!("pairs are made of shards") };
        let stop = || cancel.load(Ordering::Relaxed);
        let (da, db) = modelpack_sign::sha256::digest_pair(a.bytes(), b.bytes(), 8 << 20, &stop);
        let name = |p: &PathBuf| p.strip_prefix(root).unwrap_or(p).to_string_lossy().replace('\\', "/");
        vec![
            SourceFile { name: name(&files[i]), size: a.size(), sha256: Some(hex::encode(da)) },
            SourceFile { name: name(&files[j]), size: b.size(), sha256: Some(hex::encode(db)) },
        ]
    };
    let next = AtomicUsize::new(0);
    let threads = if with_digests { rayon::current_num_threads().clamp(1, items.len().max(1)) } else { 1 };
    let mut out: Vec<SourceFile> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(i, j)) = items.get(k) else { break };
                        match j {
                            Some(j) => mine.extend(pair(i, j)),
                            None => mine.push(one(&files[i])?),
                        }
                    }
                    Ok::<_, SignError>(mine)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in hs {
            all.extend(h.join().unwrap_or_else(|_| {
                Err(SignError::Io {
                    path: root.to_path_buf(),
                    source: std::io::Error::other("hashing thread panicked"),
                })
            })?);
        }
        Ok::<_, SignError>(all)
    })?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
