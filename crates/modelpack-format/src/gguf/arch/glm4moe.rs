//! `Glm4MoeForCausalLM` (GLM-4.5, 4.5-Air, 4.6) → arch `glm4moe` (converter: `Glm4MoeModel`).
//!
//! The first `first_k_dense_replace` layers have a dense SwiGLU MLP, the rest a sigmoid-routed
//! MoE: router `mlp.gate` (F32), its correction bias `mlp.gate.e_score_correction_bias` →
//! `exp_probs_b.bias` (required: llama.cpp's selection needs it), stacked routed experts and a
//! shared expert (`_shexp`, `F = moe_intermediate_size × n_shared_experts`). The
//! `post_attention_layernorm` is `post_attention_norm` here (there is no `ffn_norm`); q/k norms
//! are optional (`use_qk_norm`). The multi-token-prediction layers (`num_nextn_predict_layers`,
//! stored as `model.layers.{num_hidden_layers + i}`) are kept as the reference keeps them: a full
//! block plus `nextn.{eh_proj, enorm, hnorm, shared_head_norm}` (and optional
//! `shared_head_head`, `embed_tokens`), counted in `block_count`; llama.cpp skips them unless
//! asked to draft with them. Keys: generic, `rope.dimension_count` (partial rotary),
//! `expert_count` = `n_routed_experts`, `expert_feed_forward_length`, `expert_shared_count`,
//! `leading_dense_block_count`, `expert_gating_func` = 2 (sigmoid), `expert_weights_scale`,
//! `expert_weights_norm`, `nextn_predict_layers`.

use super::config::{bad, HfConfig};
use super::{glm4::glm_rope_dims, moe_kvs, Family, Kvs, LayerSpec, Model, Moe};
use crate::FormatError;

/// The GLM-4.5 family.
pub struct Glm4Moe;

impl Family for Glm4Moe {
    fn arch(&self) -> &'static str {
        "glm4moe"
    }
    fn read(&self, cfg: &HfConfig, m: &mut Model) -> Result<(), FormatError> {
        let experts = cfg.req_u32("n_routed_experts")?;
        let used = cfg.req_u32("num_experts_per_tok")?;
        if used > experts {
            return Err(bad("num_experts_per_tok", format!("{used} exceeds the {experts} routed experts")));
        }
        let expert_ff = cfg.req_u32("moe_intermediate_size")?;
        let shared = cfg.u32_or_zero("n_shared_experts")?.unwrap_or(0);
        let leading_dense = cfg.u32_or_zero("first_k_dense_replace")?.unwrap_or(0);
        if leading_dense > m.layers {
            return Err(bad(
                "first_k_dense_replace",
                format!("{leading_dense} exceeds num_hidden_layers {}", m.layers),
            ));
        }
        m.nextn_layers = cfg.u32_or_zero("num_nextn_predict_layers")?.unwrap_or(0);
        m.moe =
            Some(Moe { experts, used, expert_ff, shared_ff: expert_ff * shared, shared_count: shared, leading_dense });
        Ok(())
    }
    fn metadata(&self, m: &Model, kv: &mut Kvs) -> Result<(), FormatError> {
        let moe = m.moe.as_ref().expect("read() sets moe");
        moe_kvs(m, kv)?;
        kv.u32("rope.dimension_count", glm_rope_dims(m)?);
        kv.u32("expert_count", moe.experts);
        kv.u32("expert_feed_forward_length", moe.expert_ff);
        if m.cfg.get("n_shared_experts").is_some() {
            kv.u32("expert_shared_count", moe.shared_count);
        }
        if m.cfg.get("first_k_dense_replace").is_some() {
            kv.u32("leading_dense_block_count", moe.leading_dense);
        }
        // Always sigmoid for this arch; written explicitly (llama.cpp's default is softmax).
        kv.u32("expert_gating_func", 2);
        if let Some(s) = m.cfg.f64("routed_scaling_factor")? {
            kv.f32("expert_weights_scale", s);
        }
        if let Some(b) = m.cfg.bool("norm_topk_prob")? {
            kv.bool("expert_weights_norm", b);
        }
        if m.cfg.get("num_nextn_predict_layers").is_some() {
            kv.u32("nextn_predict_layers", m.nextn_layers);
        }
        Ok(())
    }
    fn layer(&self, m: &Model, layer: u32) -> LayerSpec {
        let (h, v, d) = (m.hidden as usize, m.vocab as usize, m.head_dim as usize);
        let moe = m.moe.as_ref().expect("read() sets moe");
        let mut s = LayerSpec::default()
            .attention(m)
            .opt("self_attn.q_norm.weight", "attn_q_norm.weight", &[d])
            .opt("self_attn.k_norm.weight", "attn_k_norm.weight", &[d])
            .req("post_attention_layernorm.weight", "post_attention_norm.weight", &[h]);
        if layer < moe.leading_dense {
            return s.swiglu("mlp", "", h, m.intermediate as usize);
        }
        s = s.deepseek_moe(moe, h, true);
        if layer >= m.layers {
            s = s
                .req("eh_proj.weight", "nextn.eh_proj.weight", &[h, 2 * h])
                .req("enorm.weight", "nextn.enorm.weight", &[h])
                .req("hnorm.weight", "nextn.hnorm.weight", &[h])
                .req("shared_head.norm.weight", "nextn.shared_head_norm.weight", &[h])
                .opt("shared_head.head.weight", "nextn.shared_head_head.weight", &[v, h])
                .opt("embed_tokens.weight", "nextn.embed_tokens.weight", &[v, h]);
        }
        s
    }
    fn tokenizer_pre(&self) -> Option<&'static str> {
        Some("glm4")
    }
    fn special_tokens(&self) -> &'static [(&'static str, &'static str)] {
        &[("bos", "[gMASK]"), ("eot", "<|user|>"), ("unk", "<|endoftext|>"), ("eom", "<|observation|>")]
    }
}
