//! `LlamaForCausalLM`, `MistralForCausalLM` → arch `llama` (converter: `LlamaModel`).
//!
//! llama.cpp's `llama` arch uses "normal" RoPE, which pairs adjacent dimensions, so q/k rows are
//! permuted from HF's rotate-half layout. Extra keys: `vocab_size`, `rope.dimension_count`;
//! Llama-3 RoPE scaling adds the computed `rope_freqs.weight` tensor.

use super::config::{bad, finite};
use super::{Family, Kvs, LayerSpec, Model};
use crate::FormatError;

/// The llama family.
pub struct Llama;

impl Family for Llama {
    fn arch(&self) -> &'static str {
        "llama"
    }
    fn metadata(&self, m: &Model, kv: &mut Kvs) -> Result<(), FormatError> {
        kv.u32("vocab_size", m.vocab);
        kv.u32("rope.dimension_count", m.head_dim);
        Ok(())
    }
    fn layer(&self, m: &Model, _layer: u32) -> LayerSpec {
        let h = m.hidden as usize;
        let mut s = LayerSpec::default().attention(m);
        // q (weight and bias) with num_attention_heads, k with num_key_value_heads.
        for slot in &mut s.slots {
            if slot.hf.starts_with("self_attn.q_proj.") {
                slot.permute_heads = Some(m.heads);
            } else if slot.hf.starts_with("self_attn.k_proj.") {
                slot.permute_heads = Some(m.kv_heads);
            }
        }
        s.req("post_attention_layernorm.weight", "ffn_norm.weight", &[h]).swiglu("mlp", "", h, m.intermediate as usize)
    }
    fn computed_tensors(&self, m: &Model) -> Result<Vec<(String, Vec<f32>)>, FormatError> {
        Ok(llama3_rope_freqs(m)?.map(|f| ("rope_freqs.weight".to_owned(), f)).into_iter().collect())
    }
    fn is_70b(&self, m: &Model) -> bool {
        m.layers == 80
    }
}

/// Llama-3 RoPE frequency factors (the `rope_freqs.weight` F32 tensor of `head_dim / 2`
/// values the converter adds), or `None` without `llama3` RoPE scaling.
///
/// Computed in f32 like the converter's torch code; llama.cpp multiplies its RoPE frequencies
/// by these factors, so without the tensor a Llama-3.1+ model degrades past short contexts.
pub fn llama3_rope_freqs(m: &Model) -> Result<Option<Vec<f32>>, FormatError> {
    let Some(p) = m.cfg.rope_params() else {
        return Ok(None);
    };
    let ty = p.get("rope_type").or_else(|| p.get("type")).and_then(serde_json::Value::as_str);
    if !ty.is_some_and(|t| t.eq_ignore_ascii_case("llama3")) {
        return Ok(None);
    }
    let num = |key: &str, default: f64| -> Result<f64, FormatError> { Ok(finite(p.get(key), key)?.unwrap_or(default)) };
    let base = m.cfg.rope_theta()? as f32;
    let factor = num("factor", 8.0)?;
    let low = num("low_freq_factor", 1.0)?;
    let high = num("high_freq_factor", 4.0)?;
    let old_ctx = num("original_max_position_embeddings", 8192.0)?;
    if low == high {
        return Err(bad("rope_scaling", "low_freq_factor equals high_freq_factor"));
    }
    // f32 throughout, like the converter's torch tensors.
    let (factor, low, high, old_ctx) = (factor as f32, low as f32, high as f32, old_ctx as f32);
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    let dim = m.head_dim as f32;
    let out = (0..m.head_dim / 2)
        .map(|i| {
            let freq = 1.0f32 / base.powf((2 * i) as f32 / dim);
            // torch computes `scalar / tensor` as `reciprocal(tensor) * scalar` in f32; the
            // plain f32 division differs by an ulp on some heads (then 4 ulps in the factor).
            let wavelen = (1.0 / freq) * (2.0 * std::f64::consts::PI) as f32;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = ((1.0 / wavelen) * old_ctx - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect();
    Ok(Some(out))
}

/// llama.cpp's q/k row permutation as an index map, so rows can be gathered while streaming.
///
/// The converter computes `w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)
/// .reshape(rows, cols)`: within each head, destination row `2i + j` is source row
/// `j * half + i` (`half` = head_dim / 2), i.e. the two rotate-half halves are interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QkPermutation {
    head_rows: usize,
    half: usize,
}

impl QkPermutation {
    /// The source row whose contents go to row `dst_row` of the output (`dst_row < rows`).
    pub fn src_row(&self, dst_row: usize) -> usize {
        let head = dst_row / self.head_rows;
        let r = dst_row % self.head_rows;
        head * self.head_rows + (r % 2) * self.half + r / 2
    }
}

/// The permutation for a tensor of `rows` rows (q: `n_head` heads, k: `n_head_kv` heads).
/// `rows` must split into heads of an even number of rows.
pub fn permute_qk(n_head: usize, rows: usize) -> Result<QkPermutation, FormatError> {
    if n_head == 0 || !rows.is_multiple_of(n_head) || !(rows / n_head).is_multiple_of(2) {
        return Err(FormatError::BadTensor {
            tensor: "q/k projection".into(),
            reason: format!("{rows} rows do not split into {n_head} heads of an even row count"),
        });
    }
    let head_rows = rows / n_head;
    Ok(QkPermutation { head_rows, half: head_rows / 2 })
}
