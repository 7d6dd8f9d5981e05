//! The hostile-input corpus: one small file (or directory) per validation rule of the safetensors
//! reader (`crates/modelpack-checkpoint/src/header.rs`, `lib.rs`).
//! `tests/it/hostile.rs` runs `modelpack inspect` on each and expects exit 2 with a message
//! naming the problem.

use super::st::{raw, serialize, StTensor};
use super::{json_bytes, write_file};
use serde_json::json;
use std::path::Path;

/// A valid two-tensor file the truncation case is cut from.
fn valid() -> Vec<u8> {
    let a = StTensor { name: "a".into(), dtype: "F32", shape: vec![2, 2], data: (0..16).collect() };
    let b = StTensor { name: "b".into(), dtype: "BF16", shape: vec![4], data: (16..24).collect() };
    serialize(&[&a, &b])
}

const A4: &str = r#""a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}"#;

/// Write the corpus into `dir`.
pub fn write(dir: &Path) -> anyhow::Result<()> {
    let v = valid();
    let f = |name: &str, bytes: &[u8]| write_file(&dir.join(name), bytes);

    f("truncated.safetensors", &v[..v.len() - 5])?;
    let mut b = (1u64 << 63).to_le_bytes().to_vec();
    b.extend_from_slice(br#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#);
    f("header-len-2pow63.safetensors", &b)?;
    let mut b = 4096u64.to_le_bytes().to_vec();
    b.extend_from_slice(br#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#);
    f("header-past-end.safetensors", &b)?;
    let mut b = raw(
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"zz":{"dtype":"U8","shape":[0],"data_offsets":[1,1]}}"#,
        &[0],
    );
    let pos = b.windows(2).position(|w| w == b"zz").expect("marker");
    b[pos] = 0xC3; // a lead byte followed by ASCII: invalid UTF-8
    f("invalid-utf8.safetensors", &b)?;
    f("invalid-json.safetensors", &raw(r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},}"#, &[0; 4]))?;
    f(
        "overlap.safetensors",
        &raw(&format!(r#"{{{A4},"b":{{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}}}"#), &[0; 6]),
    )?;
    f(
        "offsets-past-end.safetensors",
        &raw(&format!(r#"{{{A4},"b":{{"dtype":"U8","shape":[4],"data_offsets":[4096,4100]}}}}"#), &[0; 8]),
    )?;
    f("size-mismatch.safetensors", &raw(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]))?;
    f(
        "shape-overflow.safetensors",
        &raw(r#"{"a":{"dtype":"BF16","shape":[4294967296,4294967296,2],"data_offsets":[0,8]}}"#, &[0; 8]),
    )?;
    f(
        "duplicate-name.safetensors",
        &raw(
            r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#,
            &[0; 8],
        ),
    )?;
    f("unknown-dtype.safetensors", &raw(r#"{"a":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,4]}}"#, &[0; 4]))?;
    f("not-safetensors.safetensors", b"PK\x03\x04\x14\x00\x00\x00this is a zip, not safetensors\n")?;
    f("empty.safetensors", b"")?;

    // A sharded checkpoint whose index names a shard that is not there.
    let idx = json!({"metadata": {"total_size": 8}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}});
    f("missing-shard/model.safetensors.index.json", &json_bytes(&idx))?;
    f("missing-shard/model-00001-of-00002.safetensors", &raw(&format!("{{{A4}}}"), &[0; 4]))?;
    // A directory with a config and PyTorch weights but no safetensors.
    f("no-weights/config.json", &json_bytes(&json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})))?;
    f("no-weights/README.md", b"This directory has a config but no *.safetensors weights.\n")?;
    Ok(())
}
