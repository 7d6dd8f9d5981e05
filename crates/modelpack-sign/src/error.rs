//! The one error type of this crate. Every variant names the file, path or key it is about,
//! so a CLI can print it as is.

use std::path::PathBuf;

/// Why hashing, signing, verifying or parsing failed.
///
/// Tampering found by [`crate::verify_package`] is *not* an error: it is reported in the
/// [`crate::VerifyReport`]. Errors are for input that cannot be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// An operating-system call failed on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A symbolic link inside the package (never followed: it could point anywhere).
    #[error("{path}: symbolic links are not allowed in a package")]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A FIFO, socket or device node inside the package.
    #[error("{path}: not a regular file or directory")]
    NotRegular {
        /// The special file.
        path: PathBuf,
    },
    /// A file name that is not valid UTF-8 cannot be named in a bundle.
    #[error("{path}: file name is not valid UTF-8")]
    NonUtf8Path {
        /// The offending path.
        path: PathBuf,
    },
    /// A resource path that could escape the package or is ambiguous.
    #[error("invalid resource path {path:?}: {reason}")]
    BadPath {
        /// The path as written.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A package must hold at least one file to sign or verify.
    #[error("{root}: package has no files to sign")]
    EmptyPackage {
        /// The package directory.
        root: PathBuf,
    },
    /// Precomputed digests given to [`crate::sign_package`] do not describe the directory.
    #[error("{root}: precomputed digests do not match the package: {detail}")]
    DigestsMismatch {
        /// The package directory.
        root: PathBuf,
        /// Which files are missing, extra or of another size.
        detail: String,
    },
    /// A file is larger than we accept (e.g. a signature bundle over the cap).
    #[error("{path}: {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// JSON nested deeper than allowed (guards the parser against hostile input).
    #[error("{what}: JSON nested deeper than {limit} levels")]
    JsonTooDeep {
        /// What document.
        what: String,
        /// The depth limit.
        limit: usize,
    },
    /// JSON that does not parse or does not have the expected shape.
    #[error("{what}: {source}")]
    Json {
        /// What document.
        what: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A signature bundle that is well-formed JSON but not a bundle we can verify.
    #[error("{path}: {reason}")]
    MalformedBundle {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key we cannot use: wrong kind, unsupported algorithm or curve, bad encoding.
    #[error("{0}")]
    Key(String),
    /// An encrypted private key and no password.
    #[error("encrypted private key needs a password (--password-file or --password-env)")]
    KeyNeedsPassword,
    /// A certificate we cannot use (unparsable, unsupported key or algorithm, not matching the
    /// private key). A chain that merely fails to verify is reported in the
    /// [`crate::VerifyReport`] instead.
    #[error(transparent)]
    Cert(#[from] crate::x509::CertError),
    /// A bundle signed one way and a verifier configured for the other (key vs certificate).
    #[error("{0}")]
    WrongMethod(String),
    /// A package manifest (`modelpack.json`) that we cannot accept.
    #[error("manifest: {0}")]
    Manifest(String),
}

impl SignError {
    /// Attach a path to an I/O error.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SignError::Io { path: path.into(), source }
    }
}
