//! `DeciLMForCausalLM` (Llama-3.1/3.3 Nemotron Super and Ultra, Nemotron-51B) → arch `deci`
//! (converter: `DeciModel`).
//!
//! A Llama whose layers differ: config.json's `block_configs[i]` says per layer whether the
//! attention is normal (GQA with `num_attention_heads / n_heads_in_group` kv heads), "linear"
//! (`replace_with_linear`: only `self_attn.linear_attn` → `attn_output`, `[H, H]`) or absent
//! (`no_op`: no `input_layernorm` either), and whether the FFN is a SwiGLU of width
//! `ffn_mult_to_intermediate_size(ffn_mult)` or absent (`no_op`: no `post_attention_layernorm`).
//! `head_count`, `head_count_kv` and `feed_forward_length` are therefore INT32 arrays (see
//! [`Blocks`]), and q/k rows are permuted with each layer's own head counts. Keys besides the
//! generic ones: `attention.key_length` / `value_length` (= H / heads, always written by the
//! converter), `vocab_size`, `rope.dimension_count`; Llama-3 RoPE adds `rope_freqs.weight`.
//!
//! Refused (the converter would assert or write a GGUF llama.cpp cannot load): `block_configs`
//! missing or not one entry per layer, a normal attention whose `n_heads_in_group` does not
//! divide the heads, an FFN with neither `ffn_mult` nor `no_op`, and a linear FFN
//! (`ffn.replace_with_linear`, which llama.cpp's `deci` graph has no tensor for).

use super::config::{bad, HfConfig};
use super::llama::llama3_rope_freqs;
use super::{Blocks, Family, Kvs, LayerSpec, Model};
use crate::FormatError;
use serde_json::Value;

/// The Nemotron (DeciLM) family.
pub struct Deci;

/// The converter's `_ffn_mult_to_intermediate_size`: `int(2·mult·H/3)` rounded up to a
/// multiple of 256 (the same float operations in the same order as Python's).
pub fn ffn_mult_to_intermediate_size(mult: f64, hidden: u32) -> u64 {
    let n = (2.0 * mult * f64::from(hidden) / 3.0) as u64;
    n.div_ceil(256) * 256
}

fn blocks(cfg: &HfConfig, layers: u32, heads: u32, hidden: u32) -> Result<Blocks, FormatError> {
    let list = cfg
        .get("block_configs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("block_configs", "is missing or not a list (DeciLM needs one entry per layer)"))?;
    if list.len() != layers as usize {
        return Err(bad("block_configs", format!("has {} entries but num_hidden_layers is {layers}", list.len())));
    }
    let mut b = Blocks { heads: Vec::new(), kv_heads: Vec::new(), ff: Vec::new() };
    for (i, blk) in list.iter().enumerate() {
        let key = |part: &str, k: &str| format!("block_configs[{i}].{part}.{k}");
        let part = |name: &str| {
            blk.get(name)
                .and_then(Value::as_object)
                .ok_or_else(|| bad(&format!("block_configs[{i}].{name}"), "is missing"))
        };
        let flag = |o: &serde_json::Map<String, Value>, part: &str, k: &str| -> Result<bool, FormatError> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(v)) => Ok(*v),
                Some(_) => Err(bad(&key(part, k), "is not a boolean")),
            }
        };
        let att = part("attention")?;
        let group = match att.get("n_heads_in_group") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().filter(|&g| g > 0 && u64::from(heads).is_multiple_of(g)).ok_or_else(|| {
                bad(&key("attention", "n_heads_in_group"), format!("{v} does not divide num_attention_heads {heads}"))
            })?),
        };
        let (h, kv) = match (group, flag(att, "attention", "replace_with_linear")?, flag(att, "attention", "no_op")?) {
            (Some(g), false, false) => (heads, (u64::from(heads) / g) as u32),
            (None, true, false) => (heads, 0),
            (None, false, true) => (0, 0),
            _ => {
                return Err(bad(
                    &format!("block_configs[{i}].attention"),
                    "must be exactly one of: n_heads_in_group, replace_with_linear, no_op",
                ))
            }
        };
        let ffn = part("ffn")?;
        if flag(ffn, "ffn", "replace_with_linear")? {
            return Err(bad(&key("ffn", "replace_with_linear"), "a linear FFN has no llama.cpp `deci` tensor"));
        }
        let mult = match ffn.get("ffn_mult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|m| m.is_finite() && *m > 0.0)
                    .ok_or_else(|| bad(&key("ffn", "ffn_mult"), format!("{v} is not a positive number")))?,
            ),
        };
        let ff = match (mult, flag(ffn, "ffn", "no_op")?) {
            (Some(m), false) => u32::try_from(ffn_mult_to_intermediate_size(m, hidden))
                .map_err(|_| bad(&key("ffn", "ffn_mult"), format!("{m} gives an FFN wider than u32")))?,
            (None, true) => 0,
            (None, false) => return Err(bad(&key("ffn", "ffn_mult"), "is missing and the FFN is not no_op")),
            (Some(_), true) => return Err(bad(&key("ffn", "no_op"), "is set together with ffn_mult")),
        };
        b.heads.push(h);
        b.kv_heads.push(kv);
        b.ff.push(ff);
    }
    Ok(b)
}

impl Family for Deci {
    fn arch(&self) -> &'static str {
        "deci"
    }
    fn per_block_sizes(&self) -> bool {
        true
    }
    fn read(&self, cfg: &HfConfig, m: &mut Model) -> Result<(), FormatError> {
        if m.heads == 0 || !m.hidden.is_multiple_of(m.heads) || m.head_dim != m.hidden / m.heads {
            return Err(bad(
                "head_dim",
                format!(
                    "{} differs from hidden_size / num_attention_heads; llama.cpp's deci needs them equal",
                    m.head_dim
                ),
            ));
        }
        m.blocks = Some(blocks(cfg, m.layers, m.heads, m.hidden)?);
        Ok(())
    }
    fn metadata(&self, m: &Model, kv: &mut Kvs) -> Result<(), FormatError> {
        kv.u32("attention.key_length", m.head_dim);
        kv.u32("attention.value_length", m.head_dim);
        kv.u32("vocab_size", m.vocab);
        kv.u32("rope.dimension_count", m.head_dim);
        Ok(())
    }
    fn layer(&self, m: &Model, layer: u32) -> LayerSpec {
        let b = m.blocks.as_ref().expect("read() sets blocks");
        let (h, d) = (m.hidden as usize, m.head_dim as usize);
        let l = layer as usize;
        let (heads, kv, ff) = (b.heads[l], b.kv_heads[l], b.ff[l] as usize);
        let mut s = LayerSpec::default();
        if heads > 0 && kv == 0 {
            s = s.req("input_layernorm.weight", "attn_norm.weight", &[h]).req(
                "self_attn.linear_attn.weight",
                "attn_output.weight",
                &[h, h],
            );
        } else if heads > 0 {
            let (q, k) = (heads as usize * d, kv as usize * d);
            s = s
                .req("input_layernorm.weight", "attn_norm.weight", &[h])
                .req("self_attn.q_proj.weight", "attn_q.weight", &[q, h])
                .permuted(heads)
                .req("self_attn.k_proj.weight", "attn_k.weight", &[k, h])
                .permuted(kv)
                .req("self_attn.v_proj.weight", "attn_v.weight", &[k, h])
                .req("self_attn.o_proj.weight", "attn_output.weight", &[h, q]);
        }
        if ff > 0 {
            s = s.req("post_attention_layernorm.weight", "ffn_norm.weight", &[h]).swiglu("mlp", "", h, ff);
        }
        s
    }
    fn computed_tensors(&self, m: &Model) -> Result<Vec<(String, Vec<f32>)>, FormatError> {
        Ok(llama3_rope_freqs(m)?.map(|f| ("rope_freqs.weight".to_owned(), f)).into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Model;
    use super::ffn_mult_to_intermediate_size;
    use serde_json::json;

    #[test]
    fn ffn_width_follows_the_converter() {
        // The converter's formula worked by hand: int(2·m·H/3), then up to a multiple of 256.
        assert_eq!(ffn_mult_to_intermediate_size(2.625, 8192), 14336);
        assert_eq!(ffn_mult_to_intermediate_size(1.3125, 8192), 7168);
        assert_eq!(ffn_mult_to_intermediate_size(1.0, 64), 256); // int(42.67) = 42 → 256
        assert_eq!(ffn_mult_to_intermediate_size(6.0, 64), 256); // 256 exactly
    }

    fn cfg(blocks: serde_json::Value) -> serde_json::Value {
        json!({"architectures": ["DeciLMForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "vocab_size": 32, "max_position_embeddings": 64,
               "rms_norm_eps": 1e-5, "block_configs": blocks})
    }

    #[test]
    fn bad_block_configs_are_errors() {
        let ok = json!({"attention": {"n_heads_in_group": 2}, "ffn": {"ffn_mult": 1.0}});
        assert!(Model::from_config(&cfg(json!([ok, ok]))).is_ok());
        for (blocks, what) in [
            (json!([ok]), "entries"),
            (json!([ok, {"attention": {"n_heads_in_group": 3}, "ffn": {"ffn_mult": 1.0}}]), "n_heads_in_group"),
            (json!([ok, {"attention": {"n_heads_in_group": 2}, "ffn": {}}]), "ffn_mult"),
            (
                json!([ok, {"attention": {"no_op": true}, "ffn": {"replace_with_linear": true, "ffn_mult": 1.0}}]),
                "linear",
            ),
            (json!([ok, {"attention": {}, "ffn": {"ffn_mult": 1.0}}]), "exactly one"),
        ] {
            let e = Model::from_config(&cfg(blocks)).unwrap_err().to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
    }
}
