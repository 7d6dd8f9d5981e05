//! Certificate signing (`sign --cert`, `verify --cert-chain`), judged by OpenSSL (which makes
//! the test PKI) and `model_signing` 1.1.1 `sign certificate` / `verify certificate` (pinned
//! venv): each verifies what the other signed, the verification material is identical, and
//! both reject the same broken chains, except where model_signing is documented to be lax
//! (expired leaf, EKU or keyUsage alone), which these tests pin as such.
use crate::common;
use crate::sign_support;

use sign_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `openssl` on PATH; under `MODELPACK_REQUIRE_INTEROP` a missing one fails the test.
fn openssl() -> Option<PathBuf> {
    let ok = Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    if ok {
        return Some(PathBuf::from("openssl"));
    }
    assert!(std::env::var_os("MODELPACK_REQUIRE_INTEROP").is_none(), "interop required but no `openssl` on PATH");
    eprintln!("skipping: no openssl");
    None
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const EXT: &str = "
[root]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
[inter]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
[notca]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyCertSign
[leaf]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=codeSigning
subjectAltName=email:release@example.com,URI:https://ci.example.com/release
[wrong_eku]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=email:release@example.com
[no_ds]
basicConstraints=critical,CA:FALSE
keyUsage=critical,keyAgreement
extendedKeyUsage=codeSigning
subjectAltName=email:release@example.com
";

/// A test PKI made with the `openssl` CLI in a temporary directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ext.cnf"), EXT).unwrap();
        Pki { dir: dir.to_path_buf() }
    }
    fn p(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }
    /// A key `name.key` (PKCS#8 PEM): `EC` P-256 unless `alg` says `ED25519`.
    fn key(&self, name: &str, alg: &str) -> PathBuf {
        let out = self.p(&format!("{name}.key"));
        let mut c = Command::new("openssl");
        c.arg("genpkey");
        if alg == "EC" {
            c.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        } else {
            c.args(["-algorithm", alg]);
        }
        run(c.arg("-out").arg(&out));
        out
    }
    /// Certificate `name.pem` for key `key` with subject CN `cn`, extension section `ext`,
    /// issued by `issuer` (`None`: self-signed). `dates`: (start, end) as `YYYYMMDDHHMMSSZ`,
    /// else valid from now for 30 days.
    fn cert(
        &self,
        name: &str,
        key: &str,
        cn: &str,
        ext: &str,
        issuer: Option<&str>,
        dates: Option<(&str, &str)>,
    ) -> PathBuf {
        let csr = self.p(&format!("{name}.csr"));
        let pem = self.p(&format!("{name}.pem"));
        run(Command::new("openssl")
            .args(["req", "-new", "-key"])
            .arg(self.p(&format!("{key}.key")))
            .args(["-subj", &format!("/CN={cn}")])
            .arg("-out")
            .arg(&csr));
        let (ca_cert, ca_key) = match issuer {
            Some(i) => (self.p(&format!("{i}.pem")), self.p(&format!("{i}.key"))),
            None => (pem.clone(), self.p(&format!("{key}.key"))),
        };
        match dates {
            None => {
                let mut c = Command::new("openssl");
                c.args(["x509", "-req", "-sha256", "-days", "30", "-set_serial"])
                    .arg(format!("{}", serial(name)))
                    .arg("-in")
                    .arg(&csr);
                if issuer.is_some() {
                    c.arg("-CA").arg(&ca_cert).arg("-CAkey").arg(&ca_key);
                } else {
                    c.arg("-signkey").arg(&ca_key);
                }
                run(c.arg("-extfile").arg(self.p("ext.cnf")).args(["-extensions", ext]).arg("-out").arg(&pem));
            }
            Some((start, end)) => {
                // `openssl ca` is the CLI that sets arbitrary validity dates.
                let db = self.p(&format!("{name}.db"));
                std::fs::create_dir_all(&db).unwrap();
                std::fs::write(db.join("index.txt"), "").unwrap();
                std::fs::write(db.join("serial"), format!("{:04X}\n", serial(name))).unwrap();
                let cnf = format!(
                    "[ca]\ndefault_ca=d\n[d]\ndatabase={0}/index.txt\nnew_certs_dir={0}\nserial={0}/serial\n\
                     default_md=sha256\npolicy=pol\nunique_subject=no\ncopy_extensions=none\n[pol]\ncommonName=supplied\n{EXT}",
                    db.display()
                );
                std::fs::write(db.join("ca.cnf"), cnf).unwrap();
                let mut c = Command::new("openssl");
                c.args(["ca", "-batch", "-notext", "-config"]).arg(db.join("ca.cnf")).args([
                    "-startdate",
                    start,
                    "-enddate",
                    end,
                ]);
                if issuer.is_some() {
                    c.arg("-cert").arg(&ca_cert);
                } else {
                    c.arg("-selfsign");
                }
                run(c
                    .arg("-keyfile")
                    .arg(&ca_key)
                    .args(["-extensions", ext])
                    .arg("-in")
                    .arg(&csr)
                    .arg("-out")
                    .arg(&pem));
            }
        }
        pem
    }
}

fn serial(name: &str) -> u32 {
    name.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) & 0x7fff_ffff
}

fn ms(py: &Path) -> PathBuf {
    py.parent().unwrap().join("model_signing")
}

/// `model_signing sign certificate`.
fn ms_sign(py: &Path, pkg: &Path, key: &Path, leaf: &Path, chain: &[&Path]) {
    let mut c = Command::new(ms(py));
    c.args(["sign", "certificate"]).arg(pkg).arg("--private_key").arg(key).arg("--signing_certificate").arg(leaf);
    for p in chain {
        c.arg("--certificate_chain").arg(p);
    }
    run(c.arg("--signature").arg(pkg.join("model.sig")));
}

/// `model_signing verify certificate`: (accepted, output).
fn ms_verify(py: &Path, pkg: &Path, roots: &Path) -> (bool, String) {
    let out = Command::new(ms(py))
        .args(["verify", "certificate"])
        .arg(pkg)
        .arg("--signature")
        .arg(pkg.join("model.sig"))
        .arg("--certificate_chain")
        .arg(roots)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains("Verification succeeded"), text)
}

fn mp_sign(pkg: &Path, key: &Path, leaf: &Path, chain: &[&Path]) -> std::process::Output {
    let mut c = common::modelpack();
    c.arg("sign").arg(pkg).arg("--key").arg(key).arg("--cert").arg(leaf);
    for p in chain {
        c.arg("--cert-chain").arg(p);
    }
    c.output().unwrap()
}

/// `modelpack verify --cert-chain roots [extra] --json`: (exit code, document).
fn mp_verify(pkg: &Path, roots: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = common::modelpack()
        .arg("verify")
        .arg(pkg)
        .arg("--cert-chain")
        .arg(roots)
        .args(extra)
        .arg("--json")
        .output()
        .unwrap();
    let doc =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), doc)
}

/// The text of a failure: chain error, signature error or error message.
fn reason(doc: &serde_json::Value) -> String {
    format!("{} {} {}", doc["chain_error"], doc["signature"]["error"], doc["error"])
}

fn der_b64(pem: &Path) -> String {
    let out = Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(pem).output().unwrap();
    b64_encode(&out.stdout)
}

/// A good PKI: root -> intermediate -> leaf (codeSigning), and a foreign root of the same name.
fn good_pki(t: &Path) -> Pki {
    let pki = Pki::new(&t.join("pki"));
    for k in ["root", "inter", "leaf", "other"] {
        pki.key(k, "EC");
    }
    pki.cert("root", "root", "Test Root CA", "root", None, None);
    pki.cert("inter", "inter", "Test Intermediate", "inter", Some("root"), None);
    pki.cert("leaf", "leaf", "release-bot", "leaf", Some("inter"), None);
    pki.cert("other", "other", "Test Root CA", "root", None, None);
    pki
}

#[test]
fn both_ways_with_model_signing_and_identical_material() {
    let Some(_) = openssl() else { return };
    let Some(py) = common::python() else { return };
    let t = tempfile::tempdir().unwrap();
    let pki = good_pki(t.path());
    let (ours, theirs) = (t.path().join("ours/pkg"), t.path().join("theirs/pkg"));
    write_pkg(&ours, 0);
    write_pkg(&theirs, 0);
    let out = mp_sign(&ours, &pki.p("leaf.key"), &pki.p("leaf.pem"), &[&pki.p("inter.pem")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ms_sign(&py, &theirs, &pki.p("leaf.key"), &pki.p("leaf.pem"), &[&pki.p("inter.pem")]);

    // The verification material is byte-for-byte what model_signing writes, and it is the
    // leaf then the intermediate as OpenSSL encodes them.
    let bundle = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p.join("model.sig")).unwrap()).unwrap()
    };
    let (ob, tb) = (bundle(&ours), bundle(&theirs));
    assert_eq!(ob["verificationMaterial"], tb["verificationMaterial"]);
    assert_eq!(ob["mediaType"], tb["mediaType"]);
    let certs = &ob["verificationMaterial"]["x509CertificateChain"]["certificates"];
    assert_eq!(certs[0]["rawBytes"], der_b64(&pki.p("leaf.pem")));
    assert_eq!(certs[1]["rawBytes"], der_b64(&pki.p("inter.pem")));
    assert!(ob["verificationMaterial"].get("publicKey").is_none());

    // Each verifies the other's.
    for pkg in [&ours, &theirs] {
        let (ok, text) = ms_verify(&py, pkg, &pki.p("root.pem"));
        assert!(ok, "{}: {text}", pkg.display());
        let (code, doc) = mp_verify(pkg, &pki.p("root.pem"), &[]);
        assert_eq!(code, 0, "{doc}");
        assert_eq!(doc["root_digest"], expected_root(pkg));
        assert_eq!(doc["signer"]["identity"], "email:release@example.com");
        let subjects: Vec<_> =
            doc["signer"]["chain"].as_array().unwrap().iter().map(|c| c["subject"].clone()).collect();
        assert_eq!(subjects, ["CN=release-bot", "CN=Test Intermediate", "CN=Test Root CA"]);
        let hint = sha(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(pki.p("leaf.key"))
            .output()
            .unwrap()
            .stdout
            .as_slice());
        assert_eq!(doc["signer"]["key_hint"], hint);
    }

    // Identity pinning.
    for good in ["release@example.com", "email:release@example.com", "https://ci.example.com/release", "cn:release-bot"]
    {
        assert_eq!(mp_verify(&theirs, &pki.p("root.pem"), &["--cert-identity", good]).0, 0, "{good}");
    }
    let (code, doc) = mp_verify(&theirs, &pki.p("root.pem"), &["--cert-identity", "mallory@example.com"]);
    assert_eq!(code, 1);
    assert!(reason(&doc).contains("identity mismatch"), "{doc}");

    // Tampering after a valid chain is still caught.
    std::fs::write(theirs.join("a/b.bin"), b"other").unwrap();
    assert_eq!(mp_verify(&theirs, &pki.p("root.pem"), &[]).0, 1);

    // A certificate bundle checked with --key, or a key bundle with --cert-chain: exit 2.
    let out = common::modelpack().arg("verify").arg(&ours).arg("--key").arg(pki.p("leaf.pem")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn broken_chains_are_rejected_like_model_signing_or_stricter() {
    let Some(_) = openssl() else { return };
    let Some(py) = common::python() else { return };
    let t = tempfile::tempdir().unwrap();
    let pki = good_pki(t.path());
    // An old PKI: root and intermediate valid 2019-2040, a leaf valid only during 2020.
    for k in ["oroot", "ointer", "oleaf", "weku", "nods", "notca", "nleaf"] {
        pki.key(k, "EC");
    }
    pki.cert("oroot", "oroot", "Old Root", "root", None, Some(("20190101000000Z", "20400101000000Z")));
    pki.cert(
        "ointer",
        "ointer",
        "Old Intermediate",
        "inter",
        Some("oroot"),
        Some(("20190101000000Z", "20400101000000Z")),
    );
    pki.cert("oleaf", "oleaf", "old-bot", "leaf", Some("ointer"), Some(("20200101000000Z", "20210101000000Z")));
    pki.cert("weku", "weku", "web-server", "wrong_eku", Some("inter"), None);
    pki.cert("nods", "nods", "no-ds", "no_ds", Some("inter"), None);
    pki.cert("notca", "notca", "Not A CA", "notca", Some("root"), None);
    pki.cert("nleaf", "nleaf", "under-non-ca", "leaf", Some("notca"), None);

    // (name, key, leaf, chain, roots, model_signing accepts?, our reason)
    /// (name, key, leaf, chain, roots, model_signing accepts?, our reason)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<&'a str>, &'a str, bool, &'a str);
    let cases: Vec<Case> = vec![
        (
            "foreign root of the same name",
            "leaf",
            "leaf",
            vec!["inter"],
            "other",
            false,
            "does not verify with the trusted",
        ),
        (
            "intermediate missing from the bundle",
            "leaf",
            "leaf",
            vec!["other"],
            "root",
            false,
            "no path to a trusted root",
        ),
        ("issuer is not a CA", "nleaf", "nleaf", vec!["notca"], "root", false, "not a CA"),
        // model_signing checks the chain at the leaf's notBefore, so an expired leaf passes it.
        ("expired leaf", "oleaf", "oleaf", vec!["ointer"], "oroot", true, "expired"),
        // model_signing accepts keyUsage digitalSignature OR the codeSigning EKU.
        ("serverAuth instead of codeSigning", "weku", "weku", vec!["inter"], "root", true, "codeSigning"),
        ("codeSigning without digitalSignature", "nods", "nods", vec!["inter"], "root", true, "digitalSignature"),
    ];
    for (name, key, leaf, chain, root, ms_accepts, why) in cases {
        let pkg = t.path().join(format!("case-{}", name.replace(' ', "-")));
        write_pkg(&pkg, 1);
        let chain: Vec<PathBuf> = chain.iter().map(|c| pki.p(&format!("{c}.pem"))).collect();
        let chain_refs: Vec<&Path> = chain.iter().map(|p| p.as_path()).collect();
        // Signed by model_signing (the reference signer), so the bundle is not ours.
        ms_sign(&py, &pkg, &pki.p(&format!("{key}.key")), &pki.p(&format!("{leaf}.pem")), &chain_refs);
        let roots = pki.p(&format!("{root}.pem"));
        let (ms_ok, text) = ms_verify(&py, &pkg, &roots);
        assert_eq!(ms_ok, ms_accepts, "{name}: model_signing: {text}");
        let (code, doc) = mp_verify(&pkg, &roots, &[]);
        assert_eq!(code, 1, "{name}: {doc}");
        assert!(reason(&doc).contains(why), "{name}: {doc}");
        // And our signer writes the same bundle, rejected the same way.
        let ours = t.path().join(format!("ours-{}", name.replace(' ', "-")));
        write_pkg(&ours, 1);
        assert!(mp_sign(&ours, &pki.p(&format!("{key}.key")), &pki.p(&format!("{leaf}.pem")), &chain_refs)
            .status
            .success());
        assert_eq!(ms_verify(&py, &ours, &roots).0, ms_accepts, "{name}: model_signing on ours");
        assert_eq!(mp_verify(&ours, &roots, &[]).0, 1, "{name}");
    }
}

#[test]
fn loops_depth_and_unusable_certificates() {
    let Some(_) = openssl() else { return };
    let t = tempfile::tempdir().unwrap();
    let pki = good_pki(t.path());
    let pkg = t.path().join("pkg");
    write_pkg(&pkg, 2);

    // Loop: A' (subject A, issued by B) and B' (subject B, issued by A); leaf issued by A.
    for k in ["a", "b", "lleaf"] {
        pki.key(k, "EC");
    }
    pki.cert("a0", "a", "CA A", "inter", None, None);
    pki.cert("b0", "b", "CA B", "inter", None, None);
    std::fs::copy(pki.p("a.key"), pki.p("a0.key")).unwrap();
    std::fs::copy(pki.p("b.key"), pki.p("b0.key")).unwrap();
    let a1 = pki.cert("a1", "a", "CA A", "inter", Some("b0"), None);
    let b1 = pki.cert("b1", "b", "CA B", "inter", Some("a0"), None);
    pki.cert("lleaf", "lleaf", "loop-bot", "leaf", Some("a0"), None);
    let loop_chain = t.path().join("loop.pem");
    std::fs::write(&loop_chain, [std::fs::read(&a1).unwrap(), std::fs::read(&b1).unwrap()].concat()).unwrap();
    assert!(mp_sign(&pkg, &pki.p("lleaf.key"), &pki.p("lleaf.pem"), &[&loop_chain]).status.success());
    let (code, doc) = mp_verify(&pkg, &pki.p("root.pem"), &[]);
    assert_eq!(code, 1, "{doc}");
    assert!(reason(&doc).contains("loops back"), "{doc}");

    // 100 intermediates deep: refused by size before any signature work; 9 deep: path limit.
    let mut prev = "root".to_string();
    let mut all = Vec::new();
    for i in 0..100 {
        let name = format!("d{i}");
        pki.key(&name, "EC");
        all.push(pki.cert(&name, &name, &format!("Deep {i}"), "inter", Some(&prev), None));
        prev = name;
    }
    pki.key("dleaf", "EC");
    pki.cert("dleaf", "dleaf", "deep-bot", "leaf", Some("d99"), None);
    let deep = t.path().join("deep.pem");
    std::fs::write(&deep, all.iter().rev().flat_map(|p| std::fs::read(p).unwrap()).collect::<Vec<u8>>()).unwrap();
    assert!(mp_sign(&pkg, &pki.p("dleaf.key"), &pki.p("dleaf.pem"), &[&deep]).status.success());
    let (code, doc) = mp_verify(&pkg, &pki.p("root.pem"), &[]);
    assert_eq!(code, 1, "{doc}");
    assert!(reason(&doc).contains("101 certificates"), "{doc}");
    pki.key("d9leaf", "EC");
    pki.cert("d9leaf", "d9leaf", "nine-bot", "leaf", Some("d8"), None);
    let nine = t.path().join("nine.pem");
    std::fs::write(&nine, all[..9].iter().rev().flat_map(|p| std::fs::read(p).unwrap()).collect::<Vec<u8>>()).unwrap();
    assert!(mp_sign(&pkg, &pki.p("d9leaf.key"), &pki.p("d9leaf.pem"), &[&nine]).status.success());
    let (code, doc) = mp_verify(&pkg, &pki.p("root.pem"), &[]);
    assert_eq!(code, 1, "{doc}");
    assert!(reason(&doc).contains("longer than 8"), "{doc}");
    // Control: 5 deep verifies.
    pki.key("d5leaf", "EC");
    pki.cert("d5leaf", "d5leaf", "five-bot", "leaf", Some("d4"), None);
    let five = t.path().join("five.pem");
    std::fs::write(&five, all[..5].iter().rev().flat_map(|p| std::fs::read(p).unwrap()).collect::<Vec<u8>>()).unwrap();
    assert!(mp_sign(&pkg, &pki.p("d5leaf.key"), &pki.p("d5leaf.pem"), &[&five]).status.success());
    assert_eq!(mp_verify(&pkg, &pki.p("root.pem"), &[]).0, 0);

    // A good bundle whose leaf is swapped for an Ed25519 certificate, or for garbage: exit 2.
    assert!(mp_sign(&pkg, &pki.p("leaf.key"), &pki.p("leaf.pem"), &[&pki.p("inter.pem")]).status.success());
    pki.key("ed", "ED25519");
    pki.cert("ed", "ed", "ed-bot", "leaf", Some("inter"), None);
    let sig = pkg.join("model.sig");
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    for (name, raw, why) in [
        ("ed25519", der_b64(&pki.p("ed.pem")), "Ed25519 key not supported"),
        ("garbage", b64_encode(b"\x30\x03\x02\x01\x00"), "not a valid X.509"),
    ] {
        let mut b = good.clone();
        b["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"] = raw.into();
        std::fs::write(&sig, serde_json::to_vec(&b).unwrap()).unwrap();
        let (code, doc) = mp_verify(&pkg, &pki.p("root.pem"), &[]);
        assert_eq!(code, 2, "{name}: {doc}");
        assert!(reason(&doc).contains(why), "{name}: {doc}");
    }

    // Signing: a certificate of another key, an Ed25519 key, a key file given as certificate.
    let out = mp_sign(&pkg, &pki.p("other.key"), &pki.p("leaf.pem"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another public key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mp_sign(&pkg, &pki.p("leaf.key"), &pki.p("leaf.key"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no PEM CERTIFICATE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Roots file with only an intermediate: no self-signed anchor.
    std::fs::write(&sig, serde_json::to_vec(&good).unwrap()).unwrap();
    assert_eq!(mp_verify(&pkg, &pki.p("root.pem"), &[]).0, 0);
    let (code, doc) = mp_verify(&pkg, &pki.p("inter.pem"), &[]);
    assert_eq!(code, 1, "{doc}");
    assert!(reason(&doc).contains("self-signed root"), "{doc}");
}

#[test]
fn quantize_signs_with_a_certificate() {
    let Some(_) = openssl() else { return };
    let t = tempfile::tempdir().unwrap();
    let pki = good_pki(t.path());
    let out = t.path().join("out");
    let leaf_key = pki.p("leaf.key");
    let leaf = pki.p("leaf.pem");
    let inter = pki.p("inter.pem");
    common::quantize(
        &common::fixture("tiny-llama"),
        &out,
        &[
            "--target",
            "cpu",
            "--scheme",
            "int8",
            "--sign-key",
            leaf_key.to_str().unwrap(),
            "--sign-cert",
            leaf.to_str().unwrap(),
            "--sign-cert-chain",
            inter.to_str().unwrap(),
        ],
    );
    let (code, doc) = mp_verify(&out, &pki.p("root.pem"), &["--cert-identity", "release@example.com"]);
    assert_eq!(code, 0, "{doc}");
    if let Some(py) = common::python() {
        let (ok, text) = ms_verify(&py, &out, &pki.p("root.pem"));
        assert!(ok, "{text}");
    }
}

#[test]
fn encrypted_keys_from_keygen() {
    let Some(_) = openssl() else { return };
    let t = tempfile::tempdir().unwrap();
    let pw = t.path().join("pw");
    std::fs::write(&pw, "correct horse battery\n").unwrap();
    let base = t.path().join("k");
    let out = common::modelpack()
        .arg("keygen")
        .arg("-o")
        .arg(&base)
        .arg("--password-file")
        .arg(&pw)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("PRIVATE KEY") && !text.contains("horse"), "key or password printed: {text}");
    let (key, public) = (base.with_extension("pem"), base.with_extension("pub"));
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"), "{pem}");
    // OpenSSL decrypts it with the password (without the file's trailing newline) and derives
    // the public key keygen wrote; it names the scheme.
    let o = Command::new("openssl")
        .args(["pkey", "-pubout", "-passin", "pass:correct horse battery", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, std::fs::read(&public).unwrap());
    let o = Command::new("openssl").args(["asn1parse", "-in"]).arg(&key).output().unwrap();
    let asn = String::from_utf8_lossy(&o.stdout);
    assert!(asn.contains("PBKDF2") && asn.contains("aes-256-cbc") && asn.contains("hmacWithSHA256"), "{asn}");

    let pkg = t.path().join("pkg");
    write_pkg(&pkg, 3);
    let sign = |extra: &[&std::ffi::OsStr]| {
        common::modelpack().arg("sign").arg(&pkg).arg("--key").arg(&key).args(extra).output().unwrap()
    };
    let out = sign(&["--password-file".as_ref(), pw.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    common::modelpack().arg("verify").arg(&pkg).arg("--key").arg(&public).assert().success();
    let bad = t.path().join("bad");
    std::fs::write(&bad, "wrong").unwrap();
    let out = sign(&["--password-file".as_ref(), bad.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong password") && !err.contains("wrong\n") && !err.contains("PRIVATE"), "{err}");
    let out = sign(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a password"));

    // model_signing 1.1.1 reads our encrypted key through its API. (Its CLI cannot read any
    // encrypted key: `sign key --password` hands a str to `cryptography`, which wants bytes,
    // and `sign certificate` has no password option.)
    if let Some(py) = common::python() {
        let p2 = t.path().join("pkg2");
        write_pkg(&p2, 3);
        let script = "import sys, model_signing\n\
            model_signing.signing.Config().use_elliptic_key_signer(private_key=sys.argv[1], password=sys.argv[2].encode())\
            .sign(sys.argv[3], sys.argv[3] + '/model.sig')";
        common::run_python(&py, script, &[key.as_os_str(), "correct horse battery".as_ref(), p2.as_os_str()]);
        common::modelpack().arg("verify").arg(&p2).arg("--key").arg(&public).assert().success();
    }
}
