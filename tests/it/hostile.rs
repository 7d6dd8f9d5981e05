//! The hostile-input corpus (`fixtures/hostile`, made by `cargo xtask fixtures`): every case
//! exits 2 without panicking and names its problem, in human and `--json` mode.
use crate::common;

const CASES: &[(&str, &str)] = &[
    ("truncated.safetensors", "truncated file"),
    ("empty.safetensors", "truncated file"),
    ("header-len-2pow63.safetensors", "header length 9223372036854775808 exceeds the 100000000-byte limit"),
    ("header-past-end.safetensors", "is longer than the file"),
    ("invalid-utf8.safetensors", "header is not valid UTF-8"),
    ("invalid-json.safetensors", "invalid header JSON"),
    ("overlap.safetensors", "tensors \"a\" and \"b\" overlap"),
    ("offsets-past-end.safetensors", "tensor \"b\" data_offsets [4096, 4100] out of bounds"),
    ("size-mismatch.safetensors", "tensor \"a\" size mismatch: F32 [3] needs 12 bytes but data_offsets span 8"),
    ("shape-overflow.safetensors", "tensor \"a\" shape [4294967296, 4294967296, 2] overflows"),
    ("duplicate-name.safetensors", "duplicate tensor name \"a\""),
    ("unknown-dtype.safetensors", "unknown dtype \"Q4_K\""),
    ("not-safetensors.safetensors", "not a safetensors file (it is a zip archive"),
    ("missing-shard", "missing shard \"model-00002-of-00002.safetensors\""),
    ("no-weights", "no weights found"),
];

#[test]
fn every_case_is_a_clean_input_error() {
    let dir = common::fixture("hostile");
    let mut listed: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    listed.sort();
    let mut covered: Vec<String> = CASES.iter().map(|c| c.0.to_owned()).collect();
    covered.sort();
    assert_eq!(listed, covered, "every hostile fixture has a case here");

    for (name, needle) in CASES {
        let path = dir.join(name);
        let out = common::modelpack().arg("inspect").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(err.contains(needle), "{name}: expected {needle:?} in {err}");
        assert!(err.contains(name), "{name}: message names the file: {err}");

        let out = common::modelpack().arg("inspect").arg(&path).arg("--json").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        assert_eq!(doc["status"], "error");
        assert!(doc["error"].as_str().unwrap().contains(needle), "{name}: {doc}");
    }
}
