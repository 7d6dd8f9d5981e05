//! Tokenizer metadata for GGUF, following llama.cpp's converter (`get_vocab_base`,
//! `_set_vocab_gpt2`, `gguf.SpecialVocab`): byte-level BPE from `tokenizer.json` becomes
//! `tokenizer.ggml.model = "gpt2"`; SentencePiece `tokenizer.model` becomes `"llama"`
//! (see [`sentencepiece_metadata`]).
//!
//! One documented difference: llama.cpp names the pre-tokenizer by hashing how the real
//! tokenizer splits a test string, which needs the tokenizer implementation. We recognise the
//! pre-tokenizer from its definition in `tokenizer.json` (the split regex and byte-level
//! settings of each known family), fall back to config.json's `model_type`, and else use
//! `"default"`; [`detect_pre_tokenizer`] reports which rule decided.

use super::{MetaType, MetaValue};
use crate::FormatError;
use serde_json::Value;
use std::collections::HashMap;

/// Upper bound on vocabulary size and merge count (hostile-input cap; real models: ≤ 300k).
pub const MAX_VOCAB: usize = 1 << 22;

/// GGUF token types.
pub mod token_type {
    /// An ordinary token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A special (control) token.
    pub const CONTROL: i32 = 3;
    /// An added token that is not special.
    pub const USER_DEFINED: i32 = 4;
    /// A padding slot with no token.
    pub const UNUSED: i32 = 5;
    /// A byte-fallback token (`<0x0A>`).
    pub const BYTE: i32 = 6;
}

const TJ: &str = "tokenizer.json";

fn bad_tj(reason: impl Into<String>) -> FormatError {
    FormatError::BadTokenizer {
        file: TJ,
        reason: reason.into(),
    }
}

/// The Llama-3 pre-tokenizer split regex (llama.cpp `llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 pre-tokenizer split regex (llama.cpp `qwen2`): single digits.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Which rule chose the `tokenizer.ggml.pre` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizerSource {
    /// The pre-tokenizer definition in tokenizer.json matched a known family exactly.
    Definition,
    /// Unrecognised definition; chosen from config.json's `model_type`.
    ModelType,
    /// Nothing matched: llama.cpp's `default` pre-tokenizer (GPT-2-like splitting).
    Fallback,
}

/// The flattened pre-tokenizer steps of tokenizer.json (a `Sequence` is expanded).
fn pre_steps(tj: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>, depth: u32) {
        if depth > 8 {
            return;
        }
        match v.get("type").and_then(Value::as_str) {
            Some("Sequence") => {
                for p in v
                    .get("pretokenizers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    walk(p, out, depth + 1);
                }
            }
            Some(_) => out.push(v),
            None => {}
        }
    }
    if let Some(p) = tj.get("pre_tokenizer") {
        walk(p, &mut out, 0);
    }
    out
}

fn step_type(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

fn is_byte_level(v: &Value, use_regex: bool) -> bool {
    step_type(v) == "ByteLevel"
        && v.get("use_regex").and_then(Value::as_bool).unwrap_or(true) == use_regex
        && !v
            .get("add_prefix_space")
            .and_then(Value::as_bool)
            .unwrap_or(false)
}

/// True if tokenizer.json is a byte-level BPE (GPT-2 style), the `gpt2` GGUF tokenizer model.
pub fn is_byte_level_bpe(tj: &Value) -> bool {
    let model_bpe = tj.pointer("/model/type").and_then(Value::as_str) == Some("BPE");
    let byte_level_pre = pre_steps(tj).iter().any(|s| step_type(s) == "ByteLevel");
    let byte_level_dec = tj.pointer("/decoder/type").and_then(Value::as_str) == Some("ByteLevel");
    model_bpe && (byte_level_pre || byte_level_dec)
}

/// The `tokenizer.ggml.pre` name for a byte-level BPE tokenizer, and the rule that chose it.
///
/// Definitions recognised: GPT-2 (`ByteLevel` with its built-in regex) → `gpt-2`;
/// `Digits(individual)` + `ByteLevel` → `smollm`; Llama-3's split regex → `llama-bpe`; Qwen2's
/// → `qwen2`. Otherwise config `model_type` `qwen2` → `qwen2`, and else `default`.
pub fn detect_pre_tokenizer(tj: &Value, config: &Value) -> (&'static str, PreTokenizerSource) {
    let steps = pre_steps(tj);
    let split_regex = |s: &Value| -> Option<String> {
        (step_type(s) == "Split"
            && s.get("behavior").and_then(Value::as_str) == Some("Isolated")
            && !s.get("invert").and_then(Value::as_bool).unwrap_or(false))
        .then(|| {
            s.pointer("/pattern/Regex")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .flatten()
    };
    let by_def = match steps.as_slice() {
        [b] if is_byte_level(b, true) => Some("gpt-2"),
        [d, b]
            if step_type(d) == "Digits"
                && d.get("individual_digits").and_then(Value::as_bool) == Some(true)
                && is_byte_level(b, true) =>
        {
            Some("smollm")
        }
        [s, b] if is_byte_level(b, false) => match split_regex(s).as_deref() {
            Some(LLAMA3_REGEX) => Some("llama-bpe"),
            Some(QWEN2_REGEX) => Some("qwen2"),
            _ => None,
        },
        _ => None,
    };
    if let Some(name) = by_def {
        return (name, PreTokenizerSource::Definition);
    }
    match config.get("model_type").and_then(Value::as_str) {
        Some("qwen2") => ("qwen2", PreTokenizerSource::ModelType),
        _ => ("default", PreTokenizerSource::Fallback),
    }
}

/// llama.cpp's `does_token_look_special`: added tokens that ought to be control tokens even
/// when not flagged special.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

struct AddedToken<'a> {
    id: usize,
    content: &'a str,
    special: bool,
}

fn added_tokens(tj: &Value) -> Result<Vec<AddedToken<'_>>, FormatError> {
    let Some(list) = tj.get("added_tokens") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| bad_tj("`added_tokens` is not a list"))?;
    if list.len() > MAX_VOCAB {
        return Err(bad_tj(format!(
            "{} added tokens (limit {MAX_VOCAB})",
            list.len()
        )));
    }
    list.iter()
        .map(|t| {
            let id = t.get("id").and_then(Value::as_u64);
            let content = t.get("content").and_then(Value::as_str);
            match (id, content) {
                (Some(id), Some(content)) => Ok(AddedToken {
                    id: usize::try_from(id).unwrap_or(usize::MAX),
                    content,
                    special: t.get("special").and_then(Value::as_bool).unwrap_or(false),
                }),
                _ => Err(bad_tj(format!(
                    "added token without integer `id` and `content`: {t}"
                ))),
            }
        })
        .collect()
}

/// The vocabulary size GGUF uses: config.json's `vocab_size` (the embedding rows), else the
/// tokenizer's own count.
fn n_vocab(config: &Value, tokenizer_max_id: Option<usize>) -> Result<usize, FormatError> {
    let n = match config.get("vocab_size") {
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| FormatError::BadConfig {
                key: "vocab_size".into(),
                reason: format!("is not a non-negative integer: {v}"),
            })?,
        None => tokenizer_max_id.map_or(0, |m| m + 1),
    };
    if n > MAX_VOCAB {
        return Err(FormatError::BadConfig {
            key: "vocab_size".into(),
            reason: format!("{n} exceeds the limit of {MAX_VOCAB}"),
        });
    }
    if let Some(m) = tokenizer_max_id {
        if m >= n {
            return Err(bad_tj(format!(
                "token id {m} is not below config.json vocab_size {n}"
            )));
        }
    }
    Ok(n)
}

/// The BPE merges as GGUF wants them: `"a b"` strings. tokenizer.json has either that form or
/// `["a", "b"]` pairs (transformers ≥ 4.45); in pairs, spaces inside a part are written as
/// U+0120 (`Ġ`), as llama.cpp's converter does, so the separator stays unambiguous.
pub fn merges(tj: &Value) -> Result<Vec<String>, FormatError> {
    let Some(list) = tj.pointer("/model/merges") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| bad_tj("`model.merges` is not a list"))?;
    if list.len() > MAX_VOCAB {
        return Err(bad_tj(format!("{} merges (limit {MAX_VOCAB})", list.len())));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => {
                    let enc = |s: &str| s.replace(' ', "\u{120}");
                    Ok(format!("{} {}", enc(a), enc(b)))
                }
                _ => Err(bad_tj(format!("merge {i} is not a pair of strings"))),
            },
            _ => Err(bad_tj(format!("merge {i} is neither a string nor a pair"))),
        })
        .collect()
}

/// Tokens and token types by id for a byte-level BPE tokenizer.json, exactly as llama.cpp's
/// `get_vocab_base`: ids without a token become `[PAD{id}]` (UNUSED), added tokens flagged
/// special (or looking special) are CONTROL, other added tokens USER_DEFINED (with `▁`
/// turned into a space), the rest NORMAL.
///
/// llama.cpp also round-trips non-normalized added tokens through the real tokenizer; for
/// byte-level BPE that is the identity, so we skip it.
pub fn vocab(tj: &Value, config: &Value) -> Result<(Vec<String>, Vec<i32>), FormatError> {
    let v = tj
        .pointer("/model/vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad_tj("`model.vocab` is missing or not an object"))?;
    if v.len() > MAX_VOCAB {
        return Err(bad_tj(format!(
            "{} vocabulary entries (limit {MAX_VOCAB})",
            v.len()
        )));
    }
    let added = added_tokens(tj)?;
    let mut by_id: HashMap<usize, &str> = HashMap::with_capacity(v.len() + added.len());
    let mut max_id: Option<usize> = None;
    for (tok, id) in v {
        let id = id
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad_tj(format!("vocabulary id of {tok:?} is not an integer")))?;
        by_id.insert(id, tok.as_str());
        max_id = max_id.max(Some(id));
    }
    let mut added_by_id: HashMap<usize, &AddedToken<'_>> = HashMap::new();
    for a in &added {
        // Added tokens override vocabulary entries with the same id, as in `get_vocab()`.
        by_id.insert(a.id, a.content);
        added_by_id.insert(a.id, a);
        max_id = max_id.max(Some(a.id));
    }
    let n = n_vocab(config, max_id)?;
    let mut tokens = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for id in 0..n {
        match (by_id.get(&id), added_by_id.get(&id)) {
            (None, _) => {
                tokens.push(format!("[PAD{id}]"));
                types.push(token_type::UNUSED);
            }
            (Some(t), Some(a)) if a.special || looks_special(t) => {
                tokens.push((*t).to_owned());
                types.push(token_type::CONTROL);
            }
            (Some(t), Some(_)) => {
                tokens.push(t.replace('\u{2581}', " "));
                types.push(token_type::USER_DEFINED);
            }
            (Some(t), None) => {
                tokens.push((*t).to_owned());
                types.push(token_type::NORMAL);
            }
        }
    }
    Ok((tokens, types))
}

/// The special-token types of `gguf.SpecialVocab`, with their GGUF key stems.
const SPECIAL: &[(&str, &str)] = &[
    ("bos", "bos"),
    ("eos", "eos"),
    ("unk", "unknown"),
    ("sep", "seperator"), // sic: the GGUF key is spelled this way
    ("pad", "padding"),
    ("cls", "cls"),
    ("mask", "mask"),
];

fn token_content(entry: Option<&Value>) -> Option<&str> {
    match entry? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// Special token ids, add-token flags and chat templates (as `gguf.SpecialVocab` does):
/// ids come from tokenizer_config.json's `{bos,eos,...}_token` strings looked up in
/// tokenizer.json's `added_tokens`, else from config.json's `{typ}_token_id`; flags from
/// `add_{bos,eos}_token`, else from a `TemplateProcessing` post-processor.
fn special_metadata(
    tj: &Value,
    tc: Option<&Value>,
    config: &Value,
    n_vocab: usize,
) -> Result<Vec<(String, MetaValue)>, FormatError> {
    let added = added_tokens(tj)?;
    let mut md = Vec::new();
    let mut names: HashMap<&str, &str> = HashMap::new();
    for (typ, key) in SPECIAL {
        let content = tc.and_then(|c| token_content(c.get(format!("{typ}_token"))));
        if let Some(c) = content {
            names.insert(typ, c);
        }
        let from_tc = content.and_then(|c| added.iter().find(|a| a.content == c).map(|a| a.id));
        let from_config = match config.get(format!("{typ}_token_id")) {
            Some(Value::Number(n)) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
            // A list (several eos ids, e.g. Llama-3.1): llama.cpp takes none from config.json.
            _ => None,
        };
        if let Some(id) = from_tc.or(from_config).filter(|&id| id < n_vocab) {
            md.push((
                format!("tokenizer.ggml.{key}_token_id"),
                MetaValue::U32(id as u32),
            ));
        }
    }
    for typ in ["bos", "eos"] {
        let flag = tc
            .and_then(|c| c.get(format!("add_{typ}_token")))
            .and_then(Value::as_bool)
            .or_else(|| post_processor_adds(tj, typ, names.get(typ).copied()));
        if let Some(f) = flag {
            md.push((
                format!("tokenizer.ggml.add_{typ}_token"),
                MetaValue::Bool(f),
            ));
        }
    }
    match tc.and_then(|c| c.get("chat_template")) {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) => {
            md.push((
                "tokenizer.chat_template".into(),
                MetaValue::string(t.as_str()),
            ));
        }
        Some(Value::Array(list)) => {
            // Named templates: `default` is the chat template, others get a suffix.
            for item in list {
                let (Some(name), Some(t)) = (
                    item.get("name").and_then(Value::as_str),
                    item.get("template").and_then(Value::as_str),
                ) else {
                    return Err(FormatError::BadTokenizer {
                        file: "tokenizer_config.json",
                        reason: "chat_template entry without string `name` and `template`".into(),
                    });
                };
                let key = if name == "default" {
                    "tokenizer.chat_template".to_owned()
                } else {
                    format!("tokenizer.chat_template.{name}")
                };
                md.push((key, MetaValue::string(t)));
            }
        }
        Some(other) => {
            return Err(FormatError::BadTokenizer {
                file: "tokenizer_config.json",
                reason: format!("chat_template is neither a string nor a list: {other}"),
            })
        }
    }
    Ok(md)
}

/// Whether a `TemplateProcessing` post-processor puts `token` (bos: first, eos: last) around a
/// single sequence; `None` when there is no such post-processor.
fn post_processor_adds(tj: &Value, typ: &str, token: Option<&str>) -> Option<bool> {
    let pp = tj.get("post_processor")?;
    let tp = if pp.get("type").and_then(Value::as_str) == Some("Sequence") {
        pp.get("processors")?
            .as_array()?
            .iter()
            .find(|p| p.get("type").and_then(Value::as_str) == Some("TemplateProcessing"))?
    } else if pp.get("type").and_then(Value::as_str) == Some("TemplateProcessing") {
        pp
    } else {
        return None;
    };
    let single = tp.get("single")?.as_array()?;
    let piece = if typ == "bos" {
        single.first()?
    } else {
        single.last()?
    };
    let special = piece.pointer("/SpecialToken/id").and_then(Value::as_str);
    Some(special.is_some() && (token.is_none() || special == token))
}

/// All `tokenizer.*` metadata for a byte-level BPE `tokenizer.json`: model `gpt2`, pre-tokenizer
/// name, tokens, token types, merges, special token ids, `add_bos_token`/`add_eos_token` and
/// the chat template(s) from tokenizer_config.json.
///
/// Any other tokenizer.json (WordPiece, Unigram, SentencePiece-style BPE with byte fallback)
/// is an `UnsupportedTokenizer` error naming its model and pre-tokenizer types; convert those
/// from `tokenizer.model` with [`sentencepiece_metadata`].
pub fn tokenizer_metadata(
    tokenizer_json: &Value,
    tokenizer_config: Option<&Value>,
    config: &Value,
) -> Result<Vec<(String, MetaValue)>, FormatError> {
    if !is_byte_level_bpe(tokenizer_json) {
        let model = tokenizer_json
            .pointer("/model/type")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let pre = tokenizer_json
            .pointer("/pre_tokenizer/type")
            .and_then(Value::as_str);
        return Err(FormatError::UnsupportedTokenizer(format!(
            "tokenizer.json model `{model}` with pre-tokenizer `{}` is not byte-level BPE",
            pre.unwrap_or("none")
        )));
    }
    let (tokens, types) = vocab(tokenizer_json, config)?;
    let merges = merges(tokenizer_json)?;
    let (pre, _) = detect_pre_tokenizer(tokenizer_json, config);
    let n = tokens.len();
    let mut md = vec![
        ("tokenizer.ggml.model".to_owned(), MetaValue::string("gpt2")),
        ("tokenizer.ggml.pre".to_owned(), MetaValue::string(pre)),
        (
            "tokenizer.ggml.tokens".to_owned(),
            MetaValue::string_array(tokens),
        ),
        ("tokenizer.ggml.token_type".to_owned(), i32_array(types)),
        (
            "tokenizer.ggml.merges".to_owned(),
            MetaValue::string_array(merges),
        ),
    ];
    md.extend(special_metadata(
        tokenizer_json,
        tokenizer_config,
        config,
        n,
    )?);
    Ok(md)
}

fn i32_array(v: Vec<i32>) -> MetaValue {
    if v.is_empty() {
        MetaValue::EmptyArray(MetaType::I32)
    } else {
        MetaValue::Array(v.into_iter().map(MetaValue::I32).collect())
    }
}
