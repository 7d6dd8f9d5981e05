//! The cpu target: plan and tasks that turn a checkpoint of a registered architecture
//! ([`crate::format::gguf::arch`]) into one GGUF file.
//!
//! The plan decides every tensor's GGUF name, type and byte offset before any data is written;
//! the tasks then quantize block-aligned row chunks straight from the mmap'd
//! source into their final offsets. A stacked MoE tensor (`ffn_*_exps`) is planned as
//! the row runs of its experts' HF tensors: a task never crosses a run, so each expert's rows are
//! quantized straight into their slab of the output and no expert is ever gathered in memory.

use crate::checkpoint::fp8::Fp8Map;
use crate::checkpoint::packed::PackedMap;
use crate::checkpoint::{Checkpoint, TensorView};
use crate::exec::{OutFileSpec, Piece, TaskOutput};
use crate::format::gguf::arch::{self, q4km, Model, QkPermutation, Segment, SourceTensor, Transform};
use crate::format::gguf::{self, GgufTensorInfo, MetaValue};
use crate::plan::{Method, PlanError, QuantizeOptions, Scheme};
use crate::quant::fp8::Fp8Format;
use crate::quant::gguf::GgmlType;
use crate::quant::metrics::ErrorStats;
use crate::quant::SrcDtype;
use crate::sign::manifest::TensorRecord;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a GGUF tensor's values come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Rows of checkpoint tensors, concatenated in order (one run for a plain tensor, one per
    /// expert for a stacked one); a single run's rows may be gathered through the q/k
    /// permutation.
    Rows {
        /// The runs of HF rows.
        segments: Vec<Segment>,
        /// q/k permutation (llama arch only).
        perm: Option<QkPermutation>,
        /// Each run is a `[rows, cols]` block written transposed (MLA's `attn_k_b`): it gives
        /// `cols` output rows of `rows` values.
        transposed: bool,
    },
    /// Values computed from config.json (llama-3 `rope_freqs.weight`), stored as f32.
    Values(Vec<f32>),
}

/// One tensor of the output GGUF.
#[derive(Debug, Clone)]
pub struct CpuTensor {
    /// GGUF name.
    pub name: String,
    /// Where the values come from.
    pub source: Source,
    /// Element type the quantizers read (F32 for FP8 sources, decoded rows at a time).
    pub src_dtype: SrcDtype,
    /// The FP8 encoding when the source rows are FP8 weights with scales (decoded to f32 in the
    /// load step; the scale tensors are consumed, never written).
    pub fp8: Option<Fp8Format>,
    /// The source rows are a compressed-tensors pack-quantized weight (int4/int8 codes with
    /// scales), decoded in the load step like FP8; `Some(lossless)` where a Q4_0 output takes
    /// the int4 codes and scales as they are (only blocks whose scale is not an f16 value are
    /// requantized).
    pub packed: Option<bool>,
    /// HF shape (`[rows, cols]` or `[n]`).
    pub shape: Vec<usize>,
    /// Output type.
    pub ty: GgmlType,
    /// Why this type was chosen (shown in the report).
    pub reason: String,
    /// A MoE router (`ffn_gate_inp`): always F32.
    pub router: bool,
    /// Always F32, with the reason (Mamba's conv1d, `ssm_a`, `ssm_d`, grouped `ssm_norm`).
    pub keep_f32: Option<&'static str>,
    /// A function applied to every source value before quantization (Mamba's `A_log` →
    /// `−exp(A_log)`).
    pub transform: Option<Transform>,
    /// Per-column importance weights from `--imatrix` (`row_len` values), when the matrix has an
    /// entry for this tensor and its type uses one ([`crate::quant::imatrix::uses_weights`]).
    pub weights: Option<std::sync::Arc<Vec<f32>>>,
}

impl CpuTensor {
    fn row_len(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
    fn rows(&self) -> usize {
        self.shape.iter().rev().skip(1).product()
    }
    /// Bytes per source element as stored in the checkpoint.
    fn in_size(&self) -> usize {
        if self.fp8.is_some() {
            1
        } else {
            self.src_dtype.size()
        }
    }
    fn ne(&self) -> Vec<u64> {
        self.shape.iter().rev().map(|&d| d as u64).collect()
    }
    /// Output rows each source run gives.
    fn run_rows(&self) -> Vec<usize> {
        match &self.source {
            Source::Rows { segments, transposed: true, .. } => {
                vec![self.shape[self.shape.len() - 2]; segments.len()]
            }
            Source::Rows { segments, .. } => segments.iter().map(|s| s.rows).collect(),
            Source::Values(_) => vec![self.rows()],
        }
    }
}

/// One GGUF file of a cpu package: the plain `model.gguf`, or one part of llama.cpp's split set.
pub struct GgufPart {
    /// File name inside the package.
    pub name: String,
    /// Which tensors (consecutive, in file order) the file holds.
    pub tensors: std::ops::Range<usize>,
    /// Its layout; `tensor_offsets[k]` belongs to tensor `tensors.start + k`.
    pub layout: gguf::GgufLayout,
}

/// The whole GGUF output, known before any data is written.
pub struct CpuPlan {
    /// Tensors in file order.
    pub tensors: Vec<CpuTensor>,
    /// The output files: one, or the parts of a split set (`--max-shard-size`).
    pub parts: Vec<GgufPart>,
    /// For each tensor, its part and absolute offset in that part's file.
    placement: Vec<(usize, u64)>,
    /// Data bytes of each tensor (unpadded).
    sizes: Vec<u64>,
    /// `general.architecture`.
    pub arch: String,
    /// Number of metadata keys written.
    pub metadata_keys: usize,
    /// How block scales and codes are chosen.
    pub method: Method,
    /// Checkpoint tensors left out on purpose, with the reason (DeepSeek's MTP layers).
    pub dropped: Vec<(String, String)>,
    /// The checkpoint's FP8 weights (empty for bf16/f16/f32 checkpoints).
    pub fp8: Fp8Map,
    /// The checkpoint's pack-quantized int4/int8 weights (empty for others).
    pub packed: PackedMap,
    /// Per tensor: Q4_0 blocks copied from int4 codes (lossless), and blocks requantized because
    /// their scale is not an f16 value (filled while the tasks run, read by [`CpuPlan::records`]).
    repacked: Vec<(AtomicU64, AtomicU64)>,
}

/// The file name of the GGUF inside a cpu package.
pub const GGUF_NAME: &str = "model.gguf";
/// The prefix of a split set's file names: `model-00001-of-00003.gguf`, ...
pub const SPLIT_PREFIX: &str = "model";

/// The GGUF files of a cpu package directory in load order: `model.gguf`, or the parts of a split
/// set (`model-00001-of-0000N.gguf`, all N present). Empty when the directory has neither; an
/// incomplete split set is an error naming the missing part.
pub fn gguf_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let single = dir.join(GGUF_NAME);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut count = None;
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix(&format!("{SPLIT_PREFIX}-00001-of-"))
            .and_then(|r| r.strip_suffix(".gguf"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            count = Some(n);
        }
    }
    let Some(count) = count else { return Ok(Vec::new()) };
    (0..count)
        .map(|no| {
            let p = dir.join(gguf::split::split_file_name(SPLIT_PREFIX, no, count));
            if p.is_file() {
                Ok(p)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{}: part of a split GGUF is missing", p.display()),
                ))
            }
        })
        .collect()
}

/// Plan the output files: a single `model.gguf` unless the tensor data exceeds `max_shard`
/// (then llama.cpp's split set, cut as `llama-gguf-split --split --split-max-size` cuts it; the
/// limit counts padded tensor data, not headers). A limit smaller than the first file's header
/// is refused: such a value is a unit typo, and llama.cpp's loader would get thousands of files.
fn plan_parts(
    metadata: &[(String, MetaValue)],
    infos: &[GgufTensorInfo],
    max_shard: u64,
) -> Result<Vec<GgufPart>, PlanError> {
    let single = gguf::layout(metadata, infos, 32)?;
    let data = single.file_size - single.header.len() as u64;
    if max_shard == u64::MAX || data <= max_shard {
        // gguf-split would still write `-00001-of-00001`; a plain file is what every tool expects.
        if max_shard < single.header.len() as u64 {
            return Err(too_small(max_shard, single.header.len()));
        }
        return Ok(vec![GgufPart { name: GGUF_NAME.into(), tensors: 0..infos.len(), layout: single }]);
    }
    let parts = gguf::split::split_layout(metadata, infos, 32, max_shard)?;
    if max_shard < parts[0].layout.header.len() as u64 {
        return Err(too_small(max_shard, parts[0].layout.header.len()));
    }
    let n = parts.len();
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(no, p)| GgufPart {
            name: gguf::split::split_file_name(SPLIT_PREFIX, no, n),
            tensors: p.tensors,
            layout: p.layout,
        })
        .collect())
}

fn too_small(max: u64, header: usize) -> PlanError {
    PlanError::Input(format!(
        "--max-shard-size {max} bytes cannot hold the GGUF header and metadata ({header} bytes); give at least that \
         (e.g. 2GB)"
    ))
}

/// Decide the GGUF tensors, types and metadata for `ckpt`.
pub fn plan(ckpt: &Checkpoint, opts: &QuantizeOptions) -> Result<CpuPlan, PlanError> {
    opts.validate()?;
    let config = &ckpt
        .config()
        .ok_or_else(|| {
            PlanError::Input(
                "the checkpoint has no config.json: the cpu target needs the model's hyperparameters".into(),
            )
        })?
        .raw;
    let model = Model::from_config(config)?;
    let mut metadata = model.metadata()?;
    let arch = model.arch;

    let base = base_type(opts)?;
    // FP8 weights, their scales checked against their blocks, before anything is planned.
    let fp8 = Fp8Map::of(ckpt).map_err(|e| PlanError::Input(e.to_string()))?;
    // pack-quantized int4/int8 Linears, checked the same way; each appears as its virtual dense
    // `P.weight` of `weight_shape`.
    let packed = PackedMap::of(ckpt).map_err(|e| PlanError::Input(e.to_string()))?;
    let vshapes: Vec<(&str, Vec<usize>)> = packed.virtual_weights().map(|(n, s)| (n, s.to_vec())).collect();
    let mut src: Vec<SourceTensor<'_>> = ckpt
        .tensors()
        .filter(|t| !fp8.is_consumed(t.name) && !packed.is_consumed(t.name))
        .map(|t| SourceTensor { name: t.name, shape: t.shape })
        .collect();
    src.extend(vshapes.iter().map(|(n, s)| SourceTensor { name: n, shape: s }));
    src.sort_by(|a, b| a.name.cmp(b.name));
    let planned = arch::plan_tensors(&model, &src).map_err(|e| PlanError::Input(e.to_string()))?;
    if planned.is_empty() {
        return Err(PlanError::Input("the checkpoint has no tensors to convert".into()));
    }
    let dropped =
        arch::dropped_tensors(&model, &src).into_iter().map(|(n, why)| (n.to_owned(), why.to_owned())).collect();
    let mut tensors = Vec::with_capacity(planned.len() + 1);
    for p in planned {
        let (src_dtype, fp8, is_packed) = segments_dtype(ckpt, &fp8, &packed, &p.name, &p.segments)?;
        if p.transform.is_some()
            && (fp8.is_some() || is_packed || p.segments.len() != 1 || p.perm.is_some() || p.transposed)
        {
            return Err(PlanError::Input(format!(
                "tensor `{}`: {} must be one plain F32/F16/BF16 tensor to be transformed",
                p.segments[0].hf, p.name
            )));
        }
        tensors.push(CpuTensor {
            name: p.name,
            source: Source::Rows { segments: p.segments, perm: p.perm, transposed: p.transposed },
            src_dtype,
            fp8,
            packed: is_packed.then_some(false),
            shape: p.shape,
            ty: GgmlType::F32,
            reason: String::new(),
            weights: None,
            router: p.router,
            keep_f32: p.keep_f32,
            transform: p.transform,
        });
    }
    for (name, vals) in model.family.computed_tensors(&model)? {
        tensors.push(CpuTensor {
            name,
            shape: vec![vals.len()],
            source: Source::Values(vals),
            src_dtype: SrcDtype::F32,
            fp8: None,
            packed: None,
            ty: GgmlType::F32,
            reason: "llama-3 rope scaling factors".into(),
            weights: None,
            router: false,
            keep_f32: None,
            transform: None,
        });
    }
    // llama-quantize's order: non-block tensors first, then by block number, then by name.
    tensors.sort_by(|a, b| (block_of(&a.name), &a.name).cmp(&(block_of(&b.name), &b.name)));

    // The Q4_K_M mix counts tensors in file order, so it is decided on the sorted list.
    let mix = match opts.gguf_mix {
        Some(GgufMix::Q4KM) => {
            let info: Vec<q4km::MixTensor<'_>> = tensors
                .iter()
                .map(|t| q4km::MixTensor { name: &t.name, n_dims: t.shape.len(), ne0: t.row_len() })
                .collect();
            let m = q4km::MixModel {
                n_expert: model.moe.as_ref().map_or(0, |m| m.experts),
                n_layer_all: model.block_count(),
                is_70b: model.family.is_70b(&model),
            };
            q4km::q4_k_m(m, &info)?
        }
        _ => vec![None; tensors.len()],
    };
    // `--bpw`: the 2-D weights no rule pins, whose types the budget chooses below.
    let mut free = Vec::new();
    let has_output = tensors.iter().any(|t| t.name == "output.weight");
    for (i, (t, mix)) in tensors.iter_mut().zip(mix).enumerate() {
        if matches!(t.source, Source::Values(_)) {
            continue;
        }
        let hf = match &t.source {
            Source::Rows { segments, .. } => segments.first().map_or(String::new(), |s| s.hf.clone()),
            Source::Values(_) => String::new(),
        };
        let is_output = t.name == "output.weight" || (!has_output && t.name == "token_embd.weight");
        let (ty, reason) = choose_type(opts, &hf, t, is_output, base, mix)?;
        let pinned = t.router
            || t.keep_f32.is_some()
            || opts.tensor_types.iter().any(|(re, _)| re.is_match(&t.name) || re.is_match(&hf))
            || opts.keep.iter().any(|re| re.is_match(&t.name) || re.is_match(&hf));
        if matches!(opts.gguf_mix, Some(GgufMix::Budget { .. }))
            && !pinned
            && t.shape.len() == 2
            && crate::bpw::stored_type(GgmlType::Q4_0, t.row_len()).is_some()
        {
            free.push(i);
        }
        if t.shape.len() > 2
            && opts.imatrix.is_some()
            && ty.can_quantize()
            && !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
        {
            return Err(PlanError::Input(format!(
                "tensor `{}`: --imatrix is not supported for stacked expert tensors yet (llama.cpp keeps one matrix per expert)",
                t.name
            )));
        }
        let (weights, reason) = crate::imatrix::plan_weights(opts, &t.name, ty, &t.shape, reason)?;
        t.ty = ty;
        t.reason = reason;
        t.weights = weights;
    }
    if !packed.is_empty() {
        for t in tensors.iter_mut() {
            plan_packed(&packed, t);
        }
    }

    let mut ftype = file_type(base, opts.gguf_mix);
    if let Some(bpw) = opts.gguf_mix.and_then(GgufMix::bpw) {
        budget_mix(ckpt, &fp8, &packed, opts, bpw, &mut tensors, &free)?;
        for t in tensors.iter_mut() {
            plan_packed(&packed, t);
        }
        // No llama_ftype names a free mixture: the type holding the most bytes names the file.
        let mut by_type: Vec<(GgmlType, u64)> = Vec::new();
        for t in &tensors {
            let b = tensor_bytes(t);
            match by_type.iter_mut().find(|(ty, _)| *ty == t.ty) {
                Some(e) => e.1 += b,
                None => by_type.push((t.ty, b)),
            }
        }
        let top = by_type.iter().filter(|(t, _)| !matches!(t, GgmlType::F32)).max_by_key(|(_, b)| *b);
        ftype = file_type(top.map_or(GgmlType::F32, |e| e.0), None);
    }

    if let Some(m) = &opts.imatrix {
        metadata.extend(m.gguf_metadata());
    }
    metadata.push(("general.quantization_version".into(), MetaValue::U32(2)));
    metadata.push(("general.file_type".into(), MetaValue::U32(ftype)));
    metadata.extend(tokenizer_metadata(ckpt, config, &model)?);

    let infos: Vec<GgufTensorInfo> =
        tensors.iter().map(|t| GgufTensorInfo { name: t.name.clone(), ne: t.ne(), ggml_type: t.ty.id() }).collect();
    let parts = plan_parts(&metadata, &infos, opts.max_shard_size)?;
    let mut placement = Vec::with_capacity(tensors.len());
    let mut sizes = Vec::with_capacity(tensors.len());
    for (pi, p) in parts.iter().enumerate() {
        placement.extend(p.layout.tensor_offsets.iter().map(|&o| (pi, o)));
        sizes.extend_from_slice(&p.layout.tensor_sizes);
    }
    Ok(CpuPlan {
        parts,
        placement,
        sizes,
        arch: arch.to_string(),
        metadata_keys: metadata.len(),
        method: opts.method,
        dropped,
        fp8,
        repacked: (0..tensors.len()).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect(),
        tensors,
        packed,
    })
}

/// Bytes of a planned tensor in its chosen type.
fn tensor_bytes(t: &CpuTensor) -> u64 {
    (t.ty.row_bytes(t.row_len()).unwrap_or(0) * t.rows()) as u64
}

/// `--bpw`: sample the free tensors' rows, let [`crate::bpw::apply`] choose their types, then
/// attach their importance weights for the chosen types.
fn budget_mix(
    ckpt: &Checkpoint,
    fp8: &Fp8Map,
    packed: &PackedMap,
    opts: &QuantizeOptions,
    bpw: f64,
    tensors: &mut [CpuTensor],
    free: &[usize],
) -> Result<(), PlanError> {
    let total_elems: u64 = tensors.iter().map(|t| (t.rows() * t.row_len()) as u64).sum();
    let fixed_bytes: u64 =
        tensors.iter().enumerate().filter(|(i, _)| !free.contains(i)).map(|(_, t)| tensor_bytes(t)).sum();
    let mut samples = Vec::with_capacity(free.len());
    for &i in free {
        let t = &tensors[i];
        let (rows, row_len) = (t.rows(), t.row_len());
        let Source::Rows { segments, .. } = &t.source else { unreachable!("free tensors have rows") };
        let step = (rows * row_len).div_ceil(crate::bpw::SAMPLE_ELEMS).max(1);
        let size = t.src_dtype.size();
        let mut rows_data = Vec::new();
        for r in (0..rows).step_by(step) {
            let (mut before, mut found) = (0, None);
            for s in segments {
                if r < before + s.rows {
                    found = Some((s, r - before));
                    break;
                }
                before += s.rows;
            }
            let (s, local) =
                found.ok_or_else(|| PlanError::Input(format!("tensor `{}`: row {r} out of range", t.name)))?;
            if t.packed.is_some() {
                let mut dec = vec![0.0f32; row_len];
                packed
                    .dequantize_rows(ckpt, &s.hf, s.row0 + local, &mut dec)
                    .map_err(|e| PlanError::Input(format!("tensor `{}`: {e}", s.hf)))?;
                rows_data.push(std::borrow::Cow::Owned(crate::quant::fp8::f32_bytes(&dec).to_vec()));
                continue;
            }
            let view = ckpt
                .tensor(&s.hf)
                .ok_or_else(|| PlanError::Input(format!("tensor `{}` is missing from the checkpoint", s.hf)))?;
            if t.fp8.is_some() {
                let mut dec = vec![0.0f32; row_len];
                fp8.dequantize_rows(ckpt, &view, s.row0 + local, &mut dec)
                    .map_err(|e| PlanError::Input(format!("tensor `{}`: {e}", s.hf)))?;
                rows_data.push(std::borrow::Cow::Owned(crate::quant::fp8::f32_bytes(&dec).to_vec()));
                continue;
            }
            let off = (s.row0 + local) * row_len * size;
            rows_data.push(std::borrow::Cow::Borrowed(&view.data[off..off + row_len * size]));
        }
        let weights = match &opts.imatrix {
            Some(m) => m.weights_for(&t.name, row_len).map_err(PlanError::Input)?,
            None => None,
        };
        samples.push(crate::bpw::Sample { src: t.src_dtype, row_len, rows, rows_data, weights });
    }
    crate::bpw::apply(bpw, tensors, free, samples, fixed_bytes, total_elems)?;
    for &i in free {
        let t = &mut tensors[i];
        let (weights, reason) =
            crate::imatrix::plan_weights(opts, &t.name, t.ty, &t.shape, std::mem::take(&mut t.reason))?;
        t.weights = weights;
        t.reason = reason;
    }
    Ok(())
}

/// The source dtype of a planned tensor: every run must come from tensors of one convertible
/// dtype (experts of one layer in different dtypes are refused). FP8 weights read as F32 (they
/// are decoded to f32 rows before the quantizers see them), with their encoding.
fn segments_dtype(
    ckpt: &Checkpoint,
    fp8: &Fp8Map,
    packed: &PackedMap,
    name: &str,
    segments: &[Segment],
) -> Result<(SrcDtype, Option<Fp8Format>, bool), PlanError> {
    let mut dtype = None;
    let mut n_packed = 0;
    for s in segments {
        if packed.get(&s.hf).is_some() {
            n_packed += 1;
            match dtype {
                Some(prev) if prev != (SrcDtype::F32, None) => {
                    return Err(PlanError::Input(format!(
                        "tensor `{}` is pack-quantized but the other parts of `{name}` are {prev:?}",
                        s.hf
                    )))
                }
                _ => dtype = Some((SrcDtype::F32, None)),
            }
            continue;
        }
        let t = ckpt
            .tensor(&s.hf)
            .ok_or_else(|| PlanError::Input(format!("tensor `{}` disappeared from the checkpoint", s.hf)))?;
        let d = match fp8.get(&s.hf) {
            Some(f) => (SrcDtype::F32, Some(f.format)),
            None => (
                t.dtype.as_src().ok_or_else(|| {
                    PlanError::Input(format!(
                        "tensor `{}` has dtype {} (only F32, F16, BF16 and FP8 with scales can be converted)",
                        s.hf,
                        t.dtype.name()
                    ))
                })?,
                None,
            ),
        };
        match dtype {
            Some(prev) if prev != d => {
                return Err(PlanError::Input(format!(
                    "tensor `{}` is {d:?} but the other parts of `{name}` are {prev:?}",
                    s.hf
                )))
            }
            _ => dtype = Some(d),
        }
    }
    if n_packed != 0 && n_packed != segments.len() {
        return Err(PlanError::Input(format!(
            "`{name}`: {n_packed} of its {} source tensors are pack-quantized and the others are not",
            segments.len()
        )));
    }
    let (d, f) = dtype.ok_or_else(|| PlanError::Input(format!("`{name}` has no source rows")))?;
    Ok((d, f, n_packed != 0))
}

/// Decide whether a pack-quantized tensor's Q4_0 output can take the int4 codes and scales as
/// they are: int4 symmetric, groups (or rows) of whole Q4_0 blocks, rows not transposed, no
/// importance weights (which only matter when requantizing). Otherwise it is decoded and
/// requantized like any source, and the note says so.
fn plan_packed(packed: &PackedMap, t: &mut CpuTensor) {
    let Some(_) = t.packed else { return };
    let Source::Rows { segments, transposed, .. } = &t.source else { return };
    let ws: Vec<_> = segments.iter().filter_map(|s| packed.get(&s.hf)).collect();
    let Some(w) = ws.first() else { return };
    let l = w.layout;
    let grid = l.bits == 4 && l.symmetric && l.cols.is_multiple_of(32) && l.group.is_multiple_of(32);
    let what = w.describe();
    let lossless = t.ty == GgmlType::Q4_0 && grid && !*transposed && t.weights.is_none();
    t.packed = Some(lossless);
    t.reason = if lossless {
        format!("{}; Q4_0 from the source's {what} codes and scales as they are (lossless)", t.reason)
    } else {
        let why = match () {
            _ if t.ty != GgmlType::Q4_0 => format!("type {}", t.ty),
            _ if !grid => "not Q4_0's grid".to_string(),
            _ if *transposed => "transposed rows".to_string(),
            _ => "importance weights".to_string(),
        };
        format!("{}; dequantized from pack-quantized {what} and requantized ({why})", t.reason)
    };
}

/// Rows decoded per FP8 sub-chunk: about 64 KiB of f32, so the decoded rows are still in cache
/// when the quantizer reads them (at least one row).
const FP8_SUB_ELEMS: usize = 16 << 10;

/// The tokenizer metadata, with llama.cpp's converter precedence for the llama family
/// (`LlamaModel.set_vocab`, `Qwen2Model.set_vocab`): a SentencePiece `tokenizer.model` wins when
/// present (`tokenizer.ggml.model = llama`, with scores), else `tokenizer.json` must be a
/// byte-level BPE (`gpt2`). Neither present is an input error before anything is written.
fn tokenizer_metadata(
    ckpt: &Checkpoint,
    config: &serde_json::Value,
    model: &Model,
) -> Result<Vec<(String, MetaValue)>, PlanError> {
    let read = |name: &str| -> Result<Option<Vec<u8>>, PlanError> {
        let p = ckpt.root().join(name);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PlanError::Input(format!("{}: {e}", p.display()))),
        }
    };
    let read_json = |name: &str| -> Result<Option<serde_json::Value>, PlanError> {
        let p = ckpt.root().join(name);
        if !p.exists() {
            return Ok(None);
        }
        // Untrusted side files: size capped while reading, nesting checked before parsing.
        let b = crate::checkpoint::limits::read_json_bytes(&p, ckpt.limits()).map_err(|e| {
            PlanError::Input(match e.exceeded_cap() {
                Some(cap) => {
                    format!("{e}; if this checkpoint is legitimate, raise the cap with --{}", cap.replace('_', "-"))
                }
                None => e.to_string(),
            })
        })?;
        serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| PlanError::Input(format!("{}: invalid JSON: {e}", p.display())))
    };
    let tok_cfg = read_json("tokenizer_config.json")?;
    let template = std::fs::read_to_string(ckpt.root().join("chat_template.jinja")).ok().map(serde_json::Value::String);
    if let Some(model) = read("tokenizer.model")? {
        // tokenizer.json only serves to look up special-token strings here; one that does not
        // parse is ignored, as the converter's SpecialVocab does.
        let tok = read_json("tokenizer.json").ok().flatten();
        let added = read_json("added_tokens.json")?;
        return Ok(gguf::tokenizer::sentencepiece_metadata_with_template(
            &model,
            added.as_ref(),
            tok.as_ref(),
            tok_cfg.as_ref(),
            config,
            template.as_ref(),
        )?);
    }
    if !ckpt.root().join("tokenizer.json").exists() {
        if let Some(tt) = read("tiktoken.model")? {
            // DeepseekV2Model.set_vocab: no tokenizer.json, so the tiktoken vocabulary (Kimi K2).
            let pre = model.family.tokenizer_pre_for(&model.cfg);
            if pre != Some("kimi-k2") {
                return Err(PlanError::Input(format!(
                    "{}: tiktoken.model without tokenizer.json is only understood for Kimi K2 (config.json \
                     model_type `kimi_k2`), as in llama.cpp's converter",
                    ckpt.root().display()
                )));
            }
            return Ok(gguf::tiktoken::tiktoken_metadata(&tt, tok_cfg.as_ref(), config, template.as_ref(), "kimi-k2")?);
        }
    }
    let tok = read_json("tokenizer.json")?.ok_or_else(|| {
        PlanError::Input(format!(
            "{}: tokenizer.json is missing (and there is no SentencePiece tokenizer.model); llama.cpp needs the \
             vocabulary inside the GGUF",
            ckpt.root().display()
        ))
    })?;
    let mut md = gguf::tokenizer::tokenizer_metadata_with_template(&tok, tok_cfg.as_ref(), config, template.as_ref())?;
    gguf::tokenizer::apply_family(
        &mut md,
        &tok,
        model.family.tokenizer_pre_for(&model.cfg),
        model.family.special_tokens(),
    )?;
    Ok(md)
}

/// The type for ordinary 2-D weights.
fn base_type(opts: &QuantizeOptions) -> Result<GgmlType, PlanError> {
    Ok(match (opts.scheme, opts.gguf_type) {
        _ if opts.gguf_mix == Some(GgufMix::Q4KM) => GgmlType::Q4_K,
        (_, Some(t)) => t,
        (Scheme::Int8, None) => GgmlType::Q8_0,
        (Scheme::Int4, None) => GgmlType::Q4_0,
    })
}

/// `general.file_type` (llama_ftype) for the base type: `MOSTLY_Q4_K_M` (15) for the mix, and
/// for uniform K-quants the ftype whose name is that type (`MOSTLY_Q4_K_S` 14, `MOSTLY_Q6_K` 18).
fn file_type(base: GgmlType, mix: Option<GgufMix>) -> u32 {
    if mix == Some(GgufMix::Q4KM) {
        return 15;
    }
    match base {
        GgmlType::Q4_K => 14,
        GgmlType::Q6_K => 18,
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::BF16 => 32,
        _ => 15,
    }
}

fn keep_type(src: SrcDtype) -> GgmlType {
    match src {
        SrcDtype::F32 => GgmlType::F32,
        SrcDtype::F16 => GgmlType::F16,
        SrcDtype::BF16 => GgmlType::BF16,
    }
}

/// The plan's precedence, first match wins:
/// 1. `--tensor-type REGEX=TYPE` (matched against the GGUF and the HF name);
/// 2. `--keep REGEX`: the source precision;
/// 3. 1-D tensors (norms, biases): F32, as llama.cpp stores them;
/// 4. the output projection (or the tied embedding that serves as it): Q6_K when the base type is
///    a K-quant (as llama-quantize; Q8_0 if its rows are not whole 256-blocks), else Q8_0 (kept at
///    8 bits beside the legacy 32-blocks); a float base type (`--gguf-type f16|bf16|f32`) keeps it
///    in that type, as `convert_hf_to_gguf.py --outtype` and llama-quantize do (a float file is
///    the unquantized reference, so every 2-D weight is in the float type);
/// 5. `--gguf-type q4_k_m`: llama-quantize's `Q4_K_M` rule, `attn_v` and `ffn_down` in Q6_K for
///    the layers where `use_more_bits(i, n)` holds (`i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2`);
/// 6. the scheme's type.
///
/// Afterwards a row length that does not divide by the type's block size falls back (recorded in
/// the reason) as llama-quantize's `tensor_type_fallback` does: Q4_K → Q5_0 and Q6_K → Q8_0, then
/// any type → F16 when even 32-blocks do not fit.
fn choose_type(
    opts: &QuantizeOptions,
    hf: &str,
    t: &CpuTensor,
    is_output: bool,
    base: GgmlType,
    mix: Option<(u32, String)>,
) -> Result<(GgmlType, String), PlanError> {
    let (name, shape, src) = (t.name.as_str(), t.shape.as_slice(), t.src_dtype);
    let kquant = matches!(base, GgmlType::Q4_K | GgmlType::Q6_K);
    // The mix's plain Q4_K is the scheme's type; only its bumps are worth a reason.
    let mix = mix.filter(|(id, _)| *id != GgmlType::Q4_K.id());
    let (ty, mut reason) = if t.router {
        (GgmlType::F32, "MoE router kept in F32 (llama.cpp never quantizes it)".to_string())
    } else if let Some(why) = t.keep_f32 {
        (GgmlType::F32, why.to_string())
    } else if let Some((re, t)) = opts.tensor_types.iter().find(|(re, _)| re.is_match(name) || re.is_match(hf)) {
        (*t, format!("--tensor-type {}", re.as_str()))
    } else if let Some(re) = opts.keep.iter().find(|re| re.is_match(name) || re.is_match(hf)) {
        (keep_type(src), format!("--keep {}", re.as_str()))
    } else if shape.len() == 1 {
        (GgmlType::F32, "1-D tensor kept in F32".to_string())
    } else if is_output && kquant {
        (GgmlType::Q6_K, "output projection in Q6_K (llama-quantize)".to_string())
    } else if is_output && !matches!(base, GgmlType::Q8_0 | GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        (GgmlType::Q8_0, "output projection kept at 8 bits".to_string())
    } else if let Some((id, rule)) = mix {
        let ty = GgmlType::from_id(id).ok_or_else(|| {
            let ty = gguf::ggml_type_info(id).map_or("?", |i| i.name);
            PlanError::Input(format!(
                "tensor `{name}`: {rule} needs type {ty}, which cannot be written yet (choose another with \
                 --tensor-type)"
            ))
        })?;
        (ty, rule)
    } else {
        (base, "scheme".to_string())
    };
    if !ty.can_quantize() {
        return Err(PlanError::Input(format!("tensor `{name}`: type {ty} cannot be written yet")));
    }
    let row = *shape.last().unwrap_or(&1);
    if matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K) && ty.row_bytes(row).is_none() {
        // llama-quantize's tensor_type_fallback (src/llama-quant.cpp).
        let fb = if ty == GgmlType::Q4_K { GgmlType::Q5_0 } else { GgmlType::Q8_0 };
        reason =
            format!("row length {row} is not a multiple of {ty}'s block of 256: fell back to {fb} (llama-quantize)");
        if fb.row_bytes(row).is_some() {
            return Ok((fb, reason));
        }
    }
    if ty.row_bytes(row).is_none() {
        reason =
            format!("row length {row} is not a multiple of {}'s block of {}: fell back to F16", ty, ty.block_size());
        return Ok((GgmlType::F16, reason));
    }
    Ok((ty, reason))
}

/// The K-quant type mixtures of llama-quantize this plan knows.
use crate::plan::GgufMix;

fn block_of(name: &str) -> i64 {
    name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<i64>().ok()).unwrap_or(-1)
}

/// The method a tensor of type `ty` really gets when `method` is asked for: `mse` only where
/// [`crate::quant::mse::gguf_supported`] has a search (the K-quants keep llama.cpp's rounding, so
/// calling them `mse` would be false provenance); `mse-fast` only where
/// [`crate::quant::mse::gguf_fast_supported`] has its short search (Q4_1 gets, and says, `mse`);
/// `None` for float types, which are converted, not quantized.
pub fn method_used(method: Method, ty: GgmlType) -> Option<&'static str> {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => None,
        _ if method == Method::MseFast && crate::quant::mse::gguf_fast_supported(ty) => Some("mse-fast"),
        _ if method != Method::Rtn && crate::quant::mse::gguf_supported(ty) => Some("mse"),
        _ => Some("rtn"),
    }
}

/// A unit of parallel work: rows `[r0, r1)` of tensor `t`.
#[derive(Debug, Clone, Copy)]
pub struct Task {
    t: usize,
    /// The source run the rows come from (0 for computed values).
    seg: usize,
    /// First output row of that run.
    seg_start: usize,
    r0: usize,
    r1: usize,
}

/// Elements per task: big enough to amortise scheduling, small enough that a window of tasks
/// stays in cache-friendly, bounded memory. Fixed, so output never depends on thread count.
const TASK_ELEMS: usize = 1 << 20;

impl CpuPlan {
    /// Tensor bytes read from the checkpoint.
    pub fn input_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| matches!(t.source, Source::Rows { .. }))
            .map(|t| match (&t.source, t.packed) {
                // Packed words read (scales are a few percent more).
                (Source::Rows { segments, .. }, Some(_)) => segments
                    .iter()
                    .filter_map(|s| self.packed.get(&s.hf).map(|w| (s.rows * w.layout.words_per_row() * 4) as u64))
                    .sum(),
                _ => (t.shape.iter().product::<usize>() * t.in_size()) as u64,
            })
            .sum()
    }

    /// The files to write (one per part) and their planned regions.
    pub fn files(&self, dir: &Path) -> Vec<OutFileSpec> {
        self.parts
            .iter()
            .map(|p| {
                let mut regions = vec![(0, p.layout.header.len() as u64)];
                regions.extend(p.layout.tensor_offsets.iter().zip(&p.layout.tensor_sizes).map(|(&o, &s)| (o, s)));
                OutFileSpec { path: dir.join(&p.name), size: p.layout.file_size, regions }
            })
            .collect()
    }

    /// Block-aligned row chunks of every tensor, in file order. A chunk never crosses a source
    /// run (an expert's slab), so a task reads one contiguous range of one HF tensor.
    pub fn tasks(&self) -> Vec<Task> {
        let mut out = Vec::new();
        for (t, ten) in self.tensors.iter().enumerate() {
            let step = (TASK_ELEMS / ten.row_len().max(1)).max(1);
            let runs = ten.run_rows();
            let mut start = 0;
            for (seg, rows) in runs.into_iter().enumerate() {
                let mut r0 = start;
                let end = start + rows;
                while r0 < end {
                    let r1 = (r0 + step).min(end);
                    out.push(Task { t, seg, seg_start: start, r0, r1 });
                    r0 = r1;
                }
                start = end;
            }
            if ten.rows() == 0 {
                out.push(Task { t, seg: 0, seg_start: 0, r0: 0, r1: 0 });
            }
        }
        out
    }

    /// Output bytes of a task (for the in-flight window).
    pub fn task_cost(&self, task: &Task) -> u64 {
        let ten = &self.tensors[task.t];
        ((task.r1 - task.r0) * ten.ty.row_bytes(ten.row_len()).unwrap_or(0)) as u64
    }

    /// Run one task: returns its pieces, its error statistics and the source bytes consumed.
    pub fn run_task(
        &self,
        ckpt: &Checkpoint,
        task: &Task,
        with_stats: bool,
    ) -> anyhow::Result<TaskOutput<(usize, Option<ErrorStats>)>> {
        let ten = &self.tensors[task.t];
        if ten.fp8.is_some() || ten.packed.is_some() {
            return self.run_fp8_task(ckpt, task, with_stats);
        }
        let row_len = ten.row_len();
        let esz = ten.src_dtype.size();
        let row_src = row_len * esz;
        let row_out = ten.ty.row_bytes(row_len).expect("planned row size");
        let n = task.r1 - task.r0;
        // Every quantizer and conversion writes whole rows: no need to zero the buffer.
        let mut out = crate::exec::recycled_buffer(n * row_out);
        let gathered;
        let input: &[u8] = match &ten.source {
            Source::Values(v) => {
                gathered =
                    v[task.r0 * row_len..task.r1 * row_len].iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
                &gathered
            }
            Source::Rows { segments, transposed: true, .. } => {
                // Output row c of this run is column c of the run's source rows. Raw source
                // elements are moved, so a block-scaled source (FP8) must look its scale up at the
                // source position (seg.row0 + j, c), not the output one.
                let seg = &segments[task.seg];
                let view: TensorView<'_> = ckpt.tensor(&seg.hf).expect("planned tensor exists");
                let src_cols = ten.shape[ten.shape.len() - 2];
                let c0 = task.r0 - task.seg_start;
                let mut g = Vec::with_capacity(n * row_src);
                for c in c0..c0 + n {
                    for j in 0..seg.rows {
                        let at = ((seg.row0 + j) * src_cols + c) * esz;
                        g.extend_from_slice(&view.data[at..at + esz]);
                    }
                }
                gathered = g;
                &gathered
            }
            Source::Rows { segments, perm, .. } => {
                let seg = &segments[task.seg];
                let view: TensorView<'_> = ckpt.tensor(&seg.hf).expect("planned tensor exists");
                // Rows of this run in the HF tensor.
                let s0 = seg.row0 + (task.r0 - task.seg_start);
                let s1 = s0 + n;
                match perm {
                    None => &view.data[s0 * row_src..s1 * row_src],
                    Some(p) => {
                        let mut g = Vec::with_capacity(n * row_src);
                        for r in s0..s1 {
                            let s = p.src_row(r);
                            g.extend_from_slice(&view.data[s * row_src..(s + 1) * row_src]);
                        }
                        gathered = g;
                        &gathered
                    }
                }
            }
        };
        let mut stats = with_stats.then(ErrorStats::default);
        if let Some(f) = ten.transform {
            // The reference computes in the tensor's own precision: bf16 is widened to f32
            // first, f16 stays f16 (torch rounds the result back to f16).
            let mut vals = vec![0.0f32; n * row_len];
            crate::quant::convert::load_slice(ten.src_dtype, input, &mut vals);
            f.apply(&mut vals);
            if ten.src_dtype == SrcDtype::F16 {
                vals.iter_mut().for_each(|v| *v = crate::quant::convert::round_f16(*v));
            }
            let bytes = crate::quant::fp8::f32_bytes(&vals);
            self.quantize(ten, SrcDtype::F32, bytes, &mut out, stats.as_mut()).map_err(|e| self.task_error(task, e))?;
            return Ok((self.pieces(task, out), (task.t, stats), (n * row_src) as u64));
        }
        self.quantize(ten, ten.src_dtype, input, &mut out, stats.as_mut()).map_err(|e| self.task_error(task, e))?;
        Ok((self.pieces(task, out), (task.t, stats), (n * row_src) as u64))
    }

    /// The tensor's quantizer (imatrix-weighted, `mse` or plain) on whole rows.
    fn quantize(
        &self,
        ten: &CpuTensor,
        src: SrcDtype,
        input: &[u8],
        out: &mut [u8],
        stats: Option<&mut ErrorStats>,
    ) -> Result<(), crate::quant::QuantError> {
        let (ty, row_len) = (ten.ty, ten.row_len());
        match &ten.weights {
            Some(w) => crate::imatrix::quantize_rows(self.method, ty, src, input, row_len, w, out, stats),
            None if self.method == Method::Mse => {
                crate::quant::mse::quantize_gguf_rows(ty, src, input, row_len, out, stats)
            }
            None if self.method == Method::MseFast => {
                crate::quant::mse::quantize_gguf_rows_fast(ty, src, input, row_len, out, stats)
            }
            None => crate::quant::gguf::quantize_rows(ty, src, input, row_len, out, stats),
        }
    }

    fn task_error(&self, task: &Task, e: crate::quant::QuantError) -> anyhow::Error {
        let ten = &self.tensors[task.t];
        let from = match &ten.source {
            Source::Rows { segments, .. } => format!(" (source `{}`)", segments[task.seg].hf),
            Source::Values(_) => String::new(),
        };
        let what = match (&e, ten.fp8) {
            (crate::quant::QuantError::NonFinite { .. }, Some(_)) => {
                format!("{e} (an FP8 code times its scale is not finite: check the scale tensor)")
            }
            _ => e.to_string(),
        };
        anyhow::anyhow!("tensor `{}`{from}, rows {}..{}: {what}", ten.name, task.r0, task.r1)
    }

    /// An FP8 or pack-quantized task: a few source rows at a time are decoded (code × block
    /// scale, f32) into a small reused buffer and quantized from it, so no tensor- or task-sized
    /// f32 copy exists. The q/k permutation picks each decoded row's source row. A lossless
    /// pack-quantized Q4_0 tensor copies codes and scales instead ([`Self::repack_row`]).
    fn run_fp8_task(
        &self,
        ckpt: &Checkpoint,
        task: &Task,
        with_stats: bool,
    ) -> anyhow::Result<TaskOutput<(usize, Option<ErrorStats>)>> {
        let ten = &self.tensors[task.t];
        let Source::Rows { segments, perm, transposed } = &ten.source else {
            unreachable!("FP8 tensors have source rows")
        };
        let row_len = ten.row_len();
        let row_out = ten.ty.row_bytes(row_len).expect("planned row size");
        let n = task.r1 - task.r0;
        let mut out = crate::exec::recycled_buffer(n * row_out);
        let seg = &segments[task.seg];
        let what = if ten.packed.is_some() { "a non-finite packed scale" } else { "a NaN/Inf FP8 code" };
        let fp8_err = |e: crate::quant::QuantError, src_row: usize, src_len: usize| {
            let e = match e {
                crate::quant::QuantError::NonFinite { index, value } => {
                    crate::quant::QuantError::NonFinite { index: index + src_row * src_len, value }
                }
                e => e,
            };
            anyhow::anyhow!("tensor `{}`: {e} ({what})", seg.hf)
        };
        // An FP8 weight and its scale tensor are looked up once per task, not per row chunk.
        let fp8_src = match ten.packed {
            Some(_) => None,
            None => {
                let view: TensorView<'_> = ckpt.tensor(&seg.hf).expect("planned tensor exists");
                Some(self.fp8.source(ckpt, &view).map_err(|e| fp8_err(e, seg.row0, row_len))?)
            }
        };
        let decode = |row: usize, out: &mut [f32]| -> Result<(), crate::quant::QuantError> {
            match &fp8_src {
                Some(src) => src.dequantize_rows(row, out),
                None => self.packed.dequantize_rows(ckpt, &seg.hf, row, out),
            }
        };
        if *transposed {
            // Output row c is column c of the segment's source rows (DeepSeek's `attn_k_b`): the
            // segment's rows (one head's K part, e.g. 128 x 512) are decoded with their own block
            // scales at their source positions, then the run's columns are gathered from them.
            let src_cols = ten.shape[ten.shape.len() - 2];
            let mut dec = vec![0.0f32; seg.rows * src_cols];
            decode(seg.row0, &mut dec).map_err(|e| fp8_err(e, seg.row0, src_cols))?;
            let c0 = task.r0 - task.seg_start;
            let mut g = Vec::with_capacity(n * row_len);
            for c in c0..c0 + n {
                g.extend((0..seg.rows).map(|j| dec[j * src_cols + c]));
            }
            let mut stats = with_stats.then(ErrorStats::default);
            let input = crate::quant::fp8::f32_bytes(&g);
            self.quantize(ten, SrcDtype::F32, input, &mut out, stats.as_mut()).map_err(|e| self.task_error(task, e))?;
            return Ok((self.pieces(task, out), (task.t, stats), (seg.rows * src_cols) as u64));
        }
        let s0 = seg.row0 + (task.r0 - task.seg_start);
        // Lossless Q4_0: the packed tensors, looked up once per task.
        let repack = match ten.packed {
            Some(true) => Some(self.packed.tensors(ckpt, &seg.hf).map_err(|e| fp8_err(e, s0, row_len))?),
            _ => None,
        };
        // The rtn legacy types take the fused FP8 path (the others' quantizers read f32 rows).
        let fused = self.method == Method::Rtn
            && ten.weights.is_none()
            && matches!(ten.ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1);
        let sub = (FP8_SUB_ELEMS / row_len.max(1)).max(1);
        let mut buf = vec![0.0f32; sub.min(n.max(1)) * row_len];
        let mut stats = with_stats.then(ErrorStats::default);
        let mut i = 0;
        while i < n {
            let k = match perm {
                None => sub.min(n - i),
                Some(_) => 1,
            };
            let src_row = match perm {
                None => s0 + i,
                Some(p) => p.src_row(s0 + i),
            };
            let dec = &mut buf[..k * row_len];
            let o = &mut out[i * row_out..(i + k) * row_out];
            if let Some((pt, l)) = &repack {
                for j in 0..k {
                    let (a, b) = (j * row_len, (j + 1) * row_len);
                    self.repack_row(
                        pt,
                        l,
                        task.t,
                        src_row + j,
                        &mut dec[a..b],
                        &mut o[j * row_out..(j + 1) * row_out],
                        stats.as_mut(),
                    )
                    .map_err(|e| fp8_err(e, src_row + j, row_len))?;
                }
                i += k;
                continue;
            }
            if let (Some(src), true) = (&fp8_src, fused) {
                // Decode fused into the rtn quantizer (same bytes and statistics); a NaN/Inf
                // code or product falls through to the two-step path, which reports it.
                if src
                    .quantize_gguf_rows(ten.ty, src_row, k, o, stats.as_mut())
                    .map_err(|e| fp8_err(e, src_row, row_len))?
                {
                    i += k;
                    continue;
                }
            }
            decode(src_row, dec).map_err(|e| fp8_err(e, src_row, row_len))?;
            let input = crate::quant::fp8::f32_bytes(dec);
            self.quantize(ten, SrcDtype::F32, input, o, stats.as_mut()).map_err(|e| self.task_error(task, e))?;
            i += k;
        }
        Ok((self.pieces(task, out), (task.t, stats), (n * row_len) as u64))
    }

    /// One Q4_0 row of a lossless pack-quantized tensor: the int4 codes and group scales are
    /// copied into Q4_0 blocks; a block whose scale is not an f16 value is requantized from the
    /// decoded row with the tensor's method. Counted per tensor for the report.
    #[allow(clippy::too_many_arguments)]
    fn repack_row(
        &self,
        pt: &crate::quant::packed::PackedTensors<'_>,
        l: &crate::quant::packed::PackedLayout,
        t: usize,
        src_row: usize,
        dec: &mut [f32],
        out: &mut [u8],
        stats: Option<&mut ErrorStats>,
    ) -> Result<(), crate::quant::QuantError> {
        let (pt, l) = (*pt, *l);
        let fallback = crate::quant::packed::q4_0_from_int4_row(pt, &l, src_row, out)?;
        let bb = crate::quant::packed::Q4_0_BLOCK_BYTES;
        if !fallback.is_empty() || stats.is_some() {
            crate::quant::packed::dequantize_rows(pt, &l, src_row, dec)?;
        }
        for &b in &fallback {
            let input = crate::quant::fp8::f32_bytes(&dec[32 * b..32 * (b + 1)]);
            let o = &mut out[b * bb..(b + 1) * bb];
            if self.method == Method::Mse {
                crate::quant::mse::quantize_gguf_rows(GgmlType::Q4_0, SrcDtype::F32, input, 32, o, None)?;
            } else if self.method == Method::MseFast {
                crate::quant::mse::quantize_gguf_rows_fast(GgmlType::Q4_0, SrcDtype::F32, input, 32, o, None)?;
            } else {
                crate::quant::gguf::quantize_rows(GgmlType::Q4_0, SrcDtype::F32, input, 32, o, None)?;
            }
        }
        let blocks = (l.cols / 32) as u64;
        self.repacked[t].0.fetch_add(blocks - fallback.len() as u64, Ordering::Relaxed);
        self.repacked[t].1.fetch_add(fallback.len() as u64, Ordering::Relaxed);
        if let Some(st) = stats {
            let mut deq = vec![0.0f32; dec.len()];
            crate::quant::gguf::dequantize_rows(GgmlType::Q4_0, out, l.cols, &mut deq)?;
            st.add(dec, &deq);
        }
        Ok(())
    }

    fn pieces(&self, task: &Task, out: Vec<u8>) -> Vec<Piece> {
        let ten = &self.tensors[task.t];
        let row_out = ten.ty.row_bytes(ten.row_len()).expect("planned row size");
        let mut pieces = Vec::with_capacity(2);
        let (file, start) = self.placement[task.t];
        // The first task of a part's first tensor carries that part's header.
        if task.t == self.parts[file].tensors.start && task.r0 == 0 {
            pieces.push(Piece { file, offset: 0, bytes: self.parts[file].layout.header.clone() });
        }
        let offset = start + (task.r0 * row_out) as u64;
        pieces.push(Piece { file, offset, bytes: out });
        pieces
    }

    /// Per-tensor manifest records (sizes, types, reasons), before metrics are merged in.
    pub fn records(&self) -> Vec<TensorRecord> {
        self.tensors
            .iter()
            .zip(&self.sizes)
            .enumerate()
            .map(|(i, (t, &bytes))| TensorRecord {
                name: t.name.clone(),
                shape: t.shape.iter().map(|&d| d as u64).collect(),
                dtype_in: match (t.fp8, t.packed, &t.source) {
                    (Some(Fp8Format::E4M3), ..) => "F8_E4M3".to_string(),
                    (Some(Fp8Format::E5M2), ..) => "F8_E5M2".to_string(),
                    (None, Some(_), Source::Rows { segments, .. }) => segments
                        .first()
                        .and_then(|s| self.packed.get(&s.hf))
                        .map_or("PACKED".to_string(), |w| format!("PACKED_INT{}", w.layout.bits)),
                    _ => format!("{:?}", t.src_dtype).to_uppercase(),
                },
                type_out: t.ty.name().to_string(),
                method: match t.packed {
                    Some(true) => Some("repack".to_string()),
                    _ => method_used(self.method, t.ty).map(str::to_string),
                },
                bytes_out: bytes,
                sqnr_db: None,
                rel_rmse: None,
                max_abs_err: None,
                note: Some(match t.packed {
                    Some(true) => {
                        let (a, b) = (&self.repacked[i].0, &self.repacked[i].1);
                        format!(
                            "{}: {} blocks copied, {} requantized (scale not an f16 value)",
                            t.reason,
                            a.load(Ordering::Relaxed),
                            b.load(Ordering::Relaxed)
                        )
                    }
                    _ => t.reason.clone(),
                }),
            })
            .collect()
    }
}
