//! The root integration tests: one test binary (`it`) whose modules are the former
//! `tests/<name>.rs` files, so the workspace links the `modelpack` library and its dependencies
//! into one executable instead of one per file (uv's `tests/it`, ruff's shared test module).
//!
//! Run them with `cargo test -p modelpack --test it` (add a filter such as `sign::` or
//! `quantize::cuda` to pick some); `cargo xtask test` runs them with every judge required.
//!
//! To add a module: put it at `tests/it/<name>.rs`, declare it below as `mod <name>;` (keep the
//! list sorted), and inside it write `use crate::common;` (and `use crate::sign_support;` if it
//! needs the signing packages) instead of `mod common;`. Do not add a `[[test]]` stanza: a new
//! file under `tests/it/` is part of this binary. Shared helpers go into `common/` (this
//! binary only) or, when a library crate's tests need them too, into `crates/modelpack-testkit`
//! (the SplitMix64 generator, repository paths, the judge lookup).
//!
//! Judges (the Python venv, llama.cpp, the compressed-tensors reference) are found only through
//! `modelpack_testkit::judge` (re-exported by `common`): a missing judge skips with a message on a
//! developer machine and fails under `MODELPACK_REQUIRE_INTEROP=1` (`cargo xtask test`, CI).

mod common;
mod sign_support;

mod bpw;
mod cli;
mod compare;
mod families_cpu;
mod families_cuda;
mod families_deci;
mod families_deepseek;
mod families_nemotron_h;
mod families_nemotron_h_cuda;
mod faults;
mod fp8;
mod hostile;
mod imatrix_e2e;
mod inspect;
mod kquant_e2e;
mod llama_run;
mod mse;
mod oci;
mod oci_token;
mod options;
mod packed;
mod quantize;
mod rebuild;
mod scale_dtype;
mod sentencepiece;
mod sign;
mod sign_interop;
mod sign_x509;
mod simd_env_cli;
mod split_gguf;
