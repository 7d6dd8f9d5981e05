//! llama.cpp as the judge of our K-quants (and of Q5_0, their fallback for rows that are not whole
//! 256-blocks): `quant_harness` (built by `cargo xtask llama`) runs ggml's own
//! `quantize_row_q4_K_ref` / `quantize_row_q6_K_ref` / `quantize_row_q5_0_ref` on the same f32
//! rows, and the bytes must equal ours at every SIMD level. Also: our dequantization equals ggml's `to_float`
//! and the `gguf` Python package's `dequantize` bit for bit.
//!
//! Needs `MODELPACK_LLAMA_DIR` (`cargo xtask llama --print-dir`) and, for the Python check,
//! `MODELPACK_PYTHON` (`cargo xtask venv`). Unset: the tests skip, unless
//! `MODELPACK_REQUIRE_INTEROP` is set (CI), then they fail.

use modelpack_quant::convert::bf16_to_f32;
use modelpack_quant::gguf::{dequantize_rows, quantize_rows_at, GgmlType};
use modelpack_quant::kquants::QK_K;
use modelpack_quant::{Level, SrcDtype};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// ggml's quantizers behind a pipe (`modelpack_testkit::judge`: skips without the llama.cpp
/// build, fails then under `MODELPACK_REQUIRE_INTEROP`).
fn harness() -> Option<PathBuf> {
    modelpack_testkit::judge::llama_tool("quant_harness")
}

/// Run the harness with `args`, feeding `input` on stdin; returns stdout.
fn run_harness(exe: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "quant_harness {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

// The workspace's one test generator (`modelpack-testkit`): the same stream as the copy it replaced.
use modelpack_testkit::SplitMix64 as Rng;

/// Named families of rows (each `rows × 256·blocks` values).
fn families() -> Vec<(&'static str, usize, Vec<f32>)> {
    let mut r = Rng(42);
    let mut fams = Vec::new();
    let row = 2 * QK_K;
    let n = 64 * row;
    fams.push(("random", row, (0..n).map(|_| r.gauss4() * 0.02).collect()));
    fams.push(("heavy-tailed", row, (0..n).map(|_| r.gauss4().powi(3) * 0.05).collect()));
    fams.push(("all-equal", row, (0..n).map(|i| 0.125 * ((i / 32) % 5) as f32 - 0.25).collect()));
    fams.push(("zeros", row, vec![0.0; n]));
    fams.push(("tiny-range", row, (0..n).map(|_| 1.0 + r.unit() * 1e-6).collect()));
    fams.push((
        "outliers",
        row,
        (0..n).map(|i| if i % 97 == 0 { r.unit() * 50.0 } else { r.gauss4() * 0.01 }).collect(),
    ));
    fams.push(("scales", row, (0..n).map(|i| r.gauss4() * 2f32.powi((i / row) as i32 - 40)).collect()));
    fams.push(("subnormal", row, (0..n).map(|_| r.unit() * 1e-39).collect()));
    fams.push(("integers", row, (0..n).map(|_| ((r.next_u64() % 33) as f32 - 16.0) * 0.5).collect()));
    fams.push(("positive", row, (0..n).map(|_| r.gauss4().abs() + 0.5).collect()));
    fams.push(("sparse", row, (0..n).map(|_| if r.next_u64().is_multiple_of(7) { r.gauss4() } else { 0.0 }).collect()));
    fams.push(("fixture", QK_K, fixture_rows()));
    fams
}

/// Every 2-D bf16 tensor of `fixtures/tiny-llama` as one stream of real trained-shape values,
/// cut into rows of 256.
fn fixture_rows() -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tiny-llama/model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + hlen]).unwrap();
    let data = &bytes[8 + hlen..];
    let mut vals = Vec::new();
    let mut names: Vec<&String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    for name in names {
        let t = &header[name];
        if t["dtype"] != "BF16" || t["shape"].as_array().unwrap().len() != 2 {
            continue;
        }
        let off = t["data_offsets"].as_array().unwrap();
        let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
        vals.extend(data[a..b].chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))));
    }
    vals.truncate(vals.len() / QK_K * QK_K);
    assert!(vals.len() >= 100 * QK_K, "the fixture should give at least 100 super-blocks");
    vals
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn bytes_equal_llama_cpp_reference() {
    let Some(exe) = harness() else { return };
    let mut total = 0;
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q5_0] {
        let tname = ty.name().to_ascii_lowercase();
        for (fam, row, x) in families() {
            let input = f32_bytes(&x);
            let want = run_harness(&exe, &[&tname, &row.to_string(), "--mode", "ref"], &input);
            for level in Level::supported() {
                let mut got = vec![0u8; want.len()];
                quantize_rows_at(level, ty, SrcDtype::F32, &input, row, &mut got, None).unwrap();
                if got != want {
                    let bs = ty.type_size();
                    let blk = got.chunks(bs).zip(want.chunks(bs)).position(|(a, b)| a != b).unwrap();
                    panic!("{ty} {fam} {level:?}: block {blk} differs from llama.cpp");
                }
            }
            total += want.len() / ty.type_size();
        }
    }
    eprintln!("{total} blocks (K-quant super-blocks, Q5_0 blocks) byte-identical to llama.cpp");
}

#[test]
fn dequantize_equals_ggml_to_float() {
    let Some(exe) = harness() else { return };
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q5_0] {
        let tname = ty.name().to_ascii_lowercase();
        for (fam, row, x) in families() {
            let q = run_harness(&exe, &[&tname, &row.to_string(), "--mode", "ref"], &f32_bytes(&x));
            let theirs = run_harness(&exe, &[&tname, &row.to_string(), "--mode", "dequant"], &q);
            let mut ours = vec![0.0f32; x.len()];
            dequantize_rows(ty, &q, row, &mut ours).unwrap();
            assert_eq!(f32_bytes(&ours), theirs, "{ty} {fam}");
        }
    }
}

/// The `gguf` package dequantizes our bytes (read from stdin-named files) and the values must be
/// bit-identical to ours.
const GGUF_DEQUANT: &str = r#"
import sys, numpy as np, gguf
from gguf import GGMLQuantizationType as T
t = {"Q4_K": T.Q4_K, "Q6_K": T.Q6_K, "Q5_0": T.Q5_0}[sys.argv[1]]
row_bytes = int(sys.argv[2])
q = np.fromfile(sys.argv[3], dtype=np.uint8).reshape(-1, row_bytes)
gguf.quants.dequantize(q, t).astype(np.float32).tofile(sys.argv[4])
"#;

#[test]
fn dequantize_equals_gguf_package() {
    let Some(py) = modelpack_testkit::judge::python() else { return };
    let tmp = std::env::temp_dir().join(format!("kquant-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q5_0] {
        for (fam, row, x) in families() {
            let input = f32_bytes(&x);
            let mut q = vec![0u8; x.len() / row * ty.row_bytes(row).unwrap()];
            quantize_rows_at(Level::Scalar, ty, SrcDtype::F32, &input, row, &mut q, None).unwrap();
            let (qf, of) = (tmp.join("q.bin"), tmp.join("out.bin"));
            std::fs::write(&qf, &q).unwrap();
            let st = Command::new(&py)
                .args(["-c", GGUF_DEQUANT, ty.name(), &ty.row_bytes(row).unwrap().to_string()])
                .arg(&qf)
                .arg(&of)
                .status()
                .unwrap();
            assert!(st.success(), "python gguf dequantize failed");
            let theirs = std::fs::read(&of).unwrap();
            let mut ours = vec![0.0f32; x.len()];
            dequantize_rows(ty, &q, row, &mut ours).unwrap();
            assert_eq!(f32_bytes(&ours), theirs, "{ty} {fam}");
        }
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
