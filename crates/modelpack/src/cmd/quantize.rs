//! `modelpack quantize`.
use crate::exit::{CmdError, CmdResult};
use std::path::PathBuf;

/// Arguments of `modelpack quantize`.
#[derive(clap::Args)]
pub struct Args {
    /// Input checkpoint directory or safetensors file.
    pub input: PathBuf,
    /// Output package directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print one JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run `quantize`.
pub fn run(_args: Args) -> CmdResult {
    Err(CmdError::usage("quantize: not implemented yet"))
}
