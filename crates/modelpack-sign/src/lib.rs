//! File digests, the package manifest, keys and OpenSSF Model Signing bundles.
//!
//! A package is signed in the format of `model_signing` 1.1.1 (key method), so the
//! reference verifier accepts our `model.sig` and we accept its. Entry points:
//! [`hash_package`] / [`hash_file`] (parallel SHA-256, two files per core with SHA-NI: [`sha256`]), [`sign_package`] (returns the bundle
//! bytes, [`write_signature`] stores them), [`verify_package`] (a [`VerifyReport`] naming every
//! changed, missing or extra file), [`PrivateKey`] / [`PublicKey`], and
//! [`manifest::PackageManifest`] for `modelpack.json`.

mod bundle;
mod digest;
mod error;
mod keys;
pub mod manifest;
pub mod sha256;
pub mod x509;

pub use bundle::{
    check_json_depth, complete_digests, is_default_ignored, model_name, pae, root_digest, sign_package,
    sign_package_as, sign_package_with, statement_json, verify_package, verify_package_trust, write_signature,
    CertMaterial, FileCheck, FileStatus, Trust, VerifyReport, MAX_BUNDLE_BYTES, MAX_JSON_DEPTH,
};
pub use digest::{
    cmp_paths, hash_file, hash_package, validate_rel_path, FileDigest, DEFAULT_IGNORE_PATHS, SIGNATURE_FILE,
};
pub use error::SignError;
pub use keys::{Curve, PrivateKey, PublicKey, PBKDF2_ITERATIONS};
pub use sha256::{active_impl as sha256_impl, ShaImpl};
