//! modelpack packages as CNCF ModelPack OCI artifacts.
//!
//! A package directory becomes an OCI image manifest with artifactType
//! `application/vnd.cncf.model.manifest.v1+json`, a model config and one raw layer per file
//! ([`artifact::build`]); the layer digests are the file digests the package signature already
//! lists, so nothing is hashed twice and pull + unpack gives back a package both `modelpack
//! verify` and `model_signing verify` accept. Transports ([`Location`]): an OCI image-layout
//! directory, a deterministic tar of one ([`layout`]), and a registry ([`registry`]).

pub mod artifact;
mod error;
mod io;
pub mod layout;
pub mod reference;
pub mod registry;
pub mod unpack;

pub use artifact::{build, Artifact, BuildOptions, Layer};
pub use error::{ErrorKind, OciError, Result};
pub use io::{set_staging_hooks, NoProgress, Progress};
pub use reference::{Location, RegistryRef, TagOrDigest};
pub use registry::{ClientOptions, Credentials, PushReport, Registry};
pub use unpack::PullReport;
