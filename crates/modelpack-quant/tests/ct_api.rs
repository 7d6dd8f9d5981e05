//! Contract of the compressed-tensors entry points: layout helpers, refused shapes, non-finite
//! errors naming the element, error statistics, and the parallel driver's independence from the
//! thread count.

use modelpack_quant::ct::{
    par_chunk_rows, quantize_rows, quantize_rows_at, quantize_tensor_par, CtChunk, CtOutput, CtScheme, ScaleDtype,
    Strategy,
};
use modelpack_quant::{ErrorStats, Level, QuantError, SrcDtype};

fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect()
}

fn asym4(group: usize) -> CtScheme {
    CtScheme { bits: 4, strategy: Strategy::Group(group), symmetric: false }
}

#[test]
fn layout_helpers() {
    let s = CtScheme::w4_group_sym(32);
    assert_eq!(s.packed_cols(4096), 512);
    assert_eq!(s.packed_cols(100), 13, "partial last word is padded");
    assert_eq!(s.scale_cols(4096).unwrap(), 128);
    assert!(matches!(s.scale_cols(100), Err(QuantError::Shape(_))));
    assert_eq!(s.zp_rows(19), 3);
    assert_eq!(s.rows_per_zp_word(), 8);
    let s8 = CtScheme::w8_channel_sym();
    assert_eq!(s8.packed_cols(100), 25);
    assert_eq!(s8.scale_cols(100).unwrap(), 1);
    assert_eq!(s8.zp_rows(10), 3);
    assert_eq!((s8.qmin(), s8.qmax()), (-128, 127));
    assert_eq!((s.qmin(), s.qmax()), (-8, 7));
    let bad = CtScheme { bits: 0, strategy: Strategy::Channel, symmetric: true };
    assert!(bad.validate().is_err());
    let _ = (bad.packed_cols(10), bad.zp_rows(3), bad.qmin()); // no panic
}

#[test]
fn refuses_bad_shapes_without_panicking() {
    let s = CtScheme::w4_group_sym(32);
    let input = bf16_bytes(&[0.5; 64]);
    let (mut p, mut sc) = (vec![0u8; 2 * 4 * 4], vec![0u8; 2 * 2]);
    let shape = |r: Result<(), QuantError>| assert!(matches!(r, Err(QuantError::Shape(_))), "{r:?}");
    let sd = ScaleDtype::BF16;
    let b = SrcDtype::BF16;
    assert_eq!(
        quantize_rows(
            &CtChunk { scheme: s, src: b, scale_dtype: sd, input: &input, row0: 0, rows: 2, cols: 32 },
            CtOutput { packed: &mut p, scale: &mut sc, zp: None },
            None
        ),
        Ok(())
    );
    shape(quantize_rows(
        &CtChunk { scheme: s, src: b, scale_dtype: sd, input: &input[1..], row0: 0, rows: 2, cols: 32 },
        CtOutput { packed: &mut p, scale: &mut sc, zp: None },
        None,
    ));
    shape(quantize_rows(
        &CtChunk { scheme: s, src: b, scale_dtype: sd, input: &input, row0: 0, rows: 2, cols: 32 },
        CtOutput { packed: &mut p[1..], scale: &mut sc, zp: None },
        None,
    ));
    shape(quantize_rows(
        &CtChunk { scheme: s, src: b, scale_dtype: sd, input: &input, row0: 0, rows: 2, cols: 32 },
        CtOutput { packed: &mut p, scale: &mut sc[1..], zp: None },
        None,
    ));
    shape(quantize_rows(
        &CtChunk { scheme: s, src: b, scale_dtype: sd, input: &input, row0: 0, rows: 2, cols: 32 },
        CtOutput { packed: &mut p, scale: &mut sc, zp: Some(&mut [0u8; 4]) },
        None,
    ));
    shape(quantize_rows(
        &CtChunk { scheme: s, src: b, scale_dtype: ScaleDtype::F32, input: &input, row0: 0, rows: 2, cols: 32 },
        CtOutput { packed: &mut p, scale: &mut sc, zp: None },
        None,
    ));
    // Same byte counts as 2 x 32, but a row of 16 cannot hold a group of 32.
    shape(quantize_rows(
        &CtChunk { scheme: s, src: b, scale_dtype: sd, input: &input, row0: 0, rows: 4, cols: 16 },
        CtOutput { packed: &mut p, scale: &mut sc, zp: None },
        None,
    ));
    let g48 = CtScheme::w4_group_sym(48);
    shape(quantize_rows(
        &CtChunk { scheme: g48, src: b, scale_dtype: sd, input: &input, row0: 0, rows: 2, cols: 32 },
        CtOutput { packed: &mut p, scale: &mut sc, zp: None },
        None,
    ));
    let b3 = CtScheme { bits: 3, ..CtScheme::w4_group_sym(32) };
    shape(quantize_rows(
        &CtChunk { scheme: b3, src: b, scale_dtype: sd, input: &input, row0: 0, rows: 2, cols: 32 },
        CtOutput { packed: &mut p, scale: &mut sc, zp: None },
        None,
    ));
    let a = asym4(32);
    let mut z = vec![0u8; 4];
    shape(quantize_rows(
        &CtChunk { scheme: a, src: b, scale_dtype: sd, input: &input, row0: 0, rows: 2, cols: 32 },
        CtOutput { packed: &mut p, scale: &mut sc, zp: None },
        None,
    ));
    shape(quantize_rows(
        &CtChunk { scheme: a, src: b, scale_dtype: sd, input: &input, row0: 4, rows: 2, cols: 32 },
        CtOutput { packed: &mut p, scale: &mut sc, zp: Some(&mut z) },
        None,
    ));
    assert_eq!(
        quantize_rows(
            &CtChunk { scheme: a, src: b, scale_dtype: sd, input: &input, row0: 8, rows: 2, cols: 32 },
            CtOutput { packed: &mut p, scale: &mut sc, zp: Some(&mut z) },
            None
        ),
        Ok(())
    );
    shape(quantize_rows(
        &CtChunk { scheme: a, src: b, scale_dtype: sd, input: &input, row0: 0, rows: 2, cols: 32 },
        CtOutput { packed: &mut p, scale: &mut sc, zp: Some(&mut z[1..]) },
        None,
    ));
}

#[test]
fn non_finite_names_the_first_element_at_every_level() {
    let (rows, cols) = (5, 64);
    for (src, bad) in [(SrcDtype::BF16, f32::NAN), (SrcDtype::F16, f32::INFINITY), (SrcDtype::F32, f32::NEG_INFINITY)] {
        let mut v: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        v[2 * cols + 37] = bad;
        v[3 * cols + 1] = f32::NAN;
        let input: Vec<u8> = v
            .iter()
            .flat_map(|&x| match src {
                SrcDtype::F32 => x.to_le_bytes().to_vec(),
                SrcDtype::F16 => half::f16::from_f32(x).to_le_bytes().to_vec(),
                SrcDtype::BF16 => half::bf16::from_f32(x).to_le_bytes().to_vec(),
            })
            .collect();
        for s in [CtScheme::w4_group_sym(32), asym4(64), CtScheme::w8_channel_sym()] {
            for level in Level::supported() {
                let sc_n = rows * s.scale_cols(cols).unwrap() * 4;
                let (mut p, mut sc) = (vec![0u8; rows * s.packed_cols(cols) * 4], vec![0u8; sc_n]);
                let mut z = (!s.symmetric).then(|| vec![0u8; s.zp_rows(rows) * s.scale_cols(cols).unwrap() * 4]);
                let e = quantize_rows_at(
                    level,
                    &CtChunk { scheme: s, src, scale_dtype: ScaleDtype::F32, input: &input, row0: 0, rows, cols },
                    CtOutput { packed: &mut p, scale: &mut sc, zp: z.as_deref_mut() },
                    None,
                )
                .unwrap_err();
                match e {
                    QuantError::NonFinite { index, value } => {
                        assert_eq!(index, 2 * cols + 37, "{src:?} {s:?} {level:?}");
                        assert_eq!(value.is_nan(), bad.is_nan());
                        if !bad.is_nan() {
                            assert_eq!(value, bad);
                        }
                    }
                    e => panic!("{e:?}"),
                }
            }
        }
    }
}

/// Statistics equal a computation written here from the stored bytes: unpack nibbles, subtract
/// the zero point, multiply by the bf16 scale, round to bf16, and sum in f64 in element order.
#[test]
fn stats_match_an_independent_dequantization() {
    // Group 32 dequantizes element by element, group 96 through a per-group table.
    for g in [32, 96] {
        stats_case(g);
    }
}

fn stats_case(g: usize) {
    let (rows, cols) = (16, 96);
    let v: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 1.3).collect();
    let input = bf16_bytes(&v);
    let s = asym4(g);
    let ng = cols / g;
    let mut p = vec![0u8; rows * cols / 2];
    let mut sc = vec![0u8; rows * ng * 2];
    let mut z = vec![0u8; rows / 8 * ng * 4];
    let mut st = ErrorStats::new();
    quantize_rows(
        &CtChunk { scheme: s, src: SrcDtype::BF16, scale_dtype: ScaleDtype::BF16, input: &input, row0: 0, rows, cols },
        CtOutput { packed: &mut p, scale: &mut sc, zp: Some(&mut z) },
        Some(&mut st),
    )
    .unwrap();
    let mut want = ErrorStats::new();
    for r in 0..rows {
        for c in 0..cols {
            let x = half::bf16::from_le_bytes([input[2 * (r * cols + c)], input[2 * (r * cols + c) + 1]]).to_f32();
            let byte = p[(r * cols + c) / 2];
            let q = i32::from(if c % 2 == 0 { byte & 15 } else { byte >> 4 }) - 8;
            let j = c / g;
            let zw = u32::from_le_bytes(z[4 * ((r / 8) * ng + j)..][..4].try_into().unwrap());
            let zp = ((zw >> (4 * (r % 8))) & 15) as i32 - 8;
            let scale = half::bf16::from_le_bytes([sc[2 * (r * ng + j)], sc[2 * (r * ng + j) + 1]]).to_f32();
            let y = half::bf16::from_f32((q - zp) as f32 * scale).to_f32();
            want.add(&[x], &[y]);
        }
    }
    assert_eq!(st, want);
    assert!(st.sqnr_db() > 15.0, "sqnr {}", st.sqnr_db());
}

#[test]
fn parallel_driver_is_thread_count_independent() {
    let s = asym4(128);
    let (rows, cols) = (3 * par_chunk_rows(&s, 512) + 5, 512);
    let v: Vec<f32> = (0..rows * cols).map(|i| ((i as f32) * 0.011).cos() * 0.02).collect();
    let input = bf16_bytes(&v);
    let ng = cols / 128;
    let run = |threads: usize, input: &[u8]| {
        let mut p = vec![0u8; rows * cols / 2];
        let mut sc = vec![0u8; rows * ng * 2];
        let mut z = vec![0u8; s.zp_rows(rows) * ng * 4];
        let mut st = ErrorStats::new();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let r = pool.install(|| {
            quantize_tensor_par(
                &CtChunk { scheme: s, src: SrcDtype::BF16, scale_dtype: ScaleDtype::BF16, input, row0: 0, rows, cols },
                CtOutput { packed: &mut p, scale: &mut sc, zp: Some(&mut z) },
                Some(&mut st),
            )
        });
        (r, p, sc, z, st)
    };
    let one = run(1, &input);
    let two = run(2, &input);
    assert_eq!(one.0, Ok(()));
    assert!(one.1 == two.1 && one.2 == two.2 && one.3 == two.3);
    assert_eq!(one.4, two.4);
    // One call over all rows gives the same bytes.
    let mut p = vec![0u8; rows * cols / 2];
    let mut sc = vec![0u8; rows * ng * 2];
    let mut z = vec![0u8; s.zp_rows(rows) * ng * 4];
    quantize_rows(
        &CtChunk { scheme: s, src: SrcDtype::BF16, scale_dtype: ScaleDtype::BF16, input: &input, row0: 0, rows, cols },
        CtOutput { packed: &mut p, scale: &mut sc, zp: Some(&mut z) },
        None,
    )
    .unwrap();
    assert!(p == one.1 && sc == one.2 && z == one.3);
    // A NaN in a late chunk is reported with its tensor-wide index.
    let mut bad = input.clone();
    let at = (rows - 2) * cols + 3;
    bad[2 * at..2 * at + 2].copy_from_slice(&half::bf16::NAN.to_le_bytes());
    match run(2, &bad).0 {
        Err(QuantError::NonFinite { index, .. }) => assert_eq!(index, at),
        r => panic!("{r:?}"),
    }
}
