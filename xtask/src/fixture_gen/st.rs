//! A minimal, deterministic safetensors writer: `__metadata__` first, tensors sorted by name,
//! header padded with spaces to 8 bytes, data packed without holes (the format forbids them).

/// One tensor to write: name, dtype name, shape, raw little-endian bytes.
pub struct StTensor {
    /// Tensor name.
    pub name: String,
    /// safetensors dtype name (`"BF16"`).
    pub dtype: &'static str,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Raw bytes.
    pub data: Vec<u8>,
}

/// Serialize tensors (any order; written sorted by name) with `{"format":"pt"}` metadata.
pub fn serialize(tensors: &[&StTensor]) -> Vec<u8> {
    let mut sorted: Vec<&StTensor> = tensors.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut off = 0usize;
    for t in &sorted {
        let end = off + t.data.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, end]}),
        );
        off = end;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).expect("header serializes");
    while h.len() & 7 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + off);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for t in &sorted {
        out.extend_from_slice(&t.data);
    }
    out
}

/// A file from a literal header and data area, for hostile cases (header padded to 8 bytes).
pub fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while h.len() & 7 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}
