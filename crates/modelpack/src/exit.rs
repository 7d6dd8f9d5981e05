//! Exit codes and error reporting shared by every command.
//!
//! Codes are part of the stable interface (README.md lists them): 0 success, 1 verification failed,
//! 2 usage or input error, 3 internal or I/O error.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// Verification failed: tampered, missing or extra file, bad signature.
pub const VERIFY_FAILED: u8 = 1;
/// Bad arguments or unreadable / malformed input.
pub const USAGE: u8 = 2;
/// Internal or I/O error (disk full, permission denied on output, ...).
pub const INTERNAL: u8 = 3;

/// An error that knows which exit code it maps to.
#[derive(Debug)]
pub struct CmdError {
    /// Exit code to return.
    pub code: u8,
    /// The error with its context chain.
    pub error: anyhow::Error,
}

/// Result of a command: the exit code on success (0, or 1 for a clean "verification failed").
pub type CmdResult = Result<u8, CmdError>;

/// Attach an exit code to errors.
pub trait Classify<T> {
    /// The error is the user's input (exit 2).
    fn input(self) -> Result<T, CmdError>;
    /// The error is internal or I/O (exit 3).
    fn internal(self) -> Result<T, CmdError>;
}

impl<T, E: Into<anyhow::Error>> Classify<T> for Result<T, E> {
    fn input(self) -> Result<T, CmdError> {
        self.map_err(|e| CmdError { code: USAGE, error: e.into() })
    }
    fn internal(self) -> Result<T, CmdError> {
        self.map_err(|e| CmdError { code: INTERNAL, error: e.into() })
    }
}

impl CmdError {
    /// An input error from a message.
    pub fn usage(msg: impl std::fmt::Display) -> Self {
        CmdError { code: USAGE, error: anyhow::anyhow!("{msg}") }
    }
}

/// Report the outcome and turn it into the process exit code. In `--json` mode an error is
/// still one JSON document on stdout, so CI parsers never see an empty or partial stdout.
pub fn finish(json: bool, result: CmdResult) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let msg = format!("{:#}", e.error);
            if json {
                let doc = serde_json::json!({
                    "status": "error",
                    "exit_code": e.code,
                    "error": msg,
                });
                println!("{doc}");
            }
            eprintln!("error: {msg}");
            ExitCode::from(e.code)
        }
    }
}

/// Restore the default SIGPIPE action so `modelpack inspect | head` ends quietly instead of
/// panicking on a closed stdout.
pub fn reset_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal disposition to SIG_DFL at startup, before any threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
