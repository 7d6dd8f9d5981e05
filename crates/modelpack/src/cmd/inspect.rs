//! `modelpack inspect`.
use crate::exit::{CmdError, CmdResult};
use std::path::PathBuf;

/// Arguments of `modelpack inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory, package, GGUF or safetensors file.
    pub path: PathBuf,
    /// Only list tensors whose name matches this regex.
    #[arg(long)]
    pub tensors: Option<String>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run `inspect`.
pub fn run(_args: Args) -> CmdResult {
    Err(CmdError::usage("inspect: not implemented yet"))
}
