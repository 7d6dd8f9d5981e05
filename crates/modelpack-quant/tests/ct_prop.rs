//! Property tests for the compressed-tensors kernels: every SIMD level this CPU supports writes
//! the same bytes as the scalar reference (or fails with the same error), over random shapes and
//! hostile values; and quantize → dequantize stays within half a step (plus the reference's own
//! per-step rounding: see `ct_golden.rs` for the bound; a scale rounded to a coarser dtype than
//! the element steps shrinks the grid by up to 2^bits relative half-ulps of that dtype).

use modelpack_quant::ct::{
    dequantize_rows, quantize_rows_at, CtChunk, CtOutput, CtPacked, CtScheme, ScaleDtype, Strategy as CtStrategy,
};
use modelpack_quant::metrics::ErrorStats;
use modelpack_quant::{Level, QuantError, SrcDtype};
use proptest::prelude::*;

/// Tiny deterministic generator for filling rows from a proptest-chosen seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Round `x` to a finite value of `src` (saturating instead of overflowing to inf).
fn to_src(src: SrcDtype, x: f32) -> f32 {
    let y = match src {
        SrcDtype::F32 => x,
        SrcDtype::F16 => half::f16::from_f32(x).to_f32(),
        SrcDtype::BF16 => half::bf16::from_f32(x).to_f32(),
    };
    if y.is_finite() {
        y
    } else {
        let m = match src {
            SrcDtype::F32 => f32::MAX,
            SrcDtype::F16 => 65504.0,
            SrcDtype::BF16 => half::bf16::MAX.to_f32(),
        };
        m.copysign(x)
    }
}

fn encode(src: SrcDtype, v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * src.size());
    for &x in v {
        match src {
            SrcDtype::F32 => out.extend_from_slice(&x.to_le_bytes()),
            SrcDtype::F16 => out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
            SrcDtype::BF16 => out.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
        }
    }
    out
}

/// Fill one row of `cols` values of kind `kind` (random, zeros, constant, exact .5 ties,
/// subnormals, huge, largest value negative, signed zeros).
fn fill_row(rng: &mut Rng, src: SrcDtype, kind: u8, group: usize, row: &mut [f32]) {
    let (tiny, huge) = match src {
        SrcDtype::F32 => (f32::MIN_POSITIVE, 1e37f32),
        SrcDtype::F16 => (6.1e-5f32, 3.0e4),
        SrcDtype::BF16 => (f32::MIN_POSITIVE, 1e37),
    };
    match kind {
        0 => {
            let e = rng.below(9) as i32 - 4;
            for x in row.iter_mut() {
                *x = rng.unit() * 10f32.powi(e);
            }
        }
        1 => row.fill(0.0),
        2 => {
            let c = rng.unit() * 3.0;
            row.fill(c);
        }
        3 => {
            // Multiples of 2^e / 2 with ±7.5·2^e in every group: the scale is exactly 2^e (int4
            // symmetric) and many w/scale are exact .5 ties.
            let p = 2f32.powi(rng.below(12) as i32 - 6);
            for x in row.iter_mut() {
                *x = (rng.below(31) as f32 - 15.0) / 2.0 * p;
            }
            for g in row.chunks_mut(group) {
                let i = rng.below(g.len() as u64) as usize;
                g[i] = if rng.below(2) == 0 { 7.5 * p } else { -7.5 * p };
            }
        }
        4 => {
            for x in row.iter_mut() {
                *x = rng.unit() * tiny * 2f32.powi(-(rng.below(10) as i32));
            }
        }
        5 => {
            for x in row.iter_mut() {
                *x = rng.unit() * huge;
            }
        }
        6 => {
            for x in row.iter_mut() {
                *x = rng.unit().abs();
            }
            for g in row.chunks_mut(group) {
                let i = rng.below(g.len() as u64) as usize;
                g[i] = -3.0;
            }
        }
        _ => {
            for x in row.iter_mut() {
                *x = if rng.below(2) == 0 { 0.0 } else { -0.0 };
            }
            row[0] = rng.unit();
        }
    }
    for x in row.iter_mut() {
        *x = to_src(src, *x);
    }
}

#[derive(Debug, Clone)]
struct Case {
    scheme: CtScheme,
    src: SrcDtype,
    sd: ScaleDtype,
    rows: usize,
    cols: usize,
    input: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec![4u8, 8]),
        prop::sample::select(vec![0usize, 16, 32, 64, 128]),
        any::<bool>(),
        prop::sample::select(vec![SrcDtype::BF16, SrcDtype::F16, SrcDtype::F32]),
        0u8..3,
        1usize..14,
        prop::sample::select(vec![1usize, 3, 5]),
        prop::sample::select(vec![8usize, 24, 40, 100, 136, 256, 512, 520]),
        any::<u64>(),
        prop::collection::vec(0u8..8, 14),
        prop::option::weighted(0.15, (any::<u64>(), 0u8..3)),
    )
        .prop_map(|(bits, group, symmetric, src, sdk, rows, ngroups, chcols, seed, kinds, bad)| {
            let (strategy, cols, g) = if group == 0 {
                (CtStrategy::Channel, chcols, chcols)
            } else {
                (CtStrategy::Group(group), group * ngroups, group)
            };
            let sd = match sdk {
                0 => ScaleDtype::for_source(src),
                1 => ScaleDtype::BF16,
                _ => ScaleDtype::F32,
            };
            let mut rng = Rng(seed | 1);
            let mut v = vec![0f32; rows * cols];
            for (r, row) in v.chunks_mut(cols).enumerate() {
                fill_row(&mut rng, src, kinds[r], g, row);
            }
            if let Some((pos, what)) = bad {
                let i = (pos % (rows * cols) as u64) as usize;
                v[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][what as usize];
            }
            Case { scheme: CtScheme { bits, strategy, symmetric }, src, sd, rows, cols, input: encode(src, &v) }
        })
}

type Out = Result<(Vec<u8>, Vec<u8>, Option<Vec<u8>>), QuantError>;

fn run(level: Level, c: &Case) -> Out {
    let s = &c.scheme;
    let mut p = vec![0x5au8; c.rows * s.packed_cols(c.cols) * 4];
    let mut sc = vec![0x5au8; c.rows * s.scale_cols(c.cols).unwrap() * c.sd.size()];
    let mut z = (!s.symmetric).then(|| vec![0x5au8; s.zp_rows(c.rows) * s.scale_cols(c.cols).unwrap() * 4]);
    quantize_rows_at(
        level,
        &CtChunk { scheme: *s, src: c.src, scale_dtype: c.sd, input: &c.input, row0: 0, rows: c.rows, cols: c.cols },
        CtOutput { packed: &mut p, scale: &mut sc, zp: z.as_deref_mut() },
        None,
    )?;
    Ok((p, sc, z))
}

fn same(a: &Out, b: &Out) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(QuantError::NonFinite { index: i, value: v }), Err(QuantError::NonFinite { index: j, value: w })) => {
            i == j && v.to_bits() == w.to_bits()
        }
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(768))]

    #[test]
    fn simd_equals_scalar(c in case()) {
        let want = run(Level::Scalar, &c);
        for level in Level::supported() {
            let got = run(level, &c);
            prop_assert!(same(&got, &want), "{level:?} differs from scalar: {c:?}\n{got:?}\n{want:?}");
        }
    }

    #[test]
    fn stats_identical_at_every_level_and_close_to_sequential(c in case()) {
        let s = &c.scheme;
        let stats_at = |level: Level| {
            let mut p = vec![0u8; c.rows * s.packed_cols(c.cols) * 4];
            let mut sc = vec![0u8; c.rows * s.scale_cols(c.cols).unwrap() * c.sd.size()];
            let mut z = (!s.symmetric).then(|| vec![0u8; s.zp_rows(c.rows) * s.scale_cols(c.cols).unwrap() * 4]);
            let mut st = ErrorStats::new();
            quantize_rows_at(level, &CtChunk { scheme: *s, src: c.src, scale_dtype: c.sd, input: &c.input, row0: 0, rows: c.rows, cols: c.cols }, CtOutput { packed: &mut p, scale: &mut sc, zp: z.as_deref_mut() }, Some(&mut st))
                .map(|()| (st, p, sc, z))
        };
        let Ok((want, p, sc, z)) = stats_at(Level::Scalar) else { return Ok(()); };
        let bits = |s: &ErrorStats| (s.sum_sq_ref.to_bits(), s.sum_sq_err.to_bits(), s.sum_sq_deq.to_bits(),
                                      s.dot.to_bits(), s.max_abs_err.to_bits(), s.count);
        for level in Level::supported() {
            let (got, p2, _, _) = stats_at(level).unwrap();
            prop_assert!(p2 == p, "stats changed the bytes");
            prop_assert_eq!(bits(&got), bits(&want), "{:?}: {:?}", level, c);
        }
        // Independent reference: sequential f64 sums over the public dequantizer's output.
        let mut y = vec![0f32; c.rows * c.cols];
        dequantize_rows(s, c.sd, CtPacked { packed: &p, scale: &sc, zp: z.as_deref() }, 0, c.rows, c.cols, &mut y).unwrap();
        let x: Vec<f32> = (0..c.rows * c.cols).map(|i| modelpack_quant::convert::load(c.src, &c.input, i)).collect();
        let mut seq = ErrorStats::new();
        seq.add(&x, &y);
        prop_assert_eq!(want.count, seq.count);
        // `dequantize_rows` rounds to the scale dtype; the statistics round to the dtype the
        // source and scale promote to (they differ only when the scale dtype is not the source's).
        if c.sd != ScaleDtype::for_source(c.src) {
            return Ok(());
        }
        prop_assert_eq!(want.max_abs_err.to_bits(), seq.max_abs_err.to_bits());
        for (a, b) in [(want.sum_sq_ref, seq.sum_sq_ref), (want.sum_sq_err, seq.sum_sq_err), (want.dot, seq.dot)] {
            prop_assert!((a - b).abs() <= 1e-12 * b.abs() || !b.is_finite(), "{} vs {}", a, b);
        }
    }

    #[test]
    fn round_trip_within_half_a_step(c in case()) {
        let s = c.scheme;
        let Ok((p, sc, z)) = run(Level::Scalar, &c) else { return Ok(()); };
        let mut y = vec![0f32; c.rows * c.cols];
        dequantize_rows(&s, c.sd, CtPacked { packed: &p, scale: &sc, zp: z.as_deref() }, 0, c.rows, c.cols, &mut y).unwrap();
        let u = |d: ScaleDtype| match d {
            ScaleDtype::BF16 => 2f64.powi(-8),
            ScaleDtype::F16 => 2f64.powi(-11),
            ScaleDtype::F32 => 2f64.powi(-24),
        };
        // Smallest subnormal of the dtypes the scale is rounded through (source, then scale).
        let sub = |d: ScaleDtype| match d {
            ScaleDtype::BF16 => 2f64.powi(-133),
            ScaleDtype::F16 => 2f64.powi(-24),
            ScaleDtype::F32 => 2f64.powi(-149),
        };
        let tiny = sub(c.sd).max(sub(ScaleDtype::for_source(c.src)));
        let ue = if ScaleDtype::for_source(c.src) == c.sd { u(c.sd) } else { u(ScaleDtype::F32) };
        let ncols = s.scale_cols(c.cols).unwrap();
        let gl = c.cols / ncols;
        for (i, &yi) in y.iter().enumerate() {
            let x = modelpack_quant::convert::load(c.src, &c.input, i);
            let j = (i / c.cols) * ncols + (i % c.cols) / gl;
            let step = f64::from(match c.sd {
                ScaleDtype::BF16 => modelpack_quant::convert::bf16_to_f32(u16::from_le_bytes([sc[2 * j], sc[2 * j + 1]])),
                ScaleDtype::F16 => modelpack_quant::convert::f16_to_f32(u16::from_le_bytes([sc[2 * j], sc[2 * j + 1]])),
                ScaleDtype::F32 => f32::from_le_bytes(sc[4 * j..4 * j + 4].try_into().unwrap()),
            });
            if !step.is_finite() || !yi.is_finite() {
                continue; // the group's range overflowed the dtype: no bound to check
            }
            let bound = step * (0.5 + f64::from(1u32 << (s.bits + 1)) * ue.max(u(c.sd)).max(u(ScaleDtype::for_source(c.src))))
                + (f64::from(x.abs()) + step) * u(c.sd)
                + f64::from(1u32 << s.bits) * tiny;
            let err = (f64::from(x) - f64::from(yi)).abs();
            prop_assert!(err <= bound, "element {i}: x={x} y={yi} step={step} {c:?}");
        }
    }
}
