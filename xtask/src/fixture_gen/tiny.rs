//! Tiny llama-family checkpoints: Llama (bf16 single file, sharded, f16, f32) and Qwen2.
//!
//! Weights look like a trained model's scale (std ≈ 0.02, heavy tails, one outlier input
//! column per Linear, RMSNorm weights ≈ 1) so quantization error and outlier handling behave
//! realistically, and the model is well-formed enough for llama.cpp to load and run.

use super::rng::{seed_for, SplitMix64};
use super::st::{serialize, StTensor};
use super::tokenizer::{self, Flavor};
use super::{json_bytes, write_file};
use serde_json::{json, Value};
use std::path::Path;

/// Shape of a tiny model.
pub struct Dims {
    /// Embedding width.
    pub hidden: usize,
    /// MLP width (192: not a multiple of 128, so group-size fallbacks get exercised).
    pub intermediate: usize,
    /// Blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (GQA).
    pub kv_heads: usize,
    /// Context length.
    pub ctx: usize,
}

/// The dims shared by both tiny models.
pub const DIMS: Dims = Dims { hidden: 64, intermediate: 192, layers: 2, heads: 4, kv_heads: 2, ctx: 256 };

const SEED_LLAMA: u64 = 0x6d6f_6465_6c70_6163; // "modelpac"
const SEED_QWEN2: u64 = 0x7177_656e_3200_0001;
const SEED_SPM: u64 = 0x7370_6d00_6c6c_6132;

/// One tensor's f32 values (already rounded through bf16, so every variant holds the same
/// numbers where the format can represent them) and its shape.
pub struct Weight {
    /// HF tensor name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, bf16-representable.
    pub values: Vec<f32>,
}

fn round_bf16(x: f64) -> f32 {
    half::bf16::from_f64(x).to_f32()
}

/// A matrix `[rows, cols]` with heavy-tailed entries of standard deviation ≈ `std` and one
/// outlier input column (×8), as trained Linear layers have.
fn matrix(global: u64, name: &str, rows: usize, cols: usize, std: f64, outlier: bool) -> Weight {
    let mut r = SplitMix64::new(seed_for(global, name));
    let col = (r.next_u64() % cols as u64) as usize;
    let mut values = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        for c in 0..cols {
            let mut x = r.heavy() * std;
            if outlier && c == col {
                x *= 8.0;
            }
            values.push(round_bf16(x));
        }
    }
    Weight { name: name.to_owned(), shape: vec![rows, cols], values }
}

/// A 1-D tensor around `center` (RMSNorm weights ≈ 1, biases ≈ 0).
fn vector(global: u64, name: &str, n: usize, center: f64, std: f64) -> Weight {
    let mut r = SplitMix64::new(seed_for(global, name));
    let values = (0..n).map(|_| round_bf16(center + r.normal() * std)).collect();
    Weight { name: name.to_owned(), shape: vec![n], values }
}

/// Every tensor of a llama-family model; `qwen2` adds q/k/v biases and ties the embeddings.
pub fn weights(global: u64, d: &Dims, vocab: usize, qwen2: bool) -> Vec<Weight> {
    let head_dim = d.hidden / d.heads;
    let kv = d.kv_heads * head_dim;
    let mut w = vec![matrix(global, "model.embed_tokens.weight", vocab, d.hidden, 0.02, false)];
    for l in 0..d.layers {
        let p = format!("model.layers.{l}");
        w.push(vector(global, &format!("{p}.input_layernorm.weight"), d.hidden, 1.0, 0.05));
        w.push(vector(global, &format!("{p}.post_attention_layernorm.weight"), d.hidden, 1.0, 0.05));
        for (proj, rows) in [("q_proj", d.hidden), ("k_proj", kv), ("v_proj", kv)] {
            w.push(matrix(global, &format!("{p}.self_attn.{proj}.weight"), rows, d.hidden, 0.02, true));
            if qwen2 {
                w.push(vector(global, &format!("{p}.self_attn.{proj}.bias"), rows, 0.0, 0.1));
            }
        }
        w.push(matrix(global, &format!("{p}.self_attn.o_proj.weight"), d.hidden, d.hidden, 0.02, true));
        w.push(matrix(global, &format!("{p}.mlp.gate_proj.weight"), d.intermediate, d.hidden, 0.02, true));
        w.push(matrix(global, &format!("{p}.mlp.up_proj.weight"), d.intermediate, d.hidden, 0.02, true));
        w.push(matrix(global, &format!("{p}.mlp.down_proj.weight"), d.hidden, d.intermediate, 0.02, true));
    }
    w.push(vector(global, "model.norm.weight", d.hidden, 1.0, 0.05));
    if !qwen2 {
        w.push(matrix(global, "lm_head.weight", vocab, d.hidden, 0.02, false));
    }
    w.sort_by(|a, b| a.name.cmp(&b.name));
    w
}

/// Storage dtype of a fixture variant.
#[derive(Clone, Copy)]
pub enum Store {
    /// bfloat16 (the values exactly).
    Bf16,
    /// IEEE half (values rounded to nearest even where bf16 has more range than f16 precision).
    F16,
    /// f32 (the bf16 values exactly).
    F32,
}

impl Store {
    fn dtype(self) -> &'static str {
        match self {
            Store::Bf16 => "BF16",
            Store::F16 => "F16",
            Store::F32 => "F32",
        }
    }
    fn torch(self) -> &'static str {
        match self {
            Store::Bf16 => "bfloat16",
            Store::F16 => "float16",
            Store::F32 => "float32",
        }
    }
    fn encode(self, v: &[f32]) -> Vec<u8> {
        match self {
            Store::Bf16 => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
            Store::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
            Store::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

fn tensors(ws: &[Weight], store: Store) -> Vec<StTensor> {
    ws.iter()
        .map(|w| StTensor {
            name: w.name.clone(),
            dtype: store.dtype(),
            shape: w.shape.clone(),
            data: store.encode(&w.values),
        })
        .collect()
}

fn config(arch: &str, model_type: &str, d: &Dims, vocab: usize, store: Store, qwen2: bool) -> Value {
    let mut c = json!({
        "architectures": [arch],
        "attention_bias": qwen2,
        "attention_dropout": 0.0,
        "bos_token_id": vocab - 2,
        "eos_token_id": vocab - 1,
        "head_dim": d.hidden / d.heads,
        "hidden_act": "silu",
        "hidden_size": d.hidden,
        "initializer_range": 0.02,
        "intermediate_size": d.intermediate,
        "max_position_embeddings": d.ctx,
        "mlp_bias": false,
        "model_type": model_type,
        "num_attention_heads": d.heads,
        "num_hidden_layers": d.layers,
        "num_key_value_heads": d.kv_heads,
        "rms_norm_eps": 1e-5,
        "rope_scaling": null,
        "rope_theta": 10000.0,
        "tie_word_embeddings": qwen2,
        "torch_dtype": store.torch(),
        "transformers_version": "4.46.0",
        "use_cache": true,
        "vocab_size": vocab
    });
    if qwen2 {
        let m = c.as_object_mut().expect("object");
        m.shift_remove("attention_bias");
        m.shift_remove("mlp_bias");
        m.shift_remove("head_dim");
        m.insert("sliding_window".into(), json!(d.ctx));
        m.insert("use_sliding_window".into(), json!(false));
        m.insert("max_window_layers".into(), json!(d.layers));
    }
    c
}

fn write_aux(dir: &Path, f: &Flavor, vocab: usize) -> anyhow::Result<()> {
    write_file(&dir.join("tokenizer.json"), &json_bytes(&tokenizer::tokenizer_json(f)))?;
    write_file(&dir.join("tokenizer_config.json"), &json_bytes(&tokenizer::tokenizer_config(f, DIMS.ctx)))?;
    let gen = json!({"_from_model_config": true, "bos_token_id": vocab - 2, "eos_token_id": vocab - 1,
                     "transformers_version": "4.46.0"});
    write_file(&dir.join("generation_config.json"), &json_bytes(&gen))?;
    Ok(())
}

/// Llama flavour: Llama-3 special tokens and split regex.
pub const LLAMA: Flavor =
    Flavor { split_regex: tokenizer::LLAMA3_REGEX, bos: "<|begin_of_text|>", eos: "<|end_of_text|>", add_bos: true };

/// Qwen2 flavour: ChatML tokens, single-digit split regex, no BOS.
pub const QWEN2: Flavor =
    Flavor { split_regex: tokenizer::QWEN2_REGEX, bos: "<|im_start|>", eos: "<|im_end|>", add_bos: false };

/// `tiny-llama` (bf16), `tiny-llama-sharded`, `tiny-llama-f16`, `tiny-llama-f32` under `out`.
pub fn write_llama_family(out: &Path) -> anyhow::Result<()> {
    let vocab = tokenizer::vocab(&LLAMA).len();
    let ws = weights(SEED_LLAMA, &DIMS, vocab, false);
    for (dir, store) in [("tiny-llama", Store::Bf16), ("tiny-llama-f16", Store::F16), ("tiny-llama-f32", Store::F32)] {
        let d = out.join(dir);
        let ts = tensors(&ws, store);
        let refs: Vec<&StTensor> = ts.iter().collect();
        write_file(&d.join("model.safetensors"), &serialize(&refs))?;
        write_file(
            &d.join("config.json"),
            &json_bytes(&config("LlamaForCausalLM", "llama", &DIMS, vocab, store, false)),
        )?;
        write_aux(&d, &LLAMA, vocab)?;
    }
    // Sharded: embeddings and layer 0 in the first file, the rest in the second.
    let d = out.join("tiny-llama-sharded");
    let ts = tensors(&ws, Store::Bf16);
    let first = |n: &str| n.starts_with("model.embed_tokens") || n.starts_with("model.layers.0.");
    let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let mut weight_map = serde_json::Map::new();
    let mut total = 0usize;
    for (i, name) in names.iter().enumerate() {
        let part: Vec<&StTensor> = ts.iter().filter(|t| first(&t.name) == (i == 0)).collect();
        write_file(&d.join(name), &serialize(&part))?;
        for t in part {
            total += t.data.len();
        }
    }
    for t in &ts {
        weight_map.insert(t.name.clone(), json!(names[usize::from(!first(&t.name))]));
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    write_file(&d.join("model.safetensors.index.json"), &json_bytes(&index))?;
    write_file(
        &d.join("config.json"),
        &json_bytes(&config("LlamaForCausalLM", "llama", &DIMS, vocab, Store::Bf16, false)),
    )?;
    write_aux(&d, &LLAMA, vocab)?;
    Ok(())
}

/// `tiny-qwen2`: q/k/v biases, tied embeddings (no `lm_head.weight`), bf16.
pub fn write_qwen2(dir: &Path) -> anyhow::Result<()> {
    let vocab = tokenizer::vocab(&QWEN2).len();
    let ws = weights(SEED_QWEN2, &DIMS, vocab, true);
    let ts = tensors(&ws, Store::Bf16);
    let refs: Vec<&StTensor> = ts.iter().collect();
    write_file(&dir.join("model.safetensors"), &serialize(&refs))?;
    write_file(
        &dir.join("config.json"),
        &json_bytes(&config("Qwen2ForCausalLM", "qwen2", &DIMS, vocab, Store::Bf16, true)),
    )?;
    write_aux(dir, &QWEN2, vocab)?;
    Ok(())
}

/// `tiny-llama-spm`: a Llama-2-style checkpoint whose vocabulary is a SentencePiece
/// `tokenizer.model` (no tokenizer.json), bf16, ids `<unk>` 0, `<s>` 1, `</s>` 2.
pub fn write_llama_spm(dir: &Path) -> anyhow::Result<()> {
    let pieces = super::spm::pieces();
    let vocab = pieces.len();
    let ws = weights(SEED_SPM, &DIMS, vocab, false);
    let ts = tensors(&ws, Store::Bf16);
    let refs: Vec<&StTensor> = ts.iter().collect();
    write_file(&dir.join("model.safetensors"), &serialize(&refs))?;
    let mut cfg = config("LlamaForCausalLM", "llama", &DIMS, vocab, Store::Bf16, false);
    cfg["bos_token_id"] = json!(1);
    cfg["eos_token_id"] = json!(2);
    write_file(&dir.join("config.json"), &json_bytes(&cfg))?;
    write_file(&dir.join("tokenizer.model"), &super::spm::model_proto())?;
    let mut decoder = serde_json::Map::new();
    for (id, t) in pieces.iter().enumerate().take(3) {
        decoder.insert(
            id.to_string(),
            json!({"content": t.0, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false,
                   "special": true}),
        );
    }
    let tc = json!({
        "add_bos_token": true,
        "add_eos_token": false,
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": false,
        "eos_token": "</s>",
        "legacy": false,
        "model_max_length": DIMS.ctx,
        "pad_token": null,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>"
    });
    write_file(&dir.join("tokenizer_config.json"), &json_bytes(&tc))?;
    let gen =
        json!({"_from_model_config": true, "bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.46.0"});
    write_file(&dir.join("generation_config.json"), &json_bytes(&gen))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_looks_trained() {
        let ws = weights(SEED_LLAMA, &DIMS, 272, false);
        let q = ws.iter().find(|w| w.name == "model.layers.0.self_attn.q_proj.weight").unwrap();
        let n = q.values.len() as f64;
        let std = (q.values.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / n).sqrt();
        assert!((0.015..0.04).contains(&std), "{std}");
        let norm = ws.iter().find(|w| w.name == "model.norm.weight").unwrap();
        assert!(norm.values.iter().all(|&x| (0.7..1.3).contains(&x)));
        // All values are exactly representable in bf16.
        assert!(q.values.iter().all(|&x| half::bf16::from_f32(x).to_f32() == x));
    }
}
