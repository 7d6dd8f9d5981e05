//! Tokenizer conversion: vocabulary, token types and merges against hand-derived expectations
//! from llama.cpp's converter logic (`get_vocab_base`), and special tokens, flags, merges and
//! chat templates against the reference `gguf.SpecialVocab` run on the same files.

mod common;

use modelpack_format::gguf::tokenizer::{
    detect_pre_tokenizer, tokenizer_metadata, tokenizer_metadata_with_template, PreTokenizerSource,
};
use modelpack_format::gguf::MetaValue;
use modelpack_format::FormatError;
use serde_json::{json, Value};

fn byte_level() -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
}

/// A GPT-2-style byte-level BPE tokenizer.json.
fn gpt2_tokenizer(merges: Value) -> Value {
    json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 7, "content": "<|endoftext|>", "special": true, "normalized": false},
            {"id": 9, "content": "<tool>", "special": false, "normalized": false},
            {"id": 10, "content": "<|im_start|>", "special": false, "normalized": false},
            {"id": 11, "content": "\u{2581}x", "special": false, "normalized": true},
        ],
        "normalizer": null,
        "pre_tokenizer": byte_level(),
        "post_processor": byte_level(),
        "decoder": byte_level(),
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "vocab": {"!": 0, "\"": 1, "a": 2, "b": 3, "\u{120}": 4, "ab": 5, "\u{120}a": 6,
                      "<|endoftext|>": 7},
            "merges": merges,
        }
    })
}

fn strs(v: &MetaValue) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
}

fn get<'a>(md: &'a [(String, MetaValue)], k: &str) -> Option<&'a MetaValue> {
    md.iter().find(|(key, _)| key == k).map(|(_, v)| v)
}

#[test]
fn gpt2_vocab_types_and_merges_follow_llama_cpp() {
    let tj = gpt2_tokenizer(json!(["a b", "\u{120} a"]));
    let tc = json!({"bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"},
                    "add_bos_token": false, "chat_template": "{{ messages }}"});
    let config = json!({"model_type": "llama", "vocab_size": 13, "pad_token_id": 9});
    let md = tokenizer_metadata(&tj, Some(&tc), &config).unwrap();
    assert_eq!(get(&md, "tokenizer.ggml.model"), Some(&MetaValue::string("gpt2")));
    assert_eq!(get(&md, "tokenizer.ggml.pre"), Some(&MetaValue::string("gpt-2")));
    // config vocab_size 13: ids 8 and 12 have no token -> [PAD{id}], UNUSED (5).
    assert_eq!(
        strs(get(&md, "tokenizer.ggml.tokens").unwrap()),
        ["!", "\"", "a", "b", "Ġ", "ab", "Ġa", "<|endoftext|>", "[PAD8]", "<tool>", "<|im_start|>", " x", "[PAD12]"]
    );
    let types: Vec<i32> = get(&md, "tokenizer.ggml.token_type")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| match v {
            MetaValue::I32(t) => *t,
            other => panic!("token type {other:?} is not i32"),
        })
        .collect();
    // special -> CONTROL 3; non-special "<tool>" -> USER_DEFINED 4; "<|im_start|>" looks
    // special -> CONTROL; "▁x" user-defined with ▁ -> space.
    assert_eq!(types, [1, 1, 1, 1, 1, 1, 1, 3, 5, 4, 3, 4, 5]);
    assert_eq!(strs(get(&md, "tokenizer.ggml.merges").unwrap()), ["a b", "Ġ a"]);
    assert_eq!(get(&md, "tokenizer.ggml.bos_token_id"), Some(&MetaValue::U32(7)));
    assert_eq!(get(&md, "tokenizer.ggml.eos_token_id"), Some(&MetaValue::U32(7)));
    assert_eq!(get(&md, "tokenizer.ggml.padding_token_id"), Some(&MetaValue::U32(9)));
    assert_eq!(get(&md, "tokenizer.ggml.add_bos_token"), Some(&MetaValue::Bool(false)));
    assert_eq!(get(&md, "tokenizer.chat_template"), Some(&MetaValue::string("{{ messages }}")));
}

#[test]
fn pair_merges_encode_spaces() {
    let tj = gpt2_tokenizer(json!([["a", "b"], ["x y", "z"]]));
    let md = tokenizer_metadata(&tj, None, &json!({"vocab_size": 12})).unwrap();
    assert_eq!(strs(get(&md, "tokenizer.ggml.merges").unwrap()), ["a b", "x\u{120}y z"]);
    // Without config vocab_size ids come from the tokenizer (max id 11 -> 12 tokens).
    let md = tokenizer_metadata(&tj, None, &json!({})).unwrap();
    assert_eq!(get(&md, "tokenizer.ggml.tokens").unwrap().as_array().unwrap().len(), 12);
}

#[test]
fn bad_tokenizers_are_errors() {
    let tj = gpt2_tokenizer(json!(["a b"]));
    // A token id beyond config vocab_size.
    let e = tokenizer_metadata(&tj, None, &json!({"vocab_size": 11})).unwrap_err();
    assert!(e.to_string().contains("11"), "{e}");
    let e = tokenizer_metadata(&gpt2_tokenizer(json!([["a"]])), None, &json!({})).unwrap_err();
    assert!(matches!(e, FormatError::BadTokenizer { .. }), "{e}");
    let e = tokenizer_metadata(&gpt2_tokenizer(json!([1])), None, &json!({})).unwrap_err();
    assert!(matches!(e, FormatError::BadTokenizer { .. }), "{e}");
    let e = tokenizer_metadata(&tj, None, &json!({"vocab_size": 1u64 << 40})).unwrap_err();
    assert!(matches!(e, FormatError::BadConfig { .. }), "{e}");
    let wordpiece = json!({"model": {"type": "WordPiece", "vocab": {}},
                           "pre_tokenizer": {"type": "BertPreTokenizer"}});
    let e = tokenizer_metadata(&wordpiece, None, &json!({})).unwrap_err();
    assert!(
        matches!(e, FormatError::UnsupportedTokenizer(ref m) if m.contains("WordPiece") && m.contains("BertPreTokenizer")),
        "{e}"
    );
    let sp_bpe = json!({"model": {"type": "BPE", "byte_fallback": true, "vocab": {}, "merges": []},
                        "pre_tokenizer": {"type": "Metaspace"}, "decoder": {"type": "Sequence"}});
    let e = tokenizer_metadata(&sp_bpe, None, &json!({})).unwrap_err();
    assert!(matches!(e, FormatError::UnsupportedTokenizer(_)), "{e}");
    let mut bad_added = gpt2_tokenizer(json!([]));
    bad_added["added_tokens"] = json!([{"content": "x"}]);
    assert!(tokenizer_metadata(&bad_added, None, &json!({})).is_err());
}

const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split_then_bytes(regex: &str) -> Value {
    json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
    ]}})
}

#[test]
fn pre_tokenizer_names() {
    let llama = json!({"model_type": "llama"});
    assert_eq!(detect_pre_tokenizer(&split_then_bytes(LLAMA3), &llama), ("llama-bpe", PreTokenizerSource::Definition));
    assert_eq!(detect_pre_tokenizer(&split_then_bytes(QWEN2), &llama), ("qwen2", PreTokenizerSource::Definition));
    let smol = json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": true}, byte_level()]}});
    assert_eq!(detect_pre_tokenizer(&smol, &llama), ("smollm", PreTokenizerSource::Definition));
    assert_eq!(
        detect_pre_tokenizer(&json!({"pre_tokenizer": byte_level()}), &llama),
        ("gpt-2", PreTokenizerSource::Definition)
    );
    let odd = split_then_bytes(r"\p{N}+|\s+");
    assert_eq!(detect_pre_tokenizer(&odd, &json!({"model_type": "qwen2"})), ("qwen2", PreTokenizerSource::ModelType));
    assert_eq!(detect_pre_tokenizer(&odd, &llama), ("default", PreTokenizerSource::Fallback));
    // A prefix space changes the splitting: not GPT-2 any more.
    let prefixed = json!({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true, "use_regex": true}});
    assert_eq!(detect_pre_tokenizer(&prefixed, &llama).1, PreTokenizerSource::Fallback);
}

/// Our special-token metadata (everything after token_type) vs `gguf.SpecialVocab`.
fn compare_with_special_vocab(tj: &Value, tc: Option<&Value>, config: &Value, fallback: Option<&Value>) {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tj.to_string()).unwrap();
    if let Some(tc) = tc {
        std::fs::write(dir.path().join("tokenizer_config.json"), tc.to_string()).unwrap();
    }
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    if let Some(Value::String(t)) = fallback {
        std::fs::write(dir.path().join("chat_template.jinja"), t).unwrap();
    }
    let want = common::run_json(&py, &[common::script("special_vocab_dump.py").as_os_str(), dir.path().as_os_str()]);
    let md = tokenizer_metadata_with_template(tj, tc, config, fallback).unwrap();
    let skip = ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"];
    let ours: Vec<Value> = md
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| {
            let (ty, val) = match v {
                MetaValue::U32(x) => ("UINT32", json!(x)),
                MetaValue::Bool(b) => ("BOOL", json!(b)),
                MetaValue::String(s) => ("STRING", json!(s)),
                MetaValue::Array(_) | MetaValue::EmptyArray(_) => ("ARRAY", json!(strs(v))),
                other => panic!("unexpected {other:?}"),
            };
            json!([k, ty, val])
        })
        .collect();
    assert_eq!(Value::Array(ours), want);
}

#[test]
fn special_vocab_gpt2_with_config() {
    let tj = gpt2_tokenizer(json!([["a", "b"], ["x y", "z"]]));
    let tc = json!({"bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"},
                    "unk_token": "<|endoftext|>", "add_bos_token": false, "add_eos_token": true,
                    "chat_template": "{{ messages }}"});
    let config = json!({"model_type": "llama", "vocab_size": 13, "pad_token_id": 9, "bos_token_id": 0});
    compare_with_special_vocab(&tj, Some(&tc), &config, None);
}

#[test]
fn special_vocab_llama3_template_processing() {
    let mut tj = gpt2_tokenizer(json!(["a b"]));
    tj["added_tokens"] = json!([
        {"id": 8, "content": "<|begin_of_text|>", "special": true},
        {"id": 9, "content": "<|end_of_text|>", "special": true},
        {"id": 10, "content": "<|eot_id|>", "special": true}]);
    tj["post_processor"] = json!({"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {}}]});
    let tc = json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                    "chat_template": "{% for m in messages %}{{ m }}{% endfor %}"});
    let config = json!({"model_type": "llama", "vocab_size": 11, "bos_token_id": 8,
                        "eos_token_id": [9, 10]});
    compare_with_special_vocab(&tj, Some(&tc), &config, None);
}

#[test]
fn special_vocab_eos_from_template_becomes_eot() {
    let mut tj = gpt2_tokenizer(json!(["a b"]));
    tj["added_tokens"] = json!([
        {"id": 8, "content": "<s>", "special": true},
        {"id": 9, "content": "</s>", "special": true},
        {"id": 10, "content": "<sep>", "special": true}]);
    tj["post_processor"] = json!({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<sep>", "type_id": 0}}, {"SpecialToken": {"id": "<sep>", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "</s>", "type_id": 1}}]});
    // tokenizer_config's eos differs from the template's last token: the template wins and the
    // old eos becomes eot. sep_token unset: a separator equal to eos sets add_sep.
    let tc = json!({"bos_token": "<s>", "eos_token": "<sep>", "sep_token": null,
                    "chat_template": [{"name": "default", "template": "D"},
                                      {"name": "tool use", "template": "T"},
                                      {"name": "rag", "template": "R"}]});
    compare_with_special_vocab(&tj, Some(&tc), &json!({"vocab_size": 11}), None);
}

#[test]
fn special_vocab_roberta_and_cls_fallback() {
    let mut tj = gpt2_tokenizer(json!(["a b"]));
    tj["added_tokens"] = json!([
        {"id": 8, "content": "<cls>", "special": true},
        {"id": 9, "content": "<sepx>", "special": true},
        {"id": 10, "content": "<mask>", "special": false}]);
    tj["post_processor"] = json!({"type": "RobertaProcessing", "sep": ["<sepx>", 9], "cls": ["<cls>", 8],
                                  "trim_offsets": true, "add_prefix_space": false});
    let tc = json!({"cls_token": "<cls>", "mask_token": {"content": "<mask>", "lstrip": true}});
    compare_with_special_vocab(&tj, Some(&tc), &json!({"vocab_size": 11}), None);
}

#[test]
fn special_vocab_without_tokenizer_config_and_jinja_fallback() {
    let tj = gpt2_tokenizer(json!(["a b"]));
    let config = json!({"vocab_size": 12, "text_config": {"eos_token_id": 7}, "pad_token_id": null});
    compare_with_special_vocab(&tj, None, &config, None);
    // chat_template.jinja is used when tokenizer_config.json has no chat_template.
    let tc = json!({"eos_token": "<|endoftext|>"});
    compare_with_special_vocab(&tj, Some(&tc), &config, Some(&json!("{{ jinja }}")));
}
