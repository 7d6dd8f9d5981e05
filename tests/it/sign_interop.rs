//! Interop with the reference implementation, `model_signing` 1.1.1 (pinned venv):
//! 1. packages signed by modelpack verify with `model_signing verify key`;
//! 2. packages signed by `model_signing sign key` with OpenSSL-made P-256 (PKCS#8 and SEC1)
//!    and P-384 keys verify with `modelpack verify`;
//! 3. both tools reject the same tampered copies.
//!
//! Plus: our statement is the same document as theirs, with our fixed key order.
use crate::common;
use crate::sign_support;

use sign_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn model_signing(py: &Path) -> PathBuf {
    py.parent().unwrap().join("model_signing")
}

fn ms_sign(py: &Path, pkg: &Path, key: &Path) {
    let out = Command::new(model_signing(py))
        .args(["sign", "key"])
        .arg(pkg)
        .arg("--private_key")
        .arg(key)
        .arg("--signature")
        .arg(pkg.join("model.sig"))
        .output()
        .unwrap();
    assert!(out.status.success(), "model_signing sign: {}", String::from_utf8_lossy(&out.stderr));
}

/// `model_signing verify key`; returns (success, combined output).
fn ms_verify(py: &Path, pkg: &Path, key: &Path) -> (bool, String) {
    let out = Command::new(model_signing(py))
        .args(["verify", "key"])
        .arg(pkg)
        .arg("--signature")
        .arg(pkg.join("model.sig"))
        .arg("--public_key")
        .arg(key)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && text.contains("Verification succeeded"), text)
}

fn mp_sign(pkg: &Path, key: &Path) {
    common::modelpack().arg("sign").arg(pkg).arg("--key").arg(key).assert().success();
}

fn mp_verify_code(pkg: &Path, key: &Path) -> i32 {
    common::modelpack().arg("verify").arg(pkg).arg("--key").arg(key).output().unwrap().status.code().unwrap()
}

#[test]
fn modelpack_signatures_verify_with_model_signing() {
    let Some(py) = common::python() else { return };
    let t = tempfile::tempdir().unwrap();
    for curve in ["p256", "p384"] {
        let (pem, public) = keygen(t.path(), &format!("k-{curve}"), curve);
        let pkg = t.path().join(format!("pkg-{curve}"));
        write_pkg(&pkg, 0);
        mp_sign(&pkg, &pem);
        let (ok, text) = ms_verify(&py, &pkg, &public);
        assert!(ok, "{curve}: {text}");
    }
}

#[test]
fn model_signing_signatures_verify_with_modelpack() {
    let Some(py) = common::python() else { return };
    let t = tempfile::tempdir().unwrap();
    let keys = common::fixture("keys");
    for (key, public) in [
        ("p256-pkcs8.pem", "p256.pub"),
        ("p256-sec1.pem", "p256.pub"),
        ("p384-pkcs8.pem", "p384.pub"),
        ("p384-sec1.pem", "p384.pub"),
    ] {
        let pkg = t.path().join(format!("pkg-{key}"));
        write_pkg(&pkg, 0);
        ms_sign(&py, &pkg, &keys.join(key));
        let out = common::modelpack()
            .arg("verify")
            .arg(&pkg)
            .arg("--key")
            .arg(keys.join(public))
            .arg("--json")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{key}: {}", String::from_utf8_lossy(&out.stdout));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["root_digest"], expected_root(&pkg), "{key}");
        // And tampering with their package is caught by us.
        std::fs::write(pkg.join("a/b.bin"), b"other").unwrap();
        assert_eq!(mp_verify_code(&pkg, &keys.join(public)), 1, "{key}");
    }
}

/// Our statement is the document model_signing writes for the same directory (it emits
/// protobuf Struct keys and `ignore_paths` in hash order, which changes between runs), and our
/// bytes are exactly that document printed with our fixed key order by Python's `json`
/// (two-space indent, ASCII-only escapes, as protobuf's MessageToJson). The bundle envelope
/// has their key order.
#[test]
fn statement_and_bundle_match_model_signing() {
    let Some(py) = common::python() else { return };
    let t = tempfile::tempdir().unwrap();
    let keys = common::fixture("keys");
    let ours = t.path().join("ours/pkg");
    let theirs = t.path().join("theirs/pkg");
    for dir in [&ours, &theirs] {
        write_pkg(dir, 0);
        // Names that exercise escaping: non-ASCII, astral plane, DEL, quote, backslash-free.
        std::fs::create_dir_all(dir.join("é")).unwrap();
        std::fs::write(dir.join("é/ü.txt"), b"x").unwrap();
        std::fs::write(dir.join("emoji\u{1F600}.bin"), b"y").unwrap();
        std::fs::write(dir.join("del\u{7f} \"q\".bin"), b"z").unwrap();
    }
    mp_sign(&ours, &keys.join("p256-pkcs8.pem"));
    ms_sign(&py, &theirs, &keys.join("p256-pkcs8.pem"));
    let script = r#"
import base64, json, sys
def load(p):
    with open(p) as f:
        raw = f.read()
    return raw, json.loads(raw, object_pairs_hook=lambda kv: kv)
def keys(node):
    if isinstance(node, list) and node and isinstance(node[0], tuple):
        return [(k, keys(v)) for k, v in node]
    if isinstance(node, list):
        return [keys(v) for v in node]
    return None
ours_raw, ours_pairs = load(sys.argv[1])
theirs_raw, theirs_pairs = load(sys.argv[2])
assert not ours_raw.endswith("\n") and not theirs_raw.endswith("\n")
assert keys(ours_pairs) == keys(theirs_pairs), (keys(ours_pairs), keys(theirs_pairs))
ob, tb = json.loads(ours_raw), json.loads(theirs_raw)
assert ob["verificationMaterial"] == tb["verificationMaterial"]
assert ob["dsseEnvelope"]["payloadType"] == tb["dsseEnvelope"]["payloadType"]
ours_payload = base64.b64decode(ob["dsseEnvelope"]["payload"])
theirs = json.loads(base64.b64decode(tb["dsseEnvelope"]["payload"]))
ours = json.loads(ours_payload)
ser_t = theirs["predicate"]["serialization"]
ser_t["ignore_paths"] = sorted(ser_t["ignore_paths"])
ser_o = dict(ours["predicate"]["serialization"])
ser_o["ignore_paths"] = sorted(ser_o["ignore_paths"])
assert dict(ours, predicate=dict(ours["predicate"], serialization=ser_o)) == theirs, (ours, theirs)
# Canonical re-print of *their* document in our key order.
s = theirs["predicate"]["serialization"]
canon = {
    "_type": theirs["_type"],
    "subject": [{"name": x["name"], "digest": {"sha256": x["digest"]["sha256"]}} for x in theirs["subject"]],
    "predicateType": theirs["predicateType"],
    "predicate": {
        "serialization": {"method": s["method"], "hash_type": s["hash_type"], "allow_symlinks": s["allow_symlinks"],
                          "ignore_paths": ["model.sig", ".git", ".gitattributes", ".github", ".gitignore"]},
        "resources": [{"name": r["name"], "algorithm": r["algorithm"], "digest": r["digest"]}
                      for r in theirs["predicate"]["resources"]],
    },
}
expected = json.dumps(canon, indent=2).encode()
assert ours_payload == expected, (ours_payload, expected)
# Independent of the re-print: the same lines (escaping included), in another order.
theirs_raw_payload = base64.b64decode(tb["dsseEnvelope"]["payload"])
lines = lambda b: sorted(l.rstrip(b",") for l in b.split(b"\n"))
assert lines(ours_payload) == lines(theirs_raw_payload), (ours_payload, theirs_raw_payload)
print("ok")
"#;
    let out =
        common::run_python(&py, script, &[ours.join("model.sig").as_os_str(), theirs.join("model.sig").as_os_str()]);
    assert_eq!(out.trim(), "ok");
}

#[test]
fn both_tools_reject_the_same_tampered_copies() {
    let Some(py) = common::python() else { return };
    let t = tempfile::tempdir().unwrap();
    let (pem, good_pub) = keygen(t.path(), "good", "p256");
    let (_, wrong_pub) = keygen(t.path(), "wrong", "p256");
    let (_, other_curve_pub) = keygen(t.path(), "p384", "p384");
    let signed = t.path().join("signed");
    write_pkg(&signed, 0);
    mp_sign(&signed, &pem);
    let other = t.path().join("other");
    write_pkg(&other, 1);
    mp_sign(&other, &pem);
    // Control: both accept the original.
    assert!(ms_verify(&py, &signed, &good_pub).0);
    assert_eq!(mp_verify_code(&signed, &good_pub), 0);
    let keys = CaseKeys { good_pub, wrong_pub, other_curve_pub };
    for case in tamper_cases(&t.path().join("work"), &signed, &other, &keys) {
        let (ok, text) = ms_verify(&py, &case.pkg, &case.key);
        assert!(!ok, "model_signing accepted {}: {text}", case.name);
        assert_eq!(mp_verify_code(&case.pkg, &case.key), 1, "modelpack on {}", case.name);
    }
}
