//! pack-quantized decode: every SIMD level against an independent scalar reference written here
//! (unpack by division, not shifts; `(u - z) * s` computed in f64 and rounded once to f32),
//! over random int4/int8 words, symmetric and asymmetric, odd column counts, group sizes that are
//! and are not whole words, subnormal, huge and NaN scales; and the Q4_0 repack against the
//! decode (a repacked block dequantizes to exactly `code * scale`).

use modelpack_quant::packed::{dequantize_rows_at, q4_0_from_int4_row, PackedLayout, PackedTensors, Q4_0_BLOCK_BYTES};
use modelpack_quant::{Level, QuantError, SrcDtype};
use modelpack_testkit::SplitMix64 as Rng;
use proptest::prelude::*;

fn scale_bytes(s: &[f32], dt: SrcDtype) -> Vec<u8> {
    match dt {
        SrcDtype::F32 => s.iter().flat_map(|v| v.to_le_bytes()).collect(),
        SrcDtype::BF16 => s.iter().flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes()).collect(),
        SrcDtype::F16 => s.iter().flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes()).collect(),
    }
}

fn widen(b: &[u8], dt: SrcDtype, i: usize) -> f32 {
    match dt {
        SrcDtype::F32 => f32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap()),
        SrcDtype::BF16 => half::bf16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
        SrcDtype::F16 => half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
    }
}

/// Nibble/byte `k` of a u32, by arithmetic.
fn field(w: u32, bits: u32, k: usize) -> u32 {
    (w / 2u32.pow(bits * k as u32)) % 2u32.pow(bits)
}

fn reference(
    l: &PackedLayout,
    words: &[u32],
    scales: &[u8],
    dt: SrcDtype,
    zp: Option<&[u32]>,
    row0: usize,
    n: usize,
) -> Vec<f32> {
    let per = (32 / l.bits) as usize;
    let wpr = l.cols.div_ceil(per);
    let g = l.cols / l.group;
    let mut out = Vec::new();
    for r in row0..row0 + n {
        for c in 0..l.cols {
            let u = field(words[r * wpr + c / per], l.bits, c % per) as i64;
            let gi = c / l.group;
            let z = match zp {
                None => 1i64 << (l.bits - 1),
                Some(z) => field(z[(r / per) * g + gi], l.bits, r % per) as i64,
            };
            // Exact for bf16/f16 scales (at most 8 + 11 significant bits).
            out.push(((u - z) as f64 * widen(scales, dt, r * g + gi) as f64) as f32);
        }
    }
    out
}

fn bytes(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[allow(clippy::too_many_arguments)]
fn check_case(seed: u64, bits: u32, rows: usize, cols: usize, group: usize, sym: bool, dt: SrcDtype, odd_scale: u8) {
    let mut rng = Rng::new(seed);
    let l = PackedLayout { rows, cols, bits, group, symmetric: sym };
    let words: Vec<u32> = (0..rows * l.words_per_row()).map(|_| rng.next_u64() as u32).collect();
    let g = l.groups();
    let scales: Vec<f32> = (0..rows * g)
        .map(|i| match (odd_scale, i % 7) {
            (1, 3) => f32::from_bits(1 + (rng.next_u64() as u32 & 0xff)), // f32 subnormal
            (2, 5) => 1.0e37 * (1.0 + rng.unit()),                        // near the top
            (3, 2) => 0.0,
            _ => (rng.unit() - 0.5) * 2f32.powi((rng.next_u64() % 40) as i32 - 30),
        })
        .collect();
    let sb = scale_bytes(&scales, dt);
    let zp: Option<Vec<u32>> = (!sym).then(|| (0..l.zp_rows() * g).map(|_| rng.next_u64() as u32).collect());
    let zpb = zp.as_ref().map(|z| bytes(z));
    let wb = bytes(&words);
    let t = PackedTensors { words: &wb, scales: &sb, scale_dtype: dt, zero_points: zpb.as_deref() };
    let row0 = (seed as usize) % rows;
    let n = rows - row0;
    let want = reference(&l, &words, &sb, dt, zp.as_deref(), row0, n);
    let first_bad = want.iter().position(|v| !v.is_finite());
    for level in Level::supported() {
        let mut out = vec![0.0f32; n * cols];
        let r = dequantize_rows_at(level, t, &l, row0, &mut out);
        match first_bad {
            Some(i) => {
                assert!(
                    matches!(r, Err(QuantError::NonFinite { index, .. }) if index == i),
                    "{level:?}: {r:?} want {i}"
                )
            }
            None => {
                r.unwrap();
                let (a, b): (Vec<u32>, Vec<u32>) =
                    (out.iter().map(|v| v.to_bits()).collect(), want.iter().map(|v| v.to_bits()).collect());
                assert_eq!(a, b, "{level:?} bits {bits} {rows}x{cols} g{group} sym {sym} {dt:?}");
            }
        }
    }
}

#[test]
fn nan_scale_is_refused_at_every_level() {
    let l = PackedLayout { rows: 2, cols: 64, bits: 4, group: 32, symmetric: true };
    let wb = vec![0x11u8; 2 * 8 * 4];
    let sb: Vec<u8> = [1.0f32, 2.0, f32::NAN, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    for level in Level::supported() {
        let mut out = vec![0.0; 128];
        let t = PackedTensors { words: &wb, scales: &sb, scale_dtype: SrcDtype::F32, zero_points: None };
        let e = dequantize_rows_at(level, t, &l, 0, &mut out).unwrap_err();
        assert!(matches!(e, QuantError::NonFinite { index: 64, .. }), "{level:?} {e:?}");
    }
}

#[test]
fn short_tensors_are_a_shape_error() {
    let l = PackedLayout { rows: 2, cols: 64, bits: 4, group: 32, symmetric: false };
    let wb = vec![0u8; 64];
    let sb = vec![0u8; 16];
    let mut out = vec![0.0; 128];
    // Asymmetric without zero points, then with too few.
    let t = PackedTensors { words: &wb, scales: &sb, scale_dtype: SrcDtype::F32, zero_points: None };
    assert!(matches!(dequantize_rows_at(Level::Scalar, t, &l, 0, &mut out), Err(QuantError::Shape(_))));
    let t = PackedTensors { zero_points: Some(&[0u8; 4]), ..t };
    assert!(matches!(dequantize_rows_at(Level::Scalar, t, &l, 0, &mut out), Err(QuantError::Shape(_))));
    let l = PackedLayout { group: 24, ..l };
    assert!(matches!(dequantize_rows_at(Level::Scalar, t, &l, 0, &mut out), Err(QuantError::Shape(_))));
}

/// A Q4_0 block's values as llama.cpp dequantizes them: `(nibble - 8) * d`.
fn q4_0_values(block: &[u8]) -> Vec<f32> {
    let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
    let mut v = vec![0.0; 32];
    for j in 0..16 {
        v[j] = ((block[2 + j] & 0x0f) as i32 - 8) as f32 * d;
        v[j + 16] = ((block[2 + j] >> 4) as i32 - 8) as f32 * d;
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn simd_matches_reference(
        seed in any::<u64>(),
        int8 in any::<bool>(),
        rows in 1usize..20,
        words in 1usize..12,
        gdiv in 1usize..5,
        extra in 0usize..8,
        sym in any::<bool>(),
        dt in 0usize..3,
        odd_scale in 0u8..4,
    ) {
        let bits = if int8 { 8 } else { 4 };
        let per = 32 / bits as usize;
        // Columns: whole words or not (`extra`), groups whole words or not.
        let cols = (words * per + extra) * gdiv;
        let group = cols / gdiv;
        let dt = [SrcDtype::F32, SrcDtype::BF16, SrcDtype::F16][dt];
        check_case(seed, bits, rows, cols, group, sym, dt, odd_scale);
    }

    #[test]
    fn q4_0_repack_is_code_times_scale(
        seed in any::<u64>(),
        blocks in 1usize..6,
        gblocks in 1usize..3,
        dt in 0usize..3,
    ) {
        let mut rng = Rng::new(seed);
        let cols = 32 * blocks * gblocks;
        let group = 32 * gblocks;
        let l = PackedLayout { rows: 3, cols, bits: 4, group, symmetric: true };
        let words: Vec<u32> = (0..3 * l.words_per_row()).map(|_| rng.next_u64() as u32).collect();
        let dt = [SrcDtype::F32, SrcDtype::BF16, SrcDtype::F16][dt];
        // Some scales f16-exact, some not (f32 with low mantissa bits, or below f16's range).
        let scales: Vec<f32> = (0..3 * blocks)
            .map(|i| match i % 3 {
                0 => half::f16::from_f32(rng.unit()).to_f32(),
                1 => rng.unit() * 1e-3,
                _ => rng.unit() * 1e-9,
            })
            .collect();
        let sb = scale_bytes(&scales, dt);
        let wb = bytes(&words);
        let t = PackedTensors { words: &wb, scales: &sb, scale_dtype: dt, zero_points: None };
        for r in 0..3 {
            let mut out = vec![0xAAu8; blocks * gblocks * Q4_0_BLOCK_BYTES];
            let fb = q4_0_from_int4_row(t, &l, r, &mut out).unwrap();
            for b in 0..blocks * gblocks {
                let s = widen(&sb, dt, r * blocks + b / gblocks);
                let exact = half::f16::from_f32(s).to_f32().to_bits() == s.to_bits();
                prop_assert_eq!(fb.contains(&b), !exact);
                if exact {
                    let got = q4_0_values(&out[b * Q4_0_BLOCK_BYTES..(b + 1) * Q4_0_BLOCK_BYTES]);
                    let want: Vec<f32> = (0..32)
                        .map(|j| {
                            let c = 32 * b + j;
                            (field(words[r * l.words_per_row() + c / 8], 4, c % 8) as i32 - 8) as f32 * s
                        })
                        .collect();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}
