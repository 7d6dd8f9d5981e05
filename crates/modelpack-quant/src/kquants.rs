//! K-quants: Q4_K and Q6_K super-blocks of 256 values, the formats of llama.cpp's Q4_K_M mix.
//!
//! The scalar quantizers here follow llama.cpp's reference quantizers (`quantize_row_q4_K_ref` with
//! `make_qkx2_quants`, `quantize_row_q6_K_ref` with `make_qx_quants`, no importance matrix) step
//! for step, because `--method rtn` promises bytes identical to `llama-quantize`. Float details
//! that matter for byte equality (all checked against llama.cpp's own code by the
//! `kquant_llama` test):
//! - every sum runs left to right in f32, no fused multiply-add (ggml's reference is compiled
//!   without FMA, so the C compiler cannot contract);
//! - `nearest_int` is the `x + 1.5·2^23` bit trick ([`nearest_int`]), not `roundf`;
//! - scales are rounded to f16 (round to nearest even) and read back before the codes are chosen;
//! - a sub-block whose final scale is zero keeps the codes of its search, as the C `continue` does.
//!
//! The AVX2 and AVX-512 kernels ([`avx2`], [`avx512`]: 8 and 16 lanes) run the same search
//! with one sub-block per SIMD lane, so every lane performs exactly this scalar sequence of IEEE
//! operations; they are bit-identical to these functions (property tests in
//! `tests/kquant_props.rs`).

use crate::blocks::{BlockFormat, GgmlType};
pub use crate::blocks::{BlockQ4K, BlockQ6K, QK_K};
use crate::convert::{f16_to_f32, f32_to_f16};

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

/// Below this maximum |x| a Q6_K sub-block (and super-block) counts as all zero (`GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even through the bits of `x + 12582912.0`. Exact rounding
/// for |x| ≤ 4194303; outside that (or for NaN/inf) it returns the same garbage the C code does,
/// which the callers then clamp, so even degenerate blocks stay byte-identical.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0f32;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// f32 → f16 → f32, as `GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(x))`.
#[inline]
fn f16_round_trip(x: f32) -> (u16, f32) {
    let b = f32_to_f16(x);
    (b, f16_to_f32(b))
}

/// `make_qkx2_quants(32, 15, x, weights, L, &the_min, Laux, -1, 0.1, 20, false)`: returns
/// `(scale, the_min)` and the codes in `l`.
pub(crate) fn make_qkx2_quants_32(x: &[f32; 32], weights: &[f32; 32], l_out: &mut [u8]) -> (f32, f32) {
    let l: &mut [u8; 32] = l_out.try_into().expect("32 codes");
    make_qkx_quants(15, (-1.0, 0.1, 20), x, weights, l)
}

/// The search shared by llama.cpp's `make_qkx2_quants` and `make_qkx3_quants` (without `use_mad`):
/// codes `0..=nmax` for scale-and-minimum formats; the initial guess from min/max, then `nstep + 1`
/// trial inverse scales `(rmin + rdelta·is + nmax) / (max − min)`, each refined by the weighted
/// 2×2 least-squares fit, keeping the one with the lowest weighted squared error. Returns
/// `(scale, the_min)`, codes in `l_out`. (`max <= min` and the C code's `max == min` agree: with
/// `min` clamped to ≤ 0, `max < min` cannot happen.)
pub(crate) fn make_qkx_quants<const N: usize>(
    nmax: i32,
    (rmin, rdelta, nstep): (f32, f32, i32),
    x: &[f32; N],
    weights: &[f32; N],
    l_out: &mut [u8; N],
) -> (f32, f32) {
    let n = N;
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_mad = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        let diff = diff * diff;
        best_mad += weights[i] * diff;
    }
    let mut laux = [0u8; N];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                let diff = diff * diff;
                mad += weights[i] * diff;
            }
            if mad < best_mad {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The Q4_K weights of a sub-block: `sqrt(Σx²/32) + |x|`.
#[inline]
fn q4k_weights(x: &[f32; 32]) -> [f32; 32] {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let av_x = (sum_x2 / 32.0).sqrt();
    let mut w = [0.0f32; 32];
    for (w, &v) in w.iter_mut().zip(x) {
        *w = av_x + v.abs();
    }
    w
}

/// The 6-bit scale and minimum of sub-block `j` (`get_scale_min_k4`).
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The second half of the Q4_K quantizer, shared by the scalar and SIMD paths: from the eight
/// sub-block `(scale, min)` pairs of the search, the 6-bit scale/min codes, the f16 super-scales
/// and the final per-sub-block scales `(d, dm)` the codes are requantized with (`d == 0` keeps
/// the search's codes).
pub(crate) fn q4k_scales(scales: &[f32; 8], mins: &[f32; 8]) -> (BlockQ4K, [f32; 8], [f32; 8]) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut b = BlockQ4K { d: 0, dmin: 0, scales: [0; 12], qs: [0; 128] };
    for j in 0..8 {
        // `uint8_t ls = nearest_int(...)`: truncation to 8 bits before the clamp to 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            b.scales[j] = ls;
            b.scales[j + 4] = lm;
        } else {
            b.scales[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            b.scales[j - 4] |= (ls >> 4) << 6;
            b.scales[j] |= (lm >> 4) << 6;
        }
    }
    let (db, d) = f16_round_trip(max_scale / 63.0);
    let (mb, dmin) = f16_round_trip(max_min / 63.0);
    b.d = db;
    b.dmin = mb;
    let mut ds = [0.0f32; 8];
    let mut dms = [0.0f32; 8];
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &b.scales);
        ds[j] = d * sc as f32;
        dms[j] = dmin * m as f32;
    }
    (b, ds, dms)
}

/// Pack Q4_K codes (`l[i]` for element `i`, 0..=15) into `qs`.
#[inline]
pub(crate) fn q4k_pack(l: &[u8; QK_K], qs: &mut [u8; 128]) {
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
}

impl BlockQ4K {
    /// `quantize_row_q4_K_ref` for one super-block. `x` must be finite.
    pub fn quantize_ref(x: &[f32; QK_K]) -> Self {
        let mut l = [0u8; QK_K];
        let mut scales = [0.0f32; 8];
        let mut mins = [0.0f32; 8];
        for j in 0..8 {
            let xs: &[f32; 32] = x[32 * j..32 * j + 32].try_into().expect("32 values");
            let w = q4k_weights(xs);
            let (s, m) = make_qkx2_quants_32(xs, &w, &mut l[32 * j..32 * j + 32]);
            scales[j] = s;
            mins[j] = m;
        }
        let (mut b, ds, dms) = q4k_scales(&scales, &mins);
        for j in 0..8 {
            let d = ds[j];
            if d == 0.0 {
                continue;
            }
            let dm = dms[j];
            for i in 0..32 {
                l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, 15) as u8;
            }
        }
        q4k_pack(&l, &mut b.qs);
        b
    }
}

impl BlockFormat for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK: usize = QK_K;
    const BYTES: usize = 144;

    fn quantize_block_ref(x: &[f32]) -> Self {
        BlockQ4K::quantize_ref(x.try_into().expect("a Q4_K block quantizes 256 values"))
    }

    /// Expand to 256 values as ggml's `dequantize_row_q4_K` (and the `gguf` package) do:
    /// `(d·sc)·q − (dmin·m)` in f32.
    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        let min = f16_to_f32(self.dmin);
        for c in 0..4 {
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for i in 0..32 {
                let q = self.qs[32 * c + i];
                out[64 * c + i] = d1 * (q & 0xf) as f32 - m1;
                out[64 * c + 32 + i] = d2 * (q >> 4) as f32 - m2;
            }
        }
    }

    /// Write the 144 on-disk bytes.
    fn write_bytes(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.dmin.to_le_bytes());
        out[4..16].copy_from_slice(&self.scales);
        out[16..144].copy_from_slice(&self.qs);
    }

    /// Read a block from its 144 on-disk bytes.
    fn read_bytes(b: &[u8]) -> Self {
        let mut r = BlockQ4K { d: 0, dmin: 0, scales: [0; 12], qs: [0; 128] };
        r.d = u16::from_le_bytes([b[0], b[1]]);
        r.dmin = u16::from_le_bytes([b[2], b[3]]);
        r.scales.copy_from_slice(&b[4..16]);
        r.qs.copy_from_slice(&b[16..144]);
        r
    }
}

/// `make_qx_quants(16, 32, x, L, rmse_type = 1, NULL)`: returns the scale; codes (0..=63, i.e.
/// `l + 32`) go to `l_out`.
pub(crate) fn make_qx_quants_16(x: &[f32; 16], l_out: &mut [u8]) -> f32 {
    const N: usize = 16;
    const NMAX: i32 = 32;
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..N].fill(0);
        return 0.0;
    }
    let mut iscale = -(NMAX as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..N {
        let l = nearest_int(iscale * x[i]).clamp(-NMAX, NMAX - 1);
        l_out[i] = (l + NMAX) as u8;
        let w = x[i] * x[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(NMAX as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
            let w = v * v;
            let lf = l as f32;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..N {
                let l = nearest_int(iscale * x[i]).clamp(-NMAX, NMAX - 1);
                l_out[i] = (NMAX + l) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The second half of the Q6_K quantizer, shared by the scalar and SIMD paths: from the sixteen
/// sub-block scales of the search, the block header (`d`, `scales`) and the per-sub-block final
/// scales the codes are requantized with (`0` keeps the search's codes). `None` when the whole
/// super-block is (nearly) zero: it is stored as all zero bytes.
pub(crate) fn q6k_scales(scales: &[f32; 16]) -> Option<(BlockQ6K, [f32; 16])> {
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for &s in scales {
        let a = s.abs();
        if a > max_abs_scale {
            max_abs_scale = a;
            max_scale = s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        return None;
    }
    let iscale = -128.0f32 / max_scale;
    let (db, d) = f16_round_trip(1.0 / iscale);
    let mut b = BlockQ6K { ql: [0; 128], qh: [0; 64], scales: [0; 16], d: db };
    let mut ds = [0.0f32; 16];
    for (j, &s) in scales.iter().enumerate() {
        // `MIN(127, nearest_int(...))` stored into an int8_t: wraps like the C conversion.
        b.scales[j] = nearest_int(iscale * s).min(127) as i8;
        ds[j] = d * b.scales[j] as f32;
    }
    Some((b, ds))
}

/// Pack Q6_K codes (`l[i]` = 0..=63 for element `i`) into `ql` and `qh`.
#[inline]
pub(crate) fn q6k_pack(l: &[u8; QK_K], b: &mut BlockQ6K) {
    for h in 0..2 {
        let (j, ql, qh) = (128 * h, 64 * h, 32 * h);
        for i in 0..32 {
            let q1 = l[j + i] & 0xf;
            let q2 = l[j + i + 32] & 0xf;
            let q3 = l[j + i + 64] & 0xf;
            let q4 = l[j + i + 96] & 0xf;
            b.ql[ql + i] = q1 | (q3 << 4);
            b.ql[ql + i + 32] = q2 | (q4 << 4);
            b.qh[qh + i] = (l[j + i] >> 4)
                | ((l[j + i + 32] >> 4) << 2)
                | ((l[j + i + 64] >> 4) << 4)
                | ((l[j + i + 96] >> 4) << 6);
        }
    }
}

impl BlockQ6K {
    /// The all-zero block llama.cpp stores for a (nearly) zero super-block.
    pub const ZERO: BlockQ6K = BlockQ6K { ql: [0; 128], qh: [0; 64], scales: [0; 16], d: 0 };

    /// `quantize_row_q6_K_ref` for one super-block. `x` must be finite.
    pub fn quantize_ref(x: &[f32; QK_K]) -> Self {
        let mut l = [0u8; QK_K];
        let mut scales = [0.0f32; 16];
        for (j, s) in scales.iter_mut().enumerate() {
            let xs: &[f32; 16] = x[16 * j..16 * j + 16].try_into().expect("16 values");
            *s = make_qx_quants_16(xs, &mut l[16 * j..16 * j + 16]);
        }
        let Some((mut b, ds)) = q6k_scales(&scales) else {
            return BlockQ6K::ZERO;
        };
        for (j, &d) in ds.iter().enumerate() {
            if d == 0.0 {
                continue;
            }
            for i in 0..16 {
                let q = nearest_int(x[16 * j + i] / d).clamp(-32, 31);
                l[16 * j + i] = (q + 32) as u8;
            }
        }
        q6k_pack(&l, &mut b);
        b
    }
}

impl BlockFormat for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK: usize = QK_K;
    const BYTES: usize = 210;

    fn quantize_block_ref(x: &[f32]) -> Self {
        BlockQ6K::quantize_ref(x.try_into().expect("a Q6_K block quantizes 256 values"))
    }

    /// Expand to 256 values as ggml's `dequantize_row_q6_K` (and the `gguf` package) do:
    /// `(d·scale)·(q − 32)` in f32.
    fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for h in 0..2 {
            let (y, ql, qh, sc) = (128 * h, 64 * h, 32 * h, 8 * h);
            for i in 0..32 {
                let is = i / 16;
                let b = self.qh[qh + i];
                let q1 = ((self.ql[ql + i] & 0xf) | ((b & 3) << 4)) as i32 - 32;
                let q2 = ((self.ql[ql + i + 32] & 0xf) | (((b >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((self.ql[ql + i] >> 4) | (((b >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((self.ql[ql + i + 32] >> 4) | (((b >> 6) & 3) << 4)) as i32 - 32;
                out[y + i] = d * self.scales[sc + is] as f32 * q1 as f32;
                out[y + i + 32] = d * self.scales[sc + is + 2] as f32 * q2 as f32;
                out[y + i + 64] = d * self.scales[sc + is + 4] as f32 * q3 as f32;
                out[y + i + 96] = d * self.scales[sc + is + 6] as f32 * q4 as f32;
            }
        }
    }

    /// Write the 210 on-disk bytes.
    fn write_bytes(&self, out: &mut [u8]) {
        out[0..128].copy_from_slice(&self.ql);
        out[128..192].copy_from_slice(&self.qh);
        for (o, &s) in out[192..208].iter_mut().zip(&self.scales) {
            *o = s as u8;
        }
        out[208..210].copy_from_slice(&self.d.to_le_bytes());
    }

    /// Read a block from its 210 on-disk bytes.
    fn read_bytes(b: &[u8]) -> Self {
        let mut r = BlockQ6K::ZERO;
        r.ql.copy_from_slice(&b[0..128]);
        r.qh.copy_from_slice(&b[128..192]);
        for (s, &v) in r.scales.iter_mut().zip(&b[192..208]) {
            *s = v as i8;
        }
        r.d = u16::from_le_bytes([b[208], b[209]]);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_is_the_magic_number_trick() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.51), -1);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        // Outside the valid range the C trick wraps; callers clamp what it returns.
        assert_eq!(nearest_int(f32::INFINITY), -0x40_0000);
        assert_eq!(nearest_int(f32::NAN), 0);
    }

    #[test]
    fn scale_min_packing_round_trips() {
        let mut scales = [0.0f32; 8];
        let mut mins = [0.0f32; 8];
        for j in 0..8 {
            scales[j] = (j as f32 + 1.0) * 7.0;
            mins[j] = 63.0 - j as f32 * 9.0;
        }
        // max_scale = 56 → inv 63/56; max_min = 63 → inv 1.
        let (b, _, _) = q4k_scales(&scales, &mins);
        for j in 0..8 {
            let (sc, m) = get_scale_min_k4(j, &b.scales);
            assert_eq!(sc as i32, nearest_int(63.0 / 56.0 * scales[j]), "scale {j}");
            assert_eq!(m as f32, mins[j], "min {j}");
        }
    }

    #[test]
    fn zero_super_blocks() {
        let x = [0.0f32; QK_K];
        assert_eq!(BlockQ6K::quantize_ref(&x), BlockQ6K::ZERO);
        let b = BlockQ4K::quantize_ref(&x);
        assert_eq!((b.d, b.dmin, b.scales, b.qs), (0, 0, [0; 12], [0; 128]));
    }
}
