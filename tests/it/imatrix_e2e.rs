//! `--imatrix` end to end, judged by llama.cpp, on an importance matrix from a real forward pass:
//! `llama-imatrix` runs an F32 GGUF of a fixture-sized llama model (256-multiple rows, the tiny
//! fixture's tokenizer) over a fixed text and writes the matrix in both of its formats. Then:
//! - our reader parses llama-imatrix's GGUF and legacy `.dat` files: same entries, and per-column
//!   weights that agree (the `.dat` stores `sum/count·ncall`, so up to f32 rounding);
//! - `modelpack quantize --gguf-type q4_k_m --method rtn --imatrix m.gguf` equals
//!   `llama-quantize --imatrix m.gguf … Q4_K_M` tensor by tensor (name, shape, type, bytes), and
//!   differs from the unweighted Q4_K_M (the matrix did something);
//! - the imatrix-weighted package has a lower activation-weighted squared error
//!   `Σ imatrix[j]·(w − ŵ)²` than the unweighted one, and `--method mse --imatrix` is never worse
//!   than `rtn --imatrix` in that metric on any block;
//! - the manifest records the matrix's SHA-256 and datasets.
//!
//! Needs `MODELPACK_LLAMA_DIR` (`cargo xtask llama --print-dir`, which builds llama-imatrix);
//! unset, it skips unless `MODELPACK_REQUIRE_INTEROP` is set (CI).
use crate::common;

use crate::common::llama::{llama_dir, run, Rng, Synth};
use modelpack::format::gguf::GgufFile;
use modelpack::format::imatrix::{Imatrix, ImatrixFormat};
use modelpack::quant::gguf::{dequantize_rows, GgmlType};
use predicates::prelude::PredicateBooleanExt;
use sha2::Digest;
use std::path::Path;
use std::process::Command;

const HIDDEN: usize = 256;
const INTER: usize = 512;
const LAYERS: usize = 4;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;

/// The model (see `common::llama::Synth`): the tiny fixture's config and tokenizer with
/// 256-multiple dims, smaller than tests/it/kquant_e2e.rs's.
fn write_model(dir: &Path) {
    Synth {
        hidden: HIDDEN,
        inter: INTER,
        layers: LAYERS,
        heads: HEADS,
        kv_heads: KV_HEADS,
        seed: 77,
        norm_noise: 0.05,
    }
    .write(dir);
}

/// A fixed calibration text (varied words, so the activations are not one repeated pattern).
fn calibration_text() -> String {
    let words = [
        "the", "cat", "sat", "on", "a", "warm", "mat", "while", "rain", "fell", "over", "quiet", "hills", "and",
        "rivers", "ran", "to", "sea", "under", "grey", "skies", "people", "walked", "home", "singing", "old", "songs",
        "about", "summer", "light",
    ];
    let mut r = Rng(5);
    let mut s = String::new();
    for i in 0..1500 {
        s.push_str(words[(r.next_u64() % words.len() as u64) as usize]);
        s.push(if i % 13 == 12 { '.' } else { ' ' });
    }
    s
}

/// Activation-weighted squared error `Σ_j imatrix[j]·(w − ŵ)²` of every imatrix-covered
/// tensor of `gguf` against the F32 GGUF `reference`, by tensor name.
fn weighted_errors(gguf: &GgufFile, reference: &GgufFile, m: &Imatrix) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for t in &gguf.tensors {
        let Some(w) = m.weights(&t.info.name) else { continue };
        let ty = GgmlType::from_id(t.info.ggml_type).unwrap();
        let cols = t.info.ne[0] as usize;
        let r = reference.tensor(&t.info.name).unwrap();
        let x: Vec<f32> = r.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let mut y = vec![0.0f32; x.len()];
        dequantize_rows(ty, t.data, cols, &mut y).unwrap();
        let e = x
            .iter()
            .zip(&y)
            .enumerate()
            .map(|(i, (&a, &b))| f64::from(w[i % cols]) * (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        out.push((t.info.name.clone(), e));
    }
    out
}

#[test]
fn imatrix_from_llama_imatrix_matches_llama_quantize() {
    let Some(llama) = llama_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    write_model(&model);

    // The F32 GGUF: llama-imatrix's model, llama-quantize's input and the error reference.
    let f32_pkg = tmp.path().join("f32");
    common::quantize(
        &model,
        &f32_pkg,
        &["--target", "cpu", "--scheme", "int8", "--gguf-type", "f32", "--tensor-type", "output\\.weight=f32"],
    );
    let f32_gguf = f32_pkg.join("model.gguf");
    let text = tmp.path().join("calibration.txt");
    std::fs::write(&text, calibration_text()).unwrap();
    let m_gguf = tmp.path().join("m.gguf");
    let m_dat = tmp.path().join("m.dat");
    for (out, fmt) in [(&m_gguf, "gguf"), (&m_dat, "dat")] {
        run(Command::new(llama.join("bin/llama-imatrix"))
            .arg("-m")
            .arg(&f32_gguf)
            .arg("-f")
            .arg(&text)
            .arg("-o")
            .arg(out)
            .args(["--output-format", fmt, "-c", "128", "--chunks", "8", "--no-ppl", "--process-output", "-t", "2"]));
    }

    // Our reader on llama-imatrix's own files.
    let m_bytes = std::fs::read(&m_gguf).unwrap();
    let m = Imatrix::parse(&m_bytes).unwrap();
    let legacy = Imatrix::parse(&std::fs::read(&m_dat).unwrap()).unwrap();
    assert_eq!((m.format, legacy.format), (ImatrixFormat::Gguf, ImatrixFormat::Legacy));
    assert_eq!(m.chunk_size, 128);
    assert!(m.chunk_count >= 2, "chunks: {}", m.chunk_count);
    assert_eq!(m.datasets, vec![text.display().to_string()]);
    assert_eq!(legacy.datasets, m.datasets);
    // 7 matmuls per layer plus the output projection (--process-output).
    assert_eq!(m.entries.len(), 7 * LAYERS + 1, "{:?}", m.entries.keys().collect::<Vec<_>>());
    assert_eq!(m.entries.keys().collect::<Vec<_>>(), legacy.entries.keys().collect::<Vec<_>>());
    for (name, e) in &m.entries {
        let want_cols = if name.ends_with("ffn_down.weight") { INTER } else { HIDDEN };
        assert_eq!((e.columns, e.experts), (want_cols, 1), "{name}");
        assert!(e.counts[0] > 0, "{name}: no tokens counted");
        let (a, b) = (m.weights(name).unwrap(), legacy.weights(name).unwrap());
        for (j, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1e-30), "{name}[{j}]: gguf {x} vs dat {y}");
        }
        // Real activations are not flat: the weights must vary across columns.
        let (lo, hi) = a.iter().fold((f32::MAX, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(hi > 2.0 * lo, "{name}: weights {lo}..{hi}");
    }

    // Ours vs llama-quantize, both with the matrix.
    let q4km = ["--target", "cpu", "--scheme", "int4", "--gguf-type", "q4_k_m", "--no-progress"];
    let ours_pkg = tmp.path().join("ours");
    let imatrix_arg = m_gguf.to_str().unwrap();
    let report =
        common::quantize(&model, &ours_pkg, &[&q4km[..], &["--method", "rtn", "--imatrix", imatrix_arg]].concat());
    let theirs_path = tmp.path().join("theirs.gguf");
    run(Command::new(llama.join("bin/llama-quantize"))
        .arg("--imatrix")
        .arg(&m_gguf)
        .arg(&f32_gguf)
        .arg(&theirs_path)
        .args(["Q4_K_M", "2"]));
    let plain_pkg = tmp.path().join("plain");
    common::quantize(&model, &plain_pkg, &[&q4km[..], &["--method", "rtn"]].concat());
    let mse_pkg = tmp.path().join("mse");
    common::quantize(&model, &mse_pkg, &[&q4km[..], &["--method", "mse", "--imatrix", imatrix_arg]].concat());

    let read = |p: &Path| std::fs::read(p).unwrap();
    let (ours_b, theirs_b, plain_b, mse_b, f32_b) = (
        read(&ours_pkg.join("model.gguf")),
        read(&theirs_path),
        read(&plain_pkg.join("model.gguf")),
        read(&mse_pkg.join("model.gguf")),
        read(&f32_gguf),
    );
    let ours = GgufFile::parse(&ours_b).unwrap();
    let theirs = GgufFile::parse(&theirs_b).unwrap();
    let plain = GgufFile::parse(&plain_b).unwrap();
    let mse = GgufFile::parse(&mse_b).unwrap();
    let reference = GgufFile::parse(&f32_b).unwrap();
    assert_eq!(ours.tensors.len(), theirs.tensors.len());
    let mut weighted = 0;
    for t in &ours.tensors {
        let name = &t.info.name;
        let o = theirs.tensor(name).unwrap_or_else(|| panic!("{name} missing from llama-quantize's output"));
        assert_eq!((&t.info.ne, t.info.ggml_type), (&o.info.ne, o.info.ggml_type), "{name}: shape/type");
        if t.data != o.data {
            let ty = GgmlType::from_id(t.info.ggml_type).unwrap();
            let bs = ty.type_size();
            let blk = t.data.chunks(bs).zip(o.data.chunks(bs)).position(|(a, b)| a != b).unwrap();
            panic!("{name} ({ty}): block {blk} differs from llama-quantize --imatrix");
        }
        if m.entries.contains_key(name) {
            weighted += 1;
            assert_ne!(t.data, plain.tensor(name).unwrap().data, "{name}: the matrix changed nothing");
        }
    }
    assert_eq!(weighted, 7 * LAYERS + 1);
    // llama-quantize records the matrix in the GGUF, and so do we.
    let meta_u32 = |f: &GgufFile, k: &str| match f.get(k) {
        Some(modelpack::format::gguf::MetaValue::U32(v)) => *v,
        v => panic!("{k}: {v:?}"),
    };
    for k in ["quantize.imatrix.entries_count", "quantize.imatrix.chunks_count"] {
        assert_eq!(meta_u32(&ours, k), meta_u32(&theirs, k), "{k}");
    }

    // The matrix lowers the error it measures; mse never raises it on any block.
    let e_ours = weighted_errors(&ours, &reference, &m);
    let e_plain = weighted_errors(&plain, &reference, &m);
    let e_mse = weighted_errors(&mse, &reference, &m);
    let total = |e: &[(String, f64)]| e.iter().map(|(_, v)| v).sum::<f64>();
    let (t_ours, t_plain, t_mse) = (total(&e_ours), total(&e_plain), total(&e_mse));
    eprintln!("activation-weighted squared error: unweighted {t_plain:.6e}, imatrix rtn {t_ours:.6e}, imatrix mse {t_mse:.6e}");
    assert!(t_ours < t_plain, "imatrix rtn {t_ours} vs unweighted {t_plain}");
    let better = e_ours.iter().zip(&e_plain).filter(|((_, a), (_, b))| a < b).count();
    assert!(better * 10 >= e_ours.len() * 9, "only {better} of {} tensors improved", e_ours.len());
    for ((name, a), (_, b)) in e_mse.iter().zip(&e_ours) {
        assert!(a <= b, "{name}: mse {a} > rtn {b}");
    }
    assert!(t_mse <= t_ours);

    // Single types with an mse search: `--method mse --imatrix` picks per block among llama.cpp's
    // weighted bytes, unweighted RTN and the unweighted mse search, so it is never worse than any
    // of them in the weighted error.
    for ty in ["q4_0", "q4_1", "q8_0"] {
        let mut totals = Vec::new();
        let mut per_tensor = Vec::new();
        for (label, extra) in [
            ("rtn", vec!["--method", "rtn"]),
            ("mse", vec!["--method", "mse"]),
            ("rtn+imatrix", vec!["--method", "rtn", "--imatrix", imatrix_arg]),
            ("mse+imatrix", vec!["--method", "mse", "--imatrix", imatrix_arg]),
        ] {
            let pkg = tmp.path().join(format!("{ty}-{label}"));
            let base = ["--target", "cpu", "--scheme", "int4", "--gguf-type", ty, "--no-progress", "--no-metrics"];
            common::quantize(&model, &pkg, &[&base[..], &extra[..]].concat());
            let b = read(&pkg.join("model.gguf"));
            let e = weighted_errors(&GgufFile::parse(&b).unwrap(), &reference, &m);
            totals.push((label, total(&e)));
            per_tensor.push(e);
        }
        eprintln!("{ty}: activation-weighted squared error {totals:?}");
        let best = &per_tensor[3];
        for other in &per_tensor[..3] {
            for ((name, a), (_, b)) in best.iter().zip(other) {
                assert!(a <= b, "{ty} {name}: mse+imatrix {a} > {b}");
            }
        }
        assert!(totals[3].1 < totals[0].1, "{ty}: {totals:?}");
    }

    // Provenance: the matrix's digest and datasets in the manifest and report.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ours_pkg.join("modelpack.json")).unwrap()).unwrap();
    let im = &manifest["options"]["imatrix"];
    assert_eq!(im["sha256"], hex::encode(sha2::Sha256::digest(&m_bytes)));
    assert_eq!(im["format"], "gguf");
    assert_eq!(im["datasets"][0], text.display().to_string());
    assert_eq!(im["entries"], 7 * LAYERS + 1);
    assert_eq!(report["method"], "rtn");
}

/// Tensors the matrix does not cover are quantized without it (llama-quantize's behaviour);
/// an entry with the wrong length is a clear input error (exit 2); hostile files too.
#[test]
fn imatrix_mismatch_and_garbage_are_input_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    write_model(&model);
    // A legacy .dat with one entry of the wrong length.
    let mut dat = Vec::new();
    let name = b"blk.0.attn_q.weight";
    dat.extend(1i32.to_le_bytes());
    dat.extend((name.len() as i32).to_le_bytes());
    dat.extend(name);
    dat.extend(1i32.to_le_bytes());
    dat.extend(100i32.to_le_bytes());
    dat.extend((0..100).flat_map(|_| 1.0f32.to_le_bytes()));
    let bad = tmp.path().join("bad.dat");
    std::fs::write(&bad, &dat).unwrap();
    let args = ["--target", "cpu", "--scheme", "int4", "--gguf-type", "q4_k_m", "--method", "rtn", "--no-progress"];
    common::modelpack()
        .arg("quantize")
        .arg(&model)
        .arg("-o")
        .arg(tmp.path().join("o1"))
        .args(args)
        .arg("--imatrix")
        .arg(&bad)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("blk.0.attn_q.weight").and(predicates::str::contains("256 columns")));
    assert!(!tmp.path().join("o1").exists());
    let garbage = tmp.path().join("garbage.gguf");
    std::fs::write(&garbage, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    common::modelpack()
        .arg("quantize")
        .arg(&model)
        .arg("-o")
        .arg(tmp.path().join("o2"))
        .args(args)
        .arg("--imatrix")
        .arg(&garbage)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--imatrix"));
    // A right-length entry for one tensor only: that tensor is weighted, the rest are not.
    let mut dat = Vec::new();
    dat.extend(1i32.to_le_bytes());
    dat.extend((name.len() as i32).to_le_bytes());
    dat.extend(name);
    dat.extend(1i32.to_le_bytes());
    dat.extend((HIDDEN as i32).to_le_bytes());
    let mut r = Rng(1);
    dat.extend((0..HIDDEN).flat_map(|_| (r.gauss4().abs() * 10.0).to_le_bytes()));
    let one = tmp.path().join("one.dat");
    std::fs::write(&one, &dat).unwrap();
    let with =
        common::quantize(&model, &tmp.path().join("o3"), &[&args[..], &["--imatrix", one.to_str().unwrap()]].concat());
    let without = common::quantize(&model, &tmp.path().join("o4"), &args);
    let (a, b) = (
        std::fs::read(tmp.path().join("o3/model.gguf")).unwrap(),
        std::fs::read(tmp.path().join("o4/model.gguf")).unwrap(),
    );
    let (a, b) = (GgufFile::parse(&a).unwrap(), GgufFile::parse(&b).unwrap());
    for t in &a.tensors {
        let same = t.data == b.tensor(&t.info.name).unwrap().data;
        assert_eq!(same, t.info.name != "blk.0.attn_q.weight", "{}", t.info.name);
    }
    let note = |rep: &serde_json::Value, n: &str| {
        rep["tensors"].as_array().unwrap().iter().find(|t| t["name"] == n).unwrap()["note"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(note(&with, "blk.0.attn_q.weight").contains("imatrix-weighted"));
    assert!(note(&with, "blk.0.attn_k.weight").contains("no imatrix entry"));
    assert!(!note(&without, "blk.0.attn_k.weight").contains("imatrix"));

    // cuda: entries are found under the GGUF names of the HF weights; only `mse` uses them.
    let cuda = ["--target", "cuda", "--scheme", "int4", "--no-progress", "--imatrix", one.to_str().unwrap()];
    common::modelpack()
        .arg("quantize")
        .arg(&model)
        .arg("-o")
        .arg(tmp.path().join("o5"))
        .args(cuda)
        .args(["--method", "rtn"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--method mse"));
    let rep = common::quantize(&model, &tmp.path().join("o6"), &[&cuda[..], &["--method", "mse"]].concat());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("o6/modelpack.json")).unwrap()).unwrap();
    assert_eq!(manifest["options"]["imatrix"]["format"], "dat");
    let q = note(&rep, "model.layers.0.self_attn.q_proj");
    assert!(q.contains("imatrix-weighted (blk.0.attn_q.weight)"), "{q}");
    let k = note(&rep, "model.layers.0.self_attn.k_proj");
    assert!(k.contains("no imatrix entry (blk.0.attn_k.weight)"), "{k}");
}
