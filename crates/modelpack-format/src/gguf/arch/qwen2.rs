//! `Qwen2ForCausalLM` → arch `qwen2` (converter: `Qwen2Model`).
//!
//! NeoX RoPE (rotate-half, like HF), so no q/k permutation; q/k/v carry biases. The keys
//! `vocab_size` and `rope.dimension_count` are written as by this crate's llama path since its
//! first release (llama.cpp ignores them for qwen2), so existing packages stay byte-identical.

use super::{Family, Kvs, LayerSpec, Model};
use crate::FormatError;

/// The Qwen2 family.
pub struct Qwen2;

impl Family for Qwen2 {
    fn arch(&self) -> &'static str {
        "qwen2"
    }
    fn metadata(&self, m: &Model, kv: &mut Kvs) -> Result<(), FormatError> {
        kv.u32("vocab_size", m.vocab);
        kv.u32("rope.dimension_count", m.head_dim);
        Ok(())
    }
    fn layer(&self, m: &Model, _layer: u32) -> LayerSpec {
        let h = m.hidden as usize;
        LayerSpec::default().attention(m).req("post_attention_layernorm.weight", "ffn_norm.weight", &[h]).swiglu(
            "mlp",
            "",
            h,
            m.intermediate as usize,
        )
    }
}
