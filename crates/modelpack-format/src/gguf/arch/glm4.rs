//! `Glm4ForCausalLM` → arch `glm4` (converter: `Glm4Model`).
//!
//! Four norms per layer (`input_layernorm` → `attn_norm`, `post_self_attn_layernorm` →
//! `post_attention_norm`, `post_attention_layernorm` → `ffn_norm`, `post_mlp_layernorm` →
//! `post_ffw_norm`), biased q/k/v, and the fused `mlp.gate_up_proj [2F,H]` stored unchanged as
//! `ffn_up` (gate half first; llama.cpp splits it). Partial rotary: `rope.dimension_count =
//! int(head_dim × partial_rotary_factor)` (default 0.5). GLM-4V's M-RoPE (`mrope_section`)
//! needs a q/k reorder this crate does not do, so it is refused. Tokenizer `pre` = `glm4`;
//! bos/eos/unk default to `<|endoftext|>` and eot to `<|user|>`, as the reference sets them.

use super::config::bad;
use super::{Family, Kvs, LayerSpec, Model};
use crate::FormatError;

/// The GLM-4 dense family.
pub struct Glm4;

/// `int(head_dim × partial_rotary_factor)`, the factor defaulting to 0.5 (GLM's rope width).
pub(super) fn glm_rope_dims(m: &Model) -> Result<u32, FormatError> {
    let f = m.cfg.partial_rotary_factor()?.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&f) {
        return Err(bad("partial_rotary_factor", format!("{f} is not within [0, 1]")));
    }
    Ok((f64::from(m.head_dim) * f) as u32)
}

impl Family for Glm4 {
    fn arch(&self) -> &'static str {
        "glm4"
    }
    fn read(&self, cfg: &super::config::HfConfig, _m: &mut Model) -> Result<(), FormatError> {
        if cfg.rope_params().is_some_and(|p| p.contains_key("mrope_section")) {
            return Err(bad("rope_parameters.mrope_section", "M-RoPE (GLM-4V) is not supported"));
        }
        Ok(())
    }
    fn metadata(&self, m: &Model, kv: &mut Kvs) -> Result<(), FormatError> {
        kv.u32("rope.dimension_count", glm_rope_dims(m)?);
        Ok(())
    }
    fn layer(&self, m: &Model, _layer: u32) -> LayerSpec {
        let (h, ff) = (m.hidden as usize, m.intermediate as usize);
        LayerSpec::default()
            .attention(m)
            .req("post_self_attn_layernorm.weight", "post_attention_norm.weight", &[h])
            .req("post_attention_layernorm.weight", "ffn_norm.weight", &[h])
            .req("post_mlp_layernorm.weight", "post_ffw_norm.weight", &[h])
            .req("mlp.gate_up_proj.weight", "ffn_up.weight", &[2 * ff, h])
            .req("mlp.down_proj.weight", "ffn_down.weight", &[h, ff])
    }
    fn tokenizer_pre(&self) -> Option<&'static str> {
        Some("glm4")
    }
    fn special_tokens(&self) -> &'static [(&'static str, &'static str)] {
        &[("eos", "<|endoftext|>"), ("eot", "<|user|>"), ("unk", "<|endoftext|>"), ("bos", "<|endoftext|>")]
    }
}
