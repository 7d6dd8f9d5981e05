//! A real, tiny byte-level BPE tokenizer in Hugging Face `tokenizers` JSON form: 256 byte
//! tokens in GPT-2's `bytes_to_unicode` alphabet, a handful of merges, and two special tokens.

use serde_json::{json, Value};

/// GPT-2's reversible byte → printable-char map: printable Latin-1 bytes map to themselves,
/// the other 68 bytes to U+0100.. in byte order.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[usize::from(b)] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("U+0100.. are chars");
            next += 1;
            c
        };
    }
    map
}

/// Merges, in rank order; each pair's parts are tokens by the time the merge applies.
pub const MERGES: &[(&str, &str)] = &[
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("Ġt", "he"),
    ("r", "e"),
    ("Ġ", "s"),
    ("a", "t"),
    ("e", "n"),
    ("Ġ", "o"),
    ("in", "g"),
    ("Ġ", "w"),
];

/// Family-specific parts of the tokenizer.
pub struct Flavor {
    /// Split regex of the pre-tokenizer (Llama-3 or Qwen2 style).
    pub split_regex: &'static str,
    /// Beginning-of-text special token (also prepended by the post-processor when `add_bos`).
    pub bos: &'static str,
    /// End-of-text special token.
    pub eos: &'static str,
    /// Whether the post-processor prepends BOS (Llama-3 does; Qwen2 does not).
    pub add_bos: bool,
}

/// The Llama-3 split regex (as written in Meta's tokenizer.json).
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 split regex: single digits.
pub const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Vocabulary in id order: 256 byte tokens (id = byte value), merge results, then specials.
pub fn vocab(f: &Flavor) -> Vec<String> {
    let b2u = bytes_to_unicode();
    let mut v: Vec<String> = b2u.iter().map(|c| c.to_string()).collect();
    for (a, b) in MERGES {
        let t = format!("{a}{b}");
        assert!(v.contains(&a.to_string()) && v.contains(&b.to_string()), "merge {a} {b} out of order");
        assert!(!v.contains(&t), "merge result {t} duplicated");
        v.push(t);
    }
    v.push(f.bos.to_owned());
    v.push(f.eos.to_owned());
    v
}

fn added(id: usize, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": true})
}

/// `tokenizer.json`.
pub fn tokenizer_json(f: &Flavor) -> Value {
    let v = vocab(f);
    let n = v.len();
    let (bos_id, eos_id) = (n - 2, n - 1);
    let mut model_vocab = serde_json::Map::new();
    for (i, t) in v.iter().enumerate().take(n - 2) {
        model_vocab.insert(t.clone(), json!(i));
    }
    let merges: Vec<String> = MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false});
    let post = if f.add_bos {
        json!({"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": f.bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": f.bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": f.bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {f.bos: {"id": f.bos, "ids": [bos_id], "tokens": [f.bos]}}}
        ]})
    } else {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(bos_id, f.bos), added(eos_id, f.eos)],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": f.split_regex}, "behavior": "Isolated", "invert": false},
            byte_level
        ]},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": model_vocab,
            "merges": merges
        }
    })
}

/// A small chat template in the Llama-3 header style.
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start|>' + message['role'] + '\\n' + message['content'] | trim + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start|>assistant\\n' }}{% endif %}";

/// `tokenizer_config.json`.
pub fn tokenizer_config(f: &Flavor, max_len: usize) -> Value {
    let n = vocab(f).len();
    let mut decoder = serde_json::Map::new();
    for (id, t) in [(n - 2, f.bos), (n - 1, f.eos)] {
        decoder.insert(
            id.to_string(),
            json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true}),
        );
    }
    json!({
        "add_bos_token": f.add_bos,
        "add_eos_token": false,
        "added_tokens_decoder": decoder,
        "bos_token": f.bos,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": true,
        "eos_token": f.eos,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": max_len,
        "tokenizer_class": "PreTrainedTokenizerFast"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_alphabet() {
        let m = bytes_to_unicode();
        assert_eq!(m[usize::from(b' ')], 'Ġ');
        assert_eq!(m[usize::from(b'\n')], 'Ċ');
        assert_eq!(m[usize::from(b'A')], 'A');
        assert_eq!(m[0], 'Ā');
        let mut all: Vec<char> = m.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 256);
    }
}
