//! The `modelpack` command line. Every command has a `--json` mode that prints exactly one JSON
//! document on stdout (human text goes to stderr) and stable exit codes (DESIGN §3).

mod cmd;
mod exit;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Quantize, package, sign and verify open-weight model checkpoints.
#[derive(Parser)]
#[command(name = "modelpack", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a checkpoint, package, GGUF or safetensors file holds.
    Inspect(cmd::inspect::Args),
    /// Quantize a checkpoint into a deployment package for a target runtime.
    Quantize(cmd::quantize::Args),
    /// Measure how close a package's weights are to the checkpoint they came from.
    Compare(cmd::compare::Args),
    /// Generate an ECDSA signing key pair (NAME.pem, 0600, and NAME.pub).
    Keygen(cmd::sign::KeygenArgs),
    /// Sign a package directory in the OpenSSF Model Signing format.
    Sign(cmd::sign::SignArgs),
    /// Verify a package's signature and every file's digest.
    Verify(cmd::sign::VerifyArgs),
}

fn main() -> ExitCode {
    exit::reset_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let (json, result) = match cli.command {
        Command::Inspect(a) => (a.json, cmd::inspect::run(a)),
        Command::Quantize(a) => (a.json, cmd::quantize::run(a)),
        Command::Compare(a) => (a.json, cmd::compare::run(a)),
        Command::Keygen(a) => (a.json, cmd::sign::keygen(a)),
        Command::Sign(a) => (a.json, cmd::sign::sign(a)),
        Command::Verify(a) => (a.json, cmd::sign::verify(a)),
    };
    exit::finish(json, result)
}
