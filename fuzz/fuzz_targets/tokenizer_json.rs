//! The tokenizer.json → GGUF tokenizer metadata converter on arbitrary JSON: never panics.
//! The first byte picks the config.json model type, so family fallbacks are reached too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_checkpoint::limits::{json_depth, MAX_JSON_DEPTH};
use modelpack_format::gguf::tokenizer::tokenizer_metadata;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, json)) = data.split_first() else { return };
    if json_depth(json, MAX_JSON_DEPTH) > MAX_JSON_DEPTH {
        return;
    }
    let Ok(tok) = serde_json::from_slice::<serde_json::Value>(json) else { return };
    let model_type = ["llama", "qwen2", "mistral", "other"][usize::from(sel % 4)];
    let config = serde_json::json!({"model_type": model_type, "vocab_size": 300, "bos_token_id": 1});
    let tok_cfg = serde_json::json!({"add_bos_token": sel & 4 != 0, "chat_template": "{{ x }}"});
    let _ = tokenizer_metadata(&tok, Some(&tok_cfg), &config);
    let _ = tokenizer_metadata(&tok, None, &config);
});
