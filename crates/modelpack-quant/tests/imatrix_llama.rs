//! llama.cpp as the judge of our importance-weighted quantizers: `quant_harness --mode chunk
//! --weights W` runs `ggml_quantize_chunk(type, ..., imatrix = W)` (what `llama-quantize
//! --imatrix` calls per tensor), and the bytes must equal `quantize_rows_weighted`'s.
//!
//! Needs `MODELPACK_LLAMA_DIR` (`cargo xtask llama --print-dir`); unset, the tests skip unless
//! `MODELPACK_REQUIRE_INTEROP` is set (CI), then they fail.

use modelpack_quant::gguf::GgmlType;
use modelpack_quant::imatrix::quantize_rows_weighted;
use modelpack_quant::SrcDtype;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// ggml's quantizers behind a pipe (`modelpack_testkit::judge`: skips without the llama.cpp
/// build, fails then under `MODELPACK_REQUIRE_INTEROP`).
fn harness() -> Option<PathBuf> {
    modelpack_testkit::judge::llama_tool("quant_harness")
}

/// ggml's bytes for `x` (rows of `n`) quantized to `ty` with importance weights `w`.
fn llama_bytes(exe: &Path, ty: &str, n: usize, x: &[f32], w: &[f32]) -> Vec<u8> {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let wpath = std::env::temp_dir().join(format!("modelpack-imatrix-w-{}-{seq}.bin", std::process::id()));
    std::fs::write(&wpath, w.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let mut child = Command::new(exe)
        .args([ty, &n.to_string(), "--mode", "chunk", "--weights"])
        .arg(&wpath)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let _ = std::fs::remove_file(&wpath);
    assert!(out.status.success(), "quant_harness {ty}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

// The workspace's one test generator (`modelpack-testkit`): the same stream as the copy it replaced.
use modelpack_testkit::SplitMix64 as Rng;

/// Families of `(name, rows of 512 values, weights of 512)`.
fn families() -> Vec<(&'static str, Vec<f32>, Vec<f32>)> {
    let mut r = Rng(7);
    let n = 512;
    let rows = 48;
    let mut f = Vec::new();
    // Activation-like weights: mostly O(1), a few outlier columns, some exact zeros.
    let act: Vec<f32> = (0..n)
        .map(|j| {
            let g = r.gauss4();
            if j % 97 == 5 {
                0.0
            } else if j % 61 == 3 {
                400.0 * g * g
            } else {
                0.05 + g * g
            }
        })
        .collect();
    f.push(("random", (0..rows * n).map(|_| r.gauss4() * 0.02).collect(), act.clone()));
    f.push(("heavy-tailed", (0..rows * n).map(|_| r.gauss4().powi(3) * 0.05).collect(), act.clone()));
    f.push(("positive", (0..rows * n).map(|_| r.unit().abs() * 0.3 + 0.01).collect(), act.clone()));
    f.push(("negative", (0..rows * n).map(|_| -r.unit().abs() * 0.3).collect(), act.clone()));
    let mut sparse: Vec<f32> = (0..rows * n).map(|_| r.gauss4() * 0.02).collect();
    for (i, v) in sparse.iter_mut().enumerate() {
        if (i / 32) % 3 == 0 {
            *v = 0.0;
        }
    }
    f.push(("zero-blocks", sparse, act.clone()));
    f.push(("subnormal", (0..rows * n).map(|_| r.gauss4() * 1e-39).collect(), act.clone()));
    f.push(("large", (0..rows * n).map(|_| r.gauss4() * 3.0e4).collect(), act.clone()));
    let huge_w: Vec<f32> = (0..n).map(|_| r.unit().abs() * 1e6).collect();
    f.push(("huge-weights", (0..rows * n).map(|_| r.gauss4() * 0.02).collect(), huge_w));
    let zero_w: Vec<f32> = (0..n).map(|j| if (j / 32) % 2 == 0 { 0.0 } else { 1.0 }).collect();
    f.push(("zero-weight-blocks", (0..rows * n).map(|_| r.gauss4() * 0.02).collect(), zero_w));
    f.push(("flat-weights", (0..rows * n).map(|_| r.gauss4() * 0.02).collect(), vec![1.0; n]));
    f
}

#[test]
fn weighted_quantizers_match_ggml_byte_for_byte() {
    let Some(exe) = harness() else { return };
    let types = [
        (GgmlType::Q4_K, "q4_k"),
        (GgmlType::Q6_K, "q6_k"),
        (GgmlType::Q4_0, "q4_0"),
        (GgmlType::Q4_1, "q4_1"),
        (GgmlType::Q5_0, "q5_0"),
        // llama.cpp ignores the matrix for Q8_0: so must we.
        (GgmlType::Q8_0, "q8_0"),
    ];
    let n = 512;
    let mut failures = Vec::new();
    for (fam, x, w) in families() {
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        for (ty, name) in types {
            let want = llama_bytes(&exe, name, n, &x, &w);
            let mut got = vec![0u8; x.len() / n * ty.row_bytes(n).unwrap()];
            quantize_rows_weighted(ty, SrcDtype::F32, &bytes, n, &w, &mut got, None).unwrap();
            assert_eq!(want.len(), got.len(), "{fam} {name}: size");
            if fam == "random" {
                // The weights must matter (except for Q8_0): otherwise this test proves nothing.
                let mut plain = vec![0u8; got.len()];
                modelpack_quant::quantize_rows(ty, SrcDtype::F32, &bytes, n, &mut plain, None).unwrap();
                assert_eq!(plain == want, ty == GgmlType::Q8_0, "{name}: weighted vs unweighted bytes");
            }
            if want != got {
                let first = want.iter().zip(&got).position(|(a, b)| a != b).unwrap();
                let differing = want.iter().zip(&got).filter(|(a, b)| a != b).count();
                failures.push(format!("{fam} {name}: {differing} bytes differ, first at {first}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
