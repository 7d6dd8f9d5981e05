//! compressed-tensors checkpoint metadata: the `quantization_config` that vLLM and HF
//! transformers read from config.json, and the sharded-checkpoint index.
//!
//! The key set mirrors what compressed-tensors 0.20 itself writes (see the fixtures in
//! `fixtures/compressed-tensors/*/config.json`, written by compressed-tensors 0.20 itself): loaders reject unknown keys, and without
//! `"quantization_status": "compressed"` transformers silently loads random weights.

use crate::FormatError;
use serde_json::{json, Map, Value};

/// The compressed-tensors version whose output format we reproduce.
pub const COMPRESSED_TENSORS_VERSION: &str = "0.20.0";

/// How a group's scales are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtStrategy {
    /// One scale per output row (`group_size: null`), shape `[out, 1]`.
    Channel,
    /// One scale per run of `n` inputs in a row, shape `[out, in / n]`.
    Group(u32),
}

/// One entry of `config_groups`: a weight scheme and the modules it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtGroup {
    /// Module targets: `["Linear"]` for the default scheme, `["re:.*down_proj$"]` style regexes
    /// (or exact module names) for modules that fall back to another scheme.
    pub targets: Vec<String>,
    /// 4 or 8.
    pub num_bits: u32,
    /// Symmetric (no zero point) or asymmetric.
    pub symmetric: bool,
    /// Per-channel or group-wise scales.
    pub strategy: CtStrategy,
}

/// The `quantization_config` object for weight-only pack-quantized groups, `group_0..N` in the
/// order given; `ignore` lists module names kept unquantized (at least `lm_head`).
///
/// Keys are in the order compressed-tensors' own config.json has them (sorted).
pub fn quantization_config(groups: &[CtGroup], ignore: &[String]) -> Value {
    let mut config_groups = Map::new();
    for (i, g) in groups.iter().enumerate() {
        let (strategy, group_size) = match g.strategy {
            CtStrategy::Channel => ("channel", Value::Null),
            CtStrategy::Group(n) => ("group", json!(n)),
        };
        config_groups.insert(
            format!("group_{i}"),
            json!({
                "format": "pack-quantized",
                "input_activations": null,
                "output_activations": null,
                "targets": g.targets,
                "weights": {
                    "dynamic": false,
                    "group_size": group_size,
                    "num_bits": g.num_bits,
                    "strategy": strategy,
                    "symmetric": g.symmetric,
                    "type": "int",
                },
            }),
        );
    }
    json!({
        "config_groups": config_groups,
        "format": "pack-quantized",
        "global_compression_ratio": null,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "moe_sparsity_config": null,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": COMPRESSED_TENSORS_VERSION,
    })
}

/// config.json with `quantization_config` added and every other key unchanged.
///
/// If the original keys are sorted (as `save_pretrained` writes them) the new key goes in its
/// sorted place, else at the end. An existing `quantization_config` is an error unless
/// `replace` is set: re-quantizing an already quantized model loses quality.
pub fn with_quantization_config(
    config: &Value,
    quantization_config: Value,
    replace: bool,
) -> Result<Value, FormatError> {
    let obj = config
        .as_object()
        .ok_or_else(|| FormatError::BadConfig { key: "(root)".into(), reason: "is not a JSON object".into() })?;
    if obj.contains_key("quantization_config") && !replace {
        return Err(FormatError::BadConfig {
            key: "quantization_config".into(),
            reason: "is already present: the model is already quantized".into(),
        });
    }
    let sorted = obj.keys().zip(obj.keys().skip(1)).all(|(a, b)| a <= b);
    let mut out = Map::new();
    let mut pending = Some(quantization_config);
    for (k, v) in obj {
        if k == "quantization_config" {
            continue;
        }
        if sorted && k.as_str() > "quantization_config" {
            if let Some(q) = pending.take() {
                out.insert("quantization_config".into(), q);
            }
        }
        out.insert(k.clone(), v.clone());
    }
    if let Some(q) = pending.take() {
        out.insert("quantization_config".into(), q);
    }
    Ok(Value::Object(out))
}

/// The file name of shard `index` (1-based) of `count`: `model-00001-of-00003.safetensors`.
pub fn shard_file_name(index: usize, count: usize) -> String {
    format!("model-{index:05}-of-{count:05}.safetensors")
}

/// `model.safetensors.index.json`: `{"metadata": {"total_size": N}, "weight_map": {...}}` with
/// the weight map sorted by tensor name (as transformers writes it). `total_size` is the sum of
/// the tensor data bytes (headers excluded).
pub fn sharded_index(total_size: u64, weight_map: &[(String, String)]) -> Value {
    let mut entries: Vec<&(String, String)> = weight_map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let map: Map<String, Value> = entries.into_iter().map(|(t, f)| (t.clone(), Value::String(f.clone()))).collect();
    json!({
        "metadata": { "total_size": total_size },
        "weight_map": map,
    })
}
