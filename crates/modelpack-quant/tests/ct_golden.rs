//! Golden vectors from `xtask/py/golden_ct.py` (an independent numpy implementation of the
//! compressed-tensors 0.20 math, cross-checked against the library's own fixtures): asymmetric
//! int4, groups 32/64, per-channel int4, int8 asymmetric / grouped, f16 and f32 sources. Every
//! SIMD level and a chunked run must reproduce packed words, scales and zero points exactly.

use modelpack_quant::ct::{
    dequantize_rows, quantize_rows_at, CtChunk, CtOutput, CtPacked, CtScheme, ScaleDtype, Strategy,
};
use modelpack_quant::{Level, SrcDtype};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden/ct")
}

/// One case of index.json (a flat object of strings, numbers, booleans and null).
struct Case {
    fields: Vec<(String, String)>,
}

impl Case {
    fn get(&self, k: &str) -> &str {
        &self.fields.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("missing {k}")).1
    }
    fn num(&self, k: &str) -> usize {
        self.get(k).parse().unwrap()
    }
    fn file(&self, k: &str) -> Option<Vec<u8>> {
        self.fields.iter().find(|(n, _)| n == k).map(|(_, f)| std::fs::read(dir().join(f)).unwrap())
    }
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("index.json")).unwrap();
    let mut out = Vec::new();
    for obj in text.split('{').skip(1) {
        let body = &obj[..obj.find('}').unwrap()];
        let fields = body
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once(':').unwrap();
                let t = |s: &str| s.trim().trim_matches('"').to_string();
                (t(k), t(v))
            })
            .collect();
        out.push(Case { fields });
    }
    out
}

/// Smallest positive subnormal of a scale dtype.
fn tiny(d: &str) -> f64 {
    match d {
        "bf16" => 2f64.powi(-133),
        "f16" => 2f64.powi(-24),
        _ => 2f64.powi(-149),
    }
}

fn dtype(s: &str) -> (SrcDtype, ScaleDtype) {
    match s {
        "bf16" => (SrcDtype::BF16, ScaleDtype::BF16),
        "f16" => (SrcDtype::F16, ScaleDtype::F16),
        "f32" => (SrcDtype::F32, ScaleDtype::F32),
        _ => panic!("dtype {s}"),
    }
}

#[test]
fn golden_cases_match_at_every_level() {
    let cases = cases();
    assert_eq!(cases.len(), 17, "index.json case count");
    for c in &cases {
        let name = c.get("name");
        let (src, _) = dtype(c.get("src"));
        let (_, sd) = dtype(c.get("scale_dtype"));
        let s = CtScheme {
            bits: c.num("bits") as u8,
            strategy: match c.get("group") {
                "null" => Strategy::Channel,
                g => Strategy::Group(g.parse().unwrap()),
            },
            symmetric: c.get("symmetric") == "true",
        };
        let (rows, cols) = (c.num("rows"), c.num("cols"));
        let input = c.file("input").unwrap();
        let want_p = c.file("packed").unwrap();
        let want_s = c.file("scale").unwrap();
        let want_z = c.file("zp");
        assert_eq!(want_z.is_some(), !s.symmetric, "{name}");
        for level in Level::supported() {
            let mut p = vec![0xAAu8; want_p.len()];
            let mut sc = vec![0xAAu8; want_s.len()];
            let mut z = want_z.as_ref().map(|w| vec![0xAAu8; w.len()]);
            quantize_rows_at(
                level,
                &CtChunk { scheme: s, src, scale_dtype: sd, input: &input, row0: 0, rows, cols },
                CtOutput { packed: &mut p, scale: &mut sc, zp: z.as_deref_mut() },
                None,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(sc == want_s, "{name} scales at {level:?}");
            assert!(p == want_p, "{name} packed at {level:?}");
            assert!(z == want_z, "{name} zero points at {level:?}");

            // Chunks starting at multiples of rows_per_zp_word: same bytes.
            let step = s.rows_per_zp_word();
            let (pr, sr, es) = (want_p.len() / rows, want_s.len() / rows, src.size());
            let mut p2 = vec![0u8; p.len()];
            let mut s2 = vec![0u8; sc.len()];
            let mut z2 = want_z.as_ref().map(|w| vec![0u8; w.len()]);
            let zr = s.scale_cols(cols).unwrap() * 4;
            let mut a = 0;
            while a < rows {
                let b = (a + step).min(rows);
                let zw = s.zp_rows(a)..s.zp_rows(b);
                quantize_rows_at(
                    level,
                    &CtChunk {
                        scheme: s,
                        src,
                        scale_dtype: sd,
                        input: &input[a * cols * es..b * cols * es],
                        row0: a,
                        rows: b - a,
                        cols,
                    },
                    CtOutput {
                        packed: &mut p2[a * pr..b * pr],
                        scale: &mut s2[a * sr..b * sr],
                        zp: z2.as_mut().map(|z| &mut z[zw.start * zr..zw.end * zr]),
                    },
                    None,
                )
                .unwrap();
                a = b;
            }
            assert!(p2 == p && s2 == sc && z2 == z, "{name}: chunking changed bytes");
        }
    }
}

/// Round trip: every dequantized value is within half a step (scale) of its source, plus what
/// compressed-tensors' own per-step rounding adds. With f32 steps that extra is negligible (a strict
/// half step). With bf16/f16 steps, `r(w/s)`, `r(.. + zp)` and a scale rounded down each move the
/// pre-rounding value by up to a relative half-ulp of values up to 2^bits (e.g. 0.25 step for int8
/// values near 127 in bf16, whose ulp there is 0.5), and the dequantized product is rounded once
/// more: bound = step·(1/2 + 2^(bits+1)·u) + (|x| + step)·u_s, with u = 2^-8 (bf16), 2^-11 (f16),
/// 2^-24 (f32) of the element dtype and u_s that of the scale dtype. Subnormal scales round with
/// an absolute error (half the smallest subnormal), which can leave the group's largest value up
/// to 2^(bits-1) such half-units outside the grid: the bound adds 2^bits · smallest subnormal.
#[test]
fn golden_inputs_round_trip_within_half_a_step() {
    for c in &cases() {
        let name = c.get("name");
        let (src, _) = dtype(c.get("src"));
        let (_, sd) = dtype(c.get("scale_dtype"));
        let s = CtScheme {
            bits: c.num("bits") as u8,
            strategy: match c.get("group") {
                "null" => Strategy::Channel,
                g => Strategy::Group(g.parse().unwrap()),
            },
            symmetric: c.get("symmetric") == "true",
        };
        let (rows, cols) = (c.num("rows"), c.num("cols"));
        let input = c.file("input").unwrap();
        let (p, sc, z) = (c.file("packed").unwrap(), c.file("scale").unwrap(), c.file("zp"));
        let mut y = vec![0f32; rows * cols];
        dequantize_rows(&s, sd, CtPacked { packed: &p, scale: &sc, zp: z.as_deref() }, 0, rows, cols, &mut y).unwrap();
        let gl = cols / s.scale_cols(cols).unwrap();
        for r in 0..rows {
            for col in 0..cols {
                let i = r * cols + col;
                let x = modelpack_quant::convert::load(src, &input, i);
                let j = r * s.scale_cols(cols).unwrap() + col / gl;
                let step = match sd {
                    ScaleDtype::BF16 => f32::from_bits(u32::from(u16::from_le_bytes([sc[2 * j], sc[2 * j + 1]])) << 16),
                    ScaleDtype::F16 => half::f16::from_le_bytes([sc[2 * j], sc[2 * j + 1]]).to_f32(),
                    ScaleDtype::F32 => f32::from_le_bytes(sc[4 * j..4 * j + 4].try_into().unwrap()),
                };
                if !step.is_finite() {
                    continue; // overflowed range (huge f16 row): nothing to bound
                }
                let u = |d: &str| match d {
                    "bf16" => 2f64.powi(-8),
                    "f16" => 2f64.powi(-11),
                    _ => 2f64.powi(-24),
                };
                let ue = if c.get("src") == c.get("scale_dtype") { u(c.get("src")) } else { u("f32") };
                let us = u(c.get("scale_dtype"));
                let st = f64::from(step);
                let bound = st * (0.5 + f64::from(1u32 << (s.bits + 1)) * ue)
                    + (f64::from(x.abs()) + st) * us
                    + f64::from(1u32 << s.bits) * tiny(c.get("scale_dtype"));
                let err = (f64::from(x) - f64::from(y[i])).abs();
                assert!(err <= bound, "{name} [{r},{col}]: x={x} y={} step={step}", y[i]);
            }
        }
    }
}
