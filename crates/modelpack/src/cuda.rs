//! The cuda target: a compressed-tensors "pack-quantized" checkpoint (the format compressed-tensors 0.20 writes) that vLLM and
//! HF transformers load as it is.
//!
//! Which tensors are Linear weights is decided structurally by [`crate::linears`] (every 2-D
//! weight in the layer stack minus routers, embeddings and MTP layers; fused transformers-5
//! experts split per expert), after the experts were checked against config.json. Every
//! quantized Linear `P` becomes `P.weight_packed`, `P.weight_scale`, `P.weight_shape` (and
//! `P.weight_zero_point` when asymmetric); everything else is copied bit for bit, and each dense
//! Linear is listed in `ignore` so no loader expects packed tensors for it. Tensors are
//! laid out in the reference writer's order (dtype, then name), so a module's scales live far
//! from its packed words: tasks run in the order of their packed data and the scales wait in the
//! executor's small reorder buffer.

use crate::checkpoint::fp8::Fp8Map;
use crate::checkpoint::packed::PackedMap;
use crate::checkpoint::Checkpoint;
use crate::exec::{OutFileSpec, Piece, TaskOutput};
use crate::format::compressed_tensors::{self as ctf, CtGroup, CtStrategy};
use crate::format::safetensors as stf;
use crate::linears::{self, Class, ExpertNames, ModelFacts};
use crate::package::write_hashed;
use crate::plan::{Method, PlanError, QuantizeOptions, Scheme};
use crate::quant::ct::{self, CtScheme, ScaleDtype, Strategy};
use crate::quant::fp8::Fp8Format;
use crate::quant::metrics::ErrorStats;
use crate::quant::SrcDtype;
use crate::sign::manifest::TensorRecord;
use crate::sign::FileDigest;
use std::collections::BTreeSet;
use std::path::Path;

/// The `weight_scale` dtype when `--scale-dtype` is not given: a bf16 or f16 model keeps its
/// dtype (what compressed-tensors writes, byte for byte), an f32 model gets bf16 scales.
///
/// Why bf16 for f32: the runtimes never compute with f32 scales. vLLM serves an f32 checkpoint in
/// 16-bit (its `auto` dtype downcasts f32) and its W4A16/W8A16 kernels (Marlin, Machete) take
/// scales in the activation dtype, so f32 scales would be rounded at load time, after the codes
/// were chosen against the unrounded value. Rounding the scale to bf16 first, then choosing codes
/// against it (the kernels do), makes the stored pair exact; bf16 values in fp16's normal range
/// also convert to fp16 without loss. HF transformers copies the checkpoint scale into the
/// module's parameter of the model dtype, which holds bf16 values exactly. It also halves the
/// scale bytes. `--scale-dtype f32` restores compressed-tensors' own choice for f32 models.
pub const fn default_scale_dtype(src: SrcDtype) -> ScaleDtype {
    match src {
        SrcDtype::BF16 | SrcDtype::F32 => ScaleDtype::BF16,
        SrcDtype::F16 => ScaleDtype::F16,
    }
}

/// How one output tensor gets its bytes.
#[derive(Debug, Clone)]
enum Role {
    /// Copied from the source tensor of that name, starting at byte `at` (one expert's slab of a
    /// fused expert tensor kept dense).
    Copy { src: String, at: usize },
    /// Part of quantized module `m` (index into `modules`).
    Packed(usize),
    /// An FP8 weight kept dense (an MTP layer's Linear, or `--keep`): decoded as the reference
    /// does (code x block scale, f32) and written as BF16, the dtype DeepSeek's own FP8 -> BF16
    /// conversion gives (FP8 releases are BF16 models: `torch_dtype` bfloat16).
    DecodedFp8 { src: String },
    /// Scale, shape or zero point of a quantized module (written by its row tasks).
    Part,
}

#[derive(Debug, Clone)]
struct OutTensor {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    role: Role,
    file: usize,
    offset: u64,
    size: u64,
}

/// One quantized Linear.
#[derive(Debug, Clone)]
struct Module {
    /// Module name (`model.layers.0.mlp.down_proj`).
    name: String,
    src: String,
    src_dtype: SrcDtype,
    /// The source is an FP8 weight: its rows are decoded to f32 (`src_dtype` F32) first.
    fp8: Option<Fp8Format>,
    /// The source is a pack-quantized weight of another scheme, decoded to f32 rows likewise
    /// (its bits, for the bytes-read figure).
    packed_src: Option<u32>,
    /// First row of the module in the source tensor (fused experts hold several modules).
    row0: usize,
    rows: usize,
    cols: usize,
    scheme: CtScheme,
    scale_dtype: ScaleDtype,
    /// Output tensor indices: packed, scale, shape, zero point.
    packed: usize,
    scale: usize,
    shape_t: usize,
    zp: Option<usize>,
    note: String,
    /// `--imatrix` weights of the module's columns (used by `--method mse`).
    weights: Option<crate::imatrix::SharedWeights>,
}

impl Module {
    /// Bytes per source element as stored (1 for FP8).
    fn in_size(&self) -> usize {
        if self.fp8.is_some() {
            1
        } else if let Some(bits) = self.packed_src {
            // Codes only (0 for int4: half a byte each, counted in `input_bytes`).
            bits as usize / 8
        } else {
            self.src_dtype.size()
        }
    }
}

/// The whole compressed-tensors output, known before any data is written.
pub struct CudaPlan {
    tensors: Vec<OutTensor>,
    modules: Vec<Module>,
    files: Vec<(String, stf::StLayout)>,
    config: serde_json::Value,
    kept_notes: Vec<(String, String)>,
    /// Manifest record index of each module (records list copied tensors and modules in order).
    module_record: Vec<usize>,
    /// How scales, zero points and codes are chosen.
    method: Method,
    /// The checkpoint's FP8 weights and the scale tensors they consume.
    fp8: Fp8Map,
    /// The checkpoint's pack-quantized weights (passed through or decoded).
    packed: PackedMap,
}

/// A unit of work: rows `[r0, r1)` of module `m`, bytes `[b0, b1)` of a copied tensor, or a
/// file's prologue.
#[derive(Debug, Clone, Copy)]
pub enum Task {
    /// Quantize rows of a module.
    Rows {
        /// Module index.
        m: usize,
        /// First row.
        r0: usize,
        /// End row.
        r1: usize,
    },
    /// Decode rows of an FP8 weight kept dense (to BF16).
    Decode {
        /// Output tensor index.
        t: usize,
        /// First row.
        r0: usize,
        /// End row.
        r1: usize,
    },
    /// Copy a byte range of a kept tensor.
    Copy {
        /// Output tensor index.
        t: usize,
        /// Start byte.
        b0: usize,
        /// End byte.
        b1: usize,
    },
    /// A file's safetensors header and its constant tensors (every module's `weight_shape`),
    /// first in the file's task order.
    ///
    /// Why: safetensors orders tensors by dtype, so all the small I64 shape tensors sit at the
    /// start of a file. Emitted by each module's first task, they held the ordered writer at the
    /// file start until the last module began, buffering nearly the whole output (RssAnon 0.9 GB
    /// for a 2.3 GB model, growing with it).
    Prologue {
        /// Output file index.
        file: usize,
    },
}

const TASK_ELEMS: usize = 1 << 20;

/// A Linear to quantize: `rows` rows of `cols` starting at row `row0` of source tensor `src`
/// (a fused expert tensor holds several modules).
struct LinearSrc<'a> {
    module: String,
    src: &'a str,
    dtype: crate::checkpoint::Dtype,
    row0: usize,
    rows: usize,
    cols: usize,
}

/// Rename a tensor of transformers 5's fused MoE layout (`…layers.N.mlp.…`) to the family's
/// released MoE module (`block_sparse_moe` for MiniMax-M2 / Mixtral), so a package made from
/// either layout has the released names the loaders read.
fn released_name(name: &str, fused_layers: &BTreeSet<String>, names: ExpertNames) -> String {
    let Some(module) = names.released_module else { return name.to_string() };
    for layer in fused_layers {
        if let Some(rest) = name.strip_prefix(layer.as_str()).and_then(|r| r.strip_prefix("mlp.")) {
            return format!("{layer}{module}.{rest}");
        }
    }
    name.to_string()
}

/// What the cuda target refuses in a Nemotron-H checkpoint because no runtime loaded such a
/// package here: the latent MoE of Nemotron-3 Super/Ultra (`moe_latent_size`, with
/// `fc1_latent_proj`/`fc2_latent_proj` around the experts), for which there is no fixture written
/// by transformers. Everything else of the family (Mamba2 in_proj/out_proj, attention, ReLU² MLP,
/// non-gated experts, shared experts) was loaded by transformers + compressed-tensors
/// (`cargo xtask hf-check families nemotron-h nemotron-h-moe`).
fn nemotron_h_limits(config: &serde_json::Value) -> Result<(), PlanError> {
    if crate::format::gguf::arch::hf_architecture(config).ok() != Some("NemotronHForCausalLM") {
        return Ok(());
    }
    if let Some(l) = config.get("moe_latent_size").filter(|v| !v.is_null()) {
        return Err(PlanError::Input(format!(
            "config.json has moe_latent_size = {l} (Nemotron-H latent MoE, fc1/fc2_latent_proj): not supported on \
             --target cuda yet, no package of that shape has been loaded by transformers/vLLM here"
        )));
    }
    Ok(())
}

/// Plan the cuda package of `ckpt`.
pub fn plan(ckpt: &Checkpoint, opts: &QuantizeOptions) -> Result<CudaPlan, PlanError> {
    opts.validate()?;
    let config = &ckpt
        .config()
        .ok_or_else(|| PlanError::Input("the checkpoint has no config.json: the cuda target rewrites it".into()))?
        .raw;
    nemotron_h_limits(config)?;
    // FP8 sources are decoded and re-quantized without --force-requantize: GPUs without FP8
    // (A100-class) need int4/int8 packages of FP8 releases. Stated in every module's note.
    let fp8 = Fp8Map::of(ckpt).map_err(|e| PlanError::Input(e.to_string()))?;
    // pack-quantized int4/int8 sources: Linears of the target's scheme pass through as they are,
    // others are decoded and requantized (stated per module), without --force-requantize either.
    let packed = PackedMap::of(ckpt).map_err(|e| PlanError::Input(e.to_string()))?;
    if config.get("quantization_config").is_some() && !opts.force_requantize && fp8.is_empty() && packed.is_empty() {
        return Err(PlanError::Input(
            "config.json already has a quantization_config: re-quantizing loses quality \
             (pass --force-requantize to do it anyway)"
                .into(),
        ));
    }
    let facts = ModelFacts::from_config(config);
    // Before anything else (and long before any output exists): experts consistent with each
    // other and with config.json.
    // The checkpoint as dense tensors: each packed Linear appears as its virtual `P.weight`
    // (shape `weight_shape`, data its packed words), its parts are left out.
    let vshapes: Vec<(&str, [usize; 2])> = packed.virtual_weights().collect();
    let mut views: Vec<crate::checkpoint::TensorView<'_>> =
        ckpt.tensors().filter(|t| !fp8.is_consumed(t.name) && !packed.is_consumed(t.name)).collect();
    for (name, shape) in &vshapes {
        let w = packed.get(name).expect("listed by the map");
        let words = ckpt.tensor(&w.packed).expect("checked by the map");
        views.push(crate::checkpoint::TensorView { name, shape, ..words });
    }
    views.sort_by(|a, b| a.name.cmp(b.name));
    linears::check_experts(views.iter().map(|t| (t.name, t.shape)), &facts).map_err(PlanError::Input)?;
    let names = facts.expert_names();
    // `…layers.N.` prefixes whose experts are fused: their `mlp.` tensors take the released name.
    let fused_layers: BTreeSet<String> = views
        .iter()
        .filter(|t| matches!(linears::classify(t.name, t.shape, &facts), Class::FusedExperts { .. }))
        .filter_map(|t| linears::layer_index(t.name).map(|(_, end)| t.name[..end].to_string()))
        .collect();

    let mut modules = Vec::new();
    let mut tensors = Vec::new();
    let mut ignore: Vec<String> = Vec::new();
    let mut kept_notes = Vec::new();
    let mut fallback: Vec<String> = Vec::new();
    // Bytes of Linear weights inside the layer stack: quantized, and left dense.
    let (mut linear_q, mut linear_dense) = (0u64, 0u64);
    for t in views.iter().copied() {
        let keep = opts.keep.iter().find(|re| re.is_match(t.name));
        let class = linears::classify(t.name, t.shape, &facts);
        let in_layers = linears::layer_index(t.name).is_some();
        let out_name = released_name(t.name, &fused_layers, names);
        let mut linears_of_t: Vec<LinearSrc> = Vec::new();
        let dense_note = match (&class, keep) {
            (Class::Dense { why, linear }, None) => Some((why.clone(), *linear)),
            (Class::Dense { linear, .. }, Some(re)) => Some((
                format!("--keep {}: kept dense{}", re.as_str(), if *linear { ", in ignore" } else { "" }),
                *linear,
            )),
            (Class::Linear | Class::FusedExperts { .. }, Some(re)) => {
                Some((format!("--keep {}: kept dense, in ignore", re.as_str()), true))
            }
            (Class::Linear, None) => {
                let m = out_name.strip_suffix(".weight").expect("a Linear is a .weight").to_string();
                linears_of_t.push(LinearSrc {
                    module: m,
                    src: t.name,
                    dtype: t.dtype,
                    row0: 0,
                    rows: t.shape[0],
                    cols: t.shape[1],
                });
                None
            }
            (Class::FusedExperts { down, gated }, None) => {
                // [E, 2F, H] (gate rows first), [E, F, H] (non-gated up) or [E, H, F]: one module
                // per expert and projection, under the per-expert names of the family's releases.
                let base = out_name.rsplit_once('.').expect("experts.<proj>").0;
                let (e, r, c) = (t.shape[0], t.shape[1], t.shape[2]);
                for x in 0..e {
                    if *down || !*gated {
                        linears_of_t.push(LinearSrc {
                            module: format!("{base}.{x}.{}", if *down { names.down } else { names.up }),
                            src: t.name,
                            dtype: t.dtype,
                            row0: x * r,
                            rows: r,
                            cols: c,
                        });
                    } else {
                        for (half, proj) in [(0, names.gate), (1, names.up)] {
                            linears_of_t.push(LinearSrc {
                                module: format!("{base}.{x}.{proj}"),
                                src: t.name,
                                dtype: t.dtype,
                                row0: x * r + half * (r / 2),
                                rows: r / 2,
                                cols: c,
                            });
                        }
                    }
                }
                None
            }
        };
        if let Some((note, linear)) = dense_note {
            if packed.get(t.name).is_some() {
                return Err(PlanError::Input(format!(
                    "tensor `{}`: a pack-quantized weight would be kept dense ({note}); quantize it (drop the \
                     --keep) or dequantize the checkpoint first",
                    t.name
                )));
            }
            if fp8.get(t.name).is_some() && t.shape.len() != 2 {
                return Err(PlanError::Input(format!(
                    "tensor `{}`: an FP8 weight of shape {:?} would be kept dense ({note}); only 2-D FP8 \
                     weights can be decoded to BF16: quantize it (drop the --keep) or convert the checkpoint \
                     to bf16 first",
                    t.name, t.shape
                )));
            }
            if linear && in_layers {
                linear_dense += t.data.len() as u64;
            }
            if let Some(f) = fp8.get(t.name) {
                // Its scale tensor is consumed: the weight is written decoded, not as FP8 codes.
                if linear {
                    if let Some(m) = out_name.strip_suffix(".weight") {
                        ignore.push(m.to_string());
                    }
                }
                let note = format!(
                    "{note}; decoded from FP8 ({} x `{}`, {}x{} blocks, f32 as the reference does) and rounded \
                     to BF16",
                    t.dtype.name(),
                    f.scale,
                    f.layout.block_rows,
                    f.layout.block_cols
                );
                kept_notes.push((t.name.to_string(), note));
                tensors.push(OutTensor {
                    name: out_name.clone(),
                    dtype: "BF16",
                    shape: t.shape.to_vec(),
                    role: Role::DecodedFp8 { src: t.name.to_string() },
                    file: 0,
                    offset: 0,
                    size: (t.shape[0] * t.shape[1] * 2) as u64,
                });
                continue;
            }
            let note = if t.shape.len() >= 2 { note } else { "1-D tensor kept".to_string() };
            // (output name, shape, source byte offset, bytes) of each tensor written.
            let mut outs: Vec<(String, Vec<usize>, usize, usize)> = Vec::new();
            if linear && t.shape.len() == 3 {
                // Fused experts kept dense are written per expert too: the same names as a
                // per-expert checkpoint gives, which is what the loaders and `ignore` match.
                let base = out_name.rsplit_once('.').map_or(out_name.as_str(), |p| p.0);
                let (e, r, c) = (t.shape[0], t.shape[1], t.shape[2]);
                let esz = t.data.len() / (e * r * c).max(1);
                let parts: Vec<(&str, usize, usize)> = if out_name.ends_with("down_proj") {
                    vec![(names.down, 0, r)]
                } else if out_name.ends_with(".experts.up_proj") {
                    vec![(names.up, 0, r)]
                } else {
                    vec![(names.gate, 0, r / 2), (names.up, r / 2, r / 2)]
                };
                for x in 0..e {
                    for &(proj, first, rows) in &parts {
                        let m = format!("{base}.{x}.{proj}");
                        outs.push((format!("{m}.weight"), vec![rows, c], (x * r + first) * c * esz, rows * c * esz));
                        ignore.push(m);
                    }
                }
            } else {
                if linear {
                    if let Some(m) = out_name.strip_suffix(".weight") {
                        ignore.push(m.to_string());
                    }
                }
                outs.push((out_name.clone(), t.shape.to_vec(), 0, t.data.len()));
            }
            kept_notes.push((t.name.to_string(), note));
            for (name, shape, at, size) in outs {
                tensors.push(OutTensor {
                    name,
                    dtype: t.dtype.name(),
                    shape,
                    role: Role::Copy { src: t.name.to_string(), at },
                    file: 0,
                    offset: 0,
                    size: size as u64,
                });
            }
            continue;
        }
        linear_q += t.data.len() as u64;
        for l in linears_of_t {
            let m = l.module;
            let fp8_format = fp8.get(l.src).map(|f| f.format);
            let pw = packed.get(l.src);
            let src_dtype = match (fp8_format, pw) {
                (Some(_), _) | (_, Some(_)) => SrcDtype::F32,
                _ => l.dtype.as_src().ok_or_else(|| {
                    PlanError::Input(format!(
                        "tensor `{}` has dtype {} but is a Linear weight to quantize (needs F32, F16, BF16 or FP8 \
                         with scales)",
                        l.src,
                        l.dtype.name()
                    ))
                })?,
            };
            let (rows, cols) = (l.rows, l.cols);
            let (mut scheme, mut note) = match opts.scheme {
                Scheme::Int8 => {
                    (CtScheme { bits: 8, strategy: Strategy::Channel, symmetric: true }, "int8 channel".to_string())
                }
                Scheme::Int4 => (
                    CtScheme { bits: 4, strategy: Strategy::Group(opts.group_size), symmetric: !opts.asymmetric },
                    format!("int4 g{}", opts.group_size),
                ),
            };
            if scheme.scale_cols(cols).is_err() {
                scheme.strategy = Strategy::Channel;
                note = format!("in_features {cols} not divisible by group {}: per-channel", opts.group_size);
                fallback.push(m.clone());
            }
            if l.src != format!("{m}.weight") {
                note = format!("{note}; rows {}..{} of `{}`", l.row0, l.row0 + rows, l.src);
            }
            if let Some(f) = fp8.get(l.src) {
                note = format!(
                    "{note}; re-quantized from FP8 ({} x `{}`, {}x{} blocks, decoded to f32 as the reference does)",
                    l.dtype.name(),
                    f.scale,
                    f.layout.block_rows,
                    f.layout.block_cols
                );
            }
            scheme.validate()?;
            let mut scale_dtype = opts.scale_dtype.unwrap_or(default_scale_dtype(src_dtype));
            if let Some(w) = pw {
                let src_scale = match w.scale_dtype {
                    SrcDtype::BF16 => ScaleDtype::BF16,
                    SrcDtype::F16 => ScaleDtype::F16,
                    SrcDtype::F32 => ScaleDtype::F32,
                };
                // A packed source keeps its scale dtype unless --scale-dtype says otherwise.
                scale_dtype = opts.scale_dtype.unwrap_or(src_scale);
                let l2 = w.layout;
                let same = u32::from(scheme.bits) == l2.bits
                    && scheme.symmetric == l2.symmetric
                    && match scheme.strategy {
                        Strategy::Channel => l2.group == l2.cols,
                        Strategy::Group(g) => g == l2.group && g != l2.cols,
                    }
                    && scale_dtype == src_scale;
                if same {
                    // The source's tensors are already what this module would be: copy them.
                    let parts = [Some(&w.packed), Some(&w.scale), w.zero_point.as_ref()];
                    let shape_name = format!("{}_shape", l.src);
                    for src in parts.into_iter().flatten().chain(std::iter::once(&shape_name)) {
                        let v = ckpt.tensor(src).expect("checked by the map");
                        let suffix = src.rsplit_once(".weight_").map_or("", |p| p.1);
                        kept_notes.push((src.to_string(), format!("{}: passed through unchanged", w.describe())));
                        tensors.push(OutTensor {
                            name: format!("{m}.weight_{suffix}"),
                            dtype: v.dtype.name(),
                            shape: v.shape.to_vec(),
                            role: Role::Copy { src: src.to_string(), at: 0 },
                            file: 0,
                            offset: 0,
                            size: v.data.len() as u64,
                        });
                    }
                    continue;
                }
                note = format!(
                    "{note}; re-quantized from pack-quantized {} (decoded as compressed-tensors does)",
                    w.describe()
                );
            }
            let i = modules.len();
            let base = tensors.len();
            let sc = scheme.scale_cols(cols)?;
            let mut push = |suffix: &str, dtype: &'static str, shape: Vec<usize>, role: Role, esz: usize| {
                let size = (shape.iter().product::<usize>() * esz) as u64;
                tensors.push(OutTensor { name: format!("{m}.{suffix}"), dtype, shape, role, file: 0, offset: 0, size });
            };
            push("weight_packed", "I32", vec![rows, scheme.packed_cols(cols)], Role::Packed(i), 4);
            push("weight_scale", scale_dtype.safetensors_name(), vec![rows, sc], Role::Part, scale_dtype.size());
            push("weight_shape", "I64", vec![2], Role::Part, 8);
            let zp = (!scheme.symmetric).then(|| {
                push("weight_zero_point", "I32", vec![scheme.zp_rows(rows), sc], Role::Part, 4);
                base + 3
            });
            let (weights, note) = crate::imatrix::plan_ct_weights(opts, l.src, cols, note)?;
            modules.push(Module {
                name: m,
                src: l.src.to_string(),
                src_dtype,
                fp8: fp8_format,
                packed_src: pw.map(|w| w.layout.bits),
                row0: l.row0,
                rows,
                cols,
                scheme,
                scale_dtype,
                packed: base,
                scale: base + 1,
                shape_t: base + 2,
                zp,
                note,
                weights,
            });
        }
    }
    let passed = tensors.iter().any(|t| matches!(&t.role, Role::Copy { src, .. } if packed.is_consumed(src)));
    if modules.is_empty() && !passed {
        return Err(PlanError::Input(
            "no Linear weights to quantize: no 2-D `.weight` inside a layer stack (`layers.N.`, `layer.N.`, \
             `blocks.N.`) outside the kept ones"
                .into(),
        ));
    }
    if linear_dense > linear_q && !opts.allow_dense {
        return Err(PlanError::Input(format!(
            "{linear_dense} of the {} bytes of Linear weights inside the layer stack would stay dense (see the \
             kept tensors' notes); pass --allow-dense to write such a package anyway",
            linear_dense + linear_q
        )));
    }
    if !ignore.iter().any(|m| m == "lm_head") {
        ignore.push("lm_head".into());
    }
    ignore.sort();
    ignore.dedup();

    let bits = if opts.scheme == Scheme::Int8 { 8 } else { 4 };
    let main_strategy = match opts.scheme {
        Scheme::Int8 => CtStrategy::Channel,
        Scheme::Int4 => CtStrategy::Group(opts.group_size as u32),
    };
    let mut groups = vec![CtGroup {
        targets: vec!["Linear".into()],
        num_bits: bits,
        symmetric: !opts.asymmetric || opts.scheme == Scheme::Int8,
        strategy: main_strategy,
    }];
    if !fallback.is_empty() && opts.scheme == Scheme::Int4 {
        groups.push(CtGroup {
            targets: fallback.iter().map(|m| format!("re:^{}$", regex::escape(m))).collect(),
            num_bits: bits,
            symmetric: !opts.asymmetric,
            strategy: CtStrategy::Channel,
        });
    }
    let qc = ctf::quantization_config(&groups, &ignore);
    let config =
        ctf::with_quantization_config(config, qc, opts.force_requantize || !fp8.is_empty() || !packed.is_empty())?;

    // File layout: reference order, then shards of at most max_shard_size.
    let mut keyed: Vec<(String, &'static str, usize)> =
        tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), t.dtype, i)).collect();
    stf::canonical_order(&mut keyed, |k| (k.0.as_str(), k.1));
    let order: Vec<usize> = keyed.iter().map(|k| k.2).collect();
    let sizes: Vec<u64> = order.iter().map(|&i| tensors[i].size).collect();
    let shards = stf::shard_plan(&sizes, opts.max_shard_size);
    let mut files = Vec::new();
    for (fi, range) in shards.iter().enumerate() {
        let idx = &order[range.clone()];
        let spec: Vec<(String, &str, Vec<usize>)> =
            idx.iter().map(|&i| (tensors[i].name.clone(), tensors[i].dtype, tensors[i].shape.clone())).collect();
        let layout = stf::safetensors_layout(&spec, &[("format".to_string(), "pt".to_string())])?;
        for (k, &i) in idx.iter().enumerate() {
            tensors[i].file = fi;
            tensors[i].offset = layout.offsets[k];
        }
        let name = if shards.len() == 1 {
            "model.safetensors".to_string()
        } else {
            ctf::shard_file_name(fi + 1, shards.len())
        };
        files.push((name, layout));
    }
    let mut module_record = vec![0; modules.len()];
    let mut r = 0;
    for t in &tensors {
        match t.role {
            Role::Copy { .. } | Role::DecodedFp8 { .. } => r += 1,
            Role::Packed(m) => {
                module_record[m] = r;
                r += 1;
            }
            _ => {}
        }
    }
    Ok(CudaPlan { tensors, modules, files, config, kept_notes, module_record, method: opts.method, fp8, packed })
}

impl CudaPlan {
    /// Tensor bytes read from the checkpoint.
    pub fn input_bytes(&self) -> u64 {
        let q: u64 = self
            .modules
            .iter()
            .map(|m| match m.packed_src {
                Some(bits) => (m.rows * m.cols * bits as usize / 8) as u64,
                None => (m.rows * m.cols * m.in_size()) as u64,
            })
            .sum();
        let c: u64 = self.tensors.iter().filter(|t| matches!(t.role, Role::Copy { .. })).map(|t| t.size).sum();
        // FP8 codes (one byte each) of the weights decoded to BF16.
        let d: u64 =
            self.tensors.iter().filter(|t| matches!(t.role, Role::DecodedFp8 { .. })).map(|t| t.size / 2).sum();
        q + c + d
    }

    /// The weight files and their planned regions.
    pub fn files(&self, dir: &Path) -> Vec<OutFileSpec> {
        self.files
            .iter()
            .enumerate()
            .map(|(fi, (name, l))| {
                let mut regions = vec![(0, l.header.len() as u64)];
                regions.extend(self.tensors.iter().filter(|t| t.file == fi).map(|t| (t.offset, t.size)));
                OutFileSpec { path: dir.join(name), size: l.file_size, regions }
            })
            .collect()
    }

    /// Tasks ordered by where their main bytes go, so the writer rarely waits.
    pub fn tasks(&self) -> Vec<Task> {
        let mut out: Vec<(usize, u64, Task)> = Vec::new();
        for (mi, m) in self.modules.iter().enumerate() {
            let p = &self.tensors[m.packed];
            let unit = m.scheme.rows_per_zp_word();
            let step = ((TASK_ELEMS / m.cols.max(1)).max(1)).div_ceil(unit) * unit;
            let mut r0 = 0;
            while r0 < m.rows {
                let r1 = (r0 + step).min(m.rows);
                out.push((
                    p.file,
                    p.offset + (r0 * m.scheme.packed_cols(m.cols) * 4) as u64,
                    Task::Rows { m: mi, r0, r1 },
                ));
                r0 = r1;
            }
        }
        for (ti, t) in self.tensors.iter().enumerate() {
            if let Role::DecodedFp8 { .. } = t.role {
                let (rows, cols) = (t.shape[0], t.shape[1]);
                let step = (TASK_ELEMS / cols.max(1)).max(1);
                let mut r0 = 0;
                while r0 < rows {
                    let r1 = (r0 + step).min(rows);
                    out.push((t.file, t.offset + (r0 * cols * 2) as u64, Task::Decode { t: ti, r0, r1 }));
                    r0 = r1;
                }
            }
            if let Role::Copy { .. } = t.role {
                let step = TASK_ELEMS * 2;
                let n = t.size as usize;
                let mut b0 = 0;
                loop {
                    let b1 = (b0 + step).min(n);
                    out.push((t.file, t.offset + b0 as u64, Task::Copy { t: ti, b0, b1 }));
                    b0 = b1;
                    if b0 >= n {
                        break;
                    }
                }
            }
        }
        // Offset 0 sorts each file's prologue before its tensors (which start after the header).
        out.extend((0..self.files.len()).map(|f| (f, 0, Task::Prologue { file: f })));
        out.sort_by_key(|&(f, o, _)| (f, o));
        out.into_iter().map(|(_, _, t)| t).collect()
    }

    /// Output bytes of a task.
    pub fn task_cost(&self, task: &Task) -> u64 {
        match *task {
            Task::Rows { m, r0, r1 } => ((r1 - r0) * self.modules[m].cols / 2) as u64,
            Task::Copy { b0, b1, .. } => (b1 - b0) as u64,
            Task::Decode { t, r0, r1 } => ((r1 - r0) * self.tensors[t].shape[1] * 2) as u64,
            Task::Prologue { file } => self.files[file].1.header.len() as u64,
        }
    }

    /// Run a task.
    pub fn run_task(
        &self,
        ckpt: &Checkpoint,
        task: &Task,
        with_stats: bool,
    ) -> anyhow::Result<TaskOutput<(usize, Option<ErrorStats>)>> {
        let mut pieces = Vec::new();
        match *task {
            Task::Prologue { file } => {
                pieces.push(Piece { file, offset: 0, bytes: self.files[file].1.header.clone() });
                for md in &self.modules {
                    let s = &self.tensors[md.shape_t];
                    if s.file == file {
                        let mut b = (md.rows as i64).to_le_bytes().to_vec();
                        b.extend_from_slice(&(md.cols as i64).to_le_bytes());
                        pieces.push(Piece { file, offset: s.offset, bytes: b });
                    }
                }
                Ok((pieces, (0, None), 0))
            }
            Task::Decode { t, r0, r1 } => {
                let ten = &self.tensors[t];
                let Role::DecodedFp8 { src } = &ten.role else { unreachable!("decode task on a decoded tensor") };
                let view = ckpt.tensor(src).expect("planned tensor exists");
                let cols = ten.shape[1];
                let mut d = vec![0.0f32; (r1 - r0) * cols];
                self.fp8
                    .dequantize_rows(ckpt, &view, r0, &mut d)
                    .map_err(|e| anyhow::anyhow!("tensor `{src}` (rows {r0}..{r1}): {e} (a NaN/Inf FP8 code)"))?;
                let bytes: Vec<u8> =
                    d.iter().flat_map(|&x| crate::quant::convert::f32_to_bf16(x).to_le_bytes()).collect();
                pieces.push(Piece { file: ten.file, offset: ten.offset + (r0 * cols * 2) as u64, bytes });
                Ok((pieces, (0, None), ((r1 - r0) * cols) as u64))
            }
            Task::Copy { t, b0, b1 } => {
                let ten = &self.tensors[t];
                let Role::Copy { src, at } = &ten.role else { unreachable!("copy task on a copy tensor") };
                let view = ckpt.tensor(src).expect("planned tensor exists");
                pieces.push(Piece {
                    file: ten.file,
                    offset: ten.offset + b0 as u64,
                    bytes: view.data[at + b0..at + b1].to_vec(),
                });
                Ok((pieces, (0, None), (b1 - b0) as u64))
            }
            Task::Rows { m, r0, r1 } => {
                let md = &self.modules[m];
                let esz = md.src_dtype.size();
                let rows = r1 - r0;
                let (a, b) = (md.row0 + r0, md.row0 + r1);
                // FP8 / packed: the task's rows decoded to f32 (at most TASK_ELEMS values, one task's worth).
                let decoded: Vec<f32>;
                let input = match md.fp8 {
                    None if md.packed_src.is_some() => {
                        let mut d = vec![0.0f32; rows * md.cols];
                        self.packed.dequantize_rows(ckpt, &md.src, a, &mut d).map_err(|e| {
                            anyhow::anyhow!("tensor `{}` (rows {a}..{b}): {e} (a non-finite packed scale)", md.src)
                        })?;
                        decoded = d;
                        crate::quant::fp8::f32_bytes(&decoded)
                    }
                    None => {
                        let view = ckpt.tensor(&md.src).expect("planned tensor exists");
                        &view.data[a * md.cols * esz..b * md.cols * esz]
                    }
                    Some(_) => {
                        let view = ckpt.tensor(&md.src).expect("planned tensor exists");
                        let mut d = vec![0.0f32; rows * md.cols];
                        self.fp8.dequantize_rows(ckpt, &view, a, &mut d).map_err(|e| {
                            anyhow::anyhow!("tensor `{}` (rows {a}..{b}): {e} (a NaN/Inf FP8 code)", md.src)
                        })?;
                        decoded = d;
                        crate::quant::fp8::f32_bytes(&decoded)
                    }
                };
                let pc = md.scheme.packed_cols(md.cols);
                let sc = md.scheme.scale_cols(md.cols)?;
                let mut packed = vec![0u8; rows * pc * 4];
                let mut scale = vec![0u8; rows * sc * md.scale_dtype.size()];
                let mut zp = md.zp.map(|_| vec![0u8; md.scheme.zp_rows(rows) * sc * 4]);
                let mut stats = with_stats.then(ErrorStats::default);
                let weights = md.weights.as_deref().map(Vec::as_slice);
                let quantize =
                    |s: &_, src, sd, input: &[u8], r0, rows, cols, p: &mut [u8], sc: &mut [u8], zp, st| match (
                        self.method,
                        weights,
                    ) {
                        (Method::Mse, Some(w)) => crate::quant::imatrix::quantize_ct_rows_mse_at(
                            crate::quant::active_level(),
                            &ct::CtChunk { scheme: *s, src, scale_dtype: sd, input, row0: r0, rows, cols },
                            w,
                            ct::CtOutput { packed: p, scale: sc, zp },
                            st,
                        ),
                        (Method::Mse, None) => crate::quant::mse::quantize_ct_rows(
                            &ct::CtChunk { scheme: *s, src, scale_dtype: sd, input, row0: r0, rows, cols },
                            ct::CtOutput { packed: p, scale: sc, zp },
                            st,
                        ),
                        _ => ct::quantize_rows(
                            &ct::CtChunk { scheme: *s, src, scale_dtype: sd, input, row0: r0, rows, cols },
                            ct::CtOutput { packed: p, scale: sc, zp },
                            st,
                        ),
                    };
                quantize(
                    &md.scheme,
                    md.src_dtype,
                    md.scale_dtype,
                    input,
                    r0,
                    rows,
                    md.cols,
                    &mut packed,
                    &mut scale,
                    zp.as_deref_mut(),
                    stats.as_mut(),
                )
                .map_err(|e| anyhow::anyhow!("tensor `{}` (rows {r0}..{r1}): {e}", md.src))?;
                let p = &self.tensors[md.packed];
                pieces.push(Piece { file: p.file, offset: p.offset + (r0 * pc * 4) as u64, bytes: packed });
                let s = &self.tensors[md.scale];
                pieces.push(Piece {
                    file: s.file,
                    offset: s.offset + (r0 * sc * md.scale_dtype.size()) as u64,
                    bytes: scale,
                });
                if let (Some(zi), Some(zb)) = (md.zp, zp) {
                    let z = &self.tensors[zi];
                    let word_row = r0 / md.scheme.rows_per_zp_word();
                    pieces.push(Piece { file: z.file, offset: z.offset + (word_row * sc * 4) as u64, bytes: zb });
                }
                Ok((pieces, (self.module_record[m], stats), (rows * md.cols * md.in_size()) as u64))
            }
        }
    }

    /// Write config.json (and the shard index when sharded) into the package.
    pub fn write_side_files(&self, dir: &Path) -> Result<Vec<FileDigest>, crate::package::PackageError> {
        let mut out = Vec::new();
        let mut cfg = serde_json::to_string_pretty(&self.config).expect("JSON value serializes");
        cfg.push('\n');
        let sha = write_hashed(&dir.join("config.json"), cfg.as_bytes())?;
        out.push(FileDigest { path: "config.json".into(), sha256: sha, size: cfg.len() as u64 });
        if self.files.len() > 1 {
            let total: u64 = self.tensors.iter().map(|t| t.size).sum();
            let map: Vec<(String, String)> =
                self.tensors.iter().map(|t| (t.name.clone(), self.files[t.file].0.clone())).collect();
            let mut idx = serde_json::to_string_pretty(&ctf::sharded_index(total, &map)).expect("serializes");
            idx.push('\n');
            let name = "model.safetensors.index.json";
            let sha = write_hashed(&dir.join(name), idx.as_bytes())?;
            out.push(FileDigest { path: name.into(), sha256: sha, size: idx.len() as u64 });
        }
        Ok(out)
    }

    /// Per-tensor manifest records: one per quantized module (under its packed name) and one per
    /// kept tensor.
    pub fn records(&self) -> Vec<TensorRecord> {
        let mut out: Vec<TensorRecord> = self
            .tensors
            .iter()
            .filter_map(|t| match &t.role {
                Role::Copy { src, .. } | Role::DecodedFp8 { src } => Some(TensorRecord {
                    name: t.name.clone(),
                    shape: t.shape.iter().map(|&d| d as u64).collect(),
                    dtype_in: match &t.role {
                        Role::DecodedFp8 { .. } => self.fp8.get(src).map_or("FP8", |f| match f.format {
                            Fp8Format::E4M3 => "F8_E4M3",
                            Fp8Format::E5M2 => "F8_E5M2",
                        }),
                        _ => t.dtype,
                    }
                    .to_string(),
                    type_out: t.dtype.to_string(),
                    method: None,
                    bytes_out: t.size,
                    sqnr_db: None,
                    rel_rmse: None,
                    max_abs_err: None,
                    note: self.kept_notes.iter().find(|(n, _)| n == src).map(|(_, n)| n.clone()),
                }),
                Role::Packed(m) => {
                    let md = &self.modules[*m];
                    let bytes: u64 = [Some(md.packed), Some(md.scale), Some(md.shape_t), md.zp]
                        .into_iter()
                        .flatten()
                        .map(|i| self.tensors[i].size)
                        .sum();
                    Some(TensorRecord {
                        name: md.name.clone(),
                        shape: vec![md.rows as u64, md.cols as u64],
                        dtype_in: match (md.fp8, md.packed_src) {
                            (Some(Fp8Format::E4M3), _) => "F8_E4M3".to_string(),
                            (Some(Fp8Format::E5M2), _) => "F8_E5M2".to_string(),
                            (None, Some(bits)) => format!("PACKED_INT{bits}"),
                            (None, None) => format!("{:?}", md.src_dtype).to_uppercase(),
                        },
                        type_out: format!(
                            "pack-quantized int{} {}{}",
                            md.scheme.bits,
                            match md.scheme.strategy {
                                Strategy::Channel => "channel".to_string(),
                                Strategy::Group(g) => format!("g{g}"),
                            },
                            if md.scheme.symmetric { " sym" } else { " asym" }
                        ),
                        // Every compressed-tensors scheme has an mse search: the method asked for.
                        method: Some(self.method.name().into()),
                        bytes_out: bytes,
                        sqnr_db: None,
                        rel_rmse: None,
                        max_abs_err: None,
                        note: Some(md.note.clone()),
                    })
                }
                _ => None,
            })
            .collect();
        out.shrink_to_fit();
        out
    }
}
