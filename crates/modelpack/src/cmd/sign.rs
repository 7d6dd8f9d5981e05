//! `modelpack keygen | sign | verify`: thin wrappers over `modelpack_sign`.
use crate::exit::{Classify, CmdError, CmdResult, OK, VERIFY_FAILED};
use anyhow::Context as _;
use modelpack_sign::x509::{Cert, ChainPolicy};
use modelpack_sign::{CertMaterial, Curve, FileStatus, PrivateKey, PublicKey, Trust, VerifyReport};
use serde_json::json;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Curves offered by `keygen`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CurveArg {
    /// NIST P-256 with SHA-256 (default).
    P256,
    /// NIST P-384 with SHA-384.
    P384,
}

/// Arguments of `modelpack keygen`.
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Output name: writes NAME.pem (private, mode 0600) and NAME.pub; never overwrites.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Elliptic curve; it also fixes the signature hash.
    #[arg(long, value_enum, default_value = "p256")]
    pub curve: CurveArg,
    /// Encrypt the private key (PKCS#8, PBKDF2-SHA256 + AES-256-CBC) with this password.
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where the password of an encrypted private key comes from (never the command line).
#[derive(clap::Args)]
pub struct PasswordArgs {
    /// Read the key's password from this file (one trailing newline is ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// Read the key's password from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

/// Arguments of `modelpack sign`.
#[derive(clap::Args)]
pub struct SignArgs {
    /// Package directory.
    pub package: PathBuf,
    /// Private key (PEM: PKCS#8, encrypted PKCS#8 or SEC1).
    #[arg(long)]
    pub key: PathBuf,
    #[command(flatten)]
    /// Password source for an encrypted key.
    pub password: PasswordArgs,
    /// X.509 certificate of --key (PEM); the bundle then carries it and --cert-chain, as
    /// `model_signing sign certificate` writes them.
    #[arg(long, value_name = "LEAF.pem")]
    pub cert: Option<PathBuf>,
    /// Intermediate CA certificates (PEM, repeatable, several per file allowed), leaf's issuer
    /// first. Do not include the root: verifiers bring their own.
    #[arg(long, value_name = "INTERMEDIATES.pem", requires = "cert")]
    pub cert_chain: Vec<PathBuf>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `modelpack verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Package directory.
    pub package: PathBuf,
    /// Public key (SPKI PEM), for packages signed with a plain key.
    #[arg(long, required_unless_present = "cert_chain", conflicts_with = "cert_chain")]
    pub key: Option<PathBuf>,
    /// Trusted root certificate(s) (PEM, repeatable), for packages signed with a certificate:
    /// the bundle's leaf and intermediates must lead to one of them.
    #[arg(long, value_name = "ROOTS.pem")]
    pub cert_chain: Vec<PathBuf>,
    /// Require this signer identity: the leaf's SAN email or URI, or its subject CN (with or
    /// without an `email:` / `uri:` / `cn:` prefix).
    #[arg(long, value_name = "VALUE", requires = "cert_chain")]
    pub cert_identity: Option<String>,
    /// After the signature and files check out, re-run the recipe recorded in modelpack.json
    /// on this source checkpoint (in a temporary directory) and require byte-identical files.
    #[arg(long, value_name = "SOURCE")]
    pub rebuild: Option<PathBuf>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run `keygen`.
pub fn keygen(a: KeygenArgs) -> CmdResult {
    let curve = match a.curve {
        CurveArg::P256 => Curve::P256,
        CurveArg::P384 => Curve::P384,
    };
    let base = a.output.as_os_str().to_owned();
    let pem_path = PathBuf::from({
        let mut s = base.clone();
        s.push(".pem");
        s
    });
    let pub_path = PathBuf::from({
        let mut s = base;
        s.push(".pub");
        s
    });
    for p in [&pem_path, &pub_path] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(CmdError::usage(format!("{} already exists; refusing to overwrite", p.display())));
        }
    }
    let password = read_password(&a.password)?;
    if password.as_ref().is_some_and(|p| p.is_empty()) {
        return Err(CmdError::usage("the password is empty; refusing to write a key encrypted with it"));
    }
    let key = PrivateKey::generate(curve);
    let public = key.public();
    let pem = match &password {
        None => key.to_pkcs8_pem(),
        Some(pw) => key.to_encrypted_pkcs8_pem(pw).internal()?,
    };
    write_new(&pem_path, pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&pub_path, public.to_pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&pem_path);
        return Err(e);
    }
    let encrypted = password.is_some();
    eprintln!(
        "wrote {} (private{}, 0600) and {} ({curve}, key hint {})",
        pem_path.display(),
        if encrypted { ", encrypted" } else { "" },
        pub_path.display(),
        public.hint()
    );
    if a.json {
        println!(
            "{}",
            json!({
                "status": "ok",
                "curve": curve.name(),
                "private_key": pem_path,
                "encrypted": encrypted,
                "public_key": pub_path,
                "key_hint": public.hint(),
            })
        );
    }
    Ok(OK)
}

/// Create `path` exclusively with `mode` (so a private key is never briefly world-readable).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CmdError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).with_context(|| format!("cannot create {}", path.display())).input()?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
        .internal()
}

/// The password for an encrypted key, from a file or an environment variable. A single
/// trailing newline (`\n` or `\r\n`) is not part of the password.
fn read_password(p: &PasswordArgs) -> Result<Option<Vec<u8>>, CmdError> {
    let mut pw = if let Some(f) = &p.password_file {
        std::fs::read(f).with_context(|| format!("cannot read password file {}", f.display())).input()?
    } else if let Some(var) = &p.password_env {
        let v = std::env::var_os(var)
            .ok_or_else(|| CmdError::usage(format!("environment variable {var} (--password-env) is not set")))?;
        v.into_encoded_bytes()
    } else {
        return Ok(None);
    };
    if pw.ends_with(b"\n") {
        pw.pop();
        if pw.ends_with(b"\r") {
            pw.pop();
        }
    }
    Ok(Some(pw))
}

/// Load a private key, warning when its file is readable by group or others.
pub fn load_private_key(path: &Path, password: &PasswordArgs) -> Result<PrivateKey, CmdError> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read private key {}", path.display())).input()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: private key {} is readable by group or others (mode {mode:04o}); chmod 600 it",
                    path.display()
                );
            }
        }
    }
    let pw = read_password(password)?;
    PrivateKey::from_pem(&text, pw.as_deref()).with_context(|| format!("private key {}", path.display())).input()
}

/// Read every certificate of a PEM file.
fn read_certs(path: &Path) -> Result<Vec<Cert>, CmdError> {
    let text =
        std::fs::read(path).with_context(|| format!("cannot read certificate file {}", path.display())).input()?;
    Cert::from_pem(&text, &path.display().to_string()).input()
}

/// The leaf (first certificate of `leaf`) and the intermediates of `chain` for signing with
/// `key`; the leaf must certify `key`. Leaf problems a verifier will reject (expired, no
/// codeSigning EKU, ...) are warned about, not refused: the CA's policy is the verifier's call.
pub fn load_cert_material(key: &PrivateKey, leaf: &Path, chain: &[PathBuf]) -> Result<CertMaterial, CmdError> {
    let mut leafs = read_certs(leaf)?;
    if leafs.len() > 1 {
        eprintln!(
            "warning: {} holds {} certificates; the first ({}) is the signing certificate, pass the others \
             with --cert-chain",
            leaf.display(),
            leafs.len(),
            leafs[0].subject()
        );
    }
    let leaf_cert = leafs.swap_remove(0);
    let mut inter = Vec::new();
    for p in chain {
        inter.extend(read_certs(p)?);
    }
    if let Err(e) = modelpack_sign::x509::check_leaf(&leaf_cert, std::time::SystemTime::now()) {
        eprintln!("warning: verifiers will reject this certificate: {e}");
    }
    CertMaterial::new(leaf_cert, inter, key).with_context(|| format!("certificate {}", leaf.display())).input()
}

/// Run `sign`.
pub fn sign(a: SignArgs) -> CmdResult {
    let key = load_private_key(&a.key, &a.password)?;
    let certs = a.cert.as_deref().map(|c| load_cert_material(&key, c, &a.cert_chain)).transpose()?;
    let digests = modelpack_sign::hash_package(&a.package)
        .with_context(|| format!("cannot hash package {}", a.package.display()))
        .input()?;
    let root = hex::encode(modelpack_sign::root_digest(digests.iter().map(|d| &d.sha256)));
    let files = digests.len();
    let bytes: u64 = digests.iter().map(|d| d.size).sum();
    let name = modelpack_sign::model_name(&a.package);
    let bundle = modelpack_sign::sign_package_with(&a.package, &name, &key, certs.as_ref(), Some(digests))
        .with_context(|| format!("cannot sign {}", a.package.display()))
        .input()?;
    modelpack_sign::write_signature(&a.package, &bundle).internal()?;
    let sig_path = a.package.join(modelpack_sign::SIGNATURE_FILE);
    let hint = key.public().hint();
    let signer = certs.as_ref().map(|c| {
        json!({
            "identities": c.leaf().identities(),
            "chain": std::iter::once(c.leaf()).chain(c.chain()).map(|c| json!({"subject": c.subject(), "sha256": c.fingerprint()})).collect::<Vec<_>>(),
        })
    });
    match &certs {
        None => eprintln!(
            "signed {files} files ({bytes} bytes) of {}: root digest {root}, key hint {hint}",
            a.package.display()
        ),
        Some(c) => eprintln!(
            "signed {files} files ({bytes} bytes) of {} as {} (certificate {:?}, {} intermediate(s)): root digest {root}",
            a.package.display(),
            c.leaf().identities().first().map_or("-", |s| s.as_str()),
            c.leaf().subject(),
            c.chain().len()
        ),
    }
    if a.json {
        println!(
            "{}",
            json!({
                "status": "ok",
                "signature": sig_path,
                "method": if certs.is_some() { "certificate" } else { "key" },
                "signer": signer,
                "key_hint": hint,
                "root_digest": root,
                "counts": {"files": files, "bytes": bytes},
                "hashing": hashing_json(),
            })
        );
    }
    Ok(OK)
}

/// Run `verify`.
pub fn verify(a: VerifyArgs) -> CmdResult {
    let trust = match &a.key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read public key {}", path.display()))
                .input()?;
            Trust::Key(PublicKey::from_pem(&text).with_context(|| format!("public key {}", path.display())).input()?)
        }
        None => {
            let mut roots = Vec::new();
            for p in &a.cert_chain {
                roots.extend(read_certs(p)?);
            }
            Trust::Chain(ChainPolicy { roots, identity: a.cert_identity.clone(), time: std::time::SystemTime::now() })
        }
    };
    if let Some(target) = modelpack::package::staging_target(&a.package) {
        return Err(CmdError {
            code: VERIFY_FAILED,
            error: anyhow::anyhow!(
                "{} is the staging directory of an unfinished modelpack run writing {target:?}, not a package; \
                 the next run into {target:?} removes it",
                a.package.display()
            ),
        });
    }
    let report = modelpack_sign::verify_package_trust(&a.package, &trust)
        .with_context(|| format!("cannot verify {}", a.package.display()))
        .input()?;
    print_human(&a.package, &report);
    let mut doc = report_json(&report);
    let mut passed = report.passed();
    if let Some(source) = &a.rebuild {
        if passed {
            let rb = modelpack::rebuild::rebuild(&a.package, source).map_err(|e| {
                let code = if e.is_input() { crate::exit::USAGE } else { crate::exit::INTERNAL };
                CmdError {
                    code,
                    error: anyhow::Error::new(e).context(format!("cannot rebuild {}", a.package.display())),
                }
            })?;
            for f in rb.files.iter().filter(|f| f.status != "same") {
                eprintln!(
                    "rebuild: {} {} (package {}, rebuilt {})",
                    f.status,
                    f.path,
                    f.package_sha256.as_deref().unwrap_or("-"),
                    f.rebuilt_sha256.as_deref().unwrap_or("-")
                );
            }
            if rb.identical() {
                eprintln!(
                    "REBUILT {}: {} files byte-identical from {} ({} source digests checked)",
                    a.package.display(),
                    rb.files.len(),
                    source.display(),
                    rb.source_files_checked
                );
            } else {
                eprintln!("FAILED {}: the rebuild from {} differs", a.package.display(), source.display());
                passed = false;
                doc["status"] = "failed".into();
            }
            doc["rebuild"] = json!({"identical": rb.identical(), "source_files_checked": rb.source_files_checked, "files": rb.files});
        } else {
            eprintln!("rebuild skipped: the package did not verify");
            doc["rebuild"] = json!({"identical": null, "skipped": "the package did not verify"});
        }
    }
    if a.json {
        println!("{doc}");
    }
    Ok(if passed { OK } else { VERIFY_FAILED })
}

fn hex_opt(d: Option<[u8; 32]>) -> serde_json::Value {
    d.map_or(serde_json::Value::Null, |d| hex::encode(d).into())
}

/// How the files were hashed, so throughput figures from different machines compare: the
/// SHA-256 code (`sha-ni x2`: two files per core interleaved; `sha-ni`; `software`) and the
/// worker threads.
fn hashing_json() -> serde_json::Value {
    json!({"sha256": modelpack_sign::sha256_impl().name(), "threads": rayon::current_num_threads()})
}

/// The stable `--json` document of `verify`.
fn report_json(r: &VerifyReport) -> serde_json::Value {
    let files: Vec<_> = r
        .files
        .iter()
        .map(|f| {
            let (expected, actual) = match f.status {
                FileStatus::Ok => (f.digest, f.digest),
                ref s => (s.expected(), s.actual()),
            };
            json!({"path": f.path, "status": f.status.name(), "expected": hex_opt(expected), "actual": hex_opt(actual)})
        })
        .collect();
    let count = |name: &str| r.files.iter().filter(|f| f.status.name() == name).count();
    json!({
        "status": if r.passed() { "ok" } else { "failed" },
        "signature": {"ok": r.signature_error.is_none(), "error": r.signature_error},
        "method": if r.chain.is_some() || r.chain_error.is_some() { "certificate" } else { "key" },
        "signer": r.chain.as_ref().map(|c| json!({
            "identity": c.identities.first(),
            "identities": c.identities,
            "chain": c.subjects.iter().zip(&c.fingerprints).map(|(s, f)| json!({"subject": s, "sha256": f})).collect::<Vec<_>>(),
            "key_hint": r.key_hint,
        })),
        "chain_error": r.chain_error.as_ref().map(|e| e.to_string()),
        "key_hint": r.key_hint,
        "bundle_key_hint": r.bundle_key_hint,
        "root_digest": r.root_digest,
        "files": files,
        "counts": {
            "files_checked": r.files_checked,
            "bytes_checked": r.bytes_checked,
            "ok": count("ok"),
            "changed": count("changed"),
            "missing": count("missing"),
            "extra": count("extra"),
            "symlink": count("symlink"),
            "special": count("special"),
        },
        "hashing": hashing_json(),
    })
}

fn print_human(pkg: &Path, r: &VerifyReport) {
    let h = |d: Option<[u8; 32]>| d.map_or_else(|| "-".to_string(), hex::encode);
    if let Some(e) = &r.signature_error {
        eprintln!("FAILED {}: signature: {e}", pkg.display());
        return;
    }
    for f in &r.files {
        let s = &f.status;
        match s {
            FileStatus::Ok => {}
            FileStatus::Changed { .. } => {
                eprintln!("changed: {} expected {} actual {}", f.path, h(s.expected()), h(s.actual()))
            }
            FileStatus::Missing { .. } => {
                eprintln!("missing: {} expected {}", f.path, h(s.expected()))
            }
            FileStatus::Extra { .. } => eprintln!("extra:   {} actual {}", f.path, h(s.actual())),
            FileStatus::Symlink { .. } => {
                eprintln!("symlink: {} (not followed) expected {}", f.path, h(s.expected()))
            }
            FileStatus::Special { .. } => {
                eprintln!("special: {} (not a regular file) expected {}", f.path, h(s.expected()))
            }
        }
    }
    let bad = r.files.iter().filter(|f| f.status != FileStatus::Ok).count();
    let root = r.root_digest.as_deref().unwrap_or("-");
    let by = match &r.chain {
        Some(c) => format!(
            "signer {}, chain {}",
            c.identities.first().map_or("-", |s| s.as_str()),
            c.subjects.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" <- ")
        ),
        None => format!("key hint {}", r.key_hint),
    };
    if bad == 0 {
        eprintln!(
            "OK {}: signature valid ({by}), {} files, {} bytes match; root digest {root}",
            pkg.display(),
            r.files_checked,
            r.bytes_checked
        );
    } else {
        eprintln!("FAILED {}: signature valid but {bad} file(s) do not match; root digest {root}", pkg.display());
    }
}
