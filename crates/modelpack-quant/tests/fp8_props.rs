//! FP8 decode: the code table against torch's (fixtures/fp8/codes.json, made by
//! xtask/py/make_fp8_fixtures.py), and every SIMD level against the scalar reference
//! (`table[code] * scale`) over all 256 codes × random scales, odd lengths, partial edge blocks,
//! stacked matrices, subnormal and huge scales, and NaN codes (same error index everywhere).
//! The fused decode + quantize (`quantize_gguf_rows_at`) against the independent reference
//! decode followed by the scalar GGUF quantizer: same bytes and same statistics at every level.

use modelpack_quant::convert::f32_to_bf16;
use modelpack_quant::fp8::{decode, dequantize_rows_at, quantize_gguf_rows_at, table, Fp8Format, Fp8Layout, Fp8Scales};
use modelpack_quant::gguf::{quantize_rows_at, GgmlType};
use modelpack_quant::ErrorStats;
use modelpack_quant::{Level, QuantError, SrcDtype};
use modelpack_testkit::SplitMix64 as Rng;
use proptest::prelude::*;
use std::path::PathBuf;

const FORMATS: [(Fp8Format, &str); 2] = [(Fp8Format::E4M3, "e4m3fn"), (Fp8Format::E5M2, "e5m2")];

#[test]
fn code_table_matches_torch() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/fp8/codes.json");
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    for (fmt, key) in FORMATS {
        let want = j[key].as_array().unwrap();
        assert_eq!(want.len(), 256);
        for (c, w) in want.iter().enumerate() {
            let got = decode(fmt, c as u8);
            match w.as_u64() {
                None => assert!(got.is_nan(), "{key} code {c:#04x}: torch NaN, got {got}"),
                Some(bits) => assert_eq!(got.to_bits(), bits as u32, "{key} code {c:#04x}"),
            }
            assert_eq!(table(fmt)[c].to_bits(), got.to_bits());
        }
    }
}

/// The reference: per element `table[code] * scale[block]`, written out independently.
fn reference(fmt: Fp8Format, codes: &[u8], scales: &[f32], l: &Fp8Layout, row0: usize) -> Vec<f32> {
    let (sr, sc) = (l.rows.div_ceil(l.block_rows), l.cols.div_ceil(l.block_cols));
    codes
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let (r, col) = (row0 + i / l.cols, i % l.cols);
            let (m, rr) = (r / l.rows, r % l.rows);
            decode(fmt, c) * scales[(m * sr + rr / l.block_rows) * sc + col / l.block_cols]
        })
        .collect()
}

fn scale_bytes(s: &[f32], dt: SrcDtype) -> Vec<u8> {
    match dt {
        SrcDtype::F32 => s.iter().flat_map(|v| v.to_le_bytes()).collect(),
        SrcDtype::BF16 => s.iter().flat_map(|v| f32_to_bf16(*v).to_le_bytes()).collect(),
        SrcDtype::F16 => s.iter().flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes()).collect(),
    }
}

fn widen(s: &[f32], dt: SrcDtype) -> Vec<f32> {
    let b = scale_bytes(s, dt);
    (0..s.len()).map(|i| modelpack_quant::convert::load(dt, &b, i)).collect()
}

fn check_case(seed: u64, fmt: Fp8Format, l: Fp8Layout, matrices: usize, sdt: SrcDtype, nan: bool) {
    let mut r = Rng::new(seed);
    let total_rows = l.rows * matrices;
    let n_scales = matrices * l.rows.div_ceil(l.block_rows) * l.cols.div_ceil(l.block_cols);
    let scales: Vec<f32> = (0..n_scales)
        .map(|_| match r.below(6) {
            0 => f32::from_bits(r.below(0x80_0000) as u32 + 1), // subnormal
            1 => 2f32.powi(r.int(-30, 30) as i32),
            2 => -r.unit().abs() * 1e3,
            3 => 6.0e4,
            _ => r.unit() * 2f32.powi(r.int(-12, 4) as i32),
        })
        .collect();
    let sb = scale_bytes(&scales, sdt);
    let sw = widen(&scales, sdt);
    // Every finite code appears (the tensor cycles through them from a random start).
    let start = r.below(256);
    let mut codes: Vec<u8> = (0..total_rows * l.cols)
        .map(|i| if i < 256 { ((start + i) % 256) as u8 } else { r.next_u64() as u8 })
        .map(|c| if fp8_bad(fmt, c) { 0x11 } else { c })
        .collect();
    if nan && !codes.is_empty() {
        let at = r.below(codes.len());
        codes[at] = if fmt == Fp8Format::E4M3 { 0x7f | (r.next_u64() as u8 & 0x80) } else { 0x7e };
    }
    // Any row window: start anywhere, several row counts.
    let row0 = r.below(total_rows.max(1));
    let n = (total_rows - row0).min(1 + r.below(total_rows.max(1)));
    let cs = &codes[row0 * l.cols..(row0 + n) * l.cols];
    let want = reference(fmt, cs, &sw, &l, row0);
    let first_bad = cs.iter().position(|&c| fp8_bad(fmt, c));
    for level in Level::supported() {
        let mut out = vec![0.0f32; cs.len()];
        let got = dequantize_rows_at(level, fmt, cs, Fp8Scales { bytes: &sb, dtype: sdt }, &l, row0, &mut out);
        match first_bad {
            Some(i) => match got {
                Err(QuantError::NonFinite { index, value }) => {
                    assert_eq!(index, i, "{level:?}");
                    assert!(!value.is_finite());
                }
                other => panic!("{level:?}: NaN code at {i} gave {other:?}"),
            },
            None => {
                got.unwrap();
                for (k, (a, b)) in out.iter().zip(&want).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{level:?} {fmt:?} element {k}: {a} vs {b}");
                }
            }
        }
    }
}

fn fp8_bad(fmt: Fp8Format, c: u8) -> bool {
    !decode(fmt, c).is_finite()
}

#[test]
fn all_codes_every_level() {
    for (fmt, _) in FORMATS {
        // One row of all 256 codes (minus non-finite ones) with one scale, at every level.
        let codes: Vec<u8> = (0..=255u8).filter(|&c| !fp8_bad(fmt, c)).collect();
        let l = Fp8Layout { rows: 1, cols: codes.len(), block_rows: 1, block_cols: codes.len() };
        // Subnormal, huge (256 × s overflows: the two-multiply path), just below that bound, -0.
        for s in [1.0f32, 0.37, -3.5e-3, f32::from_bits(1), 3.0e38, f32::MAX / 256.0, -0.0, 1.0e-30] {
            let sb = s.to_le_bytes();
            let want: Vec<f32> = codes.iter().map(|&c| table(fmt)[c as usize] * s).collect();
            for level in Level::supported() {
                let mut out = vec![0.0; codes.len()];
                dequantize_rows_at(level, fmt, &codes, Fp8Scales { bytes: &sb, dtype: SrcDtype::F32 }, &l, 0, &mut out)
                    .unwrap();
                assert_eq!(
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{level:?} {fmt:?} scale {s}"
                );
            }
        }
    }
}

#[test]
fn nan_codes_are_refused_at_every_level() {
    for code in [0x7fu8, 0xff] {
        for pos in [0usize, 5, 15, 16, 31, 40] {
            let mut codes = vec![0x38u8; 41];
            codes[pos] = code;
            let l = Fp8Layout { rows: 1, cols: 41, block_rows: 1, block_cols: 41 };
            for level in Level::supported() {
                let mut out = vec![0.0; 41];
                let e = dequantize_rows_at(
                    level,
                    Fp8Format::E4M3,
                    &codes,
                    Fp8Scales { bytes: &1f32.to_le_bytes(), dtype: SrcDtype::F32 },
                    &l,
                    0,
                    &mut out,
                )
                .unwrap_err();
                assert!(matches!(e, QuantError::NonFinite { index, .. } if index == pos), "{level:?} {e:?}");
            }
        }
    }
}

#[test]
fn short_scales_are_a_shape_error() {
    let l = Fp8Layout { rows: 4, cols: 8, block_rows: 2, block_cols: 4 };
    let mut out = vec![0.0; 32];
    let e = dequantize_rows_at(
        Level::Scalar,
        Fp8Format::E4M3,
        &[0u8; 32],
        Fp8Scales { bytes: &[0u8; 12], dtype: SrcDtype::F32 },
        &l,
        0,
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(e, QuantError::Shape(_)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn simd_matches_scalar(
        seed in any::<u64>(),
        e5 in any::<bool>(),
        rows in 1usize..40,
        cols in 1usize..300,
        br in 1usize..50,
        bc in 1usize..140,
        matrices in 1usize..4,
        sdt in 0usize..3,
        nan in prop::bool::weighted(0.2),
    ) {
        let fmt = if e5 { Fp8Format::E5M2 } else { Fp8Format::E4M3 };
        let sdt = [SrcDtype::F32, SrcDtype::BF16, SrcDtype::F16][sdt];
        // Per-channel (block_cols = cols) and per-tensor layouts come up as br/bc ≥ the dims.
        let l = Fp8Layout { rows, cols, block_rows: br.min(rows), block_cols: bc.min(cols) };
        check_case(seed, fmt, l, matrices, sdt, nan);
    }
}

/// The fused FP8 → Q8_0/Q4_0/Q4_1 path against the two-step definition: the reference decode
/// above, then the scalar quantizer over the whole chunk (bytes and error statistics, bit for
/// bit), at every level. A chunk with a NaN code or a non-finite product is `Ok(false)` with
/// `stats` untouched; the two-step path reports its error.
fn check_fused(seed: u64, fmt: Fp8Format, l: Fp8Layout, matrices: usize, ty: GgmlType, poison: usize) {
    let mut r = Rng::new(seed);
    let total_rows = l.rows * matrices;
    let n_scales = matrices * l.rows.div_ceil(l.block_rows) * l.cols.div_ceil(l.block_cols);
    let mut scales: Vec<f32> = (0..n_scales)
        .map(|_| match r.below(5) {
            0 => f32::from_bits(r.below(0x80_0000) as u32 + 1), // subnormal
            1 => 2f32.powi(r.int(-30, 30) as i32),
            2 => -r.unit().abs() * 1e3,
            3 => 0.0,
            _ => r.unit() * 2f32.powi(r.int(-12, 4) as i32),
        })
        .collect();
    let start = r.below(256);
    let mut codes: Vec<u8> = (0..total_rows * l.cols)
        .map(|i| if i < 256 { ((start + i) % 256) as u8 } else { r.next_u64() as u8 })
        .map(|c| if fp8_bad(fmt, c) { 0x11 } else { c })
        .collect();
    let row0 = r.below(total_rows);
    let n = (total_rows - row0).min(1 + r.below(total_rows));
    match poison {
        // A NaN/Inf code somewhere in the window.
        1 => {
            let at = row0 * l.cols + r.below(n * l.cols);
            codes[at] = if fmt == Fp8Format::E4M3 { 0x7f | (r.next_u64() as u8 & 0x80) } else { 0x7c };
        }
        // A scale so large that a product overflows to inf (the code 0x7e/0x7b is the largest).
        2 => {
            let at = row0 * l.cols + r.below(n * l.cols);
            codes[at] = if fmt == Fp8Format::E4M3 { 0x7e } else { 0x7b };
            scales.iter_mut().for_each(|s| *s = 3.0e38);
        }
        _ => {}
    }
    let sb = scale_bytes(&scales, SrcDtype::F32);
    let cs = &codes[row0 * l.cols..(row0 + n) * l.cols];
    let x = reference(fmt, cs, &scales, &l, row0);
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let rb = ty.row_bytes(l.cols).unwrap();
    let mut want = vec![0u8; n * rb];
    let mut want_st = ErrorStats::new();
    let two_step = quantize_rows_at(Level::Scalar, ty, SrcDtype::F32, &xb, l.cols, &mut want, Some(&mut want_st));
    for level in Level::supported() {
        for with_stats in [false, true] {
            let mut out = vec![0u8; n * rb];
            // A non-empty start: the chunk's statistics are merged into what is there.
            let mut st = ErrorStats { count: 7, sum_sq_ref: 1.5, ..ErrorStats::new() };
            let before = st;
            let done = quantize_gguf_rows_at(
                level,
                ty,
                fmt,
                cs,
                Fp8Scales { bytes: &sb, dtype: SrcDtype::F32 },
                &l,
                row0,
                &mut out,
                with_stats.then_some(&mut st),
            )
            .unwrap();
            let ctx = format!("{level:?} {fmt:?} {ty:?} {l:?} row0 {row0} n {n} poison {poison}");
            if two_step.is_err() {
                assert!(!done, "{ctx}: the two-step path fails ({two_step:?}) but fused reported success");
                assert_eq!(bits(&st), bits(&before), "{ctx}: statistics touched on a refused chunk");
                continue;
            }
            assert!(done, "{ctx}: refused a finite chunk");
            assert!(out == want, "{ctx}: bytes differ from decode + scalar quantize");
            if with_stats {
                let mut w = before;
                w.merge(&want_st);
                assert_eq!(bits(&st), bits(&w), "{ctx}: statistics");
            }
        }
    }
}

/// Statistics as bits (a chunk with huge values has NaN sums, which `==` never equates).
fn bits(s: &ErrorStats) -> [u64; 6] {
    [
        s.sum_sq_ref.to_bits(),
        s.sum_sq_err.to_bits(),
        s.sum_sq_deq.to_bits(),
        s.dot.to_bits(),
        u64::from(s.max_abs_err.to_bits()),
        s.count,
    ]
}

#[test]
fn fused_refuses_other_types_and_bad_shapes() {
    let l = Fp8Layout { rows: 2, cols: 64, block_rows: 128, block_cols: 128 };
    let sb = 1f32.to_le_bytes();
    let sc = Fp8Scales { bytes: &sb, dtype: SrcDtype::F32 };
    let codes = [0x38u8; 128];
    let mut out = vec![0u8; 2 * GgmlType::Q4_K.row_bytes(256).unwrap()];
    let e = quantize_gguf_rows_at(Level::Scalar, GgmlType::Q4_K, Fp8Format::E4M3, &codes, sc, &l, 0, &mut out, None);
    assert!(matches!(e, Err(QuantError::Unsupported(_))), "{e:?}");
    // Output of the wrong size, and a row length that is not whole blocks.
    let mut out = vec![0u8; 3 * 34];
    let e = quantize_gguf_rows_at(Level::Scalar, GgmlType::Q8_0, Fp8Format::E4M3, &codes, sc, &l, 0, &mut out, None);
    assert!(matches!(e, Err(QuantError::Shape(_))), "{e:?}");
    let l40 = Fp8Layout { rows: 2, cols: 40, block_rows: 128, block_cols: 128 };
    let mut out = vec![0u8; 2 * 34];
    let e = quantize_gguf_rows_at(
        Level::Scalar,
        GgmlType::Q8_0,
        Fp8Format::E4M3,
        &codes[..80],
        sc,
        &l40,
        0,
        &mut out,
        None,
    );
    assert!(matches!(e, Err(QuantError::Shape(_))), "{e:?}");
    // Scales that do not cover the rows.
    let l4 = Fp8Layout { rows: 4, cols: 64, block_rows: 1, block_cols: 64 };
    let mut out = vec![0u8; 4 * 2 * 34];
    let e = quantize_gguf_rows_at(
        Level::Scalar,
        GgmlType::Q8_0,
        Fp8Format::E4M3,
        &[0x38u8; 256],
        Fp8Scales { bytes: &[0u8; 12], dtype: SrcDtype::F32 },
        &l4,
        0,
        &mut out,
        None,
    );
    assert!(matches!(e, Err(QuantError::Shape(_))), "{e:?}");
}

/// Rows longer than the fused path's 2048-element piece, DeepSeek-V3's 128×128 blocks.
#[test]
fn fused_long_rows() {
    for (i, ty) in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1].into_iter().enumerate() {
        for (j, (fmt, _)) in FORMATS.into_iter().enumerate() {
            let l = Fp8Layout { rows: 130, cols: 7168 - 32 * (i + j), block_rows: 128, block_cols: 128 };
            check_fused(0xf00d + (i * 2 + j) as u64, fmt, l, 1, ty, 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]
    #[test]
    fn fused_matches_two_step(
        seed in any::<u64>(),
        e5 in any::<bool>(),
        ty in 0usize..3,
        rows in 1usize..12,
        blocks in 1usize..90,
        br in 1usize..20,
        bc in 1usize..200,
        matrices in 1usize..3,
        poison in prop::sample::select(vec![0usize, 0, 0, 1, 2]),
    ) {
        let fmt = if e5 { Fp8Format::E5M2 } else { Fp8Format::E4M3 };
        let ty = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1][ty];
        let cols = 32 * blocks;
        let l = Fp8Layout { rows, cols, block_rows: br.min(rows), block_cols: bc.min(cols) };
        check_fused(seed, fmt, l, matrices, ty, poison);
    }
}
