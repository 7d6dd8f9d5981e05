//! Kimi K2's tiktoken vocabulary (`tiktoken.model` + tokenizer_config.json) as the GGUF `gpt2`
//! vocabulary llama.cpp's converter writes for it (`DeepseekV2Model.set_vocab`, pre `kimi-k2`),
//! without Python.
//!
//! `tiktoken.model` has one `base64(bytes) rank` line per base token. The GGUF token of rank r is
//! its bytes through GPT-2's byte→unicode table; ids `[n_base, n_base + 256)` are Kimi's special
//! tokens (CONTROL), named by tokenizer_config.json's `added_tokens_decoder[id].content`, else
//! `<|reserved_token_{id}|>`; any other id below config.json's `vocab_size` is `[PAD{id}]`
//! (UNUSED). Merges: for each token of two or more bytes, in rank order, byte-level BPE over its
//! bytes using only lower ranks; when exactly two parts remain, `"A B"` is a merge. Special ids,
//! add flags and the chat template come from tokenizer_config.json and config.json as
//! `gguf.SpecialVocab` reads them (there is no tokenizer.json, so only config.json's
//! `*_token_id` name ids).

use super::tokenizer::{i32_array, special_metadata, MAX_VOCAB};
use super::MetaValue;
use crate::FormatError;
use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;

/// How many special-token ids follow the base tokens (Kimi's `num_reserved_special_tokens`).
pub const RESERVED_SPECIALS: usize = 256;

fn bad(reason: impl Into<String>) -> FormatError {
    FormatError::BadTokenizer { file: "tiktoken.model", reason: reason.into() }
}

/// Parse `tiktoken.model`: base tokens by rank. Ranks must be exactly `0..n` (each once) and the
/// token byte strings distinct.
pub fn parse_tiktoken(text: &[u8]) -> Result<Vec<Vec<u8>>, FormatError> {
    let text = std::str::from_utf8(text).map_err(|_| bad("is not UTF-8 text"))?;
    let mut by_rank: Vec<Option<Vec<u8>>> = Vec::new();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let (Some(b64), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("line {}: expected `base64 rank`", i + 1)));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(format!("line {}: bad base64: {e}", i + 1)))?;
        if bytes.is_empty() {
            return Err(bad(format!("line {}: empty token", i + 1)));
        }
        let rank: usize = rank.parse().map_err(|_| bad(format!("line {}: rank `{rank}` is not an integer", i + 1)))?;
        if rank >= MAX_VOCAB {
            return Err(bad(format!("line {}: rank {rank} exceeds the vocabulary limit {MAX_VOCAB}", i + 1)));
        }
        if let Some(prev) = seen.insert(bytes.clone(), rank) {
            return Err(bad(format!("line {}: token of rank {rank} repeats rank {prev}", i + 1)));
        }
        if by_rank.len() <= rank {
            by_rank.resize(rank + 1, None);
        }
        if by_rank[rank].replace(bytes).is_some() {
            return Err(bad(format!("line {}: rank {rank} appears twice", i + 1)));
        }
    }
    by_rank
        .into_iter()
        .enumerate()
        .map(|(r, t)| t.ok_or_else(|| bad(format!("rank {r} is missing (ranks must be 0..n)"))))
        .collect()
}

/// GPT-2's byte → unicode table (printable bytes map to themselves, the rest to U+0100...).
fn byte_encoder() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("below the surrogates")
        };
    }
    table
}

fn render(enc: &[char; 256], bytes: &[u8]) -> String {
    bytes.iter().map(|&b| enc[b as usize]).collect()
}

/// Byte-level BPE of `token` with ranks below `max_rank`: repeatedly merge the adjacent pair of
/// lowest rank (the leftmost on ties), as the converter's `QwenModel.bpe` does.
fn bpe<'a>(ranks: &HashMap<&[u8], usize>, token: &'a [u8], max_rank: usize) -> Vec<&'a [u8]> {
    let mut bounds: Vec<usize> = (0..=token.len()).collect();
    loop {
        let mut best: Option<(usize, usize)> = None;
        for i in 0..bounds.len().saturating_sub(2) {
            if let Some(&r) = ranks.get(&token[bounds[i]..bounds[i + 2]]) {
                if best.is_none_or(|(_, br)| r < br) {
                    best = Some((i, r));
                }
            }
        }
        match best {
            Some((i, r)) if r < max_rank => {
                bounds.remove(i + 1);
            }
            _ => break,
        }
    }
    bounds.windows(2).map(|w| &token[w[0]..w[1]]).collect()
}

/// All `tokenizer.*` metadata for a tiktoken vocabulary (`pre` is the family's name, `kimi-k2`).
pub fn tiktoken_metadata(
    model: &[u8],
    tokenizer_config: Option<&Value>,
    config: &Value,
    chat_template_fallback: Option<&Value>,
    pre: &str,
) -> Result<Vec<(String, MetaValue)>, FormatError> {
    let base = parse_tiktoken(model)?;
    let n_base = base.len();
    let vocab_size =
        config.get("vocab_size").and_then(Value::as_u64).map_or(n_base + RESERVED_SPECIALS, |v| v as usize);
    if vocab_size > MAX_VOCAB {
        return Err(FormatError::BadConfig {
            key: "vocab_size".into(),
            reason: format!("{vocab_size} exceeds the vocabulary limit {MAX_VOCAB}"),
        });
    }
    let enc = byte_encoder();
    let decoder = tokenizer_config.and_then(|t| t.get("added_tokens_decoder"));
    // {**vocab, **special_tokens}: a special whose name equals a base token takes that string.
    let mut by_string: HashMap<String, usize> = HashMap::new();
    let mut order: Vec<String> = Vec::with_capacity(n_base + RESERVED_SPECIALS);
    for (r, t) in base.iter().enumerate() {
        let s = render(&enc, t);
        by_string.insert(s.clone(), r);
        order.push(s);
    }
    let mut special_ids = Vec::with_capacity(RESERVED_SPECIALS);
    for id in n_base..n_base + RESERVED_SPECIALS {
        let name = decoder
            .and_then(|d| d.get(id.to_string()))
            .and_then(|e| e.get("content"))
            .and_then(Value::as_str)
            .map_or_else(|| format!("<|reserved_token_{id}|>"), str::to_owned);
        if by_string.insert(name.clone(), id).is_none() {
            order.push(name);
        }
        special_ids.push(id);
    }
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    for s in order {
        let id = by_string[&s];
        if id < vocab_size {
            tokens[id] = Some(s);
        }
    }
    let mut types = Vec::with_capacity(vocab_size);
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| match t {
            None => {
                types.push(5);
                format!("[PAD{i}]")
            }
            Some(t) => {
                types.push(if special_ids.contains(&i) { 3 } else { 1 });
                t
            }
        })
        .collect();
    let ranks: HashMap<&[u8], usize> = base.iter().enumerate().map(|(r, t)| (t.as_slice(), r)).collect();
    let mut merges = Vec::new();
    for (r, t) in base.iter().enumerate() {
        if t.len() < 2 {
            continue;
        }
        let parts = bpe(&ranks, t, r);
        if parts.len() == 2 {
            merges.push(format!("{} {}", render(&enc, parts[0]), render(&enc, parts[1])));
        }
    }
    let mut md = vec![
        ("tokenizer.ggml.model".to_owned(), MetaValue::string("gpt2")),
        ("tokenizer.ggml.pre".to_owned(), MetaValue::string(pre)),
        ("tokenizer.ggml.tokens".to_owned(), MetaValue::string_array(tokens)),
        ("tokenizer.ggml.token_type".to_owned(), i32_array(types)),
        ("tokenizer.ggml.merges".to_owned(), MetaValue::string_array(merges)),
    ];
    md.extend(special_metadata(
        &Value::Object(Default::default()),
        tokenizer_config,
        config,
        chat_template_fallback,
        None,
    )?);
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn merges_use_only_lower_ranks_and_specials_fill_the_reserved_ids() {
        let mut lines: Vec<String> = (0..=255u8).map(|b| format!("{} {b}", b64(&[b]))).collect();
        for (i, t) in [&b"ab"[..], b"abc", b"bc", b"abcd"].iter().enumerate() {
            lines.push(format!("{} {}", b64(t), 256 + i));
        }
        let text = lines.join("\n");
        let tc = serde_json::json!({"added_tokens_decoder": {"260": {"content": "[BOS]"}}});
        let cfg = serde_json::json!({"vocab_size": 520, "bos_token_id": 260});
        let md = tiktoken_metadata(text.as_bytes(), Some(&tc), &cfg, None, "kimi-k2").unwrap();
        let get = |k: &str| md.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
        // "abc" (rank 257) sees only "ab" (256): ab + c. "abcd" (259): bc (258) is not used
        // because ab (256) merges first, then abc (257): abc + d.
        assert_eq!(get("tokenizer.ggml.merges"), MetaValue::string_array(["a b", "ab c", "b c", "abc d"]));
        let MetaValue::Array(types) = get("tokenizer.ggml.token_type") else { panic!() };
        assert_eq!(types.len(), 520);
        assert_eq!(types[260], MetaValue::I32(3));
        assert_eq!(types[519], MetaValue::I32(5)); // beyond n_base + 256 = 516
        assert_eq!(types[515], MetaValue::I32(3));
        assert_eq!(get("tokenizer.ggml.bos_token_id"), MetaValue::U32(260));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(parse_tiktoken(b"YQ== 0\nYg== 2\n").is_err(), "gap in ranks");
        assert!(parse_tiktoken(b"YQ== 0\nYQ== 1\n").is_err(), "repeated token");
        assert!(parse_tiktoken(b"!!! 0\n").is_err(), "bad base64");
        assert!(parse_tiktoken(b"YQ== x\n").is_err(), "bad rank");
    }
}
