//! FP8 checkpoints: which weights are `F8_E4M3`/`F8_E5M2`, the scale tensor of each and how it
//! covers the weight, read from `config.json`'s `quantization_config` and checked against the
//! shapes before anything is planned.
//!
//! Two conventions exist and both are followed as the references do:
//! - `quant_method: "fp8"` (DeepSeek-V3/R1, Kimi-K2, transformers' finegrained-fp8, Qwen3-FP8):
//!   scale `<weight>_scale_inv` (multiplied despite the name), blocks from `weight_block_size`;
//!   llama.cpp's `dequant_model` dequantizes exactly the weights that have such a scale.
//! - `quant_method: "compressed-tensors"`, `format: "float-quantized"` (llm-compressor FP8):
//!   scale `<weight>_scale`, strategy `tensor`, `channel` or `block` (`block_structure`).
//!
//! Without a block size the scale's shape says how it broadcasts: one value per tensor, or
//! `[rows, 1]` (or `[rows]`) per output channel. Activation scales (`*.activation_scale`,
//! `*.input_scale`) are consumed too: they describe inputs at run time, not weights.

use crate::{Checkpoint, CheckpointError, Dtype, TensorView};
use modelpack_quant::fp8::{Fp8Format, Fp8Layout, Fp8Scales};
use modelpack_quant::{QuantError, SrcDtype};
use std::collections::{BTreeMap, BTreeSet};

/// One FP8 weight and its scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Weight {
    /// Name of the scale tensor.
    pub scale: String,
    /// Element encoding of the weight.
    pub format: Fp8Format,
    /// How the scale grid covers the weight (per matrix of a 3-D stack).
    pub layout: Fp8Layout,
    /// Dtype of the scale tensor.
    pub scale_dtype: SrcDtype,
}

/// Every FP8 weight of a checkpoint, and the tensors its decoding consumes.
#[derive(Debug, Clone, Default)]
pub struct Fp8Map {
    weights: BTreeMap<String, Fp8Weight>,
    consumed: BTreeSet<String>,
    /// `quantization_config.quant_method` when FP8 weights were found (for reports).
    pub quant_method: Option<String>,
}

fn err(tensor: &str, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Quantized { tensor: tensor.to_string(), message: message.into() }
}

impl Fp8Map {
    /// Read and check the FP8 weights of `ckpt`. A checkpoint without FP8 tensors gives an
    /// empty map (whatever its config says); one with FP8 tensors must describe them.
    pub fn of(ckpt: &Checkpoint) -> Result<Fp8Map, CheckpointError> {
        let fp8: Vec<TensorView<'_>> = ckpt
            .tensors()
            .filter(|t| matches!(t.dtype, Dtype::F8_E4M3 | Dtype::F8_E5M2 | Dtype::F8_E4M3FNUZ | Dtype::F8_E5M2FNUZ))
            .collect();
        let Some(first) = fp8.first() else { return Ok(Fp8Map::default()) };
        let qc = ckpt.config().and_then(|c| c.raw.get("quantization_config"));
        let Some(qc) = qc.filter(|q| q.is_object()) else {
            return Err(err(
                first.name,
                format!(
                    "dtype {} but config.json has no quantization_config: the scales cannot be interpreted",
                    first.dtype
                ),
            ));
        };
        let method = qc.get("quant_method").and_then(|m| m.as_str()).unwrap_or("");
        // (scale suffix, block size, fmt, compressed-tensors strategy without blocks)
        let (suffix, block, fmt, strategy) = match method {
            "fp8" => {
                let fmt = match qc.get("fmt") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) if s == "e4m3" => Some(Fp8Format::E4M3),
                    Some(serde_json::Value::String(s)) if s == "e5m2" => Some(Fp8Format::E5M2),
                    Some(other) => {
                        return Err(err(
                            first.name,
                            format!("quantization_config.fmt {other} is not \"e4m3\" or \"e5m2\""),
                        ))
                    }
                };
                ("_scale_inv", block_size(qc.get("weight_block_size"), first.name)?, fmt, None)
            }
            "compressed-tensors" => {
                let format = qc.get("format").and_then(|f| f.as_str()).unwrap_or("");
                if format != "float-quantized" {
                    return Err(err(
                        first.name,
                        format!(
                            "dtype {} in a compressed-tensors checkpoint of format {format:?}: only \
                             \"float-quantized\" FP8 weights can be read",
                            first.dtype
                        ),
                    ));
                }
                let groups = qc.get("config_groups").and_then(|g| g.as_object());
                let w = groups
                    .filter(|g| g.len() == 1)
                    .and_then(|g| g.values().next())
                    .and_then(|g| g.get("weights"))
                    .ok_or_else(|| {
                        err(first.name, "compressed-tensors FP8 needs exactly one config group with `weights`")
                    })?;
                let strategy = w.get("strategy").and_then(|s| s.as_str()).unwrap_or("");
                let block = match strategy {
                    "tensor" | "channel" => None,
                    "block" => block_size(w.get("block_structure"), first.name)?,
                    s => {
                        return Err(err(
                            first.name,
                            format!("compressed-tensors FP8 weight strategy {s:?} is not tensor, channel or block"),
                        ))
                    }
                };
                if w.get("num_bits").and_then(|b| b.as_u64()) != Some(8)
                    || w.get("type").and_then(|t| t.as_str()) != Some("float")
                {
                    return Err(err(first.name, "compressed-tensors weights are not 8-bit float"));
                }
                let strategy = match strategy {
                    "tensor" => Some(PerTensor),
                    "channel" => Some(PerChannel),
                    _ => None,
                };
                ("_scale", block, None, strategy)
            }
            m => {
                return Err(err(
                    first.name,
                    format!("dtype {} with quantization_config.quant_method {m:?}: only \"fp8\" and \"compressed-tensors\" float-quantized are read", first.dtype),
                ))
            }
        };
        let mut map = Fp8Map { quant_method: Some(method.to_string()), ..Fp8Map::default() };
        for t in &fp8 {
            let format = match t.dtype {
                Dtype::F8_E4M3 => Fp8Format::E4M3,
                Dtype::F8_E5M2 => Fp8Format::E5M2,
                d => return Err(err(t.name, format!("dtype {d} (the AMD fnuz FP8 variants) is not supported"))),
            };
            if let Some(f) = fmt.filter(|&f| f != format) {
                return Err(err(t.name, format!("dtype {} but quantization_config.fmt says {f:?}", t.dtype)));
            }
            let scale_name = format!("{}{suffix}", t.name);
            let s = ckpt.tensor(&scale_name).ok_or_else(|| {
                err(t.name, format!("FP8 weight without its scale tensor `{scale_name}` (quant_method {method:?})"))
            })?;
            let scale_dtype = s
                .dtype
                .as_src()
                .ok_or_else(|| err(&scale_name, format!("scale dtype {} (needs F32, BF16 or F16)", s.dtype)))?;
            let layout = layout_of(t.name, t.shape, &scale_name, s.shape, block)?;
            let (per_tensor, per_channel) = (layout.block_rows == layout.rows, layout.block_rows == 1);
            match strategy {
                Some(PerTensor) if !(per_tensor && layout.block_cols == layout.cols) => {
                    return Err(err(
                        t.name,
                        format!(
                            "scale `{scale_name}` of shape {:?} is not one per tensor (strategy \"tensor\")",
                            s.shape
                        ),
                    ))
                }
                Some(PerChannel) if !(per_channel && layout.block_cols == layout.cols) => {
                    return Err(err(
                        t.name,
                        format!(
                            "scale `{scale_name}` of shape {:?} is not one per row (strategy \"channel\")",
                            s.shape
                        ),
                    ))
                }
                _ => {}
            }
            map.consumed.insert(scale_name.clone());
            map.weights.insert(t.name.to_string(), Fp8Weight { scale: scale_name, format, layout, scale_dtype });
        }
        for t in ckpt.tensors() {
            if t.name.ends_with(".activation_scale")
                || t.name.ends_with("_activation_scale")
                || t.name.ends_with(".input_scale")
            {
                map.consumed.insert(t.name.to_string());
            } else if let Some(w) = t.name.strip_suffix(suffix) {
                if !map.weights.contains_key(w) && ckpt.tensor(w).is_some() {
                    return Err(err(
                        t.name,
                        format!("scale of `{w}`, which is not an FP8 weight (pre-scaled weights are not supported)"),
                    ));
                }
            }
        }
        Ok(map)
    }

    /// Whether the checkpoint has FP8 weights.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Number of FP8 weights.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// The FP8 description of weight `name`, if it is one.
    pub fn get(&self, name: &str) -> Option<&Fp8Weight> {
        self.weights.get(name)
    }

    /// Whether `name` is a scale (or activation scale) consumed by decoding, never an output.
    pub fn is_consumed(&self, name: &str) -> bool {
        self.consumed.contains(name)
    }

    /// Decode `out.len() / cols` rows of FP8 weight `w` (a view of it), from flattened row `row0`.
    pub fn dequantize_rows(
        &self,
        ckpt: &Checkpoint,
        w: &TensorView<'_>,
        row0: usize,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        self.source(ckpt, w)?.dequantize_rows(row0, out)
    }

    /// FP8 weight `w` with its scale tensor looked up once: a task decodes many small row
    /// chunks of one weight, and name lookups per chunk would cost more than small decodes.
    pub fn source<'a>(&'a self, ckpt: &'a Checkpoint, w: &TensorView<'a>) -> Result<Fp8Source<'a>, QuantError> {
        let f = self.weights.get(w.name).ok_or_else(|| QuantError::Shape(format!("`{}` is not FP8", w.name)))?;
        let s = ckpt.tensor(&f.scale).ok_or_else(|| QuantError::Shape(format!("scale `{}` missing", f.scale)))?;
        Ok(Fp8Source { codes: w.data, scales: Fp8Scales { bytes: s.data, dtype: f.scale_dtype }, weight: f })
    }
}

/// One FP8 weight ready to decode: its codes, its scale bytes and how they cover it.
#[derive(Debug, Clone, Copy)]
pub struct Fp8Source<'a> {
    codes: &'a [u8],
    scales: Fp8Scales<'a>,
    weight: &'a Fp8Weight,
}

impl Fp8Source<'_> {
    /// Decode `out.len() / cols` rows from flattened row `row0` (code × block scale, f32).
    pub fn dequantize_rows(&self, row0: usize, out: &mut [f32]) -> Result<(), QuantError> {
        let cols = self.weight.layout.cols;
        let n = out.len() / cols.max(1);
        let codes = self
            .codes
            .get(row0 * cols..(row0 + n) * cols)
            .ok_or_else(|| QuantError::Shape(format!("rows {row0}..{} out of the FP8 weight", row0 + n)))?;
        modelpack_quant::fp8::dequantize_rows(self.weight.format, codes, self.scales, &self.weight.layout, row0, out)
    }

    /// Decode and quantize `rows` rows from flattened row `row0` to a legacy GGUF type in one
    /// pass ([`modelpack_quant::fp8::quantize_gguf_rows`]: the bytes and statistics of a decode
    /// followed by one quantizer call). `Ok(false)`: a NaN/Inf code or non-finite product, for
    /// the caller's two-step path to report.
    pub fn quantize_gguf_rows(
        &self,
        ty: modelpack_quant::GgmlType,
        row0: usize,
        rows: usize,
        out: &mut [u8],
        stats: Option<&mut modelpack_quant::ErrorStats>,
    ) -> Result<bool, QuantError> {
        let cols = self.weight.layout.cols;
        let codes = self
            .codes
            .get(row0 * cols..(row0 + rows) * cols)
            .ok_or_else(|| QuantError::Shape(format!("rows {row0}..{} out of the FP8 weight", row0 + rows)))?;
        modelpack_quant::fp8::quantize_gguf_rows(
            ty,
            self.weight.format,
            codes,
            self.scales,
            &self.weight.layout,
            row0,
            out,
            stats,
        )
    }
}

/// The scale granularity compressed-tensors' config promises.
#[derive(Debug, Clone, Copy)]
enum Strategy {
    PerTensor,
    PerChannel,
}
use Strategy::{PerChannel, PerTensor};

fn block_size(v: Option<&serde_json::Value>, tensor: &str) -> Result<Option<[usize; 2]>, CheckpointError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(a)) if a.len() == 2 => {
            let d: Vec<usize> = a.iter().filter_map(|x| x.as_u64()).filter(|&x| x > 0).map(|x| x as usize).collect();
            if d.len() == 2 {
                Ok(Some([d[0], d[1]]))
            } else {
                Err(err(tensor, format!("block size {v:?} is not two positive integers", v = a)))
            }
        }
        Some(other) => Err(err(tensor, format!("block size {other} is not two positive integers"))),
    }
}

fn layout_of(
    name: &str,
    shape: &[usize],
    scale_name: &str,
    sshape: &[usize],
    block: Option<[usize; 2]>,
) -> Result<Fp8Layout, CheckpointError> {
    let (lead, rows, cols) = match shape {
        [r, c] => (vec![], *r, *c),
        [e, r, c] => (vec![*e], *r, *c),
        _ => return Err(err(name, format!("FP8 weight of shape {shape:?}: only 2-D and 3-D weights are read"))),
    };
    let numel: usize = sshape.iter().product();
    let layout = match block {
        Some([br, bc]) => {
            let mut want = lead.clone();
            want.extend([rows.div_ceil(br), cols.div_ceil(bc)]);
            if sshape != want.as_slice() {
                return Err(err(
                    name,
                    format!(
                        "scale `{scale_name}` has shape {sshape:?} but {br}x{bc} blocks of a {shape:?} weight need {want:?}"
                    ),
                ));
            }
            Fp8Layout { rows, cols, block_rows: br, block_cols: bc }
        }
        None if lead.is_empty() && numel == 1 => Fp8Layout { rows, cols, block_rows: rows, block_cols: cols },
        None if lead.is_empty() && (sshape == [rows, 1] || sshape == [rows]) => {
            Fp8Layout { rows, cols, block_rows: 1, block_cols: cols }
        }
        None if !lead.is_empty() && (sshape == [lead[0], rows, 1] || sshape == [lead[0], rows]) => {
            Fp8Layout { rows, cols, block_rows: 1, block_cols: cols }
        }
        None if !lead.is_empty() && (sshape == [lead[0]] || sshape == [lead[0], 1, 1]) => {
            Fp8Layout { rows, cols, block_rows: rows, block_cols: cols }
        }
        None => {
            return Err(err(
                name,
                format!(
                    "scale `{scale_name}` has shape {sshape:?}, neither one per tensor nor one per row of {shape:?} \
                     (and no block size is configured)"
                ),
            ))
        }
    };
    Ok(layout)
}
