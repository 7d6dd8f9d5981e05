//! What every modelpack test needs once: the deterministic generator that makes test inputs and
//! fixture weights ([`SplitMix64`]), repository paths ([`root`], [`fixture`]) and the lookup of
//! the external judges ([`judge`]) that fails under `MODELPACK_REQUIRE_INTEROP=1` instead of
//! letting a test pass having checked nothing.
//!
//! A dev-dependency of the library crates and of the root integration tests, and a dependency of
//! `xtask`'s fixture generator (the fixtures' bytes come from [`SplitMix64`]); never of a shipped
//! crate.

pub mod judge;
mod rng;

pub use rng::SplitMix64;

use std::path::{Path, PathBuf};

/// The repository root (this crate lives in `crates/modelpack-testkit`).
pub fn root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

/// A path under `fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// A helper script under `xtask/py/`.
pub fn script(name: &str) -> PathBuf {
    root().join("xtask/py").join(name)
}
