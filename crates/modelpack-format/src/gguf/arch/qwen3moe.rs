//! `Qwen3MoeForCausalLM` → arch `qwen3moe` (converter: `Qwen3MoeModel`).
//!
//! Qwen3's attention (q/k norms) with a routed MoE in every layer: router `mlp.gate` →
//! `ffn_gate_inp` (F32), experts stacked into `ffn_{gate,up,down}_exps`, from per-expert
//! `mlp.experts.{e}.{gate,up,down}_proj` or the fused transformers-5 `mlp.experts.gate_up_proj`
//! / `down_proj`. Keys: generic + `expert_count`, `expert_used_count`,
//! `expert_feed_forward_length`. llama.cpp hard-codes softmax routing with top-k
//! renormalisation, so `decoder_sparse_step` ≠ 1 or a non-empty `mlp_only_layers` (dense layers
//! llama.cpp cannot express) are refused.

use super::config::{bad, HfConfig};
use super::{moe_kvs, ExpertSpec, Family, Kvs, LayerSpec, Model, Moe};
use crate::FormatError;
use serde_json::Value;

/// The Qwen3-MoE family.
pub struct Qwen3Moe;

impl Family for Qwen3Moe {
    fn arch(&self) -> &'static str {
        "qwen3moe"
    }
    fn read(&self, cfg: &HfConfig, m: &mut Model) -> Result<(), FormatError> {
        let experts = cfg
            .u32_any(&["num_experts", "num_local_experts"])?
            .ok_or_else(|| bad("num_experts", "is missing (a MoE model needs its expert count)"))?;
        let used = cfg.req_u32("num_experts_per_tok")?;
        if used > experts {
            return Err(bad("num_experts_per_tok", format!("{used} exceeds the {experts} experts")));
        }
        if let Some(step) = cfg.u32("decoder_sparse_step")? {
            if step != 1 {
                return Err(bad(
                    "decoder_sparse_step",
                    format!("is {step}; llama.cpp's qwen3moe needs MoE in every layer"),
                ));
            }
        }
        if let Some(list) = cfg.get("mlp_only_layers").and_then(Value::as_array) {
            if !list.is_empty() {
                return Err(bad("mlp_only_layers", "is not empty; llama.cpp's qwen3moe needs MoE in every layer"));
            }
        }
        m.moe = Some(Moe {
            experts,
            used,
            expert_ff: cfg.req_u32("moe_intermediate_size")?,
            shared_ff: 0,
            shared_count: 0,
            leading_dense: 0,
        });
        Ok(())
    }
    fn metadata(&self, m: &Model, kv: &mut Kvs) -> Result<(), FormatError> {
        moe_kvs(m, kv)?;
        if let Some(moe) = &m.moe {
            kv.u32("expert_feed_forward_length", moe.expert_ff);
        }
        Ok(())
    }
    fn layer(&self, m: &Model, _layer: u32) -> LayerSpec {
        let h = m.hidden as usize;
        let moe = m.moe.as_ref().expect("read() sets moe");
        LayerSpec::default()
            .attention(m)
            .qk_norm(m)
            .req("post_attention_layernorm.weight", "ffn_norm.weight", &[h])
            .req("mlp.gate.weight", "ffn_gate_inp.weight", &[moe.experts as usize, h])
            .router()
            .experts(ExpertSpec {
                modules: &["mlp.experts"],
                names: ["gate_proj", "up_proj", "down_proj"],
                fused: true,
                n: moe.experts as usize,
                ff: moe.expert_ff as usize,
                hidden: h,
            })
    }
    fn tokenizer_pre(&self) -> Option<&'static str> {
        Some("qwen2")
    }
}
