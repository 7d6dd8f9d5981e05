//! `verify --rebuild SOURCE`: the recorded recipe replayed on the source must give the same
//! bytes. A package altered and re-signed with the publisher's key passes plain `verify` (the
//! signature is valid) but fails `--rebuild`, naming the altered file; a wrong source or a
//! recipe this version cannot replay is exit 2.
use crate::common;
use crate::sign_support;

use sign_support::*;
use std::path::Path;

fn verify_rebuild(pkg: &Path, key: &Path, source: &Path) -> (i32, serde_json::Value) {
    let out = common::modelpack()
        .arg("verify")
        .arg(pkg)
        .arg("--key")
        .arg(key)
        .arg("--rebuild")
        .arg(source)
        .arg("--json")
        .output()
        .unwrap();
    let doc =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap(), doc)
}

fn plain_verify(pkg: &Path, key: &Path) -> i32 {
    common::modelpack().arg("verify").arg(pkg).arg("--key").arg(key).output().unwrap().status.code().unwrap()
}

fn resign(pkg: &Path, key: &Path) {
    common::modelpack().arg("sign").arg(pkg).arg("--key").arg(key).assert().success();
}

/// Flip one byte in the middle of `file`.
fn flip(file: &Path) {
    let mut b = std::fs::read(file).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x10;
    std::fs::write(file, b).unwrap();
}

/// The package's files other than model.sig, as listed on disk (independent of the report).
fn package_files(pkg: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(pkg)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "model.sig")
        .collect();
    v.sort();
    v
}

fn differing(doc: &serde_json::Value) -> Vec<String> {
    doc["rebuild"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] != "same")
        .map(|f| format!("{}:{}", f["status"].as_str().unwrap(), f["path"].as_str().unwrap()))
        .collect()
}

/// Quantize `source` with `args`, check the rebuild passes, then alter `victim`, re-sign and
/// check plain verify passes while the rebuild fails naming exactly that file.
fn roundtrip(source: &Path, args: &[&str], victim: &str) {
    let t = tempfile::tempdir().unwrap();
    let (key, public) = keygen(t.path(), "k", "p256");
    let pkg = t.path().join("pkg");
    let mut all = args.to_vec();
    all.extend(["--sign-key", key.to_str().unwrap()]);
    common::quantize(source, &pkg, &all);
    let (code, doc) = verify_rebuild(&pkg, &public, source);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["rebuild"]["identical"], true);
    let listed: Vec<String> =
        doc["rebuild"]["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed, package_files(&pkg), "every file but model.sig is compared");
    assert!(doc["rebuild"]["source_files_checked"].as_u64().unwrap() > 0);

    flip(&pkg.join(victim));
    resign(&pkg, &key);
    assert_eq!(plain_verify(&pkg, &public), 0, "re-signed package has a valid signature");
    let (code, doc) = verify_rebuild(&pkg, &public, source);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(differing(&doc), [format!("differs:{victim}")]);
    assert_eq!(doc["rebuild"]["identical"], false);
}

#[test]
fn cpu_package_rebuilds_and_tampering_is_caught() {
    roundtrip(&common::fixture("tiny-llama"), &["--target", "cpu", "--scheme", "int4"], "model.gguf");
}

/// The per-type default method (rtn for Q5_0) and a `--bpw` budget are replayed from the
/// manifest to the same bytes.
#[test]
fn cpu_default_method_and_bpw_packages_rebuild() {
    let src = common::fixture("tiny-llama");
    roundtrip(&src, &["--target", "cpu", "--scheme", "int4", "--gguf-type", "q5_0"], "model.gguf");
    roundtrip(&src, &["--target", "cpu", "--scheme", "int4", "--bpw", "5.25"], "model.gguf");
}

#[test]
fn split_cpu_package_rebuilds_and_tampering_is_caught() {
    roundtrip(
        &common::fixture("tiny-llama"),
        &["--target", "cpu", "--scheme", "int8", "--max-shard-size", "40KB"],
        "model-00002-of-00004.gguf",
    );
}

#[test]
fn sharded_cuda_package_rebuilds_and_tampering_is_caught() {
    let source = common::fixture("tiny-llama-sharded");
    roundtrip(
        &source,
        &["--target", "cuda", "--scheme", "int4", "--max-shard-size", "40KB"],
        "model-00002-of-00004.safetensors",
    );
}

#[test]
fn wrong_source_and_unreplayable_recipes_are_exit_2() {
    let t = tempfile::tempdir().unwrap();
    let (key, public) = keygen(t.path(), "k", "p256");
    let pkg = t.path().join("pkg");
    let source = common::fixture("tiny-llama");
    common::quantize(&source, &pkg, &["--target", "cpu", "--scheme", "int8", "--sign-key", key.to_str().unwrap()]);

    // Another checkpoint, and the right one with one byte changed (same size).
    let (code, doc) = verify_rebuild(&pkg, &public, &common::fixture("tiny-llama-sharded"));
    assert_eq!(code, 2, "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("not the recorded source"), "{doc}");
    let src2 = t.path().join("src");
    copy_dir(&source, &src2);
    let st = std::fs::read_dir(&src2)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    let mut b = std::fs::read(&st).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    std::fs::write(&st, b).unwrap();
    let (code, doc) = verify_rebuild(&pkg, &public, &src2);
    assert_eq!(code, 2, "{doc}");
    assert!(doc["error"].as_str().unwrap().contains("has SHA-256"), "{doc}");

    // A recipe with an option this version does not have, or from another version.
    for (what, edit) in [
        (
            "option",
            Box::new(|m: &mut serde_json::Value| m["options"]["future_knob"] = 3.into())
                as Box<dyn Fn(&mut serde_json::Value)>,
        ),
        ("version", Box::new(|m: &mut serde_json::Value| m["tool"]["version"] = "99.0.0".into())),
    ] {
        let p = t.path().join(format!("pkg-{what}"));
        copy_dir(&pkg, &p);
        let mpath = p.join("modelpack.json");
        let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
        edit(&mut m);
        std::fs::write(&mpath, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        resign(&p, &key);
        let (code, doc) = verify_rebuild(&p, &public, &source);
        assert_eq!(code, 2, "{what}: {doc}");
        assert!(doc["error"].as_str().unwrap().contains("cannot replay the recipe"), "{what}: {doc}");
    }

    // A package that does not verify is not rebuilt.
    flip(&pkg.join("model.gguf"));
    let (code, doc) = verify_rebuild(&pkg, &public, &source);
    assert_eq!(code, 1, "{doc}");
    assert!(doc["rebuild"]["skipped"].is_string(), "{doc}");
}
