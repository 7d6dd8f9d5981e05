//! Property tests of `--method mse` and `mse-fast` (`modelpack_quant::mse`): every SIMD level writes the same
//! bytes and statistics as the scalar path; on every block / group the error is never larger
//! than round-to-nearest's (errors recomputed here in f64 from the bytes, with the runtime's
//! dequantization formula); chunking does not change the bytes; NaN/±inf is refused exactly like
//! RTN. Blocks include random data, all zeros, all equal, one outlier, tiny ranges, subnormals,
//! huge values and exact ties.

use modelpack_quant::convert::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use modelpack_quant::ct::{self, CtChunk, CtOutput, CtScheme, ScaleDtype, Strategy as CtStrategy};
use modelpack_quant::gguf::{self, GgmlType};
use modelpack_quant::{mse, ErrorStats, Level, QuantError, SrcDtype};
use proptest::prelude::*;

// The workspace's one test generator (`modelpack-testkit`): the same stream as the copy it replaced.
use modelpack_testkit::SplitMix64 as Rng;

/// `n` values of a given kind.
fn make(kind: u8, seed: u64, k: i32, n: usize) -> Vec<f32> {
    let mut r = Rng(seed);
    let s = 2f32.powi(k);
    let mut b: Vec<f32> = (0..n).map(|_| r.gauss3() * s).collect();
    match kind % 10 {
        0 | 1 => {}
        2 => b.iter_mut().for_each(|v| *v = 0.0),
        3 => b.iter_mut().for_each(|v| *v = s * 0.3), // all equal
        4 => {
            let i = (r.next_u64() % n as u64) as usize; // one outlier
            b[i] = s * 40.0 * if r.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        }
        5 => b.iter_mut().for_each(|v| *v = s + *v * 1e-5 * s), // tiny range far from 0
        6 => b.iter_mut().for_each(|v| *v *= 1e-39),            // subnormals
        7 => b.iter_mut().for_each(|v| *v = (*v * 8.0).round() * 0.5 * s), // exact ties
        8 => b.iter_mut().for_each(|v| *v *= 1e30),             // huge
        _ => b.iter_mut().for_each(|v| *v = v.abs()),           // one-sided
    }
    b
}

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

/// Rows of blocks of assorted kinds: `(values, row_len)`; `unit` elements per block.
fn data(unit: usize, max_units: usize) -> impl Strategy<Value = (Vec<f32>, usize, usize)> {
    (1usize..=max_units, 1usize..12, prop::collection::vec((any::<u8>(), any::<u64>(), -20i32..20), 1..=8)).prop_map(
        move |(units, rows, specs)| {
            let mut x = Vec::new();
            for i in 0..rows * units {
                let (kind, seed, k) = specs[i % specs.len()];
                x.extend(make(kind, seed.wrapping_add(i as u64), k, unit));
            }
            (x, units * unit, rows)
        },
    )
}

/// Σ (x − y)² in f64.
fn err64(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum()
}

/// `a` is not worse than `b` (slack for the f32 sums the search compares).
/// A block RTN cannot represent (its f16 scale overflows: error NaN/inf) has no bound to keep.
fn not_worse(a: f64, b: f64) -> bool {
    !b.is_finite() || a <= b * (1.0 + 1e-5) + 1e-40
}

/// The `mse` GGUF quantizer, full search or `mse-fast` (`fast`), at `level`.
#[allow(clippy::too_many_arguments)]
fn gguf_mse(
    fast: bool,
    level: Level,
    ty: GgmlType,
    src: SrcDtype,
    inp: &[u8],
    row_len: usize,
    out: &mut [u8],
    st: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    if fast {
        mse::quantize_gguf_rows_fast_at(level, ty, src, inp, row_len, out, st)
    } else {
        mse::quantize_gguf_rows_at(level, ty, src, inp, row_len, out, st)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn gguf_mse_same_bytes_at_every_level_and_never_worse_than_rtn((x, row_len, _rows) in data(32, 9)) {
        // Both searches: `mse` and `mse-fast`.
        for fast in [false, true] {
            for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0] {
                for src in [SrcDtype::F32, SrcDtype::F16, SrcDtype::BF16] {
                    let inp = encode(src, &x);
                    let xs = decode(src, &inp);
                    if xs.iter().any(|v| !v.is_finite()) {
                        continue; // f16 overflow: covered by the non-finite test
                    }
                    let nb = ty.row_bytes(row_len).unwrap() * (x.len() / row_len);
                    let mut want = vec![0u8; nb];
                    let mut want_st = ErrorStats::new();
                    gguf_mse(fast, Level::Scalar, ty, src, &inp, row_len, &mut want, Some(&mut want_st)).unwrap();
                    for level in Level::supported() {
                        let mut got = vec![0u8; nb];
                        let mut st = ErrorStats::new();
                        gguf_mse(fast, level, ty, src, &inp, row_len, &mut got, Some(&mut st)).unwrap();
                        prop_assert!(got == want, "{ty} {src:?} {level:?} fast {fast}: bytes differ from scalar");
                        prop_assert_eq!(format!("{st:?}"), format!("{want_st:?}")); // NaN-safe
                    }
                    // Chunking: one row at a time gives the same bytes.
                    let rb = ty.row_bytes(row_len).unwrap();
                    for (r, ob) in want.chunks(rb).enumerate() {
                        let mut one = vec![0u8; rb];
                        let ib = &inp[r * row_len * src.size()..(r + 1) * row_len * src.size()];
                        gguf_mse(fast, Level::Scalar, ty, src, ib, row_len, &mut one, None).unwrap();
                        prop_assert!(one == ob);
                    }
                    let mut rtn = vec![0u8; nb];
                    gguf::quantize_rows_at(Level::Scalar, ty, src, &inp, row_len, &mut rtn, None).unwrap();
                    let (mut ym, mut yr) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
                    gguf::dequantize_rows(ty, &want, row_len, &mut ym).unwrap();
                    gguf::dequantize_rows(ty, &rtn, row_len, &mut yr).unwrap();
                    for b in 0..xs.len() / 32 {
                        let r = b * 32..(b + 1) * 32;
                        let (em, er) = (err64(&xs[r.clone()], &ym[r.clone()]), err64(&xs[r.clone()], &yr[r]));
                        prop_assert!(not_worse(em, er), "{ty} {src:?} fast {fast} block {b}: mse {em} > rtn {er}");
                    }
                }
            }
        }
    }

    #[test]
    fn ct_mse_same_bytes_at_every_level_and_never_worse_than_rtn((x, cols, rows) in data(16, 6)) {
        let schemes = [
            CtScheme::w4_group_sym(16),
            CtScheme { bits: 4, strategy: CtStrategy::Group(16), symmetric: false },
            CtScheme { bits: 4, strategy: CtStrategy::Channel, symmetric: true },
            CtScheme { bits: 4, strategy: CtStrategy::Channel, symmetric: false },
            CtScheme::w8_channel_sym(),
        ];
        // An odd row length too (per-channel only): drop the last column.
        let odd: Vec<f32> = x.chunks(cols).flat_map(|r| r[..cols - 1].to_vec()).collect();
        for (x, cols) in [(&x, cols), (&odd, cols - 1)] {
            if cols == 0 {
                continue;
            }
            for s in schemes {
                if cols % 16 != 0 && s.strategy != CtStrategy::Channel {
                    continue;
                }
                for src in [SrcDtype::F32, SrcDtype::F16, SrcDtype::BF16] {
                    for sd in [ScaleDtype::F32, ScaleDtype::F16, ScaleDtype::BF16] {
                        let inp = encode(src, x);
                        let xs = decode(src, &inp);
                        if xs.iter().any(|v| !v.is_finite()) {
                            continue;
                        }
                        let run = |level: Level, rtn: bool| {
                            let sc = s.scale_cols(cols).unwrap();
                            let mut p = vec![0u8; rows * s.packed_cols(cols) * 4];
                            let mut scale = vec![0u8; rows * sc * sd.size()];
                            let mut zp = (!s.symmetric).then(|| vec![0u8; s.zp_rows(rows) * sc * 4]);
                            let mut st = ErrorStats::new();
                            let f = if rtn { ct::quantize_rows_at } else { mse::quantize_ct_rows_at };
                            let c = CtChunk { scheme: s, src, scale_dtype: sd, input: &inp, row0: 0, rows, cols };
                            let out = CtOutput { packed: &mut p, scale: &mut scale, zp: zp.as_deref_mut() };
                            f(level, &c, out, Some(&mut st)).unwrap();
                            (p, scale, zp, st)
                        };
                        let want = run(Level::Scalar, false);
                        for level in Level::supported() {
                            let got = run(level, false);
                            prop_assert!(got.0 == want.0 && got.1 == want.1 && got.2 == want.2, "{s:?} {src:?} {sd:?} {level:?}");
                            prop_assert_eq!(format!("{:?}", got.3), format!("{:?}", want.3)); // NaN-safe
                        }
                        let rtn = run(Level::Scalar, true);
                        let ym = ct_deq(&s, src, sd, &want.0, &want.1, want.2.as_deref(), rows, cols);
                        let yr = ct_deq(&s, src, sd, &rtn.0, &rtn.1, rtn.2.as_deref(), rows, cols);
                        let g = match s.strategy { CtStrategy::Group(g) => g, CtStrategy::Channel => cols };
                        for i in 0..xs.len() / g {
                            let r = i * g..(i + 1) * g;
                            let (em, er) = (err64(&xs[r.clone()], &ym[r.clone()]), err64(&xs[r.clone()], &yr[r]));
                            prop_assert!(not_worse(em, er), "{s:?} {src:?} {sd:?} group {i}: mse {em} > rtn {er}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn non_finite_is_refused_like_rtn(pos in 0usize..96, which in 0u8..3) {
        let mut x = make(0, 7, 0, 96);
        x[pos] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][which as usize];
        let inp = encode(SrcDtype::F32, &x);
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0] {
            let mut a = vec![0u8; ty.row_bytes(96).unwrap()];
            let mut b = a.clone();
            let e1 = gguf::quantize_rows_at(Level::Scalar, ty, SrcDtype::F32, &inp, 96, &mut a, None);
            for level in Level::supported() {
                for fast in [false, true] {
                    let e2 = gguf_mse(fast, level, ty, SrcDtype::F32, &inp, 96, &mut b, None);
                    prop_assert_eq!(format!("{e1:?}"), format!("{e2:?}"));
                    let ok = matches!(e2, Err(QuantError::NonFinite { index, .. }) if index == pos);
                    prop_assert!(ok, "{:?}", e2);
                }
            }
        }
        let s = CtScheme::w4_group_sym(32);
        let (mut p, mut sc) = (vec![0u8; 3 * 4 * 4], vec![0u8; 3 * 3 * 2]);
        let e = mse::quantize_ct_rows(&CtChunk { scheme: s, src: SrcDtype::F32, scale_dtype: ScaleDtype::BF16, input: &inp, row0: 0, rows: 1, cols: 96 }, CtOutput { packed: &mut p[..48], scale: &mut sc[..6], zp: None }, None);
        let ok = matches!(e, Err(QuantError::NonFinite { index, .. }) if index == pos);
        prop_assert!(ok, "{:?}", e);
    }
}

/// Independent compressed-tensors dequantization: unpack the words, `(q − zp) · scale` in f32,
/// rounded to the model dtype when the scale has that dtype (torch's promotion), else kept f32.
#[allow(clippy::too_many_arguments)]
fn ct_deq(
    s: &CtScheme,
    src: SrcDtype,
    sd: ScaleDtype,
    p: &[u8],
    sc: &[u8],
    zp: Option<&[u8]>,
    rows: usize,
    cols: usize,
) -> Vec<f32> {
    let bits = s.bits as usize;
    let per = 32 / bits;
    let pc = cols.div_ceil(per);
    let scols = s.scale_cols(cols).unwrap();
    let g = cols / scols;
    let word = |b: &[u8], i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let scale_at = |i: usize| match sd {
        ScaleDtype::F32 => f32::from_le_bytes([sc[4 * i], sc[4 * i + 1], sc[4 * i + 2], sc[4 * i + 3]]),
        ScaleDtype::F16 => f16_to_f32(u16::from_le_bytes([sc[2 * i], sc[2 * i + 1]])),
        ScaleDtype::BF16 => bf16_to_f32(u16::from_le_bytes([sc[2 * i], sc[2 * i + 1]])),
    };
    let same = matches!(
        (src, sd),
        (SrcDtype::F32, ScaleDtype::F32) | (SrcDtype::F16, ScaleDtype::F16) | (SrcDtype::BF16, ScaleDtype::BF16)
    );
    let round = |v: f32| match (same, sd) {
        (true, ScaleDtype::F16) => f16_to_f32(f32_to_f16(v)),
        (true, ScaleDtype::BF16) => bf16_to_f32(f32_to_bf16(v)),
        _ => v,
    };
    let off = 1i32 << (bits - 1);
    let mask = (1u32 << bits) - 1;
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let w = word(p, r * pc + c / per);
            let q = ((w >> (bits * (c % per))) & mask) as i32 - off;
            let j = c / g;
            let z = zp.map_or(0, |zb| {
                let w = word(zb, (r / per) * scols + j);
                ((w >> (bits * (r % per))) & mask) as i32 - off
            });
            out.push(round((q - z) as f32 * scale_at(r * scols + j)));
        }
    }
    out
}
