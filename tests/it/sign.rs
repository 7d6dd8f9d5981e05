//! End-to-end tests of `modelpack keygen | sign | verify`: round trip, determinism, the JSON
//! report, every tamper case naming its cause, key handling and malformed input.
use crate::common;
use crate::sign_support;

use sign_support::*;
use std::path::Path;

fn verify_json(pkg: &Path, key: &Path) -> (i32, serde_json::Value) {
    let out = common::modelpack().arg("verify").arg(pkg).arg("--key").arg(key).arg("--json").output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), doc)
}

fn sign(pkg: &Path, key: &Path) {
    common::modelpack().arg("sign").arg(pkg).arg("--key").arg(key).assert().success();
}

#[test]
fn keygen_sign_verify_round_trip_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let (pem, public) = keygen(t.path(), "k", "p256");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Refuses to overwrite either file.
    let before = std::fs::read(&pem).unwrap();
    common::modelpack().arg("keygen").arg("-o").arg(t.path().join("k")).assert().code(2);
    assert_eq!(std::fs::read(&pem).unwrap(), before);

    let pkg = t.path().join("pkg");
    write_pkg(&pkg, 0);
    sign(&pkg, &pem);
    let first = std::fs::read(pkg.join("model.sig")).unwrap();
    sign(&pkg, &pem);
    assert_eq!(std::fs::read(pkg.join("model.sig")).unwrap(), first, "same package + key => same bytes");

    let (code, doc) = verify_json(&pkg, &public);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["status"], "ok");
    assert_eq!(doc["root_digest"], expected_root(&pkg));
    assert_eq!(doc["key_hint"], sha(&std::fs::read(&public).unwrap()));
    let files = doc["files"].as_array().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(names, PKG_FILES);
    for f in files {
        let want = sha_file(&pkg.join(f["path"].as_str().unwrap()));
        assert_eq!(f["status"], "ok");
        assert_eq!(f["expected"], want);
        assert_eq!(f["actual"], want);
    }
    let bytes: u64 = PKG_FILES.iter().map(|f| std::fs::metadata(pkg.join(f)).unwrap().len()).sum();
    assert_eq!(doc["counts"]["files_checked"], 5);
    assert_eq!(doc["counts"]["bytes_checked"], bytes);

    // The statement names every resource with the independently computed digest.
    let bundle: serde_json::Value = serde_json::from_slice(&first).unwrap();
    let st: serde_json::Value =
        serde_json::from_slice(&b64_decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap())).unwrap();
    assert_eq!(st["subject"][0]["name"], "pkg");
    assert_eq!(st["subject"][0]["digest"]["sha256"], expected_root(&pkg));
    for (r, f) in st["predicate"]["resources"].as_array().unwrap().iter().zip(PKG_FILES) {
        assert_eq!(r["name"], f);
        assert_eq!(r["algorithm"], "sha256");
        assert_eq!(r["digest"], sha_file(&pkg.join(f)));
    }
}

#[test]
fn every_tamper_case_fails_naming_its_cause() {
    let t = tempfile::tempdir().unwrap();
    let (pem, good_pub) = keygen(t.path(), "good", "p256");
    let (_, wrong_pub) = keygen(t.path(), "wrong", "p256");
    let (_, other_curve_pub) = keygen(t.path(), "p384", "p384");
    let signed = t.path().join("signed");
    write_pkg(&signed, 0);
    sign(&signed, &pem);
    let other = t.path().join("other");
    write_pkg(&other, 1);
    sign(&other, &pem);
    let keys = CaseKeys { good_pub: good_pub.clone(), wrong_pub, other_curve_pub };
    let cases = tamper_cases(&t.path().join("work"), &signed, &other, &keys);
    assert!(cases.len() >= 15);

    // Control: the untouched package passes.
    assert_eq!(verify_json(&signed, &good_pub).0, 0);

    for case in &cases {
        let (code, doc) = verify_json(&case.pkg, &case.key);
        assert_eq!(code, 1, "{}: {doc:#}", case.name);
        assert_eq!(doc["status"], "failed", "{}", case.name);
        let files = doc["files"].as_array().unwrap();
        let find = |p: &str| files.iter().find(|f| f["path"] == p).unwrap_or_else(|| panic!("{}: no {p}", case.name));
        let mut failing = 0;
        for cause in &case.causes {
            match cause {
                Cause::Changed { path, expected } => {
                    let f = find(path);
                    assert_eq!(f["status"], "changed", "{}", case.name);
                    assert_eq!(&f["expected"], expected, "{}", case.name);
                    assert_eq!(f["actual"], sha_file(&case.pkg.join(path)), "{}", case.name);
                    failing += 1;
                }
                Cause::Missing(path) => {
                    let f = find(path);
                    assert_eq!(f["status"], "missing", "{}", case.name);
                    assert_eq!(f["expected"], sha_file(&signed.join(path)), "{}", case.name);
                    assert!(f["actual"].is_null());
                    failing += 1;
                }
                Cause::Extra(path) => {
                    let f = find(path);
                    assert_eq!(f["status"], "extra", "{}", case.name);
                    assert_eq!(f["actual"], sha_file(&case.pkg.join(path)), "{}", case.name);
                    failing += 1;
                }
                Cause::Symlink(path) => {
                    assert_eq!(find(path)["status"], "symlink", "{}", case.name);
                    failing += 1;
                }
                Cause::Signature(text) => {
                    assert_eq!(doc["signature"]["ok"], false, "{}", case.name);
                    let e = doc["signature"]["error"].as_str().unwrap();
                    assert!(e.contains(text), "{}: {e}", case.name);
                    assert!(files.is_empty(), "{}: files checked despite bad signature", case.name);
                }
            }
        }
        let bad = files.iter().filter(|f| f["status"] != "ok").count();
        assert_eq!(bad, failing, "{}: unexpected failures {doc:#}", case.name);
    }
}

#[test]
fn human_report_names_files_and_digests() {
    let t = tempfile::tempdir().unwrap();
    let (pem, public) = keygen(t.path(), "k", "p384");
    let pkg = t.path().join("pkg");
    write_pkg(&pkg, 0);
    sign(&pkg, &pem);
    let old = sha_file(&pkg.join("a.txt"));
    std::fs::write(pkg.join("a.txt"), b"changed").unwrap();
    let out = common::modelpack().arg("verify").arg(&pkg).arg("--key").arg(&public).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a.txt") && err.contains(&old) && err.contains(&sha(b"changed")), "{err}");
    assert!(out.stdout.is_empty(), "human mode prints nothing on stdout");
}

#[test]
fn signing_refuses_bad_packages() {
    let t = tempfile::tempdir().unwrap();
    let (pem, _) = keygen(t.path(), "k", "p256");
    let empty = t.path().join("empty");
    std::fs::create_dir_all(empty.join(".git")).unwrap();
    std::fs::write(empty.join(".git/config"), b"x").unwrap();
    let out = common::modelpack().arg("sign").arg(&empty).arg("--key").arg(&pem).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no files"));

    #[cfg(unix)]
    {
        let pkg = t.path().join("pkg");
        write_pkg(&pkg, 0);
        std::os::unix::fs::symlink("/etc/hostname", pkg.join("a/link")).unwrap();
        let out = common::modelpack().arg("sign").arg(&pkg).arg("--key").arg(&pem).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
        assert!(!pkg.join("model.sig").exists());
    }
}

#[test]
fn key_handling() {
    let t = tempfile::tempdir().unwrap();
    let pkg = t.path().join("pkg");
    write_pkg(&pkg, 0);
    let keys = common::fixture("keys");
    // A group/other-readable key: signing works and warns (the mode is set here, not taken
    // from the checkout, whose umask varies).
    let loose = t.path().join("loose.pem");
    std::fs::copy(keys.join("p256-sec1.pem"), &loose).unwrap();
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = common::modelpack().arg("sign").arg(&pkg).arg("--key").arg(&loose).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by group or others"));
    common::modelpack().arg("verify").arg(&pkg).arg("--key").arg(keys.join("p256.pub")).assert().code(0);

    // Encrypted PKCS#8: no password is a usage error naming the options.
    let enc = keys.join("p384-enc.pem");
    let out = common::modelpack().arg("sign").arg(&pkg).arg("--key").arg(&enc).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-file or --password-env"));
    let pwfile = t.path().join("pw");
    std::fs::write(&pwfile, "s3cret\n").unwrap();
    common::modelpack()
        .arg("sign")
        .arg(&pkg)
        .arg("--key")
        .arg(&enc)
        .arg("--password-file")
        .arg(&pwfile)
        .assert()
        .code(0);
    common::modelpack().arg("verify").arg(&pkg).arg("--key").arg(keys.join("p384.pub")).assert().code(0);
    common::modelpack()
        .env("MP_TEST_PW", "s3cret")
        .arg("sign")
        .arg(&pkg)
        .arg("--key")
        .arg(&enc)
        .args(["--password-env", "MP_TEST_PW"])
        .assert()
        .code(0);
    let out = common::modelpack()
        .env("MP_TEST_PW", "nope")
        .arg("sign")
        .arg(&pkg)
        .arg("--key")
        .arg(&enc)
        .args(["--password-env", "MP_TEST_PW"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));

    // Wrong kinds of key are named.
    let out = common::modelpack().arg("sign").arg(&pkg).arg("--key").arg(keys.join("rsa.pem")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RSA key not supported"));
    let out =
        common::modelpack().arg("verify").arg(&pkg).arg("--key").arg(keys.join("p256-pkcs8.pem")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("private key where a public key"));
}

#[test]
fn malformed_bundles_are_input_errors() {
    let t = tempfile::tempdir().unwrap();
    let (pem, public) = keygen(t.path(), "k", "p256");
    let pkg = t.path().join("pkg");
    write_pkg(&pkg, 0);
    let check = |bundle: &[u8], needle: &str| {
        std::fs::write(pkg.join("model.sig"), bundle).unwrap();
        let (code, doc) = verify_json(&pkg, &public);
        assert_eq!(code, 2, "{doc:#}");
        assert_eq!(doc["status"], "error");
        let e = doc["error"].as_str().unwrap();
        assert!(e.contains(needle), "want {needle:?} in {e}");
    };
    // No model.sig at all.
    let (code, _) = verify_json(&pkg, &public);
    assert_eq!(code, 2);
    sign(&pkg, &pem);
    let good: serde_json::Value = serde_json::from_slice(&std::fs::read(pkg.join("model.sig")).unwrap()).unwrap();

    let mut b = good.clone();
    b["dsseEnvelope"]["signatures"] = serde_json::json!([]);
    check(&serde_json::to_vec(&b).unwrap(), "no signatures");
    let mut b = good.clone();
    b["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.1".into();
    check(&serde_json::to_vec(&b).unwrap(), "media type");
    check(b"{\"mediaType\": 3", "model.sig");
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    check(deep.as_bytes(), "deeper");
    let mut b = good.clone();
    b["dsseEnvelope"]["payload"] = "not base64!".into();
    check(&serde_json::to_vec(&b).unwrap(), "base64");

    // Over the size cap (64 MiB), sparse so the test stays cheap.
    let f = std::fs::File::create(pkg.join("model.sig")).unwrap();
    f.set_len((64 << 20) + 1).unwrap();
    drop(f);
    let (code, doc) = verify_json(&pkg, &public);
    assert_eq!(code, 2);
    assert!(doc["error"].as_str().unwrap().contains("over the limit"), "{doc:#}");
}
