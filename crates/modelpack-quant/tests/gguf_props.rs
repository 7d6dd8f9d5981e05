//! Property tests: every SIMD level produces the scalar reference's bytes, for every source dtype,
//! on adversarial blocks; non-finite input gives the same error everywhere; quantize → dequantize
//! stays within each format's worst-case bound.

use modelpack_quant::convert::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use modelpack_quant::gguf::{dequantize_rows, quantize_rows_at, quantize_tensor_par, GgmlType};
use modelpack_quant::ErrorStats;
use modelpack_quant::{Level, QuantError, SrcDtype};
use proptest::prelude::*;

const QK: usize = 32;
const TYPES: [GgmlType; 7] =
    [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::F32, GgmlType::F16, GgmlType::BF16];
const SRCS: [SrcDtype; 3] = [SrcDtype::F32, SrcDtype::F16, SrcDtype::BF16];

// The workspace's one test generator (`modelpack-testkit`): the same stream as the copy it replaced.
use modelpack_testkit::SplitMix64 as Rng;

/// One block of a given kind; `k` picks a power-of-two scale.
fn make_block(kind: u8, seed: u64, k: i32) -> Vec<f32> {
    let mut r = Rng(seed);
    let s = 2f32.powi(k);
    let mut b: Vec<f32> = (0..QK).map(|_| r.unit() * s).collect();
    match kind % 13 {
        0 => {}
        1 => b.iter_mut().for_each(|v| *v = 0.0), // all +0
        2 => b.iter_mut().for_each(|v| *v = if r.next_u64() & 1 == 0 { 0.0 } else { -0.0 }), // mixed ±0
        3 => b.iter_mut().for_each(|v| *v = s * 0.75), // constant
        4 => {
            // Q8_0 exact .5 ties: max 127·2^k gives d = 2^k.
            b.iter_mut().for_each(|v| *v = (r.int(-126, 126) as f32 + 0.5) * s);
            b[r.int(0, 32) as usize] = -127.0 * s;
        }
        5 => {
            // Q4_0 boundaries: max -8·2^k gives d = 2^k; x·id + 8.5 integral.
            b.iter_mut().for_each(|v| *v = (r.int(-8, 8) as f32 - 0.5) * s);
            b[r.int(0, 32) as usize] = -8.0 * s;
        }
        6 => {
            // Q4_1 boundaries: min 0, max 15·2^k.
            b.iter_mut().for_each(|v| *v = (r.int(0, 14) as f32 + 0.5) * s);
            b[3] = 0.0;
            b[r.int(4, 32) as usize] = 15.0 * s;
        }
        7 => {
            // Largest |x| negative, and |x| ties of both signs.
            let i = r.int(0, 32) as usize;
            let j = r.int(0, 32) as usize;
            b[i] = -2.0 * s;
            b[j] = 2.0 * s;
        }
        8 => b.iter_mut().for_each(|v| *v *= 1e-38), // subnormals (f32)
        9 => {
            // Sparse: mostly signed zeros with a few values.
            b.iter_mut().for_each(|v| {
                *v = if r.next_u64().is_multiple_of(4) {
                    *v
                } else if r.next_u64() & 1 == 0 {
                    0.0
                } else {
                    -0.0
                }
            });
        }
        12 => {
            // Q5_0 boundaries: max -16·2^k gives d = 2^k; x·id + 16.5 integral.
            b.iter_mut().for_each(|v| *v = (r.int(-16, 16) as f32 - 0.5) * s);
            b[r.int(0, 32) as usize] = -16.0 * s;
        }
        10 => b.iter_mut().for_each(|v| *v = v.signum() * f32::MAX * 0.9 * v.abs().min(1.0)), // huge (Q4_1's max - min overflows)
        _ => {
            // Min or max zero with the other side non-zero (Q4_1's signed-zero fix-up).
            b.iter_mut().for_each(|v| *v = v.abs());
            b[r.int(0, 32) as usize] = -0.0;
            b[r.int(0, 32) as usize] = 0.0;
        }
    }
    b
}

/// Encode values as raw `src` bytes (f16/bf16 round to nearest even; may overflow to inf).
fn encode(src: SrcDtype, x: &[f32]) -> Vec<u8> {
    match src {
        SrcDtype::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        SrcDtype::F16 => x.iter().flat_map(|&v| f32_to_f16(v).to_le_bytes()).collect(),
        SrcDtype::BF16 => x.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes()).collect(),
    }
}

fn decode(src: SrcDtype, b: &[u8]) -> Vec<f32> {
    match src {
        SrcDtype::F32 => b.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        SrcDtype::F16 => b.chunks(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        SrcDtype::BF16 => b.chunks(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
    }
}

/// A tensor: `rows` rows of `blocks_per_row` (odd, up to 39: kernels work in groups of 16
/// blocks, so this covers full groups and every tail) blocks of assorted kinds.
fn tensor() -> impl Strategy<Value = (Vec<f32>, usize)> {
    (0usize..20, 1usize..4, prop::collection::vec((any::<u8>(), any::<u64>(), -30i32..30), 1..=15)).prop_map(
        |(half_bpr, rows, specs)| {
            let bpr = 2 * half_bpr + 1; // odd number of blocks per row
            let mut x = Vec::new();
            for i in 0..rows * bpr {
                let (kind, seed, k) = specs[i % specs.len()];
                x.extend(make_block(kind, seed.wrapping_add(i as u64), k));
            }
            (x, bpr * QK)
        },
    )
}

fn err_key(e: &Result<(), QuantError>) -> Option<(usize, u32)> {
    match e {
        Err(QuantError::NonFinite { index, value }) => {
            Some((*index, if value.is_nan() { 0x7fc0_0000 } else { value.to_bits() }))
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(()) => None,
    }
}

fn run(level: Level, ty: GgmlType, src: SrcDtype, input: &[u8], row_len: usize) -> (Vec<u8>, Option<(usize, u32)>) {
    let n = input.len() / src.size();
    let mut out = vec![0u8; ty.row_bytes(row_len).unwrap() * (n / row_len)];
    let r = quantize_rows_at(level, ty, src, input, row_len, &mut out, None);
    (out, err_key(&r))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn simd_equals_scalar((x, row_len) in tensor()) {
        for src in SRCS {
            let input = encode(src, &x);
            for ty in TYPES {
                let (want, want_err) = run(Level::Scalar, ty, src, &input, row_len);
                for level in Level::supported() {
                    let (got, got_err) = run(level, ty, src, &input, row_len);
                    prop_assert_eq!(got_err, want_err, "{:?} {:?} {:?}", level, ty, src);
                    if want_err.is_none() {
                        prop_assert!(got == want, "{:?} {:?} {:?}: bytes differ", level, ty, src);
                    }
                }
            }
        }
    }

    #[test]
    fn stats_identical_at_every_level_and_close_to_sequential((x, row_len) in tensor()) {
        for src in SRCS {
            let input = encode(src, &x);
            for ty in TYPES {
                let mut out = vec![0u8; ty.row_bytes(row_len).unwrap() * (x.len() / row_len)];
                let mut want = ErrorStats::new();
                if quantize_rows_at(Level::Scalar, ty, src, &input, row_len, &mut out, Some(&mut want)).is_err() {
                    continue;
                }
                // Independent reference: sequential f64 sums over the public dequantizer's output.
                let mut y = vec![0f32; x.len()];
                dequantize_rows(ty, &out, row_len, &mut y).unwrap();
                let mut seq = ErrorStats::new();
                seq.add(&decode(src, &input), &y);
                prop_assert_eq!(want.count, seq.count);
                prop_assert_eq!(want.max_abs_err.to_bits(), seq.max_abs_err.to_bits());
                for (a, b) in [(want.sum_sq_ref, seq.sum_sq_ref), (want.sum_sq_err, seq.sum_sq_err), (want.dot, seq.dot)] {
                    prop_assert!((a - b).abs() <= 1e-12 * b.abs() || !b.is_finite(), "{:?} {:?}: {} vs {}", ty, src, a, b);
                }
                for level in Level::supported() {
                    let mut got = ErrorStats::new();
                    let mut o2 = vec![0u8; out.len()];
                    quantize_rows_at(level, ty, src, &input, row_len, &mut o2, Some(&mut got)).unwrap();
                    prop_assert!(o2 == out, "stats changed the bytes");
                    let bits = |s: &ErrorStats| (s.sum_sq_ref.to_bits(), s.sum_sq_err.to_bits(), s.sum_sq_deq.to_bits(),
                                                  s.dot.to_bits(), s.max_abs_err.to_bits(), s.count);
                    prop_assert_eq!(bits(&got), bits(&want), "{:?} {:?} {:?}", level, ty, src);
                }
            }
        }
    }

    #[test]
    fn plain_conversions_any_length(kinds in prop::collection::vec((any::<u8>(), any::<u64>(), -30i32..30), 1..6),
                                    len in 1usize..160, bad in any::<Option<prop::sample::Index>>()) {
        let mut x: Vec<f32> = kinds.iter().flat_map(|&(k, s, e)| make_block(k, s, e)).collect();
        x.truncate(len);
        if let Some(b) = bad {
            let i = b.index(x.len());
            x[i] = f32::NAN;
        }
        for src in SRCS {
            let input = encode(src, &x);
            for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
                let (want, want_err) = run(Level::Scalar, ty, src, &input, x.len());
                if want_err.is_none() && ty == GgmlType::F32 {
                    // Widening to f32 is exact: the output is the decoded source.
                    prop_assert_eq!(&want, &encode(SrcDtype::F32, &decode(src, &input)));
                }
                for level in Level::supported() {
                    let (got, got_err) = run(level, ty, src, &input, x.len());
                    prop_assert_eq!(got_err, want_err, "{:?} {:?} {:?}", level, ty, src);
                    if want_err.is_none() {
                        prop_assert!(got == want, "{:?} {:?} {:?}: bytes differ", level, ty, src);
                    }
                }
            }
        }
    }

    #[test]
    fn non_finite_is_rejected_identically((x, row_len) in tensor(), pos in any::<prop::sample::Index>(),
                                          which in 0usize..3, pos2 in any::<prop::sample::Index>()) {
        let mut x = x;
        let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][which];
        let i = pos.index(x.len());
        let j = pos2.index(x.len());
        x[i] = bad;
        x[j] = f32::NAN;
        let first = i.min(j);
        for src in SRCS {
            let input = encode(src, &x);
            // f16 may overflow other huge values to inf; the first non-finite element is the truth.
            let dec = decode(src, &input);
            let want_index = dec.iter().position(|v| !v.is_finite()).unwrap();
            prop_assert!(want_index <= first);
            for ty in TYPES {
                for level in Level::supported() {
                    let (_, e) = run(level, ty, src, &input, row_len);
                    let (index, bits) = e.expect("non-finite input must be rejected");
                    prop_assert_eq!(index, want_index, "{:?} {:?} {:?}", level, ty, src);
                    let v = f32::from_bits(bits);
                    prop_assert!(v.is_nan() == dec[want_index].is_nan() && (v.is_nan() || v == dec[want_index]));
                }
            }
        }
    }

    #[test]
    fn round_trip_within_half_a_step(seed in any::<u64>(), k in -12i32..12, nblocks in 1usize..40) {
        let mut r = Rng(seed);
        let x: Vec<f32> = (0..nblocks * QK).map(|_| r.unit() * 2f32.powi(k) * (1.0 + 3.0 * (r.next_u64() % 2) as f32)).collect();
        let input = encode(SrcDtype::F32, &x);
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0] {
            let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
            quantize_rows_at(Level::Avx512, ty, SrcDtype::F32, &input, x.len(), &mut q, None).unwrap();
            let mut y = vec![0f32; x.len()];
            dequantize_rows(ty, &q, x.len(), &mut y).unwrap();
            for (b, (xb, yb)) in x.chunks(QK).zip(y.chunks(QK)).enumerate() {
                let bytes = &q[b * ty.type_size()..];
                let d16 = f64::from(f16_to_f32(u16::from_le_bytes([bytes[0], bytes[1]])));
                let amax = xb.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
                let (mn, mx) = xb.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(f64::from(v)), b.max(f64::from(v))));
                for (&xv, &yv) in xb.iter().zip(yb) {
                    let (xv, yv) = (f64::from(xv), f64::from(yv));
                    let slack = 1e-6 * amax.max(1e-30);
                    let bound = match ty {
                        // Half a step of the f32 scale, plus |q| ≤ 127 times the f16 rounding of d.
                        GgmlType::Q8_0 => { let d = amax / 127.0; 0.5 * d + 127.0 * (d - d16).abs() }
                        // Levels -8..7 of d = max/-8: half a step, except values beyond +7·d (the side
                        // opposite the max) which clamp to 7·d.
                        GgmlType::Q4_0 => {
                            let max = *xb.iter().find(|v| f64::from(v.abs()) == amax).unwrap();
                            let d = f64::from(max) / -8.0;
                            let t = if d != 0.0 { xv / d } else { 0.0 };
                            let base = if t > 7.5 { (t - 7.0) * d.abs() } else { 0.5 * d.abs() };
                            base + 8.0 * (d - d16).abs()
                        }
                        // Levels -16..15 of d = max/-16, the same way.
                        GgmlType::Q5_0 => {
                            let max = *xb.iter().find(|v| f64::from(v.abs()) == amax).unwrap();
                            let d = f64::from(max) / -16.0;
                            let t = if d != 0.0 { xv / d } else { 0.0 };
                            let base = if t > 15.5 { (t - 15.0) * d.abs() } else { 0.5 * d.abs() };
                            base + 16.0 * (d - d16).abs()
                        }
                        _ => {
                            let d = (mx - mn) / 15.0;
                            let m16 = f64::from(f16_to_f32(u16::from_le_bytes([bytes[2], bytes[3]])));
                            0.5 * d + 15.0 * (d - d16).abs() + (mn - m16).abs()
                        }
                    };
                    prop_assert!((xv - yv).abs() <= bound + slack, "{:?} block {}: |{} - {}| > {}", ty, b, xv, yv, bound);
                }
            }
        }
    }
}

#[test]
fn q4_1_signed_zero_follows_first_occurrence() {
    // min is a zero: the reference's strict `<` keeps the first zero seen, here -0.0 → m = 0x8000.
    let mut x = [1.0f32; QK];
    x[4] = -0.0;
    x[9] = 0.0;
    let input = encode(SrcDtype::F32, &x);
    for level in Level::supported() {
        let (out, _) = run(level, GgmlType::Q4_1, SrcDtype::F32, &input, QK);
        assert_eq!(&out[2..4], &[0x00, 0x80], "{level:?}");
    }
    x[4] = 0.0;
    x[9] = -0.0;
    let input = encode(SrcDtype::F32, &x);
    for level in Level::supported() {
        let (out, _) = run(level, GgmlType::Q4_1, SrcDtype::F32, &input, QK);
        assert_eq!(&out[2..4], &[0x00, 0x00], "{level:?}");
    }
}

#[test]
fn q8_0_rounding_matches_f32_round_near_ties() {
    // amax = 127 → d = 1, id = 1: q = roundf(x) exactly, for values near .5 ties.
    let probes = [0.5f32, 1.5, 2.5, 0.49999997, 0.50000006, 126.5, -126.5, -0.5, -2.5000002, 3.4999998, 1e-45, 64.5];
    let mut x = [0.0f32; QK];
    x[0] = 127.0;
    x[1..=probes.len()].copy_from_slice(&probes);
    let input = encode(SrcDtype::F32, &x);
    for level in Level::supported() {
        let (out, _) = run(level, GgmlType::Q8_0, SrcDtype::F32, &input, QK);
        for (j, &p) in probes.iter().enumerate() {
            assert_eq!(out[2 + 1 + j] as i8, p.round() as i8, "{level:?} x = {p}");
        }
    }
}

#[test]
fn parallel_output_and_stats_independent_of_thread_count() {
    // 300 rows of 4096 (≈1.2 M elements: many chunks of PAR_CHUNK_ELEMS) with varied blocks.
    let row_len = 4096;
    let x: Vec<f32> =
        (0..300 * row_len / QK).flat_map(|b| make_block(b as u8, b as u64 * 7919, (b % 23) as i32 - 11)).collect();
    let x: Vec<f32> = x.into_iter().map(|v| if v.abs() > 1e30 { 1.0 } else { v }).collect();
    for src in SRCS {
        let input = encode(src, &x);
        for ty in TYPES {
            let n_out = ty.row_bytes(row_len).unwrap() * 300;
            let run_in = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut out = vec![0u8; n_out];
                let mut st = ErrorStats::new();
                let r = pool.install(|| quantize_tensor_par(ty, src, &input, row_len, &mut out, Some(&mut st)));
                (r.is_ok(), out, st)
            };
            let (ok1, o1, s1) = run_in(1);
            let (ok2, o2, s2) = run_in(2);
            assert_eq!(ok1, ok2);
            if !ok1 {
                continue;
            }
            assert!(o1 == o2, "{ty:?} {src:?}: bytes depend on the thread count");
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
            assert_eq!(bits(&s1), bits(&s2), "{ty:?} {src:?}: stats depend on the thread count");
            // And equal to the single-call quantizer.
            let mut o3 = vec![0u8; n_out];
            quantize_rows_at(Level::Scalar, ty, src, &input, row_len, &mut o3, None).unwrap();
            assert!(o1 == o3, "{ty:?} {src:?}: parallel differs from scalar");
        }
    }
}
