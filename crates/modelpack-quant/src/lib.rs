//! Pure quantization compute: block formats, SIMD kernels with scalar twins, error metrics.
//!
//! This crate never touches a file: callers hand it byte slices (possibly unaligned, as in
//! safetensors files written by other tools) and output buffers, so it can be fuzzed, benched
//! and property-tested in isolation.

pub mod blocks;
pub mod convert;
pub mod ct;
pub mod fp8;
pub mod gguf;
pub mod imatrix;
pub mod kquants;
pub mod metrics;
pub mod mse;
pub mod packed;
pub mod simd;

pub use gguf::{dequantize_rows, quantize_rows, quantize_tensor_par, GgmlType};
pub use metrics::ErrorStats;
pub use simd::{active_level, set_level, Level};

use thiserror::Error;

/// Element type of a source tensor's raw little-endian bytes.
///
/// Kernels read these bytes directly (unaligned loads) and fuse the conversion to f32, so no
/// tensor-sized f32 buffer ever exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrcDtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the upper half of an f32).
    BF16,
}

impl SrcDtype {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            SrcDtype::F32 => 4,
            SrcDtype::F16 | SrcDtype::BF16 => 2,
        }
    }
}

/// Why a quantization call refused its input.
#[derive(Debug, Error, PartialEq)]
pub enum QuantError {
    /// NaN or infinity in the input: refused like llama.cpp's validator does, because a single
    /// non-finite value poisons its block's scale and silently zeroes or corrupts the block.
    #[error("non-finite value {value} at element {index}")]
    NonFinite {
        /// Element index within the slice passed in.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// Input or output buffer sizes do not fit the requested shape or format.
    #[error("bad shape: {0}")]
    Shape(String),
    /// The requested output type has a layout but no quantizer here (e.g. Q5_0, Q5_1).
    #[error("quantizing to {0} is not supported")]
    Unsupported(&'static str),
}
