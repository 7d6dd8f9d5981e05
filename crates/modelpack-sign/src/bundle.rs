//! OpenSSF Model Signing bundles (`model.sig`), key method, as `model_signing` 1.1.1 writes
//! and reads them: a Sigstore bundle v0.3 whose DSSE envelope carries an in-toto
//! v1 statement listing every resource and its SHA-256.
//!
//! Byte layout we write: the statement is pretty JSON with two-space indent and no trailing
//! newline (what protobuf's `MessageToJson` gives `model_signing`), keys in a fixed order
//! (`model_signing` emits the keys of protobuf `Struct`s in hash order, so its bytes vary from
//! run to run; the decoded documents are equal). The bundle itself is compact JSON, no
//! trailing newline, in exactly `model_signing`'s key order.

use crate::digest::{
    cmp_paths, hash_many, list_resources, validate_rel_path, walk, EntryKind, FileDigest, DEFAULT_IGNORE_PATHS,
    SIGNATURE_FILE,
};
use crate::x509::{verify_chain, Cert, CertError, ChainPolicy, VerifiedChain};
use crate::{PrivateKey, PublicKey, SignError};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Largest `model.sig` we read. A statement costs ~150 bytes per file, so this allows
/// hundreds of thousands of files while bounding memory for hostile input.
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;
/// Deepest JSON nesting accepted in a bundle or statement (ours needs 6).
pub const MAX_JSON_DEPTH: usize = 32;

const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";

/// DSSE pre-authentication encoding: what the signature is over.
pub fn pae(payload: &[u8]) -> Vec<u8> {
    let mut v = format!("DSSEv1 {} {} {} ", PAYLOAD_TYPE.len(), PAYLOAD_TYPE, payload.len()).into_bytes();
    v.extend_from_slice(payload);
    v
}

/// Root digest: SHA-256 over the raw 32-byte digests in bundle order.
pub fn root_digest<'a>(digests: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    h.finalize().into()
}

/// Reject JSON nested deeper than `limit` before handing it to the parser. Counts `[`/`{`
/// outside strings; malformed input is left for the parser to reject.
pub fn check_json_depth(bytes: &[u8], limit: usize, what: &str) -> Result<(), SignError> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(SignError::JsonTooDeep { what: what.to_string(), limit });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

// ---- what we write ---------------------------------------------------------------------

#[derive(Serialize)]
struct StatementOut<'a> {
    #[serde(rename = "_type")]
    type_: &'static str,
    subject: [SubjectOut<'a>; 1],
    #[serde(rename = "predicateType")]
    predicate_type: &'static str,
    predicate: PredicateOut<'a>,
}
#[derive(Serialize)]
struct SubjectOut<'a> {
    name: &'a str,
    digest: Sha256Out,
}
#[derive(Serialize)]
struct Sha256Out {
    sha256: String,
}
#[derive(Serialize)]
struct PredicateOut<'a> {
    serialization: SerializationOut,
    resources: Vec<ResourceOut<'a>>,
}
#[derive(Serialize)]
struct SerializationOut {
    method: &'static str,
    hash_type: &'static str,
    allow_symlinks: bool,
    ignore_paths: [&'static str; 5],
}
#[derive(Serialize)]
struct ResourceOut<'a> {
    name: &'a str,
    algorithm: &'static str,
    digest: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BundleOut {
    media_type: &'static str,
    verification_material: MaterialOut,
    dsse_envelope: EnvelopeOut,
}
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MaterialOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<HintOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x509_certificate_chain: Option<ChainOut>,
    tlog_entries: [(); 0],
}
#[derive(Serialize)]
struct ChainOut {
    certificates: Vec<RawCertOut>,
}
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawCertOut {
    raw_bytes: String,
}

/// The certificates a bundle carries when signing with a CA-certified key: the leaf whose key
/// signs, then the intermediates (`verificationMaterial.x509CertificateChain`, exactly as
/// `model_signing sign certificate` 1.1.1 writes it; no trust anchor check happens at signing).
#[derive(Debug, Clone)]
pub struct CertMaterial {
    leaf: Cert,
    chain: Vec<Cert>,
}

impl CertMaterial {
    /// Pair a leaf and its intermediates with the private key; the leaf must certify that
    /// key's public half ([`CertError::KeyMismatch`] otherwise, as `model_signing` refuses too).
    pub fn new(leaf: Cert, chain: Vec<Cert>, key: &PrivateKey) -> Result<Self, CertError> {
        let cert_key = leaf.public_key()?;
        if cert_key != key.public() {
            return Err(CertError::KeyMismatch {
                subject: leaf.subject(),
                cert_hint: cert_key.hint(),
                key_hint: key.public().hint(),
            });
        }
        Ok(CertMaterial { leaf, chain })
    }

    /// The signing certificate.
    pub fn leaf(&self) -> &Cert {
        &self.leaf
    }

    /// The intermediates, in the order given.
    pub fn chain(&self) -> &[Cert] {
        &self.chain
    }
}
#[derive(Serialize)]
struct HintOut {
    hint: String,
}
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeOut {
    payload: String,
    payload_type: &'static str,
    signatures: [SigOut; 1],
}
#[derive(Serialize)]
struct SigOut {
    sig: String,
    keyid: &'static str,
}

/// The in-toto statement bytes for `digests` (already in bundle order) of a model `name`.
pub fn statement_json(name: &str, digests: &[FileDigest]) -> Vec<u8> {
    let st = StatementOut {
        type_: STATEMENT_TYPE,
        subject: [SubjectOut {
            name,
            digest: Sha256Out { sha256: hex::encode(root_digest(digests.iter().map(|d| &d.sha256))) },
        }],
        predicate_type: PREDICATE_TYPE,
        predicate: PredicateOut {
            serialization: SerializationOut {
                method: "files",
                hash_type: "sha256",
                allow_symlinks: false,
                ignore_paths: DEFAULT_IGNORE_PATHS,
            },
            resources: digests
                .iter()
                .map(|d| ResourceOut { name: &d.path, algorithm: "sha256", digest: hex::encode(d.sha256) })
                .collect(),
        },
    };
    // Serializing plain structs of strings cannot fail.
    ascii_only(&serde_json::to_string_pretty(&st).unwrap_or_default()).into_bytes()
}

/// Escape every character outside printable ASCII as `\uXXXX` (UTF-16 units, lowercase hex),
/// as Python's `json.dumps(ensure_ascii=True)` inside protobuf's `MessageToJson` does, so
/// non-ASCII file names give the same statement bytes as `model_signing`. Safe as a pass over
/// finished JSON: outside strings, serde_json output is plain ASCII.
fn ascii_only(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if (' '..='~').contains(&c) || c == '\n' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// The subject name `model_signing` uses: the directory's last component (resolved when the
/// path ends in `.`/`..`). Informative only: verification ignores it.
pub fn model_name(root: &Path) -> String {
    match root.file_name() {
        Some(n) => n.to_string_lossy().into_owned(),
        None => root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default(),
    }
}

/// Sign the package at `root`: list its resources (§5.4 rules), hash them unless `digests`
/// is given, and return the `model.sig` bytes (deterministic: same files and key, same
/// bytes). Writing the file is the caller's job (see [`write_signature`]).
///
/// `digests` lets `quantize` pass digests it computed while writing, so files are not read
/// again; the directory is still listed and every resource must appear exactly once with its
/// on-disk size, else [`SignError::DigestsMismatch`].
pub fn sign_package(root: &Path, key: &PrivateKey, digests: Option<Vec<FileDigest>>) -> Result<Vec<u8>, SignError> {
    sign_package_as(root, &model_name(root), key, digests)
}

/// [`sign_package`] with an explicit subject name. For signing inside a staging directory
/// (`.out.tmp-1234`) that is renamed afterwards: pass the final directory name, so the bytes
/// do not depend on the temporary name and match what signing the final directory gives.
pub fn sign_package_as(
    root: &Path,
    name: &str,
    key: &PrivateKey,
    digests: Option<Vec<FileDigest>>,
) -> Result<Vec<u8>, SignError> {
    sign_package_with(root, name, key, None, digests)
}

/// [`sign_package_as`], optionally carrying certificates: with `certs` the bundle's
/// verification material is the certificate chain (no key hint), as `model_signing sign
/// certificate` writes it; without, the key hint (`sign key`).
pub fn sign_package_with(
    root: &Path,
    name: &str,
    key: &PrivateKey,
    certs: Option<&CertMaterial>,
    digests: Option<Vec<FileDigest>>,
) -> Result<Vec<u8>, SignError> {
    let files = list_resources(root)?;
    let mut digests = match digests {
        None => hash_many(root, &files)?,
        Some(given) => {
            check_cover(root, &files, &given)?;
            given
        }
    };
    digests.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    let payload = statement_json(name, &digests);
    let sig = key.sign_der(&pae(&payload));
    let b64 = base64::engine::general_purpose::STANDARD;
    let bundle = BundleOut {
        media_type: BUNDLE_MEDIA_TYPE,
        verification_material: match certs {
            None => MaterialOut {
                public_key: Some(HintOut { hint: key.public().hint() }),
                x509_certificate_chain: None,
                tlog_entries: [],
            },
            Some(c) => MaterialOut {
                public_key: None,
                x509_certificate_chain: Some(ChainOut {
                    certificates: std::iter::once(&c.leaf)
                        .chain(&c.chain)
                        .map(|c| RawCertOut { raw_bytes: b64.encode(c.der()) })
                        .collect(),
                }),
                tlog_entries: [],
            },
        },
        dsse_envelope: EnvelopeOut {
            payload: b64.encode(&payload),
            payload_type: PAYLOAD_TYPE,
            signatures: [SigOut { sig: b64.encode(sig), keyid: "" }],
        },
    };
    Ok(serde_json::to_vec(&bundle).unwrap_or_default())
}

fn check_cover(root: &Path, files: &[(String, u64)], given: &[FileDigest]) -> Result<(), SignError> {
    let on_disk: HashMap<&str, u64> = files.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    for d in given {
        validate_rel_path(&d.path)?;
        if !seen.insert(d.path.as_str()) {
            problems.push(format!("{} given twice", d.path));
            continue;
        }
        match on_disk.get(d.path.as_str()) {
            None => problems.push(format!("{} is not a resource of the package", d.path)),
            Some(&s) if s != d.size => {
                problems.push(format!("{} is {s} bytes on disk, digest says {}", d.path, d.size))
            }
            Some(_) => {}
        }
    }
    for (p, _) in files {
        if !seen.contains(p.as_str()) {
            problems.push(format!("{p} has no digest"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SignError::DigestsMismatch { root: root.to_path_buf(), detail: problems.join("; ") })
    }
}

/// Digests of every resource of `root`, reusing `known` ones (files the caller wrote and
/// hashed on the way out) and hashing only the rest (copied tokenizer files, the manifest) in
/// parallel. `known` entries must be resources of the package with their on-disk size, at most
/// once each. Result in bundle order, ready for [`sign_package_as`].
pub fn complete_digests(root: &Path, known: Vec<FileDigest>) -> Result<Vec<FileDigest>, SignError> {
    let files = list_resources(root)?;
    let on_disk: HashMap<&str, u64> = files.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    let mut seen = HashSet::new();
    let mut problems = Vec::new();
    for d in &known {
        validate_rel_path(&d.path)?;
        if !seen.insert(d.path.clone()) {
            problems.push(format!("{} given twice", d.path));
            continue;
        }
        match on_disk.get(d.path.as_str()) {
            None => problems.push(format!("{} is not a resource of the package", d.path)),
            Some(&s) if s != d.size => {
                problems.push(format!("{} is {s} bytes on disk, digest says {}", d.path, d.size))
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(SignError::DigestsMismatch { root: root.to_path_buf(), detail: problems.join("; ") });
    }
    let rest: Vec<(String, u64)> = files.into_iter().filter(|(p, _)| !seen.contains(p)).collect();
    let mut all = known;
    all.extend(hash_many(root, &rest)?);
    all.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    Ok(all)
}

/// Write `bundle` as `root/model.sig` atomically (temporary file, fsync, rename), replacing
/// an old signature.
pub fn write_signature(root: &Path, bundle: &[u8]) -> Result<(), SignError> {
    use std::io::Write as _;
    let dest = root.join(SIGNATURE_FILE);
    let tmp = root.join(format!(".{SIGNATURE_FILE}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bundle)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dest)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(SignError::io(dest, e));
    }
    Ok(())
}

// ---- what we read ----------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleIn {
    media_type: String,
    verification_material: MaterialIn,
    dsse_envelope: Option<EnvelopeIn>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MaterialIn {
    public_key: Option<HintIn>,
    certificate: Option<RawCertIn>,
    x509_certificate_chain: Option<ChainIn>,
}
#[derive(Deserialize)]
struct ChainIn {
    #[serde(default)]
    certificates: Vec<RawCertIn>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCertIn {
    raw_bytes: String,
}
#[derive(Deserialize)]
struct HintIn {
    hint: Option<String>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeIn {
    payload: String,
    payload_type: String,
    signatures: Vec<SigIn>,
}
#[derive(Deserialize)]
struct SigIn {
    sig: String,
}
#[derive(Deserialize)]
struct StatementIn {
    #[serde(rename = "_type")]
    type_: String,
    subject: Vec<SubjectIn>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: PredicateIn,
}
#[derive(Deserialize)]
struct SubjectIn {
    digest: BTreeMap<String, String>,
}
#[derive(Deserialize)]
struct PredicateIn {
    serialization: SerializationIn,
    resources: Vec<ResourceIn>,
}
#[derive(Deserialize)]
struct SerializationIn {
    method: String,
    hash_type: String,
    #[serde(default)]
    ignore_paths: Vec<String>,
}
#[derive(Deserialize)]
struct ResourceIn {
    name: String,
    algorithm: String,
    digest: String,
}

/// Result of checking one file against the signed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Present with the signed digest.
    Ok,
    /// Present, different content.
    Changed {
        /// Signed digest.
        expected: [u8; 32],
        /// Digest on disk.
        actual: [u8; 32],
    },
    /// Signed, not on disk.
    Missing {
        /// Signed digest.
        expected: [u8; 32],
    },
    /// On disk, not signed.
    Extra {
        /// Digest on disk.
        actual: [u8; 32],
    },
    /// A symbolic link where a file is (or is not) expected; never followed.
    Symlink {
        /// Signed digest, when the name is a signed resource.
        expected: Option<[u8; 32]>,
    },
    /// A FIFO, socket or device node.
    Special {
        /// Signed digest, when the name is a signed resource.
        expected: Option<[u8; 32]>,
    },
}

impl FileStatus {
    /// Short name for reports: `ok`, `changed`, `missing`, `extra`, `symlink`, `special`.
    pub fn name(&self) -> &'static str {
        match self {
            FileStatus::Ok => "ok",
            FileStatus::Changed { .. } => "changed",
            FileStatus::Missing { .. } => "missing",
            FileStatus::Extra { .. } => "extra",
            FileStatus::Symlink { .. } => "symlink",
            FileStatus::Special { .. } => "special",
        }
    }
    /// The signed digest, when there is one.
    pub fn expected(&self) -> Option<[u8; 32]> {
        match *self {
            FileStatus::Changed { expected, .. } | FileStatus::Missing { expected } => Some(expected),
            FileStatus::Symlink { expected } | FileStatus::Special { expected } => expected,
            FileStatus::Ok | FileStatus::Extra { .. } => None,
        }
    }
    /// The digest found on disk, when the file could be hashed.
    pub fn actual(&self) -> Option<[u8; 32]> {
        match *self {
            FileStatus::Changed { actual, .. } | FileStatus::Extra { actual } => Some(actual),
            _ => None,
        }
    }
}

/// One file's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// Resource name (relative, `/`-separated).
    pub path: String,
    /// What was found. For `Ok` the digest is in [`FileCheck::digest`].
    pub status: FileStatus,
    /// The (matching) digest of an `Ok` file.
    pub digest: Option<[u8; 32]>,
}

/// Outcome of [`verify_package`]. Tampering is reported here, not as an error.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// `None` when the DSSE signature verified with the given key, else why not. When the
    /// signature fails, files are not checked (the statement is not trusted).
    pub signature_error: Option<String>,
    /// Hint of the key we verified with.
    pub key_hint: String,
    /// Hint recorded in the bundle, if any.
    pub bundle_key_hint: Option<String>,
    /// Signed root digest (hex), once the signature verified.
    pub root_digest: Option<String>,
    /// Per-file verdicts in bundle order, then extra files.
    pub files: Vec<FileCheck>,
    /// Files hashed.
    pub files_checked: u64,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// Certificate bundles: the verified path and signer, once the chain checked out.
    pub chain: Option<VerifiedChain>,
    /// Certificate bundles: why the chain was rejected (then `signature_error` says the same).
    pub chain_error: Option<CertError>,
}

impl VerifyReport {
    /// True only when the signature verified and every file matched, none missing or extra.
    pub fn passed(&self) -> bool {
        self.signature_error.is_none() && self.files.iter().all(|f| f.status == FileStatus::Ok)
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> SignError {
    SignError::MalformedBundle { path: path.to_path_buf(), reason: reason.into() }
}

fn parse_digest(path: &Path, s: &str) -> Result<[u8; 32], SignError> {
    let mut d = [0u8; 32];
    if s.len() != 64 || hex::decode_to_slice(s, &mut d).is_err() {
        return Err(malformed(path, format!("digest {s:?} is not 64 hex digits")));
    }
    Ok(d)
}

/// Read and size-check `model.sig` without following a symlink.
fn read_bundle(sig_path: &Path) -> Result<Vec<u8>, SignError> {
    let meta = std::fs::symlink_metadata(sig_path).map_err(|e| SignError::io(sig_path, e))?;
    if meta.file_type().is_symlink() {
        return Err(SignError::Symlink { path: sig_path.to_path_buf() });
    }
    if !meta.is_file() {
        return Err(SignError::NotRegular { path: sig_path.to_path_buf() });
    }
    if meta.len() > MAX_BUNDLE_BYTES {
        return Err(SignError::TooLarge { path: sig_path.to_path_buf(), size: meta.len(), limit: MAX_BUNDLE_BYTES });
    }
    let f = std::fs::File::open(sig_path).map_err(|e| SignError::io(sig_path, e))?;
    let mut buf = Vec::new();
    f.take(MAX_BUNDLE_BYTES + 1).read_to_end(&mut buf).map_err(|e| SignError::io(sig_path, e))?;
    if buf.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(SignError::TooLarge {
            path: sig_path.to_path_buf(),
            size: buf.len() as u64,
            limit: MAX_BUNDLE_BYTES,
        });
    }
    Ok(buf)
}

fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, SignError> {
    check_json_depth(bytes, MAX_JSON_DEPTH, what)?;
    serde_json::from_slice(bytes).map_err(|source| SignError::Json { what: what.to_string(), source })
}

/// Verify the package at `root` against `root/model.sig` with `key`: first the signature
/// (key hint, then ECDSA over the DSSE PAE with the key's own curve and hash), then every
/// file. Errors only for unreadable or malformed input (including a statement whose root
/// digest does not match its resources); a bad signature or any changed, missing, extra,
/// symlinked or special file is reported in the [`VerifyReport`].
pub fn verify_package(root: &Path, key: &PublicKey) -> Result<VerifyReport, SignError> {
    verify_package_trust(root, &Trust::Key(key.clone()))
}

/// What a verifier trusts: a public key (bundles from `sign key`) or trust anchors plus an
/// optional pinned identity (bundles from `sign certificate`).
#[derive(Debug, Clone)]
pub enum Trust {
    /// The signer's public key.
    Key(PublicKey),
    /// Root certificates to build a path to, and what the leaf must name.
    Chain(ChainPolicy),
}

/// [`verify_package`] for either kind of trust. A certificate bundle is checked with
/// [`verify_chain`] first; a chain that does not verify (expired, foreign root, bad EKU, wrong
/// identity, ...) is a failed report, an unusable certificate an error. A bundle of one kind
/// checked with trust of the other kind is [`SignError::WrongMethod`].
pub fn verify_package_trust(root: &Path, trust: &Trust) -> Result<VerifyReport, SignError> {
    let sig_path: PathBuf = root.join(SIGNATURE_FILE);
    let raw = read_bundle(&sig_path)?;
    let what = sig_path.display().to_string();
    let bundle: BundleIn = parse_json(&raw, &what)?;
    if bundle.media_type != BUNDLE_MEDIA_TYPE {
        return Err(malformed(
            &sig_path,
            format!("media type {:?}, expected {BUNDLE_MEDIA_TYPE:?}", bundle.media_type),
        ));
    }
    let vm = bundle.verification_material;
    let bundle_certs: Option<Vec<&RawCertIn>> = match (&vm.x509_certificate_chain, &vm.certificate) {
        (Some(_), Some(_)) => return Err(malformed(&sig_path, "bundle has both certificate and x509CertificateChain")),
        (Some(c), None) => Some(c.certificates.iter().collect()),
        (None, Some(c)) => Some(vec![c]),
        (None, None) => None,
    };
    let env = bundle.dsse_envelope.ok_or_else(|| malformed(&sig_path, "no DSSE envelope"))?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(malformed(&sig_path, format!("payload type {:?}, expected {PAYLOAD_TYPE:?}", env.payload_type)));
    }
    let sig_b64 = match env.signatures.as_slice() {
        [] => return Err(malformed(&sig_path, "bundle has no signatures")),
        [one] => &one.sig,
        more => return Err(malformed(&sig_path, format!("bundle has {} signatures, expected one", more.len()))),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(&env.payload).map_err(|e| malformed(&sig_path, format!("payload: bad base64: {e}")))?;
    let sig = b64.decode(sig_b64).map_err(|e| malformed(&sig_path, format!("signature: bad base64: {e}")))?;

    let bundle_key_hint = vm.public_key.and_then(|p| p.hint).filter(|h| !h.is_empty());
    let mut report = VerifyReport {
        signature_error: None,
        key_hint: String::new(),
        bundle_key_hint: bundle_key_hint.clone(),
        root_digest: None,
        files: Vec::new(),
        files_checked: 0,
        bytes_checked: 0,
        chain: None,
        chain_error: None,
    };
    let key = match (trust, bundle_certs) {
        (Trust::Key(k), None) => k.clone(),
        (Trust::Key(_), Some(_)) => {
            return Err(SignError::WrongMethod(format!(
                "{what}: the bundle is signed with a certificate; verify it against the CA root with \
                 --cert-chain ROOTS.pem instead of --key"
            )))
        }
        (Trust::Chain(_), None) => {
            return Err(SignError::WrongMethod(format!(
                "{what}: the bundle is signed with a plain key, not a certificate; verify it with --key KEY.pub"
            )))
        }
        (Trust::Chain(policy), Some(raw)) => {
            let mut certs = Vec::with_capacity(raw.len());
            for (i, c) in raw.iter().enumerate() {
                let der = b64
                    .decode(&c.raw_bytes)
                    .map_err(|e| malformed(&sig_path, format!("certificate {i}: bad base64: {e}")))?;
                certs.push(Cert::from_der(&der, &format!("{what}: certificate {i}"))?);
            }
            let Some((leaf, intermediates)) = certs.split_first() else {
                return Err(malformed(&sig_path, "x509CertificateChain has no certificates"));
            };
            match verify_chain(leaf, intermediates, policy) {
                Ok(vc) => {
                    let k = vc.leaf_key.clone();
                    report.chain = Some(vc);
                    k
                }
                Err(e) if e.is_input() => return Err(e.into()),
                Err(e) => {
                    report.key_hint = leaf.public_key().map(|k| k.hint()).unwrap_or_default();
                    report.signature_error = Some(e.to_string());
                    report.chain_error = Some(e);
                    return Ok(report);
                }
            }
        }
    };
    let key = &key;
    let key_hint = key.hint();
    report.key_hint = key_hint.clone();
    if let Some(h) = &bundle_key_hint {
        if *h != key_hint {
            report.signature_error =
                Some(format!("signed by another key: bundle key hint {h}, given {} key hint {key_hint}", key.curve()));
            return Ok(report);
        }
    }
    if !key.verify_der(&pae(&payload), &sig) {
        report.signature_error = Some(format!("invalid ECDSA {} signature over the DSSE payload", key.curve()));
        return Ok(report);
    }

    // The statement is now authentic; still parse it defensively.
    let st: StatementIn = parse_json(&payload, &format!("{what}: statement"))?;
    if st.type_ != STATEMENT_TYPE {
        return Err(malformed(&sig_path, format!("statement type {:?}, expected {STATEMENT_TYPE:?}", st.type_)));
    }
    if st.predicate_type != PREDICATE_TYPE {
        return Err(malformed(&sig_path, format!("predicate type {:?} not supported", st.predicate_type)));
    }
    let [subject] = st.subject.as_slice() else {
        return Err(malformed(&sig_path, format!("{} subjects, expected one", st.subject.len())));
    };
    let root_hex = subject.digest.get("sha256").ok_or_else(|| malformed(&sig_path, "subject has no sha256 digest"))?;
    let ser = &st.predicate.serialization;
    if ser.method != "files" || ser.hash_type != "sha256" {
        return Err(malformed(
            &sig_path,
            format!("serialization {:?}/{:?} not supported (only files/sha256)", ser.method, ser.hash_type),
        ));
    }
    let mut ignore: Vec<String> = DEFAULT_IGNORE_PATHS.iter().map(|s| s.to_string()).collect();
    for p in &ser.ignore_paths {
        validate_rel_path(p)?;
        if !ignore.contains(p) {
            ignore.push(p.clone());
        }
    }
    let mut expected: Vec<(String, [u8; 32])> = Vec::with_capacity(st.predicate.resources.len());
    for r in &st.predicate.resources {
        validate_rel_path(&r.name)?;
        if r.algorithm != "sha256" {
            return Err(malformed(
                &sig_path,
                format!("resource {:?}: algorithm {:?} not supported", r.name, r.algorithm),
            ));
        }
        expected.push((r.name.clone(), parse_digest(&sig_path, &r.digest)?));
    }
    let computed = hex::encode(root_digest(expected.iter().map(|(_, d)| d)));
    if !computed.eq_ignore_ascii_case(root_hex) {
        return Err(malformed(
            &sig_path,
            format!("statement inconsistent: root digest {root_hex}, resources hash to {computed}"),
        ));
    }
    if expected.is_empty() {
        return Err(malformed(&sig_path, "statement lists no resources"));
    }
    let mut names = HashSet::new();
    for (n, _) in &expected {
        if !names.insert(n.as_str()) {
            return Err(malformed(&sig_path, format!("resource {n:?} listed twice")));
        }
    }
    report.root_digest = Some(computed);

    // Now the files.
    let entries = walk(root, &ignore)?;
    let exp_map: HashMap<&str, [u8; 32]> = expected.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    let mut to_hash = Vec::new();
    let mut odd: HashMap<String, FileStatus> = HashMap::new();
    for e in entries {
        match e.kind {
            EntryKind::File(_) if e.ignored => {}
            EntryKind::File(size) => {
                to_hash.push((e.rel, size));
            }
            EntryKind::Symlink => {
                let expected = exp_map.get(e.rel.as_str()).copied();
                odd.insert(e.rel, FileStatus::Symlink { expected });
            }
            EntryKind::Special => {
                let expected = exp_map.get(e.rel.as_str()).copied();
                odd.insert(e.rel, FileStatus::Special { expected });
            }
        }
    }
    let hashed = hash_many(root, &to_hash)?;
    report.files_checked = hashed.len() as u64;
    report.bytes_checked = hashed.iter().map(|d| d.size).sum();
    let actual: HashMap<&str, [u8; 32]> = hashed.iter().map(|d| (d.path.as_str(), d.sha256)).collect();
    for (name, exp) in &expected {
        let (status, digest) = if let Some(s) = odd.remove(name) {
            (s, None)
        } else if let Some(act) = actual.get(name.as_str()) {
            if act == exp {
                (FileStatus::Ok, Some(*act))
            } else {
                (FileStatus::Changed { expected: *exp, actual: *act }, None)
            }
        } else {
            (FileStatus::Missing { expected: *exp }, None)
        };
        report.files.push(FileCheck { path: name.clone(), status, digest });
    }
    let mut extras: Vec<FileCheck> = hashed
        .iter()
        .filter(|d| !exp_map.contains_key(d.path.as_str()))
        .map(|d| FileCheck { path: d.path.clone(), status: FileStatus::Extra { actual: d.sha256 }, digest: None })
        .chain(odd.into_iter().map(|(path, status)| FileCheck { path, status, digest: None }))
        .collect();
    extras.sort_by(|a, b| cmp_paths(&a.path, &b.path));
    report.files.extend(extras);
    Ok(report)
}

/// Is `rel` one of the paths `verify_package` skips by default? Callers that list package
/// contents (the OCI artifact builder) skip the same files the signature does.
pub fn is_default_ignored(rel: &str) -> bool {
    let ig: Vec<String> = DEFAULT_IGNORE_PATHS.iter().map(|s| s.to_string()).collect();
    crate::digest::is_ignored(rel, &ig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_dsse_spec_example() {
        // Written out by hand from the DSSE v1 definition:
        // "DSSEv1" SP len(type) SP type SP len(body) SP body, lengths in decimal bytes.
        let p = pae(b"hello world");
        assert_eq!(p, b"DSSEv1 28 application/vnd.in-toto+json 11 hello world".to_vec());
    }

    #[test]
    fn non_ascii_is_escaped_like_python() {
        // Expected strings written from Python's json.dumps("é\x7f😀") == '"\\u00e9\\u007f\\ud83d\\ude00"'.
        assert_eq!(ascii_only("\"é\u{7f}😀\"\n"), "\"\\u00e9\\u007f\\ud83d\\ude00\"\n");
        assert_eq!(ascii_only("{\"a\": \"b/c\"}"), "{\"a\": \"b/c\"}");
    }

    #[test]
    fn depth_limit_ignores_brackets_in_strings() {
        check_json_depth(br#"{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"[[["}"#, 3, "t").unwrap();
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(check_json_depth(deep.as_bytes(), 32, "t").is_err());
        check_json_depth(deep.as_bytes(), 40, "t").unwrap();
    }

    use crate::{hash_package, Curve};

    /// A package `{a.txt, sub/b}` in a tempdir.
    fn pkg() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("a.txt"), b"alpha").unwrap();
        std::fs::write(d.path().join("sub/b"), b"beta").unwrap();
        d
    }

    /// Wrap an arbitrary statement in a correctly signed bundle, to reach the checks that run
    /// after the signature.
    fn signed_bundle(key: &PrivateKey, payload: &[u8], nsigs: usize) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let sig = b64.encode(key.sign_der(&pae(payload)));
        let sigs: Vec<_> = (0..nsigs).map(|_| serde_json::json!({"sig": sig, "keyid": ""})).collect();
        serde_json::to_vec(&serde_json::json!({
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": key.public().hint()}, "tlogEntries": []},
            "dsseEnvelope": {"payload": b64.encode(payload), "payloadType": PAYLOAD_TYPE, "signatures": sigs},
        }))
        .unwrap()
    }

    /// A statement over `resources` (name, hex digest) with a correct root digest unless
    /// `root` is given.
    fn statement(resources: &[(&str, String)], ignore: &[&str], root: Option<String>, method: &str) -> Vec<u8> {
        let mut raw = Vec::new();
        for (_, d) in resources {
            raw.extend_from_slice(&hex::decode(d).unwrap());
        }
        let root = root.unwrap_or_else(|| hex::encode(Sha256::digest(&raw)));
        let res: Vec<_> =
            resources.iter().map(|(n, d)| serde_json::json!({"name": n, "algorithm": "sha256", "digest": d})).collect();
        serde_json::to_vec(&serde_json::json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "x", "digest": {"sha256": root}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {"serialization": {"method": method, "hash_type": "sha256", "allow_symlinks": false,
                "ignore_paths": ignore}, "resources": res},
        }))
        .unwrap()
    }

    fn hexsha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn verify_with(d: &Path, key: &PrivateKey, payload: &[u8], nsigs: usize) -> Result<VerifyReport, SignError> {
        std::fs::write(d.join(SIGNATURE_FILE), signed_bundle(key, payload, nsigs)).unwrap();
        verify_package(d, &key.public())
    }

    #[test]
    fn hostile_signed_statements_are_rejected() {
        let d = pkg();
        let key = PrivateKey::generate(Curve::P256);
        let good = [("a.txt", hexsha(b"alpha")), ("sub/b", hexsha(b"beta"))];
        // Control: a hand-built statement in another key order verifies.
        let r = verify_with(d.path(), &key, &statement(&good, &[], None, "files"), 1).unwrap();
        assert!(r.passed(), "{r:?}");

        for bad in ["../a.txt", "/etc/passwd", "sub\\b", "sub/./b", ""] {
            let res = [("a.txt", hexsha(b"alpha")), (bad, hexsha(b"beta"))];
            let e = verify_with(d.path(), &key, &statement(&res, &[], None, "files"), 1).unwrap_err();
            assert!(matches!(e, SignError::BadPath { .. }), "{bad:?}: {e}");
        }
        for bad in ["..", ".", "/", "x/../.."] {
            let e = verify_with(d.path(), &key, &statement(&good, &[bad], None, "files"), 1).unwrap_err();
            assert!(matches!(e, SignError::BadPath { .. }), "ignore {bad:?}: {e}");
        }
        let dup = [("a.txt", hexsha(b"alpha")), ("a.txt", hexsha(b"alpha"))];
        let e = verify_with(d.path(), &key, &statement(&dup, &[], None, "files"), 1).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
        let e = verify_with(d.path(), &key, &statement(&good, &[], Some("00".repeat(32)), "files"), 1).unwrap_err();
        assert!(e.to_string().contains("inconsistent"), "{e}");
        let e = verify_with(d.path(), &key, &statement(&good, &[], None, "shards"), 1).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        let e = verify_with(d.path(), &key, &statement(&good, &[], None, "files"), 2).unwrap_err();
        assert!(e.to_string().contains("2 signatures"), "{e}");
        let e = verify_with(d.path(), &key, &statement(&good, &[], None, "files"), 0).unwrap_err();
        assert!(e.to_string().contains("no signatures"), "{e}");
        let e = verify_with(d.path(), &key, &statement(&[], &[], None, "files"), 1).unwrap_err();
        assert!(e.to_string().contains("no resources"), "{e}");
    }

    #[test]
    fn signed_ignore_paths_are_honoured_like_model_signing() {
        let d = pkg();
        std::fs::write(d.path().join("README.md"), b"unsigned").unwrap();
        let key = PrivateKey::generate(Curve::P384);
        let good = [("a.txt", hexsha(b"alpha")), ("sub/b", hexsha(b"beta"))];
        let r = verify_with(d.path(), &key, &statement(&good, &["README.md"], None, "files"), 1).unwrap();
        assert!(r.passed(), "{r:?}");
        let r = verify_with(d.path(), &key, &statement(&good, &[], None, "files"), 1).unwrap();
        assert!(!r.passed());
        assert_eq!(r.files.last().unwrap().path, "README.md");
        assert_eq!(r.files.last().unwrap().status.name(), "extra");
    }

    #[test]
    fn precomputed_digests_must_cover_the_package_exactly() {
        let d = pkg();
        let key = PrivateKey::generate(Curve::P256);
        let digests = hash_package(d.path()).unwrap();
        let plain = sign_package(d.path(), &key, None).unwrap();
        // Given in another order: same bytes.
        let mut rev = digests.clone();
        rev.reverse();
        assert_eq!(sign_package(d.path(), &key, Some(rev)).unwrap(), plain);
        // Signing a staging copy under the final name gives the same bytes.
        let staging = tempfile::tempdir().unwrap();
        std::fs::create_dir(staging.path().join("sub")).unwrap();
        std::fs::copy(d.path().join("a.txt"), staging.path().join("a.txt")).unwrap();
        std::fs::copy(d.path().join("sub/b"), staging.path().join("sub/b")).unwrap();
        let final_name = d.path().file_name().unwrap().to_str().unwrap();
        assert_eq!(sign_package_as(staging.path(), final_name, &key, None).unwrap(), plain);
        assert_ne!(sign_package(staging.path(), &key, None).unwrap(), plain);
        let e = sign_package(d.path(), &key, Some(digests[..1].to_vec())).unwrap_err();
        assert!(e.to_string().contains("sub/b has no digest"), "{e}");
        let mut wrong = digests.clone();
        wrong[0].size += 1;
        let e = sign_package(d.path(), &key, Some(wrong)).unwrap_err();
        assert!(e.to_string().contains("bytes on disk"), "{e}");
        let mut extra = digests.clone();
        extra.push(FileDigest { path: "ghost".into(), sha256: [0; 32], size: 0 });
        let e = sign_package(d.path(), &key, Some(extra)).unwrap_err();
        assert!(e.to_string().contains("ghost is not a resource"), "{e}");
        // complete_digests hashes only what is not known, and checks what is.
        let mut fake = digests[..1].to_vec();
        fake[0].sha256 = [7; 32];
        let all = crate::complete_digests(d.path(), fake.clone()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], fake[0], "known digest reused, not recomputed");
        assert_eq!(all[1], digests[1]);
        let mut bad = digests.clone();
        bad[1].size = 99;
        assert!(crate::complete_digests(d.path(), bad).is_err());
        let mut esc = digests;
        esc[0].path = "../a.txt".into();
        assert!(matches!(sign_package(d.path(), &key, Some(esc)), Err(SignError::BadPath { .. })));
    }
}
