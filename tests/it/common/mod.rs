//! Shared helpers for the root integration tests: the built binary, and (from
//! `modelpack-testkit`) repository paths, the SplitMix64 generator and the judge lookup, whose
//! pinned Python venv (`gguf`, `safetensors`, `model_signing`, `numpy`), llama.cpp build and
//! compressed-tensors reference are the external judges.
#![allow(dead_code)]

pub mod llama;

use std::path::Path;
use std::process::Command;

pub use modelpack_testkit::judge::{ct_reference, llama_dir, python};
pub use modelpack_testkit::{fixture, judge, root};

/// The `modelpack` binary built for this test run.
pub fn modelpack() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("modelpack").unwrap()
}

/// Rewrite `dir/config.json` through `f` (the bad-config tests' edit step).
pub fn edit_config(dir: &Path, f: impl Fn(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Quantize the bad input `src` to int8 for `target` and require what every input error
/// promises: exit 2, one JSON document whose `error` contains `want`, and no package next to
/// `src` (`label` names the case in failures).
pub fn assert_refused(src: &Path, target: &str, want: &str, label: &str) {
    let out = src.parent().unwrap().join("pkg");
    let o = modelpack()
        .args(["quantize"])
        .arg(src)
        .arg("-o")
        .arg(&out)
        .args(["--target", target, "--scheme", "int8", "--json"])
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{label} {target} ({want}): {so}");
    let v: serde_json::Value = serde_json::from_str(so.trim()).expect("one JSON document");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains(want), "{label} {target}: wanted {want:?} in {msg}");
    assert!(!out.exists(), "a package was left behind");
}

/// Run `modelpack quantize INPUT -o OUT ARGS... --json`, require success and return the report.
pub fn quantize(input: &Path, out: &Path, args: &[&str]) -> serde_json::Value {
    let o = modelpack().arg("quantize").arg(input).arg("-o").arg(out).args(args).arg("--json").output().unwrap();
    assert!(
        o.status.success(),
        "quantize failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("one JSON document on stdout")
}

/// Run a Python script (inline source) with arguments in the venv; panics with its output on failure.
/// Returns stdout.
pub fn run_python(py: &Path, script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(py).arg("-c").arg(script).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "python failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
pub mod registry;
pub mod token_server;

/// A copy of the bundled fixture `fixtures/<fixture>` (weights, tokenizer, config) under
/// `tmp/name`, with config.json changed by `edit`: how the bad-config tests make their inputs.
pub fn edited_fixture(
    fixture_dir: &str,
    tmp: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let src = fixture(fixture_dir);
    let d = tmp.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(d.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    d
}
