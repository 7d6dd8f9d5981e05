//! `--max-*` flags: the resource caps of untrusted checkpoints, raisable for legitimate models.
use modelpack::checkpoint::{limits, CheckpointError, Limits};

/// Caps on what an input checkpoint may declare. The defaults sit far above every real model;
/// a refusal names the flag that raises the cap it hit.
#[derive(clap::Args, Debug, Clone)]
pub struct CapArgs {
    /// Refuse checkpoints with more tensors than this (per file and over all shards).
    #[arg(long, value_name = "N", default_value_t = limits::MAX_TENSORS)]
    pub max_tensors: usize,
    /// Refuse safetensors JSON headers longer than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = limits::MAX_HEADER_LEN)]
    pub max_header_bytes: u64,
    /// Refuse JSON side files (config.json, shard index, tokenizer.json) larger than this.
    #[arg(long, value_name = "BYTES", default_value_t = limits::MAX_JSON_BYTES)]
    pub max_json_bytes: u64,
    /// Refuse tensors with more elements than this (product of the dimensions).
    #[arg(long, value_name = "N", default_value_t = limits::MAX_TENSOR_ELEMENTS)]
    pub max_tensor_elements: u64,
}

impl CapArgs {
    /// The caps as the checkpoint reader takes them.
    pub fn limits(&self) -> Limits {
        Limits {
            max_tensors: self.max_tensors,
            max_header_bytes: self.max_header_bytes,
            max_json_bytes: self.max_json_bytes,
            max_tensor_elements: self.max_tensor_elements,
            ..Limits::default()
        }
    }
}

/// The advice appended to an error that hit a raisable cap: which flag raises it.
pub fn hint(e: &CheckpointError) -> Option<String> {
    let flag = e.exceeded_cap()?.replace('_', "-");
    Some(format!("if this checkpoint is legitimate, raise the cap with --{flag}"))
}

/// An error for the user with the cap hint appended when there is one.
pub fn explain(e: CheckpointError) -> anyhow::Error {
    match hint(&e) {
        Some(h) => anyhow::anyhow!("{e}; {h}"),
        None => anyhow::Error::new(e),
    }
}
