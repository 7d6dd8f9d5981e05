//! Resource caps for untrusted checkpoints, and the bounded JSON reader that enforces them.
//!
//! Why: release pipelines feed us checkpoints from the internet. Every count, length and depth
//! a file declares is checked against a cap *before* it costs memory or time, so a hostile file
//! is a clear error rather than an out-of-memory kill or a stack overflow. The defaults sit far
//! above any real model; the caps a legitimate model could one day exceed can be raised (the
//! CLI exposes them as `--max-*` flags, named by [`CheckpointError::exceeded_cap`]).

use crate::CheckpointError;
use std::io::Read;
use std::path::Path;

/// Caps applied while opening a checkpoint. [`Limits::default`] suits every real model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most tensors in one safetensors file, and in the whole checkpoint.
    pub max_tensors: usize,
    /// Largest safetensors JSON header, in bytes (the format's own limit is 100 MB).
    pub max_header_bytes: u64,
    /// Largest JSON side file (config.json, the shard index, tokenizer.json), in bytes.
    pub max_json_bytes: u64,
    /// Deepest nesting of arrays/objects in any JSON we parse (real files: under 10).
    pub max_json_depth: usize,
    /// Most elements in one tensor (product of its dimensions).
    pub max_tensor_elements: u64,
    /// Most dimensions of one tensor.
    pub max_rank: usize,
}

/// Default cap on tensors: far above any real model (large MoE checkpoints hold ~100k).
pub const MAX_TENSORS: usize = 1_000_000;
/// Default cap on the header: the safetensors format's (and reference reader's) 100 MB.
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// Default cap on JSON side files: a 1M-token tokenizer.json is ~60 MB.
pub const MAX_JSON_BYTES: u64 = 256 << 20;
/// Default JSON nesting cap: real configs and tokenizers nest fewer than 10 levels, and
/// serde_json's own recursion guard (128) would only give an opaque message.
pub const MAX_JSON_DEPTH: usize = 64;
/// Default cap on one tensor's element count: 2^36 (≈ 69 G elements, 137 GB of bf16), ~30×
/// the largest tensor of any published model.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 36;
/// Default cap on tensor rank (conv3d weights have 5 dimensions; nothing real has 16).
pub const MAX_RANK: usize = 16;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tensors: MAX_TENSORS,
            max_header_bytes: MAX_HEADER_LEN,
            max_json_bytes: MAX_JSON_BYTES,
            max_json_depth: MAX_JSON_DEPTH,
            max_tensor_elements: MAX_TENSOR_ELEMENTS,
            max_rank: MAX_RANK,
        }
    }
}

/// The deepest nesting of `[`/`{` in `bytes` outside strings, stopping early once `limit` is
/// passed (returns `limit + 1` then). Malformed JSON is left for the parser to reject.
pub fn json_depth(bytes: &[u8], limit: usize) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    max = depth;
                    if max > limit {
                        return max;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Refuse JSON text nested deeper than `limits.max_json_depth`; `path` is for the message.
pub fn check_json_depth(path: &Path, bytes: &[u8], limits: &Limits) -> Result<(), CheckpointError> {
    if json_depth(bytes, limits.max_json_depth) > limits.max_json_depth {
        return Err(CheckpointError::JsonTooDeep { path: path.to_path_buf(), limit: limits.max_json_depth });
    }
    Ok(())
}

/// Read a JSON side file with the size cap enforced while reading (a file that grows after
/// the size check still cannot exceed it) and the depth checked before parsing.
pub fn read_json_bytes(path: &Path, limits: &Limits) -> Result<Vec<u8>, CheckpointError> {
    let file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let mut buf = Vec::new();
    file.take(limits.max_json_bytes.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| CheckpointError::io(path, e))?;
    if buf.len() as u64 > limits.max_json_bytes {
        return Err(CheckpointError::JsonTooLarge { path: path.to_path_buf(), limit: limits.max_json_bytes });
    }
    check_json_depth(path, &buf, limits)?;
    Ok(buf)
}

/// [`read_json_bytes`] then parse into a [`serde_json::Value`]; a parse error is reported as
/// [`CheckpointError::BadJsonFile`] naming the file, line and column.
pub fn read_json_file(path: &Path, limits: &Limits) -> Result<serde_json::Value, CheckpointError> {
    let bytes = read_json_bytes(path, limits)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::BadJsonFile { path: path.to_path_buf(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_only_structure_outside_strings() {
        assert_eq!(json_depth(br#"{"a":[1,{"b":"[[[[{{{"}]}"#, 100), 3);
        assert_eq!(json_depth(br#"{"a":"\"[[[["}"#, 100), 1);
        assert_eq!(json_depth(b"1", 100), 0);
        let deep = "[".repeat(1000);
        assert_eq!(json_depth(deep.as_bytes(), 64), 65, "stops just past the limit");
    }

    #[test]
    fn side_files_are_capped_in_size_and_depth() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tokenizer.json");
        std::fs::write(&p, format!("{}{}", "[".repeat(70), "]".repeat(70))).unwrap();
        let e = read_json_file(&p, &Limits::default()).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: JSON nested deeper than 64 levels", p.display()));
        assert_eq!(e.exceeded_cap(), None, "depth is not an overridable cap");

        std::fs::write(&p, vec![b' '; 101]).unwrap();
        let small = Limits { max_json_bytes: 100, ..Limits::default() };
        let e = read_json_file(&p, &small).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: JSON file is larger than the 100-byte cap", p.display()));
        assert_eq!(e.exceeded_cap(), Some("max_json_bytes"));

        std::fs::write(&p, b"{\"a\": [1, 2,]}").unwrap();
        let e = read_json_file(&p, &Limits::default()).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}: invalid JSON: ", p.display())), "{e}");
        std::fs::write(&p, b"{\"a\": [1, 2]}").unwrap();
        assert_eq!(read_json_file(&p, &Limits::default()).unwrap()["a"][1], 2);
    }
}
