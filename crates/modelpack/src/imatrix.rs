//! `--imatrix FILE`: a llama.cpp importance matrix as an input of a quantization job.
//!
//! The file is read once, hashed (its SHA-256 goes into the manifest, so a package says which
//! calibration statistics shaped its bytes) and parsed by [`crate::format::imatrix`]. Tensors
//! then look up their per-column weights by GGUF name, with `llama-quantize`'s rules:
//! - a tensor with no entry is quantized without weights (llama-quantize logs "did not find
//!   weights" and goes on; the manifest note says so per tensor);
//! - an entry whose length differs from the tensor's row length is an error, except for
//!   `token_embd.weight`, whose weights are then ignored (llama-quantize's exception: embedding
//!   lookups have no activations, old matrices carry a mismatched entry for it);
//! - Q8_0 and float types ignore the weights (llama.cpp's `quantize_q8_0` does).

use crate::format::gguf::MetaValue;
use crate::format::imatrix::{Imatrix, ImatrixFormat};
use crate::plan::Method;
use crate::quant::gguf::GgmlType;
use crate::quant::imatrix::{quantize_rows_weighted, uses_weights};
use crate::quant::metrics::ErrorStats;
use crate::quant::{QuantError, SrcDtype};
use sha2::Digest;
use std::path::Path;
use std::sync::Arc;

/// Largest importance matrix file read (a 1T-parameter MoE's matrix is a few GB).
pub const MAX_IMATRIX_BYTES: u64 = 8 << 30;

/// A parsed importance matrix with what the manifest records about its file.
#[derive(Debug)]
pub struct ImatrixInput {
    /// The file name (no directories: the manifest must not leak local paths).
    pub file_name: String,
    /// SHA-256 of the file bytes.
    pub sha256: [u8; 32],
    /// File size in bytes.
    pub size: u64,
    /// The parsed matrix.
    pub matrix: Imatrix,
}

/// Why `--imatrix` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    /// The file could not be read.
    #[error("--imatrix {path}: {source}")]
    Io {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_IMATRIX_BYTES`].
    #[error("--imatrix {path}: {size} bytes exceeds the limit of {MAX_IMATRIX_BYTES}")]
    TooLarge {
        /// The path given.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The bytes are not a valid importance matrix.
    #[error("--imatrix {path}: {source}")]
    Format {
        /// The path given.
        path: String,
        /// What is wrong.
        source: crate::format::FormatError,
    },
}

impl ImatrixInput {
    /// Read, hash and parse `path`.
    pub fn load(path: &Path) -> Result<ImatrixInput, ImatrixError> {
        let shown = path.display().to_string();
        let io = |source| ImatrixError::Io { path: shown.clone(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size > MAX_IMATRIX_BYTES {
            return Err(ImatrixError::TooLarge { path: shown, size });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_IMATRIX_BYTES + 1), &mut bytes).map_err(io)?;
        if bytes.len() as u64 > MAX_IMATRIX_BYTES {
            return Err(ImatrixError::TooLarge { path: shown, size: bytes.len() as u64 });
        }
        let sha256: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let matrix = Imatrix::parse(&bytes).map_err(|source| ImatrixError::Format { path: shown.clone(), source })?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(shown);
        Ok(ImatrixInput { file_name, sha256, size: bytes.len() as u64, matrix })
    }

    /// The manifest's `options.imatrix` object.
    pub fn to_json(&self) -> serde_json::Value {
        let m = &self.matrix;
        serde_json::json!({
            "file": self.file_name,
            "sha256": hex::encode(self.sha256),
            "size": self.size,
            "format": match m.format { ImatrixFormat::Gguf => "gguf", ImatrixFormat::Legacy => "dat" },
            "datasets": m.datasets,
            "chunk_count": m.chunk_count,
            "chunk_size": m.chunk_size,
            "entries": m.entries.len(),
        })
    }

    /// The weights for GGUF tensor `name` with rows of `row_len`, by llama-quantize's rules
    /// (module doc): `Ok(None)` when there is no usable entry, an error message on a length
    /// mismatch.
    pub fn weights_for(&self, name: &str, row_len: usize) -> Result<Option<Vec<f32>>, String> {
        let Some(w) = self.matrix.weights(name) else { return Ok(None) };
        if w.len() == row_len {
            return Ok(Some(w));
        }
        if name == "token_embd.weight" {
            return Ok(None);
        }
        Err(format!(
            "--imatrix: the entry for `{name}` has {} values but the tensor's rows have {row_len} columns \
             (a matrix computed for another model?)",
            w.len()
        ))
    }
}

/// One tensor's per-column weights, shared by its tasks.
pub type SharedWeights = Arc<Vec<f32>>;

/// The weights a cpu tensor of type `ty` and HF `shape` gets, and its report reason with a note
/// on the matrix: `(None, reason)` without `--imatrix`, for float types and for types that ignore
/// it; an input error on a length mismatch (see [`ImatrixInput::weights_for`]).
pub fn plan_weights(
    opts: &crate::plan::QuantizeOptions,
    name: &str,
    ty: GgmlType,
    shape: &[usize],
    reason: String,
) -> Result<(Option<SharedWeights>, String), crate::plan::PlanError> {
    let Some(m) = &opts.imatrix else { return Ok((None, reason)) };
    if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        return Ok((None, reason));
    }
    let row_len = *shape.last().unwrap_or(&1);
    let w = m.weights_for(name, row_len).map_err(crate::plan::PlanError::Input)?;
    Ok(match w {
        Some(w) if uses_weights(ty) => (Some(Arc::new(w)), format!("{reason}; imatrix-weighted")),
        Some(_) => (None, format!("{reason}; imatrix ignored ({ty} does not use one, as in llama.cpp)")),
        None if uses_weights(ty) => (None, format!("{reason}; no imatrix entry: unweighted (as llama-quantize)")),
        None => (None, reason),
    })
}

/// Quantize rows of a tensor that has importance weights, with `method`: `rtn` is llama.cpp's
/// weighted quantizer byte for byte ([`crate::quant::imatrix::quantize_rows_weighted`]); `mse`
/// is [`crate::quant::imatrix::quantize_rows_mse`]'s per-block choice, which never does worse
/// than that in the activation-weighted error.
#[allow(clippy::too_many_arguments)]
pub fn quantize_rows(
    method: Method,
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    weights: &[f32],
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    match method {
        Method::Rtn => quantize_rows_weighted(ty, src, input, row_len, weights, out, stats),
        // `mse-fast` with an imatrix is refused by `Options::validate`; kept total here.
        Method::Mse | Method::MseFast => {
            crate::quant::imatrix::quantize_rows_mse(ty, src, input, row_len, weights, out, stats)
        }
    }
}

impl ImatrixInput {
    /// The GGUF keys `llama-quantize --imatrix` adds to its output (`quantize.imatrix.*`), so
    /// llama.cpp tools report the matrix the same way for our files. The file is named without
    /// its directory; strings are cut to 127 bytes like llama-quantize's override buffers.
    pub fn gguf_metadata(&self) -> Vec<(String, MetaValue)> {
        let cut = |s: &str| {
            let mut end = s.len().min(127);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_string()
        };
        let mut v = vec![("quantize.imatrix.file".to_string(), MetaValue::String(cut(&self.file_name)))];
        if let Some(d) = self.matrix.datasets.first() {
            v.push(("quantize.imatrix.dataset".into(), MetaValue::String(cut(d))));
        }
        v.push(("quantize.imatrix.entries_count".into(), MetaValue::U32(self.matrix.entries.len() as u32)));
        if self.matrix.chunk_count > 0 {
            v.push(("quantize.imatrix.chunks_count".into(), MetaValue::U32(self.matrix.chunk_count)));
        }
        v
    }
}

/// The weights of a cuda (compressed-tensors) module whose HF weight is `hf` with rows of
/// `cols`, found under the tensor's GGUF name (llama.cpp names the matrix's entries that way),
/// and its note: `(None, note)` without `--imatrix` or without an entry (the module is then
/// quantized unweighted); an input error on a length mismatch.
pub fn plan_ct_weights(
    opts: &crate::plan::QuantizeOptions,
    hf: &str,
    cols: usize,
    note: String,
) -> Result<(Option<SharedWeights>, String), crate::plan::PlanError> {
    let Some(m) = &opts.imatrix else { return Ok((None, note)) };
    let Some(name) = crate::format::gguf::llama::tensor_name(hf) else {
        return Ok((None, format!("{note}; no imatrix name for this tensor: unweighted")));
    };
    Ok(match m.weights_for(&name, cols).map_err(crate::plan::PlanError::Input)? {
        Some(w) => (Some(Arc::new(w)), format!("{note}; imatrix-weighted ({name})")),
        None => (None, format!("{note}; no imatrix entry ({name}): unweighted")),
    })
}
