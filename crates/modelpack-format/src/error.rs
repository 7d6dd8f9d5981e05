//! The one error type of this crate.

/// Everything that can go wrong while laying out, parsing or converting a target format.
///
/// Variants name the file part, key or tensor involved so that a CLI can print them as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input ended before a field could be read completely.
    #[error("GGUF truncated: {what} at byte {offset} needs {needed} bytes, {available} left")]
    Truncated {
        /// The field being read.
        what: String,
        /// Absolute byte offset of the field.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the input.
        available: u64,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic bytes {0:02x?}")]
    BadMagic([u8; 4]),
    /// A GGUF version this crate does not read (only 2 and 3 are understood).
    #[error("unsupported GGUF version {0} (expected 3)")]
    UnsupportedVersion(u32),
    /// A count (tensors, keys, array elements, dimensions, bytes) exceeds a sanity cap.
    #[error("GGUF {what}: count {count} exceeds the limit of {limit}")]
    TooMany {
        /// What is being counted.
        what: String,
        /// The count found or requested.
        count: u64,
        /// The cap.
        limit: u64,
    },
    /// A metadata value type id outside the GGUF value types.
    #[error("GGUF metadata `{key}`: unknown value type {type_id}")]
    BadValueType {
        /// The key whose value has the bad type.
        key: String,
        /// The type id found.
        type_id: u32,
    },
    /// A metadata value that does not fit its declared type or meaning.
    #[error("GGUF metadata `{key}`: {reason}")]
    BadMetadata {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A string that is not valid UTF-8.
    #[error("GGUF {what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string (key, tensor name, value).
        what: String,
        /// Absolute byte offset of the string bytes.
        offset: u64,
    },
    /// The same key or tensor name occurs twice.
    #[error("duplicate {what} `{name}`")]
    Duplicate {
        /// `metadata key` or `tensor`.
        what: &'static str,
        /// The repeated name.
        name: String,
    },
    /// A ggml tensor type id this crate has no size table for.
    #[error("tensor `{tensor}`: unknown ggml type {type_id}")]
    UnknownGgmlType {
        /// Tensor name.
        tensor: String,
        /// The type id found.
        type_id: u32,
    },
    /// A tensor's shape is invalid for its type (rank, block multiple, overflow).
    #[error("tensor `{tensor}`: {reason}")]
    BadTensor {
        /// Tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor's data lies (partly) outside the data section or overlaps another tensor.
    #[error("tensor `{tensor}`: data [{start}, {end}) lies outside the data section of {data_len} bytes or overlaps another tensor")]
    TensorOutOfBounds {
        /// Tensor name.
        tensor: String,
        /// Start offset relative to the data section.
        start: u64,
        /// End offset relative to the data section.
        end: u64,
        /// Length of the data section.
        data_len: u64,
    },
    /// An alignment that is zero or not a power of two, or an offset not on the alignment.
    #[error("alignment error: {0}")]
    Alignment(String),
    /// A size computation overflowed 64 bits.
    #[error("size overflow in {0}")]
    Overflow(String),
    /// config.json names an architecture we cannot convert.
    #[error("unsupported architecture `{0}` (supported: {supported})", supported = crate::gguf::arch::supported_list())]
    UnsupportedArchitecture(String),
    /// A config.json field is missing or has the wrong type or value.
    #[error("config.json: `{key}` {reason}")]
    BadConfig {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tokenizer this crate cannot convert.
    #[error("unsupported tokenizer: {0}")]
    UnsupportedTokenizer(String),
    /// A tokenizer file that is malformed.
    #[error("{file}: {reason}")]
    BadTokenizer {
        /// Which file (`tokenizer.json`, `tokenizer_config.json`, `tokenizer.model`).
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A safetensors dtype string this crate does not know.
    #[error("tensor `{tensor}`: unknown safetensors dtype `{dtype}`")]
    UnknownDtype {
        /// Tensor name.
        tensor: String,
        /// The dtype string.
        dtype: String,
    },
    /// An importance matrix (`--imatrix`) that is malformed or not an importance matrix.
    #[error("imatrix: {0}")]
    BadImatrix(String),
}
