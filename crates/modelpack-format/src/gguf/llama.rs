//! The llama-family API of the first converter (`LlamaForCausalLM`, `MistralForCausalLM`,
//! `Qwen2ForCausalLM`), kept for callers that need a name map without a config (`compare`,
//! `--imatrix` lookups) and as a thin view over the [`super::arch`] registry, which does the
//! real work for every family.

use super::arch::{self, Model};
use super::MetaValue;
use crate::FormatError;
use serde_json::Value;

pub use super::arch::is_skipped_tensor;
pub use super::arch::llama::{permute_qk, QkPermutation};

/// The GGUF architecture name for config.json's `architectures[0]` (any registered family).
pub fn gguf_arch(config: &Value) -> Result<&'static str, FormatError> {
    Ok(arch::family(config)?.arch())
}

/// Model dimensions read from config.json, validated for consistency.
#[derive(Debug, Clone)]
pub struct LlamaDims {
    /// GGUF architecture.
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
    /// `tie_word_embeddings`.
    pub tied_embeddings: bool,
    model: Model,
}

impl LlamaDims {
    /// Read and check the dimensions of a supported architecture.
    pub fn from_config(config: &Value) -> Result<Self, FormatError> {
        let m = Model::from_config(config)?;
        Ok(LlamaDims {
            arch: m.arch,
            hidden: m.hidden,
            intermediate: m.intermediate,
            layers: m.layers,
            heads: m.heads,
            kv_heads: m.kv_heads,
            head_dim: m.head_dim,
            vocab: m.vocab,
            context: m.context,
            tied_embeddings: m.tied_embeddings,
            model: m,
        })
    }

    /// The registry's model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The HF shape that tensor `hf` must have, if the family knows it (plain tensors only).
    pub fn expected_shape(&self, hf: &str) -> Option<Vec<usize>> {
        let (h, v) = (self.hidden as usize, self.vocab as usize);
        match hf {
            "model.embed_tokens.weight" | "lm_head.weight" => return Some(vec![v, h]),
            "model.norm.weight" => return Some(vec![h]),
            _ => {}
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (n, suffix) = rest.split_once('.')?;
        let layer: u32 = n.parse().ok()?;
        if layer >= self.model.block_count() {
            return None;
        }
        let spec = self.model.family.layer(&self.model, layer);
        spec.slots.into_iter().find(|s| s.hf == suffix).map(|s| s.shape)
    }
}

/// GGUF architecture name and hyperparameter metadata for config.json (see
/// [`Model::metadata`]).
pub fn arch_metadata(config: &Value) -> Result<(String, Vec<(String, MetaValue)>), FormatError> {
    let m = Model::from_config(config)?;
    Ok((m.arch.to_owned(), m.metadata()?))
}

/// Llama-3 RoPE frequency factors, or `None` without `llama3` RoPE scaling.
pub fn llama3_rope_freqs(config: &Value) -> Result<Option<Vec<f32>>, FormatError> {
    arch::llama::llama3_rope_freqs(&Model::from_config(config)?)
}

/// The GGUF name of a llama/qwen2-layout HF tensor, `None` if it has none. A pure name map for
/// callers without a config; planning goes through [`arch::plan_tensors`].
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

/// The permutation HF tensor `hf` needs (llama q/k only), for `rows` rows.
pub fn qk_permutation_for(dims: &LlamaDims, hf: &str, rows: usize) -> Result<Option<QkPermutation>, FormatError> {
    let Some(suffix) = hf.strip_prefix("model.layers.").and_then(|r| r.split_once('.')).map(|(_, s)| s) else {
        return Ok(None);
    };
    let spec = dims.model.family.layer(&dims.model, 0);
    let Some(heads) = spec.slots.iter().find(|s| s.hf == suffix).and_then(|s| s.permute_heads) else {
        return Ok(None);
    };
    permute_qk(heads as usize, rows).map(Some).map_err(|e| match e {
        FormatError::BadTensor { reason, .. } => FormatError::BadTensor { tensor: hf.to_owned(), reason },
        other => other,
    })
}
