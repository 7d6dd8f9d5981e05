//! `Qwen3ForCausalLM` → arch `qwen3` (converter: `Qwen3Model`).
//!
//! Qwen2's layout without q/k/v biases, plus per-head q/k RMS norms (`attn_{q,k}_norm`,
//! `ne={head_dim}`, required by llama.cpp). `head_dim` may differ from hidden/heads (0.6B: 128
//! vs 64). Only the generic keys: no `vocab_size` and no `rope.dimension_count` (llama.cpp sets
//! n_rot = key_length). NeoX RoPE, no permutation. Tokenizer `pre` = `qwen2`.

use super::{Family, Kvs, LayerSpec, Model};
use crate::FormatError;

/// The Qwen3 family.
pub struct Qwen3;

impl Family for Qwen3 {
    fn arch(&self) -> &'static str {
        "qwen3"
    }
    fn metadata(&self, _m: &Model, _kv: &mut Kvs) -> Result<(), FormatError> {
        Ok(())
    }
    fn layer(&self, m: &Model, _layer: u32) -> LayerSpec {
        let h = m.hidden as usize;
        LayerSpec::default()
            .attention(m)
            .qk_norm(m)
            .req("post_attention_layernorm.weight", "ffn_norm.weight", &[h])
            .swiglu("mlp", "", h, m.intermediate as usize)
    }
    fn tokenizer_pre(&self) -> Option<&'static str> {
        Some("qwen2")
    }
}
