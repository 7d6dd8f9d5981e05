//! llama-family conversion: config.json → GGUF hyperparameters, HF → GGUF tensor names, and the
//! q/k row permutation, following llama.cpp's `convert_hf_to_gguf.py` (`LlamaModel`,
//! `Qwen2Model`).
//!
//! Supported: `LlamaForCausalLM` and `MistralForCausalLM` (arch `llama`, SmolLM included) and
//! `Qwen2ForCausalLM` (arch `qwen2`). The `llama` arch uses llama.cpp's "normal" RoPE, which
//! pairs adjacent dimensions, so the converter permutes q/k rows from HF's rotate-half layout;
//! `qwen2` uses NeoX RoPE (rotate-half, like HF), so it is not permuted.

use super::MetaValue;
use crate::FormatError;
use serde_json::Value;

/// The GGUF architecture name (`llama` or `qwen2`) for config.json's `architectures[0]`.
pub fn gguf_arch(config: &Value) -> Result<&'static str, FormatError> {
    let archs = config.get("architectures").and_then(Value::as_array).ok_or_else(|| FormatError::BadConfig {
        key: "architectures".into(),
        reason: "is missing or not a list".into(),
    })?;
    let first = archs.first().and_then(Value::as_str).ok_or_else(|| FormatError::BadConfig {
        key: "architectures".into(),
        reason: "is empty or not a list of strings".into(),
    })?;
    match first {
        "LlamaForCausalLM" | "MistralForCausalLM" => Ok("llama"),
        "Qwen2ForCausalLM" => Ok("qwen2"),
        other => Err(FormatError::UnsupportedArchitecture(other.to_owned())),
    }
}

fn bad(key: &str, reason: impl Into<String>) -> FormatError {
    FormatError::BadConfig { key: key.into(), reason: reason.into() }
}

/// A positive integer that fits GGUF's u32 fields.
fn get_u32(config: &Value, key: &str) -> Result<Option<u32>, FormatError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0)
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(key, format!("must be a positive 32-bit integer, found {v}"))),
    }
}

fn req_u32(config: &Value, key: &str) -> Result<u32, FormatError> {
    get_u32(config, key)?.ok_or_else(|| bad(key, "is missing"))
}

fn get_f64(v: Option<&Value>, key: &str) -> Result<Option<f64>, FormatError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| bad(key, format!("must be a finite number, found {x}"))),
    }
}

/// RoPE parameters: transformers ≥ 5 nests them in `rope_parameters`, older configs have
/// `rope_theta` and `rope_scaling` at the top level.
fn rope_params(config: &Value) -> Option<&serde_json::Map<String, Value>> {
    config
        .get("rope_parameters")
        .and_then(Value::as_object)
        .or_else(|| config.get("rope_scaling").and_then(Value::as_object))
}

fn rope_theta(config: &Value) -> Result<f64, FormatError> {
    if let Some(t) = get_f64(config.get("rope_theta"), "rope_theta")? {
        return Ok(t);
    }
    if let Some(p) = config.get("rope_parameters").and_then(Value::as_object) {
        if let Some(t) = get_f64(p.get("rope_theta"), "rope_parameters.rope_theta")? {
            return Ok(t);
        }
    }
    // transformers' (and llama.cpp's) default.
    Ok(10000.0)
}

/// Model dimensions read from config.json, validated for consistency.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaDims {
    /// `llama` or `qwen2`.
    pub arch: &'static str,
    /// `hidden_size`.
    pub hidden: u32,
    /// `intermediate_size`.
    pub intermediate: u32,
    /// `num_hidden_layers`.
    pub layers: u32,
    /// `num_attention_heads`.
    pub heads: u32,
    /// `num_key_value_heads` (defaults to `heads`).
    pub kv_heads: u32,
    /// `head_dim` (defaults to `hidden / heads`).
    pub head_dim: u32,
    /// `vocab_size`.
    pub vocab: u32,
    /// `max_position_embeddings`.
    pub context: u32,
    /// `tie_word_embeddings` (false when absent, as in `LlamaConfig`).
    pub tied_embeddings: bool,
}

impl LlamaDims {
    /// Read and check the dimensions of a supported architecture.
    pub fn from_config(config: &Value) -> Result<Self, FormatError> {
        let arch = gguf_arch(config)?;
        let hidden = req_u32(config, "hidden_size")?;
        let heads = req_u32(config, "num_attention_heads")?;
        let kv_heads = get_u32(config, "num_key_value_heads")?.unwrap_or(heads);
        if heads % kv_heads != 0 {
            return Err(bad("num_key_value_heads", format!("{kv_heads} does not divide num_attention_heads {heads}")));
        }
        let head_dim = match get_u32(config, "head_dim")? {
            Some(d) => d,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(bad("hidden_size", format!("{hidden} is not divisible by num_attention_heads {heads}")))
            }
        };
        if head_dim % 2 != 0 {
            return Err(bad("head_dim", format!("{head_dim} is odd; RoPE needs pairs")));
        }
        let tied_embeddings = match config.get("tie_word_embeddings") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(bad("tie_word_embeddings", format!("is not a bool: {v}"))),
        };
        Ok(LlamaDims {
            arch,
            hidden,
            intermediate: req_u32(config, "intermediate_size")?,
            layers: req_u32(config, "num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            vocab: req_u32(config, "vocab_size")?,
            context: req_u32(config, "max_position_embeddings")?,
            tied_embeddings,
        })
    }

    /// The HF shape `[rows, cols]` (or `[rows]`) that tensor `hf` must have, if it is a known
    /// llama-family tensor: the pipeline checks shapes against config.json with it.
    pub fn expected_shape(&self, hf: &str) -> Option<Vec<usize>> {
        let h = self.hidden as usize;
        let q = (self.heads * self.head_dim) as usize;
        let kv = (self.kv_heads * self.head_dim) as usize;
        let ff = self.intermediate as usize;
        let v = self.vocab as usize;
        match hf {
            "model.embed_tokens.weight" | "lm_head.weight" => return Some(vec![v, h]),
            "model.norm.weight" => return Some(vec![h]),
            _ => {}
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (n, suffix) = rest.split_once('.')?;
        if n.parse::<u32>().ok()? >= self.layers {
            return None;
        }
        Some(match suffix {
            "input_layernorm.weight" | "post_attention_layernorm.weight" => vec![h],
            "self_attn.q_proj.weight" => vec![q, h],
            "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![kv, h],
            "self_attn.o_proj.weight" => vec![h, q],
            "self_attn.q_proj.bias" => vec![q],
            "self_attn.k_proj.bias" | "self_attn.v_proj.bias" => vec![kv],
            "self_attn.o_proj.bias" => vec![h],
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![ff, h],
            "mlp.down_proj.weight" => vec![h, ff],
            _ => return None,
        })
    }
}

/// GGUF architecture name and hyperparameter metadata for config.json, in the key order
/// llama.cpp's converter writes them: `general.architecture`, `general.name`, then
/// `{arch}.context_length`, `embedding_length`, `feed_forward_length`, `block_count`,
/// `attention.head_count`, `attention.head_count_kv`, `rope.freq_base`,
/// `attention.layer_norm_rms_epsilon`, `attention.key_length`/`value_length` (when config has
/// `head_dim`), `vocab_size`, `rope.dimension_count`, and RoPE scaling keys (`linear`, `yarn`).
///
/// `general.name` is the last component of `_name_or_path` when present, else the arch; the
/// pipeline may replace it. `general.file_type`, `general.quantization_version` and
/// `general.alignment` are the pipeline's to add. Llama-3 RoPE scaling needs the extra tensor of
/// [`llama3_rope_freqs`]. An unknown architecture is an error naming it.
pub fn arch_metadata(config: &Value) -> Result<(String, Vec<(String, MetaValue)>), FormatError> {
    let d = LlamaDims::from_config(config)?;
    let arch = d.arch;
    let eps = get_f64(config.get("rms_norm_eps"), "rms_norm_eps")?.ok_or_else(|| bad("rms_norm_eps", "is missing"))?;
    let name = config
        .get("_name_or_path")
        .and_then(Value::as_str)
        .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or(arch)
        .to_owned();
    let k = |s: &str| format!("{arch}.{s}");
    let mut md = vec![
        ("general.architecture".to_owned(), MetaValue::string(arch)),
        ("general.name".to_owned(), MetaValue::String(name)),
        (k("context_length"), MetaValue::U32(d.context)),
        (k("embedding_length"), MetaValue::U32(d.hidden)),
        (k("feed_forward_length"), MetaValue::U32(d.intermediate)),
        (k("block_count"), MetaValue::U32(d.layers)),
        (k("attention.head_count"), MetaValue::U32(d.heads)),
        (k("attention.head_count_kv"), MetaValue::U32(d.kv_heads)),
        (k("rope.freq_base"), MetaValue::F32(rope_theta(config)? as f32)),
        (k("attention.layer_norm_rms_epsilon"), MetaValue::F32(eps as f32)),
    ];
    if get_u32(config, "head_dim")?.is_some() {
        md.push((k("attention.key_length"), MetaValue::U32(d.head_dim)));
        md.push((k("attention.value_length"), MetaValue::U32(d.head_dim)));
    }
    md.push((k("vocab_size"), MetaValue::U32(d.vocab)));
    md.push((k("rope.dimension_count"), MetaValue::U32(d.head_dim)));

    if let Some(p) = rope_params(config) {
        let ty = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str);
        let factor = get_f64(p.get("factor"), "rope_scaling.factor")?;
        match (ty, factor) {
            (None | Some("default"), _) => {}
            (Some("llama3"), _) => {} // a rope_freqs tensor, see llama3_rope_freqs
            (Some("linear"), Some(f)) => {
                md.push((k("rope.scaling.type"), MetaValue::string("linear")));
                md.push((k("rope.scaling.factor"), MetaValue::F32(f as f32)));
            }
            (Some("yarn"), Some(f)) => {
                md.push((k("rope.scaling.type"), MetaValue::string("yarn")));
                md.push((k("rope.scaling.factor"), MetaValue::F32(f as f32)));
                let orig = p
                    .get("original_max_position_embeddings")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad("rope_scaling.original_max_position_embeddings", "missing for yarn"))?;
                md.push((k("rope.scaling.original_context_length"), MetaValue::U32(orig)));
            }
            (Some("linear" | "yarn"), None) => {
                return Err(bad("rope_scaling.factor", "is missing"));
            }
            (Some(other), _) => return Err(bad("rope_scaling", format!("RoPE type `{other}` is not supported"))),
        }
    }
    Ok((arch.to_owned(), md))
}

/// Llama-3 RoPE frequency factors (the `rope_freqs.weight` F32 tensor of `head_dim / 2`
/// values the converter adds), or `None` when config.json has no `llama3` RoPE scaling.
///
/// Computed in f32 like the converter's torch code; llama.cpp multiplies its RoPE frequencies
/// by these factors, so without the tensor a Llama-3.1+ model degrades past short contexts.
pub fn llama3_rope_freqs(config: &Value) -> Result<Option<Vec<f32>>, FormatError> {
    let Some(p) = rope_params(config) else {
        return Ok(None);
    };
    let ty = p.get("rope_type").or_else(|| p.get("type")).and_then(Value::as_str);
    if !ty.is_some_and(|t| t.eq_ignore_ascii_case("llama3")) {
        return Ok(None);
    }
    let d = LlamaDims::from_config(config)?;
    let num =
        |key: &str, default: f64| -> Result<f64, FormatError> { Ok(get_f64(p.get(key), key)?.unwrap_or(default)) };
    let base = rope_theta(config)? as f32;
    let factor = num("factor", 8.0)?;
    let low = num("low_freq_factor", 1.0)?;
    let high = num("high_freq_factor", 4.0)?;
    let old_ctx = num("original_max_position_embeddings", 8192.0)?;
    if low == high {
        return Err(bad("rope_scaling", "low_freq_factor equals high_freq_factor"));
    }
    // f32 throughout, like the converter's torch tensors.
    let (factor, low, high, old_ctx) = (factor as f32, low as f32, high as f32, old_ctx as f32);
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    let dim = d.head_dim as f32;
    let out = (0..d.head_dim / 2)
        .map(|i| {
            let freq = 1.0f32 / base.powf((2 * i) as f32 / dim);
            let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect();
    Ok(Some(out))
}

/// The GGUF name of HF tensor `hf` for the llama family, `None` if it has no GGUF counterpart
/// (then the pipeline must refuse it, or skip it when [`is_skipped_tensor`] says so).
///
/// `lm_head.weight` → `output.weight`; with tied embeddings there is no `lm_head` and llama.cpp
/// reuses `token_embd.weight`. Biases (qwen2's `attn_{q,k,v}.bias`) map like their weights.
pub fn tensor_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    // Canonical decimal only: "01" would collide with "1".
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (module, kind) = tail.rsplit_once('.')?;
    let g = match (module, kind) {
        ("input_layernorm", "weight") => "attn_norm",
        ("post_attention_layernorm", "weight") => "ffn_norm",
        ("self_attn.q_proj", _) => "attn_q",
        ("self_attn.k_proj", _) => "attn_k",
        ("self_attn.v_proj", _) => "attn_v",
        ("self_attn.o_proj", _) => "attn_output",
        ("mlp.gate_proj", _) => "ffn_gate",
        ("mlp.up_proj", _) => "ffn_up",
        ("mlp.down_proj", _) => "ffn_down",
        _ => return None,
    };
    if kind != "weight" && kind != "bias" {
        return None;
    }
    Some(format!("blk.{n}.{g}.{kind}"))
}

/// HF tensors the converter drops on purpose (RoPE caches that some checkpoints serialize).
pub fn is_skipped_tensor(hf: &str) -> bool {
    hf.ends_with(".rotary_emb.inv_freq")
}

/// llama.cpp's q/k row permutation as an index map, so rows can be gathered while streaming.
///
/// The converter computes `w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)
/// .reshape(rows, cols)`: within each head, destination row `2i + j` is source row
/// `j * half + i` (`half` = head_dim / 2), i.e. the two rotate-half halves are interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QkPermutation {
    head_rows: usize,
    half: usize,
}

impl QkPermutation {
    /// The source row whose contents go to row `dst_row` of the output (`dst_row < rows`).
    pub fn src_row(&self, dst_row: usize) -> usize {
        let head = dst_row / self.head_rows;
        let r = dst_row % self.head_rows;
        head * self.head_rows + (r % 2) * self.half + r / 2
    }
}

/// The permutation for a tensor of `rows` rows (q: `n_head` heads, k: `n_head_kv` heads).
/// `rows` must split into heads of an even number of rows.
pub fn permute_qk(n_head: usize, rows: usize) -> Result<QkPermutation, FormatError> {
    if n_head == 0 || !rows.is_multiple_of(n_head) || !(rows / n_head).is_multiple_of(2) {
        return Err(FormatError::BadTensor {
            tensor: "q/k projection".into(),
            reason: format!("{rows} rows do not split into {n_head} heads of an even row count"),
        });
    }
    let head_rows = rows / n_head;
    Ok(QkPermutation { head_rows, half: head_rows / 2 })
}

/// The permutation HF tensor `hf` needs in GGUF arch `arch`, if any: `llama` q_proj (weight
/// and bias) with `num_attention_heads`, k_proj with `num_key_value_heads`; nothing for `qwen2`.
pub fn qk_permutation_for(dims: &LlamaDims, hf: &str, rows: usize) -> Result<Option<QkPermutation>, FormatError> {
    if dims.arch != "llama" {
        return Ok(None);
    }
    let heads = if hf.ends_with("self_attn.q_proj.weight") || hf.ends_with("self_attn.q_proj.bias") {
        dims.heads
    } else if hf.ends_with("self_attn.k_proj.weight") || hf.ends_with("self_attn.k_proj.bias") {
        dims.kv_heads
    } else {
        return Ok(None);
    };
    permute_qk(heads as usize, rows).map(Some).map_err(|e| match e {
        FormatError::BadTensor { reason, .. } => FormatError::BadTensor { tensor: hf.to_owned(), reason },
        other => other,
    })
}
