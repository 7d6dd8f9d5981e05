//! Target file formats: GGUF v3 (cpu target) and compressed-tensors safetensors (cuda target).
//!
//! Writers here never touch tensor data: they compute the complete byte layout of an output file
//! (header bytes plus every tensor's absolute offset) up front, so the pipeline can preallocate
//! the file and let parallel workers write each chunk at its final offset. Readers exist for
//! `inspect`, tests and fuzzing, and treat their input as hostile.

pub mod compressed_tensors;
mod error;
pub mod gguf;
pub mod safetensors;

pub use error::FormatError;
