//! `verify --rebuild SOURCE`: reproduce a package from its recorded recipe and compare bytes.
//!
//! A signature proves who published the bytes, not that they are what the recipe makes from
//! the source: a publisher (or a thief of its key) can alter weights and re-sign. Because
//! `quantize` is deterministic (same input and options, same bytes on any machine and thread
//! count), a verifier holding the source checkpoint can re-run the recipe recorded in
//! `modelpack.json` and demand byte identity.
//!
//! The recipe is the manifest's `target`, `scheme`, `method`, `options`, `tool.version`,
//! `source_date_epoch`, whether source digests and tensor metrics were recorded, and the
//! source files (names, sizes, SHA-256). Every recorded option must map back to a
//! [`QuantizeOptions`] whose own record is the same JSON; anything else (an option of another
//! version, an importance matrix, another tool version) is [`RebuildError::Recipe`].

use crate::plan::{GgufMix, Method, QuantizeOptions, Scheme, Target};
use crate::quant::ct::ScaleDtype;
use crate::quant::gguf::GgmlType;
use crate::run::{quantize, QuantizeJob, RunError};
use crate::sign::manifest::{PackageManifest, MANIFEST_FILE};
use crate::sign::{hash_file, hash_package, FileDigest, SignError, SIGNATURE_FILE};
use regex::Regex;
use std::path::{Path, PathBuf};

/// Why a rebuild could not be attempted or run. A rebuild that ran and differs is not an
/// error: see [`RebuildReport`].
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The recorded recipe cannot be replayed by this version (exit 2).
    #[error("cannot replay the recipe: {0}")]
    Recipe(String),
    /// SOURCE is not the recorded input (exit 2).
    #[error("{source_dir}: not the recorded source: {detail}")]
    SourceMismatch {
        /// The source given.
        source_dir: PathBuf,
        /// Which files differ, are missing or have another size.
        detail: String,
    },
    /// The package's manifest cannot be read.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The quantize run failed.
    #[error("rebuild failed: {0}")]
    Run(#[from] RunError),
    /// Temporary directory trouble.
    #[error("rebuild: {0}")]
    Io(#[from] std::io::Error),
}

impl RebuildError {
    /// True when the package's recipe or the given source is at fault (exit 2), false for
    /// I/O and internal failures (exit 3).
    pub fn is_input(&self) -> bool {
        match self {
            RebuildError::Recipe(_) | RebuildError::SourceMismatch { .. } | RebuildError::Sign(_) => true,
            RebuildError::Run(r) => r.is_input(),
            RebuildError::Io(_) => false,
        }
    }
}

/// One package file compared with its rebuilt counterpart.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RebuiltFile {
    /// Path relative to the package.
    pub path: String,
    /// `same`, `differs`, `missing` (in the rebuild only) or `extra` (in the package only).
    pub status: &'static str,
    /// Hex SHA-256 in the package.
    pub package_sha256: Option<String>,
    /// Hex SHA-256 of the rebuild.
    pub rebuilt_sha256: Option<String>,
}

/// Outcome of a rebuild.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RebuildReport {
    /// Every file of either side except `model.sig`, sorted by path.
    pub files: Vec<RebuiltFile>,
    /// Source files whose recorded digest was checked before rebuilding (0 when the package
    /// was made with `--no-source-digests`: then only the rebuilt bytes vouch for the source).
    pub source_files_checked: usize,
}

impl RebuildReport {
    /// True when every file is byte-identical.
    pub fn identical(&self) -> bool {
        self.files.iter().all(|f| f.status == "same")
    }
}

fn recipe(msg: impl Into<String>) -> RebuildError {
    RebuildError::Recipe(msg.into())
}

fn ggml_type(name: &str) -> Result<GgmlType, RebuildError> {
    GgmlType::ALL
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name) && t.can_quantize())
        .ok_or_else(|| recipe(format!("GGUF type {name:?} is not one this version writes")))
}

fn re(s: &str) -> Result<Regex, RebuildError> {
    Regex::new(s).map_err(|e| recipe(format!("recorded regex {s:?}: {e}")))
}

/// The [`QuantizeOptions`] a manifest records, checked by re-recording them: the options must
/// give back exactly the recorded `options` JSON, or this version cannot replay them.
pub fn options_from_manifest(m: &PackageManifest) -> Result<QuantizeOptions, RebuildError> {
    let version = env!("CARGO_PKG_VERSION");
    if m.tool.name != "modelpack" || m.tool.version != version {
        return Err(recipe(format!(
            "made by {} {}, this is modelpack {version}; rebuild with that version",
            m.tool.name, m.tool.version
        )));
    }
    let target = match m.target.as_str() {
        "cpu" => Target::Cpu,
        "cuda" => Target::Cuda,
        t => return Err(recipe(format!("target {t:?}"))),
    };
    let scheme = match m.scheme.as_str() {
        "int8" => Scheme::Int8,
        "int4" => Scheme::Int4,
        s => return Err(recipe(format!("scheme {s:?}"))),
    };
    let method = match m.method.as_str() {
        "rtn" => Method::Rtn,
        "mse" => Method::Mse,
        "mse-fast" => Method::MseFast,
        s => return Err(recipe(format!("method {s:?}"))),
    };
    let o = m.options.as_object().ok_or_else(|| recipe("options is not an object"))?;
    const KNOWN: [&str; 9] = [
        "gguf_type",
        "tensor_types",
        "keep",
        "group_size",
        "asymmetric",
        "scale_dtype",
        "max_shard_size",
        "imatrix",
        "bpw_millibits",
    ];
    if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(recipe(format!("option {k:?} is not one this version has")));
    }
    if o.get("imatrix").is_some_and(|v| !v.is_null()) {
        return Err(recipe(
            "the package was made with --imatrix; rebuilding with an importance matrix is not supported",
        ));
    }
    let str_list = |key: &str| -> Result<Vec<String>, RebuildError> {
        match o.get(key) {
            None | Some(serde_json::Value::Null) => Ok(Vec::new()),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| recipe(format!("{key}: not a string"))))
                .collect(),
            Some(_) => Err(recipe(format!("{key}: not a list"))),
        }
    };
    let (gguf_type, gguf_mix) = match o.get("gguf_type").and_then(|v| v.as_str()) {
        None => (None, None),
        Some(s) if s.eq_ignore_ascii_case("q4_k_m") => (None, Some(GgufMix::Q4KM)),
        Some(s) => (Some(ggml_type(s)?), None),
    };
    let gguf_mix = match o.get("bpw_millibits") {
        None | Some(serde_json::Value::Null) => gguf_mix,
        Some(v) => {
            let millibits = v.as_u64().and_then(|b| u32::try_from(b).ok()).ok_or_else(|| recipe("bpw_millibits"))?;
            Some(GgufMix::Budget { millibits })
        }
    };
    let tensor_types = str_list("tensor_types")?
        .iter()
        .map(|s| {
            let (r, t) = s.rsplit_once('=').ok_or_else(|| recipe(format!("tensor_types entry {s:?}")))?;
            Ok((re(r)?, ggml_type(t)?))
        })
        .collect::<Result<Vec<_>, RebuildError>>()?;
    let keep = str_list("keep")?.iter().map(|s| re(s)).collect::<Result<Vec<_>, _>>()?;
    let num = |key: &str, default: u64| -> Result<u64, RebuildError> {
        match o.get(key) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| recipe(format!("{key}: not an unsigned integer"))),
        }
    };
    let scale_dtype = match o.get("scale_dtype").and_then(|v| v.as_str()) {
        None | Some("default") => None,
        Some("BF16") => Some(ScaleDtype::BF16),
        Some("F16") => Some(ScaleDtype::F16),
        Some("F32") => Some(ScaleDtype::F32),
        Some(s) => return Err(recipe(format!("scale_dtype {s:?}"))),
    };
    let opts = QuantizeOptions {
        target,
        scheme,
        method,
        gguf_type,
        gguf_mix,
        tensor_types,
        keep,
        group_size: usize::try_from(num("group_size", 128)?).map_err(|_| recipe("group_size too large"))?,
        asymmetric: o.get("asymmetric").and_then(|v| v.as_bool()).unwrap_or(false),
        scale_dtype,
        // Unrecorded (cpu): any value; the cpu target ignores it.
        max_shard_size: num("max_shard_size", u64::MAX)?,
        force_requantize: false,
        // The manifest holds metrics exactly when they were computed.
        metrics: m.tensors.iter().any(|t| t.sqnr_db.is_some() || t.rel_rmse.is_some()),
        imatrix: None,
        // The recorded package already passed the mostly-dense guard when it was made (or was
        // asked to be dense); the rebuild replays its bytes and is judged by them, not refused.
        allow_dense: true,
    };
    if opts.to_json() != m.options {
        return Err(recipe(format!(
            "recorded options {} re-record as {}: an option this version does not replay",
            m.options,
            opts.to_json()
        )));
    }
    Ok(opts)
}

/// Check `source` against the recorded source files (size and, when recorded, SHA-256).
/// Returns how many digests were checked.
fn check_source(source: &Path, m: &PackageManifest) -> Result<usize, RebuildError> {
    let base =
        if source.is_file() { source.parent().unwrap_or(Path::new(".")).to_path_buf() } else { source.to_path_buf() };
    let mut problems = Vec::new();
    let mut checked = 0;
    for f in &m.source.files {
        crate::sign::validate_rel_path(&f.name)?;
        let p = base.join(&f.name);
        match std::fs::metadata(&p) {
            Err(_) => problems.push(format!("{} is missing", f.name)),
            Ok(md) if md.len() != f.size => {
                problems.push(format!("{} is {} bytes, recorded {}", f.name, md.len(), f.size))
            }
            Ok(_) => {
                if let Some(want) = &f.sha256 {
                    let (d, _) = hash_file(&p)?;
                    checked += 1;
                    if !hex::encode(d).eq_ignore_ascii_case(want) {
                        problems.push(format!("{} has SHA-256 {}, recorded {want}", f.name, hex::encode(d)));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(RebuildError::SourceMismatch { source_dir: source.to_path_buf(), detail: problems.join("; ") })
    }
}

fn digests_without_sig(dir: &Path) -> Result<Vec<FileDigest>, RebuildError> {
    Ok(hash_package(dir)?.into_iter().filter(|d| d.path != SIGNATURE_FILE).collect())
}

/// Rebuild `package` from `source` into a temporary directory beside nothing of the user's
/// (removed afterwards) and compare every file but `model.sig`.
pub fn rebuild(package: &Path, source: &Path) -> Result<RebuildReport, RebuildError> {
    let text = std::fs::read(package.join(MANIFEST_FILE))
        .map_err(|e| SignError::Io { path: package.join(MANIFEST_FILE), source: e })?;
    let m = PackageManifest::from_json(&text)?;
    let options = options_from_manifest(&m)?;
    let source_files_checked = check_source(source, &m)?;
    let tmp = tempfile::Builder::new().prefix("modelpack-rebuild-").tempdir()?;
    // The package's own directory name: some writers record it (e.g. the GGUF name).
    let name = package
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_owned()))
        .unwrap_or_else(|| "package".into());
    let out = tmp.path().join(name);
    let job = QuantizeJob {
        input: source.to_path_buf(),
        output: out.clone(),
        options,
        force: false,
        sign_key: None,
        sign_certs: None,
        source_date_epoch: m.source_date_epoch,
        source_digests: m.source.files.iter().any(|f| f.sha256.is_some()),
        limits: crate::checkpoint::Limits::default(),
    };
    quantize(&job, &|_, _| {})?;
    let ours = digests_without_sig(package)?;
    let theirs = digests_without_sig(&out)?;
    let mut files = Vec::new();
    let rebuilt: std::collections::BTreeMap<&str, &FileDigest> = theirs.iter().map(|d| (d.path.as_str(), d)).collect();
    for d in &ours {
        let (status, r) = match rebuilt.get(d.path.as_str()) {
            Some(r) if r.sha256 == d.sha256 => ("same", Some(r)),
            Some(r) => ("differs", Some(r)),
            None => ("extra", None),
        };
        files.push(RebuiltFile {
            path: d.path.clone(),
            status,
            package_sha256: Some(hex::encode(d.sha256)),
            rebuilt_sha256: r.map(|r| hex::encode(r.sha256)),
        });
    }
    for r in &theirs {
        if !ours.iter().any(|d| d.path == r.path) {
            files.push(RebuiltFile {
                path: r.path.clone(),
                status: "missing",
                package_sha256: None,
                rebuilt_sha256: Some(hex::encode(r.sha256)),
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(RebuildReport { files, source_files_checked })
}
