//! Generators of the checked-in test inputs: tiny llama-family checkpoints (weights, config,
//! byte-level BPE tokenizer) and the hostile safetensors corpus. Everything is a pure function
//! of fixed seeds and integer/IEEE-exact arithmetic (no libm), so output is byte-stable across
//! machines.

pub mod hostile;
pub mod rng;
pub mod spm;
pub mod st;
pub mod tiny;
pub mod tokenizer;

use std::path::Path;

/// Fixture directories this generator owns under `fixtures/`.
pub const OWNED: &[&str] = &[
    "tiny-llama",
    "tiny-llama-sharded",
    "tiny-llama-f16",
    "tiny-llama-f32",
    "tiny-qwen2",
    "tiny-llama-spm",
    "hostile",
];

/// Write every owned fixture under `out` (which plays the role of `fixtures/`).
pub fn generate_all(out: &Path) -> anyhow::Result<()> {
    tiny::write_llama_family(out)?;
    tiny::write_qwen2(&out.join("tiny-qwen2"))?;
    tiny::write_llama_spm(&out.join("tiny-llama-spm"))?;
    hostile::write(&out.join("hostile"))?;
    Ok(())
}

/// Write a file, creating parent directories.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Pretty JSON with a trailing newline, keys in insertion order (HF writes 2-space indents too).
pub fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).expect("JSON values serialize");
    s.push(b'\n');
    s
}
