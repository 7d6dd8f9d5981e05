//! Property tests of the importance-weighted quantizers (`modelpack_quant::imatrix`):
//! - `--method mse` with a matrix is never worse than `rtn` with it (llama.cpp's weighted bytes)
//!   nor than unweighted RTN, on any block, in the activation-weighted error
//!   `Σ imatrix[j]·(x_j − x̂_j)²` (recomputed here in f64 from the bytes with the dequantizer);
//! - every SIMD level writes the same bytes and statistics;
//! - NaN/±inf input is refused with its index; the weighted quantizers are deterministic and
//!   independent of how rows are chunked.
//!
//! Inputs: random, zero, constant, one outlier, subnormal, huge blocks; weights random, with
//! zeros, huge, or all zero.

use modelpack_quant::convert::{f32_to_bf16, f32_to_f16};
use modelpack_quant::ct::{self, CtChunk, CtOutput, CtPacked, CtScheme, ScaleDtype, Strategy as CtStrategy};
use modelpack_quant::gguf::{self, GgmlType};
use modelpack_quant::imatrix::{quantize_ct_rows_mse_at, quantize_rows_mse_at, quantize_rows_weighted};
use modelpack_quant::mse;
use modelpack_quant::{ErrorStats, Level, QuantError, SrcDtype};
use proptest::prelude::*;

// The workspace's one test generator (`modelpack-testkit`): the same stream as the copy it replaced.
use modelpack_testkit::SplitMix64 as Rng;

fn values(kind: u8, seed: u64, k: i32, n: usize) -> Vec<f32> {
    let mut r = Rng(seed);
    let s = 2f32.powi(k);
    let mut b: Vec<f32> = (0..n).map(|_| r.gauss3() * s).collect();
    match kind % 7 {
        0 | 1 => {}
        2 => b.iter_mut().for_each(|v| *v = 0.0),
        3 => b.iter_mut().for_each(|v| *v = s * 0.3),
        4 => {
            let i = (r.next_u64() % n as u64) as usize;
            b[i] = s * 40.0;
        }
        5 => b.iter_mut().for_each(|v| *v *= 1e-39),
        _ => b.iter_mut().for_each(|v| *v *= 1e25),
    }
    b
}

fn weights(kind: u8, seed: u64, n: usize) -> Vec<f32> {
    let mut r = Rng(seed ^ 0x5555);
    (0..n)
        .map(|j| {
            let g = r.gauss3();
            match kind % 5 {
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
                _ => 1.0 + g.abs(),
            }
        })
        .collect()
}

fn encode(src: SrcDtype, x: &[f32]) -> Vec<u8> {
    match src {
        SrcDtype::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        SrcDtype::F16 => x.iter().flat_map(|&v| f32_to_f16(v).to_le_bytes()).collect(),
        SrcDtype::BF16 => x.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes()).collect(),
    }
}

/// The activation-weighted error of one block, in f64 from its dequantized bytes; weight-0
/// columns do not count and NaN (an overflowing f16 scale decodes to inf·0) counts as +inf.
fn weighted_error(ty: GgmlType, block: &[u8], x: &[f32], w: &[f32], y: &mut [f32]) -> f64 {
    gguf::dequantize_rows(ty, block, x.len(), y).unwrap();
    let mut e = 0.0f64;
    for j in 0..x.len() {
        if w[j] != 0.0 {
            e += f64::from(w[j]) * (f64::from(x[j]) - f64::from(y[j])).powi(2);
        }
    }
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

fn decode(src: SrcDtype, b: &[u8]) -> Vec<f32> {
    let mut x = vec![0.0f32; b.len() / src.size()];
    modelpack_quant::convert::load_slice(src, b, &mut x);
    x
}

const SRCS: [SrcDtype; 3] = [SrcDtype::F32, SrcDtype::F16, SrcDtype::BF16];
const MSE_TYPES: [GgmlType; 4] = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0];

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// mse never loses to rtn (weighted, llama.cpp's) or to unweighted RTN on any block.
    #[test]
    fn mse_is_never_worse_than_rtn_in_the_weighted_error(
        ty_i in 0usize..4, src_i in 0usize..3, kind in 0u8..7, wkind in 0u8..5,
        seed in any::<u64>(), k in -8i32..8, blocks in 1usize..5, rows in 1usize..4,
    ) {
        let (ty, src) = (MSE_TYPES[ty_i], SRCS[src_i]);
        let row_len = 32 * blocks;
        let input = encode(src, &values(kind, seed, k, row_len * rows));
        let x = decode(src, &input);
        // Huge blocks overflow f16 (refusal is tested below).
        prop_assume!(x.iter().all(|v| v.is_finite()));
        let w = weights(wkind, seed, row_len);
        let size = rows * ty.row_bytes(row_len).unwrap();
        let (mut mse, mut rtn_w, mut rtn) = (vec![0u8; size], vec![0u8; size], vec![0u8; size]);
        quantize_rows_mse_at(Level::Scalar, ty, src, &input, row_len, &w, &mut mse, None).unwrap();
        quantize_rows_weighted(ty, src, &input, row_len, &w, &mut rtn_w, None).unwrap();
        gguf::quantize_rows_at(Level::Scalar, ty, src, &input, row_len, &mut rtn, None).unwrap();
        let bs = ty.type_size();
        let mut y = vec![0.0f32; 32];
        for b in 0..size / bs {
            let xb = &x[32 * b..32 * b + 32];
            let c0 = (32 * b) % row_len;
            let wb = &w[c0..c0 + 32];
            let e = |bytes: &[u8], y: &mut [f32]| weighted_error(ty, &bytes[b * bs..(b + 1) * bs], xb, wb, y);
            let (em, ew, er) = (e(&mse, &mut y), e(&rtn_w, &mut y), e(&rtn, &mut y));
            prop_assert!(em <= ew, "{ty} block {b}: mse {em} > weighted rtn {ew}");
            prop_assert!(em <= er, "{ty} block {b}: mse {em} > rtn {er}");
        }
    }

    /// Every SIMD level: same bytes and statistics; row chunking does not matter.
    #[test]
    fn levels_and_chunks_agree(
        ty_i in 0usize..4, src_i in 0usize..3, kind in 0u8..7, wkind in 0u8..5,
        seed in any::<u64>(), k in -8i32..8, blocks in 1usize..5, rows in 2usize..5,
    ) {
        let (ty, src) = (MSE_TYPES[ty_i], SRCS[src_i]);
        let row_len = 32 * blocks;
        let input = encode(src, &values(kind, seed, k, row_len * rows));
        prop_assume!(decode(src, &input).iter().all(|v| v.is_finite()));
        let w = weights(wkind, seed, row_len);
        let size = rows * ty.row_bytes(row_len).unwrap();
        let mut want = vec![0u8; size];
        let mut want_stats = ErrorStats::new();
        quantize_rows_mse_at(Level::Scalar, ty, src, &input, row_len, &w, &mut want, Some(&mut want_stats)).unwrap();
        for level in Level::supported() {
            let mut got = vec![0u8; size];
            let mut stats = ErrorStats::new();
            quantize_rows_mse_at(level, ty, src, &input, row_len, &w, &mut got, Some(&mut stats)).unwrap();
            prop_assert_eq!(&got, &want, "{:?}", level);
            prop_assert_eq!(format!("{stats:?}"), format!("{want_stats:?}"), "{:?}", level);
            // Row by row.
            let (ir, or) = (row_len * src.size(), ty.row_bytes(row_len).unwrap());
            let mut split = vec![0u8; size];
            for (i, o) in input.chunks(ir).zip(split.chunks_mut(or)) {
                quantize_rows_mse_at(level, ty, src, i, row_len, &w, o, None).unwrap();
            }
            prop_assert_eq!(&split, &want);
        }
    }
}

#[test]
fn non_finite_input_is_refused_with_its_index() {
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0] {
        let row_len = 256;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = vec![0.5f32; 2 * row_len];
            x[300] = bad;
            let input = encode(SrcDtype::F32, &x);
            let mut out = vec![0u8; 2 * ty.row_bytes(row_len).unwrap()];
            let w = vec![1.0f32; row_len];
            let r = quantize_rows_weighted(ty, SrcDtype::F32, &input, row_len, &w, &mut out, None);
            assert!(matches!(r, Err(QuantError::NonFinite { index: 300, .. })), "{ty}: {r:?}");
            let r = quantize_rows_mse_at(Level::Scalar, ty, SrcDtype::F32, &input, row_len, &w, &mut out, None);
            assert!(matches!(r, Err(QuantError::NonFinite { index: 300, .. })), "{ty} mse: {r:?}");
        }
    }
}

const CT_SCHEMES: [CtScheme; 5] = [
    CtScheme { bits: 4, strategy: CtStrategy::Group(32), symmetric: true },
    CtScheme { bits: 4, strategy: CtStrategy::Group(16), symmetric: false },
    CtScheme { bits: 4, strategy: CtStrategy::Channel, symmetric: true },
    CtScheme { bits: 8, strategy: CtStrategy::Channel, symmetric: true },
    CtScheme { bits: 8, strategy: CtStrategy::Group(32), symmetric: false },
];

/// A compressed-tensors chunk: `(packed, scale, zp)` buffers for `rows × cols`.
fn ct_bufs(s: &CtScheme, sd: ScaleDtype, rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>, Option<Vec<u8>>) {
    let sc = s.scale_cols(cols).unwrap();
    (
        vec![0u8; rows * s.packed_cols(cols) * 4],
        vec![0u8; rows * sc * sd.size()],
        (!s.symmetric).then(|| vec![0u8; s.zp_rows(rows) * sc * 4]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// compressed-tensors mse with a matrix: per group never worse than unweighted mse or RTN in
    /// the weighted error (decoded with `ct::dequantize_rows`); every SIMD level writes the same.
    #[test]
    fn ct_mse_with_imatrix_is_never_worse_per_group(
        s_i in 0usize..5, src_i in 0usize..3, kind in 0u8..6, wkind in 0u8..5,
        seed in any::<u64>(), k in -8i32..8, groups in 1usize..4, rows in 1usize..9,
    ) {
        let s = CT_SCHEMES[s_i];
        let src = SRCS[src_i];
        let sd = ScaleDtype::BF16;
        let cols = 32 * groups;
        let input = encode(src, &values(kind, seed, k, rows * cols));
        let x = decode(src, &input);
        prop_assume!(x.iter().all(|v| v.is_finite()));
        let w = weights(wkind, seed, cols);
        let (mut p, mut sc, mut zp) = ct_bufs(&s, sd, rows, cols);
        quantize_ct_rows_mse_at(Level::Scalar, &CtChunk { scheme: s, src, scale_dtype: sd, input: &input, row0: 0, rows, cols }, &w, CtOutput { packed: &mut p, scale: &mut sc, zp: zp.as_deref_mut() }, None).unwrap();
        let (mut pm, mut scm, mut zpm) = ct_bufs(&s, sd, rows, cols);
        mse::quantize_ct_rows_at(Level::Scalar, &CtChunk { scheme: s, src, scale_dtype: sd, input: &input, row0: 0, rows, cols }, CtOutput { packed: &mut pm, scale: &mut scm, zp: zpm.as_deref_mut() }, None).unwrap();
        let (mut pr, mut scr, mut zpr) = ct_bufs(&s, sd, rows, cols);
        ct::quantize_rows_at(Level::Scalar, &CtChunk { scheme: s, src, scale_dtype: sd, input: &input, row0: 0, rows, cols }, CtOutput { packed: &mut pr, scale: &mut scr, zp: zpr.as_deref_mut() }, None).unwrap();
        let decode_ct = |p: &[u8], sc: &[u8], zp: Option<&[u8]>| {
            let mut y = vec![0f32; rows * cols];
            ct::dequantize_rows(&s, sd, CtPacked { packed: p, scale: sc, zp }, 0, rows, cols, &mut y).unwrap();
            y
        };
        let (y, ym, yr) = (decode_ct(&p, &sc, zp.as_deref()), decode_ct(&pm, &scm, zpm.as_deref()), decode_ct(&pr, &scr, zpr.as_deref()));
        let group = match s.strategy { CtStrategy::Group(g) => g, CtStrategy::Channel => cols };
        for r in 0..rows {
            for g0 in (0..cols).step_by(group) {
                let e = |y: &[f32]| {
                    let mut e = 0.0f64;
                    for c in g0..g0 + group {
                        if w[c] != 0.0 {
                            e += f64::from(w[c]) * (f64::from(x[r * cols + c]) - f64::from(y[r * cols + c])).powi(2);
                        }
                    }
                    if e.is_nan() { f64::INFINITY } else { e }
                };
                let (a, b, c) = (e(&y), e(&ym), e(&yr));
                prop_assert!(a <= b && a <= c, "row {r} group at {g0}: {a} vs mse {b}, rtn {c}");
            }
        }
        for level in Level::supported() {
            let (mut p2, mut sc2, mut zp2) = ct_bufs(&s, sd, rows, cols);
            quantize_ct_rows_mse_at(level, &CtChunk { scheme: s, src, scale_dtype: sd, input: &input, row0: 0, rows, cols }, &w, CtOutput { packed: &mut p2, scale: &mut sc2, zp: zp2.as_deref_mut() }, None).unwrap();
            prop_assert_eq!((&p2, &sc2, &zp2), (&p, &sc, &zp), "{:?}", level);
        }
    }
}
