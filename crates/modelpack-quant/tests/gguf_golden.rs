//! Byte equality with the reference `gguf` Python package (0.19.0): the golden vectors in
//! `fixtures/golden/gguf/` were written by `xtask/py/golden_gguf.py` (`cargo xtask fixtures`),
//! never by this crate. Every SIMD level this CPU supports must reproduce them.

use modelpack_quant::gguf::{dequantize_rows, quantize_rows_at, quantize_tensor_par, GgmlType};
use modelpack_quant::{ErrorStats, Level, SrcDtype};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden/gguf")
}

fn src_of(s: &str) -> SrcDtype {
    match s {
        "f32" => SrcDtype::F32,
        "f16" => SrcDtype::F16,
        "bf16" => SrcDtype::BF16,
        other => panic!("unknown src {other}"),
    }
}

fn ty_of(s: &str) -> GgmlType {
    GgmlType::ALL.into_iter().find(|t| t.name() == s).unwrap()
}

#[test]
fn quantize_matches_gguf_package_at_every_level() {
    let dir = golden_dir();
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let cases = index["cases"].as_array().unwrap();
    assert!(cases.len() >= 6, "golden index lists every source dtype");
    let mut checked = 0;
    for case in cases {
        let src = src_of(case["src"].as_str().unwrap());
        let row_len = case["row_len"].as_u64().unwrap() as usize;
        let rows = case["rows"].as_u64().unwrap() as usize;
        let input = std::fs::read(dir.join(case["input"].as_str().unwrap())).unwrap();
        assert_eq!(input.len(), rows * row_len * src.size());
        for (tname, o) in case["outputs"].as_object().unwrap() {
            let ty = ty_of(tname);
            let want = std::fs::read(dir.join(o["file"].as_str().unwrap())).unwrap();
            let label = format!("{} {} {}", case["name"], case["src"], tname);
            for level in Level::supported() {
                let mut got = vec![0u8; want.len()];
                quantize_rows_at(level, ty, src, &input, row_len, &mut got, None).unwrap();
                if got != want {
                    let bs = ty.type_size();
                    let blk = got.chunks(bs).zip(want.chunks(bs)).position(|(a, b)| a != b).unwrap();
                    panic!(
                        "{label} at {level:?}: block {blk} differs\n got  {:02x?}\n want {:02x?}",
                        &got[blk * bs..(blk + 1) * bs],
                        &want[blk * bs..(blk + 1) * bs]
                    );
                }
                checked += 1;
            }
            // Dequantization equals gguf.quants.dequantize (f32 LE bytes, compared by SHA-256).
            let mut deq = vec![0f32; rows * row_len];
            dequantize_rows(ty, &want, row_len, &mut deq).unwrap();
            let bytes: Vec<u8> = deq.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(hex(&Sha256::digest(&bytes)), o["dequant_sha256"].as_str().unwrap(), "{label} dequantize");
            // The parallel entry point and the stats option do not change the bytes.
            let mut par = vec![0u8; want.len()];
            let mut stats = ErrorStats::new();
            quantize_tensor_par(ty, src, &input, row_len, &mut par, Some(&mut stats)).unwrap();
            assert_eq!(par, want, "{label} quantize_tensor_par");
            assert_eq!(stats.count, (rows * row_len) as u64);
        }
    }
    assert!(checked >= 21, "only {checked} comparisons ran");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
