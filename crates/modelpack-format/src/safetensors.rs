//! safetensors output layout: the header bytes and every tensor's absolute offset, computed
//! before any data is written (the cuda target writes compressed-tensors checkpoints this way).
//!
//! The header matches the reference writer (the `safetensors` Python package, whose core is the
//! Rust crate): compact JSON, `__metadata__` first, `data_offsets` relative to the data section,
//! contiguous data, the JSON padded with spaces to a multiple of 8 bytes.

use crate::FormatError;
use serde_json::{Map, Value};

/// Byte size of one element of a safetensors dtype, `None` for an unknown dtype string.
///
/// Sub-byte types (`F4`, `F6_*`) are not supported as outputs.
pub fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Position of a dtype in the safetensors crate's `Dtype` enum (derive(Ord) order, 0.4+).
fn dtype_rank(dtype: &str) -> usize {
    const ORDER: &[&str] = &[
        "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16",
        "I32", "U32", "F32", "F64", "I64", "U64",
    ];
    ORDER.iter().position(|d| *d == dtype).unwrap_or(usize::MAX)
}

/// Sort tensors the way the reference writer (`safetensors.torch.save_file`) orders them:
/// descending dtype (so 8-byte types come first and every tensor is naturally aligned), then
/// name. Using this order makes our files byte-identical to the reference writer's.
pub fn canonical_order<T, F>(tensors: &mut [T], key: F)
where
    F: Fn(&T) -> (&str, &str),
{
    tensors.sort_by(|a, b| {
        let (na, da) = key(a);
        let (nb, db) = key(b);
        dtype_rank(db).cmp(&dtype_rank(da)).then_with(|| na.cmp(nb))
    });
}

/// The complete byte layout of a safetensors file.
///
/// To write it: create the file with `file_size` bytes, write `header` at 0 and each tensor's
/// data at `offsets[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StLayout {
    /// The 8-byte little-endian JSON length followed by the space-padded JSON.
    pub header: Vec<u8>,
    /// Absolute file offset of every tensor's data, in the order given.
    pub offsets: Vec<u64>,
    /// Byte size of every tensor's data.
    pub sizes: Vec<u64>,
    /// Total file size.
    pub file_size: u64,
}

/// Compute the layout of a safetensors file holding `tensors` (name, dtype, shape) in the given
/// order, with `__metadata__` built from `metadata` (omitted when empty; use
/// `[("format", "pt")]` for files that transformers and vLLM load).
///
/// Errors: unknown dtype, duplicate or empty name, a name equal to `__metadata__`, overflow.
pub fn safetensors_layout(
    tensors: &[(String, &str, Vec<usize>)],
    metadata: &[(String, String)],
) -> Result<StLayout, FormatError> {
    let mut root = Map::new();
    if !metadata.is_empty() {
        let m: Map<String, Value> = metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        root.insert("__metadata__".into(), Value::Object(m));
    }
    let mut cursor = 0u64;
    let mut rel = Vec::with_capacity(tensors.len());
    let mut sizes = Vec::with_capacity(tensors.len());
    for (name, dtype, shape) in tensors {
        if name.is_empty() || name == "__metadata__" {
            return Err(FormatError::BadTensor {
                tensor: name.clone(),
                reason: "is not a valid safetensors tensor name".into(),
            });
        }
        let elem = dtype_size(dtype)
            .ok_or_else(|| FormatError::UnknownDtype { tensor: name.clone(), dtype: (*dtype).to_owned() })?;
        let size = shape
            .iter()
            .try_fold(elem as u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| FormatError::Overflow(format!("size of tensor `{name}`")))?;
        let end = cursor.checked_add(size).ok_or_else(|| FormatError::Overflow("safetensors data section".into()))?;
        let entry = serde_json::json!({
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [cursor, end],
        });
        if root.insert(name.clone(), entry).is_some() {
            return Err(FormatError::Duplicate { what: "tensor", name: name.clone() });
        }
        rel.push(cursor);
        sizes.push(size);
        cursor = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(root))
        .map_err(|e| FormatError::Overflow(format!("safetensors header JSON: {e}")))?;
    let padded = json.len().div_ceil(8) * 8;
    json.resize(padded, b' ');
    let mut header = Vec::with_capacity(8 + json.len());
    header.extend_from_slice(&(json.len() as u64).to_le_bytes());
    header.extend_from_slice(&json);
    let data_start = header.len() as u64;
    let file_size =
        data_start.checked_add(cursor).ok_or_else(|| FormatError::Overflow("safetensors file size".into()))?;
    Ok(StLayout { header, offsets: rel.iter().map(|r| r + data_start).collect(), sizes, file_size })
}

/// Split tensors (their data sizes, in output order) into consecutive shards of at most
/// `max_shard_size` data bytes, the greedy rule of transformers' `save_pretrained`: a tensor
/// that does not fit in the current non-empty shard starts the next one; a tensor larger than
/// the limit gets a shard of its own. Returns index ranges into `sizes`; one shard (possibly
/// empty) when everything fits.
pub fn shard_plan(sizes: &[u64], max_shard_size: u64) -> Vec<std::ops::Range<usize>> {
    let mut shards = Vec::new();
    let (mut start, mut current) = (0usize, 0u64);
    for (i, &s) in sizes.iter().enumerate() {
        if i > start && current.saturating_add(s) > max_shard_size {
            shards.push(start..i);
            start = i;
            current = 0;
        }
        current = current.saturating_add(s);
    }
    shards.push(start..sizes.len());
    shards
}

#[cfg(test)]
mod tests {
    use super::shard_plan;

    #[test]
    fn shards_are_greedy_and_bounded() {
        assert_eq!(shard_plan(&[], 10), vec![0..0]);
        assert_eq!(shard_plan(&[3, 3, 3], 10), vec![0..3]);
        assert_eq!(shard_plan(&[3, 3, 3, 3], 10), vec![0..3, 3..4]);
        assert_eq!(shard_plan(&[4, 20, 4, 6, 1], 10), vec![0..1, 1..2, 2..4, 4..5]);
        assert_eq!(shard_plan(&[10, 10], 10), vec![0..1, 1..2]);
        assert_eq!(shard_plan(&[u64::MAX, 1], 10), vec![0..1, 1..2]);
    }
}
