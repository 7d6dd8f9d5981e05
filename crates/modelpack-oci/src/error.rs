//! Typed errors of the OCI layer, each mapped to the CLI's exit-code classes by [`OciError::kind`].

use std::path::PathBuf;

/// What went wrong while building, writing, pushing or pulling an artifact.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A transport reference (`oci:DIR:TAG`, `HOST/REPO:TAG`, ...) that does not parse.
    #[error("bad reference {reference:?}: {reason}")]
    Reference {
        /// The reference as given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// The package directory cannot be published as it is (unsigned changes, unreadable manifest).
    #[error("package {}: {reason}", path.display())]
    Package {
        /// Package directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A signing-crate error (path rules, manifest parsing, hashing an unsigned package).
    #[error(transparent)]
    Sign(#[from] modelpack_sign::SignError),
    /// Local file-system failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The registry could not be reached, closed the connection or answered with a server error.
    #[error("registry {url}: {detail}")]
    Network {
        /// Request URL (never contains credentials).
        url: String,
        /// What happened.
        detail: String,
    },
    /// The registry refused our credentials, or needs some and none were found.
    #[error("authentication failed for {registry}: {detail}")]
    Auth {
        /// Registry host.
        registry: String,
        /// The registry's answer, without any credential.
        detail: String,
    },
    /// A tag, manifest or blob that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The registry answered a request with an unexpected client-error status.
    #[error("registry refused {what}: HTTP {status}: {body}")]
    Refused {
        /// The operation.
        what: String,
        /// HTTP status.
        status: u16,
        /// Start of the error body.
        body: String,
    },
    /// Content whose SHA-256 or size differs from the descriptor that names it.
    #[error("{what}: expected {expected}, got {actual}")]
    Mismatch {
        /// Which blob or manifest, and whether digest or size.
        what: String,
        /// What the descriptor says.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// A manifest, index, layout or archive that is not what we can unpack.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which document.
        what: String,
        /// Why.
        detail: String,
    },
    /// The destination exists already and would be overwritten.
    #[error("destination {} exists (pull never replaces a directory)", .0.display())]
    Exists(PathBuf),
}

/// Exit-code class of an [`OciError`]: 1 verification, 2 input, 3 I/O or network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Content did not match its digest or size (exit 1).
    Verify,
    /// The user's input, credentials or reference are wrong (exit 2).
    Input,
    /// Local I/O or the network failed (exit 3).
    Io,
}

impl OciError {
    /// The exit-code class, so the CLI maps every error the same way.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OciError::Mismatch { .. } => ErrorKind::Verify,
            OciError::Io { .. } | OciError::Network { .. } => ErrorKind::Io,
            OciError::Sign(modelpack_sign::SignError::Io { .. }) => ErrorKind::Io,
            _ => ErrorKind::Input,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        OciError::Io { what: what.into(), source }
    }

    pub(crate) fn malformed(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        OciError::Malformed { what: what.into(), detail: detail.to_string() }
    }
}

/// Result alias of this crate.
pub type Result<T, E = OciError> = std::result::Result<T, E>;
