//! The CNCF ModelPack artifact of a package: one raw layer per file, a model config filled from
//! `modelpack.json`, and the exact manifest bytes (compact JSON, fixed key order, no wall-clock
//! fields unless `SOURCE_DATE_EPOCH`), so the same package always has the same manifest digest.

use crate::error::{OciError, Result};
use base64::Engine as _;
use modelpack_sign::manifest::{PackageManifest, MANIFEST_FILE};
use modelpack_sign::{cmp_paths, is_default_ignored, validate_rel_path, SIGNATURE_FILE};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// OCI image manifest media type (ModelPack requires it).
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type (`index.json`).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// ModelPack's artifactType.
pub const ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
/// ModelPack's config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.model.config.v1+json";
/// Weight files (`*.gguf`, `*.safetensors`).
pub const WEIGHT_RAW: &str = "application/vnd.cncf.model.weight.v1.raw";
/// Files that configure the weights (config, tokenizer, index, `modelpack.json`).
pub const WEIGHT_CONFIG_RAW: &str = "application/vnd.cncf.model.weight.config.v1.raw";
/// Documentation; also `model.sig`, for which ModelPack has no kind of its own.
pub const DOC_RAW: &str = "application/vnd.cncf.model.doc.v1.raw";
/// Layer annotation naming the file's path in the package.
pub const FILEPATH_ANNOTATION: &str = "org.cncf.model.filepath";

/// One package file as a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Path relative to the package root, `/`-separated.
    pub path: String,
    /// One of [`WEIGHT_RAW`], [`WEIGHT_CONFIG_RAW`], [`DOC_RAW`].
    pub media_type: &'static str,
    /// SHA-256 of the file: the digest the signature already vouches for.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

impl Layer {
    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.sha256))
    }
}

/// A package ready to be written or pushed.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Package directory the layers are read from.
    pub root: PathBuf,
    /// Layers in path order.
    pub layers: Vec<Layer>,
    /// Exact config blob bytes.
    pub config: Vec<u8>,
    /// Exact manifest bytes.
    pub manifest: Vec<u8>,
}

/// `sha256:<hex>` of bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Artifact {
    /// The manifest digest: what a registry returns and what `@sha256:` references name.
    pub fn manifest_digest(&self) -> String {
        digest_of(&self.manifest)
    }
    /// The config blob digest.
    pub fn config_digest(&self) -> String {
        digest_of(&self.config)
    }
}

/// Which ModelPack kind a package file is.
pub fn media_type_for(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    if name.ends_with(".gguf") || name.ends_with(".safetensors") || name.ends_with(".bin") {
        WEIGHT_RAW
    } else if name == SIGNATURE_FILE
        || name.ends_with(".md")
        || name.ends_with(".txt")
        || name.starts_with("readme")
        || name.starts_with("license")
        || name.starts_with("notice")
    {
        DOC_RAW
    } else {
        WEIGHT_CONFIG_RAW
    }
}

/// Every regular file of the package except the signing ignore paths (`.git`, ...), sorted as
/// the signature sorts them. Symbolic links and special files are refused.
fn list_files(root: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| OciError::io(format!("listing {}", dir.display()), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| OciError::io(format!("listing {}", dir.display()), e))?;
            let name = entry.file_name().into_string().map_err(|n| OciError::Package {
                path: root.to_path_buf(),
                reason: format!("file name {n:?} is not UTF-8"),
            })?;
            let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if is_default_ignored(&rel) && rel != SIGNATURE_FILE {
                continue;
            }
            let ft = entry.file_type().map_err(|e| OciError::io(format!("stat {rel}"), e))?;
            if ft.is_dir() {
                stack.push((entry.path(), rel));
            } else if ft.is_file() {
                validate_rel_path(&rel)?;
                let len = entry.metadata().map_err(|e| OciError::io(format!("stat {rel}"), e))?.len();
                out.push((rel, len));
            } else {
                return Err(OciError::Package {
                    path: root.to_path_buf(),
                    reason: format!("{rel} is a symbolic link or special file"),
                });
            }
        }
    }
    out.sort_by(|a, b| cmp_paths(&a.0, &b.0));
    Ok(out)
}

/// The file digests the signature's in-toto statement lists (`model.sig` is an OMS bundle:
/// DSSE envelope, base64 payload, `predicate.resources[]`). Read, not verified: `verify`
/// checks the signature; here the digests only name blobs, and every consumer re-checks them.
fn signed_digests(root: &Path, sig: &[u8]) -> Result<Vec<(String, [u8; 32])>> {
    let bad = |r: String| OciError::Package { path: root.to_path_buf(), reason: format!("{SIGNATURE_FILE}: {r}") };
    modelpack_sign::check_json_depth(sig, modelpack_sign::MAX_JSON_DEPTH, SIGNATURE_FILE)?;
    let v: Value = serde_json::from_slice(sig).map_err(|e| bad(e.to_string()))?;
    let payload = v
        .pointer("/dsseEnvelope/payload")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no dsseEnvelope.payload".into()))?;
    let payload = base64::engine::general_purpose::STANDARD.decode(payload).map_err(|e| bad(e.to_string()))?;
    let st: Value = serde_json::from_slice(&payload).map_err(|e| bad(e.to_string()))?;
    let res = st
        .pointer("/predicate/resources")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("statement has no predicate.resources".into()))?;
    let mut out = Vec::with_capacity(res.len());
    for r in res {
        let name = r.get("name").and_then(Value::as_str).ok_or_else(|| bad("resource without name".into()))?;
        if r.get("algorithm").and_then(Value::as_str) != Some("sha256") {
            return Err(bad(format!("{name}: only sha256 resources can name OCI blobs")));
        }
        let hexd = r.get("digest").and_then(Value::as_str).unwrap_or_default();
        let mut d = [0u8; 32];
        hex::decode_to_slice(hexd, &mut d).map_err(|_| bad(format!("{name}: bad digest")))?;
        out.push((name.to_string(), d));
    }
    Ok(out)
}

/// Parameter count as ModelPack writes `paramSize` (`"1.2B"`, `"35M"`, `"800K"`).
fn param_size(n: u64) -> String {
    let f = n as f64;
    if n >= 1_000_000_000 {
        format!("{:.1}B", f / 1e9)
    } else if n >= 1_000_000 {
        format!("{}M", (f / 1e6).round() as u64)
    } else {
        format!("{}K", (f / 1e3).round() as u64)
    }
}

/// Options of [`build`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `descriptor.name` in the config; the package directory's name when `None`.
    pub name: Option<String>,
    /// Unix seconds for `createdAt` / `org.opencontainers.image.created`; omitted when `None`.
    pub source_date_epoch: Option<u64>,
}

/// RFC 3339 UTC time of Unix seconds (civil-from-days, no time-zone database needed).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Build the artifact of the package at `root`.
///
/// Layer digests come from `model.sig` (the files were hashed when the package was signed);
/// only `model.sig` itself is hashed here. A file the signature does not list, or a listed
/// file that is missing, is an error: publish what was signed, or re-sign first. An unsigned
/// package is hashed in full (in parallel).
pub fn build(root: &Path, opts: &BuildOptions) -> Result<Artifact> {
    let pkg_err = |reason: String| OciError::Package { path: root.to_path_buf(), reason };
    let files = list_files(root)?;
    let manifest_path = root.join(MANIFEST_FILE);
    let mbytes =
        std::fs::read(&manifest_path).map_err(|e| OciError::io(format!("reading {}", manifest_path.display()), e))?;
    let pm = PackageManifest::from_json(&mbytes)?;

    let sig_path = root.join(SIGNATURE_FILE);
    let digests: Vec<(String, [u8; 32])> = if sig_path.is_file() {
        let sig = std::fs::read(&sig_path).map_err(|e| OciError::io(format!("reading {}", sig_path.display()), e))?;
        let mut d = signed_digests(root, &sig)?;
        d.push((SIGNATURE_FILE.to_string(), Sha256::digest(&sig).into()));
        d
    } else {
        modelpack_sign::hash_package(root)?.into_iter().map(|f| (f.path, f.sha256)).collect()
    };
    let mut layers = Vec::with_capacity(files.len());
    for (path, size) in &files {
        let Some((_, sha)) = digests.iter().find(|(p, _)| p == path) else {
            return Err(pkg_err(format!(
                "{path} is not in {SIGNATURE_FILE}: sign the package again before publishing"
            )));
        };
        layers.push(Layer { path: path.clone(), media_type: media_type_for(path), sha256: *sha, size: *size });
    }
    if let Some((p, _)) = digests.iter().find(|(p, _)| !files.iter().any(|(f, _)| f == p)) {
        return Err(pkg_err(format!("{p} is signed but missing")));
    }

    let name = match &opts.name {
        Some(n) => n.clone(),
        None => root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into()),
    };
    let sde = opts.source_date_epoch.or(pm.source_date_epoch);
    let config = config_json(root, &pm, &name, sde, &layers);
    let manifest = manifest_json(&config, &layers, sde);
    Ok(Artifact { root: root.to_path_buf(), layers, config, manifest })
}

fn config_json(root: &Path, pm: &PackageManifest, name: &str, sde: Option<u64>, layers: &[Layer]) -> Vec<u8> {
    let mut descriptor = Map::new();
    if let Some(t) = sde {
        descriptor.insert("createdAt".into(), json!(rfc3339(t)));
    }
    descriptor.insert("name".into(), json!(if name.is_empty() { "model" } else { name }));
    let mut cfg = Map::new();
    // HF config.json (cuda packages ship it) names the architecture; GGUF packages carry it
    // inside the GGUF only, so the config leaves it out rather than guess.
    if let Some(arch) = std::fs::read(root.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("model_type").and_then(Value::as_str).map(str::to_string))
    {
        cfg.insert("architecture".into(), json!(arch));
    }
    cfg.insert("format".into(), json!(if pm.target == "cpu" { "gguf" } else { "safetensors" }));
    let params: u64 = pm.tensors.iter().map(|t| t.shape.iter().product::<u64>()).sum();
    if params > 0 {
        cfg.insert("paramSize".into(), json!(param_size(params)));
    }
    cfg.insert("precision".into(), json!(pm.scheme));
    let mut types: Vec<&str> = pm.tensors.iter().map(|t| t.type_out.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    cfg.insert("quantization".into(), json!(format!("{} {} ({})", pm.scheme, pm.method, types.join(", "))));
    let doc = json!({
        "descriptor": descriptor,
        "config": cfg,
        "modelfs": {"type": "layers", "diffIds": layers.iter().map(Layer::digest).collect::<Vec<_>>()},
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn manifest_json(config: &[u8], layers: &[Layer], sde: Option<u64>) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| {
            json!({
                "mediaType": l.media_type,
                "digest": l.digest(),
                "size": l.size,
                "annotations": {FILEPATH_ANNOTATION: l.path},
            })
        })
        .collect();
    let mut doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest_of(config), "size": config.len()},
        "layers": layers,
    });
    if let Some(t) = sde {
        doc["annotations"] = json!({"org.opencontainers.image.created": rfc3339(t)});
    }
    serde_json::to_vec(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_sizes() {
        assert_eq!(media_type_for("model.gguf"), WEIGHT_RAW);
        assert_eq!(media_type_for("model-00001-of-00002.safetensors"), WEIGHT_RAW);
        assert_eq!(media_type_for("tokenizer.json"), WEIGHT_CONFIG_RAW);
        assert_eq!(media_type_for("modelpack.json"), WEIGHT_CONFIG_RAW);
        assert_eq!(media_type_for("model.sig"), DOC_RAW);
        assert_eq!(media_type_for("README.md"), DOC_RAW);
        assert_eq!(param_size(8_030_261_248), "8.0B");
        assert_eq!(param_size(22_700_000), "23M");
        // 2000-03-01 is day 11017 of the epoch; 1970-01-01 is 0.
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(11017 * 86400 + 3661), "2000-03-01T01:01:01Z");
    }
}
