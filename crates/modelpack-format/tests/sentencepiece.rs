//! SentencePiece `tokenizer.model` conversion. The golden model and its per-id facts were
//! produced by the real `sentencepiece` library (xtask/py/spm_golden.py; sentencepiece isn't in
//! the CI venv, so they are checked in); special tokens are judged by `gguf.SpecialVocab`.

mod common;

use modelpack_format::gguf::tokenizer::{parse_sentencepiece, sentencepiece_metadata};
use modelpack_format::gguf::MetaValue;
use proptest::prelude::*;
use serde_json::{json, Value};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/spm").join(name)).unwrap()
}

fn expected() -> Value {
    serde_json::from_slice(&data("expected.json")).unwrap()
}

#[test]
fn pieces_scores_and_kinds_match_sentencepiece() {
    let (pieces, model_type) = parse_sentencepiece(&data("tokenizer.model")).unwrap();
    assert_eq!(model_type, 2, "trained as BPE");
    let want = expected();
    let wp = want["pieces"].as_array().unwrap();
    assert_eq!(pieces.len(), wp.len());
    for (p, w) in pieces.iter().zip(wp) {
        assert_eq!(p.piece, w["piece"].as_str().unwrap());
        assert_eq!(p.score, w["score"].as_f64().unwrap() as f32, "{}", p.piece);
        assert_eq!(p.kind == 2, w["unknown"] == true, "{}", p.piece);
        assert_eq!(p.kind == 3, w["control"] == true, "{}", p.piece);
        assert_eq!(p.kind == 5, w["unused"] == true, "{}", p.piece);
        assert_eq!(p.kind == 6, w["byte"] == true, "{}", p.piece);
    }
}

fn get<'a>(md: &'a [(String, MetaValue)], k: &str) -> &'a MetaValue {
    &md.iter().find(|(key, _)| key == k).unwrap_or_else(|| panic!("no {k}")).1
}

#[test]
fn metadata_follows_the_converter() {
    let want = expected();
    let wp = want["pieces"].as_array().unwrap();
    let model = data("tokenizer.model");
    let config = json!({"architectures": ["LlamaForCausalLM"], "vocab_size": 403,
                        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 999});
    let added = json!({"<extra>": 401, "<too-far>": 500});
    let tc = json!({
        "bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true,
        "add_eos_token": false, "add_prefix_space": false, "chat_template": "{{ x }}",
        "added_tokens_decoder": {
            "3": {"content": "<|im_start|>", "special": true},
            "402": {"content": "\u{2581}pad", "special": false},
            "9999": {"content": "ignored", "special": true}
        }
    });
    let tj = json!({"added_tokens": [{"id": 1, "content": "<s>", "special": true},
                                     {"id": 2, "content": "</s>", "special": true}]});
    let md = sentencepiece_metadata(&model, Some(&added), Some(&tj), Some(&tc), &config).unwrap();
    assert_eq!(get(&md, "tokenizer.ggml.model"), &MetaValue::string("llama"));
    assert_eq!(get(&md, "tokenizer.ggml.pre"), &MetaValue::string("default"));
    let tokens: Vec<&str> =
        get(&md, "tokenizer.ggml.tokens").as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let scores: Vec<f32> = get(&md, "tokenizer.ggml.scores")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| match v {
            MetaValue::F32(x) => *x,
            o => panic!("{o:?}"),
        })
        .collect();
    let types: Vec<i32> = get(&md, "tokenizer.ggml.token_type")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| match v {
            MetaValue::I32(x) => *x,
            o => panic!("{o:?}"),
        })
        .collect();
    assert_eq!((tokens.len(), scores.len(), types.len()), (403, 403, 403));
    for (i, w) in wp.iter().enumerate() {
        if i == 3 {
            continue;
        }
        assert_eq!(tokens[i], w["piece"].as_str().unwrap(), "id {i}");
        assert_eq!(scores[i], w["score"].as_f64().unwrap() as f32, "id {i}");
        // Converter: unknown 2, control 3, unused 5, byte 6, everything else (user-defined
        // pieces included) normal 1.
        let t = if w["unknown"] == true {
            2
        } else if w["control"] == true {
            3
        } else if w["unused"] == true {
            5
        } else if w["byte"] == true {
            6
        } else {
            1
        };
        assert_eq!(types[i], t, "id {i} {}", tokens[i]);
    }
    assert_eq!((tokens[4], types[4]), ("<tool>", 1));
    // added_tokens_decoder: special -> CONTROL, score -1000.
    assert_eq!((tokens[3], scores[3], types[3]), ("<|im_start|>", -1000.0, 3));
    // Padding beyond the model: [PAD{id}], -10000, UNUSED; then overrides.
    assert_eq!((tokens[400], scores[400], types[400]), ("[PAD400]", -10000.0, 5));
    assert_eq!((tokens[401], scores[401], types[401]), ("<extra>", -1000.0, 4));
    assert_eq!((tokens[402], scores[402], types[402]), (" pad", -1000.0, 4));
    assert_eq!(get(&md, "tokenizer.ggml.add_space_prefix"), &MetaValue::Bool(false));
    // pad_token_id 999 is out of range for 403 tokens: dropped (the judge agrees below).
    assert!(md.iter().all(|(k, _)| k != "tokenizer.ggml.padding_token_id"));

    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tj.to_string()).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), tc.to_string()).unwrap();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let judge = common::run_json(
        &py,
        &[common::script("special_vocab_dump.py").as_os_str(), dir.path().as_os_str(), "403".as_ref()],
    );
    let skip = [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.add_space_prefix",
    ];
    let ours: Vec<Value> = md
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| match v {
            MetaValue::U32(x) => json!([k, "UINT32", x]),
            MetaValue::Bool(b) => json!([k, "BOOL", b]),
            MetaValue::String(s) => json!([k, "STRING", s]),
            o => panic!("{o:?}"),
        })
        .collect();
    assert_eq!(Value::Array(ours), judge);
}

#[test]
fn bad_models_are_errors() {
    let model = data("tokenizer.model");
    let cfg = json!({});
    for cut in [1, 2, 10, 100, model.len() / 2, model.len() - 1] {
        // A cut may land on a field boundary and still parse; it must never panic.
        let _ = sentencepiece_metadata(&model[..cut], None, None, None, &cfg);
    }
    assert!(parse_sentencepiece(&[]).is_err());
    assert!(parse_sentencepiece(&[0x0a, 0xff]).is_err(), "length past end");
    assert!(parse_sentencepiece(&[0x0b]).is_err(), "wire type 3");
    assert!(parse_sentencepiece(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    // A word-level model (trainer_spec.model_type = 3) is unsupported, naming the type.
    let word = [0x0a, 0x03, 0x0a, 0x01, b'a', 0x12, 0x02, 0x18, 0x03];
    let e = sentencepiece_metadata(&word, None, None, None, &cfg).unwrap_err();
    assert!(e.to_string().contains("model type 3"), "{e}");
    assert!(sentencepiece_metadata(&model, Some(&json!([1])), None, None, &cfg).is_err());
    assert!(sentencepiece_metadata(
        &model,
        None,
        None,
        Some(&json!({"added_tokens_decoder": {"x": {"content": "a"}}})),
        &cfg
    )
    .is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_models_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut m = data("tokenizer.model");
        for (i, b) in edits {
            let i = i.index(m.len());
            m[i] = b;
        }
        let _ = sentencepiece_metadata(&m, None, None, None, &json!({}));
    }
}
