//! llama.cpp importance matrices (`llama-imatrix` output), read from untrusted bytes.
//!
//! An importance matrix holds, for every matrix multiplication of a model, the sum over the
//! calibration tokens of the squared input activation of each column (`in_sum2`) and how many
//! tokens were summed (`counts`, one per expert for MoE tensors). `llama-quantize` divides the
//! two to get the mean squared activation per column and hands that vector to ggml's quantizers
//! as `quant_weights`; [`Imatrix::weights`] yields exactly that vector, computed with the same
//! f32 operations, so weighted quantization can be byte-identical to llama.cpp.
//!
//! Two file formats exist and both are read:
//! - **GGUF** (what current `llama-imatrix` writes): `general.type = "imatrix"`,
//!   `imatrix.datasets` (array of strings), `imatrix.chunk_count` and `imatrix.chunk_size` (u32),
//!   and per tensor `<name>.in_sum2` (F32, `[ne0, n_expert]`) and `<name>.counts` (F32,
//!   `[1, n_expert]`). Weights are `in_sum2 / counts` per expert; an expert with count 0 gets
//!   weight 1 for every column (llama-quantize's rule for MoE experts the data never reached).
//! - **Legacy `.dat`** (`--output-format dat`): `i32 n_entries`, then per entry `i32 len`,
//!   name, `i32 ncall`, `i32 nval`, `nval` f32 (already `sum/count·ncall`), then optionally
//!   `i32 chunk_count`, `i32 len` and the dataset name. Weights are `values / ncall`.
//!
//! The format is chosen by the first four bytes (`GGUF` or not). Every count is capped and checked
//! against the bytes left before anything is allocated; values must be finite and non-negative
//! (sums of squares and token counts), names unique, each `in_sum2` paired with its `counts`.
//! llama.cpp ignores some of these defects; refusing them is deliberate, because a corrupt matrix
//! silently degrades every tensor it touches.

use crate::gguf::{GgufFile, MetaValue, ReaderLimits};
use crate::FormatError;
use std::collections::BTreeMap;

/// The GGUF keys and tensor suffixes of the imatrix format (llama.cpp `common/imatrix-loader.h`).
pub const KEY_DATASETS: &str = "imatrix.datasets";
/// Number of chunks (of `chunk_size` tokens) the statistics were collected over.
pub const KEY_CHUNK_COUNT: &str = "imatrix.chunk_count";
/// Tokens per chunk (llama-imatrix's `n_ctx / n_parallel`).
pub const KEY_CHUNK_SIZE: &str = "imatrix.chunk_size";
const SUFFIX_SUMS: &str = ".in_sum2";
const SUFFIX_COUNTS: &str = ".counts";
/// ggml type id of F32.
const GGML_F32: u32 = 0;

/// Caps on what a hostile importance matrix can make the reader allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImatrixLimits {
    /// Maximum number of entries (weight tensors described).
    pub max_entries: u64,
    /// Maximum values of one entry (columns × experts).
    pub max_values: u64,
    /// Maximum byte length of a tensor name or dataset name in a legacy file.
    pub max_name_len: u64,
}

impl Default for ImatrixLimits {
    /// Generous for real models: a 1T-parameter MoE has ~10⁵ entries, a 256-expert tensor with
    /// 16k columns ~4·10⁶ values.
    fn default() -> Self {
        ImatrixLimits { max_entries: 1 << 20, max_values: 1 << 28, max_name_len: 1 << 16 }
    }
}

/// Which of the two file formats a matrix was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImatrixFormat {
    /// The GGUF format (`general.type = imatrix`).
    Gguf,
    /// llama.cpp's older binary `.dat` format.
    Legacy,
}

/// One weight tensor's statistics, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixEntry {
    /// Columns of the weight (its row length, GGUF `ne[0]`).
    pub columns: usize,
    /// Experts (1 for a dense tensor).
    pub experts: usize,
    /// `columns × experts` per-column values as stored: raw sums of squared activations (GGUF) or
    /// `sum / count · ncall` (legacy).
    pub sums: Vec<f32>,
    /// Per expert: token count (GGUF, rounded like llama.cpp's `lround`) or `ncall` (legacy, one
    /// value).
    pub counts: Vec<i64>,
}

/// A parsed importance matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Imatrix {
    /// File format.
    pub format: ImatrixFormat,
    /// Calibration data sets named in the file (paths as given to llama-imatrix).
    pub datasets: Vec<String>,
    /// Chunks processed (`imatrix.chunk_count`, or the legacy trailer; 0 if absent).
    pub chunk_count: u32,
    /// Tokens per chunk (GGUF only; 0 for legacy files).
    pub chunk_size: u32,
    /// Entries by GGUF tensor name (`blk.0.attn_q.weight`), sorted.
    pub entries: BTreeMap<String, ImatrixEntry>,
}

fn bad(reason: impl Into<String>) -> FormatError {
    FormatError::BadImatrix(reason.into())
}

impl Imatrix {
    /// Parse either format with [`ImatrixLimits::default`].
    pub fn parse(bytes: &[u8]) -> Result<Imatrix, FormatError> {
        Self::parse_with_limits(bytes, &ImatrixLimits::default())
    }

    /// Parse either format (chosen by the `GGUF` magic) under `limits`.
    pub fn parse_with_limits(bytes: &[u8], limits: &ImatrixLimits) -> Result<Imatrix, FormatError> {
        if bytes.starts_with(b"GGUF") {
            parse_gguf(bytes, limits)
        } else {
            parse_legacy(bytes, limits)
        }
    }

    /// The per-column weights llama-quantize passes to ggml's quantizers for tensor `name`
    /// (`columns × experts` values, expert-major), or `None` if the matrix has no entry for it.
    ///
    /// GGUF: `sums[e·columns + i] / (f32)counts[e]`, or 1 for every column of an expert whose
    /// count is 0. Legacy: `sums[i] / (f32)ncall`, or the stored values when `ncall` ≤ 0. Same
    /// f32 operations as `tools/quantize/quantize.cpp`, so the weights are bit-identical.
    pub fn weights(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        Some(match self.format {
            ImatrixFormat::Gguf => {
                let mut w = Vec::with_capacity(e.sums.len());
                for (chunk, &count) in e.sums.chunks_exact(e.columns).zip(&e.counts) {
                    let c = count as f32;
                    if c > 0.0 {
                        w.extend(chunk.iter().map(|&s| s / c));
                    } else {
                        w.resize(w.len() + e.columns, 1.0f32);
                    }
                }
                w
            }
            ImatrixFormat::Legacy => {
                let ncall = e.counts.first().copied().unwrap_or(0);
                if ncall > 0 {
                    let c = ncall as f32;
                    e.sums.iter().map(|&s| s / c).collect()
                } else {
                    e.sums.clone()
                }
            }
        })
    }
}

fn parse_gguf(bytes: &[u8], limits: &ImatrixLimits) -> Result<Imatrix, FormatError> {
    let reader_limits = ReaderLimits { max_tensors: limits.max_entries.saturating_mul(2), ..ReaderLimits::default() };
    let f = GgufFile::parse_with_limits(bytes, &reader_limits)?;
    match f.get("general.type") {
        Some(MetaValue::String(s)) if s == "imatrix" => {}
        Some(v) => {
            return Err(bad(format!("general.type is {v:?}, not \"imatrix\": this GGUF is not an importance matrix")))
        }
        None => return Err(bad("GGUF file without general.type = \"imatrix\": not an importance matrix")),
    }
    let datasets = match f.get(KEY_DATASETS) {
        Some(MetaValue::Array(a)) => a
            .iter()
            .map(|v| match v {
                MetaValue::String(s) => Ok(s.clone()),
                other => Err(bad(format!("{KEY_DATASETS} holds {other:?}, expected strings"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(MetaValue::EmptyArray(crate::gguf::MetaType::String)) => Vec::new(),
        Some(v) => return Err(bad(format!("{KEY_DATASETS} is {v:?}, expected an array of strings"))),
        // llama-quantize refuses a GGUF matrix without this metadata too.
        None => return Err(bad(format!("missing {KEY_DATASETS}"))),
    };
    let u32_key = |key: &str| match f.get(key) {
        Some(MetaValue::U32(v)) => Ok(*v),
        Some(v) => Err(bad(format!("{key} is {v:?}, expected a u32"))),
        None => Err(bad(format!("missing {key}"))),
    };
    let chunk_count = u32_key(KEY_CHUNK_COUNT)?;
    let chunk_size = u32_key(KEY_CHUNK_SIZE)?;
    if f.tensors.is_empty() {
        return Err(bad("no tensors: the matrix holds no data"));
    }

    let mut pairs: BTreeMap<&str, (Option<usize>, Option<usize>)> = BTreeMap::new();
    for (i, t) in f.tensors.iter().enumerate() {
        let n = t.info.name.as_str();
        if let Some(base) = n.strip_suffix(SUFFIX_SUMS).filter(|b| !b.is_empty()) {
            pairs.entry(base).or_default().0 = Some(i);
        } else if let Some(base) = n.strip_suffix(SUFFIX_COUNTS).filter(|b| !b.is_empty()) {
            pairs.entry(base).or_default().1 = Some(i);
        } else {
            return Err(bad(format!("tensor `{n}` is neither `<name>{SUFFIX_SUMS}` nor `<name>{SUFFIX_COUNTS}`")));
        }
    }
    if pairs.len() as u64 > limits.max_entries {
        return Err(FormatError::TooMany {
            what: "imatrix entries".into(),
            count: pairs.len() as u64,
            limit: limits.max_entries,
        });
    }
    let mut entries = BTreeMap::new();
    for (name, (s, c)) in pairs {
        let (Some(s), Some(c)) = (s, c) else {
            return Err(bad(format!(
                "`{name}` has {} but no {}",
                if s.is_some() { SUFFIX_SUMS } else { SUFFIX_COUNTS },
                if s.is_some() { SUFFIX_COUNTS } else { SUFFIX_SUMS }
            )));
        };
        let (s, c) = (&f.tensors[s], &f.tensors[c]);
        for t in [s, c] {
            if t.info.ggml_type != GGML_F32 {
                return Err(bad(format!("`{}` has ggml type {}, expected F32", t.info.name, t.info.ggml_type)));
            }
        }
        // ggml drops trailing dimensions of 1: a dense entry is `[ne0]` and `[1]`.
        let dims = |ne: &[u64]| -> Option<(u64, u64)> {
            match *ne {
                [a] => Some((a, 1)),
                [a, b] => Some((a, b)),
                _ => None,
            }
        };
        let (columns, experts) = dims(&s.info.ne)
            .ok_or_else(|| bad(format!("`{}` has shape {:?}, expected [columns, experts]", s.info.name, s.info.ne)))?;
        let counts_shape = dims(&c.info.ne);
        if counts_shape != Some((1, experts)) {
            return Err(bad(format!(
                "`{}` has shape {:?}, expected [1, {experts}] to match `{}` {:?}",
                c.info.name, c.info.ne, s.info.name, s.info.ne
            )));
        }
        if columns == 0 || experts == 0 {
            return Err(bad(format!("`{}` is empty ({:?})", s.info.name, s.info.ne)));
        }
        let n =
            columns.checked_mul(experts).filter(|&n| n <= limits.max_values).ok_or_else(|| FormatError::TooMany {
                what: format!("values of imatrix entry `{name}`"),
                count: columns.saturating_mul(experts),
                limit: limits.max_values,
            })?;
        let sums = read_f32s(s.data, n as usize);
        if let Some((i, v)) = sums.iter().enumerate().find(|(_, v)| !v.is_finite() || **v < 0.0) {
            return Err(bad(format!("`{}`[{i}] = {v}: sums of squares must be finite and non-negative", s.info.name)));
        }
        let mut counts = Vec::with_capacity(experts as usize);
        for (i, v) in read_f32s(c.data, experts as usize).into_iter().enumerate() {
            if !(0.0..=9.0e18).contains(&v) {
                return Err(bad(format!("`{}`[{i}] = {v}: token counts must be finite and non-negative", c.info.name)));
            }
            // `std::lround`: half away from zero, which is Rust's `f32::round`.
            counts.push(v.round() as i64);
        }
        entries.insert(
            name.to_string(),
            ImatrixEntry { columns: columns as usize, experts: experts as usize, sums, counts },
        );
    }
    Ok(Imatrix { format: ImatrixFormat::Gguf, datasets, chunk_count, chunk_size, entries })
}

fn read_f32s(data: &[u8], n: usize) -> Vec<f32> {
    data.chunks_exact(4).take(n).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// A bounds-checked little-endian reader for the legacy format.
struct Legacy<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Legacy<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(bad(format!(
                "legacy imatrix truncated: {what} at byte {} needs {n} bytes, {left} left",
                self.pos
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn i32(&mut self, what: &str) -> Result<i32, FormatError> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn string(&mut self, what: &str, max: u64) -> Result<String, FormatError> {
        let len = self.i32(what)?;
        if len < 0 || len as u64 > max {
            return Err(bad(format!("{what}: length {len} outside 0..={max}")));
        }
        let at = self.pos;
        let b = self.take(len as usize, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(format!("{what} at byte {at} is not valid UTF-8")))
    }
}

fn parse_legacy(bytes: &[u8], limits: &ImatrixLimits) -> Result<Imatrix, FormatError> {
    let mut r = Legacy { bytes, pos: 0 };
    let n_entries = r.i32("entry count")?;
    if n_entries < 1 {
        return Err(bad(format!("legacy imatrix: entry count {n_entries} (need at least 1)")));
    }
    if n_entries as u64 > limits.max_entries {
        return Err(FormatError::TooMany {
            what: "imatrix entries".into(),
            count: n_entries as u64,
            limit: limits.max_entries,
        });
    }
    // Each entry takes at least 12 bytes plus one value: a count beyond that is a lie.
    if (n_entries as u64) * 16 > r.left() as u64 {
        return Err(bad(format!("legacy imatrix: {n_entries} entries cannot fit in {} bytes", bytes.len())));
    }
    let mut entries = BTreeMap::new();
    for i in 0..n_entries {
        let name = r.string("entry name", limits.max_name_len)?;
        if name.is_empty() {
            return Err(bad(format!("legacy imatrix: entry {i} has an empty name")));
        }
        let ncall = r.i32("ncall")?;
        if ncall < 0 {
            return Err(bad(format!("legacy imatrix: `{name}` has ncall {ncall}")));
        }
        let nval = r.i32("value count")?;
        if nval < 1 || nval as u64 > limits.max_values {
            return Err(bad(format!("legacy imatrix: `{name}` has {nval} values (1..={})", limits.max_values)));
        }
        let data = r.take(nval as usize * 4, "values")?;
        let sums = read_f32s(data, nval as usize);
        if let Some((j, v)) = sums.iter().enumerate().find(|(_, v)| !v.is_finite() || **v < 0.0) {
            return Err(bad(format!("legacy imatrix: `{name}`[{j}] = {v}: values must be finite and non-negative")));
        }
        let entry = ImatrixEntry { columns: nval as usize, experts: 1, sums, counts: vec![i64::from(ncall)] };
        if entries.insert(name.clone(), entry).is_some() {
            return Err(FormatError::Duplicate { what: "imatrix entry", name });
        }
    }
    // The trailer (chunk count, dataset name) is optional, but if present it must be whole.
    let (mut chunk_count, mut datasets) = (0u32, Vec::new());
    if r.left() > 0 {
        let c = r.i32("chunk count")?;
        chunk_count = u32::try_from(c).map_err(|_| bad(format!("legacy imatrix: chunk count {c}")))?;
        if r.left() > 0 {
            let d = r.string("dataset name", limits.max_name_len)?;
            if !d.is_empty() {
                datasets.push(d);
            }
        }
        if r.left() > 0 {
            return Err(bad(format!("legacy imatrix: {} unexpected trailing bytes", r.left())));
        }
    }
    Ok(Imatrix { format: ImatrixFormat::Legacy, datasets, chunk_count, chunk_size: 0, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(entries: &[(&str, i32, &[f32])], trailer: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((entries.len() as i32).to_le_bytes());
        for (name, ncall, vals) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(ncall.to_le_bytes());
            b.extend((vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend(v.to_le_bytes());
            }
        }
        if let Some((c, d)) = trailer {
            b.extend(c.to_le_bytes());
            b.extend((d.len() as i32).to_le_bytes());
            b.extend(d.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_weights_divide_by_ncall() {
        let b = legacy(&[("blk.0.ffn_up.weight", 4, &[8.0, 2.0, 0.0])], Some((7, "wiki.txt")));
        let m = Imatrix::parse(&b).unwrap();
        assert_eq!(m.format, ImatrixFormat::Legacy);
        assert_eq!(m.chunk_count, 7);
        assert_eq!(m.datasets, vec!["wiki.txt".to_string()]);
        assert_eq!(m.weights("blk.0.ffn_up.weight").unwrap(), vec![2.0, 0.5, 0.0]);
        assert_eq!(m.weights("missing"), None);
        // ncall 0: the stored values as they are.
        let m = Imatrix::parse(&legacy(&[("a", 0, &[3.0])], None)).unwrap();
        assert_eq!(m.weights("a").unwrap(), vec![3.0]);
    }

    #[test]
    fn legacy_every_truncation_is_an_error() {
        let b = legacy(&[("a", 1, &[1.0, 2.0]), ("bb", 2, &[3.0])], Some((1, "d")));
        assert!(Imatrix::parse(&b).is_ok());
        // Cutting inside the entries fails; cutting exactly before the trailer or after the
        // chunk count is a valid shorter file.
        let trailer_at = b.len() - 4 - 4 - 1;
        for cut in 0..b.len() {
            let r = Imatrix::parse(&b[..cut]);
            if cut == trailer_at || cut == trailer_at + 4 {
                assert!(r.is_ok(), "cut {cut}: {r:?}");
            } else {
                assert!(matches!(r, Err(FormatError::BadImatrix(_))), "cut {cut}: {r:?}");
            }
        }
    }

    #[test]
    fn legacy_hostile_fields() {
        let ok = legacy(&[("a", 1, &[1.0])], None);
        let mut neg_len = ok.clone();
        neg_len[4..8].copy_from_slice(&(-5i32).to_le_bytes());
        assert!(matches!(Imatrix::parse(&neg_len), Err(FormatError::BadImatrix(_))));
        let mut huge_count = ok.clone();
        huge_count[0..4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(Imatrix::parse(&huge_count).is_err());
        let nan = legacy(&[("a", 1, &[f32::NAN])], None);
        assert!(matches!(Imatrix::parse(&nan), Err(FormatError::BadImatrix(_))));
        let negative = legacy(&[("a", 1, &[-1.0])], None);
        assert!(matches!(Imatrix::parse(&negative), Err(FormatError::BadImatrix(_))));
        let dup = legacy(&[("a", 1, &[1.0]), ("a", 1, &[2.0])], None);
        assert!(matches!(Imatrix::parse(&dup), Err(FormatError::Duplicate { .. })));
        let mut trailing = legacy(&[("a", 1, &[1.0])], Some((1, "d")));
        trailing.push(0);
        assert!(matches!(Imatrix::parse(&trailing), Err(FormatError::BadImatrix(_))));
        assert!(Imatrix::parse(&[]).is_err());
    }

    /// A GGUF file laid out by our writer from `(info, f32 data)` pairs.
    fn gguf_raw(meta: Vec<(String, MetaValue)>, tensors: Vec<(crate::gguf::GgufTensorInfo, Vec<f32>)>) -> Vec<u8> {
        let infos: Vec<_> = tensors.iter().map(|(i, _)| i.clone()).collect();
        let l = crate::gguf::layout(&meta, &infos, 32).unwrap();
        let mut out = vec![0u8; l.file_size as usize];
        out[..l.header.len()].copy_from_slice(&l.header);
        for (off, (_, d)) in l.tensor_offsets.iter().zip(&tensors) {
            for (i, v) in d.iter().enumerate() {
                let o = *off as usize + 4 * i;
                out[o..o + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// `(name, columns, experts, sums, counts)` of one test entry.
    type Entry<'a> = (&'a str, u64, u64, Vec<f32>, Vec<f32>);

    /// A GGUF imatrix from its entries.
    fn gguf(meta: Vec<(String, MetaValue)>, entries: &[Entry<'_>]) -> Vec<u8> {
        use crate::gguf::GgufTensorInfo;
        let shape = |a: u64, b: u64| if b == 1 { vec![a] } else { vec![a, b] };
        let mut t = Vec::new();
        for (name, cols, experts, sums, counts) in entries {
            t.push((
                GgufTensorInfo { name: format!("{name}.counts"), ne: shape(1, *experts), ggml_type: 0 },
                counts.clone(),
            ));
            t.push((
                GgufTensorInfo { name: format!("{name}.in_sum2"), ne: shape(*cols, *experts), ggml_type: 0 },
                sums.clone(),
            ));
        }
        gguf_raw(meta, t)
    }

    fn meta() -> Vec<(String, MetaValue)> {
        vec![
            ("general.type".into(), MetaValue::String("imatrix".into())),
            (KEY_DATASETS.into(), MetaValue::Array(vec![MetaValue::String("calib.txt".into())])),
            (KEY_CHUNK_COUNT.into(), MetaValue::U32(3)),
            (KEY_CHUNK_SIZE.into(), MetaValue::U32(512)),
        ]
    }

    #[test]
    fn gguf_weights_are_per_expert_means() {
        let b = gguf(
            meta(),
            &[
                ("blk.0.attn_q.weight", 2, 1, vec![6.0, 3.0], vec![3.0]),
                ("blk.0.ffn_up_exps.weight", 2, 3, vec![4.0, 8.0, 9.0, 9.0, 5.0, 5.0], vec![2.0, 0.0, 2.5]),
            ],
        );
        let m = Imatrix::parse(&b).unwrap();
        assert_eq!((m.format, m.chunk_count, m.chunk_size), (ImatrixFormat::Gguf, 3, 512));
        assert_eq!(m.datasets, vec!["calib.txt".to_string()]);
        assert_eq!(m.weights("blk.0.attn_q.weight").unwrap(), vec![2.0, 1.0]);
        // Expert 1 has count 0: weight 1 everywhere; 2.5 rounds (lround) to 3.
        assert_eq!(m.weights("blk.0.ffn_up_exps.weight").unwrap(), vec![2.0, 4.0, 1.0, 1.0, 5.0 / 3.0, 5.0 / 3.0]);
    }

    #[test]
    fn gguf_defects_are_typed_errors() {
        let ok = gguf(meta(), &[("t", 2, 1, vec![1.0, 1.0], vec![1.0])]);
        assert!(Imatrix::parse(&ok).is_ok());
        for cut in [10, 40, ok.len() / 2, ok.len() - 30] {
            assert!(Imatrix::parse(&ok[..cut]).is_err(), "cut {cut}");
        }
        let mut no_type = meta();
        no_type.remove(0);
        assert!(matches!(
            Imatrix::parse(&gguf(no_type, &[("t", 2, 1, vec![1.0, 1.0], vec![1.0])])),
            Err(FormatError::BadImatrix(_))
        ));
        let mut wrong_type = meta();
        wrong_type[0].1 = MetaValue::String("model".into());
        assert!(Imatrix::parse(&gguf(wrong_type, &[("t", 2, 1, vec![1.0, 1.0], vec![1.0])])).is_err());
        for drop in 1..4 {
            let mut m = meta();
            m.remove(drop);
            assert!(Imatrix::parse(&gguf(m, &[("t", 2, 1, vec![1.0, 1.0], vec![1.0])])).is_err(), "drop {drop}");
        }
        let mut bad_count_type = meta();
        bad_count_type[2].1 = MetaValue::I32(3);
        assert!(Imatrix::parse(&gguf(bad_count_type, &[("t", 2, 1, vec![1.0, 1.0], vec![1.0])])).is_err());
        assert!(Imatrix::parse(&gguf(meta(), &[("t", 2, 1, vec![1.0, f32::INFINITY], vec![1.0])])).is_err());
        assert!(Imatrix::parse(&gguf(meta(), &[("t", 2, 1, vec![1.0, -1.0], vec![1.0])])).is_err());
        assert!(Imatrix::parse(&gguf(meta(), &[("t", 2, 1, vec![1.0, 1.0], vec![f32::NAN])])).is_err());
        assert!(Imatrix::parse(&gguf(meta(), &[])).is_err());
        use crate::gguf::GgufTensorInfo;
        let info = |name: &str, ne: Vec<u64>, ggml_type: u32| GgufTensorInfo { name: name.into(), ne, ggml_type };
        // counts for 2 experts, sums for 1.
        let mismatch =
            vec![(info("t.in_sum2", vec![2], 0), vec![1.0; 2]), (info("t.counts", vec![1, 2], 0), vec![1.0; 2])];
        assert!(matches!(Imatrix::parse(&gguf_raw(meta(), mismatch)), Err(FormatError::BadImatrix(_))));
        let unpaired = vec![(info("t.in_sum2", vec![2], 0), vec![1.0; 2])];
        assert!(matches!(Imatrix::parse(&gguf_raw(meta(), unpaired)), Err(FormatError::BadImatrix(_))));
        let stray = vec![
            (info("t.in_sum2", vec![2], 0), vec![1.0; 2]),
            (info("t.counts", vec![1], 0), vec![1.0]),
            (info("t.weight", vec![2], 0), vec![1.0; 2]),
        ];
        assert!(matches!(Imatrix::parse(&gguf_raw(meta(), stray)), Err(FormatError::BadImatrix(_))));
        // F16 sums (type 1).
        let f16 = vec![(info("t.in_sum2", vec![2], 1), vec![0.0]), (info("t.counts", vec![1], 0), vec![1.0])];
        assert!(matches!(Imatrix::parse(&gguf_raw(meta(), f16)), Err(FormatError::BadImatrix(_))));
    }

    /// A matrix written by the `gguf` Python package (the fuzz seed `fuzz/corpus/imatrix/small.gguf`:
    /// `GGUFWriter`, numpy arrays; an independent encoder of the format), and the legacy seed.
    #[test]
    fn reads_the_python_gguf_writers_matrix() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/imatrix");
        let m = Imatrix::parse(&std::fs::read(root.join("small.gguf")).unwrap()).unwrap();
        assert_eq!((m.format, m.chunk_count, m.chunk_size), (ImatrixFormat::Gguf, 2, 64));
        assert_eq!(m.datasets, vec!["calib.txt".to_string()]);
        let q: Vec<f32> = (0..32).map(|i| i as f32 / 128.0).collect();
        assert_eq!(m.weights("blk.0.attn_q.weight").unwrap(), q);
        let e = &m.entries["blk.0.ffn_up_exps.weight"];
        assert_eq!((e.columns, e.experts, e.counts.clone()), (32, 2, vec![3, 0]));
        let w = m.weights("blk.0.ffn_up_exps.weight").unwrap();
        assert!(w[..32].iter().all(|&v| v == 1.0 / 3.0) && w[32..].iter().all(|&v| v == 1.0));
        let l = Imatrix::parse(&std::fs::read(root.join("small.dat")).unwrap()).unwrap();
        assert_eq!((l.format, l.chunk_count, l.datasets.clone()), (ImatrixFormat::Legacy, 2, vec!["d.t".to_string()]));
        assert_eq!(l.weights("a.bcd").unwrap(), vec![0.5, 1.0, 1.5, 2.0]);
    }
}
