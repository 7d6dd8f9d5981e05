//! compressed-tensors `pack-quantized` checkpoints (int4/int8 Linears, e.g. Kimi-K2-Thinking,
//! or our own `--target cuda` packages) read as a source: each packed Linear `P` is presented as
//! a virtual `P.weight` of shape `P.weight_shape`, decoded a few rows at a time, and its
//! `weight_packed`, `weight_scale`, `weight_shape` and `weight_zero_point` are consumed.
//!
//! Everything the config and the tensors say is checked against each other before anything is
//! planned (bits, group size or per-channel, symmetry, shapes, finite scales), and every mismatch
//! is an input error naming the tensor. Modules in `ignore` are ordinary dense `.weight` tensors
//! and stay what they are.

use crate::{Checkpoint, CheckpointError, Dtype, TensorView};
use modelpack_quant::packed::{PackedLayout, PackedTensors};
use modelpack_quant::{QuantError, SrcDtype};
use std::collections::{BTreeMap, BTreeSet};

/// One packed Linear.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeight {
    /// `P.weight_packed`.
    pub packed: String,
    /// `P.weight_scale`.
    pub scale: String,
    /// `P.weight_zero_point` (asymmetric only).
    pub zero_point: Option<String>,
    /// Codes, groups and symmetry.
    pub layout: PackedLayout,
    /// Dtype of the scales.
    pub scale_dtype: SrcDtype,
}

impl PackedWeight {
    /// A short description for reports: `int4 g32 sym (BF16 scales)`.
    pub fn describe(&self) -> String {
        let l = &self.layout;
        let g = if l.group == l.cols { "channel".to_string() } else { format!("g{}", l.group) };
        let s = if l.symmetric { "sym" } else { "asym" };
        format!("int{} {g} {s} ({:?} scales)", l.bits, self.scale_dtype)
            .replace("(BF16", "(bf16")
            .replace("(F16", "(f16")
            .replace("(F32", "(f32")
    }
}

/// Every packed Linear of a checkpoint (keyed by its virtual `P.weight` name) and the tensors
/// their decoding consumes.
#[derive(Debug, Clone, Default)]
pub struct PackedMap {
    weights: BTreeMap<String, PackedWeight>,
    consumed: BTreeSet<String>,
}

fn err(tensor: &str, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Quantized { tensor: tensor.to_string(), message: message.into() }
}

/// What one config group promises about its weights.
#[derive(Debug, Clone, Copy)]
struct GroupSpec {
    bits: u32,
    symmetric: bool,
    /// `None`: per channel.
    group: Option<usize>,
}

fn group_specs(qc: &serde_json::Value, first: &str) -> Result<Vec<GroupSpec>, CheckpointError> {
    let method = qc.get("quant_method").and_then(|m| m.as_str()).unwrap_or("");
    if method != "compressed-tensors" {
        return Err(err(
            first,
            format!("packed int weights with quantization_config.quant_method {method:?}: only compressed-tensors pack-quantized is read"),
        ));
    }
    let top_format = qc.get("format").and_then(|f| f.as_str());
    let groups = qc
        .get("config_groups")
        .and_then(|g| g.as_object())
        .filter(|g| !g.is_empty())
        .ok_or_else(|| err(first, "compressed-tensors quantization_config without config_groups"))?;
    let mut out = Vec::new();
    for (gname, g) in groups {
        let format = g.get("format").and_then(|f| f.as_str()).or(top_format).unwrap_or("");
        if format != "pack-quantized" {
            return Err(err(
                first,
                format!("config group {gname} has format {format:?}: only \"pack-quantized\" int weights are read"),
            ));
        }
        let w = g
            .get("weights")
            .filter(|w| w.is_object())
            .ok_or_else(|| err(first, format!("config group {gname} has no `weights` scheme")))?;
        let ty = w.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let bits = w.get("num_bits").and_then(|b| b.as_u64()).unwrap_or(0);
        if ty != "int" || !matches!(bits, 4 | 8) {
            return Err(err(
                first,
                format!("config group {gname}: weights of type {ty:?} with {bits} bits (only int4 and int8 are read)"),
            ));
        }
        if let Some(a) = w.get("actorder").filter(|a| !a.is_null() && a.as_bool() != Some(false)) {
            return Err(err(
                first,
                format!("config group {gname}: activation ordering (actorder {a}) is not supported"),
            ));
        }
        let symmetric = w.get("symmetric").and_then(|s| s.as_bool()).unwrap_or(true);
        let strategy = w.get("strategy").and_then(|s| s.as_str()).unwrap_or("");
        let group = match strategy {
            "channel" => None,
            "group" => Some(w.get("group_size").and_then(|g| g.as_u64()).filter(|&g| g > 0).ok_or_else(|| {
                err(first, format!("config group {gname}: strategy group without a positive group_size"))
            })? as usize),
            s => {
                return Err(err(
                    first,
                    format!("config group {gname}: weight strategy {s:?} (only group and channel are read)"),
                ))
            }
        };
        out.push(GroupSpec { bits: bits as u32, symmetric, group });
    }
    Ok(out)
}

fn int_values(t: &TensorView<'_>) -> Option<Vec<i64>> {
    match t.dtype {
        Dtype::I64 => Some(t.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()),
        Dtype::I32 => {
            Some(t.data.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap()))).collect())
        }
        _ => None,
    }
}

impl PackedMap {
    /// Read and check the packed Linears of `ckpt`. A checkpoint without `*.weight_packed`
    /// tensors gives an empty map; one with them must describe them in its config.
    pub fn of(ckpt: &Checkpoint) -> Result<PackedMap, CheckpointError> {
        let packed: Vec<TensorView<'_>> = ckpt.tensors().filter(|t| t.name.ends_with(".weight_packed")).collect();
        let Some(first) = packed.first() else { return Ok(PackedMap::default()) };
        let qc = ckpt.config().and_then(|c| c.raw.get("quantization_config")).filter(|q| q.is_object());
        let Some(qc) = qc else {
            return Err(err(first.name, "packed int weights but config.json has no quantization_config"));
        };
        let specs = group_specs(qc, first.name)?;
        let mut map = PackedMap::default();
        for t in &packed {
            let m = t.name.strip_suffix(".weight_packed").expect("filtered on the suffix");
            let need = |suffix: &str| {
                let n = format!("{m}.{suffix}");
                ckpt.tensor(&n).ok_or_else(|| err(t.name, format!("packed weight without `{n}`")))
            };
            let (scale, shape_t) = (need("weight_scale")?, need("weight_shape")?);
            let zp = ckpt.tensor(&format!("{m}.weight_zero_point"));
            let weight = format!("{m}.weight");
            if ckpt.tensor(&weight).is_some() {
                return Err(err(&weight, "both a dense weight and a packed one (`weight_packed`) for the same module"));
            }
            if ckpt.tensor(&format!("{m}.weight_g_idx")).is_some() {
                return Err(err(t.name, "`weight_g_idx` (activation ordering) is not supported"));
            }
            if t.dtype != Dtype::I32 || t.shape.len() != 2 {
                return Err(err(
                    t.name,
                    format!("packed weight of dtype {} and shape {:?} (needs 2-D I32)", t.dtype, t.shape),
                ));
            }
            let dims = int_values(&shape_t).filter(|d| d.len() == 2 && d.iter().all(|&x| x > 0)).ok_or_else(|| {
                err(
                    shape_t.name,
                    format!(
                        "dtype {} shape {:?}: needs two positive I32/I64 values [out, in]",
                        shape_t.dtype, shape_t.shape
                    ),
                )
            })?;
            let (rows, cols) = (dims[0] as usize, dims[1] as usize);
            let scale_dtype = scale
                .dtype
                .as_src()
                .ok_or_else(|| err(scale.name, format!("scale dtype {} (needs F32, BF16 or F16)", scale.dtype)))?;
            if scale.shape.len() != 2 || scale.shape[0] != rows || scale.shape[1] == 0 || cols % scale.shape[1] != 0 {
                return Err(err(
                    scale.name,
                    format!(
                        "scale of shape {:?} does not fit a [{rows}, {cols}] weight ([out, in / group])",
                        scale.shape
                    ),
                ));
            }
            let group = cols / scale.shape[1];
            // The config group that describes this weight: its group size (or channel) and bits
            // must agree with the tensors.
            let spec = specs
                .iter()
                .find(|s| {
                    let g_ok = match s.group {
                        None => scale.shape[1] == 1,
                        Some(g) => g == group || (scale.shape[1] == 1 && g >= cols),
                    };
                    g_ok && t.shape == [rows, cols.div_ceil(32 / s.bits as usize)]
                })
                .ok_or_else(|| {
                    err(
                        t.name,
                        format!(
                            "packed [{}, {}] with scale {:?} for a [{rows}, {cols}] weight matches no config group \
                             ({}), e.g. int4 needs [{rows}, {}]",
                            t.shape[0],
                            t.shape[1],
                            scale.shape,
                            specs
                                .iter()
                                .map(|s| format!(
                                    "int{} {}",
                                    s.bits,
                                    s.group.map_or("channel".into(), |g| format!("g{g}"))
                                ))
                                .collect::<Vec<_>>()
                                .join(", "),
                            cols.div_ceil(8)
                        ),
                    )
                })?;
            let layout = PackedLayout { rows, cols, bits: spec.bits, group, symmetric: spec.symmetric };
            match (&zp, spec.symmetric) {
                (Some(z), true) => return Err(err(z.name, "zero point of a weight the config calls symmetric")),
                (None, false) => return Err(err(t.name, format!("asymmetric weight without `{m}.weight_zero_point`"))),
                (Some(z), false) if z.dtype != Dtype::I32 || z.shape != [layout.zp_rows(), layout.groups()] => {
                    return Err(err(
                        z.name,
                        format!(
                            "zero point of dtype {} shape {:?}, needs I32 [{}, {}] (packed along the rows)",
                            z.dtype,
                            z.shape,
                            layout.zp_rows(),
                            layout.groups()
                        ),
                    ))
                }
                _ => {}
            }
            // Scales: finite, and finite times the largest code difference in their dtype.
            let top = (1u32 << spec.bits) as f32;
            for i in 0..rows * layout.groups() {
                let s = modelpack_quant::convert::load(scale_dtype, scale.data, i);
                if !(s * top).is_finite() {
                    return Err(err(
                        scale.name,
                        format!("scale {s} at index {i}: not finite (or its products overflow f32)"),
                    ));
                }
            }
            for n in [t.name, scale.name, shape_t.name] {
                map.consumed.insert(n.to_string());
            }
            if let Some(z) = &zp {
                map.consumed.insert(z.name.to_string());
            }
            map.weights.insert(
                weight,
                PackedWeight {
                    packed: t.name.to_string(),
                    scale: scale.name.to_string(),
                    zero_point: zp.map(|z| z.name.to_string()),
                    layout,
                    scale_dtype,
                },
            );
        }
        for t in ckpt.tensors() {
            for suffix in [".weight_scale", ".weight_shape", ".weight_zero_point"] {
                if t.name.ends_with(suffix) && !map.consumed.contains(t.name) {
                    return Err(err(t.name, "a quantization tensor with no `weight_packed` beside it"));
                }
            }
        }
        Ok(map)
    }

    /// Whether the checkpoint has packed weights.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Number of packed weights.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// The packed weight behind virtual weight `name` (`P.weight`).
    pub fn get(&self, name: &str) -> Option<&PackedWeight> {
        self.weights.get(name)
    }

    /// Virtual weights (`P.weight`) and their `[out, in]` shapes, for planners that see the
    /// checkpoint as dense tensors.
    pub fn virtual_weights(&self) -> impl Iterator<Item = (&str, [usize; 2])> {
        self.weights.iter().map(|(n, w)| (n.as_str(), [w.layout.rows, w.layout.cols]))
    }

    /// Whether `name` is a packed, scale, shape or zero-point tensor (decoded into a virtual
    /// weight, never copied as it is).
    pub fn is_consumed(&self, name: &str) -> bool {
        self.consumed.contains(name)
    }

    /// The raw tensors of packed weight `name`.
    pub fn tensors<'a>(
        &self,
        ckpt: &'a Checkpoint,
        name: &str,
    ) -> Result<(PackedTensors<'a>, PackedLayout), QuantError> {
        let w = self.weights.get(name).ok_or_else(|| QuantError::Shape(format!("`{name}` is not a packed weight")))?;
        let get = |n: &str| ckpt.tensor(n).map(|t| t.data).ok_or_else(|| QuantError::Shape(format!("`{n}` missing")));
        let zero_points = match &w.zero_point {
            Some(z) => Some(get(z)?),
            None => None,
        };
        Ok((
            PackedTensors { words: get(&w.packed)?, scales: get(&w.scale)?, scale_dtype: w.scale_dtype, zero_points },
            w.layout,
        ))
    }

    /// Decode `out.len() / cols` rows of virtual weight `name` from row `row0`.
    pub fn dequantize_rows(
        &self,
        ckpt: &Checkpoint,
        name: &str,
        row0: usize,
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        let (t, l) = self.tensors(ckpt, name)?;
        modelpack_quant::packed::dequantize_rows(t, &l, row0, out)
    }
}
