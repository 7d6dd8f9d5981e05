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
    FormatError::BadTokenizer { file: TJ, reason: reason.into() }
}

/// The Llama-3 pre-tokenizer split regex (llama.cpp `llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen2 pre-tokenizer split regex (llama.cpp `qwen2`): single digits.
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

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
                for p in v.get("pretokenizers").and_then(Value::as_array).into_iter().flatten() {
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
        && !v.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(false)
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
        .then(|| s.pointer("/pattern/Regex").and_then(Value::as_str).map(str::to_owned))
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
    let list = list.as_array().ok_or_else(|| bad_tj("`added_tokens` is not a list"))?;
    if list.len() > MAX_VOCAB {
        return Err(bad_tj(format!("{} added tokens (limit {MAX_VOCAB})", list.len())));
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
                _ => Err(bad_tj(format!("added token without integer `id` and `content`: {t}"))),
            }
        })
        .collect()
}

/// The vocabulary size GGUF uses: config.json's `vocab_size` (the embedding rows), else the
/// tokenizer's own count.
fn n_vocab(config: &Value, tokenizer_max_id: Option<usize>) -> Result<usize, FormatError> {
    let n = match config.get("vocab_size") {
        Some(v) => v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| FormatError::BadConfig {
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
            return Err(bad_tj(format!("token id {m} is not below config.json vocab_size {n}")));
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
    let list = list.as_array().ok_or_else(|| bad_tj("`model.merges` is not a list"))?;
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
        return Err(bad_tj(format!("{} vocabulary entries (limit {MAX_VOCAB})", v.len())));
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

/// Python truthiness of an optional JSON value (`None`, null, false, 0, "", [], {} are false).
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// `x in (a, b)` for optional JSON values, with Python equality (a missing value is None).
fn is_one_of(x: &Value, options: [Option<&Value>; 2]) -> bool {
    options.iter().any(|o| o.unwrap_or(&Value::Null) == x)
}

/// Insert or update a key of an insertion-ordered list (Python dict semantics).
fn dict_set<V>(list: &mut Vec<(String, V)>, key: &str, value: V) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => list.push((key.to_owned(), value)),
    }
}

fn special_token_id(v: &Value) -> Option<&Value> {
    v.get("SpecialToken").and_then(|s| s.get("id"))
}

/// GGUF key of a special token id, for the types `GGUFWriter` has a handler for (no `cls`).
fn id_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.bos_token_id",
        "eos" => "tokenizer.ggml.eos_token_id",
        "unk" => "tokenizer.ggml.unknown_token_id",
        "sep" => "tokenizer.ggml.seperator_token_id", // sic: the GGUF key is spelled this way
        "pad" => "tokenizer.ggml.padding_token_id",
        "mask" => "tokenizer.ggml.mask_token_id",
        "eot" => "tokenizer.ggml.eot_token_id",
        "eom" => "tokenizer.ggml.eom_token_id",
        _ => return None,
    })
}

/// GGUF key of an add-special-token flag, for the types `GGUFWriter` has a handler for.
fn add_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.add_bos_token",
        "eos" => "tokenizer.ggml.add_eos_token",
        "sep" => "tokenizer.ggml.add_sep_token",
        _ => return None,
    })
}

/// Special token ids, add-token flags and chat templates, reproducing `gguf.SpecialVocab`
/// (gguf 0.19) and `GGUFWriter.add_chat_template` key for key and in the same order:
/// flags inferred from a `RobertaProcessing`/`TemplateProcessing` post-processor, then
/// tokenizer_config.json's `add_*_token` flags and `*_token` strings looked up in tokenizer.json
/// `added_tokens`, then config.json's `*_token_id` (also under `text_config`). The first id
/// found for a type wins; `cls` ids and flags other than bos/eos/sep have no GGUF key.
pub(crate) fn special_metadata(
    tj: &Value,
    tc: Option<&Value>,
    config: &Value,
    chat_template_fallback: Option<&Value>,
    n_vocab: Option<usize>,
) -> Result<Vec<(String, MetaValue)>, FormatError> {
    let added = added_tokens(tj)?;
    let mut types: Vec<&str> = vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"];
    let mut tcm: serde_json::Map<String, Value> = tc.and_then(Value::as_object).cloned().unwrap_or_default();
    let tc_truthy = !tcm.is_empty();
    let mut ids: Vec<(String, u32)> = Vec::new();
    let mut adds: Vec<(String, bool)> = Vec::new();

    let mut special_bos = tcm.get("bos_token").cloned();
    let mut special_cls = tcm.get("cls_token").cloned();
    let mut special_eos = tcm.get("eos_token").cloned();
    let mut special_sep = tcm.get("sep_token").cloned();
    if !truthy(special_bos.as_ref()) && truthy(special_cls.as_ref()) && tc_truthy {
        special_bos.clone_from(&special_cls);
        tcm.insert("bos_token".into(), special_bos.clone().unwrap_or(Value::Null));
    }
    if !truthy(special_eos.as_ref()) && truthy(special_sep.as_ref()) && tc_truthy {
        special_eos.clone_from(&special_sep);
        tcm.insert("eos_token".into(), special_eos.clone().unwrap_or(Value::Null));
    }

    if let Some(pp) = tj.get("post_processor").filter(|p| truthy(Some(p))) {
        let processors: Vec<&Value> = match pp.get("processors") {
            Some(Value::Array(a)) => a.iter().collect(),
            _ => vec![pp],
        };
        for p in processors {
            match p.get("type").and_then(Value::as_str) {
                Some("RobertaProcessing") => {
                    for t in ["bos", "eos", "sep"] {
                        dict_set(&mut adds, t, true);
                    }
                    if !truthy(special_cls.as_ref()) && tc_truthy {
                        special_cls = p.pointer("/cls/0").cloned().or(special_bos.clone());
                        tcm.insert("cls_token".into(), special_cls.clone().unwrap_or(Value::Null));
                    }
                    if !truthy(special_sep.as_ref()) && tc_truthy {
                        special_sep = p.pointer("/sep/0").cloned().or(special_eos.clone());
                        tcm.insert("sep_token".into(), special_sep.clone().unwrap_or(Value::Null));
                    }
                }
                Some("TemplateProcessing") => {
                    let empty = Vec::new();
                    let single = p.get("single").and_then(Value::as_array).unwrap_or(&empty);
                    let pair = p.get("pair").and_then(Value::as_array).unwrap_or(&empty);
                    let mut first: Option<Value> = None;
                    let mut last: Option<Value> = None;
                    if single.len() > 1 {
                        first = special_token_id(&single[0]).filter(|v| truthy(Some(v))).cloned();
                        if let Some(f) = &first {
                            if !tc_truthy {
                                special_bos = Some(f.clone());
                            }
                            let add = is_one_of(f, [special_bos.as_ref(), special_cls.as_ref()]);
                            dict_set(&mut adds, "bos", add);
                        }
                        last = special_token_id(&single[single.len() - 1]).filter(|v| truthy(Some(v))).cloned();
                        if let Some(l) = &last {
                            if !tc_truthy {
                                special_eos = Some(l.clone());
                            } else if Some(l) != special_eos.as_ref() {
                                let old = special_eos.clone().unwrap_or(Value::Null);
                                if !types.contains(&"eot") {
                                    types.push("eot");
                                    tcm.insert("eot_token".into(), old);
                                } else if !types.contains(&"eom") {
                                    types.push("eom");
                                    tcm.insert("eom_token".into(), old);
                                }
                                tcm.insert("eos_token".into(), l.clone());
                                special_eos = Some(l.clone());
                            }
                            dict_set(&mut adds, "eos", Some(l) == special_eos.as_ref());
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(first.is_some() && special_token_id(&pair[0]) == first.as_ref());
                        let stop = if last.is_some() && special_token_id(&pair[pair.len() - 1]) == last.as_ref() {
                            pair.len() - 1
                        } else {
                            pair.len()
                        };
                        let inner = if start < stop { &pair[start..stop] } else { &[][..] };
                        if let (Some(a), Some(b)) = (inner.first(), inner.last()) {
                            let seq = |v: &Value| v.pointer("/Sequence/id").cloned();
                            if seq(a) == Some(Value::from("A")) && seq(b) == Some(Value::from("B")) && inner.len() > 2 {
                                let middle = &inner[1..inner.len() - 1];
                                let mut add_sep = false;
                                let seps = [special_sep.as_ref(), special_eos.as_ref()];
                                if let Some(e) = special_token_id(&middle[0]).filter(|v| truthy(Some(v))) {
                                    if is_one_of(e, seps) && last.is_none() {
                                        add_sep = true;
                                    }
                                }
                                if middle.len() == 2 {
                                    if let Some(e) = special_token_id(&middle[1]).filter(|v| truthy(Some(v))) {
                                        if is_one_of(e, seps) {
                                            add_sep = true;
                                        }
                                    }
                                }
                                dict_set(&mut adds, "sep", add_sep);
                                if add_sep && !truthy(special_sep.as_ref()) && tc_truthy {
                                    tcm.insert("sep_token".into(), special_eos.clone().unwrap_or(Value::Null));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    let mut set_id = |typ: &str, tid: Option<&Value>| -> Result<(), FormatError> {
        let Some(Value::Number(n)) = tid else {
            return Ok(());
        };
        if n.is_f64() {
            return Ok(()); // Python: not an int
        }
        let Some(id) = n.as_u64() else {
            return Err(FormatError::BadTokenizer {
                file: "tokenizer_config.json",
                reason: format!("negative id {n} for special token type {typ}"),
            });
        };
        if n_vocab.is_some_and(|nv| id >= nv as u64) || ids.iter().any(|(t, _)| t == typ) {
            return Ok(());
        }
        let id = u32::try_from(id).map_err(|_| FormatError::BadTokenizer {
            file: "tokenizer_config.json",
            reason: format!("special token id {id} for {typ} does not fit in u32"),
        })?;
        ids.push((typ.to_owned(), id));
        Ok(())
    };

    let mut chat_template: Option<Value> = None;
    if tc_truthy {
        let ct = match tcm.get("chat_template") {
            Some(v) => Some(v),
            None => chat_template_fallback,
        };
        if let Some(v @ (Value::String(_) | Value::Array(_))) = ct {
            chat_template = Some(v.clone());
        }
        for typ in &types {
            if let Some(Value::Bool(b)) = tcm.get(&format!("add_{typ}_token")) {
                dict_set(&mut adds, typ, *b);
            }
            let content = match tcm.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => s.as_str(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s.as_str(),
                    _ => continue,
                },
                _ => continue,
            };
            let found = added.iter().find(|a| a.content == content).map(|a| Value::from(a.id));
            set_id(typ, found.as_ref())?;
        }
    }
    for typ in &types {
        let key = format!("{typ}_token_id");
        let tid = match config.get(&key) {
            None | Some(Value::Null) => config.get("text_config").and_then(|t| t.get(&key)),
            v => v,
        };
        set_id(typ, tid)?;
    }

    let mut md = Vec::new();
    for (typ, id) in &ids {
        if let Some(k) = id_key(typ) {
            md.push((k.to_owned(), MetaValue::U32(*id)));
        }
    }
    for (typ, b) in &adds {
        if let Some(k) = add_key(typ) {
            md.push((k.to_owned(), MetaValue::Bool(*b)));
        }
    }
    match chat_template {
        Some(Value::String(t)) => md.push((CHAT_TEMPLATE.into(), MetaValue::String(t))),
        Some(Value::Array(list)) => {
            let mut default = None;
            let mut names = std::collections::BTreeSet::new();
            for item in &list {
                let name: String = item
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let template = match item.get("template") {
                    None | Some(Value::Null) => continue,
                    Some(Value::String(t)) => t,
                    Some(other) => {
                        return Err(FormatError::BadTokenizer {
                            file: "tokenizer_config.json",
                            reason: format!("chat template `{name}` is not a string: {other}"),
                        })
                    }
                };
                if name.is_empty() {
                    continue;
                }
                if name == "default" {
                    default = Some(template.clone());
                } else {
                    md.push((format!("{CHAT_TEMPLATE}.{name}"), MetaValue::string(template.as_str())));
                    names.insert(name);
                }
            }
            if !names.is_empty() {
                md.push(("tokenizer.chat_templates".into(), MetaValue::string_array(names)));
            }
            if let Some(t) = default {
                md.push((CHAT_TEMPLATE.into(), MetaValue::String(t)));
            }
        }
        _ => {}
    }
    Ok(md)
}

/// The GGUF key of the (default) chat template.
pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";

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
    tokenizer_metadata_with_template(tokenizer_json, tokenizer_config, config, None)
}

/// [`tokenizer_metadata`], with the chat template of a separate file used when
/// tokenizer_config.json has no `chat_template` key: the text of `chat_template.jinja` as a JSON
/// string, or the `chat_template` value of `chat_template.json` (string or named list).
pub fn tokenizer_metadata_with_template(
    tokenizer_json: &Value,
    tokenizer_config: Option<&Value>,
    config: &Value,
    chat_template_fallback: Option<&Value>,
) -> Result<Vec<(String, MetaValue)>, FormatError> {
    if !is_byte_level_bpe(tokenizer_json) {
        let model = tokenizer_json.pointer("/model/type").and_then(Value::as_str).unwrap_or("?");
        let pre = tokenizer_json.pointer("/pre_tokenizer/type").and_then(Value::as_str);
        return Err(FormatError::UnsupportedTokenizer(format!(
            "tokenizer.json model `{model}` with pre-tokenizer `{}` is not byte-level BPE \
             (SentencePiece models convert from tokenizer.model)",
            pre.unwrap_or("none")
        )));
    }
    let (tokens, types) = vocab(tokenizer_json, config)?;
    let merges = merges(tokenizer_json)?;
    if merges.is_empty() {
        // llama.cpp refuses a BPE vocabulary without merges at load time.
        return Err(bad_tj("byte-level BPE without `model.merges`"));
    }
    let (pre, _) = detect_pre_tokenizer(tokenizer_json, config);
    let mut md = vec![
        ("tokenizer.ggml.model".to_owned(), MetaValue::string("gpt2")),
        ("tokenizer.ggml.pre".to_owned(), MetaValue::string(pre)),
        ("tokenizer.ggml.tokens".to_owned(), MetaValue::string_array(tokens)),
        ("tokenizer.ggml.token_type".to_owned(), i32_array(types)),
        ("tokenizer.ggml.merges".to_owned(), MetaValue::string_array(merges)),
    ];
    // llama.cpp's converter builds SpecialVocab without n_vocab for BPE: no range filter.
    md.extend(special_metadata(tokenizer_json, tokenizer_config, config, chat_template_fallback, None)?);
    Ok(md)
}

pub(crate) fn i32_array(v: Vec<i32>) -> MetaValue {
    if v.is_empty() {
        MetaValue::EmptyArray(MetaType::I32)
    } else {
        MetaValue::Array(v.into_iter().map(MetaValue::I32).collect())
    }
}

/// One piece of a SentencePiece model.
#[derive(Debug, Clone, PartialEq)]
pub struct SpPiece {
    /// The piece text (`▁the`, `<0x0A>`, `<s>`).
    pub piece: String,
    /// Its score (log probability for unigram, merge rank for BPE models).
    pub score: f32,
    /// SentencePiece type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub kind: u32,
}

const SPM: &str = "tokenizer.model";

fn bad_spm(reason: impl Into<String>) -> FormatError {
    FormatError::BadTokenizer { file: SPM, reason: reason.into() }
}

/// One protobuf field: number, varint value (0 for other wire types), payload bytes.
type PbField<'a> = (u64, u64, &'a [u8]);

/// A bounds-checked protobuf wire-format reader (only what `ModelProto` needs).
struct Pb<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Pb<'a> {
    fn varint(&mut self) -> Result<u64, FormatError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or_else(|| bad_spm("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad_spm("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], FormatError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| bad_spm(format!("field of {n} bytes past the end")))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Next field as (number, wire type, payload): varints in `.1`, bytes in `.2`.
    fn field(&mut self) -> Result<Option<PbField<'a>>, FormatError> {
        if self.pos >= self.b.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        Ok(Some(match wire {
            0 => (num, self.varint()?, &[][..]),
            1 => (num, 0, self.take(8)?),
            2 => {
                let n = self.varint()?;
                (num, 0, self.take(n)?)
            }
            5 => (num, 0, self.take(4)?),
            w => return Err(bad_spm(format!("unsupported protobuf wire type {w}"))),
        }))
    }
}

/// Parse a SentencePiece `tokenizer.model` (`ModelProto`): its pieces, and its model type
/// (`trainer_spec.model_type`: 1 unigram, 2 BPE, 3 word, 4 char; 1 when absent).
pub fn parse_sentencepiece(bytes: &[u8]) -> Result<(Vec<SpPiece>, u64), FormatError> {
    let mut pb = Pb { b: bytes, pos: 0 };
    let mut pieces = Vec::new();
    let mut model_type = 1;
    while let Some((num, _, payload)) = pb.field()? {
        match num {
            1 => {
                if pieces.len() >= MAX_VOCAB {
                    return Err(bad_spm(format!("more than {MAX_VOCAB} pieces")));
                }
                let mut p = Pb { b: payload, pos: 0 };
                let mut sp = SpPiece { piece: String::new(), score: 0.0, kind: 1 };
                while let Some((n, v, data)) = p.field()? {
                    match n {
                        1 => {
                            sp.piece = String::from_utf8(data.to_vec())
                                .map_err(|_| bad_spm(format!("piece {} is not UTF-8", pieces.len())))?;
                        }
                        2 if data.len() == 4 => {
                            sp.score = f32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                        }
                        3 => sp.kind = u32::try_from(v).unwrap_or(u32::MAX),
                        _ => {}
                    }
                }
                pieces.push(sp);
            }
            2 => {
                let mut t = Pb { b: payload, pos: 0 };
                while let Some((n, v, _)) = t.field()? {
                    if n == 3 {
                        model_type = v;
                    }
                }
            }
            _ => {}
        }
    }
    if pieces.is_empty() {
        return Err(bad_spm("no pieces: not a SentencePiece model"));
    }
    Ok((pieces, model_type))
}

/// All `tokenizer.*` metadata for a SentencePiece `tokenizer.model` (Llama 2, Mistral, ...),
/// as llama.cpp's `_set_vocab_sentencepiece`: model `llama`, pre `default`, tokens, scores and
/// types by id padded to config.json's `vocab_size` with `[PAD{id}]` (score -10000, UNUSED);
/// entries of `added_tokens.json` and tokenizer_config.json's `added_tokens_decoder` override
/// ids (score -1000; CONTROL if special or special-looking, else USER_DEFINED); then the special
/// tokens as `gguf.SpecialVocab` with ids limited to the vocabulary, and, for arch `llama`,
/// `tokenizer.ggml.add_space_prefix` from tokenizer_config.json's `add_prefix_space`.
///
/// SentencePiece user-defined pieces become NORMAL, as in the converter.
pub fn sentencepiece_metadata(
    model: &[u8],
    added_tokens_json: Option<&Value>,
    tokenizer_json: Option<&Value>,
    tokenizer_config: Option<&Value>,
    config: &Value,
) -> Result<Vec<(String, MetaValue)>, FormatError> {
    sentencepiece_metadata_with_template(model, added_tokens_json, tokenizer_json, tokenizer_config, config, None)
}

/// [`sentencepiece_metadata`], with the chat template of a separate file used when
/// tokenizer_config.json has no `chat_template` key (as [`tokenizer_metadata_with_template`]).
pub fn sentencepiece_metadata_with_template(
    model: &[u8],
    added_tokens_json: Option<&Value>,
    tokenizer_json: Option<&Value>,
    tokenizer_config: Option<&Value>,
    config: &Value,
    chat_template_fallback: Option<&Value>,
) -> Result<Vec<(String, MetaValue)>, FormatError> {
    let (pieces, model_type) = parse_sentencepiece(model)?;
    if model_type != 1 && model_type != 2 {
        return Err(FormatError::UnsupportedTokenizer(format!(
            "SentencePiece model type {model_type} (only unigram 1 and BPE 2)"
        )));
    }
    let n = match config.get("vocab_size") {
        None | Some(Value::Null) => pieces.len(),
        Some(v) => v.as_u64().and_then(|n| usize::try_from(n).ok()).filter(|&n| n <= MAX_VOCAB).ok_or_else(|| {
            FormatError::BadConfig {
                key: "vocab_size".into(),
                reason: format!("is not an integer up to {MAX_VOCAB}: {v}"),
            }
        })?,
    };
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; n];
    let mut types = vec![token_type::UNUSED; n];
    for (id, p) in pieces.iter().enumerate().take(n) {
        tokens[id].clone_from(&p.piece);
        scores[id] = p.score;
        types[id] = match p.kind {
            2 => token_type::UNKNOWN,
            3 => token_type::CONTROL,
            5 => token_type::UNUSED,
            6 => token_type::BYTE,
            _ => token_type::NORMAL,
        };
    }
    if let Some(at) = added_tokens_json {
        let obj = at.as_object().ok_or_else(|| FormatError::BadTokenizer {
            file: "added_tokens.json",
            reason: "is not an object".into(),
        })?;
        for (tok, id) in obj {
            let id = id.as_u64().ok_or_else(|| FormatError::BadTokenizer {
                file: "added_tokens.json",
                reason: format!("id of {tok:?} is not an integer"),
            })?;
            if let Some(i) = usize::try_from(id).ok().filter(|&i| i < n) {
                tokens[i].clone_from(tok);
                scores[i] = -1000.0;
                types[i] = token_type::USER_DEFINED;
            }
        }
    }
    if let Some(dec) = tokenizer_config.and_then(|c| c.get("added_tokens_decoder")) {
        let obj = dec.as_object().ok_or_else(|| FormatError::BadTokenizer {
            file: "tokenizer_config.json",
            reason: "added_tokens_decoder is not an object".into(),
        })?;
        for (id, data) in obj {
            let bad = |r: String| FormatError::BadTokenizer { file: "tokenizer_config.json", reason: r };
            let id: usize = id.parse().map_err(|_| bad(format!("added token id {id:?}")))?;
            let content = data
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("added token {id} has no string content")))?;
            if id >= n {
                continue;
            }
            let special = truthy(data.get("special"));
            if special || looks_special(content) {
                types[id] = token_type::CONTROL;
                tokens[id] = content.to_owned();
            } else {
                types[id] = token_type::USER_DEFINED;
                tokens[id] = content.replace('\u{2581}', " ");
            }
            scores[id] = -1000.0;
        }
    }
    let empty = Value::Object(serde_json::Map::new());
    let tj = tokenizer_json.unwrap_or(&empty);
    let mut md = vec![
        ("tokenizer.ggml.model".to_owned(), MetaValue::string("llama")),
        ("tokenizer.ggml.pre".to_owned(), MetaValue::string("default")),
        ("tokenizer.ggml.tokens".to_owned(), MetaValue::string_array(tokens)),
        (
            "tokenizer.ggml.scores".to_owned(),
            if scores.is_empty() {
                MetaValue::EmptyArray(MetaType::F32)
            } else {
                MetaValue::Array(scores.into_iter().map(MetaValue::F32).collect())
            },
        ),
        ("tokenizer.ggml.token_type".to_owned(), i32_array(types)),
    ];
    md.extend(special_metadata(tj, tokenizer_config, config, chat_template_fallback, Some(n))?);
    if super::llama::gguf_arch(config).ok() == Some("llama") {
        if let Some(Value::Bool(b)) = tokenizer_config.and_then(|c| c.get("add_prefix_space")) {
            md.push(("tokenizer.ggml.add_space_prefix".into(), MetaValue::Bool(*b)));
        }
    }
    Ok(md)
}

/// Apply an architecture family's tokenizer facts to the `tokenizer.*` metadata of a byte-level
/// BPE (`gpt2`) vocabulary, as llama.cpp's converter writes them for that family:
/// - `pre`: the `tokenizer.ggml.pre` name. The reference finds it by hashing a probe encoding,
///   which only works for the released tokenizers it knows; the family fixes the name instead.
/// - `specials`: `(kind, content)` pairs looked up among tokenizer.json's added tokens and set
///   only when the tokenizer files did not already set that kind (`SpecialVocab`'s
///   `_set_special_token`). An added token the family needs and tokenizer.json lacks is an
///   error, as it is for the reference.
///
/// A SentencePiece (`llama`) vocabulary is left unchanged.
pub fn apply_family(
    md: &mut Vec<(String, MetaValue)>,
    tj: &Value,
    pre: Option<&str>,
    specials: &[(&str, &str)],
) -> Result<(), FormatError> {
    let is_bpe = md.iter().any(|(k, v)| k == "tokenizer.ggml.model" && *v == MetaValue::string("gpt2"));
    if !is_bpe {
        return Ok(());
    }
    if let Some(p) = pre {
        if let Some(slot) = md.iter_mut().find(|(k, _)| k == "tokenizer.ggml.pre") {
            slot.1 = MetaValue::string(p);
        }
    }
    if specials.is_empty() {
        return Ok(());
    }
    let added = added_tokens(tj)?;
    for (kind, content) in specials {
        let key = id_key(kind).ok_or_else(|| bad_tj(format!("unknown special token kind `{kind}`")))?;
        if md.iter().any(|(k, _)| k == key) {
            continue;
        }
        let id = added.iter().find(|t| t.content == *content).map(|t| t.id).ok_or_else(|| {
            bad_tj(format!("added token `{content}` is missing; this architecture's {kind} token is `{content}`"))
        })?;
        let id = u32::try_from(id).map_err(|_| bad_tj(format!("added token `{content}` has an id beyond 32 bits")))?;
        md.push((key.to_owned(), MetaValue::U32(id)));
    }
    Ok(())
}
