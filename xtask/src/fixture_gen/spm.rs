//! A real, tiny SentencePiece model (`tokenizer.model`, a `ModelProto` in protobuf wire format),
//! written field by field so the fixture is byte-stable and needs no Python to regenerate.
//!
//! It is shaped like Llama 2's: a BPE model with byte fallback, `<unk>`/`<s>`/`</s>` at ids 0-2,
//! the 256 byte pieces `<0x00>`..`<0xFF>`, then merged pieces scored by rank, then single
//! characters with the lowest scores; the normalizer is `identity` with a dummy `▁` prefix and
//! whitespace escaped to `▁`. The `sentencepiece` package loads it (the interop tests use it as
//! the judge of our GGUF vocabulary and of llama.cpp's tokenization of it).

/// SentencePiece piece types (`ModelProto.SentencePiece.Type`).
pub mod kind {
    /// An ordinary piece.
    pub const NORMAL: u64 = 1;
    /// The unknown piece.
    pub const UNKNOWN: u64 = 2;
    /// A control piece (`<s>`, `</s>`).
    pub const CONTROL: u64 = 3;
    /// A byte-fallback piece (`<0x41>`).
    pub const BYTE: u64 = 6;
}

/// Words whose `▁`-prefixed forms are built up one character at a time by the merges.
const WORDS: &[&str] = &["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "hello", "world", "llama"];
/// Word-internal pieces that compete with the prefix chains for merges.
const INNER: &[&str] = &["he", "er", "in", "on", "ll", "lo", "ow", "or"];

/// One piece: text, score, type.
pub type Piece = (String, f32, u64);

/// The pieces in id order.
pub fn pieces() -> Vec<Piece> {
    let mut out: Vec<Piece> = vec![
        ("<unk>".into(), 0.0, kind::UNKNOWN),
        ("<s>".into(), 0.0, kind::CONTROL),
        ("</s>".into(), 0.0, kind::CONTROL),
    ];
    out.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, kind::BYTE)));
    // Merged pieces: every prefix (two characters or more) of `▁word`, plus the inner pieces;
    // shorter first, then by text, so each piece's parts rank above it. Scores are -rank,
    // all distinct, so merge order never depends on tie-breaking.
    let mut merged: Vec<String> = INNER.iter().map(|s| (*s).to_owned()).collect();
    for w in WORDS {
        let full: Vec<char> = std::iter::once('\u{2581}').chain(w.chars()).collect();
        for len in 2..=full.len() {
            merged.push(full[..len].iter().collect());
        }
    }
    merged.sort_by(|a, b| (a.chars().count(), a).cmp(&(b.chars().count(), b)));
    merged.dedup();
    let mut chars: Vec<char> = merged.iter().flat_map(|p| p.chars()).collect();
    chars.sort_unstable();
    chars.dedup();
    let mut rank = 0.0f32;
    for p in merged {
        out.push((p, -rank, kind::NORMAL));
        rank += 1.0;
    }
    for c in chars {
        out.push((c.to_string(), -rank, kind::NORMAL));
        rank += 1.0;
    }
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn uint(out: &mut Vec<u8>, field: u64, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

/// A signed int32 field (negative values are 10-byte varints, as protobuf encodes int32).
fn int32(out: &mut Vec<u8>, field: u64, v: i32) {
    key(out, field, 0);
    varint(out, i64::from(v) as u64);
}

fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn float(out: &mut Vec<u8>, field: u64, f: f32) {
    key(out, field, 5);
    out.extend_from_slice(&f.to_le_bytes());
}

/// The serialized `ModelProto`.
pub fn model_proto() -> Vec<u8> {
    let ps = pieces();
    let mut out = Vec::new();
    for (piece, score, kind) in &ps {
        let mut m = Vec::new();
        bytes(&mut m, 1, piece.as_bytes());
        float(&mut m, 2, *score);
        uint(&mut m, 3, *kind);
        bytes(&mut out, 1, &m);
    }
    // TrainerSpec: what a BPE model with byte fallback declares.
    let mut t = Vec::new();
    uint(&mut t, 3, 2); // model_type = BPE
    int32(&mut t, 4, i32::try_from(ps.len()).expect("small vocab")); // vocab_size
    uint(&mut t, 35, 1); // byte_fallback
    int32(&mut t, 40, 0); // unk_id
    int32(&mut t, 41, 1); // bos_id
    int32(&mut t, 42, 2); // eos_id
    int32(&mut t, 43, -1); // pad_id: none
    bytes(&mut out, 2, &t);
    // NormalizerSpec: identity, dummy prefix, keep extra whitespace, escape spaces (Llama 2).
    let mut n = Vec::new();
    bytes(&mut n, 1, b"identity");
    uint(&mut n, 3, 1); // add_dummy_prefix
    uint(&mut n, 4, 0); // remove_extra_whitespaces
    uint(&mut n, 5, 1); // escape_whitespaces
    bytes(&mut out, 3, &n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_unique_and_merges_are_reachable() {
        let ps = pieces();
        let mut texts: Vec<&str> = ps.iter().map(|p| p.0.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), ps.len());
        // Every merged piece splits into two pieces of the vocabulary.
        let has = |s: &str| ps.iter().any(|p| p.0 == s);
        for (p, _, k) in &ps[259..] {
            let chars: Vec<char> = p.chars().collect();
            if *k != kind::NORMAL || chars.len() < 2 {
                continue;
            }
            let ok = (1..chars.len()).any(|i| {
                let (a, b): (String, String) = (chars[..i].iter().collect(), chars[i..].iter().collect());
                has(&a) && has(&b)
            });
            assert!(ok, "{p} cannot be merged");
        }
    }

    #[test]
    fn varints_match_protobuf() {
        let mut v = Vec::new();
        int32(&mut v, 43, -1);
        // Key (43 << 3 | 0) = 344 is a two-byte varint; -1 as int32 is ten bytes.
        assert_eq!(v[..2], [0xD8, 0x02]);
        assert_eq!(v.len(), 2 + 10);
        assert_eq!(v[2..11], [0xFF; 9]);
        assert_eq!(v[11], 0x01);
        let mut w = Vec::new();
        varint(&mut w, 300);
        assert_eq!(w, [0xAC, 0x02]);
    }
}
