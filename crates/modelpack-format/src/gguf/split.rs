//! llama.cpp's split GGUF: one model in `PREFIX-00001-of-0000N.gguf` files, as `llama-gguf-split
//! --split --split-max-size` writes them and `llama_model_loader` reads them from the first file.
//!
//! The rules (read from llama.cpp's tools/gguf-split and src/llama.cpp, 0.3.36): tensors keep
//! their order and are cut into consecutive groups; a new file starts when the next tensor's
//! data, padded to the alignment, would push the group's data past the limit (a single tensor
//! larger than the limit gets a file of its own; gguf-split refuses that for the first tensor,
//! we do not). The first file carries every metadata key;
//! every file then has `split.no` (u16, 0-based), `split.count` (u16) and
//! `split.tensors.count` (i32, all tensors of the model), appended in that order.

use super::{layout, GgufLayout, GgufTensorInfo, MetaValue};
use crate::FormatError;

/// 0-based index of a file in the split set.
pub const SPLIT_NO: &str = "split.no";
/// Number of files.
pub const SPLIT_COUNT: &str = "split.count";
/// Number of tensors over all files.
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// `PREFIX-0000I-of-0000N.gguf` for the 0-based file `no` of `count` (llama.cpp's `llama_split_path`).
pub fn split_file_name(prefix: &str, no: usize, count: usize) -> String {
    format!("{prefix}-{:05}-of-{count:05}.gguf", no + 1)
}

/// One file of a split set: which tensors (a range of the input order) and its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPart {
    /// Indices into the full tensor list, consecutive.
    pub tensors: std::ops::Range<usize>,
    /// The file's layout; `tensor_offsets[k]` belongs to tensor `tensors.start + k`.
    pub layout: GgufLayout,
}

/// Cut a model into split files whose tensor data stays within `max_data_bytes` each (the
/// header is not counted, as in `gguf-split`). One part means the model fits one file: callers
/// may then write a plain GGUF instead (`gguf-split` would still write `-00001-of-00001`).
pub fn split_layout(
    metadata: &[(String, MetaValue)],
    tensors: &[GgufTensorInfo],
    alignment: u32,
    max_data_bytes: u64,
) -> Result<Vec<SplitPart>, FormatError> {
    if tensors.is_empty() {
        return Err(FormatError::BadTensor { tensor: String::new(), reason: "a split GGUF needs tensors".into() });
    }
    let align = u64::from(alignment.max(1));
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0usize;
    let mut cur = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let n = super::align_up(t.byte_size()?, align).ok_or_else(|| FormatError::Overflow(t.name.clone()))?;
        if i > start && cur + n > max_data_bytes {
            groups.push(start..i);
            start = i;
            cur = 0;
        }
        cur += n;
    }
    groups.push(start..tensors.len());
    let count = u16::try_from(groups.len())
        .map_err(|_| FormatError::Overflow(format!("{} split files (llama.cpp allows 65535)", groups.len())))?;
    let total = i32::try_from(tensors.len()).map_err(|_| FormatError::Overflow("tensor count".into()))?;
    let mut parts = Vec::with_capacity(groups.len());
    for (no, g) in groups.into_iter().enumerate() {
        let mut md: Vec<(String, MetaValue)> = if no == 0 {
            metadata.iter().filter(|(k, _)| !k.starts_with("split.")).cloned().collect()
        } else {
            // Later files only need the alignment (when not the default) to be readable alone.
            metadata.iter().filter(|(k, _)| k == super::ALIGNMENT_KEY).cloned().collect()
        };
        md.push((SPLIT_NO.into(), MetaValue::U16(no as u16)));
        md.push((SPLIT_COUNT.into(), MetaValue::U16(count)));
        md.push((SPLIT_TENSORS_COUNT.into(), MetaValue::I32(total)));
        let layout = layout(&md, &tensors[g.clone()], alignment)?;
        parts.push(SplitPart { tensors: g, layout });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    fn f32_tensor(name: &str, n: u64) -> GgufTensorInfo {
        GgufTensorInfo { name: name.into(), ne: vec![n], ggml_type: 0 }
    }

    #[test]
    fn groups_by_padded_data_size_and_writes_split_keys() {
        let md = vec![("general.architecture".to_string(), MetaValue::string("llama"))];
        // Data 40, 40, 40, 100, 8 bytes; padded to 32: 64, 64, 64, 128, 32.
        let ts = vec![
            f32_tensor("a", 10),
            f32_tensor("b", 10),
            f32_tensor("c", 10),
            f32_tensor("d", 25),
            f32_tensor("e", 2),
        ];
        let parts = split_layout(&md, &ts, 32, 96).unwrap();
        // Limit 96: any two of a..c exceed it; d alone exceeds it and still gets a file; e
        // cannot join d.
        let ranges: Vec<_> = parts.iter().map(|p| p.tensors.clone()).collect();
        assert_eq!(ranges, vec![0..1, 1..2, 2..3, 3..4, 4..5]);
        let parts = split_layout(&md, &ts, 32, 200).unwrap();
        let ranges: Vec<_> = parts.iter().map(|p| p.tensors.clone()).collect();
        assert_eq!(ranges, vec![0..3, 3..5]);
        for (no, p) in parts.iter().enumerate() {
            let mut bytes = vec![0u8; p.layout.file_size as usize];
            bytes[..p.layout.header.len()].copy_from_slice(&p.layout.header);
            let f = GgufFile::parse(&bytes).unwrap();
            assert_eq!(f.get(SPLIT_NO), Some(&MetaValue::U16(no as u16)));
            assert_eq!(f.get(SPLIT_COUNT), Some(&MetaValue::U16(2)));
            assert_eq!(f.get(SPLIT_TENSORS_COUNT), Some(&MetaValue::I32(5)));
            assert_eq!(f.get("general.architecture").is_some(), no == 0, "metadata only in the first file");
            // The split keys come last, in gguf-split's order.
            let keys: Vec<&str> = f.metadata.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(&keys[keys.len() - 3..], &[SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS_COUNT]);
            assert_eq!(f.tensors.len(), p.tensors.len());
        }
        assert_eq!(split_file_name("out/model", 0, 3), "out/model-00001-of-00003.gguf");
    }
}
