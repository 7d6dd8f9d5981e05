//! `modelpack.json`: what a package is, how it was made and from what. Signed like any other
//! file, so it is provenance a verifier can trust.
//!
//! Deterministic by construction: struct field order is the JSON key order, no maps with
//! hash order, no timestamps unless the caller sets `source_date_epoch` (from
//! `--source-date-epoch` / `SOURCE_DATE_EPOCH`). Written as pretty JSON plus a newline.

use crate::bundle::check_json_depth;
use crate::SignError;
use serde::{Deserialize, Serialize};

/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// File name of the manifest inside a package.
pub const MANIFEST_FILE: &str = "modelpack.json";
/// Largest manifest accepted by [`PackageManifest::from_json`].
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;
/// Deepest JSON nesting accepted by [`PackageManifest::from_json`] (`options` is free-form).
pub const MAX_MANIFEST_DEPTH: usize = 32;

/// The whole manifest. The quantize pipeline fills it; `inspect` and tests read it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageManifest {
    /// [`MANIFEST_FORMAT_VERSION`] at write time; readers refuse versions they do not know.
    pub format_version: u32,
    /// The tool that wrote the package.
    pub tool: ToolInfo,
    /// Target runtime (`cpu`, `cuda`).
    pub target: String,
    /// Quantization scheme (`int8`, `int4`).
    pub scheme: String,
    /// Method asked for (`rtn`, `mse`); what each tensor really got is [`TensorRecord::method`].
    pub method: String,
    /// Every option that influenced the bytes (group size, keep patterns, ...).
    pub options: serde_json::Value,
    /// The checkpoint the package was made from.
    pub source: SourceInfo,
    /// Per-tensor plan and error metrics, in output order.
    pub tensors: Vec<TensorRecord>,
    /// Build time as Unix seconds, only when the caller asks for one (reproducible builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<u64>,
}

/// Name and version of the writing tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// `modelpack`.
    pub name: String,
    /// Crate version.
    pub version: String,
}

/// Provenance: every input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Input files in a stable order (sorted by name is what the pipeline should use).
    pub files: Vec<SourceFile>,
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Path relative to the checkpoint directory, `/`-separated.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256; absent when the package was made with `--no-source-digests`
    /// (hashing the input costs as much CPU as quantizing it on a small machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// What happened to one tensor. Metrics are `None` where they do not apply (kept tensors) or
/// are not finite (JSON has no NaN/inf: an exact copy's infinite SQNR is written as absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRecord {
    /// Output tensor name.
    pub name: String,
    /// Logical shape.
    pub shape: Vec<u64>,
    /// Source dtype (`BF16`, `F16`, `F32`, ...).
    pub dtype_in: String,
    /// Output type (`Q4_0`, `Q8_0`, `pack-quantized int4 g128`, `BF16` kept, ...).
    pub type_out: String,
    /// How this tensor's codes were chosen (`rtn`, `mse`), which can differ from the package's
    /// method: types without a search (the K-quants) get llama.cpp's own rounding even when
    /// mse was asked for. Absent for tensors stored unquantized (and in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Bytes written for this tensor.
    pub bytes_out: u64,
    /// Signal-to-quantization-noise ratio in dB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqnr_db: Option<f64>,
    /// RMS error relative to the RMS of the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_rmse: Option<f64>,
    /// Largest absolute error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_err: Option<f64>,
    /// Why the plan chose this (e.g. "kept: 1-D", "per-channel: in_features % 128 != 0").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A finite metric or `None`, for filling [`TensorRecord`] from raw floats.
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl PackageManifest {
    /// Pretty JSON with a trailing newline: the exact bytes of `modelpack.json`.
    pub fn to_json(&self) -> String {
        // Only plain data; serde_json maps non-finite floats to null rather than failing.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parse a manifest with limits on size and nesting, refusing unknown format versions.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SignError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(SignError::Manifest(format!(
                "{} bytes is over the limit of {MAX_MANIFEST_BYTES}",
                bytes.len()
            )));
        }
        check_json_depth(bytes, MAX_MANIFEST_DEPTH, MANIFEST_FILE)?;
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|source| SignError::Json { what: MANIFEST_FILE.into(), source })?;
        match v.get("format_version").and_then(|x| x.as_u64()) {
            Some(n) if n == u64::from(MANIFEST_FORMAT_VERSION) => {}
            Some(n) => {
                return Err(SignError::Manifest(format!(
                    "format_version {n} not supported (this build reads {MANIFEST_FORMAT_VERSION})"
                )))
            }
            None => return Err(SignError::Manifest("no format_version".into())),
        }
        serde_json::from_value(v).map_err(|source| SignError::Json { what: MANIFEST_FILE.into(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PackageManifest {
        PackageManifest {
            format_version: 1,
            tool: ToolInfo { name: "modelpack".into(), version: "0.1.0".into() },
            target: "cpu".into(),
            scheme: "int4".into(),
            method: "mse".into(),
            options: serde_json::json!({"group_size": 32, "keep": []}),
            source: SourceInfo {
                files: vec![SourceFile { name: "model.safetensors".into(), size: 3, sha256: Some("ab".repeat(32)) }],
            },
            tensors: vec![TensorRecord {
                name: "blk.0.attn_q.weight".into(),
                shape: vec![4, 32],
                dtype_in: "BF16".into(),
                type_out: "Q4_0".into(),
                method: Some("rtn".into()),
                bytes_out: 72,
                sqnr_db: finite(f64::INFINITY),
                rel_rmse: Some(0.5),
                max_abs_err: None,
                note: None,
            }],
            source_date_epoch: None,
        }
    }

    #[test]
    fn exact_bytes_and_round_trip() {
        let m = sample();
        let text = m.to_json();
        let expected = r#"{
  "format_version": 1,
  "tool": {
    "name": "modelpack",
    "version": "0.1.0"
  },
  "target": "cpu",
  "scheme": "int4",
  "method": "mse",
  "options": {
    "group_size": 32,
    "keep": []
  },
  "source": {
    "files": [
      {
        "name": "model.safetensors",
        "size": 3,
        "sha256": "abababababababababababababababababababababababababababababababab"
      }
    ]
  },
  "tensors": [
    {
      "name": "blk.0.attn_q.weight",
      "shape": [
        4,
        32
      ],
      "dtype_in": "BF16",
      "type_out": "Q4_0",
      "method": "rtn",
      "bytes_out": 72,
      "rel_rmse": 0.5
    }
  ]
}
"#;
        assert_eq!(text, expected);
        assert_eq!(PackageManifest::from_json(text.as_bytes()).unwrap(), m);
        let mut with_time = m.clone();
        with_time.source_date_epoch = Some(1_700_000_000);
        assert!(with_time.to_json().ends_with("\"source_date_epoch\": 1700000000\n}\n"));
    }

    /// Regression (fuzz target `manifest`): with serde_json's default approximate float parser a
    /// parsed manifest re-serialised with a different last digit, so parse + write was not
    /// idempotent. Expected digits: Python's `repr(float("0.009085995870561838"))`.
    #[test]
    fn floats_survive_parse_and_write_unchanged() {
        let text = sample().to_json().replace("\"rel_rmse\": 0.5", "\"rel_rmse\": 0.009085995870561838");
        let once = PackageManifest::from_json(text.as_bytes()).unwrap().to_json();
        assert!(once.contains("\"rel_rmse\": 0.009085995870561837\n"), "{once}");
        let twice = PackageManifest::from_json(once.as_bytes()).unwrap().to_json();
        assert_eq!(once, twice);
    }

    #[test]
    fn limits_and_versions() {
        let deep = format!("{{\"format_version\":1,\"options\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(PackageManifest::from_json(deep.as_bytes()), Err(SignError::JsonTooDeep { .. })));
        let v2 = sample().to_json().replace("\"format_version\": 1", "\"format_version\": 2");
        let e = PackageManifest::from_json(v2.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("format_version 2"), "{e}");
        assert!(PackageManifest::from_json(b"{\"format_version\":1}").is_err());
    }
}
