//! `MiniMaxM2ForCausalLM` (M2, M2.1, M2.5) → arch `minimax-m2` (converter: `MiniMaxM2Model`).
//!
//! Every layer is MoE: router `block_sparse_moe.gate` (F32), correction bias
//! `block_sparse_moe.e_score_correction_bias` → `exp_probs_b.bias` (required), experts
//! `block_sparse_moe.experts.{e}.w1/w3/w2` stacked into `ffn_gate/up/down_exps` (transformers
//! 5's fused save renames `block_sparse_moe` to `mlp` and fuses w1/w3 into `gate_up_proj`;
//! both are accepted)
//! (`intermediate_size` is the per-expert width). q/k norms are full width (`ne={n_head ·
//! head_dim}` and `{n_kv · head_dim}`), not per head. `lm_head` is required (no tied fallback).
//! Keys: generic, `expert_feed_forward_length` = `intermediate_size`, `rope.dimension_count` =
//! `rotary_dim` (transformers-5 configs drop it: then `head_dim × partial_rotary_factor`), and
//! `expert_gating_func` = 2 always: the reference derives it from `scoring_func` and writes
//! nothing when that is absent, which makes llama.cpp abort at graph build.

use super::config::{bad, HfConfig};
use super::{moe_kvs, ExpertSpec, Family, Kvs, LayerSpec, Model, Moe};
use crate::FormatError;

/// The MiniMax-M2 family.
pub struct MiniMaxM2;

impl Family for MiniMaxM2 {
    fn arch(&self) -> &'static str {
        "minimax-m2"
    }
    fn read(&self, cfg: &HfConfig, m: &mut Model) -> Result<(), FormatError> {
        let experts = cfg
            .u32_any(&["num_local_experts", "num_experts"])?
            .ok_or_else(|| bad("num_local_experts", "is missing (a MoE model needs its expert count)"))?;
        let used = cfg.req_u32("num_experts_per_tok")?;
        if used > experts {
            return Err(bad("num_experts_per_tok", format!("{used} exceeds the {experts} experts")));
        }
        if let Some(f) = cfg.str("scoring_func")? {
            if f != "sigmoid" {
                return Err(bad("scoring_func", format!("is `{f}`; llama.cpp's minimax-m2 routes with sigmoid")));
            }
        }
        rotary_dim(m)?;
        m.moe = Some(Moe { experts, used, expert_ff: m.intermediate, shared_ff: 0, shared_count: 0, leading_dense: 0 });
        Ok(())
    }
    fn metadata(&self, m: &Model, kv: &mut Kvs) -> Result<(), FormatError> {
        moe_kvs(m, kv)?;
        kv.u32("expert_gating_func", 2);
        kv.u32("expert_feed_forward_length", m.intermediate);
        kv.u32("rope.dimension_count", rotary_dim(m)?);
        Ok(())
    }
    fn layer(&self, m: &Model, _layer: u32) -> LayerSpec {
        let h = m.hidden as usize;
        let e = m.moe.as_ref().expect("read() sets moe").experts as usize;
        LayerSpec::default()
            .attention(m)
            .req("self_attn.q_norm.weight", "attn_q_norm.weight", &[m.q_width()])
            .req("self_attn.k_norm.weight", "attn_k_norm.weight", &[m.kv_width()])
            .req("post_attention_layernorm.weight", "ffn_norm.weight", &[h])
            .req("block_sparse_moe.gate.weight", "ffn_gate_inp.weight", &[e, h])
            .alias("mlp.gate.weight")
            .router()
            .req("block_sparse_moe.e_score_correction_bias", "exp_probs_b.bias", &[e])
            .alias("mlp.e_score_correction_bias")
            .experts(ExpertSpec {
                modules: &["block_sparse_moe.experts", "mlp.experts"],
                names: ["w1", "w3", "w2"],
                fused: true,
                n: e,
                ff: m.intermediate as usize,
                hidden: h,
            })
    }
    fn tokenizer_pre(&self) -> Option<&'static str> {
        Some("minimax-m2")
    }
    fn requires_output(&self) -> bool {
        true
    }
}

/// `rotary_dim`, else `head_dim × partial_rotary_factor` (transformers-5 configs); one of them
/// is required, and it must be even and at most `head_dim`.
fn rotary_dim(m: &Model) -> Result<u32, FormatError> {
    let r = match m.cfg.u32("rotary_dim")? {
        Some(r) => r,
        None => match m.cfg.partial_rotary_factor()? {
            Some(f) if (0.0..=1.0).contains(&f) => (f64::from(m.head_dim) * f) as u32,
            Some(f) => return Err(bad("partial_rotary_factor", format!("{f} is not within [0, 1]"))),
            None => return Err(bad("rotary_dim", "is missing (and there is no partial_rotary_factor)")),
        },
    };
    if r > m.head_dim || r % 2 != 0 {
        return Err(bad("rotary_dim", format!("{r} must be even and at most head_dim {}", m.head_dim)));
    }
    Ok(r)
}
