//! A GGUF reader for untrusted bytes: every length is checked against the remaining input before
//! anything is allocated, counts are capped, tensor data must lie inside the file, on the
//! alignment and without overlaps. It never panics and never casts unaligned bytes.

use super::{
    align_up, ggml_type_info, GgufTensorInfo, MetaType, MetaValue, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAX_DIMS,
};
use crate::FormatError;
use std::collections::HashSet;

/// Caps that bound the work and memory a hostile file can cause.
///
/// Memory is bounded by the input size (every element consumes input bytes) times a small
/// factor, and by `max_array_elements` in total across all arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    /// Maximum number of tensors.
    pub max_tensors: u64,
    /// Maximum number of metadata key/value pairs.
    pub max_kvs: u64,
    /// Maximum length of one array.
    pub max_array_len: u64,
    /// Maximum number of array elements across the whole file.
    pub max_array_elements: u64,
    /// Maximum byte length of one string (key, name or value).
    pub max_string_len: u64,
    /// Maximum nesting of arrays inside arrays (1 = arrays of scalars only).
    pub max_array_depth: u32,
}

impl Default for ReaderLimits {
    /// Generous for real models (a 256k-token vocabulary with its merges is ~1 M elements).
    fn default() -> Self {
        ReaderLimits {
            max_tensors: 1 << 20,
            max_kvs: 1 << 16,
            max_array_len: 1 << 24,
            max_array_elements: 1 << 25,
            max_string_len: 1 << 26,
            max_array_depth: 2,
        }
    }
}

/// One tensor of a parsed GGUF file, with a view of its data bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor<'a> {
    /// The tensor info as stored (name, `ne`, ggml type).
    pub info: GgufTensorInfo,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// Absolute file offset of the data.
    pub file_offset: u64,
    /// The data bytes (exactly the type's size for the shape, no padding).
    pub data: &'a [u8],
}

/// A parsed GGUF file borrowing its bytes (for example from an mmap).
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile<'a> {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensor<'a>>,
    /// The alignment in effect (`general.alignment` or 32).
    pub alignment: u32,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl<'a> GgufFile<'a> {
    /// Parse with [`ReaderLimits::default`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        Self::parse_with_limits(bytes, &ReaderLimits::default())
    }

    /// Parse and validate a whole GGUF file held in `bytes`.
    pub fn parse_with_limits(bytes: &'a [u8], limits: &ReaderLimits) -> Result<Self, FormatError> {
        let mut c = Cursor { bytes, pos: 0, limits, elements: 0 };
        let magic: [u8; 4] = c.array("magic")?;
        if magic != super::GGUF_MAGIC {
            return Err(FormatError::BadMagic(magic));
        }
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        cap("tensors", n_tensors, limits.max_tensors)?;
        cap("metadata pairs", n_kv, limits.max_kvs)?;
        // Minimum encoded sizes: a KV is key length + type + 1 byte; a tensor info is name
        // length + n_dims + one ne + type + offset.
        c.need_items("metadata", n_kv, 8 + 4 + 1)?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut keys = HashSet::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let type_id = c.u32("value type")?;
            let ty =
                MetaType::from_id(type_id).ok_or_else(|| FormatError::BadValueType { key: key.clone(), type_id })?;
            let value = c.value(&key, ty, 0)?;
            if !keys.insert(key.clone()) {
                return Err(FormatError::Duplicate { what: "metadata key", name: key });
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some((_, MetaValue::U32(a))) if *a != 0 && a.is_power_of_two() => *a,
            Some((_, v)) => {
                return Err(FormatError::BadMetadata {
                    key: ALIGNMENT_KEY.into(),
                    reason: format!("must be a non-zero power of two u32, found {v:?}"),
                })
            }
        };

        c.need_items("tensor infos", n_tensors, 8 + 4 + 8 + 4 + 8)?;
        let mut infos = Vec::with_capacity(n_tensors as usize);
        let mut names = HashSet::new();
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor n_dims")?;
            if n_dims == 0 || n_dims as usize > MAX_DIMS {
                return Err(FormatError::BadTensor {
                    tensor: name,
                    reason: format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
                });
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(c.u64("tensor ne")?);
            }
            let ggml_type = c.u32("tensor type")?;
            let offset = c.u64("tensor offset")?;
            if !names.insert(name.clone()) {
                return Err(FormatError::Duplicate { what: "tensor", name });
            }
            infos.push((GgufTensorInfo { name, ne, ggml_type }, offset));
        }

        let align = u64::from(alignment);
        let data_offset = align_up(c.pos as u64, align).ok_or_else(|| FormatError::Overflow("GGUF header".into()))?;
        let file_len = bytes.len() as u64;
        let data_len = file_len.saturating_sub(data_offset);
        if !infos.is_empty() && data_offset > file_len {
            return Err(FormatError::Truncated {
                what: "data section".into(),
                offset: data_offset,
                needed: 1,
                available: 0,
            });
        }

        let mut spans = Vec::with_capacity(infos.len());
        let mut tensors = Vec::with_capacity(infos.len());
        for (info, offset) in infos {
            if ggml_type_info(info.ggml_type).is_none() {
                return Err(FormatError::UnknownGgmlType { tensor: info.name, type_id: info.ggml_type });
            }
            let size = info.byte_size()?;
            if offset % align != 0 {
                return Err(FormatError::Alignment(format!(
                    "tensor `{}` offset {offset} is not a multiple of {alignment}",
                    info.name
                )));
            }
            let end =
                offset.checked_add(size).filter(|&e| e <= data_len).ok_or_else(|| FormatError::TensorOutOfBounds {
                    tensor: info.name.clone(),
                    start: offset,
                    end: offset.saturating_add(size),
                    data_len,
                })?;
            // In range of `bytes`, hence of usize.
            let start_abs = (data_offset + offset) as usize;
            let data = &bytes[start_abs..start_abs + size as usize];
            spans.push((offset, end, tensors.len()));
            tensors.push(GgufTensor { info, offset, file_offset: data_offset + offset, data });
        }
        spans.sort_unstable();
        // Zero-sized tensors overlap nothing; otherwise each start must not precede the
        // furthest end seen so far.
        let mut max_end = 0u64;
        for &(start, end, idx) in &spans {
            if start == end {
                continue;
            }
            if start < max_end {
                return Err(FormatError::TensorOutOfBounds {
                    tensor: tensors[idx].info.name.clone(),
                    start,
                    end,
                    data_len,
                });
            }
            max_end = end;
        }

        Ok(GgufFile { version, metadata, tensors, alignment, data_offset })
    }

    /// The value of metadata `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor<'a>> {
        self.tensors.iter().find(|t| t.info.name == name)
    }
}

fn cap(what: &str, count: u64, limit: u64) -> Result<(), FormatError> {
    if count > limit {
        return Err(FormatError::TooMany { what: what.into(), count, limit });
    }
    Ok(())
}

struct Cursor<'a, 'l> {
    bytes: &'a [u8],
    pos: usize,
    limits: &'l ReaderLimits,
    /// Array elements read so far (against `max_array_elements`).
    elements: u64,
}

impl<'a> Cursor<'a, '_> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn truncated(&self, what: &str, needed: u64) -> FormatError {
        FormatError::Truncated { what: what.into(), offset: self.pos as u64, needed, available: self.remaining() }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() {
            return Err(self.truncated(what, n));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// Fail early if `count` items of at least `min_size` bytes cannot fit in the input.
    fn need_items(&self, what: &str, count: u64, min_size: u64) -> Result<(), FormatError> {
        match count.checked_mul(min_size) {
            Some(n) if n <= self.remaining() => Ok(()),
            _ => Err(self.truncated(&format!("{count} {what}"), count.saturating_mul(min_size))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FormatError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, FormatError> {
        let len = self.u64(what)?;
        cap(&format!("{what} length"), len, self.limits.max_string_len)?;
        let offset = self.pos as u64;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| FormatError::InvalidUtf8 { what: what.into(), offset })
    }

    fn value(&mut self, key: &str, ty: MetaType, depth: u32) -> Result<MetaValue, FormatError> {
        Ok(match ty {
            MetaType::U8 => MetaValue::U8(self.array::<1>(key)?[0]),
            MetaType::I8 => MetaValue::I8(i8::from_le_bytes(self.array(key)?)),
            MetaType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(key)?)),
            MetaType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(key)?)),
            MetaType::U32 => MetaValue::U32(u32::from_le_bytes(self.array(key)?)),
            MetaType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(key)?)),
            MetaType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(key)?)),
            MetaType::U64 => MetaValue::U64(u64::from_le_bytes(self.array(key)?)),
            MetaType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            MetaType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            MetaType::Bool => match self.array::<1>(key)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(FormatError::BadMetadata {
                        key: key.into(),
                        reason: format!("bool byte is {b}, not 0 or 1"),
                    })
                }
            },
            MetaType::String => MetaValue::String(self.string(key)?),
            MetaType::Array => {
                if depth >= self.limits.max_array_depth {
                    return Err(FormatError::TooMany {
                        what: format!("array nesting in `{key}`"),
                        count: u64::from(depth) + 1,
                        limit: u64::from(self.limits.max_array_depth),
                    });
                }
                let type_id = self.u32(key)?;
                let elem =
                    MetaType::from_id(type_id).ok_or_else(|| FormatError::BadValueType { key: key.into(), type_id })?;
                let len = self.u64(key)?;
                cap(&format!("array `{key}` length"), len, self.limits.max_array_len)?;
                self.elements = self.elements.saturating_add(len);
                cap("array elements in total", self.elements, self.limits.max_array_elements)?;
                let min = match elem {
                    MetaType::String => 8,
                    MetaType::Array => 12,
                    t => t.fixed_size().unwrap_or(1) as u64,
                };
                self.need_items(&format!("elements of `{key}`"), len, min)?;
                if len == 0 {
                    return Ok(MetaValue::EmptyArray(elem));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(key, elem, depth + 1)?);
                }
                MetaValue::Array(items)
            }
        })
    }
}
