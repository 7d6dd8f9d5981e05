//! K-quant property tests: every SIMD level writes the scalar reference's bytes (Q4_K, Q6_K; f32,
//! f16 and bf16 sources) on random and adversarial super-blocks, odd block counts included;
//! NaN/inf give the same error everywhere; the parallel driver matches; dequantization stays
//! within each format's error bound; error statistics are bit-identical at every level.
//!
//! The imatrix-weighted K-quants (`imatrix::quantize_rows_weighted_at`) get the same proof: every
//! level equals the scalar `quantize_row_q4_K_impl` / `q6_K_impl` port bit for bit, on the same
//! kinds of super-block with random, sparse (zeros), huge, tiny and all-zero weights.
//!
//! Byte equality with llama.cpp itself is `tests/kquant_llama.rs` / `tests/imatrix_llama.rs`;
//! this file proves the vectorised searches equal our scalar port of them.

use modelpack_quant::gguf::{dequantize_rows, quantize_rows_at, quantize_tensor_par, GgmlType};
use modelpack_quant::imatrix::quantize_rows_weighted_at;
use modelpack_quant::kquants::QK_K;
use modelpack_quant::{ErrorStats, Level, QuantError, SrcDtype};
use proptest::prelude::*;

const TYPES: [GgmlType; 2] = [GgmlType::Q4_K, GgmlType::Q6_K];
const SRCS: [SrcDtype; 3] = [SrcDtype::F32, SrcDtype::F16, SrcDtype::BF16];

// The workspace's one test generator (`modelpack-testkit`): the same stream as the copy it replaced.
use modelpack_testkit::SplitMix64 as Rng;

/// Number of super-block kinds [`make_superblock`] knows.
const KINDS: u8 = 16;

/// One super-block of 256 values of a given kind, scaled by `2^k`.
fn make_superblock(kind: u8, seed: u64, k: i32) -> Vec<f32> {
    let mut r = Rng(seed);
    let s = 2f32.powi(k);
    let mut b: Vec<f32> = (0..QK_K).map(|_| r.gauss4() * s).collect();
    match kind % KINDS {
        0 => {}
        1 => b.iter_mut().for_each(|v| *v = 0.0),
        2 => b.iter_mut().for_each(|v| *v = if r.next_u64() & 1 == 0 { 0.0 } else { -0.0 }),
        3 => b.iter_mut().for_each(|v| *v = s * 0.75), // constant positive
        4 => b.iter_mut().for_each(|v| *v = -s * 0.5), // constant negative (max == min)
        5 => {
            // Heavy tails: a cube of a Gaussian.
            b.iter_mut().for_each(|v| *v = *v * *v * *v / (s * s));
        }
        6 => {
            // One outlier per super-block.
            let i = r.below(QK_K);
            b[i] = 1000.0 * s * if r.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        }
        7 => {
            // Tiny range around an offset.
            b.iter_mut().for_each(|v| *v = s + *v * s * 1e-5);
        }
        8 => b.iter_mut().for_each(|v| *v *= 1e-38), // f32 subnormals
        9 => b.iter_mut().for_each(|v| *v *= 1e-12), // below Q6_K's 1e-15 scale cut in places
        10 => {
            // Some sub-blocks zero, some constant, the rest random.
            for (j, c) in b.chunks_mut(16).enumerate() {
                match j % 3 {
                    0 => c.iter_mut().for_each(|v| *v = 0.0),
                    1 => c.iter_mut().for_each(|v| *v = s * 0.25),
                    _ => {}
                }
            }
        }
        11 => {
            // Integers (exact ties for the search's rounding).
            b.iter_mut().for_each(|v| *v = ((r.below(31) as f32) - 15.0) * s);
        }
        12 => b.iter_mut().for_each(|v| *v = v.abs()), // all positive (min clamps to 0)
        13 => b.iter_mut().for_each(|v| *v = -v.abs()), // all negative
        14 => b.iter_mut().for_each(|v| *v *= 1e30),   // near f32 overflow of the sums
        _ => {
            // Sparse.
            b.iter_mut().for_each(|v| {
                if !r.next_u64().is_multiple_of(5) {
                    *v = 0.0
                }
            });
        }
    }
    b
}

fn encode(src: SrcDtype, x: &[f32]) -> Vec<u8> {
    use modelpack_quant::convert::{f32_to_bf16, f32_to_f16};
    match src {
        SrcDtype::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        SrcDtype::F16 => x.iter().flat_map(|&v| f32_to_f16(v).to_le_bytes()).collect(),
        SrcDtype::BF16 => x.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes()).collect(),
    }
}

fn quant(level: Level, ty: GgmlType, src: SrcDtype, bytes: &[u8], row: usize) -> Result<Vec<u8>, QuantError> {
    let rows = bytes.len() / src.size() / row;
    let mut out = vec![0u8; rows * ty.row_bytes(row).unwrap()];
    quantize_rows_at(level, ty, src, bytes, row, &mut out, None).map(|_| out)
}

fn assert_levels_agree(ty: GgmlType, src: SrcDtype, x: &[f32], row: usize, what: &str) {
    let bytes = encode(src, x);
    let want = quant(Level::Scalar, ty, src, &bytes, row);
    for level in Level::supported() {
        let got = quant(level, ty, src, &bytes, row);
        match (&want, &got) {
            (Ok(a), Ok(b)) => {
                if a != b {
                    let bs = ty.type_size();
                    let blk = a.chunks(bs).zip(b.chunks(bs)).position(|(p, q)| p != q).unwrap();
                    panic!("{ty} {src:?} {level:?} {what}: super-block {blk} differs");
                }
            }
            _ => assert_eq!(want, got, "{ty} {src:?} {level:?} {what}"),
        }
    }
}

/// Error statistics at every level: bit-identical to the scalar path, which is within 1e-12 of
/// plain sequential f64 sums over the public dequantizer's output (an independent definition).
fn assert_stats_agree(ty: GgmlType, src: SrcDtype, x: &[f32], row: usize, what: &str) {
    let bytes = encode(src, x);
    let rows = x.len() / row;
    let mut want = ErrorStats::new();
    let mut out = vec![0u8; rows * ty.row_bytes(row).unwrap()];
    if quantize_rows_at(Level::Scalar, ty, src, &bytes, row, &mut out, Some(&mut want)).is_err() {
        return;
    }
    let mut y = vec![0f32; x.len()];
    dequantize_rows(ty, &out, row, &mut y).unwrap();
    let xs: Vec<f32> = match src {
        SrcDtype::F32 => x.to_vec(),
        SrcDtype::F16 => {
            bytes.chunks(2).map(|c| modelpack_quant::convert::f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
        }
        SrcDtype::BF16 => {
            bytes.chunks(2).map(|c| modelpack_quant::convert::bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
        }
    };
    let mut seq = ErrorStats::new();
    seq.add(&xs, &y);
    assert_eq!((want.count, want.max_abs_err.to_bits()), (seq.count, seq.max_abs_err.to_bits()), "{ty} {src:?} {what}");
    for (a, b) in [(want.sum_sq_ref, seq.sum_sq_ref), (want.sum_sq_err, seq.sum_sq_err), (want.dot, seq.dot)] {
        assert!((a - b).abs() <= 1e-12 * b.abs() || !b.is_finite(), "{ty} {src:?} {what}: {a} vs {b}");
    }
    let bits = |s: &ErrorStats| {
        (
            s.sum_sq_ref.to_bits(),
            s.sum_sq_err.to_bits(),
            s.sum_sq_deq.to_bits(),
            s.dot.to_bits(),
            s.max_abs_err.to_bits(),
            s.count,
        )
    };
    for level in Level::supported() {
        let mut got = ErrorStats::new();
        let mut o2 = vec![0u8; out.len()];
        quantize_rows_at(level, ty, src, &bytes, row, &mut o2, Some(&mut got)).unwrap();
        assert!(o2 == out, "{ty} {src:?} {level:?} {what}: bytes");
        assert_eq!(bits(&got), bits(&want), "{ty} {src:?} {level:?} {what}: statistics");
    }
}

#[test]
fn stats_identical_at_every_level() {
    for ty in TYPES {
        for src in SRCS {
            for kind in 0..KINDS {
                for &k in &[-30, -3, 0, 20] {
                    let x: Vec<f32> = (0..3).flat_map(|b| make_superblock(kind, 7000 * kind as u64 + b, k)).collect();
                    assert_stats_agree(ty, src, &x, QK_K, &format!("kind {kind} scale 2^{k}"));
                    assert_stats_agree(ty, src, &x, 3 * QK_K, &format!("kind {kind} scale 2^{k}, one row"));
                }
            }
        }
    }
}

#[test]
fn every_kind_every_scale_every_level() {
    for ty in TYPES {
        for src in SRCS {
            for kind in 0..KINDS {
                for &k in &[-30, -12, -3, 0, 4, 20] {
                    // Three super-blocks (odd: the AVX2 Q4_K kernel pairs them) per call.
                    let x: Vec<f32> = (0..3).flat_map(|b| make_superblock(kind, 1000 * kind as u64 + b, k)).collect();
                    assert_levels_agree(ty, src, &x, QK_K, &format!("kind {kind} scale 2^{k}"));
                }
            }
        }
    }
}

#[test]
fn many_random_rows_agree() {
    // 257 super-blocks of mixed kinds in rows of 512 and 768 values.
    let mut r = Rng(7);
    let x: Vec<f32> =
        (0..258).flat_map(|b| make_superblock(r.below(KINDS as usize) as u8, b, r.below(40) as i32 - 20)).collect();
    for ty in TYPES {
        assert_levels_agree(ty, SrcDtype::F32, &x[..258 * QK_K], 768, "rows of 768");
        assert_levels_agree(ty, SrcDtype::BF16, &x[..256 * QK_K], 512, "rows of 512");
    }
}

#[test]
fn non_finite_is_the_same_error_everywhere() {
    for ty in TYPES {
        for (pos, bad) in [(5usize, f32::NAN), (300, f32::INFINITY), (767, f32::NEG_INFINITY)] {
            let mut x: Vec<f32> = (0..3).flat_map(|b| make_superblock(0, b, 0)).collect();
            x[pos] = bad;
            for src in SRCS {
                let bytes = encode(src, &x);
                for level in Level::supported() {
                    let e = quant(level, ty, src, &bytes, QK_K).unwrap_err();
                    match e {
                        QuantError::NonFinite { index, .. } => assert_eq!(index, pos, "{ty} {src:?} {level:?}"),
                        e => panic!("{ty} {level:?}: {e}"),
                    }
                }
            }
        }
    }
}

#[test]
fn parallel_driver_matches_rows() {
    let x: Vec<f32> = (0..96).flat_map(|b| make_superblock((b % KINDS as u64) as u8, b, 0)).collect();
    for ty in TYPES {
        let bytes = encode(SrcDtype::BF16, &x);
        let want = quant(Level::Scalar, ty, SrcDtype::BF16, &bytes, 1024).unwrap();
        let mut got = vec![0u8; want.len()];
        quantize_tensor_par(ty, SrcDtype::BF16, &bytes, 1024, &mut got, None).unwrap();
        assert_eq!(want, got, "{ty}");
    }
}

#[test]
fn dequantized_error_is_bounded() {
    // Per sub-block worst cases: Q6_K codes step d·|sc| with |x| <= ~32 steps; Q4_K at most the
    // sub-block range / 15 × (1 + 6-bit scale rounding). Checked loosely against the block range.
    for ty in TYPES {
        for seed in 0..20u64 {
            let x = make_superblock(0, seed, 0);
            let q = quant(Level::Scalar, ty, SrcDtype::F32, &encode(SrcDtype::F32, &x), QK_K).unwrap();
            let mut y = vec![0.0f32; QK_K];
            dequantize_rows(ty, &q, QK_K, &mut y).unwrap();
            let sub = if ty == GgmlType::Q4_K { 32 } else { 16 };
            let steps = if ty == GgmlType::Q4_K { 15.0 } else { 31.0 };
            for (xs, ys) in x.chunks(sub).zip(y.chunks(sub)) {
                let lo = xs.iter().cloned().fold(0.0f32, f32::min);
                let hi = xs.iter().cloned().fold(0.0f32, f32::max);
                let step = (hi - lo) / steps;
                for (a, b) in xs.iter().zip(ys) {
                    assert!((a - b).abs() <= 1.5 * step + 1e-6, "{ty} seed {seed}: {a} vs {b} (step {step})");
                }
            }
        }
    }
}

/// Number of weight kinds [`make_weights`] knows.
const WKINDS: u8 = 6;

/// Importance weights (one per column, finite and non-negative, as `llama-imatrix` writes them).
fn make_weights(kind: u8, seed: u64, n: usize) -> Vec<f32> {
    let mut r = Rng(seed ^ 0xa5a5);
    (0..n)
        .map(|j| {
            let g = r.gauss4();
            match kind % WKINDS {
                0 => g * g,
                1 => {
                    if j % 3 == 0 {
                        0.0
                    } else {
                        g * g * 100.0
                    }
                }
                2 => g.abs() * 1e8,
                3 => 0.0,
                4 => g.abs() * 1e-30,
                _ => {
                    // Whole zero sub-blocks next to ordinary ones.
                    if (j / 32) % 2 == 0 {
                        0.0
                    } else {
                        1.0 + g.abs()
                    }
                }
            }
        })
        .collect()
}

fn quant_weighted(
    level: Level,
    ty: GgmlType,
    src: SrcDtype,
    bytes: &[u8],
    row: usize,
    w: &[f32],
) -> Result<Vec<u8>, QuantError> {
    let rows = bytes.len() / src.size() / row;
    let mut out = vec![0u8; rows * ty.row_bytes(row).unwrap()];
    quantize_rows_weighted_at(level, ty, src, bytes, row, w, &mut out, None).map(|_| out)
}

/// Every level's weighted bytes (and errors) equal the scalar path's.
fn assert_weighted_levels_agree(ty: GgmlType, src: SrcDtype, x: &[f32], row: usize, w: &[f32], what: &str) {
    let bytes = encode(src, x);
    let want = quant_weighted(Level::Scalar, ty, src, &bytes, row, w);
    for level in Level::supported() {
        let got = quant_weighted(level, ty, src, &bytes, row, w);
        match (&want, &got) {
            (Ok(a), Ok(b)) => {
                if a != b {
                    let bs = ty.type_size();
                    let blk = a.chunks(bs).zip(b.chunks(bs)).position(|(p, q)| p != q).unwrap();
                    panic!("{ty} {src:?} {level:?} {what}: weighted super-block {blk} differs");
                }
            }
            _ => assert_eq!(want, got, "{ty} {src:?} {level:?} {what}"),
        }
    }
}

#[test]
fn weighted_every_kind_every_weight_every_level() {
    for ty in TYPES {
        for src in SRCS {
            for kind in 0..KINDS {
                for wkind in 0..WKINDS {
                    for k in [-30i32, -3, 0, 20] {
                        // 1..=9 super-blocks: every tail of the 4-block AVX-512 Q4_K group.
                        let nb = 1 + (kind as usize + wkind as usize + k.unsigned_abs() as usize) % 9;
                        let seed = 100 * kind as u64 + 10 * wkind as u64;
                        let x: Vec<f32> = (0..nb as u64).flat_map(|b| make_superblock(kind, seed + b, k)).collect();
                        let w = make_weights(wkind, seed, nb * QK_K);
                        let what = format!("kind {kind} weights {wkind} scale 2^{k}");
                        assert_weighted_levels_agree(ty, src, &x, nb * QK_K, &w, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn weighted_rows_of_mixed_kinds_agree() {
    // Many rows of two super-blocks: the weights repeat per row, the values change kind.
    let mut r = Rng(11);
    let x: Vec<f32> =
        (0..90).flat_map(|b| make_superblock(r.below(KINDS as usize) as u8, b, r.below(40) as i32 - 20)).collect();
    for ty in TYPES {
        for wkind in 0..WKINDS {
            let w = make_weights(wkind, 5, 2 * QK_K);
            assert_weighted_levels_agree(ty, SrcDtype::BF16, &x, 2 * QK_K, &w, &format!("weights {wkind}"));
        }
    }
}

#[test]
fn range_proof_fallback_in_every_group_position() {
    // Values near f32::MAX make `max - min` overflow, so the SIMD kernels' range proof fails and
    // their whole group (2 or 4 super-blocks) goes to the scalar path; the others stay in SIMD.
    for pos in 0..6 {
        let mut x: Vec<f32> = (0..6).flat_map(|b| make_superblock(0, 40 + b, 0)).collect();
        for (i, v) in x[pos * QK_K..(pos + 1) * QK_K].iter_mut().enumerate() {
            *v = if i % 2 == 0 { 3.0e38 } else { -3.0e38 * (i as f32 / 256.0) };
        }
        for ty in TYPES {
            assert_levels_agree(ty, SrcDtype::F32, &x, QK_K, &format!("huge block at {pos}"));
            for wkind in [0, 3] {
                let w = make_weights(wkind, pos as u64, 6 * QK_K);
                assert_weighted_levels_agree(ty, SrcDtype::F32, &x, 6 * QK_K, &w, &format!("huge block at {pos}"));
            }
        }
    }
}

#[test]
fn weighted_non_finite_is_the_same_error_everywhere() {
    for ty in TYPES {
        for (pos, bad) in [(5usize, f32::NAN), (300, f32::INFINITY), (1279, f32::NEG_INFINITY)] {
            let mut x: Vec<f32> = (0..5).flat_map(|b| make_superblock(0, b, 0)).collect();
            x[pos] = bad;
            let w = make_weights(0, 1, QK_K);
            for src in SRCS {
                let bytes = encode(src, &x);
                for level in Level::supported() {
                    let e = quant_weighted(level, ty, src, &bytes, QK_K, &w).unwrap_err();
                    match e {
                        QuantError::NonFinite { index, .. } => assert_eq!(index, pos, "{ty} {src:?} {level:?}"),
                        e => panic!("{ty} {level:?}: {e}"),
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn weighted_random_bits_agree(
        ty in prop::sample::select(TYPES.to_vec()),
        blocks in 1usize..10,
        words in prop::collection::vec(any::<u32>(), 9 * QK_K),
        wwords in prop::collection::vec(any::<u32>(), 9 * QK_K),
        exp_cap in 100u32..254,
        zero_every in 1usize..8,
    ) {
        // Arbitrary finite values (subnormals included); weights arbitrary finite non-negative
        // bit patterns with every `zero_every`-th one zero.
        let x: Vec<f32> = words[..blocks * QK_K]
            .iter()
            .map(|&w| {
                let e = ((w >> 23) & 0xff) % exp_cap;
                f32::from_bits((w & 0x807f_ffff) | (e << 23))
            })
            .collect();
        let w: Vec<f32> = wwords[..blocks * QK_K]
            .iter()
            .enumerate()
            .map(|(j, &b)| if j % zero_every == 0 { 0.0 } else { f32::from_bits((b & 0x7fff_ffff) % 0x7f00_0000) })
            .collect();
        assert_weighted_levels_agree(ty, SrcDtype::F32, &x, blocks * QK_K, &w, "random bits");
    }

    #[test]
    fn weighted_random_gaussian_rows_agree(
        ty in prop::sample::select(TYPES.to_vec()),
        seed in any::<u64>(),
        k in -40i32..40,
        rows in 1usize..5,
        blocks in 1usize..6,
        wkind in 0u8..WKINDS,
    ) {
        let x: Vec<f32> = (0..(rows * blocks) as u64).flat_map(|b| make_superblock(0, seed ^ b, k)).collect();
        let w = make_weights(wkind, seed, blocks * QK_K);
        assert_weighted_levels_agree(ty, SrcDtype::F16, &x, blocks * QK_K, &w, "gaussian");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bits_agree(
        ty in prop::sample::select(TYPES.to_vec()),
        blocks in 1usize..10,
        words in prop::collection::vec(any::<u32>(), 9 * QK_K),
        exp_cap in 100u32..254,
    ) {
        // Arbitrary finite bit patterns (subnormals included), exponent capped so a run mixes
        // magnitudes.
        let x: Vec<f32> = words[..blocks * QK_K]
            .iter()
            .map(|&w| {
                let e = ((w >> 23) & 0xff) % exp_cap;
                f32::from_bits((w & 0x807f_ffff) | (e << 23))
            })
            .collect();
        assert_levels_agree(ty, SrcDtype::F32, &x, QK_K, "random bits");
        assert_stats_agree(ty, SrcDtype::F32, &x, QK_K, "random bits");
    }

    #[test]
    fn random_gaussian_rows_agree(
        ty in prop::sample::select(TYPES.to_vec()),
        seed in any::<u64>(),
        k in -40i32..40,
        blocks in 1usize..8,
    ) {
        let x: Vec<f32> = (0..blocks as u64).flat_map(|b| make_superblock(0, seed ^ b, k)).collect();
        assert_levels_agree(ty, SrcDtype::F16, &x, QK_K, "gaussian");
    }
}
