//! Shared by the `sign` and `sign_interop` modules: small test packages, keys made by
//! `modelpack keygen`, and the catalogue of tampered copies with the cause each must report.
//! Expected digests are computed here with `sha2` over the bytes the test wrote, never taken
//! from the code under test.
#![allow(dead_code)]

use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lowercase hex SHA-256 of a file's contents.
pub fn sha_file(p: &Path) -> String {
    sha(&std::fs::read(p).unwrap())
}

/// Write a small package: names chosen so component order (`a/b.bin` < `a.txt`) differs from
/// string order, plus an ignored `.gitattributes`. `variant` changes two files' contents.
pub fn write_pkg(dir: &Path, variant: u8) {
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("modelpack.json"), format!("{{\"format_version\": 1, \"v\": {variant}}}\n")).unwrap();
    let gguf: Vec<u8> = (0..70_000u32).map(|i| (i.wrapping_mul(31) ^ u32::from(variant)) as u8).collect();
    std::fs::write(dir.join("model.gguf"), gguf).unwrap();
    std::fs::write(dir.join("tokenizer.json"), b"{\"model\": {\"type\": \"BPE\"}}").unwrap();
    std::fs::write(dir.join("a/b.bin"), b"nested").unwrap();
    std::fs::write(dir.join("a.txt"), b"top-level a.txt").unwrap();
    std::fs::write(dir.join(".gitattributes"), b"*.gguf filter=lfs").unwrap();
}

/// The resources of [`write_pkg`] in bundle (path-component) order.
pub const PKG_FILES: [&str; 5] = ["a/b.bin", "a.txt", "model.gguf", "modelpack.json", "tokenizer.json"];

/// Root digest of a package, computed independently: SHA-256 over the raw file digests in
/// [`PKG_FILES`] order.
pub fn expected_root(dir: &Path) -> String {
    let mut h = Sha256::new();
    for f in PKG_FILES {
        h.update(Sha256::digest(std::fs::read(dir.join(f)).unwrap()));
    }
    hex::encode(h.finalize())
}

/// Recursive copy of a directory of regular files.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// `modelpack keygen -o dir/name --curve curve`; returns (private, public) paths.
pub fn keygen(dir: &Path, name: &str, curve: &str) -> (PathBuf, PathBuf) {
    let base = dir.join(name);
    crate::common::modelpack().arg("keygen").arg("-o").arg(&base).args(["--curve", curve]).assert().success();
    (base.with_extension("pem"), base.with_extension("pub"))
}

/// Minimal standard base64 (with padding), independent of the code under test.
pub fn b64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 {c}"),
        }
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::new();
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Standard base64 encode with padding.
pub fn b64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in b.chunks(3) {
        let mut n = 0u32;
        for (i, &x) in chunk.iter().enumerate() {
            n |= u32::from(x) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// What `modelpack verify --json` must report for a tampered copy.
#[derive(Debug, Clone)]
pub enum Cause {
    /// File present with other content; the signed digest is given.
    Changed { path: String, expected: String },
    /// Signed file gone.
    Missing(String),
    /// Unsigned file present.
    Extra(String),
    /// A symlink where a file was.
    Symlink(String),
    /// The signature check fails; the error message contains this text.
    Signature(&'static str),
}

/// One tampered copy: verify `pkg` with `key`; it must fail for `causes`.
pub struct Case {
    pub name: String,
    pub pkg: PathBuf,
    pub key: PathBuf,
    pub causes: Vec<Cause>,
}

/// Keys a case catalogue needs.
pub struct CaseKeys {
    pub good_pub: PathBuf,
    pub wrong_pub: PathBuf,
    pub other_curve_pub: PathBuf,
}

fn edit_payload(sig: &Path, f: impl FnOnce(&mut serde_json::Value, String) -> String) {
    let mut bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(sig).unwrap()).unwrap();
    let payload = bundle["dsseEnvelope"]["payload"].as_str().unwrap().to_string();
    let new = f(&mut bundle, payload);
    bundle["dsseEnvelope"]["payload"] = new.into();
    std::fs::write(sig, serde_json::to_vec(&bundle).unwrap()).unwrap();
}

/// Build every tampered copy of `signed` (a [`write_pkg`] package with its `model.sig`) under
/// `work`. `other_signed` is a different package signed with the same key.
pub fn tamper_cases(work: &Path, signed: &Path, other_signed: &Path, keys: &CaseKeys) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut n = 0;
    let mut fresh = |name: &str| {
        n += 1;
        let p = work.join(format!("case{n:02}"));
        copy_dir(signed, &p);
        (name.to_string(), p)
    };
    let orig = |f: &str| sha_file(&signed.join(f));

    for f in PKG_FILES {
        let (name, p) = fresh(&format!("flipped byte in {f}"));
        let mut b = std::fs::read(p.join(f)).unwrap();
        let i = b.len() / 2;
        b[i] ^= 0x01;
        std::fs::write(p.join(f), b).unwrap();
        cases.push(Case {
            name,
            pkg: p,
            key: keys.good_pub.clone(),
            causes: vec![Cause::Changed { path: f.into(), expected: orig(f) }],
        });
    }
    let (name, p) = fresh("truncated model.gguf");
    let b = std::fs::read(p.join("model.gguf")).unwrap();
    std::fs::write(p.join("model.gguf"), &b[..b.len() - 1]).unwrap();
    cases.push(Case {
        name,
        pkg: p,
        key: keys.good_pub.clone(),
        causes: vec![Cause::Changed { path: "model.gguf".into(), expected: orig("model.gguf") }],
    });

    let (name, p) = fresh("removed tokenizer.json");
    std::fs::remove_file(p.join("tokenizer.json")).unwrap();
    cases.push(Case {
        name,
        pkg: p,
        key: keys.good_pub.clone(),
        causes: vec![Cause::Missing("tokenizer.json".into())],
    });

    let (name, p) = fresh("added a/evil.py");
    std::fs::write(p.join("a/evil.py"), b"import os").unwrap();
    cases.push(Case { name, pkg: p, key: keys.good_pub.clone(), causes: vec![Cause::Extra("a/evil.py".into())] });

    let (name, p) = fresh("renamed a.txt to b.txt");
    std::fs::rename(p.join("a.txt"), p.join("b.txt")).unwrap();
    cases.push(Case {
        name,
        pkg: p,
        key: keys.good_pub.clone(),
        causes: vec![Cause::Missing("a.txt".into()), Cause::Extra("b.txt".into())],
    });

    let (name, p) = fresh("signature of another package");
    std::fs::copy(other_signed.join("model.sig"), p.join("model.sig")).unwrap();
    cases.push(Case {
        name,
        pkg: p,
        key: keys.good_pub.clone(),
        causes: vec![
            Cause::Changed { path: "model.gguf".into(), expected: sha_file(&other_signed.join("model.gguf")) },
            Cause::Changed { path: "modelpack.json".into(), expected: sha_file(&other_signed.join("modelpack.json")) },
        ],
    });

    // The attack a payload edit is for: replace a file and write its new digest into the
    // statement, then re-encode.
    let (name, p) = fresh("payload edited and re-encoded");
    std::fs::write(p.join("model.gguf"), b"evil weights").unwrap();
    let (old, new) = (orig("model.gguf"), sha(b"evil weights"));
    edit_payload(&p.join("model.sig"), |_, b64| {
        let text = String::from_utf8(b64_decode(&b64)).unwrap();
        assert!(text.contains(&old));
        b64_encode(text.replace(&old, &new).as_bytes())
    });
    cases.push(Case { name, pkg: p, key: keys.good_pub.clone(), causes: vec![Cause::Signature("invalid ECDSA")] });

    let (name, p) = fresh("payload base64 edited in place");
    edit_payload(&p.join("model.sig"), |_, b64| {
        let mut chars: Vec<char> = b64.chars().collect();
        let i = chars.len() / 2;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect()
    });
    cases.push(Case { name, pkg: p, key: keys.good_pub.clone(), causes: vec![Cause::Signature("invalid ECDSA")] });

    let (name, p) = fresh("wrong key");
    cases.push(Case { name, pkg: p, key: keys.wrong_pub.clone(), causes: vec![Cause::Signature("another key")] });

    let (name, p) = fresh("key of the other curve");
    cases.push(Case { name, pkg: p, key: keys.other_curve_pub.clone(), causes: vec![Cause::Signature("another key")] });

    // Hint removed: the ECDSA check itself must reject the wrong key.
    let (name, p) = fresh("wrong key, bundle without key hint");
    let sig = p.join("model.sig");
    let mut bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    bundle["verificationMaterial"]["publicKey"]["hint"] = "".into();
    std::fs::write(&sig, serde_json::to_vec(&bundle).unwrap()).unwrap();
    cases.push(Case { name, pkg: p, key: keys.wrong_pub.clone(), causes: vec![Cause::Signature("invalid ECDSA")] });

    // A symlink to an identical copy outside: following it would wrongly pass.
    let (name, p) = fresh("symlink replacing a.txt");
    let outside = work.join("outside-a.txt");
    std::fs::copy(p.join("a.txt"), &outside).unwrap();
    std::fs::remove_file(p.join("a.txt")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, p.join("a.txt")).unwrap();
    cases.push(Case { name, pkg: p, key: keys.good_pub.clone(), causes: vec![Cause::Symlink("a.txt".into())] });

    cases
}
