//! llama-quantize's `Q4_K_M` type choice (`src/llama-quant.cpp`, `llama_tensor_get_type_impl`),
//! as a pure function of the GGUF tensor list, for dense and MoE models alike.
//!
//! - Not quantized (keep their input type): tensors of fewer than 2 dims, names not ending in
//!   `weight`, `*_norm.weight`, `ffn_gate_inp.weight` (routers).
//! - `output.weight` (or `token_embd.weight` when there is none): Q6_K, Q8_0 when `ne[0]` is
//!   not a multiple of 256.
//! - attn-v-like (`attn_v`, `attn_qkv`, `attn_kv_b`): a counter `i` over them in file order,
//!   `n` their count: Q6_K where `use_more_bits(i, n)`; "70B" llama: Q4_K → Q5_K; exactly 8
//!   experts: Q8_0.
//! - `attn_k.weight`: Q8_0 with exactly 8 experts. `attn_output.weight`: Q5_K with exactly 8
//!   experts (`attn_qkv` is attn-v-like, so its own Q5_K rule never runs for Q4_K_M).
//! - `ffn_down*` (dense, `_exps`, `_shexp`): Q6_K where `use_more_bits(L, n_layer_all)`; with
//!   more than one expert `L` is the tensor's block number, otherwise a running counter over
//!   the `ffn_down` tensors in file order.
//! - Everything else: Q4_K. Row-length fallbacks (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, F16)
//!   are applied by the caller after this choice, as llama-quantize does.

use super::super::{GGML_Q4_K, GGML_Q6_K, GGML_Q8_0};
use crate::FormatError;

/// ggml type id of `Q5_K`.
pub const GGML_Q5_K: u32 = 13;

/// What the rule needs to know about the model.
#[derive(Debug, Clone, Copy)]
pub struct MixModel {
    /// `expert_count` (0 or 1 for dense models).
    pub n_expert: u32,
    /// `block_count` (llama.cpp's `n_layer_all`, MTP layers included).
    pub n_layer_all: u32,
    /// llama-quantize's `LLM_TYPE_70B` (llama, 80 layers).
    pub is_70b: bool,
}

/// One tensor, in file order.
#[derive(Debug, Clone, Copy)]
pub struct MixTensor<'a> {
    /// GGUF name.
    pub name: &'a str,
    /// Number of dimensions.
    pub n_dims: usize,
    /// `ne[0]`, the row length.
    pub ne0: usize,
}

/// llama-quantize's `use_more_bits`: the layers a `*_M` mix gives more bits.
pub fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The name without its `blk.N.` prefix (`attn_v.weight`), for reasons.
fn kind(name: &str) -> &str {
    name.strip_prefix("blk.").and_then(|r| r.split_once('.')).map_or(name, |(_, k)| k)
}

fn block_of(name: &str) -> Option<i64> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The Q4_K_M choice for every tensor, in order: `None` for a tensor llama-quantize leaves in
/// its input type, else the ggml type id and the reason. A block number outside
/// `[0, n_layer_all)` in a MoE model is an error, as in llama-quantize.
pub fn q4_k_m(model: MixModel, tensors: &[MixTensor<'_>]) -> Result<Vec<Option<(u32, String)>>, FormatError> {
    let has_output = tensors.iter().any(|t| t.name == "output.weight");
    let n_attn_v = tensors.iter().filter(|t| category(t.name, has_output) == Cat::AttnV).count() as i64;
    let n_layer = i64::from(model.n_layer_all);
    let n_expert = model.n_expert.max(1);
    let (mut i_attn_v, mut i_ffn_down) = (0i64, 0i64);
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let name = t.name;
        let quantize = t.n_dims >= 2
            && name.ends_with("weight")
            && !name.contains("_norm.weight")
            && !name.contains("ffn_gate_inp.weight");
        if !quantize {
            out.push(None);
            continue;
        }
        let choice = match category(name, has_output) {
            Cat::Output if t.ne0 % 256 != 0 => {
                (GGML_Q8_0, "Q4_K_M: output projection, rows not whole 256-blocks: Q8_0".to_string())
            }
            Cat::Output => (GGML_Q6_K, "Q4_K_M: output projection in Q6_K".to_string()),
            Cat::AttnV => {
                let i = i_attn_v;
                i_attn_v += 1;
                let mut c = if use_more_bits(i, n_attn_v) {
                    (GGML_Q6_K, format!("Q4_K_M: {} of layer {i}/{n_attn_v} in Q6_K", kind(name)))
                } else {
                    (GGML_Q4_K, "Q4_K_M".to_string())
                };
                if model.is_70b && c.0 == GGML_Q4_K {
                    c = (GGML_Q5_K, "Q4_K_M: attn_v of a 70B llama in Q5_K".to_string());
                }
                if model.n_expert == 8 {
                    c = (GGML_Q8_0, "Q4_K_M: attn-v tensor of an 8-expert model in Q8_0".to_string());
                }
                c
            }
            Cat::AttnK if model.n_expert == 8 => (GGML_Q8_0, "Q4_K_M: attn_k of an 8-expert model in Q8_0".to_string()),
            Cat::AttnOutput if model.n_expert == 8 => {
                (GGML_Q5_K, "Q4_K_M: attn_output of an 8-expert model in Q5_K".to_string())
            }
            Cat::FfnDown => {
                let layer = if n_expert > 1 {
                    let l = block_of(name).ok_or_else(|| FormatError::BadTensor {
                        tensor: name.to_owned(),
                        reason: "no block number (llama-quantize needs one in a MoE model)".into(),
                    })?;
                    if l < 0 || l >= n_layer {
                        return Err(FormatError::BadTensor {
                            tensor: name.to_owned(),
                            reason: format!("block {l} is outside [0, {n_layer})"),
                        });
                    }
                    l
                } else {
                    i_ffn_down
                };
                i_ffn_down += 1;
                if use_more_bits(layer, n_layer) {
                    (GGML_Q6_K, format!("Q4_K_M: {} of layer {layer}/{n_layer} in Q6_K", kind(name)))
                } else {
                    (GGML_Q4_K, "Q4_K_M".to_string())
                }
            }
            _ => (GGML_Q4_K, "Q4_K_M".to_string()),
        };
        out.push(Some(choice));
    }
    Ok(out)
}

/// llama-quantize's tensor categories (`tensor_get_category`), the ones Q4_K_M distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cat {
    Output,
    TokenEmbd,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUpGate,
    FfnDown,
    Other,
}

/// The category, matched in llama-quantize's order (first match wins); the embedding counts as
/// the output when the file has no `output.weight` (tied embeddings).
fn category(name: &str, has_output: bool) -> Cat {
    if name == "output.weight" || (name == "token_embd.weight" && !has_output) {
        return Cat::Output;
    }
    if name == "token_embd.weight" {
        return Cat::TokenEmbd;
    }
    if name.contains("attn_qkv.weight") || name.contains("attn_kv_b.weight") || name.contains("attn_v.weight") {
        return Cat::AttnV;
    }
    if name.contains("attn_k.weight") {
        return Cat::AttnK;
    }
    if name.contains("attn_q.weight") {
        return Cat::AttnQ;
    }
    if name.contains("attn_output.weight") {
        return Cat::AttnOutput;
    }
    if name.contains("ffn_up") || name.contains("ffn_gate") {
        return Cat::FfnUpGate;
    }
    if name.contains("ffn_down") {
        return Cat::FfnDown;
    }
    Cat::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> MixTensor<'_> {
        MixTensor { name, n_dims: 2, ne0: 256 }
    }

    #[test]
    fn more_bits_layers_of_eight() {
        let got: Vec<i64> = (0..8).filter(|&i| use_more_bits(i, 8)).collect();
        assert_eq!(got, [0, 3, 6, 7]);
    }

    #[test]
    fn moe_ffn_down_is_by_block_and_eight_experts_bump_attention() {
        let names = ["blk.0.ffn_down_exps.weight", "blk.0.ffn_down_shexp.weight", "blk.1.ffn_down_exps.weight"];
        let ts: Vec<_> = names.iter().map(|n| t(n)).collect();
        let m = MixModel { n_expert: 4, n_layer_all: 8, is_70b: false };
        let got: Vec<u32> = q4_k_m(m, &ts).unwrap().into_iter().map(|c| c.unwrap().0).collect();
        // Both ffn_down of block 0 by the block number (a counter would give 0 then 1).
        assert_eq!(got, [GGML_Q6_K, GGML_Q6_K, GGML_Q4_K]);
        let ts = [t("blk.0.attn_v.weight"), t("blk.0.attn_k.weight"), t("blk.0.attn_output.weight")];
        let m8 = MixModel { n_expert: 8, n_layer_all: 1, is_70b: false };
        let got: Vec<u32> = q4_k_m(m8, &ts).unwrap().into_iter().map(|c| c.unwrap().0).collect();
        assert_eq!(got, [GGML_Q8_0, GGML_Q8_0, GGML_Q5_K]);
        let routers = [MixTensor { name: "blk.0.ffn_gate_inp.weight", n_dims: 2, ne0: 256 }];
        assert!(q4_k_m(m, &routers).unwrap()[0].is_none());
    }
}
