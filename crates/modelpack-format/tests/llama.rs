//! llama-family conversion: hyperparameters, tensor names, and the q/k permutation checked
//! against numpy running the converter's own reshape/swapaxes expression.

mod common;

use modelpack_format::gguf::llama::{
    arch_metadata, gguf_arch, is_skipped_tensor, llama3_rope_freqs, permute_qk, qk_permutation_for, tensor_name,
    LlamaDims,
};
use modelpack_format::gguf::MetaValue;
use modelpack_format::FormatError;
use serde_json::{json, Value};
use std::ffi::OsStr;

fn dense_config() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/compressed-tensors/dense_bf16/config.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn llama_metadata_from_the_fixture_config() {
    // transformers 5 config: rope_theta lives in rope_parameters; head_dim explicit.
    let (arch, md) = arch_metadata(&dense_config()).unwrap();
    assert_eq!(arch, "llama");
    let want: Vec<(&str, MetaValue)> = vec![
        ("general.architecture", MetaValue::string("llama")),
        ("general.name", MetaValue::string("llama")),
        ("llama.context_length", MetaValue::U32(256)),
        ("llama.embedding_length", MetaValue::U32(256)),
        ("llama.feed_forward_length", MetaValue::U32(512)),
        ("llama.block_count", MetaValue::U32(1)),
        ("llama.attention.head_count", MetaValue::U32(2)),
        ("llama.attention.head_count_kv", MetaValue::U32(1)),
        ("llama.rope.freq_base", MetaValue::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-6)),
        ("llama.attention.key_length", MetaValue::U32(128)),
        ("llama.attention.value_length", MetaValue::U32(128)),
        ("llama.vocab_size", MetaValue::U32(512)),
        ("llama.rope.dimension_count", MetaValue::U32(128)),
    ];
    let got: Vec<(&str, MetaValue)> = md.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    assert_eq!(got, want);
}

fn qwen2_config() -> Value {
    json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct/",
        "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "vocab_size": 151936,
        "tie_word_embeddings": true,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    })
}

#[test]
fn qwen2_metadata_and_no_permutation() {
    let c = qwen2_config();
    let (arch, md) = arch_metadata(&c).unwrap();
    assert_eq!(arch, "qwen2");
    let get = |k: &str| md.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get("general.name"), Some(MetaValue::string("Qwen2.5-0.5B-Instruct")));
    assert_eq!(get("qwen2.rope.freq_base"), Some(MetaValue::F32(1e6)));
    assert_eq!(get("qwen2.rope.dimension_count"), Some(MetaValue::U32(64)));
    assert_eq!(get("qwen2.attention.head_count_kv"), Some(MetaValue::U32(2)));
    assert_eq!(get("qwen2.attention.key_length"), None, "no head_dim in config");
    assert_eq!(get("qwen2.rope.scaling.type"), Some(MetaValue::string("yarn")));
    assert_eq!(get("qwen2.rope.scaling.factor"), Some(MetaValue::F32(4.0)));
    assert_eq!(get("qwen2.rope.scaling.original_context_length"), Some(MetaValue::U32(32768)));
    assert!(md.iter().all(|(k, _)| k.starts_with("general.") || k.starts_with("qwen2.")));
    let d = LlamaDims::from_config(&c).unwrap();
    assert!(d.tied_embeddings);
    assert_eq!(qk_permutation_for(&d, "model.layers.0.self_attn.q_proj.weight", 896).unwrap(), None);
    assert_eq!(d.expected_shape("model.layers.3.self_attn.k_proj.bias"), Some(vec![128]));
    assert_eq!(d.expected_shape("model.layers.24.self_attn.k_proj.bias"), None);
    assert_eq!(d.expected_shape("lm_head.weight"), Some(vec![151936, 896]));
}

#[test]
fn architectures_and_config_errors() {
    let mut c = dense_config();
    c["architectures"] = json!(["MistralForCausalLM"]);
    assert_eq!(gguf_arch(&c).unwrap(), "llama");
    c["architectures"] = json!(["BertModel"]);
    let e = arch_metadata(&c).unwrap_err();
    assert!(matches!(e, FormatError::UnsupportedArchitecture(ref a) if a == "BertModel"), "{e}");
    assert!(e.to_string().contains("BertModel"));
    let mut c = dense_config();
    c.as_object_mut().unwrap().remove("architectures");
    assert!(matches!(arch_metadata(&c), Err(FormatError::BadConfig { .. })));
    for (key, val) in [
        ("hidden_size", json!(null)),
        ("num_attention_heads", json!(0)),
        ("num_key_value_heads", json!(3)),
        ("intermediate_size", json!("big")),
        ("rms_norm_eps", json!(null)),
        ("vocab_size", json!(1u64 << 33)),
        ("tie_word_embeddings", json!("yes")),
    ] {
        let mut c = dense_config();
        c[key] = val.clone();
        let e = arch_metadata(&c).unwrap_err();
        assert!(e.to_string().contains(key) || e.to_string().contains("num_"), "{key}={val}: {e}");
    }
    let mut c = dense_config();
    c.as_object_mut().unwrap().remove("head_dim");
    c["hidden_size"] = json!(255);
    assert!(arch_metadata(&c).is_err(), "hidden not divisible by heads");
    let mut c = dense_config();
    c["rope_scaling"] = json!({"rope_type": "dynamic", "factor": 2.0});
    c.as_object_mut().unwrap().remove("rope_parameters");
    assert!(arch_metadata(&c).unwrap_err().to_string().contains("dynamic"));
    c["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.0});
    let (_, md) = arch_metadata(&c).unwrap();
    assert!(md.contains(&("llama.rope.scaling.type".into(), MetaValue::string("linear"))));
}

#[test]
fn tensor_names() {
    let cases = [
        ("model.embed_tokens.weight", Some("token_embd.weight")),
        ("lm_head.weight", Some("output.weight")),
        ("model.norm.weight", Some("output_norm.weight")),
        ("model.layers.0.input_layernorm.weight", Some("blk.0.attn_norm.weight")),
        ("model.layers.12.self_attn.q_proj.weight", Some("blk.12.attn_q.weight")),
        ("model.layers.1.self_attn.k_proj.weight", Some("blk.1.attn_k.weight")),
        ("model.layers.1.self_attn.v_proj.weight", Some("blk.1.attn_v.weight")),
        ("model.layers.1.self_attn.o_proj.weight", Some("blk.1.attn_output.weight")),
        ("model.layers.3.post_attention_layernorm.weight", Some("blk.3.ffn_norm.weight")),
        ("model.layers.3.mlp.gate_proj.weight", Some("blk.3.ffn_gate.weight")),
        ("model.layers.3.mlp.up_proj.weight", Some("blk.3.ffn_up.weight")),
        ("model.layers.3.mlp.down_proj.weight", Some("blk.3.ffn_down.weight")),
        ("model.layers.0.self_attn.q_proj.bias", Some("blk.0.attn_q.bias")),
        ("model.layers.0.self_attn.k_proj.bias", Some("blk.0.attn_k.bias")),
        ("model.layers.0.self_attn.v_proj.bias", Some("blk.0.attn_v.bias")),
        ("model.layers.0.input_layernorm.bias", None),
        ("model.layers.01.mlp.up_proj.weight", None),
        ("model.layers.x.mlp.up_proj.weight", None),
        ("model.layers.0.mlp.experts.0.up_proj.weight", None),
        ("model.layers.0.self_attn.rotary_emb.inv_freq", None),
        ("encoder.layer.0.attention.self.query.weight", None),
    ];
    for (hf, want) in cases {
        assert_eq!(tensor_name(hf).as_deref(), want, "{hf}");
    }
    assert!(is_skipped_tensor("model.layers.0.self_attn.rotary_emb.inv_freq"));
    assert!(!is_skipped_tensor("model.layers.0.self_attn.q_proj.weight"));
}

#[test]
fn permutation_by_hand() {
    // 2 heads of 4 rows: within a head, rows (0,1 | 2,3) -> halves interleaved 0,2,1,3.
    let p = permute_qk(2, 8).unwrap();
    let got: Vec<usize> = (0..8).map(|r| p.src_row(r)).collect();
    assert_eq!(got, [0, 2, 1, 3, 4, 6, 5, 7]);
    assert!(permute_qk(3, 8).is_err());
    assert!(permute_qk(4, 12).is_err()); // 3 rows per head: odd
    assert!(permute_qk(0, 8).is_err());
    let d = LlamaDims::from_config(&dense_config()).unwrap();
    // k has num_key_value_heads = 1 head of 128 rows.
    let k = qk_permutation_for(&d, "model.layers.0.self_attn.k_proj.weight", 128).unwrap().unwrap();
    assert_eq!((k.src_row(1), k.src_row(2), k.src_row(127)), (64, 1, 127));
    let q = qk_permutation_for(&d, "model.layers.0.self_attn.q_proj.weight", 256).unwrap().unwrap();
    assert_eq!((q.src_row(1), q.src_row(129)), (64, 192));
    assert_eq!(qk_permutation_for(&d, "model.layers.0.self_attn.v_proj.weight", 128).unwrap(), None);
    let e = qk_permutation_for(&d, "model.layers.0.self_attn.q_proj.weight", 250).unwrap_err();
    assert!(e.to_string().contains("q_proj"), "{e}");
}

#[test]
fn permutation_matches_numpy_converter_expression() {
    let Some(py) = common::python() else { return };
    let script = r#"
import sys, json, numpy as np
out = []
for spec in sys.argv[1:]:
    n_head, rows = map(int, spec.split(","))
    w = np.arange(rows * 3).reshape(rows, 3)
    p = w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    out.append((p[:, 0] // 3).tolist())
print(json.dumps(out))
"#;
    let specs = [(1, 2), (2, 8), (4, 64), (32, 4096), (8, 1024), (14, 896), (2, 256)];
    let args: Vec<String> = specs.iter().map(|(h, r)| format!("{h},{r}")).collect();
    let mut all: Vec<&OsStr> = vec![OsStr::new(script)];
    all.splice(0..0, [OsStr::new("-c")]);
    all.extend(args.iter().map(OsStr::new));
    let want = common::run_json(&py, &all);
    for (i, (h, r)) in specs.iter().enumerate() {
        let p = permute_qk(*h, *r).unwrap();
        let ours: Vec<usize> = (0..*r).map(|d| p.src_row(d)).collect();
        let theirs: Vec<usize> = want[i].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(ours, theirs, "n_head {h}, rows {r}");
    }
}

#[test]
fn llama3_rope_factors_match_numpy() {
    let mut c = dense_config();
    assert_eq!(llama3_rope_freqs(&c).unwrap(), None);
    c["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    let ours = llama3_rope_freqs(&c).unwrap().unwrap();
    assert_eq!(ours.len(), 64);
    assert_eq!(ours[0], 1.0);
    assert_eq!(ours[63], 32.0);
    let Some(py) = common::python() else { return };
    // The converter's arithmetic with numpy float32 in place of torch float32.
    let script = r#"
import json, math, numpy as np
base, dim, factor, lo, hi, old = 500000.0, 128, 32.0, 1.0, 4.0, 8192
freqs = np.float32(1.0) / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
lw, hw = old / lo, old / hi
out = []
for f in freqs:
    wl = np.float32(2 * math.pi) / f
    if wl < hw: out.append(1.0)
    elif wl > lw: out.append(factor)
    else:
        s = (np.float32(old) / wl - np.float32(lo)) / np.float32(hi - lo)
        out.append(float(np.float32(1) / ((np.float32(1) - s) / np.float32(factor) + s)))
print(json.dumps(out))
"#;
    let want = common::run_json(&py, &[OsStr::new("-c"), OsStr::new(script)]);
    for (i, w) in want.as_array().unwrap().iter().enumerate() {
        let w = w.as_f64().unwrap() as f32;
        assert!((ours[i] - w).abs() <= w.abs() * 1e-6, "factor {i}: {} vs {w}", ours[i]);
    }
}
