//! Scalar reference kernels: the compressed-tensors math written out literally, one element at
//! a time. The SIMD paths must reproduce these bytes exactly.

use super::{elem_dtype, CtChunk, CtOutput, CtPacked, CtScheme, Geom, ScaleDtype};
use crate::convert::{bf16_to_f32, f16_to_f32};
use crate::convert::{f32_to_bf16, f32_to_f16, load_slice};
use crate::metrics::Lanes;
use crate::{QuantError, SrcDtype};

/// Scale and zero point of one group, as compressed-tensors' `calculate_qparams` computes them.
///
/// `mn`/`mx` are the group's minimum and maximum (exact source values). Returns
/// `(scale, zp)` with the zero scale already replaced by the dtype's eps; `zp` is 0 when
/// symmetric.
#[inline]
pub(crate) fn qparams(s: &CtScheme, src: SrcDtype, sd: ScaleDtype, mn: f32, mx: f32) -> (f32, i32) {
    let rs = ScaleDtype::for_source(src);
    let ed = elem_dtype(src, sd);
    let mn = mn.min(0.0);
    let mx = mx.max(0.0);
    let range = (s.qmax() - s.qmin()) as f32; // 15 or 255
    let (scale, zp) = if s.symmetric {
        let scale = sd.round(rs.round(mn.abs().max(mx.abs()) / (range / 2.0)));
        (scale, 0)
    } else {
        let scale = sd.round(rs.round(rs.round(mx - mn) / range));
        let div = if scale == 0.0 { 1.0 } else { scale };
        let z = ed.round(s.qmin() as f32 - ed.round(mn / div));
        let z = z.clamp(s.qmin() as f32, s.qmax() as f32).round_ties_even();
        (scale, z as i32)
    };
    let scale = if scale == 0.0 { sd.eps() } else { scale };
    (scale, zp)
}

/// Quantize one element: `clamp(round_half_even(r(r(w/scale) + zp)), qmin, qmax)`.
#[inline]
pub(crate) fn quant_one(s: &CtScheme, ed: ScaleDtype, w: f32, scale: f32, zp: i32) -> i32 {
    let mut x = ed.round(w / scale);
    if !s.symmetric {
        x = ed.round(x + zp as f32);
    }
    x.round_ties_even().clamp(s.qmin() as f32, s.qmax() as f32) as i32
}

/// Store one scale at index `i` of `out` in dtype `sd` (little-endian).
#[inline]
pub(crate) fn store_scale(sd: ScaleDtype, out: &mut [u8], i: usize, v: f32) {
    match sd {
        ScaleDtype::BF16 => out[2 * i..2 * i + 2].copy_from_slice(&f32_to_bf16(v).to_le_bytes()),
        ScaleDtype::F16 => out[2 * i..2 * i + 2].copy_from_slice(&f32_to_f16(v).to_le_bytes()),
        ScaleDtype::F32 => out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes()),
    }
}

/// Load scale `i` of `bytes` stored in dtype `sd`.
#[inline]
pub(crate) fn load_scale(sd: ScaleDtype, bytes: &[u8], i: usize) -> f32 {
    match sd {
        ScaleDtype::BF16 => bf16_to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])),
        ScaleDtype::F16 => f16_to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])),
        ScaleDtype::F32 => f32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]),
    }
}

/// Read i32 word `i` (little-endian) of `bytes`.
#[inline]
pub(crate) fn word(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
}

/// OR `v` into i32 word `i` of `bytes`.
#[inline]
pub(crate) fn or_word(bytes: &mut [u8], i: usize, v: u32) {
    let w = word(bytes, i) | v;
    bytes[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
}

/// Pack one row of quantized values into `out` (that row's `packed_cols` words):
/// `u = q + 2^(bits-1)`, element k of each word at bits `[bits*k, bits*k+bits)`, zero padding.
#[inline]
pub(crate) fn pack_row(s: &CtScheme, q: &[i8], out: &mut [u8]) {
    let per = s.per_word();
    let bits = u32::from(s.bits);
    let off = 1i32 << (bits - 1);
    for (w, chunk) in q.chunks(per).enumerate() {
        let mut v = 0u32;
        for (k, &x) in chunk.iter().enumerate() {
            v |= ((i32::from(x) + off) as u32) << (bits * k as u32);
        }
        out[4 * w..4 * w + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// OR zero point `zp` of chunk row `r`, group `j` into the dim-0-packed zero-point words
/// (which the caller zeroed).
#[inline]
pub(crate) fn put_zp(s: &CtScheme, zpb: &mut [u8], scale_cols: usize, r: usize, j: usize, zp: i32) {
    let per = s.per_word();
    let bits = u32::from(s.bits);
    let u = (zp + (1 << (bits - 1))) as u32;
    or_word(zpb, (r / per) * scale_cols + j, u << (bits * (r % per) as u32));
}

/// Read back zero point of chunk row `r`, group `j`.
#[inline]
pub(crate) fn get_zp(s: &CtScheme, zpb: &[u8], scale_cols: usize, r: usize, j: usize) -> i32 {
    let per = s.per_word();
    let bits = u32::from(s.bits);
    let w = word(zpb, (r / per) * scale_cols + j);
    ((w >> (bits * (r % per) as u32)) & ((1 << bits) - 1)) as i32 - (1 << (bits - 1))
}

/// Quantize rows `r0..r1` of the chunk (scalar). Used for whole chunks at the scalar level and
/// by the SIMD paths for rows they hand back (non-finite input, odd shapes).
pub(crate) fn quantize_range(c: &CtChunk, g: &Geom, r0: usize, r1: usize, out: CtOutput) -> Result<(), QuantError> {
    let CtChunk { scheme: ref s, src, scale_dtype: sd, input, .. } = *c;
    let CtOutput { packed, scale, mut zp } = out;
    let ed = elem_dtype(src, sd);
    let es = src.size();
    let mut buf = vec![0f32; g.cols];
    let mut q = vec![0i8; g.cols];
    for r in r0..r1 {
        load_slice(src, &input[r * g.cols * es..(r + 1) * g.cols * es], &mut buf);
        if let Some(i) = buf.iter().position(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite { index: r * g.cols + i, value: buf[i] });
        }
        for (j, (grp, qg)) in buf.chunks(g.group).zip(q.chunks_mut(g.group)).enumerate() {
            let mut mn = grp[0];
            let mut mx = grp[0];
            for &v in grp {
                mn = mn.min(v);
                mx = mx.max(v);
            }
            let (sc, z) = qparams(s, src, sd, mn, mx);
            store_scale(sd, scale, r * g.scale_cols + j, sc);
            if let Some(zpb) = zp.as_deref_mut() {
                put_zp(s, zpb, g.scale_cols, r, j, z);
            }
            for (o, &w) in qg.iter_mut().zip(grp) {
                *o = quant_one(s, ed, w, sc, z) as i8;
            }
        }
        let pw = g.packed_cols * 4;
        pack_row(s, &q, &mut packed[r * pw..(r + 1) * pw]);
    }
    Ok(())
}

/// Quantize a whole validated chunk (scalar reference).
pub(crate) fn quantize(c: &CtChunk, g: &Geom, out: CtOutput) -> Result<(), QuantError> {
    quantize_range(c, g, 0, g.rows, out)
}

/// Dequantize a validated chunk, calling `put(element_index, value)` in row-major order;
/// `(q - zp) * scale` rounded to `ed`.
pub(crate) fn dequantize(
    s: &CtScheme,
    sd: ScaleDtype,
    ed: ScaleDtype,
    q: CtPacked,
    g: &Geom,
    mut put: impl FnMut(usize, f32),
) {
    let CtPacked { packed, scale, zp } = q;
    let per = s.per_word();
    let bits = u32::from(s.bits);
    let mask = (1u32 << bits) - 1;
    let off = 1i32 << (bits - 1);
    for r in 0..g.rows {
        for c in 0..g.cols {
            let j = c / g.group;
            let w = word(packed, r * g.packed_cols + c / per);
            let q = ((w >> (bits * (c % per) as u32)) & mask) as i32 - off;
            let z = zp.map_or(0, |zpb| get_zp(s, zpb, g.scale_cols, r, j));
            let sc = load_scale(sd, scale, r * g.scale_cols + j);
            put(r * g.cols + c, ed.round((q - z) as f32 * sc));
        }
    }
}

/// Add the chunk's error statistics (source vs. dequantized) to `lanes`, in the lane order of
/// [`Lanes`] (what the SIMD twin in `x86.rs` reproduces), one row at a time so no chunk-sized
/// f32 buffer exists. Dequantized values are `(q - zp) * scale` rounded to the element dtype,
/// i.e. what the consumer's computation in the model dtype yields.
pub(crate) fn accumulate_stats(c: &CtChunk, g: &Geom, q: CtPacked, lanes: &mut Lanes) {
    let CtChunk { scheme: ref s, src, scale_dtype: sd, input, .. } = *c;
    let CtPacked { packed, scale, zp } = q;
    let es = src.size();
    let ed = elem_dtype(src, sd);
    let bits = u32::from(s.bits);
    let mask = (1u32 << bits) - 1;
    let off = 1i32 << (bits - 1);
    let mut x = vec![0f32; g.cols];
    let mut y = vec![0f32; g.cols];
    for r in 0..g.rows {
        load_slice(src, &input[r * g.cols * es..(r + 1) * g.cols * es], &mut x);
        let prow = &packed[r * g.packed_cols * 4..(r + 1) * g.packed_cols * 4];
        for (j, yg) in y.chunks_mut(g.group).enumerate() {
            let sc = load_scale(sd, scale, r * g.scale_cols + j);
            let z = zp.map_or(0, |zpb| get_zp(s, zpb, g.scale_cols, r, j));
            let c0 = j * g.group;
            // Every code u of the group dequantizes to one value: tabulate them when the group
            // is long enough to pay for the table.
            let codes = 1usize << bits;
            let deq = |u: u32| ed.round((u as i32 - off - z) as f32 * sc);
            let mut lut = [0f32; 256];
            let use_lut = g.group >= 4 * codes;
            if use_lut {
                for (u, v) in lut.iter_mut().take(codes).enumerate() {
                    *v = deq(u as u32);
                }
            }
            for (k, o) in yg.iter_mut().enumerate() {
                let c = c0 + k;
                // Element c sits at bits [c*bits, c*bits+bits) of the LE row: byte c*bits/8.
                let b = prow[c * bits as usize / 8];
                let u = (u32::from(b) >> ((c * bits as usize) % 8)) & mask;
                *o = if use_lut { lut[u as usize] } else { deq(u) };
            }
        }
        lanes.add(&x, &y);
    }
}
