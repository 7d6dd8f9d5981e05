//! quantization_config and config.json against what compressed-tensors 0.20 itself wrote for
//! the fixtures in `fixtures/compressed-tensors/`.

use modelpack_format::compressed_tensors::{
    quantization_config, shard_file_name, sharded_index, with_quantization_config, CtGroup, CtStrategy,
};
use serde_json::{json, Value};

/// config.json of fixture `dir` under fixtures/compressed-tensors.
fn load(dir: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/compressed-tensors")
        .join(dir)
        .join("config.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Deep equality including the order of object keys.
fn ordered_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((ka, va), (kb, vb))| ka == kb && ordered_eq(va, vb))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| ordered_eq(p, q)),
        _ => a == b,
    }
}

fn linear(bits: u32, strategy: CtStrategy) -> CtGroup {
    CtGroup { targets: vec!["Linear".into()], num_bits: bits, symmetric: true, strategy }
}

#[test]
fn configs_equal_the_fixtures_key_for_key() {
    let dense = load("dense_bf16");
    for (fixture, group) in
        [("w4a16_g128_sym", linear(4, CtStrategy::Group(128))), ("w8a16_channel_sym", linear(8, CtStrategy::Channel))]
    {
        let want = load(fixture);
        let qc = quantization_config(&[group], &["lm_head".to_string()]);
        assert!(ordered_eq(&qc, &want["quantization_config"]), "{fixture}:\n{qc:#}");
        let full = with_quantization_config(&dense, qc, false).unwrap();
        assert!(ordered_eq(&full, &want), "{fixture}");
    }
}

#[test]
fn fallback_groups_and_asymmetric() {
    let groups = [
        linear(4, CtStrategy::Group(128)),
        CtGroup {
            targets: vec!["re:.*down_proj$".into()],
            num_bits: 4,
            symmetric: false,
            strategy: CtStrategy::Channel,
        },
    ];
    let qc = quantization_config(&groups, &["lm_head".into(), "model.layers.0.mlp.gate".into()]);
    let g1 = &qc["config_groups"]["group_1"];
    assert_eq!(g1["targets"], json!(["re:.*down_proj$"]));
    assert_eq!(g1["weights"]["strategy"], "channel");
    assert_eq!(g1["weights"]["group_size"], Value::Null);
    assert_eq!(g1["weights"]["symmetric"], false);
    assert_eq!(qc["config_groups"]["group_0"]["weights"]["group_size"], 128);
    assert_eq!(qc["ignore"], json!(["lm_head", "model.layers.0.mlp.gate"]));
    // The key set of a weights entry is exactly the fixture's.
    let want = load("w4a16_g128_sym");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(g1), keys(&want["quantization_config"]["config_groups"]["group_0"]));
    assert_eq!(keys(&g1["weights"]), keys(&want["quantization_config"]["config_groups"]["group_0"]["weights"]));
}

#[test]
fn existing_quantization_config_is_refused() {
    let q = load("w4a16_g128_sym");
    let e = with_quantization_config(&q, json!({}), false).unwrap_err();
    assert!(e.to_string().contains("quantization_config"), "{e}");
    let replaced = with_quantization_config(&q, json!({"x": 1}), true).unwrap();
    assert_eq!(replaced["quantization_config"], json!({"x": 1}));
    assert_eq!(replaced.as_object().unwrap().len(), q.as_object().unwrap().len());
    // Unsorted originals get the key appended.
    let unsorted = json!({"z": 1, "a": 2});
    let out = with_quantization_config(&unsorted, json!(1), false).unwrap();
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "a", "quantization_config"]);
    assert!(with_quantization_config(&json!([1]), json!(1), false).is_err());
}

#[test]
fn shard_names_and_index() {
    assert_eq!(shard_file_name(1, 3), "model-00001-of-00003.safetensors");
    assert_eq!(shard_file_name(12, 12), "model-00012-of-00012.safetensors");
    let idx =
        sharded_index(1234, &[("b.weight".into(), shard_file_name(2, 2)), ("a.weight".into(), shard_file_name(1, 2))]);
    let text = serde_json::to_string(&idx).unwrap();
    assert_eq!(
        text,
        r#"{"metadata":{"total_size":1234},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}}"#
    );
}
