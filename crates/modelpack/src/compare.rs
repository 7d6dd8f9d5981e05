//! `compare`: how close a package's weights are to the checkpoint they were made from.
//!
//! Every tensor of the package is decoded back to f32 with the same public dequantizers the
//! runtimes' formats define (GGUF blocks via [`crate::quant::gguf::dequantize_rows`],
//! compressed-tensors words via [`crate::quant::ct::dequantize_rows`]) and measured against its
//! source tensor with [`ErrorStats`], the same definitions `quantize --json` and `modelpack.json`
//! use: SQNR `10·log10(Σw²/Σ(w−ŵ)²)`, relative RMSE, max abs error, cosine.
//!
//! A GGUF package is mapped back to Hugging Face names with the llama converter's own name map,
//! and llama's q/k row permutation is undone by reading the source rows in permuted order, so the
//! figures are exactly those of the package's rows against the rows they were quantized from.
//!
//! A tensor is *flagged* when its SQNR is more than [`CompareOptions::flag_db`] below the median
//! of its kind (the source name with the layer number removed, e.g. `mlp.down_proj.weight`): one
//! layer far worse than its siblings points at an outlier-heavy weight, or at a damaged file.
//! Siblings share the stored type too (a Q4_K_M mix keeps some layers in Q6_K); a kind with a
//! single tensor is held against the median of all quantized tensors of its type.

use crate::checkpoint::{Checkpoint, TensorView};
use crate::format::gguf::{llama, GgufFile};
use crate::quant::convert::load_slice;
use crate::quant::ct::{self, CtScheme, ScaleDtype, Strategy};
use crate::quant::gguf::{self as qgguf, GgmlType};
use crate::quant::metrics::ErrorStats;
use crate::quant::SrcDtype;
use crate::sign::manifest::{PackageManifest, MANIFEST_FILE};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Elements decoded at a time per tensor: bounds memory whatever the model size.
const CHUNK_ELEMS: usize = 1 << 20;

/// Knobs of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    /// A tensor more than this many dB below the median SQNR of its kind is flagged.
    pub flag_db: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions { flag_db: 3.0 }
    }
}

/// Why a comparison could not be made. All variants are the inputs' fault (exit code 2) except
/// [`CompareError::Io`].
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The checkpoint or a compressed-tensors package could not be opened.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// The GGUF file is malformed.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// A kernel refused a tensor (unknown type, inconsistent sizes).
    #[error("{tensor}: {source}")]
    Quant {
        /// Package tensor name.
        tensor: String,
        /// What the kernel said.
        source: crate::quant::QuantError,
    },
    /// The package does not fit the checkpoint, or is not a package.
    #[error("{0}")]
    Input(String),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl CompareError {
    /// True when the inputs are at fault (exit code 2), false for I/O (3).
    pub fn is_input(&self) -> bool {
        !matches!(self, CompareError::Io { .. })
    }
}

/// Error figures of one tensor (or of a total). Non-finite values are `None` in JSON: an exact
/// copy has no finite SQNR.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    /// SQNR in dB; `None` when lossless.
    pub sqnr_db: Option<f64>,
    /// `sqrt(Σ(w−ŵ)²/Σw²)`.
    pub rel_rmse: Option<f64>,
    /// `max |w−ŵ|`.
    pub max_abs_err: f64,
    /// Cosine similarity of source and reconstruction.
    pub cosine: Option<f64>,
    /// Elements compared.
    pub elements: u64,
}

impl Figures {
    fn of(s: &ErrorStats) -> Figures {
        let fin = |x: f64| x.is_finite().then_some(x);
        Figures {
            sqnr_db: fin(s.sqnr_db()),
            rel_rmse: fin(s.rel_rmse()),
            max_abs_err: f64::from(s.max_abs_err),
            cosine: fin(s.cosine()),
            elements: s.count,
        }
    }
}

/// One package tensor against its source.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorComparison {
    /// Name in the package (GGUF name, or compressed-tensors module / tensor name).
    pub name: String,
    /// The checkpoint tensor it was made from.
    pub source: String,
    /// Kind used for flagging: `source` with the layer number removed.
    pub kind: String,
    /// Stored type (`Q4_0`, `pack-quantized int4 g128 sym`, `BF16`, ...).
    pub type_out: String,
    /// Whether the stored type is a quantized one (not a plain float copy or conversion).
    pub quantized: bool,
    /// The figures.
    #[serde(flatten)]
    pub figures: Figures,
    /// The SQNR `modelpack.json` recorded for this tensor at quantization time, if any.
    pub manifest_sqnr_db: Option<f64>,
    /// More than `flag_db` below the median SQNR of its kind.
    pub flagged: bool,
    #[serde(skip)]
    stats: ErrorStats,
}

/// Median and worst SQNR of one kind of quantized tensor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindSummary {
    /// The kind (`mlp.down_proj.weight`).
    pub kind: String,
    /// The stored type these tensors share.
    pub type_out: String,
    /// Tensors of this kind and type.
    pub tensors: usize,
    /// Median SQNR in dB.
    pub median_sqnr_db: Option<f64>,
    /// Lowest SQNR in dB.
    pub worst_sqnr_db: Option<f64>,
}

/// The whole comparison (the `--json` document of `modelpack compare`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompareReport {
    /// `ok`.
    pub status: &'static str,
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// The package.
    pub package: PathBuf,
    /// `cpu` (GGUF) or `cuda` (compressed-tensors).
    pub target: &'static str,
    /// Flagging threshold in dB below the kind's median.
    pub flag_db: f64,
    /// Figures over every compared element.
    pub total: Figures,
    /// Figures over the quantized tensors only.
    pub quantized_total: Figures,
    /// Median SQNR over quantized tensors.
    pub median_sqnr_db: Option<f64>,
    /// Per kind of quantized tensor.
    pub kinds: Vec<KindSummary>,
    /// Names of flagged tensors.
    pub flagged: Vec<String>,
    /// Package tensors with no source tensor (e.g. computed `rope_freqs.weight`).
    pub unmatched: Vec<String>,
    /// Every tensor, in package order.
    pub tensors: Vec<TensorComparison>,
}

/// The kind of a tensor for flagging: its name after the first all-digit component (the layer
/// number), or the whole name when it has none. `model.layers.3.mlp.down_proj.weight` →
/// `mlp.down_proj.weight`; `encoder.layer.0.attention.self.query.weight` →
/// `attention.self.query.weight`.
pub fn kind_of(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.iter().position(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
        Some(i) if i + 1 < parts.len() => parts[i + 1..].join("."),
        _ => name.to_string(),
    }
}

pub use crate::stats::median;

/// Compare package `package` (a directory, or a `.gguf` file) with checkpoint `checkpoint`.
pub fn compare(checkpoint: &Path, package: &Path, opts: &CompareOptions) -> Result<CompareReport, CompareError> {
    let ckpt = Checkpoint::open(checkpoint)?;
    let (gguf_path, dir) = if package.is_file() {
        (Some(package.to_path_buf()), package.parent().map(Path::to_path_buf))
    } else if package.join(crate::cpu::GGUF_NAME).is_file() {
        (Some(package.join(crate::cpu::GGUF_NAME)), Some(package.to_path_buf()))
    } else if package.is_dir() {
        (None, Some(package.to_path_buf()))
    } else {
        return Err(CompareError::Input(format!("{}: no such package", package.display())));
    };
    let manifest = dir.as_deref().map(read_manifest).transpose()?.flatten();
    let (target, mut tensors, unmatched) = match &gguf_path {
        Some(p) => {
            let (t, u) = compare_gguf(&ckpt, p)?;
            ("cpu", t, u)
        }
        None => {
            let (t, u) = compare_ct(&ckpt, package)?;
            ("cuda", t, u)
        }
    };
    if tensors.is_empty() {
        return Err(CompareError::Input(format!(
            "{}: no package tensor matches a tensor of {}",
            package.display(),
            checkpoint.display()
        )));
    }
    if let Some(m) = &manifest {
        let by_name: BTreeMap<&str, Option<f64>> = m.tensors.iter().map(|r| (r.name.as_str(), r.sqnr_db)).collect();
        for t in &mut tensors {
            t.manifest_sqnr_db = by_name.get(t.name.as_str()).copied().flatten();
        }
    }
    Ok(finish(checkpoint, package, target, opts, tensors, unmatched))
}

fn finish(
    checkpoint: &Path,
    package: &Path,
    target: &'static str,
    opts: &CompareOptions,
    mut tensors: Vec<TensorComparison>,
    unmatched: Vec<String>,
) -> CompareReport {
    // Siblings are tensors of the same kind *and* stored type: a Q4_K_M package keeps some layers'
    // `attn_v` in Q6_K, which must not make its Q4_K layers look broken.
    let mut kinds: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut by_type: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for t in tensors.iter().filter(|t| t.quantized) {
        kinds.entry((t.kind.clone(), t.type_out.clone())).or_default().push(t.stats.sqnr_db());
        by_type.entry(t.type_out.as_str()).or_default().push(t.stats.sqnr_db());
    }
    // A kind with a single tensor (a one-layer model, `lm_head`) has no siblings: it is held
    // against the median of all quantized tensors of its type instead.
    let medians: BTreeMap<(String, String), Option<f64>> = kinds
        .iter()
        .map(|(k, v)| {
            let m = if v.len() > 1 {
                median(v)
            } else {
                by_type.get(k.1.as_str()).filter(|a| a.len() > 1).and_then(|a| median(a))
            };
            (k.clone(), m)
        })
        .collect();
    let mut flagged = Vec::new();
    for t in tensors.iter_mut().filter(|t| t.quantized) {
        let s = t.stats.sqnr_db();
        let bad = match medians.get(&(t.kind.clone(), t.type_out.clone())).copied().flatten() {
            // NaN or -inf (a zero source with errors) is always suspicious.
            Some(m) => s.is_nan() || s < m - opts.flag_db,
            None => s.is_nan() || s == f64::NEG_INFINITY,
        };
        if bad {
            t.flagged = true;
            flagged.push(t.name.clone());
        }
    }
    let kinds = kinds
        .iter()
        .map(|((k, ty), v)| KindSummary {
            kind: k.clone(),
            type_out: ty.clone(),
            tensors: v.len(),
            median_sqnr_db: median(v),
            worst_sqnr_db: v.iter().copied().filter(|x| !x.is_nan()).reduce(f64::min).filter(|x| x.is_finite()),
        })
        .collect();
    let mut total = ErrorStats::new();
    let mut qtotal = ErrorStats::new();
    for t in &tensors {
        total.merge(&t.stats);
        if t.quantized {
            qtotal.merge(&t.stats);
        }
    }
    let q: Vec<f64> = tensors.iter().filter(|t| t.quantized).map(|t| t.stats.sqnr_db()).collect();
    CompareReport {
        status: "ok",
        checkpoint: checkpoint.to_path_buf(),
        package: package.to_path_buf(),
        target,
        flag_db: opts.flag_db,
        total: Figures::of(&total),
        quantized_total: Figures::of(&qtotal),
        median_sqnr_db: median(&q),
        kinds,
        flagged,
        unmatched,
        tensors,
    }
}

fn read_manifest(dir: &Path) -> Result<Option<PackageManifest>, CompareError> {
    let p = dir.join(MANIFEST_FILE);
    match std::fs::read(&p) {
        Ok(b) => {
            PackageManifest::from_json(&b).map(Some).map_err(|e| CompareError::Input(format!("{}: {e}", p.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CompareError::Io { path: p, source }),
    }
}

fn src_dtype(t: &TensorView<'_>) -> Result<SrcDtype, CompareError> {
    t.dtype.as_src().ok_or_else(|| {
        CompareError::Input(format!("source tensor `{}` has dtype {}, not a float type", t.name, t.dtype.name()))
    })
}

fn comparison(name: String, source: &str, type_out: String, quantized: bool, stats: ErrorStats) -> TensorComparison {
    TensorComparison {
        name,
        source: source.to_string(),
        kind: kind_of(source),
        type_out,
        quantized,
        figures: Figures::of(&stats),
        manifest_sqnr_db: None,
        flagged: false,
        stats,
    }
}

/// One GGUF tensor to decode: its data, type, shape, and where its rows come from.
struct GgufJob<'a> {
    name: String,
    data: &'a [u8],
    ty: GgmlType,
    src: TensorView<'a>,
    perm: Option<llama::QkPermutation>,
}

fn compare_gguf(ckpt: &Checkpoint, path: &Path) -> Result<(Vec<TensorComparison>, Vec<String>), CompareError> {
    let file = std::fs::File::open(path).map_err(|source| CompareError::Io { path: path.to_path_buf(), source })?;
    // SAFETY: the package is only read; a concurrent writer could change the bytes under us, which
    // would give wrong figures but no memory unsafety beyond what reading a mapping implies.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| CompareError::Io { path: path.into(), source })?;
    let gg = GgufFile::parse(&map)?;
    let arch = gg.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let dims = match ckpt.config() {
        Some(c) if arch == "llama" => Some(llama::LlamaDims::from_config(&c.raw)?),
        _ => None,
    };
    // GGUF name → HF tensor, by the converter's own map. With an `lm_head` present, the output
    // maps to it; a tied model has none and `token_embd` serves both.
    let mut by_gguf: BTreeMap<String, TensorView<'_>> = BTreeMap::new();
    for t in ckpt.tensors() {
        if let Some(g) = llama::tensor_name(t.name) {
            by_gguf.entry(g).or_insert(t);
        }
    }
    let mut jobs = Vec::new();
    let mut unmatched = Vec::new();
    for t in &gg.tensors {
        let name = t.info.name.clone();
        let Some(src) = by_gguf.get(&name).copied() else {
            unmatched.push(name);
            continue;
        };
        let shape: Vec<usize> = t.info.ne.iter().rev().map(|&d| d as usize).collect();
        if shape != src.shape {
            return Err(CompareError::Input(format!(
                "GGUF tensor `{name}` has shape {shape:?} but its source `{}` has {:?}",
                src.name, src.shape
            )));
        }
        let ty = GgmlType::from_id(t.info.ggml_type).ok_or_else(|| {
            CompareError::Input(format!("GGUF tensor `{name}`: unknown type id {}", t.info.ggml_type))
        })?;
        let perm = match &dims {
            Some(d) => llama::qk_permutation_for(d, src.name, shape[0])?,
            None => None,
        };
        jobs.push(GgufJob { name, data: t.data, ty, src, perm });
    }
    let out: Result<Vec<TensorComparison>, CompareError> = jobs.par_iter().map(gguf_tensor).collect();
    Ok((out?, unmatched))
}

fn gguf_tensor(job: &GgufJob<'_>) -> Result<TensorComparison, CompareError> {
    let src_dt = src_dtype(&job.src)?;
    let row_len = *job.src.shape.last().unwrap_or(&1);
    let rows = job.src.numel() / row_len.max(1);
    let rb = job.ty.row_bytes(row_len).ok_or_else(|| CompareError::Input(format!("{}: bad row length", job.name)))?;
    let qerr = |source| CompareError::Quant { tensor: job.name.clone(), source };
    let rows_per_chunk = (CHUNK_ELEMS / row_len.max(1)).max(1);
    let es = src_dt.size();
    let mut y = vec![0f32; rows_per_chunk.min(rows) * row_len];
    let mut x = vec![0f32; y.len()];
    let mut stats = ErrorStats::new();
    let mut r0 = 0;
    while r0 < rows {
        let n = rows_per_chunk.min(rows - r0);
        let (xs, ys) = (&mut x[..n * row_len], &mut y[..n * row_len]);
        qgguf::dequantize_rows(job.ty, &job.data[r0 * rb..(r0 + n) * rb], row_len, ys).map_err(qerr)?;
        for (k, xr) in xs.chunks_exact_mut(row_len).enumerate() {
            let r = r0 + k;
            let sr = job.perm.map_or(r, |p| p.src_row(r));
            load_slice(src_dt, &job.src.data[sr * row_len * es..(sr + 1) * row_len * es], xr);
        }
        stats.add(xs, ys);
        r0 += n;
    }
    let quantized = job.ty.block_size() > 1;
    Ok(comparison(job.name.clone(), job.src.name, job.ty.name().to_string(), quantized, stats))
}

/// Bits of the compressed-tensors config group that applies to module `m`: a group naming it
/// (exactly or by `re:` regex) wins over a class target such as `Linear`.
fn ct_bits(config: Option<&serde_json::Value>, m: &str) -> Option<u8> {
    let groups = config?.get("quantization_config")?.get("config_groups")?.as_object()?;
    let bits = |g: &serde_json::Value| g.get("weights")?.get("num_bits")?.as_u64().and_then(|b| u8::try_from(b).ok());
    let names = |g: &serde_json::Value, t: &str| {
        if let Some(re) = t.strip_prefix("re:") {
            regex::Regex::new(re).map(|r| r.is_match(m)).unwrap_or(false)
        } else {
            t == m
        }
        .then(|| bits(g))
        .flatten()
    };
    let targets = |g: &serde_json::Value| -> Vec<String> {
        g.get("targets")
            .and_then(|t| t.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    groups
        .values()
        .find_map(|g| targets(g).iter().find_map(|t| names(g, t)))
        .or_else(|| groups.values().find_map(|g| targets(g).iter().any(|t| t == "Linear").then(|| bits(g)).flatten()))
}

fn scale_dtype_of(t: &TensorView<'_>) -> Result<ScaleDtype, CompareError> {
    match t.dtype.name() {
        "BF16" => Ok(ScaleDtype::BF16),
        "F16" => Ok(ScaleDtype::F16),
        "F32" => Ok(ScaleDtype::F32),
        other => Err(CompareError::Input(format!("`{}`: scale dtype {other} is not BF16, F16 or F32", t.name))),
    }
}

fn compare_ct(ckpt: &Checkpoint, package: &Path) -> Result<(Vec<TensorComparison>, Vec<String>), CompareError> {
    let pkg = Checkpoint::open(package)?;
    let config = pkg.config().map(|c| &c.raw);
    if config.and_then(|c| c.get("quantization_config")).is_none() {
        return Err(CompareError::Input(format!(
            "{}: neither a GGUF package (no model.gguf) nor a compressed-tensors one (no quantization_config in config.json)",
            package.display()
        )));
    }
    let mut jobs: Vec<(String, Option<Option<u8>>)> = Vec::new();
    let mut unmatched = Vec::new();
    for t in pkg.tensors() {
        if let Some(m) = t.name.strip_suffix(".weight_packed") {
            jobs.push((m.to_string(), Some(ct_bits(config, m))));
        } else if [".weight_scale", ".weight_shape", ".weight_zero_point"].iter().any(|s| t.name.ends_with(s)) {
            continue;
        } else if ckpt.tensor(t.name).is_some() {
            jobs.push((t.name.to_string(), None));
        } else {
            unmatched.push(t.name.to_string());
        }
    }
    let out: Result<Vec<TensorComparison>, CompareError> = jobs
        .par_iter()
        .map(|(name, q)| match q {
            Some(bits) => ct_module(ckpt, &pkg, name, *bits),
            None => copied_tensor(ckpt, &pkg, name),
        })
        .collect();
    Ok((out?, unmatched))
}

fn part<'a>(pkg: &'a Checkpoint, name: &str) -> Result<TensorView<'a>, CompareError> {
    pkg.tensor(name).ok_or_else(|| CompareError::Input(format!("package tensor `{name}` is missing")))
}

/// `bits` comes from the package's config when a group names the module; otherwise it is read
/// off the packed width (`ceil(cols·bits/32)` words per row).
fn ct_module(ckpt: &Checkpoint, pkg: &Checkpoint, m: &str, bits: Option<u8>) -> Result<TensorComparison, CompareError> {
    let src_name = format!("{m}.weight");
    let src = ckpt.tensor(&src_name).ok_or_else(|| {
        CompareError::Input(format!("module `{m}` has no source tensor `{src_name}` in the checkpoint"))
    })?;
    let packed = part(pkg, &format!("{m}.weight_packed"))?;
    let scale = part(pkg, &format!("{m}.weight_scale"))?;
    let zp = pkg.tensor(&format!("{m}.weight_zero_point"));
    let (rows, cols) = match src.shape {
        [r, c] => (*r, *c),
        s => return Err(CompareError::Input(format!("`{src_name}` has shape {s:?}, not 2-D"))),
    };
    if let Some(shape_t) = pkg.tensor(&format!("{m}.weight_shape")) {
        let dims: Vec<i64> =
            shape_t.data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect();
        if dims != [rows as i64, cols as i64] {
            return Err(CompareError::Input(format!(
                "`{m}.weight_shape` says {dims:?} but the source is [{rows}, {cols}]"
            )));
        }
    }
    let scale_cols = match scale.shape {
        [r, c] if *r == rows && *c > 0 && cols % *c == 0 => *c,
        s => {
            return Err(CompareError::Input(format!(
                "`{m}.weight_scale` has shape {s:?} for a [{rows}, {cols}] weight"
            )))
        }
    };
    let words = packed.shape.get(1).copied().unwrap_or(0);
    let bits = match bits {
        Some(b) => b,
        None if words == cols.div_ceil(8) => 4,
        None => 8,
    };
    if packed.shape != [rows, cols.div_ceil(32 / usize::from(bits.clamp(1, 32)))] {
        return Err(CompareError::Input(format!(
            "`{m}.weight_packed` has shape {:?}, not that of {bits}-bit codes of a [{rows}, {cols}] weight",
            packed.shape
        )));
    }
    let strategy = if scale_cols == 1 { Strategy::Channel } else { Strategy::Group(cols / scale_cols) };
    let s = CtScheme { bits, strategy, symmetric: zp.is_none() };
    let sd = scale_dtype_of(&scale)?;
    let src_dt = src_dtype(&src)?;
    // Element steps run in the scale dtype only when it is the model's own dtype; with, say, bf16
    // scales on an f32 model they are f32 (torch promotion), which is how `quantize` measures
    // them. Decoding with the scales widened to f32 computes exactly that.
    let widen = match (sd, src_dt) {
        (ScaleDtype::BF16, SrcDtype::BF16) | (ScaleDtype::F16, SrcDtype::F16) | (ScaleDtype::F32, _) => None,
        (ScaleDtype::BF16, _) => Some(SrcDtype::BF16),
        (ScaleDtype::F16, _) => Some(SrcDtype::F16),
    };
    let mut wide = Vec::new();
    let qerr = |source| CompareError::Quant { tensor: m.to_string(), source };
    let per = s.rows_per_zp_word();
    let rows_per_chunk = ((CHUNK_ELEMS / cols.max(1)).max(1)).div_ceil(per) * per;
    let pc = s.packed_cols(cols) * 4;
    let sc = scale_cols * sd.size();
    let mut y = vec![0f32; rows_per_chunk.min(rows) * cols];
    let mut x = vec![0f32; y.len()];
    let mut stats = ErrorStats::new();
    let mut r0 = 0;
    while r0 < rows {
        let n = rows_per_chunk.min(rows - r0);
        let (xs, ys) = (&mut x[..n * cols], &mut y[..n * cols]);
        let pk = packed.data.get(r0 * pc..(r0 + n) * pc).ok_or_else(|| qerr(short("weight_packed")))?;
        let sk = scale.data.get(r0 * sc..(r0 + n) * sc).ok_or_else(|| qerr(short("weight_scale")))?;
        let zk = match &zp {
            Some(z) => {
                let w = scale_cols * 4;
                let (a, b) = ((r0 / per) * w, (r0 / per + s.zp_rows(n)) * w);
                Some(z.data.get(a..b).ok_or_else(|| qerr(short("weight_zero_point")))?)
            }
            None => None,
        };
        match widen {
            Some(from) => {
                let mut v = vec![0f32; sk.len() / from.size()];
                load_slice(from, sk, &mut v);
                wide.clear();
                v.iter().for_each(|x| wide.extend_from_slice(&x.to_le_bytes()));
                ct::dequantize_rows(
                    &s,
                    ScaleDtype::F32,
                    ct::CtPacked { packed: pk, scale: &wide, zp: zk },
                    r0,
                    n,
                    cols,
                    ys,
                )
                .map_err(qerr)?;
            }
            None => ct::dequantize_rows(&s, sd, ct::CtPacked { packed: pk, scale: sk, zp: zk }, r0, n, cols, ys)
                .map_err(qerr)?,
        }
        load_slice(src_dt, &src.data[r0 * cols * src_dt.size()..(r0 + n) * cols * src_dt.size()], xs);
        stats.add(xs, ys);
        r0 += n;
    }
    let type_out = format!(
        "pack-quantized int{} {}{}",
        s.bits,
        match s.strategy {
            Strategy::Channel => "channel".to_string(),
            Strategy::Group(g) => format!("g{g}"),
        },
        if s.symmetric { " sym" } else { " asym" }
    );
    Ok(comparison(m.to_string(), &src_name, type_out, true, stats))
}

fn short(what: &str) -> crate::quant::QuantError {
    crate::quant::QuantError::Shape(format!("{what} is shorter than its shape says"))
}

fn copied_tensor(ckpt: &Checkpoint, pkg: &Checkpoint, name: &str) -> Result<TensorComparison, CompareError> {
    let src = ckpt.tensor(name).ok_or_else(|| CompareError::Input(format!("no source tensor `{name}`")))?;
    let out = part(pkg, name)?;
    if out.shape != src.shape {
        return Err(CompareError::Input(format!(
            "package tensor `{name}` has shape {:?} but the source has {:?}",
            out.shape, src.shape
        )));
    }
    let mut stats = ErrorStats::new();
    if let (Some(sd), Some(od)) = (src.dtype.as_src(), out.dtype.as_src()) {
        let n = src.numel();
        let mut x = vec![0f32; n.min(CHUNK_ELEMS)];
        let mut y = vec![0f32; x.len()];
        let mut i = 0;
        while i < n {
            let k = CHUNK_ELEMS.min(n - i);
            load_slice(sd, &src.data[i * sd.size()..(i + k) * sd.size()], &mut x[..k]);
            load_slice(od, &out.data[i * od.size()..(i + k) * od.size()], &mut y[..k]);
            stats.add(&x[..k], &y[..k]);
            i += k;
        }
    } else if out.data != src.data {
        // Integer tensors (e.g. position ids) can only be equal or not.
        stats.sum_sq_err = f64::NAN;
    }
    Ok(comparison(name.to_string(), name, out.dtype.name().to_string(), false, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_strips_the_layer_number() {
        assert_eq!(kind_of("model.layers.3.mlp.down_proj.weight"), "mlp.down_proj.weight");
        assert_eq!(kind_of("blk.12.attn_q.weight"), "attn_q.weight");
        assert_eq!(kind_of("encoder.layer.0.attention.self.query.weight"), "attention.self.query.weight");
        assert_eq!(kind_of("lm_head.weight"), "lm_head.weight");
        assert_eq!(kind_of("model.layers.7"), "model.layers.7");
    }

    fn fake(name: &str, sqnr: f64) -> TensorComparison {
        // Σx² = 10^(sqnr/10) with Σe² = 1 gives exactly that SQNR.
        let stats = ErrorStats {
            sum_sq_ref: 10f64.powf(sqnr / 10.0),
            sum_sq_err: 1.0,
            sum_sq_deq: 1.0,
            dot: 0.5,
            max_abs_err: 0.1,
            count: 4,
        };
        comparison(name.into(), name, "Q4_0".into(), true, stats)
    }

    #[test]
    fn siblings_share_the_stored_type() {
        let mut ts = vec![
            fake("model.layers.0.self_attn.v_proj.weight", 34.0),
            fake("model.layers.1.self_attn.v_proj.weight", 22.0),
            fake("model.layers.2.self_attn.v_proj.weight", 34.5),
            fake("model.layers.3.self_attn.v_proj.weight", 22.5),
        ];
        ts[0].type_out = "Q6_K".into();
        ts[2].type_out = "Q6_K".into();
        let r = finish(Path::new("a"), Path::new("b"), "cpu", &CompareOptions::default(), ts.clone(), vec![]);
        assert!(r.flagged.is_empty(), "{:?}", r.flagged);
        assert_eq!(r.kinds.len(), 2);
        // The same SQNRs as one type: the two low layers are > 3 dB below the median (28.25).
        ts.iter_mut().for_each(|t| t.type_out = "Q4_K".into());
        let r = finish(Path::new("a"), Path::new("b"), "cpu", &CompareOptions::default(), ts, vec![]);
        assert_eq!(r.flagged.len(), 2);
    }

    #[test]
    fn flags_only_tensors_far_below_their_kind() {
        let ts = vec![
            fake("model.layers.0.mlp.down_proj.weight", 20.0),
            fake("model.layers.1.mlp.down_proj.weight", 21.0),
            fake("model.layers.2.mlp.down_proj.weight", 16.9),
            fake("model.layers.0.mlp.up_proj.weight", 10.0),
            fake("model.layers.1.mlp.up_proj.weight", 11.0),
            // A lone kind is held against the median of all six (13.95 dB).
            fake("lm_head.weight", 5.0),
        ];
        let r = finish(Path::new("a"), Path::new("b"), "cpu", &CompareOptions::default(), ts, vec![]);
        assert_eq!(r.flagged, vec!["model.layers.2.mlp.down_proj.weight".to_string(), "lm_head.weight".to_string()]);
        assert_eq!(r.kinds.len(), 3);
        assert_eq!(r.kinds[1].kind, "mlp.down_proj.weight");
        assert_eq!(r.kinds[1].type_out, "Q4_0");
        assert_eq!(r.kinds[1].median_sqnr_db, Some(20.0));
        // up_proj at 10 dB is far below down_proj's median but not below its own kind's.
        assert!(!r.tensors[3].flagged);
    }
}
