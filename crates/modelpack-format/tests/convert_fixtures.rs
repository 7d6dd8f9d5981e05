//! Convert the repository's tiny llama and qwen2 fixtures to f32 GGUF with this crate's API
//! alone (names, q/k permutation, hyperparameters, tokenizer), then let gguf-py judge the file:
//! its `TensorNameMap` names, the converter's numpy permutation, exact values, and
//! `gguf.SpecialVocab` for the special tokens.

mod common;

use modelpack_format::gguf::llama::{arch_metadata, is_skipped_tensor, qk_permutation_for, tensor_name, LlamaDims};
use modelpack_format::gguf::tokenizer::{detect_pre_tokenizer, tokenizer_metadata};
use modelpack_format::gguf::{
    file_type_for, write_to_vec, GgufFile, GgufTensorInfo, MetaValue, GGML_F32, QUANTIZATION_VERSION,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// (name, shape, f32 values) of a bf16 safetensors file, in name order.
fn read_bf16(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let mut out: Vec<_> = h
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            assert_eq!(v["dtype"], "BF16");
            let shape: Vec<usize> =
                v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
            let a = v["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
            let e = v["data_offsets"][1].as_u64().unwrap() as usize + 8 + n;
            let vals = b[a..e]
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect();
            (k.clone(), shape, vals)
        })
        .collect();
    out.sort_by(|x, y| x.0.cmp(&y.0));
    out
}

fn convert(dir: &Path) -> Vec<u8> {
    let config = json(&dir.join("config.json"));
    let tj = json(&dir.join("tokenizer.json"));
    let tc = json(&dir.join("tokenizer_config.json"));
    let dims = LlamaDims::from_config(&config).unwrap();
    let (_, mut md) = arch_metadata(&config).unwrap();
    md.push(("general.file_type".into(), MetaValue::U32(file_type_for(GGML_F32).unwrap())));
    md.push(("general.quantization_version".into(), MetaValue::U32(QUANTIZATION_VERSION)));
    md.extend(tokenizer_metadata(&tj, Some(&tc), &config).unwrap());
    let mut infos = Vec::new();
    let mut datas: Vec<Vec<u8>> = Vec::new();
    for (hf, shape, vals) in read_bf16(&dir.join("model.safetensors")) {
        if is_skipped_tensor(&hf) {
            continue;
        }
        let name = tensor_name(&hf).unwrap_or_else(|| panic!("no GGUF name for {hf}"));
        assert_eq!(dims.expected_shape(&hf).as_ref(), Some(&shape), "{hf}");
        let rows = shape[0];
        let cols: usize = shape[1..].iter().product();
        let perm = qk_permutation_for(&dims, &hf, rows).unwrap();
        let mut bytes = Vec::with_capacity(vals.len() * 4);
        for r in 0..rows {
            let src = perm.map_or(r, |p| p.src_row(r));
            for v in &vals[src * cols..(src + 1) * cols] {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        infos.push(GgufTensorInfo { name, ne: shape.iter().rev().map(|&d| d as u64).collect(), ggml_type: GGML_F32 });
        datas.push(bytes);
    }
    let refs: Vec<&[u8]> = datas.iter().map(Vec::as_slice).collect();
    write_to_vec(&md, &infos, &refs, 32).unwrap()
}

fn check(fixture_name: &str, arch: &str, pre: &str, tensors: usize) {
    let dir = fixture(fixture_name);
    let config = json(&dir.join("config.json"));
    assert_eq!(detect_pre_tokenizer(&json(&dir.join("tokenizer.json")), &config).0, pre);
    let bytes = convert(&dir);
    // Opt-in: keep the converted file, e.g. to load it in llama.cpp by hand.
    if let Some(out) = std::env::var_os("MODELPACK_FORMAT_OUT") {
        std::fs::write(Path::new(&out).join(format!("{fixture_name}-f32.gguf")), &bytes).unwrap();
    }
    let f = GgufFile::parse(&bytes).unwrap();
    assert_eq!(f.get("general.architecture"), Some(&MetaValue::string(arch)));
    assert_eq!(f.tensors.len(), tensors);
    let n_tokens = f.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap().len();
    assert_eq!(n_tokens, 272);

    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let r =
        common::run_json(&py, &[common::script("check_llama_gguf.py").as_os_str(), path.as_os_str(), dir.as_os_str()]);
    assert_eq!(r["mismatches"], serde_json::json!([]), "{r}");
    assert_eq!(r["extra"], serde_json::json!([]));
    assert_eq!(r["checked"], tensors);
    let fields = &r["fields"];
    assert_eq!(fields["general.architecture"], arch);
    assert_eq!(fields[format!("{arch}.block_count")], 2);
    assert_eq!(fields[format!("{arch}.attention.head_count_kv")], 2);
    assert_eq!(fields["tokenizer.ggml.model"], "gpt2");
    assert_eq!(fields["tokenizer.ggml.pre"], pre);
    assert_eq!(fields["tokenizer.ggml.bos_token_id"], 270);
    assert_eq!(fields["tokenizer.ggml.eos_token_id"], 271);
    assert_eq!(fields["general.file_type"], 0);

    // Special tokens and merges exactly as gguf.SpecialVocab reads the fixture directory.
    let judge = common::run_json(&py, &[common::script("special_vocab_dump.py").as_os_str(), dir.as_os_str()]);
    for entry in judge.as_array().unwrap() {
        let key = entry[0].as_str().unwrap();
        let ours = f.get(key).unwrap_or_else(|| panic!("missing {key}"));
        let ours_json = ours.to_json(usize::MAX);
        assert_eq!(ours_json, entry[2], "{key}");
    }
    let ours_special = f
        .metadata
        .iter()
        .filter(|(k, _)| {
            k.starts_with("tokenizer.")
                && !["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"]
                    .contains(&k.as_str())
        })
        .count();
    assert_eq!(ours_special, judge.as_array().unwrap().len());
}

#[test]
fn tiny_llama_converts() {
    check("tiny-llama", "llama", "llama-bpe", 21);
}

#[test]
fn tiny_qwen2_converts() {
    // Tied embeddings: no lm_head, no output.weight; q/k/v biases; no permutation.
    check("tiny-qwen2", "qwen2", "qwen2", 26);
}
