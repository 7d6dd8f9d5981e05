//! The cpu target: plan and tasks that turn a checkpoint of a registered architecture
//! ([`crate::format::gguf::arch`]) into one GGUF file.
//!
//! The plan decides every tensor's GGUF name, type and byte offset before any data is written;
//! the tasks then quantize block-aligned row chunks straight from the mmap'd
//! source into their final offsets. A stacked MoE tensor (`ffn_*_exps`) is planned as
//! the row runs of its experts' HF tensors: a task never crosses a run, so each expert's rows are
//! quantized straight into their slab of the output and no expert is ever gathered in memory.

use crate::checkpoint::{Checkpoint, TensorView};
use crate::exec::{OutFileSpec, Piece, TaskOutput};
use crate::format::gguf::arch::{self, q4km, Model, QkPermutation, Segment, SourceTensor};
use crate::format::gguf::{self, GgufTensorInfo, MetaValue};
use crate::plan::{Method, PlanError, QuantizeOptions, Scheme};
use crate::quant::gguf::GgmlType;
use crate::quant::metrics::ErrorStats;
use crate::quant::SrcDtype;
use crate::sign::manifest::TensorRecord;
use std::path::Path;

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
    /// Source element type.
    pub src_dtype: SrcDtype,
    /// HF shape (`[rows, cols]` or `[n]`).
    pub shape: Vec<usize>,
    /// Output type.
    pub ty: GgmlType,
    /// Why this type was chosen (shown in the report).
    pub reason: String,
    /// A MoE router (`ffn_gate_inp`): always F32.
    pub router: bool,
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
    fn ne(&self) -> Vec<u64> {
        self.shape.iter().rev().map(|&d| d as u64).collect()
    }
}

/// The whole GGUF output, known before any data is written.
pub struct CpuPlan {
    /// Tensors in file order.
    pub tensors: Vec<CpuTensor>,
    /// The computed layout (header bytes, offsets, sizes).
    pub layout: gguf::GgufLayout,
    /// `general.architecture`.
    pub arch: String,
    /// Number of metadata keys written.
    pub metadata_keys: usize,
    /// How block scales and codes are chosen.
    pub method: Method,
}

/// The file name of the GGUF inside a cpu package.
pub const GGUF_NAME: &str = "model.gguf";

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
    let src: Vec<SourceTensor<'_>> = ckpt.tensors().map(|t| SourceTensor { name: t.name, shape: t.shape }).collect();
    let planned = arch::plan_tensors(&model, &src).map_err(|e| PlanError::Input(e.to_string()))?;
    if planned.is_empty() {
        return Err(PlanError::Input("the checkpoint has no tensors to convert".into()));
    }
    let mut tensors = Vec::with_capacity(planned.len() + 1);
    for p in planned {
        let src_dtype = segments_dtype(ckpt, &p.name, &p.segments)?;
        tensors.push(CpuTensor {
            name: p.name,
            source: Source::Rows { segments: p.segments, perm: p.perm },
            src_dtype,
            shape: p.shape,
            ty: GgmlType::F32,
            reason: String::new(),
            weights: None,
            router: p.router,
        });
    }
    for (name, vals) in model.family.computed_tensors(&model)? {
        tensors.push(CpuTensor {
            name,
            shape: vec![vals.len()],
            source: Source::Values(vals),
            src_dtype: SrcDtype::F32,
            ty: GgmlType::F32,
            reason: "llama-3 rope scaling factors".into(),
            weights: None,
            router: false,
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

    let mut ftype = file_type(base, opts.gguf_mix);
    if let Some(bpw) = opts.gguf_mix.and_then(GgufMix::bpw) {
        budget_mix(ckpt, opts, bpw, &mut tensors, &free)?;
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
    let layout = gguf::layout(&metadata, &infos, 32)?;
    Ok(CpuPlan { tensors, layout, arch: arch.to_string(), metadata_keys: metadata.len(), method: opts.method })
}

/// Bytes of a planned tensor in its chosen type.
fn tensor_bytes(t: &CpuTensor) -> u64 {
    (t.ty.row_bytes(t.row_len()).unwrap_or(0) * t.rows()) as u64
}

/// `--bpw`: sample the free tensors' rows, let [`crate::bpw::apply`] choose their types, then
/// attach their importance weights for the chosen types.
fn budget_mix(
    ckpt: &Checkpoint,
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
            let view = ckpt
                .tensor(&s.hf)
                .ok_or_else(|| PlanError::Input(format!("tensor `{}` is missing from the checkpoint", s.hf)))?;
            let off = (s.row0 + local) * row_len * size;
            rows_data.push(&view.data[off..off + row_len * size]);
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
/// dtype (experts of one layer in different dtypes are refused).
fn segments_dtype(ckpt: &Checkpoint, name: &str, segments: &[Segment]) -> Result<SrcDtype, PlanError> {
    let mut dtype = None;
    for s in segments {
        let t = ckpt
            .tensor(&s.hf)
            .ok_or_else(|| PlanError::Input(format!("tensor `{}` disappeared from the checkpoint", s.hf)))?;
        let d = t.dtype.as_src().ok_or_else(|| {
            PlanError::Input(format!(
                "tensor `{}` has dtype {} (only F32, F16 and BF16 can be converted)",
                s.hf,
                t.dtype.name()
            ))
        })?;
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
    dtype.ok_or_else(|| PlanError::Input(format!("`{name}` has no source rows")))
}

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
    let tok = read_json("tokenizer.json")?.ok_or_else(|| {
        PlanError::Input(format!(
            "{}: tokenizer.json is missing (and there is no SentencePiece tokenizer.model); llama.cpp needs the \
             vocabulary inside the GGUF",
            ckpt.root().display()
        ))
    })?;
    let mut md = gguf::tokenizer::tokenizer_metadata_with_template(&tok, tok_cfg.as_ref(), config, template.as_ref())?;
    gguf::tokenizer::apply_family(&mut md, &tok, model.family.tokenizer_pre(), model.family.special_tokens())?;
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
///    8 bits beside the legacy 32-blocks);
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
    } else if let Some((re, t)) = opts.tensor_types.iter().find(|(re, _)| re.is_match(name) || re.is_match(hf)) {
        (*t, format!("--tensor-type {}", re.as_str()))
    } else if let Some(re) = opts.keep.iter().find(|re| re.is_match(name) || re.is_match(hf)) {
        (keep_type(src), format!("--keep {}", re.as_str()))
    } else if shape.len() == 1 {
        (GgmlType::F32, "1-D tensor kept in F32".to_string())
    } else if is_output && kquant {
        (GgmlType::Q6_K, "output projection in Q6_K (llama-quantize)".to_string())
    } else if is_output && base != GgmlType::Q8_0 {
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
/// calling them `mse` would be false provenance); `None` for float types, which
/// are converted, not quantized.
pub fn method_used(method: Method, ty: GgmlType) -> Option<&'static str> {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => None,
        _ if method == Method::Mse && crate::quant::mse::gguf_supported(ty) => Some("mse"),
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
            .map(|t| (t.shape.iter().product::<usize>() * t.src_dtype.size()) as u64)
            .sum()
    }

    /// The file to write and its planned regions.
    pub fn files(&self, dir: &Path) -> Vec<OutFileSpec> {
        let mut regions = vec![(0, self.layout.header.len() as u64)];
        regions.extend(self.layout.tensor_offsets.iter().zip(&self.layout.tensor_sizes).map(|(&o, &s)| (o, s)));
        vec![OutFileSpec { path: dir.join(GGUF_NAME), size: self.layout.file_size, regions }]
    }

    /// Block-aligned row chunks of every tensor, in file order. A chunk never crosses a source
    /// run (an expert's slab), so a task reads one contiguous range of one HF tensor.
    pub fn tasks(&self) -> Vec<Task> {
        let mut out = Vec::new();
        for (t, ten) in self.tensors.iter().enumerate() {
            let step = (TASK_ELEMS / ten.row_len().max(1)).max(1);
            let runs: Vec<usize> = match &ten.source {
                Source::Rows { segments, .. } => segments.iter().map(|s| s.rows).collect(),
                Source::Values(_) => vec![ten.rows()],
            };
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
            Source::Rows { segments, perm } => {
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
        let quantize = |ty, src, input: &[u8], row_len, out: &mut [u8], stats| match &ten.weights {
            Some(w) => crate::imatrix::quantize_rows(self.method, ty, src, input, row_len, w, out, stats),
            None if self.method == Method::Mse => {
                crate::quant::mse::quantize_gguf_rows(ty, src, input, row_len, out, stats)
            }
            None => crate::quant::gguf::quantize_rows(ty, src, input, row_len, out, stats),
        };
        quantize(ten.ty, ten.src_dtype, input, row_len, &mut out, stats.as_mut()).map_err(|e| {
            let from = match &ten.source {
                Source::Rows { segments, .. } => format!(" (source `{}`)", segments[task.seg].hf),
                Source::Values(_) => String::new(),
            };
            anyhow::anyhow!("tensor `{}`{from}, rows {}..{}: {e}", ten.name, task.r0, task.r1)
        })?;
        let mut pieces = Vec::with_capacity(2);
        if task.t == 0 && task.r0 == 0 {
            pieces.push(Piece { file: 0, offset: 0, bytes: self.layout.header.clone() });
        }
        let offset = self.layout.tensor_offsets[task.t] + (task.r0 * row_out) as u64;
        pieces.push(Piece { file: 0, offset, bytes: out });
        Ok((pieces, (task.t, stats), (n * row_src) as u64))
    }

    /// Per-tensor manifest records (sizes, types, reasons), before metrics are merged in.
    pub fn records(&self) -> Vec<TensorRecord> {
        self.tensors
            .iter()
            .zip(&self.layout.tensor_sizes)
            .map(|(t, &bytes)| TensorRecord {
                name: t.name.clone(),
                shape: t.shape.iter().map(|&d| d as u64).collect(),
                dtype_in: format!("{:?}", t.src_dtype).to_uppercase(),
                type_out: t.ty.name().to_string(),
                method: method_used(self.method, t.ty).map(str::to_string),
                bytes_out: bytes,
                sqnr_db: None,
                rel_rmse: None,
                max_abs_err: None,
                note: Some(t.reason.clone()),
            })
            .collect()
    }
}
