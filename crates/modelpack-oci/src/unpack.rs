//! Parsing a pulled ModelPack manifest and placing its raw layers as package files.

use crate::artifact::{ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, FILEPATH_ANNOTATION, MANIFEST_MEDIA_TYPE};
use crate::error::{OciError, Result};
use crate::io::{Progress, Staging};
use crate::reference::valid_digest;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Largest manifest or index we read (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// An OCI descriptor as read from untrusted JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>` (checked by [`parse_manifest`]).
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestIn {
    schema_version: u32,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// A ModelPack manifest reduced to what unpacking needs.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// Config descriptor.
    pub config: Descriptor,
    /// `(package path, layer descriptor)` in manifest order.
    pub files: Vec<(String, Descriptor)>,
}

/// Parse and check a manifest: OCI image manifest, ModelPack artifact (by artifactType or
/// config type), every layer raw with a safe, unique `org.cncf.model.filepath`.
pub fn parse_manifest(bytes: &[u8]) -> Result<ParsedManifest> {
    let what = "manifest";
    modelpack_sign::check_json_depth(bytes, 16, what)?;
    let m: ManifestIn = serde_json::from_slice(bytes).map_err(|e| OciError::malformed(what, e))?;
    if m.schema_version != 2 {
        return Err(OciError::malformed(what, format!("schemaVersion {}", m.schema_version)));
    }
    match m.media_type.as_deref() {
        Some(MANIFEST_MEDIA_TYPE) | None => {}
        Some(t) => return Err(OciError::malformed(what, format!("media type {t} is not an OCI image manifest"))),
    }
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) && m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(OciError::malformed(what, "not a CNCF ModelPack artifact (artifactType / config media type)"));
    }
    let mut seen = BTreeSet::new();
    let mut files = Vec::with_capacity(m.layers.len());
    for d in std::iter::once(&m.config).chain(&m.layers) {
        if !valid_digest(&d.digest) {
            return Err(OciError::malformed(what, format!("digest {:?} is not sha256:<64 hex>", d.digest)));
        }
    }
    for l in m.layers {
        if !l.media_type.ends_with(".raw") {
            return Err(OciError::malformed(
                what,
                format!("layer media type {} is not raw: only raw layers are unpacked", l.media_type),
            ));
        }
        let Some(p) = l.annotations.get(FILEPATH_ANNOTATION).cloned() else {
            return Err(OciError::malformed(what, format!("layer {} has no {FILEPATH_ANNOTATION}", l.digest)));
        };
        modelpack_sign::validate_rel_path(&p)?;
        if !seen.insert(p.clone()) {
            return Err(OciError::malformed(what, format!("two layers for {p}")));
        }
        files.push((p, l));
    }
    // A file may not also be a directory of another (a/b and a/b/c).
    for (p, _) in &files {
        if files.iter().any(|(q, _)| q.len() > p.len() && q.starts_with(p.as_str()) && q.as_bytes()[p.len()] == b'/') {
            return Err(OciError::malformed(what, format!("{p} is both a file and a directory")));
        }
    }
    Ok(ParsedManifest { config: m.config, files })
}

/// Where blobs come from while unpacking.
pub(crate) trait BlobSource {
    /// Write blob `d` to the new file `dest`, verifying digest and size.
    fn fetch(&mut self, d: &Descriptor, dest: &Path, what: &str, progress: &dyn Progress) -> Result<()>;
}

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// Manifest digest.
    pub manifest_digest: String,
    /// `(path, digest, size)` of every file written.
    pub files: Vec<(String, String, u64)>,
}

/// Unpack into a staging directory next to `dest` and rename into place once every blob verified.
pub(crate) fn unpack(
    manifest: &[u8],
    src: &mut dyn BlobSource,
    staging: Staging,
    progress: &dyn Progress,
    remove_before_commit: Option<&Path>,
) -> Result<PullReport> {
    let pm = parse_manifest(manifest)?;
    let cfg_tmp = staging.path.join(".config.modelpack-tmp");
    src.fetch(&pm.config, &cfg_tmp, "config blob", progress)?;
    let _ = std::fs::remove_file(&cfg_tmp);
    let mut files = Vec::with_capacity(pm.files.len());
    for (path, d) in &pm.files {
        let out = staging.path.join(path);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| OciError::io(format!("creating {}", parent.display()), e))?;
        }
        src.fetch(d, &out, path, progress)?;
        files.push((path.clone(), d.digest.clone(), d.size));
    }
    if let Some(p) = remove_before_commit {
        std::fs::remove_dir_all(p).map_err(|e| OciError::io(format!("removing {}", p.display()), e))?;
    }
    staging.commit()?;
    Ok(PullReport { manifest_digest: crate::artifact::digest_of(manifest), files })
}
