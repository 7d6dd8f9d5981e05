//! Parsing and validating one safetensors header (the rules are the checks below) with checked arithmetic.
//!
//! The header is parsed with our own serde visitor rather than the `safetensors` crate because
//! a JSON object with a repeated key must be an error, and every map-based parser (the crate's
//! included) silently keeps one of the two entries.

use crate::{CheckpointError, Dtype, Limits};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Deserialize;
use std::cell::Cell;
use std::fmt;
use std::path::Path;

/// One validated tensor entry; offsets are absolute in the file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

/// A validated header.
#[derive(Debug)]
pub(crate) struct Header {
    /// Entries sorted by name.
    pub entries: Vec<Entry>,
    /// `__metadata__`, in file order.
    pub metadata: Vec<(String, String)>,
    /// Absolute offset of the data area (8 + header length).
    pub data_start: usize,
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

enum RawValue {
    Tensor(RawTensor),
    Metadata(serde_json::Value),
}

/// Visits the top-level object keeping every key (duplicates included), in order.
struct HeaderSeed<'a> {
    too_many: &'a Cell<bool>,
    max_tensors: usize,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = Vec<(String, RawValue)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = Vec<(String, RawValue)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object mapping tensor names to {dtype, shape, data_offsets}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        let mut tensors = 0usize;
        while let Some(key) = map.next_key::<String>()? {
            if key == "__metadata__" {
                out.push((key, RawValue::Metadata(map.next_value()?)));
                continue;
            }
            tensors += 1;
            if tensors > self.max_tensors {
                self.too_many.set(true);
                return Err(de::Error::custom("too many tensors"));
            }
            let t =
                map.next_value::<RawTensor>().map_err(|e| de::Error::custom(format_args!("tensor {key:?}: {e}")))?;
            out.push((key, RawValue::Tensor(t)));
        }
        Ok(out)
    }
}

/// A JSON object read as ordered pairs with duplicate keys kept, so callers can refuse them
/// by name instead of silently losing one.
#[derive(Debug)]
pub(crate) struct DupMap<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for DupMap<V> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = DupMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(DupMap(out))
            }
        }
        d.deserialize_map(Vis(std::marker::PhantomData))
    }
}

/// Describe what a non-safetensors file looks like, from its first bytes.
fn sniff(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    if head.starts_with(b"GGUF") {
        "it is a GGUF file".into()
    } else if head.starts_with(b"PK\x03\x04") {
        "it is a zip archive, e.g. a PyTorch .bin checkpoint".into()
    } else if head.starts_with(&[0x80]) {
        "it looks like a Python pickle".into()
    } else if head.starts_with(b"\x89HDF") {
        "it is an HDF5 file".into()
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("no JSON header after the 8-byte length; file starts with {}", hex.join(" "))
    }
}

/// Validate the header of a whole file's bytes. `file_len` is `bytes.len()` as a u64.
pub(crate) fn parse(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Header, CheckpointError> {
    let p = || path.to_path_buf();
    let size = bytes.len() as u64;
    let Some(prefix) = bytes.get(..8) else {
        return Err(CheckpointError::Truncated { path: p(), size, needed: 8 });
    };
    let mut arr = [0u8; 8];
    arr.copy_from_slice(prefix);
    let n = u64::from_le_bytes(arr);
    // What follows the prefix must be a JSON object; anything else is another kind of file.
    match bytes.get(8) {
        // JSON allows leading whitespace and the reference reader accepts it.
        Some(b'{' | b' ' | b'\t' | b'\n' | b'\r') => {}
        Some(_) => return Err(CheckpointError::NotSafetensors { path: p(), reason: sniff(bytes) }),
        None => return Err(CheckpointError::Truncated { path: p(), size, needed: 8u64.saturating_add(n.max(2)) }),
    }
    if n > limits.max_header_bytes {
        return Err(CheckpointError::HeaderTooLarge { path: p(), len: n, limit: limits.max_header_bytes });
    }
    let available = size - 8;
    if n > available {
        return Err(CheckpointError::HeaderPastEnd { path: p(), len: n, available });
    }
    // n ≤ file size, which is mapped: fits usize.
    let n = n as usize;
    let data_start = 8 + n;
    let text = std::str::from_utf8(&bytes[8..data_start])
        .map_err(|e| CheckpointError::HeaderUtf8 { path: p(), offset: e.valid_up_to() })?;
    // `__metadata__` is free-form JSON: bound its nesting before the parser recurses into it.
    crate::limits::check_json_depth(path, text.as_bytes(), limits)?;

    let too_many = Cell::new(false);
    let raw = {
        let mut de = serde_json::Deserializer::from_str(text);
        HeaderSeed { too_many: &too_many, max_tensors: limits.max_tensors }
            .deserialize(&mut de)
            .and_then(|v| de.end().map(|()| v))
    };
    let raw = match raw {
        Ok(v) => v,
        Err(_) if too_many.get() => {
            return Err(CheckpointError::TooManyTensors { path: p(), limit: limits.max_tensors })
        }
        Err(e) => return Err(CheckpointError::BadJson { path: p(), message: e.to_string() }),
    };

    let data_len = (bytes.len() - data_start) as u64;
    let mut metadata = None;
    let mut entries: Vec<Entry> = Vec::with_capacity(raw.len());
    // Spans relative to the data area, checked before conversion to absolute offsets.
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashSet::with_capacity(raw.len());
    for (name, value) in raw {
        if !seen.insert(name.clone()) {
            return Err(CheckpointError::DuplicateTensor { path: p(), tensor: name });
        }
        let t = match value {
            RawValue::Metadata(v) => {
                metadata = Some(parse_metadata(path, v)?);
                continue;
            }
            RawValue::Tensor(t) => t,
        };
        let Some(dtype) = Dtype::from_name(&t.dtype) else {
            return Err(CheckpointError::UnknownDtype { path: p(), tensor: name, dtype: t.dtype });
        };
        if t.shape.len() > limits.max_rank {
            return Err(CheckpointError::TooManyDims {
                path: p(),
                tensor: name,
                rank: t.shape.len(),
                limit: limits.max_rank,
            });
        }
        let overflow = || CheckpointError::ShapeOverflow { path: p(), tensor: name.clone(), shape: t.shape.clone() };
        let numel = t.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
        if numel > limits.max_tensor_elements {
            return Err(CheckpointError::TooManyElements {
                path: p(),
                tensor: name,
                numel,
                limit: limits.max_tensor_elements,
            });
        }
        let bits = numel.checked_mul(dtype.bits() as u64).ok_or_else(overflow)?;
        if bits % 8 != 0 {
            return Err(CheckpointError::PartialByte { path: p(), tensor: name, dtype });
        }
        let expected = bits / 8;
        let (start, end) = t.data_offsets;
        if end < start {
            return Err(CheckpointError::ReversedOffsets { path: p(), tensor: name, start, end });
        }
        let shape: Vec<usize> =
            t.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<_, _>>().map_err(|_| overflow())?;
        if end - start != expected {
            return Err(CheckpointError::SizeMismatch {
                path: p(),
                tensor: name,
                dtype,
                shape,
                expected,
                actual: end - start,
            });
        }
        spans.push((start, end, entries.len()));
        entries.push(Entry { name, dtype, shape, start: 0, end: 0 });
    }

    // The data area must be tiled exactly: sorted by offset, each tensor starts where the
    // previous ended, and the last ends at the end of the file.
    spans.sort_unstable();
    let mut cursor = 0u64;
    let mut prev: Option<usize> = None;
    for &(start, end, i) in &spans {
        if start < cursor {
            return Err(CheckpointError::Overlap {
                path: p(),
                first: prev.map(|j| entries[j].name.clone()).unwrap_or_default(),
                second: entries[i].name.clone(),
                start,
                end: cursor,
            });
        }
        if end > data_len {
            if start == cursor {
                // Consistent so far, the file just stops: truncated (report the full need).
                let needed = spans.iter().map(|s| s.1).max().unwrap_or(end);
                return Err(CheckpointError::Truncated {
                    path: p(),
                    size,
                    needed: (data_start as u64).saturating_add(needed),
                });
            }
            return Err(CheckpointError::OutOfBounds {
                path: p(),
                tensor: entries[i].name.clone(),
                start,
                end,
                data_len,
            });
        }
        if start > cursor {
            return Err(CheckpointError::Hole {
                path: p(),
                what: format!("gap before tensor {:?}", entries[i].name),
                start: cursor,
                end: start,
            });
        }
        cursor = end;
        prev = Some(i);
    }
    if cursor < data_len {
        return Err(CheckpointError::Hole { path: p(), what: "trailing bytes".into(), start: cursor, end: data_len });
    }
    for &(start, end, i) in &spans {
        // In bounds of `bytes`, hence of usize.
        entries[i].start = data_start + start as usize;
        entries[i].end = data_start + end as usize;
    }
    entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(Header { entries, metadata: metadata.unwrap_or_default(), data_start })
}

fn parse_metadata(path: &Path, v: serde_json::Value) -> Result<Vec<(String, String)>, CheckpointError> {
    let bad = |reason: String| CheckpointError::BadMetadata { path: path.to_path_buf(), reason };
    match v {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                other => Err(bad(format!("value of {k:?} is {other}, not a string"))),
            })
            .collect(),
        other => Err(bad(format!("expected an object of strings, found {other}"))),
    }
}
