//! `NemotronHForCausalLM` (Nemotron-H 8B/47B, Nemotron Nano 9B/12B v2, Nemotron-3-Nano-30B-A3B)
//! → arch `nemotron_h`, or `nemotron_h_moe` when config.json has `num_experts_per_tok`
//! (converter: `NemotronHModel` on top of `GraniteHybridModel` and `Mamba2Model`).
//!
//! A hybrid: each layer is one block, chosen by `hybrid_override_pattern` (`M` Mamba2, `*`
//! attention, `-` ReLU² MLP, `E` MoE) or transformers 5's `layers_block_type` list
//! (`mamba`/`linear_attention`, `attention`/`full_attention`, `mlp`, `moe`; the list's length is the
//! layer count). llama.cpp tells the kinds apart by two INT32 arrays: `head_count_kv[i]` (kv heads on
//! attention layers, else 0) and `feed_forward_length[i]` (the MLP or expert width on MLP/MoE
//! layers, else 0); a layer with both 0 is recurrent. Tensors live under `backbone.layers.N.`
//! (`backbone.embeddings`, `backbone.norm_f`); every block has one `norm` and one `mixer`.
//!
//! Mamba2 mixers are rewritten as the converter does: `conv1d [C,1,K]` → `ssm_conv1d [C,K]`,
//! `A_log` → `ssm_a = −exp(A_log)` shaped `[n_heads,1]`, `D` → `ssm_d [n_heads,1]`, `dt_bias` →
//! `ssm_dt.bias`, the gated norm → `ssm_norm [n_groups, d_inner/n_groups]`; those four, the conv
//! and its bias stay F32 (llama.cpp never quantizes them). There is no RoPE: `context_length` is
//! 2^20, `rope.dimension_count` is H / heads, and attention q/k still get the LLaMA permutation.
//!
//! Refused: a pattern whose length differs from the layer count or with an unknown letter, an
//! MLP layer (`-`) in a MoE config or a MoE layer in a dense one (the reference would write a
//! GGUF whose layer kinds llama.cpp misreads), a vocabulary that is not a multiple of 8 (the
//! reference pads the token list to one, which then no longer matches the embedding), a
//! multi-token-prediction head (`num_nextn_predict_layers` > 0, not handled here yet), and
//! attention biases (no release has them; the reference would permute them like q/k, which this
//! planner does not do for vectors), which have no counterpart slot.

use super::config::{bad, HfConfig};
use super::{moe_kvs, ExpertSpec, Family, Kvs, LayerSpec, Model, Moe, Transform};
use crate::FormatError;
use serde_json::Value;

/// The Nemotron-H family.
pub struct NemotronH;

/// One layer's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mamba,
    Attention,
    Mlp,
    Moe,
}

/// The layer kinds, from the pattern string or the `layers_block_type` list.
fn kinds(cfg: &HfConfig) -> Result<Vec<Kind>, FormatError> {
    if let Some(p) = cfg.get("hybrid_override_pattern") {
        let s = p.as_str().ok_or_else(|| bad("hybrid_override_pattern", "is not a string"))?;
        return s
            .chars()
            .map(|c| match c {
                'M' => Ok(Kind::Mamba),
                '*' => Ok(Kind::Attention),
                '-' => Ok(Kind::Mlp),
                'E' => Ok(Kind::Moe),
                other => Err(bad("hybrid_override_pattern", format!("has `{other}`; expected M, *, - or E"))),
            })
            .collect();
    }
    let list = cfg
        .get("layers_block_type")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("hybrid_override_pattern", "is missing (and there is no layers_block_type list)"))?;
    list.iter()
        .map(|v| match v.as_str() {
            Some("mamba" | "linear_attention") => Ok(Kind::Mamba),
            Some("attention" | "full_attention") => Ok(Kind::Attention),
            Some("mlp") => Ok(Kind::Mlp),
            Some("moe") => Ok(Kind::Moe),
            _ => Err(bad("layers_block_type", format!("has {v}; expected mamba, attention, mlp or moe"))),
        })
        .collect()
}

/// Mamba2 mixer sizes.
#[derive(Debug, Clone, Copy)]
struct Ssm {
    heads: usize,
    head_dim: usize,
    groups: usize,
    state: usize,
    conv: usize,
}

impl Ssm {
    fn read(cfg: &HfConfig) -> Result<Self, FormatError> {
        let u = |k: &str| cfg.req_u32(k).map(|v| v as usize);
        let s = Ssm {
            heads: u("mamba_num_heads")?,
            head_dim: u("mamba_head_dim")?,
            groups: u("n_groups")?,
            state: u("ssm_state_size")?,
            conv: u("conv_kernel")?,
        };
        if !s.inner().is_multiple_of(s.groups) {
            return Err(bad("n_groups", format!("{} does not divide the Mamba inner size {}", s.groups, s.inner())));
        }
        Ok(s)
    }
    fn inner(&self) -> usize {
        self.heads * self.head_dim
    }
    fn conv_dim(&self) -> usize {
        self.inner() + 2 * self.groups * self.state
    }
    fn in_proj(&self) -> usize {
        2 * self.inner() + 2 * self.groups * self.state + self.heads
    }
}

fn is_moe(cfg: &HfConfig) -> bool {
    cfg.raw().get("num_experts_per_tok").is_some()
}

const MAMBA_F32: &str = "Mamba2 parameter kept in F32 (llama.cpp never quantizes it)";

impl Family for NemotronH {
    fn arch(&self) -> &'static str {
        "nemotron_h"
    }
    fn layer_prefix(&self) -> &'static str {
        "backbone.layers."
    }
    fn global_names(&self) -> [&'static str; 2] {
        ["backbone.embeddings.weight", "backbone.norm_f.weight"]
    }
    fn layer_norm_eps(&self) -> bool {
        true
    }
    fn layer_count(&self, cfg: &HfConfig) -> Result<Option<u32>, FormatError> {
        match cfg.get("layers_block_type").and_then(Value::as_array) {
            Some(l) => u32::try_from(l.len())
                .ok()
                .filter(|&n| n > 0)
                .map(Some)
                .ok_or_else(|| bad("layers_block_type", "is empty")),
            None => Ok(None),
        }
    }
    fn read(&self, cfg: &HfConfig, m: &mut Model) -> Result<(), FormatError> {
        let kinds = kinds(cfg)?;
        if kinds.len() != m.layers as usize {
            return Err(bad(
                "hybrid_override_pattern",
                format!("has {} layers but num_hidden_layers is {}", kinds.len(), m.layers),
            ));
        }
        Ssm::read(cfg)?;
        // The releases before transformers 5 call it `attention_head_dim` (Nano-9B-v2: 128,
        // while hidden / heads is 112); the reference requires one of the two.
        if !m.head_dim_in_config {
            m.head_dim = cfg
                .u32("attention_head_dim")?
                .ok_or_else(|| bad("head_dim", "is missing (and there is no attention_head_dim)"))?;
            m.head_dim_in_config = true;
        }
        if !m.vocab.is_multiple_of(8) {
            return Err(bad(
                "vocab_size",
                format!(
                    "{} is not a multiple of 8: llama.cpp's converter pads Nemotron-H's token list to one, which then \
                     no longer matches the embedding",
                    m.vocab
                ),
            ));
        }
        if cfg.u32_or_zero("num_nextn_predict_layers")?.unwrap_or(0) > 0 {
            return Err(bad(
                "num_nextn_predict_layers",
                "Nemotron-H multi-token-prediction heads are not supported yet",
            ));
        }
        let moe = is_moe(cfg);
        if moe {
            m.arch = "nemotron_h_moe";
            if let Some(i) = kinds.iter().position(|k| *k == Kind::Mlp) {
                return Err(bad(
                    "hybrid_override_pattern",
                    format!("layer {i} is a dense MLP in a MoE model (num_experts_per_tok is set); llama.cpp's nemotron_h_moe has no such layer"),
                ));
            }
            let experts = cfg.req_u32("n_routed_experts")?;
            let used = cfg.req_u32("num_experts_per_tok")?;
            if used > experts {
                return Err(bad("num_experts_per_tok", format!("{used} exceeds n_routed_experts {experts}")));
            }
            let shared_count = cfg.u32_or_zero("n_shared_experts")?.unwrap_or(0);
            m.moe = Some(Moe {
                experts,
                used,
                expert_ff: cfg.req_u32("moe_intermediate_size")?,
                shared_ff: if shared_count > 0 { cfg.req_u32("moe_shared_expert_intermediate_size")? } else { 0 },
                shared_count,
                leading_dense: 0,
            });
        } else if let Some(i) = kinds.iter().position(|k| *k == Kind::Moe) {
            return Err(bad(
                "hybrid_override_pattern",
                format!("layer {i} is a MoE layer but config.json has no num_experts_per_tok"),
            ));
        }
        Ok(())
    }
    fn metadata(&self, m: &Model, kv: &mut Kvs) -> Result<(), FormatError> {
        let kinds = kinds(&m.cfg)?;
        let ssm = Ssm::read(&m.cfg)?;
        let arr =
            |v: Vec<u32>| super::MetaValue::Array(v.into_iter().map(|x| super::MetaValue::I32(x as i32)).collect());
        // No RoPE: the reference writes an "arbitrary" context length and no rope base unless
        // config.json states one.
        kv.u32("context_length", 1 << 20);
        if m.cfg.get("rope_theta").is_none() && m.cfg.get("rope_parameters").and_then(|p| p.get("rope_theta")).is_none()
        {
            kv.remove("rope.freq_base");
        }
        let ff = match &m.moe {
            Some(moe) => moe.expert_ff,
            None => m.intermediate,
        };
        let ffn_kind = if m.moe.is_some() { Kind::Moe } else { Kind::Mlp };
        kv.set("feed_forward_length", arr(kinds.iter().map(|k| if *k == ffn_kind { ff } else { 0 }).collect()));
        kv.set(
            "attention.head_count_kv",
            arr(kinds.iter().map(|k| if *k == Kind::Attention { m.kv_heads } else { 0 }).collect()),
        );
        if let Some(e) = m.cfg.f64("rms_norm_eps")? {
            kv.f32("attention.layer_norm_rms_epsilon", e);
        }
        kv.u32("vocab_size", m.vocab);
        kv.u32("rope.dimension_count", m.hidden / m.heads);
        if let Some(moe) = &m.moe {
            moe_kvs(m, kv)?;
            kv.u32("expert_feed_forward_length", moe.expert_ff);
            kv.u32("expert_shared_feed_forward_length", moe.shared_ff);
            kv.u32("expert_shared_count", moe.shared_count);
            kv.bool("expert_weights_norm", m.cfg.bool("norm_topk_prob")?.unwrap_or(false));
            kv.f32("expert_weights_scale", m.cfg.f64("routed_scaling_factor")?.unwrap_or(1.0));
            if let Some(l) = m.cfg.u32("moe_latent_size")? {
                kv.u32("moe_latent_size", l);
            }
        }
        kv.u32("ssm.conv_kernel", ssm.conv as u32);
        kv.u32("ssm.state_size", ssm.state as u32);
        kv.u32("ssm.group_count", ssm.groups as u32);
        kv.u32("ssm.inner_size", ssm.inner() as u32);
        kv.u32("ssm.time_step_rank", ssm.heads as u32);
        kv.u32("attention.key_length", m.head_dim);
        kv.u32("attention.value_length", m.head_dim);
        kv.bool("rope.scaling.finetuned", false);
        Ok(())
    }
    fn layer(&self, m: &Model, layer: u32) -> LayerSpec {
        let kinds = kinds(&m.cfg).expect("checked in read()");
        let ssm = Ssm::read(&m.cfg).expect("checked in read()");
        let h = m.hidden as usize;
        let s = LayerSpec::default().req("norm.weight", "attn_norm.weight", &[h]);
        match kinds[layer as usize] {
            Kind::Mamba => {
                let (n, inner, g) = (ssm.heads, ssm.inner(), ssm.groups);
                s.req("mixer.in_proj.weight", "ssm_in.weight", &[ssm.in_proj(), h])
                    .opt("mixer.in_proj.bias", "ssm_in.bias", &[ssm.in_proj()])
                    .req("mixer.conv1d.weight", "ssm_conv1d.weight", &[ssm.conv_dim(), 1, ssm.conv])
                    .reshaped(&[ssm.conv_dim(), ssm.conv])
                    .f32(MAMBA_F32)
                    .opt("mixer.conv1d.bias", "ssm_conv1d.bias", &[ssm.conv_dim()])
                    .req("mixer.dt_bias", "ssm_dt.bias", &[n])
                    .req("mixer.A_log", "ssm_a", &[n])
                    .reshaped(&[n, 1])
                    .transformed(Transform::NegExp)
                    .f32(MAMBA_F32)
                    .req("mixer.D", "ssm_d", &[n])
                    .reshaped(&[n, 1])
                    .f32(MAMBA_F32)
                    .req("mixer.norm.weight", "ssm_norm.weight", &[inner])
                    .reshaped(&[g, inner / g])
                    .f32(MAMBA_F32)
                    .req("mixer.out_proj.weight", "ssm_out.weight", &[h, inner])
                    .opt("mixer.out_proj.bias", "ssm_out.bias", &[h])
            }
            Kind::Attention => {
                let (q, kv) = (m.q_width(), m.kv_width());
                s.req("mixer.q_proj.weight", "attn_q.weight", &[q, h])
                    .permuted(m.heads)
                    .req("mixer.k_proj.weight", "attn_k.weight", &[kv, h])
                    .permuted(m.kv_heads)
                    .req("mixer.v_proj.weight", "attn_v.weight", &[kv, h])
                    .req("mixer.o_proj.weight", "attn_output.weight", &[h, q])
            }
            Kind::Mlp => {
                let ff = m.intermediate as usize;
                s.req("mixer.up_proj.weight", "ffn_up.weight", &[ff, h])
                    .req("mixer.down_proj.weight", "ffn_down.weight", &[h, ff])
                    .opt("mixer.up_proj.bias", "ffn_up.bias", &[ff])
                    .opt("mixer.down_proj.bias", "ffn_down.bias", &[h])
            }
            Kind::Moe => {
                let moe = m.moe.as_ref().expect("MoE layers only in MoE configs (read())");
                let e = moe.experts as usize;
                let mut s = s
                    .req("mixer.gate.weight", "ffn_gate_inp.weight", &[e, h])
                    .router()
                    .req("mixer.gate.e_score_correction_bias", "exp_probs_b.bias", &[e])
                    .experts(ExpertSpec {
                        modules: &["mixer.experts"],
                        names: ["", "up_proj", "down_proj"],
                        fused: false,
                        n: e,
                        ff: moe.expert_ff as usize,
                        hidden: h,
                    });
                if moe.shared_ff > 0 {
                    let f = moe.shared_ff as usize;
                    s = s.req("mixer.shared_experts.up_proj.weight", "ffn_up_shexp.weight", &[f, h]).req(
                        "mixer.shared_experts.down_proj.weight",
                        "ffn_down_shexp.weight",
                        &[h, f],
                    );
                }
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{plan_tensors, Model, SourceTensor, Transform};
    use serde_json::json;

    fn cfg(pattern: &str) -> serde_json::Value {
        json!({"architectures": ["NemotronHForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 128, "vocab_size": 64,
               "max_position_embeddings": 64, "layer_norm_epsilon": 1e-5, "num_hidden_layers": pattern.len(),
               "hybrid_override_pattern": pattern, "mamba_num_heads": 4, "mamba_head_dim": 16,
               "n_groups": 2, "ssm_state_size": 8, "conv_kernel": 4})
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Model::from_config(&cfg("M*-")).is_ok());
        let mut c = cfg("M*-");
        c["num_hidden_layers"] = 4.into();
        assert!(Model::from_config(&c).unwrap_err().to_string().contains("has 3 layers"));
        assert!(Model::from_config(&cfg("M*x")).unwrap_err().to_string().contains("`x`"));
        assert!(Model::from_config(&cfg("M*E")).unwrap_err().to_string().contains("num_experts_per_tok"));
        let mut c = cfg("M*-");
        c["vocab_size"] = 63.into();
        assert!(Model::from_config(&c).unwrap_err().to_string().contains("multiple of 8"));
        let mut c = cfg("M*-");
        c["n_groups"] = 3.into();
        assert!(Model::from_config(&c).unwrap_err().to_string().contains("n_groups"));
    }

    #[test]
    fn mamba_tensors_are_reshaped_and_a_log_negated() {
        let m = Model::from_config(&cfg("M")).unwrap();
        let shapes: Vec<(String, Vec<usize>)> = vec![
            ("backbone.embeddings.weight".into(), vec![64, 64]),
            ("backbone.norm_f.weight".into(), vec![64]),
            ("backbone.layers.0.norm.weight".into(), vec![64]),
            ("backbone.layers.0.mixer.in_proj.weight".into(), vec![2 * 64 + 2 * 2 * 8 + 4, 64]),
            ("backbone.layers.0.mixer.conv1d.weight".into(), vec![64 + 32, 1, 4]),
            ("backbone.layers.0.mixer.dt_bias".into(), vec![4]),
            ("backbone.layers.0.mixer.A_log".into(), vec![4]),
            ("backbone.layers.0.mixer.D".into(), vec![4]),
            ("backbone.layers.0.mixer.norm.weight".into(), vec![64]),
            ("backbone.layers.0.mixer.out_proj.weight".into(), vec![64, 64]),
        ];
        let src: Vec<SourceTensor<'_>> = shapes.iter().map(|(n, s)| SourceTensor { name: n, shape: s }).collect();
        let p = plan_tensors(&m, &src).unwrap();
        let get = |n: &str| p.iter().find(|t| t.name == n).unwrap_or_else(|| panic!("{n}"));
        assert_eq!(get("blk.0.ssm_conv1d.weight").shape, vec![96, 4]);
        assert_eq!(get("blk.0.ssm_a").shape, vec![4, 1]);
        assert_eq!(get("blk.0.ssm_a").transform, Some(Transform::NegExp));
        assert_eq!(get("blk.0.ssm_a").segments[0].rows, 4);
        assert_eq!(get("blk.0.ssm_norm.weight").shape, vec![2, 32]);
        assert!(get("blk.0.ssm_d").keep_f32.is_some());
        assert!(get("blk.0.ssm_in.weight").keep_f32.is_none());
        // A missing tensor is named with the checkpoint's prefix.
        let e = plan_tensors(&m, &src[..src.len() - 1]).unwrap_err().to_string();
        assert!(e.contains("backbone.layers.0.mixer.out_proj.weight"), "{e}");
    }

    #[test]
    fn neg_exp_is_the_correctly_rounded_negated_exp() {
        let mut x = [0.0f32, 1.0, -2.5, 2.7725887];
        Transform::NegExp.apply(&mut x);
        assert_eq!(x[0], -1.0);
        assert_eq!(x[1], -std::f32::consts::E);
        assert_eq!(x[2], -(((-2.5f64).exp()) as f32));
        assert!((x[3] + 16.0).abs() < 1e-5);
    }
}
