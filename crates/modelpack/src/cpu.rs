//! The cpu target: plan and tasks that turn a llama-family checkpoint into one GGUF file.
//!
//! The plan decides every tensor's GGUF name, type and byte offset before any data is written;
//! the tasks then quantize block-aligned row chunks straight from the mmap'd source into their
//! final offsets.

use crate::checkpoint::{Checkpoint, TensorView};
use crate::exec::{OutFileSpec, Piece, TaskOutput};
use crate::format::gguf::{self, llama, GgufTensorInfo, MetaValue};
use crate::plan::{Method, PlanError, QuantizeOptions, Scheme};
use crate::quant::gguf::GgmlType;
use crate::quant::metrics::ErrorStats;
use crate::quant::SrcDtype;
use crate::sign::manifest::TensorRecord;
use std::path::Path;

/// Where a GGUF tensor's values come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A checkpoint tensor, rows optionally gathered through the q/k permutation.
    Tensor {
        /// HF name.
        hf: String,
        /// q/k permutation (llama arch only).
        perm: Option<llama::QkPermutation>,
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
    let dims = llama::LlamaDims::from_config(config)?;
    let (arch, mut metadata) = llama::arch_metadata(config)?;

    let base = base_type(opts)?;
    let mut tensors = Vec::new();
    let has_output = ckpt.tensor("lm_head.weight").is_some();
    for t in ckpt.tensors() {
        if llama::is_skipped_tensor(t.name) {
            continue;
        }
        if has_output && dims.tied_embeddings && t.name == "lm_head.weight" {
            // Some tied checkpoints still serialize lm_head: llama.cpp reuses token_embd.
            continue;
        }
        let name = llama::tensor_name(t.name).ok_or_else(|| {
            PlanError::Input(format!("tensor `{}` has no GGUF counterpart in the `{arch}` architecture", t.name))
        })?;
        let shape = t.shape.to_vec();
        match dims.expected_shape(t.name) {
            Some(want) if want != shape => {
                return Err(PlanError::Input(format!(
                    "tensor `{}` has shape {shape:?} but config.json implies {want:?}",
                    t.name
                )))
            }
            None => {
                return Err(PlanError::Input(format!(
                    "tensor `{}` does not fit config.json (layer or kind unknown)",
                    t.name
                )))
            }
            _ => {}
        }
        let src_dtype = t.dtype.as_src().ok_or_else(|| {
            PlanError::Input(format!(
                "tensor `{}` has dtype {} (only F32, F16 and BF16 can be converted)",
                t.name,
                t.dtype.name()
            ))
        })?;
        let perm = llama::qk_permutation_for(&dims, t.name, shape[0])?;
        let is_output = name == "output.weight" || (!has_output && name == "token_embd.weight");
        let (ty, reason) = choose_type(opts, t.name, &name, &shape, src_dtype, is_output, base, dims.layers as usize)?;
        let (weights, reason) = crate::imatrix::plan_weights(opts, &name, ty, &shape, reason)?;
        tensors.push(CpuTensor {
            name,
            source: Source::Tensor { hf: t.name.to_string(), perm },
            src_dtype,
            shape,
            ty,
            reason,
            weights,
        });
    }
    if tensors.is_empty() {
        return Err(PlanError::Input("the checkpoint has no tensors to convert".into()));
    }
    for required in ["token_embd.weight", "output_norm.weight"] {
        if !tensors.iter().any(|t| t.name == required) {
            return Err(PlanError::Input(format!("the checkpoint lacks `{required}`")));
        }
    }
    if let Some(freqs) = llama::llama3_rope_freqs(config)? {
        tensors.push(CpuTensor {
            name: "rope_freqs.weight".into(),
            shape: vec![freqs.len()],
            source: Source::Values(freqs),
            src_dtype: SrcDtype::F32,
            ty: GgmlType::F32,
            reason: "llama-3 rope scaling factors".into(),
            weights: None,
        });
    }
    // llama-quantize's order: non-block tensors first, then by block number, then by name.
    tensors.sort_by(|a, b| (block_of(&a.name), &a.name).cmp(&(block_of(&b.name), &b.name)));

    if let Some(m) = &opts.imatrix {
        metadata.extend(m.gguf_metadata());
    }
    metadata.push(("general.quantization_version".into(), MetaValue::U32(2)));
    metadata.push(("general.file_type".into(), MetaValue::U32(file_type(base, opts.gguf_mix))));
    metadata.extend(tokenizer_metadata(ckpt, config)?);

    let infos: Vec<GgufTensorInfo> =
        tensors.iter().map(|t| GgufTensorInfo { name: t.name.clone(), ne: t.ne(), ggml_type: t.ty.id() }).collect();
    let layout = gguf::layout(&metadata, &infos, 32)?;
    Ok(CpuPlan { tensors, layout, arch: arch.to_string(), metadata_keys: metadata.len(), method: opts.method })
}

/// The tokenizer metadata, with llama.cpp's converter precedence for the llama family
/// (`LlamaModel.set_vocab`, `Qwen2Model.set_vocab`): a SentencePiece `tokenizer.model` wins when
/// present (`tokenizer.ggml.model = llama`, with scores), else `tokenizer.json` must be a
/// byte-level BPE (`gpt2`). Neither present is an input error before anything is written.
fn tokenizer_metadata(ckpt: &Checkpoint, config: &serde_json::Value) -> Result<Vec<(String, MetaValue)>, PlanError> {
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
    Ok(gguf::tokenizer::tokenizer_metadata_with_template(&tok, tok_cfg.as_ref(), config, template.as_ref())?)
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
#[allow(clippy::too_many_arguments)]
fn choose_type(
    opts: &QuantizeOptions,
    hf: &str,
    name: &str,
    shape: &[usize],
    src: SrcDtype,
    is_output: bool,
    base: GgmlType,
    n_layer: usize,
) -> Result<(GgmlType, String), PlanError> {
    let kquant = matches!(base, GgmlType::Q4_K | GgmlType::Q6_K);
    let (ty, mut reason) =
        if let Some((re, t)) = opts.tensor_types.iter().find(|(re, _)| re.is_match(name) || re.is_match(hf)) {
            (*t, format!("--tensor-type {}", re.as_str()))
        } else if let Some(re) = opts.keep.iter().find(|re| re.is_match(name) || re.is_match(hf)) {
            (keep_type(src), format!("--keep {}", re.as_str()))
        } else if shape.len() == 1 {
            (GgmlType::F32, "1-D tensor kept in F32".to_string())
        } else if is_output && kquant {
            (GgmlType::Q6_K, "output projection in Q6_K (llama-quantize)".to_string())
        } else if is_output && base != GgmlType::Q8_0 {
            (GgmlType::Q8_0, "output projection kept at 8 bits".to_string())
        } else if let Some(rule) = mix_rule(opts.gguf_mix, name, n_layer) {
            rule
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

/// llama-quantize's `use_more_bits`: the layers a `*_M` mix gives more bits.
fn use_more_bits(i: usize, n: usize) -> bool {
    // `(i - n/8) % 3 == 2` in C ints: negative left sides never equal 2.
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2
}

/// The per-tensor rule of a type mixture, if one applies to `name` (a GGUF name).
fn mix_rule(mix: Option<GgufMix>, name: &str, n_layer: usize) -> Option<(GgmlType, String)> {
    match mix? {
        GgufMix::Q4KM => {
            let layer = usize::try_from(block_of(name)).ok()?;
            let kind = ["attn_v.weight", "ffn_down.weight"].into_iter().find(|k| name.ends_with(k))?;
            use_more_bits(layer, n_layer)
                .then(|| (GgmlType::Q6_K, format!("Q4_K_M: {kind} of layer {layer}/{n_layer} in Q6_K")))
        }
    }
}

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
            .filter(|t| matches!(t.source, Source::Tensor { .. }))
            .map(|t| (t.shape.iter().product::<usize>() * t.src_dtype.size()) as u64)
            .sum()
    }

    /// The file to write and its planned regions.
    pub fn files(&self, dir: &Path) -> Vec<OutFileSpec> {
        let mut regions = vec![(0, self.layout.header.len() as u64)];
        regions.extend(self.layout.tensor_offsets.iter().zip(&self.layout.tensor_sizes).map(|(&o, &s)| (o, s)));
        vec![OutFileSpec { path: dir.join(GGUF_NAME), size: self.layout.file_size, regions }]
    }

    /// Block-aligned row chunks of every tensor, in file order.
    pub fn tasks(&self) -> Vec<Task> {
        let mut out = Vec::new();
        for (t, ten) in self.tensors.iter().enumerate() {
            let rows = ten.rows();
            let step = (TASK_ELEMS / ten.row_len().max(1)).max(1);
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + step).min(rows);
                out.push(Task { t, r0, r1 });
                r0 = r1;
            }
            if rows == 0 {
                out.push(Task { t, r0: 0, r1: 0 });
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
            Source::Tensor { hf, perm } => {
                let view: TensorView<'_> = ckpt.tensor(hf).expect("planned tensor exists");
                match perm {
                    None => &view.data[task.r0 * row_src..task.r1 * row_src],
                    Some(p) => {
                        let mut g = Vec::with_capacity(n * row_src);
                        for r in task.r0..task.r1 {
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
                Source::Tensor { hf, .. } => format!(" (source `{hf}`)"),
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
