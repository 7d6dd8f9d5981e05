//! Byte equality with files compressed-tensors 0.20 itself wrote (fixtures/compressed-tensors):
//! every Linear of `dense_bf16` re-quantized by our kernels, at every SIMD level this CPU has,
//! must reproduce `weight_packed`, `weight_scale` and `weight_shape` of `w4a16_g128_sym` and
//! `w8a16_channel_sym` exactly.

use modelpack_quant::ct::{quantize_rows_at, CtChunk, CtOutput, CtScheme, ScaleDtype};
use modelpack_quant::{Level, SrcDtype};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One tensor of a safetensors file: dtype name, shape, raw bytes.
struct Tensor {
    dtype: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/compressed-tensors").join(rel)
}

/// Minimal safetensors reader for these fixtures (header: a flat JSON object of
/// `{"dtype": "...", "shape": [...], "data_offsets": [a, b]}` entries plus `__metadata__`).
fn read_safetensors(rel: &str) -> BTreeMap<String, Tensor> {
    let b = std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let hdr = std::str::from_utf8(&b[8..8 + n]).unwrap();
    let base = 8 + n;
    let mut out = BTreeMap::new();
    // Split on `"name":{...}` entries; values contain no nested braces except __metadata__.
    let mut rest = hdr.trim().strip_prefix('{').unwrap();
    while let Some(q0) = rest.find('"') {
        let q1 = q0 + 1 + rest[q0 + 1..].find('"').unwrap();
        let name = &rest[q0 + 1..q1];
        let o = q1 + rest[q1..].find('{').unwrap();
        let c = o + rest[o..].find('}').unwrap();
        let body = &rest[o + 1..c];
        rest = &rest[c + 1..];
        if name == "__metadata__" {
            continue;
        }
        let field = |k: &str| {
            let i = body.find(&format!("\"{k}\"")).unwrap() + k.len() + 2;
            let v = body[i..].trim_start().strip_prefix(':').unwrap().trim_start();
            v.to_string()
        };
        let dtype = field("dtype");
        let dtype = dtype[1..1 + dtype[1..].find('"').unwrap()].to_string();
        let nums = |v: String| -> Vec<usize> {
            let e = v.find(']').unwrap();
            v[1..e].split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect()
        };
        let shape = nums(field("shape"));
        let off = nums(field("data_offsets"));
        out.insert(name.to_string(), Tensor { dtype, shape, data: b[base + off[0]..base + off[1]].to_vec() });
    }
    out
}

fn check_package(pkg: &str, scheme: CtScheme) {
    let dense = read_safetensors("dense_bf16/model.safetensors");
    let st = read_safetensors(&format!("{pkg}/model.safetensors"));
    let mods: Vec<&str> = st.keys().filter_map(|k| k.strip_suffix(".weight_packed")).collect();
    assert_eq!(mods.len(), 7, "{pkg}: expected the 7 Linear modules of one layer");
    for level in Level::supported() {
        for m in &mods {
            let w = &dense[&format!("{m}.weight")];
            assert_eq!(w.dtype, "BF16");
            let (rows, cols) = (w.shape[0], w.shape[1]);
            let want_packed = &st[&format!("{m}.weight_packed")];
            let want_scale = &st[&format!("{m}.weight_scale")];
            let want_shape = &st[&format!("{m}.weight_shape")];
            assert_eq!(want_packed.dtype, "I32");
            assert_eq!(want_packed.shape, [rows, scheme.packed_cols(cols)], "{m}");
            assert_eq!(want_scale.dtype, "BF16");
            assert_eq!(want_scale.shape, [rows, scheme.scale_cols(cols).unwrap()], "{m}");
            let shape_bytes: Vec<u8> = [rows as i64, cols as i64].iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(want_shape.dtype, "I64");
            assert_eq!(want_shape.data, shape_bytes, "{m}.weight_shape");
            assert!(!st.contains_key(&format!("{m}.weight_zero_point")), "symmetric: no zero point");

            let mut packed = vec![0u8; want_packed.data.len()];
            let mut scale = vec![0u8; want_scale.data.len()];
            quantize_rows_at(
                level,
                &CtChunk {
                    scheme,
                    src: SrcDtype::BF16,
                    scale_dtype: ScaleDtype::BF16,
                    input: &w.data,
                    row0: 0,
                    rows,
                    cols,
                },
                CtOutput { packed: &mut packed, scale: &mut scale, zp: None },
                None,
            )
            .unwrap();
            assert!(scale == want_scale.data, "{pkg} {m} weight_scale at {level:?}");
            assert!(packed == want_packed.data, "{pkg} {m} weight_packed at {level:?}");

            // Chunked in 3 uneven pieces: the same bytes.
            let (pr, sr) = (packed.len() / rows, scale.len() / rows);
            let mut packed2 = vec![0u8; packed.len()];
            let mut scale2 = vec![0u8; scale.len()];
            let cuts = [0, 8, rows / 2 + 3, rows];
            for c in cuts.windows(2) {
                let (a, b) = (c[0], c[1]);
                quantize_rows_at(
                    level,
                    &CtChunk {
                        scheme,
                        src: SrcDtype::BF16,
                        scale_dtype: ScaleDtype::BF16,
                        input: &w.data[a * cols * 2..b * cols * 2],
                        row0: a,
                        rows: b - a,
                        cols,
                    },
                    CtOutput { packed: &mut packed2[a * pr..b * pr], scale: &mut scale2[a * sr..b * sr], zp: None },
                    None,
                )
                .unwrap();
            }
            assert!(packed2 == packed && scale2 == scale, "{m}: chunking changed bytes");
        }
    }
}

#[test]
fn int4_g128_sym_matches_compressed_tensors() {
    check_package("w4a16_g128_sym", CtScheme::w4_group_sym(128));
}

#[test]
fn int8_channel_sym_matches_compressed_tensors() {
    check_package("w8a16_channel_sym", CtScheme::w8_channel_sym());
}
