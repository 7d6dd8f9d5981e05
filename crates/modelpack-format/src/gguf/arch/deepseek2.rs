//! `DeepseekV3ForCausalLM` (DeepSeek-V3, R1, V3.1 and Kimi K2, whose `model_type` is `kimi_k2`)
//! → arch `deepseek2` (converter: `DeepseekV2Model`).
//!
//! Multi-head latent attention is stored as MQA with wide heads: `q_a_proj` / `q_a_layernorm` /
//! `q_b_proj` (or a plain `q_proj` when `q_lora_rank` is null), `kv_a_proj_with_mqa` /
//! `kv_a_layernorm`, and `kv_b_proj` **split** per head into `attn_k_b` (the K rows, transposed:
//! torch `[n_head, kv_lora, nope]`) and `attn_v_b` (the V rows: `[n_head, v, kv_lora]`), exactly
//! as llama.cpp's converter does; no `attn_kv_b` is written. The first `first_k_dense_replace`
//! layers have a dense SwiGLU MLP, the rest a routed MoE: router `mlp.gate` (F32), its optional
//! correction bias → `exp_probs_b.bias`, stacked routed experts and `n_shared_experts` shared
//! ones (`_shexp`). Multi-token-prediction layers (`model.layers.{i}` with i ≥
//! `num_hidden_layers`) are dropped, as the reference drops them (llama.cpp cannot use
//! DeepSeek's MTP block); [`Family::dropped_layer`] lets the pipeline report them.
//!
//! Keys: generic with `head_count_kv` = 1 and key/value lengths `kv_lora + rope` / `kv_lora`,
//! plus `leading_dense_block_count`, `vocab_size`, `q_lora_rank` (when set), `kv_lora_rank`,
//! `key_length_mla` / `value_length_mla`, `expert_feed_forward_length`, `expert_count`,
//! `expert_shared_count`, `expert_weights_scale`, `expert_weights_norm` (only when true),
//! `rope.dimension_count` = `qk_rope_head_dim`, and `rope.scaling.yarn_log_multiplier` =
//! 0.1 × `mscale_all_dim` (the loader divides by 0.1). `expert_gating_func` = 2 (sigmoid) is
//! written even when config.json has no `scoring_func` (transformers-5 configs drop it): the
//! reference then writes nothing and llama.cpp would fall back to DeepSeek-V2's softmax, which
//! is not how V3 routes.

use super::config::{bad, HfConfig};
use super::{moe_kvs, Family, KvbSplit, Kvs, LayerSpec, Model, Moe};
use crate::FormatError;
use serde_json::Value;

/// The DeepSeek-V3 / Kimi K2 family.
pub struct Deepseek2;

/// MLA dimensions.
struct Mla {
    q_lora: Option<u32>,
    kv_lora: u32,
    nope: u32,
    rope: u32,
    v: u32,
}

fn mla(cfg: &HfConfig) -> Result<Mla, FormatError> {
    let q_lora = cfg.u32("q_lora_rank")?;
    let kv_lora = cfg.u32("kv_lora_rank")?.unwrap_or(512);
    Ok(Mla {
        q_lora,
        kv_lora,
        nope: cfg.req_u32("qk_nope_head_dim")?,
        rope: cfg.req_u32("qk_rope_head_dim")?,
        v: cfg.req_u32("v_head_dim")?,
    })
}

impl Family for Deepseek2 {
    fn arch(&self) -> &'static str {
        "deepseek2"
    }
    fn read(&self, cfg: &HfConfig, m: &mut Model) -> Result<(), FormatError> {
        let d = mla(cfg)?;
        if d.rope % 2 != 0 {
            return Err(bad("qk_rope_head_dim", format!("{} is odd; RoPE needs pairs", d.rope)));
        }
        if let Some(f) = cfg.str("scoring_func")? {
            if f != "sigmoid" {
                return Err(bad("scoring_func", format!("is `{f}`; DeepSeek-V3's deepseek2 routes with sigmoid")));
            }
        }
        let experts = cfg.req_u32("n_routed_experts")?;
        let used = cfg.req_u32("num_experts_per_tok")?;
        if used > experts {
            return Err(bad("num_experts_per_tok", format!("{used} exceeds the {experts} routed experts")));
        }
        // llama.cpp's loader asserts these (src/models/deepseek2.cpp, llama-model.cpp).
        let groups = cfg.u32_or_zero("n_group")?.unwrap_or(1);
        let topk_group = cfg.u32_or_zero("topk_group")?.unwrap_or(1);
        if groups > 1 && (experts % groups != 0 || topk_group == 0 || topk_group >= groups) {
            return Err(bad(
                "n_group",
                format!(
                    "{groups} groups with topk_group {topk_group} over {experts} experts: llama.cpp needs the \
                     groups to divide the experts and 0 < topk_group < n_group"
                ),
            ));
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
        // MLA is stored as MQA; the HF kv head count only serves the kv_b split.
        if m.kv_heads != m.heads {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{} differs from num_attention_heads {}; MLA has one kv_b head per query head",
                    m.kv_heads, m.heads
                ),
            ));
        }
        m.moe =
            Some(Moe { experts, used, expert_ff, shared_ff: expert_ff * shared, shared_count: shared, leading_dense });
        Ok(())
    }
    fn metadata(&self, m: &Model, kv: &mut Kvs) -> Result<(), FormatError> {
        let d = mla(&m.cfg)?;
        let moe = m.moe.as_ref().expect("read() sets moe");
        kv.u32("attention.head_count_kv", 1);
        moe_kvs(m, kv)?;
        kv.u32("leading_dense_block_count", moe.leading_dense);
        kv.u32("vocab_size", m.vocab);
        if let Some(q) = d.q_lora {
            kv.u32("attention.q_lora_rank", q);
        }
        kv.u32("attention.kv_lora_rank", d.kv_lora);
        kv.u32("attention.key_length", d.kv_lora + d.rope);
        kv.u32("attention.value_length", d.kv_lora);
        kv.u32("attention.key_length_mla", d.nope + d.rope);
        kv.u32("attention.value_length_mla", d.v);
        kv.u32("expert_feed_forward_length", moe.expert_ff);
        kv.u32("expert_count", moe.experts);
        kv.u32("expert_shared_count", moe.shared_count);
        if let Some(s) = m.cfg.f64("routed_scaling_factor")? {
            kv.f32("expert_weights_scale", s);
        }
        if m.cfg.bool("norm_topk_prob")? == Some(true) {
            kv.bool("expert_weights_norm", true);
        }
        kv.u32("rope.dimension_count", d.rope);
        if let Some(p) = m.cfg.rope_params() {
            if let Some(ms) = super::config::finite(p.get("mscale_all_dim"), "rope_scaling.mscale_all_dim")? {
                kv.f32("rope.scaling.yarn_log_multiplier", 0.1 * ms);
            }
        }
        kv.u32("expert_gating_func", 2);
        Ok(())
    }
    fn layer(&self, m: &Model, layer: u32) -> LayerSpec {
        let d = mla(&m.cfg).expect("read() checked the MLA fields");
        let (h, n) = (m.hidden as usize, m.heads as usize);
        let (kv_lora, nope, rope, v) = (d.kv_lora as usize, d.nope as usize, d.rope as usize, d.v as usize);
        let moe = m.moe.as_ref().expect("read() sets moe");
        let mut s = LayerSpec::default().req("input_layernorm.weight", "attn_norm.weight", &[h]);
        s = match d.q_lora {
            Some(q) => {
                let q = q as usize;
                s.req("self_attn.q_a_proj.weight", "attn_q_a.weight", &[q, h])
                    .req("self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight", &[q])
                    .req("self_attn.q_b_proj.weight", "attn_q_b.weight", &[n * (nope + rope), q])
            }
            None => s.req("self_attn.q_proj.weight", "attn_q.weight", &[n * (nope + rope), h]),
        };
        s = s
            .req("self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight", &[kv_lora + rope, h])
            .req("self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight", &[kv_lora])
            .req("self_attn.kv_b_proj.weight", "attn_k_b.weight", &[n * (nope + v), kv_lora])
            .split_kv_b(KvbSplit { heads: n, nope, v, kv_lora })
            .req("self_attn.o_proj.weight", "attn_output.weight", &[h, n * v])
            .req("post_attention_layernorm.weight", "ffn_norm.weight", &[h]);
        if layer < moe.leading_dense {
            return s.swiglu("mlp", "", h, m.intermediate as usize);
        }
        s = s.deepseek_moe(moe, h, false);
        s
    }
    fn dropped_layer(&self, m: &Model, layer: u32) -> Option<&'static str> {
        (layer >= m.layers).then_some("multi-token-prediction layer dropped (llama.cpp's converter drops it too)")
    }
    fn tokenizer_pre(&self) -> Option<&'static str> {
        Some("deepseek-v3")
    }
    fn tokenizer_pre_for(&self, cfg: &HfConfig) -> Option<&'static str> {
        match cfg.get("model_type").and_then(Value::as_str) {
            Some("kimi_k2") => Some("kimi-k2"),
            _ => Some("deepseek-v3"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{plan_tensors, Model, Segment, SourceTensor};
    use serde_json::json;

    fn config(q_lora: serde_json::Value) -> serde_json::Value {
        json!({"architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
               "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 32,
               "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "q_lora_rank": q_lora, "kv_lora_rank": 32,
               "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 24, "n_routed_experts": 4,
               "num_experts_per_tok": 2, "moe_intermediate_size": 32, "n_shared_experts": 1,
               "first_k_dense_replace": 1, "n_group": 2, "topk_group": 1})
    }

    fn plan(cfg: &serde_json::Value, extra: &[(&str, Vec<usize>)]) -> Vec<super::super::PlannedTensor> {
        let m = Model::from_config(cfg).unwrap();
        let mut names: Vec<(String, Vec<usize>)> = vec![
            ("model.embed_tokens.weight".into(), vec![32, 64]),
            ("model.norm.weight".into(), vec![64]),
            ("lm_head.weight".into(), vec![32, 64]),
        ];
        for l in 0..2 {
            let p = format!("model.layers.{l}.");
            for (n, s) in [
                ("input_layernorm.weight", vec![64]),
                ("post_attention_layernorm.weight", vec![64]),
                ("self_attn.kv_a_proj_with_mqa.weight", vec![40, 64]),
                ("self_attn.kv_a_layernorm.weight", vec![32]),
                ("self_attn.kv_b_proj.weight", vec![80, 32]),
                ("self_attn.o_proj.weight", vec![64, 48]),
            ] {
                names.push((format!("{p}{n}"), s));
            }
            if l == 0 {
                for (n, s) in [("gate_proj", vec![128, 64]), ("up_proj", vec![128, 64]), ("down_proj", vec![64, 128])] {
                    names.push((format!("{p}mlp.{n}.weight"), s));
                }
            } else {
                names.push((format!("{p}mlp.gate.weight"), vec![4, 64]));
                for e in 0..4 {
                    for (n, s) in [("gate_proj", vec![32, 64]), ("up_proj", vec![32, 64]), ("down_proj", vec![64, 32])]
                    {
                        names.push((format!("{p}mlp.experts.{e}.{n}.weight"), s));
                    }
                }
                for (n, s) in [("gate_proj", vec![32, 64]), ("up_proj", vec![32, 64]), ("down_proj", vec![64, 32])] {
                    names.push((format!("{p}mlp.shared_experts.{n}.weight"), s));
                }
            }
        }
        for (n, s) in extra {
            names.push((n.replace("{l}", "0"), s.clone()));
            names.push((n.replace("{l}", "1"), s.clone()));
        }
        let src: Vec<SourceTensor<'_>> = names.iter().map(|(n, s)| SourceTensor { name: n, shape: s }).collect();
        plan_tensors(&m, &src).unwrap()
    }

    #[test]
    fn kv_b_is_split_per_head_and_k_is_transposed() {
        let p = plan(&config(json!(null)), &[("model.layers.{l}.self_attn.q_proj.weight", vec![48, 64])]);
        let k = p.iter().find(|t| t.name == "blk.0.attn_k_b.weight").unwrap();
        let v = p.iter().find(|t| t.name == "blk.0.attn_v_b.weight").unwrap();
        let hf = "model.layers.0.self_attn.kv_b_proj.weight".to_string();
        assert_eq!((k.shape.clone(), k.transposed), (vec![2, 32, 16], true));
        assert_eq!(
            k.segments,
            vec![Segment { hf: hf.clone(), row0: 0, rows: 16 }, Segment { hf: hf.clone(), row0: 40, rows: 16 }]
        );
        assert_eq!((v.shape.clone(), v.transposed), (vec![2, 24, 32], false));
        assert_eq!(
            v.segments,
            vec![Segment { hf: hf.clone(), row0: 16, rows: 24 }, Segment { hf, row0: 56, rows: 24 }]
        );
        assert!(p.iter().any(|t| t.name == "blk.1.attn_q.weight"), "q_lora_rank null: plain attn_q");
        assert!(!p.iter().any(|t| t.name.contains("attn_kv_b")));
        assert!(p.iter().any(|t| t.name == "blk.1.ffn_gate_exps.weight" && t.shape == vec![4, 32, 64]));
        assert!(p.iter().any(|t| t.name == "blk.1.ffn_up_shexp.weight"));
    }

    #[test]
    fn q_lora_tensors_and_keys() {
        let cfg = config(json!(16));
        let p = plan(
            &cfg,
            &[
                ("model.layers.{l}.self_attn.q_a_proj.weight", vec![16, 64]),
                ("model.layers.{l}.self_attn.q_a_layernorm.weight", vec![16]),
                ("model.layers.{l}.self_attn.q_b_proj.weight", vec![48, 16]),
            ],
        );
        for n in ["attn_q_a.weight", "attn_q_a_norm.weight", "attn_q_b.weight"] {
            assert!(p.iter().any(|t| t.name == format!("blk.0.{n}")), "{n}");
        }
        let md = Model::from_config(&cfg).unwrap().metadata().unwrap();
        let get = |k: &str| md.iter().find(|(n, _)| n == &format!("deepseek2.{k}")).map(|(_, v)| v.clone());
        use super::super::super::MetaValue::U32;
        assert_eq!(get("attention.head_count_kv"), Some(U32(1)));
        assert_eq!(get("attention.key_length"), Some(U32(40)));
        assert_eq!(get("attention.value_length"), Some(U32(32)));
        assert_eq!(get("attention.key_length_mla"), Some(U32(24)));
        assert_eq!(get("attention.value_length_mla"), Some(U32(24)));
        assert_eq!(get("attention.q_lora_rank"), Some(U32(16)));
        assert_eq!(get("expert_gating_func"), Some(U32(2)), "sigmoid even without scoring_func");
        assert_eq!(get("expert_group_count"), Some(U32(2)));
        assert_eq!(get("leading_dense_block_count"), Some(U32(1)));
    }
}
