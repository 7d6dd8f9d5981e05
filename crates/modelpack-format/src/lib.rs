//! Target file formats: GGUF v3 (cpu target) and compressed-tensors safetensors (cuda target).
//!
//! Writers here never touch tensor data: they compute the complete byte layout of an output file
//! (header bytes plus every tensor's absolute offset) up front, so the pipeline can preallocate
//! the file and let parallel workers write each chunk at its final offset. Readers exist for
//! `inspect`, tests and fuzzing, and treat their input as hostile.
//!
//! - [`gguf::layout`] / [`gguf::GgufFile::parse`]: GGUF v3 writer layout and reader.
//! - [`gguf::arch`]: the architecture registry (one module per family): config.json →
//!   hyperparameters, HF → GGUF tensor plan (names, shapes, q/k permutation, stacked experts),
//!   llama-quantize's Q4_K_M rules. [`gguf::llama`] keeps the first converter's API on top.
//! - [`gguf::tokenizer`]: tokenizer.json (byte-level BPE) or tokenizer.model (SentencePiece) →
//!   `tokenizer.*` metadata, as llama.cpp's converter writes it.
//! - [`safetensors::safetensors_layout`]: safetensors header and offsets, byte-identical to the
//!   reference writer when tensors are in [`safetensors::canonical_order`].
//! - [`compressed_tensors`]: `quantization_config`, config.json update, sharded index.
//! - [`imatrix`]: llama.cpp importance matrices (GGUF and legacy `.dat`) → per-column weights.

pub mod compressed_tensors;
mod error;
pub mod gguf;
pub mod imatrix;
pub mod safetensors;

pub use error::FormatError;
