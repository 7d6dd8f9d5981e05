//! GGUF v3: typed metadata, the up-front writer layout, and a hostile-input reader.
//!
//! File layout (little-endian): `"GGUF"`, u32 version, u64 tensor count, u64 KV count; the KVs
//! (u64-length key, u32 value type, value); the tensor infos (name, u32 n_dims, n_dims × u64 `ne`,
//! u32 ggml type, u64 offset relative to the data section); zero padding to the alignment; the
//! data section, where every tensor starts on the alignment and is followed by zero padding.

pub mod arch;
pub mod llama;
mod reader;
pub mod split;
pub mod tiktoken;
pub mod tokenizer;

pub use reader::{GgufFile, GgufTensor, ReaderLimits};

use crate::FormatError;

/// The alignment llama.cpp assumes when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;
/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// llama.cpp's `GGML_MAX_DIMS`: tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// llama.cpp rejects tensor names of `GGML_MAX_NAME` (64) bytes or more.
pub const MAX_TENSOR_NAME: usize = 63;

/// Size facts of one ggml tensor type: a row of `ne[0]` elements is `ne[0] / block_size` blocks
/// of `type_size` bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlTypeInfo {
    /// The id stored in tensor infos.
    pub id: u32,
    /// The name llama.cpp and gguf-py use (`Q8_0`, `F32`, ...).
    pub name: &'static str,
    /// Elements per block.
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
}

impl GgmlTypeInfo {
    /// Bytes of one row of `n` elements, `None` if `n` is not a block multiple or overflows.
    pub fn row_bytes(&self, n: u64) -> Option<u64> {
        if !n.is_multiple_of(self.block_size) {
            return None;
        }
        (n / self.block_size).checked_mul(self.type_size)
    }
}

/// ggml type id of `F32`.
pub const GGML_F32: u32 = 0;
/// ggml type id of `F16`.
pub const GGML_F16: u32 = 1;
/// ggml type id of `Q4_0`.
pub const GGML_Q4_0: u32 = 2;
/// ggml type id of `Q4_1`.
pub const GGML_Q4_1: u32 = 3;
/// ggml type id of `Q8_0`.
pub const GGML_Q8_0: u32 = 8;
/// ggml type id of `Q4_K`.
pub const GGML_Q4_K: u32 = 12;
/// ggml type id of `Q6_K`.
pub const GGML_Q6_K: u32 = 14;
/// ggml type id of `BF16`.
pub const GGML_BF16: u32 = 30;

const fn t(id: u32, name: &'static str, block_size: u64, type_size: u64) -> GgmlTypeInfo {
    GgmlTypeInfo { id, name, block_size, type_size }
}

/// Every ggml type that gguf-py 0.19 can read (ids 4 and 5, the removed Q4_2/Q4_3, are absent).
const GGML_TYPES: &[GgmlTypeInfo] = &[
    t(0, "F32", 1, 4),
    t(1, "F16", 1, 2),
    t(2, "Q4_0", 32, 18),
    t(3, "Q4_1", 32, 20),
    t(6, "Q5_0", 32, 22),
    t(7, "Q5_1", 32, 24),
    t(8, "Q8_0", 32, 34),
    t(9, "Q8_1", 32, 36),
    t(10, "Q2_K", 256, 84),
    t(11, "Q3_K", 256, 110),
    t(12, "Q4_K", 256, 144),
    t(13, "Q5_K", 256, 176),
    t(14, "Q6_K", 256, 210),
    t(15, "Q8_K", 256, 292),
    t(16, "IQ2_XXS", 256, 66),
    t(17, "IQ2_XS", 256, 74),
    t(18, "IQ3_XXS", 256, 98),
    t(19, "IQ1_S", 256, 50),
    t(20, "IQ4_NL", 32, 18),
    t(21, "IQ3_S", 256, 110),
    t(22, "IQ2_S", 256, 82),
    t(23, "IQ4_XS", 256, 136),
    t(24, "I8", 1, 1),
    t(25, "I16", 1, 2),
    t(26, "I32", 1, 4),
    t(27, "I64", 1, 8),
    t(28, "F64", 1, 8),
    t(29, "IQ1_M", 256, 56),
    t(30, "BF16", 1, 2),
    t(34, "TQ1_0", 256, 54),
    t(35, "TQ2_0", 256, 66),
    t(39, "MXFP4", 32, 17),
];

/// Size facts of ggml type `id`, or `None` for an unknown id.
pub fn ggml_type_info(id: u32) -> Option<GgmlTypeInfo> {
    GGML_TYPES.iter().copied().find(|t| t.id == id)
}

/// `general.file_type` (llama.cpp's `llama_ftype`) for a file whose 2-D weights are mostly
/// `ggml_type`: F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 7, BF16 32. `None` for types whose file type
/// depends on the mix (K-quants: Q4_K_M is 15, Q4_K_S 14) or that we do not write.
pub fn file_type_for(ggml_type: u32) -> Option<u32> {
    Some(match ggml_type {
        GGML_F32 => 0,
        GGML_F16 => 1,
        GGML_Q4_0 => 2,
        GGML_Q4_1 => 3,
        GGML_Q8_0 => 7,
        GGML_BF16 => 32,
        _ => return None,
    })
}

/// `general.quantization_version` that llama.cpp expects for its current block formats.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Round `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// The value type ids of GGUF metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum MetaType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

/// The four bytes every GGUF file starts with. Readers that only classify a file (`inspect`)
/// compare against this instead of spelling the magic themselves.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

impl MetaType {
    /// gguf-py's name of the type (`GGUFValueType`), so our reports read like its dumps.
    pub const fn name(self) -> &'static str {
        match self {
            MetaType::U8 => "UINT8",
            MetaType::I8 => "INT8",
            MetaType::U16 => "UINT16",
            MetaType::I16 => "INT16",
            MetaType::U32 => "UINT32",
            MetaType::I32 => "INT32",
            MetaType::F32 => "FLOAT32",
            MetaType::Bool => "BOOL",
            MetaType::String => "STRING",
            MetaType::Array => "ARRAY",
            MetaType::U64 => "UINT64",
            MetaType::I64 => "INT64",
            MetaType::F64 => "FLOAT64",
        }
    }

    /// The type for a stored id, `None` if the id is not a GGUF value type.
    pub fn from_id(id: u32) -> Option<Self> {
        use MetaType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Encoded size of a scalar of this type; `None` for strings and arrays (variable).
    pub fn fixed_size(self) -> Option<usize> {
        use MetaType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }
}

/// A typed GGUF metadata value. Arrays are homogeneous: every element has the same type.
///
/// `Array(vec![])` carries no element type and is written as an empty `u8` array; use
/// [`MetaValue::EmptyArray`] to name the element type (the reader produces that form, so a
/// parse/write round trip preserves the bytes).
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Homogeneous, non-empty for a typed encoding; see [`MetaValue::EmptyArray`].
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
    /// An array with no elements and the given element type.
    EmptyArray(MetaType),
}

impl MetaValue {
    /// The GGUF type id this value is written with.
    pub fn meta_type(&self) -> MetaType {
        match self {
            MetaValue::U8(_) => MetaType::U8,
            MetaValue::I8(_) => MetaType::I8,
            MetaValue::U16(_) => MetaType::U16,
            MetaValue::I16(_) => MetaType::I16,
            MetaValue::U32(_) => MetaType::U32,
            MetaValue::I32(_) => MetaType::I32,
            MetaValue::F32(_) => MetaType::F32,
            MetaValue::Bool(_) => MetaType::Bool,
            MetaValue::String(_) => MetaType::String,
            MetaValue::Array(_) | MetaValue::EmptyArray(_) => MetaType::Array,
            MetaValue::U64(_) => MetaType::U64,
            MetaValue::I64(_) => MetaType::I64,
            MetaValue::F64(_) => MetaType::F64,
        }
    }

    /// A string value.
    pub fn string(s: impl Into<String>) -> Self {
        MetaValue::String(s.into())
    }

    /// An array of strings (typed even when empty).
    pub fn string_array<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let v: Vec<MetaValue> = items.into_iter().map(|s| MetaValue::String(s.into())).collect();
        if v.is_empty() {
            MetaValue::EmptyArray(MetaType::String)
        } else {
            MetaValue::Array(v)
        }
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as u64 if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The elements, if this is an array (empty for [`MetaValue::EmptyArray`]).
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(v) => Some(v),
            MetaValue::EmptyArray(_) => Some(&[]),
            _ => None,
        }
    }

    /// The value as JSON (for `inspect --json`): numbers, bools, strings, arrays; non-finite
    /// floats become null. Arrays longer than `max_items` are cut to that many elements.
    pub fn to_json(&self, max_items: usize) -> serde_json::Value {
        use serde_json::Value as J;
        let float = |x: f64| serde_json::Number::from_f64(x).map_or(J::Null, J::Number);
        match self {
            MetaValue::U8(v) => J::from(*v),
            MetaValue::I8(v) => J::from(*v),
            MetaValue::U16(v) => J::from(*v),
            MetaValue::I16(v) => J::from(*v),
            MetaValue::U32(v) => J::from(*v),
            MetaValue::I32(v) => J::from(*v),
            MetaValue::U64(v) => J::from(*v),
            MetaValue::I64(v) => J::from(*v),
            MetaValue::F32(v) => float(f64::from(*v)),
            MetaValue::F64(v) => float(*v),
            MetaValue::Bool(v) => J::Bool(*v),
            MetaValue::String(v) => J::String(v.clone()),
            MetaValue::EmptyArray(_) => J::Array(Vec::new()),
            MetaValue::Array(items) => J::Array(items.iter().take(max_items).map(|v| v.to_json(max_items)).collect()),
        }
    }

    /// Append the encoding (without the leading type id) to `out`.
    fn encode(&self, key: &str, out: &mut Vec<u8>) -> Result<(), FormatError> {
        match self {
            MetaValue::U8(v) => out.push(*v),
            MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::Bool(v) => out.push(u8::from(*v)),
            MetaValue::String(s) => put_str(out, s),
            MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::EmptyArray(MetaType::Array) => {
                return Err(FormatError::BadMetadata {
                    key: key.to_owned(),
                    reason: "arrays of arrays are not readable by llama.cpp".into(),
                })
            }
            MetaValue::EmptyArray(elem) => {
                out.extend_from_slice(&(*elem as u32).to_le_bytes());
                out.extend_from_slice(&0u64.to_le_bytes());
            }
            MetaValue::Array(items) => {
                let elem = items.first().map_or(MetaType::U8, MetaValue::meta_type);
                if let Some(bad) = items.iter().find(|v| v.meta_type() != elem) {
                    return Err(FormatError::BadMetadata {
                        key: key.to_owned(),
                        reason: format!("array is not homogeneous: {:?} element among {:?}", bad.meta_type(), elem),
                    });
                }
                if elem == MetaType::Array {
                    return Err(FormatError::BadMetadata {
                        key: key.to_owned(),
                        reason: "arrays of arrays are not readable by llama.cpp".into(),
                    });
                }
                out.extend_from_slice(&(elem as u32).to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    item.encode(key, out)?;
                }
            }
        }
        Ok(())
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One tensor of a GGUF file to be written: its name, ggml shape and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// GGUF tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// ggml shape, innermost first: `ne[0]` is the row length, so HF `[out, in]` is `[in, out]`.
    pub ne: Vec<u64>,
    /// ggml type id (see [`ggml_type_info`]).
    pub ggml_type: u32,
}

impl GgufTensorInfo {
    /// Byte size of this tensor's data, validating rank, block multiple and overflow.
    pub fn byte_size(&self) -> Result<u64, FormatError> {
        let bad = |reason: String| FormatError::BadTensor { tensor: self.name.clone(), reason };
        let info = ggml_type_info(self.ggml_type)
            .ok_or_else(|| FormatError::UnknownGgmlType { tensor: self.name.clone(), type_id: self.ggml_type })?;
        if self.ne.is_empty() || self.ne.len() > MAX_DIMS {
            return Err(bad(format!("{} dimensions (1 to {MAX_DIMS} allowed)", self.ne.len())));
        }
        if self.ne.iter().any(|&n| n > i64::MAX as u64) {
            return Err(bad(format!("dimension larger than i64::MAX in {:?}", self.ne)));
        }
        let row = info.row_bytes(self.ne[0]).ok_or_else(|| {
            bad(format!(
                "row length ne[0] = {} is not a multiple of the {} block size {}",
                self.ne[0], info.name, info.block_size
            ))
        })?;
        self.ne[1..]
            .iter()
            .try_fold(row, |acc, &n| acc.checked_mul(n))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| FormatError::Overflow(format!("size of tensor `{}`", self.name)))
    }
}

/// The complete byte layout of a GGUF file, known before any tensor data exists.
///
/// To write the file: create it with length `file_size` (zero-filled), write `header` at 0, then
/// each tensor's bytes at `tensor_offsets[i]`. Padding is the zeros in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufLayout {
    /// Everything before the data section: fixed header, KVs, tensor infos, zero padding.
    pub header: Vec<u8>,
    /// Absolute file offset of every tensor's data, in the order given to [`layout`].
    pub tensor_offsets: Vec<u64>,
    /// Byte size of every tensor's data (without padding).
    pub tensor_sizes: Vec<u64>,
    /// Total file size, including the padding after the last tensor.
    pub file_size: u64,
}

/// Compute the GGUF v3 layout for `metadata` (written in the given order) and `tensors` (data in
/// the given order, each on `alignment`).
///
/// `alignment` must be a power of two; if it is not 32, `metadata` must contain
/// `general.alignment` as the same u32, because readers take the alignment from there. Errors
/// name the offending key or tensor: non-homogeneous arrays, duplicate keys or names, a name too
/// long for llama.cpp, a row not a multiple of the type's block size, unknown types, overflow.
pub fn layout(
    metadata: &[(String, MetaValue)],
    tensors: &[GgufTensorInfo],
    alignment: u32,
) -> Result<GgufLayout, FormatError> {
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(FormatError::Alignment(format!("{alignment} is not a power of two")));
    }
    match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        Some((_, MetaValue::U32(a))) if *a == alignment => {}
        Some((_, v)) => {
            return Err(FormatError::BadMetadata {
                key: ALIGNMENT_KEY.into(),
                reason: format!("is {v:?}, but the layout uses u32 {alignment}"),
            })
        }
        None if alignment != DEFAULT_ALIGNMENT => {
            return Err(FormatError::BadMetadata {
                key: ALIGNMENT_KEY.into(),
                reason: format!("missing, but the layout uses alignment {alignment} (not 32)"),
            })
        }
        None => {}
    }
    let mut seen = std::collections::HashSet::new();
    for (k, _) in metadata {
        if !seen.insert(k.as_str()) {
            return Err(FormatError::Duplicate { what: "metadata key", name: k.clone() });
        }
    }
    seen.clear();
    for ti in tensors {
        if !seen.insert(ti.name.as_str()) {
            return Err(FormatError::Duplicate { what: "tensor", name: ti.name.clone() });
        }
        if ti.name.len() > MAX_TENSOR_NAME {
            return Err(FormatError::BadTensor {
                tensor: ti.name.clone(),
                reason: format!("name longer than llama.cpp's {MAX_TENSOR_NAME} bytes"),
            });
        }
    }

    let align = u64::from(alignment);
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut rel = Vec::with_capacity(tensors.len());
    let mut cursor = 0u64;
    for ti in tensors {
        let size = ti.byte_size()?;
        rel.push(cursor);
        sizes.push(size);
        cursor = cursor
            .checked_add(size)
            .and_then(|e| align_up(e, align))
            .ok_or_else(|| FormatError::Overflow("GGUF data section".into()))?;
    }

    let mut h = Vec::new();
    h.extend_from_slice(&GGUF_MAGIC);
    h.extend_from_slice(&3u32.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut h, k);
        h.extend_from_slice(&(v.meta_type() as u32).to_le_bytes());
        v.encode(k, &mut h)?;
    }
    for (ti, off) in tensors.iter().zip(&rel) {
        put_str(&mut h, &ti.name);
        h.extend_from_slice(&(ti.ne.len() as u32).to_le_bytes());
        for n in &ti.ne {
            h.extend_from_slice(&n.to_le_bytes());
        }
        h.extend_from_slice(&ti.ggml_type.to_le_bytes());
        h.extend_from_slice(&off.to_le_bytes());
    }
    let data_start = align_up(h.len() as u64, align).ok_or_else(|| FormatError::Overflow("GGUF header".into()))?;
    h.resize(data_start as usize, 0);
    let file_size = data_start.checked_add(cursor).ok_or_else(|| FormatError::Overflow("GGUF file size".into()))?;
    Ok(GgufLayout {
        header: h,
        tensor_offsets: rel.iter().map(|r| r + data_start).collect(),
        tensor_sizes: sizes,
        file_size,
    })
}

/// Write a whole GGUF file into memory: a convenience for small files (tests, fixtures).
///
/// `data[i]` must be exactly the size the layout computes for `tensors[i]`.
pub fn write_to_vec(
    metadata: &[(String, MetaValue)],
    tensors: &[GgufTensorInfo],
    data: &[&[u8]],
    alignment: u32,
) -> Result<Vec<u8>, FormatError> {
    let l = layout(metadata, tensors, alignment)?;
    if data.len() != tensors.len() {
        return Err(FormatError::BadTensor {
            tensor: String::new(),
            reason: format!("{} data buffers for {} tensors", data.len(), tensors.len()),
        });
    }
    let len = usize::try_from(l.file_size).map_err(|_| FormatError::Overflow("file size".into()))?;
    let mut out = vec![0u8; len];
    out[..l.header.len()].copy_from_slice(&l.header);
    for (i, d) in data.iter().enumerate() {
        if d.len() as u64 != l.tensor_sizes[i] {
            return Err(FormatError::BadTensor {
                tensor: tensors[i].name.clone(),
                reason: format!("{} data bytes, layout needs {}", d.len(), l.tensor_sizes[i]),
            });
        }
        let off = l.tensor_offsets[i] as usize;
        out[off..off + d.len()].copy_from_slice(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_match_hand_encoding() {
        let md = vec![("a".to_string(), MetaValue::U32(7))];
        let ts = vec![GgufTensorInfo { name: "t".into(), ne: vec![32, 2], ggml_type: GGML_Q8_0 }];
        let l = layout(&md, &ts, 32).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(b"GGUF");
        want.extend_from_slice(&[3, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // tensors
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]); // kvs
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, b'a']);
        want.extend_from_slice(&[4, 0, 0, 0, 7, 0, 0, 0]); // u32 7
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, b't']);
        want.extend_from_slice(&[2, 0, 0, 0]); // n_dims
        want.extend_from_slice(&[32, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[8, 0, 0, 0]); // Q8_0
        want.extend_from_slice(&[0; 8]); // offset 0
        assert_eq!(want.len(), 82);
        want.resize(96, 0);
        assert_eq!(l.header, want);
        assert_eq!(l.tensor_offsets, vec![96]);
        assert_eq!(l.tensor_sizes, vec![68]); // 2 rows x 1 block x 34 bytes
        assert_eq!(l.file_size, 96 + 96); // 68 padded to 96
    }

    #[test]
    fn offsets_are_aligned_and_padded() {
        let md = vec![(ALIGNMENT_KEY.to_string(), MetaValue::U32(64))];
        let ts = vec![
            GgufTensorInfo { name: "a".into(), ne: vec![3], ggml_type: GGML_F32 },
            GgufTensorInfo { name: "b".into(), ne: vec![32, 3], ggml_type: GGML_Q4_0 },
            GgufTensorInfo { name: "c".into(), ne: vec![5], ggml_type: GGML_F16 },
        ];
        let l = layout(&md, &ts, 64).unwrap();
        let d = l.header.len() as u64;
        assert_eq!(d % 64, 0);
        assert_eq!(l.tensor_sizes, vec![12, 54, 10]);
        assert_eq!(l.tensor_offsets, vec![d, d + 64, d + 128]);
        assert_eq!(l.file_size, d + 192);
    }

    #[test]
    fn layout_errors_name_the_culprit() {
        let q = |ne: Vec<u64>| GgufTensorInfo { name: "blk.0.x".into(), ne, ggml_type: GGML_Q8_0 };
        let e = layout(&[], &[q(vec![33, 2])], 32).unwrap_err().to_string();
        assert!(e.contains("blk.0.x") && e.contains("33"), "{e}");
        let e = layout(&[], &[q(vec![32, 1, 1, 1, 1])], 32).unwrap_err().to_string();
        assert!(e.contains("5 dimensions"), "{e}");
        let e = layout(&[], &[q(vec![32, u64::MAX / 2])], 32).unwrap_err();
        assert!(matches!(e, FormatError::BadTensor { .. } | FormatError::Overflow(_)), "{e}");
        let bad_type = GgufTensorInfo { name: "z".into(), ne: vec![4], ggml_type: 4 };
        assert!(matches!(layout(&[], &[bad_type], 32), Err(FormatError::UnknownGgmlType { type_id: 4, .. })));
        assert!(matches!(layout(&[], &[], 48), Err(FormatError::Alignment(_))));
        assert!(matches!(layout(&[], &[], 64), Err(FormatError::BadMetadata { .. })));
        let mixed = MetaValue::Array(vec![MetaValue::U8(1), MetaValue::I8(1)]);
        let e = layout(&[("k".into(), mixed)], &[], 32).unwrap_err().to_string();
        assert!(e.contains("`k`") && e.contains("homogeneous"), "{e}");
        let dup = vec![("k".to_string(), MetaValue::U8(1)), ("k".to_string(), MetaValue::U8(2))];
        assert!(matches!(layout(&dup, &[], 32), Err(FormatError::Duplicate { .. })));
        let long = GgufTensorInfo { name: "x".repeat(64), ne: vec![4], ggml_type: GGML_F32 };
        assert!(matches!(layout(&[], &[long], 32), Err(FormatError::BadTensor { .. })));
    }

    #[test]
    fn reader_round_trips_every_value_type() {
        let md: Vec<(String, MetaValue)> = vec![
            ("u8".into(), MetaValue::U8(200)),
            ("i8".into(), MetaValue::I8(-3)),
            ("u16".into(), MetaValue::U16(65000)),
            ("i16".into(), MetaValue::I16(-30000)),
            ("u32".into(), MetaValue::U32(4_000_000_000)),
            ("i32".into(), MetaValue::I32(-2_000_000_000)),
            ("f32".into(), MetaValue::F32(1.5e-6)),
            ("bool".into(), MetaValue::Bool(true)),
            ("str".into(), MetaValue::string("héllo")),
            ("arr".into(), MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(-1)])),
            ("empty".into(), MetaValue::EmptyArray(MetaType::String)),
            ("u64".into(), MetaValue::U64(u64::MAX)),
            ("i64".into(), MetaValue::I64(i64::MIN)),
            ("f64".into(), MetaValue::F64(-0.25)),
        ];
        let ts = vec![
            GgufTensorInfo { name: "f".into(), ne: vec![2, 3], ggml_type: GGML_F32 },
            GgufTensorInfo { name: "q".into(), ne: vec![64], ggml_type: GGML_Q8_0 },
        ];
        let a: Vec<u8> = (0..24).collect();
        let b: Vec<u8> = (0..68).map(|i| 255 - i).collect();
        let bytes = write_to_vec(&md, &ts, &[&a, &b], 32).unwrap();
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.metadata, md);
        assert_eq!(f.tensors.len(), 2);
        assert_eq!(f.tensors[0].info, ts[0]);
        assert_eq!(f.tensors[1].info, ts[1]);
        assert_eq!(f.tensors[0].data, &a[..]);
        assert_eq!(f.tensors[1].data, &b[..]);
        assert_eq!(f.tensor("q").unwrap().offset, 32);
        assert_eq!(f.get("str").and_then(MetaValue::as_str), Some("héllo"));
    }
}

#[cfg(test)]
mod small_tests {
    use super::*;

    #[test]
    fn file_types_and_json() {
        assert_eq!(file_type_for(GGML_Q8_0), Some(7));
        assert_eq!(file_type_for(GGML_Q4_0), Some(2));
        assert_eq!(file_type_for(GGML_Q4_1), Some(3));
        assert_eq!(file_type_for(GGML_Q4_K), None);
        let v = MetaValue::Array(vec![MetaValue::F32(0.5), MetaValue::F32(f32::NAN)]);
        assert_eq!(v.to_json(10), serde_json::json!([0.5, null]));
        assert_eq!(v.to_json(1), serde_json::json!([0.5]));
        assert_eq!(MetaValue::I64(-3).to_json(0), serde_json::json!(-3));
    }
}
