//! `--bpw BITS` (size-budgeted mixed precision, cpu) and the per-type default methods.
//!
//! Judges: the PyPI `gguf` package reads the mixed types and the size; llama.cpp's
//! `llama-perplexity` runs on a `--bpw` package of the bundled tiny-llama fixture.
use crate::common;
use std::path::Path;
use std::process::Command;

/// The `gguf` package's view of a GGUF: `{name: [type, n_bytes]}` and the data-section bytes.
const GGUF_TYPES: &str = r#"
import sys, json, numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
r = GGUFReader(sys.argv[1])
out = {}
for t in r.tensors:
    v = dequantize(t.data, t.tensor_type)
    assert np.isfinite(v).all(), t.name
    out[t.name] = [t.tensor_type.name, int(t.n_bytes), int(t.n_elements)]
print(json.dumps(out))
"#;

fn judge_types(py: &Path, gguf: &Path) -> serde_json::Map<String, serde_json::Value> {
    let s = common::run_python(py, GGUF_TYPES, &[gguf.as_os_str()]);
    serde_json::from_str::<serde_json::Value>(s.trim()).unwrap().as_object().unwrap().clone()
}

#[test]
fn bpw_package_mixes_types_within_budget_as_read_by_gguf_and_runs_in_llama_perplexity() {
    let Some(py) = common::python() else { return };
    let src = common::fixture("tiny-llama");
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("bpw");
    let report = common::quantize(&src, &pkg, &["--target", "cpu", "--scheme", "int4", "--bpw", "5.5"]);
    let types = judge_types(&py, &pkg.join("model.gguf"));
    // Every report line matches what the judge reads, and the budget holds in its figures.
    let (mut bytes, mut elems) = (0u64, 0u64);
    let mut quantized = std::collections::BTreeSet::new();
    for t in report["tensors"].as_array().unwrap() {
        let j = &types[t["name"].as_str().unwrap()];
        assert_eq!(j[0], t["type_out"], "{}", t["name"]);
        bytes += j[1].as_u64().unwrap();
        elems += j[2].as_u64().unwrap();
        if j[0] != "F32" {
            quantized.insert(j[0].as_str().unwrap().to_string());
            assert!(t["note"].as_str().unwrap().starts_with("--bpw 5.5: "), "the reason is recorded: {t}");
        }
    }
    assert!(quantized.len() >= 2, "a 5.5-bit budget mixes types: {quantized:?}");
    let bpw = 8.0 * bytes as f64 / elems as f64;
    assert!(bpw <= 5.5, "{bpw} bits per weight exceeds the budget");
    assert!(bpw > 5.0, "{bpw}: the budget should be nearly spent");
    // The manifest carries the same choices and the budget.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pkg.join("modelpack.json")).unwrap()).unwrap();
    assert_eq!(manifest["options"]["bpw_millibits"], 5500);

    let Some(llama) = common::llama_dir() else { return };
    let text = tmp.path().join("text.txt");
    let words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "north", "green", "table"];
    let s: String = (0..3000).map(|i| words[(i * 7 + i / 3) % words.len()]).collect::<Vec<_>>().join(" ");
    std::fs::write(&text, s).unwrap();
    // The running estimates `[1]238.98,[2]241.53,...` go through llama.cpp's asynchronous
    // logger, which can lose its tail at exit on a loaded machine (see llama_run.rs): a run whose
    // log lost them is repeated (at most three runs); a failed run fails at once.
    let mut last_log = String::new();
    let ppl = (0..3)
        .find_map(|_| {
            let out = Command::new(llama.join("bin/llama-perplexity"))
                .arg("-m")
                .arg(pkg.join("model.gguf"))
                .arg("-f")
                .arg(&text)
                .args(["-c", "64", "-b", "64", "--chunks", "4", "-t", "2"])
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{log}");
            let ppl = log.lines().find(|l| l.trim_start().starts_with("[1]")).and_then(|l| {
                l.split(['[', ','])
                    .filter_map(|p| p.split_once(']').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
                    .next_back()
            });
            last_log = log;
            ppl
        })
        .unwrap_or_else(|| panic!("no PPL in three runs; the last log:\n{last_log}"));
    assert!(ppl.is_finite() && ppl > 1.0, "{ppl}");
}

#[test]
fn bpw_outside_the_candidate_range_or_with_gguf_type_is_exit_2() {
    let src = common::fixture("tiny-llama");
    let tmp = tempfile::tempdir().unwrap();
    for (bits, needle) in [("1", "below the smallest mix"), ("17", "at most 16"), ("0", "above 0"), ("nan", "above 0")]
    {
        let o = common::modelpack()
            .arg("quantize")
            .arg(&src)
            .arg("-o")
            .arg(tmp.path().join(bits))
            .args(["--target", "cpu", "--scheme", "int4", "--bpw", bits])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "--bpw {bits}: {err}");
        assert!(err.contains(needle), "--bpw {bits}: {err}");
        assert!(!tmp.path().join(bits).exists(), "nothing written for --bpw {bits}");
    }
    for extra in [&["--gguf-type", "q4_0"][..], &["--target", "cuda"][..]] {
        let mut args = vec!["--scheme", "int4", "--bpw", "5"];
        if extra[0] != "--target" {
            args.extend(["--target", "cpu"]);
        }
        args.extend(extra);
        let o = common::modelpack().arg("quantize").arg(&src).arg("-o").arg(tmp.path().join("x")).args(&args).output();
        assert_eq!(o.unwrap().status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn bpw_is_deterministic_across_thread_counts() {
    let src = common::fixture("tiny-llama");
    let tmp = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for threads in ["1", "2", "3"] {
        let pkg = tmp.path().join(threads);
        common::quantize(&src, &pkg, &["--target", "cpu", "--scheme", "int4", "--bpw", "6", "--threads", threads]);
        digests.push(std::fs::read(pkg.join("model.gguf")).unwrap());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
}

/// The default method per `--gguf-type` (the harness's table in docs/quality.md): the package
/// without `--method` is byte-identical to the one with the table's method, and says so.
#[test]
fn cpu_default_method_per_type_is_the_harness_table() {
    let src = common::fixture("tiny-llama");
    let tmp = tempfile::tempdir().unwrap();
    for (ty, scheme, method) in [
        ("q4_0", "int4", "mse-fast"),
        ("q4_1", "int4", "mse"),
        ("q5_0", "int4", "rtn"),
        ("q8_0", "int8", "rtn"),
        ("q4_k", "int4", "rtn"),
        ("q6_k", "int4", "rtn"),
        ("q4_k_m", "int4", "rtn"),
    ] {
        let (d, e) = (tmp.path().join(format!("{ty}-default")), tmp.path().join(format!("{ty}-{method}")));
        let base = ["--target", "cpu", "--scheme", scheme, "--gguf-type", ty];
        let rd = common::quantize(&src, &d, &base);
        common::quantize(&src, &e, &[&base[..], &["--method", method]].concat());
        assert_eq!(rd["method"], method, "{ty}");
        assert_eq!(
            std::fs::read(d.join("model.gguf")).unwrap(),
            std::fs::read(e.join("model.gguf")).unwrap(),
            "{ty}: default bytes are {method}'s"
        );
    }
    // Without --gguf-type: the scheme's type (int4 → Q4_0 → mse-fast, int8 → Q8_0 → rtn).
    let r4 = common::quantize(&src, &tmp.path().join("i4"), &["--target", "cpu", "--scheme", "int4"]);
    let r8 = common::quantize(&src, &tmp.path().join("i8"), &["--target", "cpu", "--scheme", "int8"]);
    assert_eq!((r4["method"].as_str(), r8["method"].as_str()), (Some("mse-fast"), Some("rtn")));
}
