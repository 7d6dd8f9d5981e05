//! OCI image layout directories (`oci:DIR[:TAG]`) and their tar form (`oci-archive:FILE[:TAG]`),
//! written byte-deterministically and read with every blob verified.

use crate::artifact::{digest_of, Artifact, ARTIFACT_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::error::{OciError, Result};
use crate::io::{copy_verified, HashingReader, Progress, Staging};
use crate::unpack::{unpack, BlobSource, Descriptor, PullReport, MAX_MANIFEST_BYTES};
use serde_json::{json, Value};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Content of the `oci-layout` file.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Index annotation holding the tag.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The `index.json` entry for the artifact's manifest.
fn index_entry(a: &Artifact, tag: Option<&str>) -> Value {
    let mut e = json!({
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": a.manifest_digest(),
        "size": a.manifest.len(),
        "artifactType": ARTIFACT_TYPE,
    });
    if let Some(t) = tag {
        e["annotations"] = json!({ REF_NAME: t });
    }
    e
}

fn index_json(entries: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": entries}))
        .unwrap_or_default()
}

/// Every blob of the artifact as (hex digest, source), sorted by digest, each digest once.
enum BlobSrc<'a> {
    Bytes(&'a [u8]),
    File(PathBuf, u64),
}

fn blobs(a: &Artifact) -> Vec<(String, BlobSrc<'_>)> {
    let mut v: Vec<(String, BlobSrc<'_>)> = vec![
        (hex_of(&a.manifest_digest()), BlobSrc::Bytes(&a.manifest)),
        (hex_of(&a.config_digest()), BlobSrc::Bytes(&a.config)),
    ];
    for l in &a.layers {
        v.push((hex::encode(l.sha256), BlobSrc::File(a.root.join(&l.path), l.size)));
    }
    v.sort_by(|x, y| x.0.cmp(&y.0));
    v.dedup_by(|x, y| x.0 == y.0);
    v
}

fn hex_of(digest: &str) -> String {
    digest.trim_start_matches("sha256:").to_string()
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("modelpack-tmp-{}", std::process::id()));
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    r.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        OciError::io(format!("writing {}", path.display()), e)
    })
}

/// Write a blob under `blobs_dir` unless it is already there, copying package files with their
/// digest checked on the way (a file changed since signing is refused, not published).
fn put_blob(blobs_dir: &Path, hex: &str, src: &BlobSrc<'_>, progress: &dyn Progress) -> Result<()> {
    let dest = blobs_dir.join(hex);
    if dest.is_file() {
        return Ok(());
    }
    let tmp = blobs_dir.join(format!(".{hex}.modelpack-tmp-{}", std::process::id()));
    let digest = format!("sha256:{hex}");
    match src {
        BlobSrc::Bytes(b) => write_file_atomic(&dest, b)?,
        BlobSrc::File(p, size) => {
            let mut f = std::fs::File::open(p).map_err(|e| OciError::io(format!("opening {}", p.display()), e))?;
            progress.start(&p.display().to_string(), *size);
            let r = copy_verified(&mut f, &tmp, &digest, *size, &p.display().to_string(), progress);
            progress.finish();
            r?;
            std::fs::rename(&tmp, &dest).map_err(|e| OciError::io(format!("renaming {}", dest.display()), e))?;
        }
    }
    Ok(())
}

/// Write `a` as an OCI image layout. A new directory is staged beside `dir` and renamed into
/// place; an existing layout gets the missing blobs and an `index.json` in which `tag` (or,
/// untagged, this digest) now names this manifest, replaced atomically.
pub fn write_layout(a: &Artifact, dir: &Path, tag: Option<&str>, progress: &dyn Progress) -> Result<()> {
    if dir.exists() {
        let layout = dir.join("oci-layout");
        if !layout.is_file() {
            return Err(OciError::malformed(
                "destination",
                format!("{} exists and is not an OCI image layout", dir.display()),
            ));
        }
        let blobs_dir = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs_dir)
            .map_err(|e| OciError::io(format!("creating {}", blobs_dir.display()), e))?;
        for (hex, src) in blobs(a) {
            put_blob(&blobs_dir, &hex, &src, progress)?;
        }
        let ipath = dir.join("index.json");
        let old: Value = match std::fs::read(&ipath) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| OciError::malformed(ipath.display().to_string(), e))?,
            Err(_) => json!({"manifests": []}),
        };
        let mut entries: Vec<Value> = old["manifests"].as_array().cloned().unwrap_or_default();
        let digest = a.manifest_digest();
        entries.retain(|e| match tag {
            Some(t) => {
                e.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1"))).and_then(Value::as_str) != Some(t)
            }
            None => e["digest"].as_str() != Some(digest.as_str()) || e.get("annotations").is_some(),
        });
        entries.push(index_entry(a, tag));
        return write_file_atomic(&ipath, &index_json(entries));
    }
    let staging = Staging::new(dir)?;
    let blobs_dir = staging.path.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir).map_err(|e| OciError::io(format!("creating {}", blobs_dir.display()), e))?;
    for (hex, src) in blobs(a) {
        put_blob(&blobs_dir, &hex, &src, progress)?;
    }
    write_file_atomic(&staging.path.join("oci-layout"), OCI_LAYOUT)?;
    write_file_atomic(&staging.path.join("index.json"), &index_json(vec![index_entry(a, tag)]))?;
    staging.commit()
}

/// A tar header with every field fixed: GNU format, uid/gid 0, no owner names, mode 0644/0755,
/// mtime `SOURCE_DATE_EPOCH` or 0.
fn header(path: &str, size: u64, dir: bool, mtime: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).map_err(|e| OciError::io(format!("tar path {path}"), e))?;
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(if dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
    h.set_cksum();
    Ok(h)
}

/// Write `a` as an OCI layout in one tar file, deterministically: entries in lexical path order
/// (`blobs/`, `blobs/sha256/`, blobs by digest, `index.json`, `oci-layout`), fixed headers.
/// The archive is written to a temporary name beside `file` and renamed when complete.
pub fn write_archive(a: &Artifact, file: &Path, tag: Option<&str>, mtime: u64, progress: &dyn Progress) -> Result<()> {
    if file.exists() {
        return Err(OciError::Exists(file.to_path_buf()));
    }
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = file.with_file_name(format!(".{name}.modelpack-tmp-{}", std::process::id()));
    let werr = |e: std::io::Error| OciError::io(format!("writing {}", tmp.display()), e);
    let r = (|| {
        let f = std::fs::File::create(&tmp).map_err(werr)?;
        let mut b = tar::Builder::new(BufWriter::with_capacity(crate::io::BUF, f));
        for d in ["blobs/", "blobs/sha256/"] {
            b.append(&header(d, 0, true, mtime)?, std::io::empty()).map_err(werr)?;
        }
        for (hex, src) in blobs(a) {
            let path = format!("blobs/sha256/{hex}");
            match src {
                BlobSrc::Bytes(bytes) => {
                    b.append(&header(&path, bytes.len() as u64, false, mtime)?, bytes).map_err(werr)?
                }
                BlobSrc::File(p, size) => {
                    let f = std::fs::File::open(&p).map_err(|e| OciError::io(format!("opening {}", p.display()), e))?;
                    progress.start(&p.display().to_string(), size);
                    let mut hr = HashingReader::new(f.take(size), progress);
                    let res = b.append(&header(&path, size, false, mtime)?, &mut hr);
                    progress.finish();
                    res.map_err(|e| OciError::io(format!("archiving {}", p.display()), e))?;
                    let got = hr.digest();
                    if hr.count != size || got != format!("sha256:{hex}") {
                        return Err(OciError::Mismatch {
                            what: format!("{}: changed since it was signed", p.display()),
                            expected: format!("sha256:{hex} ({size} bytes)"),
                            actual: format!("{got} ({} bytes)", hr.count),
                        });
                    }
                }
            }
        }
        let idx = index_json(vec![index_entry(a, tag)]);
        b.append(&header("index.json", idx.len() as u64, false, mtime)?, idx.as_slice()).map_err(werr)?;
        b.append(&header("oci-layout", OCI_LAYOUT.len() as u64, false, mtime)?, OCI_LAYOUT).map_err(werr)?;
        let w = b.into_inner().map_err(werr)?;
        let f = w.into_inner().map_err(|e| werr(e.into_error()))?;
        f.sync_all().map_err(werr)?;
        std::fs::rename(&tmp, file).map_err(|e| OciError::io(format!("renaming into {}", file.display()), e))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Pick the manifest descriptor for `tag` from `index.json` bytes (the only entry when untagged).
fn select(index: &[u8], tag: Option<&str>, what: &str) -> Result<Descriptor> {
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<Descriptor>,
    }
    let idx: Index = serde_json::from_slice(index).map_err(|e| OciError::malformed(what, e))?;
    let hits: Vec<&Descriptor> = match tag {
        Some(t) => {
            idx.manifests.iter().filter(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(t)).collect()
        }
        None => idx.manifests.iter().collect(),
    };
    match (hits.as_slice(), tag) {
        ([d], _) => {
            if d.media_type != MANIFEST_MEDIA_TYPE {
                return Err(OciError::malformed(what, format!("entry is {}, not an OCI image manifest", d.media_type)));
            }
            if !crate::reference::valid_digest(&d.digest) || d.size > MAX_MANIFEST_BYTES {
                return Err(OciError::malformed(what, "bad manifest descriptor"));
            }
            Ok((*d).clone())
        }
        ([], Some(t)) => Err(OciError::NotFound(format!("tag {t:?} in {what}"))),
        ([], None) => Err(OciError::NotFound(format!("no manifest in {what}"))),
        (_, _) => Err(OciError::malformed(what, "several manifests: name one with :TAG")),
    }
}

fn read_small(r: &mut dyn Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    r.take(limit + 1).read_to_end(&mut v).map_err(|e| OciError::malformed(what, e))?;
    if v.len() as u64 > limit {
        return Err(OciError::malformed(what, format!("larger than {limit} bytes")));
    }
    Ok(v)
}

struct LayoutBlobs(PathBuf);
impl BlobSource for LayoutBlobs {
    fn fetch(&mut self, d: &Descriptor, dest: &Path, what: &str, progress: &dyn Progress) -> Result<()> {
        let p = self.0.join("blobs/sha256").join(hex_of(&d.digest));
        let mut f = std::fs::File::open(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OciError::NotFound(format!("blob {} for {what}", d.digest)),
            _ => OciError::io(format!("opening {}", p.display()), e),
        })?;
        progress.start(what, d.size);
        let r = copy_verified(&mut f, dest, &d.digest, d.size, what, progress);
        progress.finish();
        r
    }
}

/// Read the manifest named by `tag` from a layout directory and unpack it into `dest`.
pub fn pull_layout(dir: &Path, tag: Option<&str>, dest: &Path, progress: &dyn Progress) -> Result<PullReport> {
    if dest.exists() {
        return Err(OciError::Exists(dest.to_path_buf()));
    }
    let what = format!("{}/index.json", dir.display());
    let index = std::fs::read(dir.join("index.json")).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => OciError::NotFound(what.clone()),
        _ => OciError::io(format!("reading {what}"), e),
    })?;
    let d = select(&index, tag, &what)?;
    let mp = dir.join("blobs/sha256").join(hex_of(&d.digest));
    let manifest = std::fs::read(&mp).map_err(|e| OciError::io(format!("reading {}", mp.display()), e))?;
    check_manifest(&manifest, &d)?;
    let staging = Staging::new(dest)?;
    unpack(&manifest, &mut LayoutBlobs(dir.to_path_buf()), staging, progress, None)
}

fn check_manifest(manifest: &[u8], d: &Descriptor) -> Result<()> {
    let got = digest_of(manifest);
    if got != d.digest || manifest.len() as u64 != d.size {
        return Err(OciError::Mismatch { what: "manifest".into(), expected: d.digest.clone(), actual: got });
    }
    Ok(())
}

/// Blobs extracted from an archive into the staging directory, verified on extraction; a
/// layer takes its blob by rename (a second layer with the same content gets a copy).
struct ExtractedBlobs {
    dir: PathBuf,
    placed: std::collections::HashMap<String, PathBuf>,
}
impl BlobSource for ExtractedBlobs {
    fn fetch(&mut self, d: &Descriptor, dest: &Path, what: &str, _progress: &dyn Progress) -> Result<()> {
        let hex = hex_of(&d.digest);
        let src = match self.placed.get(&hex) {
            Some(p) => p.clone(),
            None => self.dir.join(&hex),
        };
        let len = std::fs::metadata(&src)
            .map_err(|_| OciError::NotFound(format!("blob {} for {what} in the archive", d.digest)))?
            .len();
        if len != d.size {
            return Err(OciError::Mismatch {
                what: format!("{what}: size"),
                expected: d.size.to_string(),
                actual: len.to_string(),
            });
        }
        match self.placed.entry(hex) {
            std::collections::hash_map::Entry::Occupied(_) => {
                std::fs::copy(&src, dest).map_err(|e| OciError::io(format!("copying to {}", dest.display()), e))?;
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                std::fs::rename(&src, dest).map_err(|e| OciError::io(format!("moving to {}", dest.display()), e))?;
                v.insert(dest.to_path_buf());
            }
        }
        Ok(())
    }
}

/// Stream an `oci-archive` tar: every blob is hashed while it is extracted into the staging
/// directory, then the tagged manifest is unpacked there and the directory renamed into place.
/// A truncated or corrupt archive is an input error and leaves nothing behind.
pub fn pull_archive(file: &Path, tag: Option<&str>, dest: &Path, progress: &dyn Progress) -> Result<PullReport> {
    if dest.exists() {
        return Err(OciError::Exists(dest.to_path_buf()));
    }
    let what = file.display().to_string();
    let f = std::fs::File::open(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => OciError::NotFound(what.clone()),
        _ => OciError::io(format!("opening {what}"), e),
    })?;
    let total = f.metadata().map(|m| m.len()).unwrap_or(0);
    let staging = Staging::new(dest)?;
    let blob_dir = staging.path.join(".blobs.modelpack-tmp");
    std::fs::create_dir_all(&blob_dir).map_err(|e| OciError::io(format!("creating {}", blob_dir.display()), e))?;
    let bad = |d: String| OciError::malformed(format!("archive {what}"), d);
    let mut index = None;
    let mut oci_layout = None;
    let mut ar = tar::Archive::new(std::io::BufReader::with_capacity(crate::io::BUF, f));
    progress.start(&what, total);
    let entries = ar.entries().map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("truncated or corrupt: {e}")))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_string();
        let et = entry.header().entry_type();
        if et.is_dir() {
            continue;
        }
        if !et.is_file() {
            return Err(bad(format!("{path}: only regular files and directories are allowed")));
        }
        let size = entry.header().size().map_err(|e| bad(e.to_string()))?;
        if path == "index.json" {
            index = Some(read_small(&mut entry, MAX_MANIFEST_BYTES, &what)?);
        } else if path == "oci-layout" {
            oci_layout = Some(read_small(&mut entry, 4096, &what)?);
        } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            if !crate::reference::valid_digest(&format!("sha256:{hex}")) {
                return Err(bad(format!("{path} is not a sha256 blob name")));
            }
            copy_verified(&mut entry, &blob_dir.join(hex), &format!("sha256:{hex}"), size, &path, progress).map_err(
                |e| match e {
                    OciError::Mismatch { what: w, .. } if w.ends_with(": size") => bad(format!("{path}: truncated")),
                    OciError::Io { what: w, source } if w.starts_with("reading") => bad(format!("{path}: {source}")),
                    other => other,
                },
            )?;
        }
    }
    progress.finish();
    let index = index.ok_or_else(|| bad("no index.json (truncated?)".into()))?;
    // The layout spec requires `oci-layout`; we write it last, so its absence also reveals an
    // archive cut at an entry boundary (tar readers accept a missing end-of-archive marker).
    let layout_ok = oci_layout
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v["imageLayoutVersion"].is_string());
    if !layout_ok {
        return Err(bad("no valid oci-layout file (truncated?)".into()));
    }
    let d = select(&index, tag, &format!("{what}:index.json"))?;
    let mpath = blob_dir.join(hex_of(&d.digest));
    let manifest =
        std::fs::read(&mpath).map_err(|_| bad(format!("manifest blob {} missing (truncated?)", d.digest)))?;
    check_manifest(&manifest, &d)?;
    let mut src = ExtractedBlobs { dir: blob_dir.clone(), placed: Default::default() };
    // The layers are moved out of the extraction directory; what remains (manifest, config)
    // is removed before the rename, so the package holds exactly the artifact's files.
    unpack(&manifest, &mut src, staging, progress, Some(&blob_dir))
}
