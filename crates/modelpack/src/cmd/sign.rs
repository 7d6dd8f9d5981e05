//! `modelpack keygen | sign | verify`.
use crate::exit::{CmdError, CmdResult};
use std::path::PathBuf;

/// Arguments of `modelpack keygen`.
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Output name: writes NAME.pem and NAME.pub.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `modelpack sign`.
#[derive(clap::Args)]
pub struct SignArgs {
    /// Package directory.
    pub package: PathBuf,
    /// Private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `modelpack verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Package directory.
    pub package: PathBuf,
    /// Public key (SPKI PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run `keygen`.
pub fn keygen(_a: KeygenArgs) -> CmdResult {
    Err(CmdError::usage("keygen: not implemented yet"))
}
/// Run `sign`.
pub fn sign(_a: SignArgs) -> CmdResult {
    Err(CmdError::usage("sign: not implemented yet"))
}
/// Run `verify`.
pub fn verify(_a: VerifyArgs) -> CmdResult {
    Err(CmdError::usage("verify: not implemented yet"))
}
