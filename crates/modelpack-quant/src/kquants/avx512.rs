//! AVX-512 (F + BW + VL) K-quant kernels: the [`super::avx2`] searches with sixteen sub-blocks
//! per register.
//!
//! The searches of llama.cpp's K-quants are sequential inside a sub-block (see `avx2.rs`), so the
//! kernels vectorise across sub-blocks: one zmm holds sixteen of them, i.e. two Q4_K super-blocks
//! (8 sub-blocks of 32 each) or one Q6_K super-block (16 of 16), and two registers run
//! interleaved to hide the latency of the ordered sums. Every lane performs exactly the scalar
//! reference's sequence of IEEE operations (no FMA, the same operand order for min/max, mask
//! blends where the C code branches), so the bytes equal [`super`]'s and
//! [`crate::imatrix`]'s scalar functions. `vrndscaleps` replaces `nearest_int` where the
//! per-step range proof of `avx2.rs` holds; a group that fails it (only pathological ranges)
//! is quantized by the scalar reference.
//!
//! Why a 16-lane twin: the searches are pure arithmetic on data in L1, and a core with
//! full-width 512-bit units (Intel Xeon) does twice the work per instruction. Such a core issues
//! two 512-bit operations per cycle against three 256-bit ones, so the gain is at most 1.33×;
//! measured 1.2× for Q4_K and Q6_K (`crates/modelpack-quant/README.md`).

// The kernels walk several per-element arrays (values, weights, codes) with one index, as
// `avx2.rs` does.
#![allow(clippy::needless_range_loop)]

use crate::blocks::{quantize_blocks_ref, BlockFormat, BlockQ4K, BlockQ6K, GgmlType, QK_K};
use crate::convert::{with_src, Dtype};
use crate::kquants::avx2::{QKX2, QKX3};
use crate::kquants::{q4k_pack, q4k_scales, q6k_pack, q6k_scales, GROUP_MAX_EPS};
use crate::simd::x86::load16;
use crate::{QuantError, SrcDtype};
use std::arch::x86_64::*;

/// Quantize whole super-blocks of `ty` (Q4_K or Q6_K) from `src` bytes.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C.
pub(crate) unsafe fn quantize(ty: GgmlType, src: SrcDtype, input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    // SAFETY: the caller guarantees the features; the kernels bound every access by the slices.
    unsafe {
        match ty {
            GgmlType::Q4_K => with_src!(src, S => q4k::<S>(input, out)),
            GgmlType::Q6_K => with_src!(src, S => q6k::<S>(input, out)),
            GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0 => Err(QuantError::Unsupported(ty.name())),
        }
    }
}

/// The imatrix-weighted K-quants on one row (see [`super::avx2::quantize_weighted`]): `x` finite
/// f32 values (whole super-blocks), `qw` the row's column weights, `out` the row's bytes.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C; `ty` is Q4_K or Q6_K;
/// `x.len() == qw.len()`, a multiple of 256; `out` holds exactly the row's super-blocks.
pub(crate) unsafe fn quantize_weighted(ty: GgmlType, x: &[f32], qw: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), qw.len());
    // SAFETY: the caller guarantees the features; slices bound every access.
    unsafe {
        match ty {
            GgmlType::Q4_K => q4k_weighted(x, qw, out),
            _ => q6k_weighted(x, qw, out),
        }
    }
}

/// Largest |x| for which `nearest_int(x)` is round-half-to-even.
const NEAREST_LIMIT: f32 = 4_194_303.0;

#[inline]
fn lanes(v: __m512) -> [f32; 16] {
    // SAFETY: __m512 and [f32; 16] have the same size and every bit pattern is valid for both.
    unsafe { std::mem::transmute::<__m512, [f32; 16]>(v) }
}

#[inline]
fn from_lanes(a: [f32; 16]) -> __m512 {
    // SAFETY: as in `lanes`.
    unsafe { std::mem::transmute::<[f32; 16], __m512>(a) }
}

/// `-x` (sign flip, exact; AVX-512 F has no `vxorps` on zmm without DQ).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn neg(x: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN)))
}

/// `nearest_int` exactly (bit trick), clamped to `[lo, hi]`, as f32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn nearest_int_clamped(x: __m512, lo: i32, hi: i32) -> __m512 {
    let v = _mm512_add_ps(x, _mm512_set1_ps(12_582_912.0));
    let i = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x007f_ffff));
    let i = _mm512_sub_epi32(i, _mm512_set1_epi32(0x0040_0000));
    let i = _mm512_min_epi32(_mm512_max_epi32(i, _mm512_set1_epi32(lo)), _mm512_set1_epi32(hi));
    _mm512_cvtepi32_ps(i)
}

/// Round half to even, then clamp: `nearest_int` where the caller proved |x| ≤ 4194303.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn round_clamped(x: __m512, lo: __m512, hi: __m512) -> __m512 {
    let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    // `max(r, lo)` returns `lo` for r = -0 (like C's int 0, which converts to +0).
    _mm512_min_ps(_mm512_max_ps(r, lo), hi)
}

/// Lanes where `|a| <= limit` fails (NaN included).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn out_of_range(a: __m512) -> __mmask16 {
    _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(_mm512_abs_ps(a), _mm512_set1_ps(NEAREST_LIMIT))
}

/// Load `16 * LEN` source elements at `p` as f32 into `buf`; returns a bit per 256-element
/// super-block of `buf` that holds a NaN or infinity.
///
/// # Safety
/// `p` must be valid for `16 * LEN` source elements; features as the module.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_block<S: Dtype, const N: usize>(p: *const u8, buf: &mut [f32; N]) -> u32 {
    let es = S::SRC.size();
    let mut bad = 0u32;
    for sb in 0..N / QK_K {
        let mut amax = _mm512_setzero_si512();
        for v in 0..QK_K / 16 {
            let e = sb * QK_K + 16 * v;
            // SAFETY: element `e + 15` < `N`, inside the caller's range; `buf` has `N` floats.
            let x = unsafe {
                let x = load16::<S>(p.add(e * es));
                _mm512_storeu_ps(buf.as_mut_ptr().add(e), x);
                x
            };
            amax = _mm512_max_epu32(amax, _mm512_castps_si512(_mm512_abs_ps(x)));
        }
        // Any |x| bit pattern above f32::MAX's is ±inf or NaN.
        if _mm512_cmpgt_epu32_mask(amax, _mm512_set1_epi32(0x7f7f_ffff)) != 0 {
            bad |= 1 << sb;
        }
    }
    bad
}

/// Transpose 16 sub-blocks of `LEN` contiguous values: `out[i]` lane `k` is `v[LEN·k + i]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn transpose<const LEN: usize>(v: &[f32]) -> [__m512; LEN] {
    let v = &v[..16 * LEN];
    let mut t = [[0.0f32; 16]; LEN];
    for k in 0..16 {
        for i in 0..LEN {
            t[i][k] = v[LEN * k + i];
        }
    }
    let mut out = [_mm512_setzero_ps(); LEN];
    for i in 0..LEN {
        out[i] = from_lanes(t[i]);
    }
    out
}

/// Write transposed codes (`l[i]` lane `k` = code of element `len·k + i`) in element order.
#[inline]
fn untranspose(l: &[__m512], dst: &mut [u8]) {
    let len = l.len();
    for (i, v) in l.iter().enumerate() {
        for (k, &c) in lanes(*v).iter().enumerate() {
            dst[len * k + i] = c as u8;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q4_K

/// The search state of sixteen sub-blocks of 32 (two super-blocks), one per lane.
struct Q4Search {
    x: [__m512; 32],
    w: [__m512; 32],
    /// Data maximum and minimum (before the clamp of the minimum to ≤ 0).
    max: __m512,
    xmin: __m512,
    sum_w: __m512,
    sum_x: __m512,
    /// Lanes whose values are all equal (`max == min`): codes 0, scale 0.
    eq: __mmask16,
    /// Current `min` (the C variable: the clamped data minimum, then the winners' minima).
    min: __m512,
    scale: __m512,
    best_error: __m512,
    /// The step that produced the current codes: its inverse scale and the `min` it used.
    win_iscale: __m512,
    win_min: __m512,
    /// Lanes for which the range proof failed.
    bad: __mmask16,
}

/// The unweighted Q4_K weights: `sqrt(Σx²/32) + |x|` per lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q4k_plain_weights(x: &[__m512; 32]) -> [__m512; 32] {
    let mut sum_x2 = _mm512_setzero_ps();
    for &v in x {
        sum_x2 = _mm512_add_ps(sum_x2, _mm512_mul_ps(v, v));
    }
    let av_x = _mm512_sqrt_ps(_mm512_div_ps(sum_x2, _mm512_set1_ps(32.0)));
    let mut w = [_mm512_setzero_ps(); 32];
    for i in 0..32 {
        w[i] = _mm512_add_ps(av_x, _mm512_abs_ps(x[i]));
    }
    w
}

/// The imatrix Q4_K weights `qw·sqrt(σ² + x²)` and each sub-block's weight sum (from 0).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q4k_imatrix_weights(x: &[__m512; 32], qw: &[__m512; 32], sigma2: __m512) -> ([__m512; 32], __m512) {
    let mut w = [_mm512_setzero_ps(); 32];
    let mut sum = _mm512_setzero_ps();
    for i in 0..32 {
        w[i] = _mm512_mul_ps(qw[i], _mm512_sqrt_ps(_mm512_add_ps(sigma2, _mm512_mul_ps(x[i], x[i]))));
        sum = _mm512_add_ps(sum, w[i]);
    }
    (w, sum)
}

impl Q4Search {
    /// Extrema and sums of `make_qkx_quants`'s first loop, for the given weights.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn new(x: [__m512; 32], w: [__m512; 32]) -> Q4Search {
        let mut min = x[0];
        let mut max = x[0];
        let mut sum_w = w[0];
        let mut sum_x = _mm512_mul_ps(w[0], x[0]);
        for i in 1..32 {
            // `if (x < min) min = x`: vminps(a, b) is `a < b ? a : b`.
            min = _mm512_min_ps(x[i], min);
            max = _mm512_max_ps(x[i], max);
            sum_w = _mm512_add_ps(sum_w, w[i]);
            sum_x = _mm512_add_ps(sum_x, _mm512_mul_ps(w[i], x[i]));
        }
        let zero = _mm512_setzero_ps();
        let xmin = min;
        // `if (min > 0) min = 0` (keeps a -0 minimum).
        let min = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(min, zero), min, zero);
        let eq = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(max, min);
        Q4Search {
            x,
            w,
            max,
            xmin,
            sum_w,
            sum_x,
            eq,
            min,
            scale: zero,
            best_error: zero,
            win_iscale: zero,
            win_min: min,
            bad: 0,
        }
    }

    /// `c / (max - min)` with all-equal lanes' range replaced by 1 (their results are overridden
    /// at the end); records lanes whose codes could leave `nearest_int`'s exact range.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    fn iscale(&mut self, c: f32) -> __m512 {
        let range = _mm512_sub_ps(self.max, self.min);
        let range = _mm512_mask_blend_ps(self.eq, range, _mm512_set1_ps(1.0));
        let iscale = _mm512_div_ps(_mm512_set1_ps(c), range);
        // Every `iscale * (x - min)` lies between these two (x in [xmin, max], monotone ops).
        let lo = _mm512_mul_ps(iscale, _mm512_sub_ps(self.xmin, self.min));
        let hi = _mm512_mul_ps(iscale, range);
        self.bad |= (out_of_range(lo) | out_of_range(hi)) & !self.eq;
        iscale
    }
}

/// `make_qkx2_quants` / `make_qkx3_quants` (nmax 15, `(rmin, rdelta, nstep)`) on two states (four
/// super-blocks) at once; fills `scale`, `out_min` (the C `*the_min`) and the codes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q4k_search(
    s: &mut [Q4Search; 2],
    codes: &mut [[__m512; 32]; 2],
    out_min: &mut [__m512; 2],
    (rmin, rdelta, nstep): (f32, f32, i32),
) {
    let zero = _mm512_setzero_ps();
    let fifteen = _mm512_set1_ps(15.0);
    let mut laux = [[zero; 32]; 2];

    // Initial codes from iscale = 15 / (max - min), scale = 1 / iscale.
    for s in s.iter_mut() {
        let iscale = s.iscale(15.0);
        s.scale = _mm512_div_ps(_mm512_set1_ps(1.0), iscale);
        s.win_iscale = iscale;
        s.win_min = s.min;
    }
    let mut err = [zero; 2];
    for i in 0..32 {
        for b in 0..2 {
            let s = &s[b];
            let l = round_clamped(_mm512_mul_ps(s.win_iscale, _mm512_sub_ps(s.x[i], s.min)), zero, fifteen);
            let diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(s.scale, l), s.min), s.x[i]);
            err[b] = _mm512_add_ps(err[b], _mm512_mul_ps(s.w[i], _mm512_mul_ps(diff, diff)));
        }
    }
    s[0].best_error = err[0];
    s[1].best_error = err[1];

    for is in 0..=nstep {
        let c = rmin + rdelta * is as f32 + 15.0f32;
        let iscale = [s[0].iscale(c), s[1].iscale(c)];
        let mut sum_l = [zero; 2];
        let mut sum_l2 = [zero; 2];
        let mut sum_xl = [zero; 2];
        for i in 0..32 {
            for b in 0..2 {
                let s = &s[b];
                let l = round_clamped(_mm512_mul_ps(iscale[b], _mm512_sub_ps(s.x[i], s.min)), zero, fifteen);
                laux[b][i] = l;
                let wl = _mm512_mul_ps(s.w[i], l);
                sum_l[b] = _mm512_add_ps(sum_l[b], wl);
                sum_l2[b] = _mm512_add_ps(sum_l2[b], _mm512_mul_ps(wl, l));
                sum_xl[b] = _mm512_add_ps(sum_xl[b], _mm512_mul_ps(wl, s.x[i]));
            }
        }
        let mut this_scale = [zero; 2];
        let mut this_min = [zero; 2];
        let mut dpos = [0 as __mmask16; 2];
        for b in 0..2 {
            let s = &s[b];
            let d = _mm512_sub_ps(_mm512_mul_ps(s.sum_w, sum_l2[b]), _mm512_mul_ps(sum_l[b], sum_l[b]));
            dpos[b] = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(d, zero);
            let sc =
                _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(s.sum_w, sum_xl[b]), _mm512_mul_ps(s.sum_x, sum_l[b])), d);
            let mn =
                _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(sum_l2[b], s.sum_x), _mm512_mul_ps(sum_l[b], sum_xl[b])), d);
            let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(mn, zero);
            this_min[b] = _mm512_mask_blend_ps(pos, mn, zero);
            this_scale[b] = _mm512_mask_blend_ps(pos, sc, _mm512_div_ps(sum_xl[b], sum_l2[b]));
        }
        let mut cur = [zero; 2];
        for i in 0..32 {
            for b in 0..2 {
                let s = &s[b];
                let diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(this_scale[b], laux[b][i]), this_min[b]), s.x[i]);
                cur[b] = _mm512_add_ps(cur[b], _mm512_mul_ps(s.w[i], _mm512_mul_ps(diff, diff)));
            }
        }
        for b in 0..2 {
            let s = &mut s[b];
            let take = dpos[b] & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(cur[b], s.best_error);
            s.best_error = _mm512_mask_blend_ps(take, s.best_error, cur[b]);
            s.scale = _mm512_mask_blend_ps(take, s.scale, this_scale[b]);
            s.win_iscale = _mm512_mask_blend_ps(take, s.win_iscale, iscale[b]);
            s.win_min = _mm512_mask_blend_ps(take, s.win_min, s.min);
            s.min = _mm512_mask_blend_ps(take, s.min, this_min[b]);
        }
    }

    // The winners' codes, recomputed with the winning step's exact operands.
    for b in 0..2 {
        let s = &mut s[b];
        for i in 0..32 {
            let l = round_clamped(_mm512_mul_ps(s.win_iscale, _mm512_sub_ps(s.x[i], s.win_min)), zero, fifteen);
            codes[b][i] = _mm512_maskz_mov_ps(!s.eq, l);
        }
        out_min[b] = neg(s.min);
        s.scale = _mm512_maskz_mov_ps(!s.eq, s.scale);
    }
}

/// Requantize the codes of one state (two super-blocks) with their final scales `ds`, `dms`
/// (`d == 0` keeps the search's codes; NaN requantizes, as the C `if (!d) continue;`) and return
/// them in element order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q4k_requant(s: &Q4Search, codes: &[__m512; 32], ds: [f32; 16], dms: [f32; 16]) -> [u8; 2 * QK_K] {
    let d = from_lanes(ds);
    let dm = from_lanes(dms);
    let requant = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(d, _mm512_setzero_ps());
    let mut l = [_mm512_setzero_ps(); 32];
    for i in 0..32 {
        let q = nearest_int_clamped(_mm512_div_ps(_mm512_add_ps(s.x[i], dm), d), 0, 15);
        l[i] = _mm512_mask_blend_ps(requant, codes[i], q);
    }
    let mut lb = [0u8; 2 * QK_K];
    untranspose(&l, &mut lb);
    lb
}

/// Halves `h` (0, 1) of a 16-lane vector as the eight values of one super-block.
#[inline]
fn half(v: __m512, h: usize) -> [f32; 8] {
    lanes(v)[8 * h..8 * h + 8].try_into().expect("8 lanes")
}

/// Finish the two super-blocks of state `s` whose headers `h` were computed from the search:
/// write super-block `h` of the state to `outs[h]` when it is `Some`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q4k_write(s: &Q4Search, codes: &[__m512; 32], h: [(BlockQ4K, [f32; 8], [f32; 8]); 2], outs: [Option<&mut [u8]>; 2]) {
    let mut ds = [0.0f32; 16];
    let mut dms = [0.0f32; 16];
    for k in 0..2 {
        ds[8 * k..8 * k + 8].copy_from_slice(&h[k].1);
        dms[8 * k..8 * k + 8].copy_from_slice(&h[k].2);
    }
    let lb = q4k_requant(s, codes, ds, dms);
    for (k, o) in outs.into_iter().enumerate() {
        if let Some(o) = o {
            let mut blk = h[k].0;
            q4k_pack(lb[QK_K * k..QK_K * (k + 1)].try_into().expect("256 codes"), &mut blk.qs);
            blk.write_bytes(o);
        }
    }
}

/// Q4_K over whole super-blocks, four at a time (two states of two).
///
/// # Safety
/// Features as the module.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn q4k<S: Dtype>(input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK_K * src.size();
    let nb = out.len() / 144;
    debug_assert_eq!(input.len(), nb * in_blk);
    let mut buf = [0.0f32; 4 * QK_K];
    let mut i = 0;
    while i < nb {
        // A short last group repeats its last super-block (results written once).
        let ks = [i, (i + 1).min(nb - 1), (i + 2).min(nb - 1), (i + 3).min(nb - 1)];
        for (b, &k) in ks.iter().enumerate() {
            let blk = &input[k * in_blk..(k + 1) * in_blk];
            let dst: &mut [f32; QK_K] = (&mut buf[QK_K * b..QK_K * (b + 1)]).try_into().expect("256");
            // SAFETY: `blk` holds exactly 256 source elements.
            if unsafe { load_block::<S, QK_K>(blk.as_ptr(), dst) } != 0 {
                // Non-finite: the scalar path reports the first offending element (the blocks
                // before it in this group are finite).
                return quantize_blocks_ref::<BlockQ4K>(src, blk, &mut out[k * 144..(k + 1) * 144], k * QK_K);
            }
        }
        let x0 = transpose::<32>(&buf[..2 * QK_K]);
        let x1 = transpose::<32>(&buf[2 * QK_K..]);
        let mut s = [Q4Search::new(x0, q4k_plain_weights(&x0)), Q4Search::new(x1, q4k_plain_weights(&x1))];
        let mut codes = [[_mm512_setzero_ps(); 32]; 2];
        let mut mins = [_mm512_setzero_ps(); 2];
        q4k_search(&mut s, &mut codes, &mut mins, QKX2);
        let end = ks[3] + 1;
        if s[0].bad | s[1].bad != 0 {
            quantize_blocks_ref::<BlockQ4K>(
                src,
                &input[i * in_blk..end * in_blk],
                &mut out[i * 144..end * 144],
                i * QK_K,
            )?;
        } else {
            let group = &mut out[i * 144..end * 144];
            let (mut o, mut rest) = (Vec::with_capacity(4), group);
            for _ in i..end {
                let (a, b) = rest.split_at_mut(144);
                o.push(Some(a));
                rest = b;
            }
            o.resize_with(4, || None);
            let mut o = o.into_iter();
            for st in 0..2 {
                let h = [0, 1].map(|k| q4k_scales(&half(s[st].scale, k), &half(mins[st], k)));
                q4k_write(&s[st], &codes[st], h, [o.next().flatten(), o.next().flatten()]);
            }
        }
        i = end;
    }
    Ok(())
}

/// The imatrix search state of two super-blocks (`x`, `qw`: 512 values each) and their
/// sub-blocks' weight sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q4k_weighted_state(x: &[f32], qw: &[f32]) -> (Q4Search, __m512) {
    let xt = transpose::<32>(x);
    let qt = transpose::<32>(qw);
    let (s0, s1) = (crate::imatrix::q4k_sigma2(&x[..QK_K]), crate::imatrix::q4k_sigma2(&x[QK_K..]));
    let sigma2 = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
    let (w, sw) = q4k_imatrix_weights(&xt, &qt, sigma2);
    (Q4Search::new(xt, w), sw)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q4k_weighted(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let nb = out.len() / 144;
    let mut xb = [0.0f32; 4 * QK_K];
    let mut wb = [0.0f32; 4 * QK_K];
    let mut i = 0;
    while i < nb {
        let ks = [i, (i + 1).min(nb - 1), (i + 2).min(nb - 1), (i + 3).min(nb - 1)];
        for (b, &k) in ks.iter().enumerate() {
            xb[QK_K * b..QK_K * (b + 1)].copy_from_slice(&x[k * QK_K..(k + 1) * QK_K]);
            wb[QK_K * b..QK_K * (b + 1)].copy_from_slice(&qw[k * QK_K..(k + 1) * QK_K]);
        }
        let (s0, sw0) = q4k_weighted_state(&xb[..2 * QK_K], &wb[..2 * QK_K]);
        let (s1, sw1) = q4k_weighted_state(&xb[2 * QK_K..], &wb[2 * QK_K..]);
        let sw = [sw0, sw1];
        let mut s = [s0, s1];
        let mut codes = [[_mm512_setzero_ps(); 32]; 2];
        let mut mins = [_mm512_setzero_ps(); 2];
        q4k_search(&mut s, &mut codes, &mut mins, QKX3);
        let end = ks[3] + 1;
        if s[0].bad | s[1].bad != 0 {
            for k in i..end {
                let xs = x[k * QK_K..(k + 1) * QK_K].try_into().expect("256");
                let ws = qw[k * QK_K..(k + 1) * QK_K].try_into().expect("256");
                crate::imatrix::q4k_block(xs, ws).write_bytes(&mut out[k * 144..(k + 1) * 144]);
            }
        } else {
            let group = &mut out[i * 144..end * 144];
            let (mut o, mut rest) = (Vec::with_capacity(4), group);
            for _ in i..end {
                let (a, b) = rest.split_at_mut(144);
                o.push(Some(a));
                rest = b;
            }
            o.resize_with(4, || None);
            let mut o = o.into_iter();
            for st in 0..2 {
                let h = [0, 1].map(|k| {
                    crate::imatrix::q4k_weighted_scales(&half(s[st].scale, k), &half(mins[st], k), &half(sw[st], k))
                });
                q4k_write(&s[st], &codes[st], h, [o.next().flatten(), o.next().flatten()]);
            }
        }
        i = end;
    }
}

// ---------------------------------------------------------------------------------------------
// Q6_K

/// `make_qx_quants(16, 32, x, L, 1, qw)` for two super-blocks (sixteen sub-blocks each, one per
/// lane) with weights `w` (`x²` without an imatrix); returns the scales and fills the codes
/// (`l + 32`, 0..=63).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q6k_search(x: &[[__m512; 16]; 2], w: &[[__m512; 16]; 2], codes: &mut [[__m512; 16]; 2]) -> [__m512; 2] {
    let zero = _mm512_setzero_ps();
    let lo = _mm512_set1_ps(-32.0);
    let hi = _mm512_set1_ps(31.0);
    let mut max = [zero; 2];
    let mut small = [0 as __mmask16; 2];
    let mut wx = [[zero; 16]; 2];
    for b in 0..2 {
        let mut amax = zero;
        for i in 0..16 {
            let ax = _mm512_abs_ps(x[b][i]);
            let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(ax, amax);
            amax = _mm512_mask_blend_ps(gt, amax, ax);
            max[b] = _mm512_mask_blend_ps(gt, max[b], x[b][i]);
            wx[b][i] = _mm512_mul_ps(w[b][i], x[b][i]);
        }
        small[b] = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(amax, _mm512_set1_ps(GROUP_MAX_EPS));
        // All-zero lanes compute with max = 1 and are overridden at the end. Otherwise
        // |max| >= 1e-15 keeps every |iscale * x| <= ~33: `vrndscaleps` is `nearest_int` there.
        max[b] = _mm512_mask_blend_ps(small[b], max[b], _mm512_set1_ps(1.0));
    }

    let mut win = [zero; 2];
    let mut scale = [zero; 2];
    let mut best = [zero; 2];
    // The initial guess `-32 / max`.
    let c = _mm512_set1_ps(-32.0);
    let iscale0 = [_mm512_div_ps(c, max[0]), _mm512_div_ps(c, max[1])];
    let (sumlx, suml2) = q6k_sums(x, w, &wx, iscale0);
    for b in 0..2 {
        win[b] = iscale0[b];
        // `suml2 ? sumlx/suml2 : 0` (NaN counts as true).
        let nz = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(suml2[b], zero);
        scale[b] = _mm512_maskz_mov_ps(nz, _mm512_div_ps(sumlx[b], suml2[b]));
        best[b] = _mm512_mul_ps(scale[b], sumlx[b]);
    }
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let c = _mm512_set1_ps(-(32.0f32 + 0.1f32 * is as f32));
        let iscale = [_mm512_div_ps(c, max[0]), _mm512_div_ps(c, max[1])];
        let (sumlx, suml2) = q6k_sums(x, w, &wx, iscale);
        for b in 0..2 {
            let sc = _mm512_div_ps(sumlx[b], suml2[b]);
            let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(suml2[b], zero)
                & _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_mul_ps(sumlx[b], sumlx[b]), _mm512_mul_ps(best[b], suml2[b]));
            win[b] = _mm512_mask_blend_ps(take, win[b], iscale[b]);
            scale[b] = _mm512_mask_blend_ps(take, scale[b], sc);
            best[b] = _mm512_mask_blend_ps(take, best[b], _mm512_mul_ps(sc, sumlx[b]));
        }
    }
    let offset = _mm512_set1_ps(32.0);
    for b in 0..2 {
        for i in 0..16 {
            let l = _mm512_add_ps(round_clamped(_mm512_mul_ps(win[b], x[b][i]), lo, hi), offset);
            codes[b][i] = _mm512_maskz_mov_ps(!small[b], l);
        }
        scale[b] = _mm512_maskz_mov_ps(!small[b], scale[b]);
    }
    scale
}

/// The sums of one candidate inverse scale of [`q6k_search`]: `Σ w·x·l` and `Σ w·l·l`, left to
/// right.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q6k_sums(
    x: &[[__m512; 16]; 2],
    w: &[[__m512; 16]; 2],
    wx: &[[__m512; 16]; 2],
    iscale: [__m512; 2],
) -> ([__m512; 2], [__m512; 2]) {
    let zero = _mm512_setzero_ps();
    let lo = _mm512_set1_ps(-32.0);
    let hi = _mm512_set1_ps(31.0);
    let mut sumlx = [zero; 2];
    let mut suml2 = [zero; 2];
    for i in 0..16 {
        for b in 0..2 {
            let l = round_clamped(_mm512_mul_ps(iscale[b], x[b][i]), lo, hi);
            sumlx[b] = _mm512_add_ps(sumlx[b], _mm512_mul_ps(wx[b][i], l));
            suml2[b] = _mm512_add_ps(suml2[b], _mm512_mul_ps(_mm512_mul_ps(w[b][i], l), l));
        }
    }
    (sumlx, suml2)
}

/// Search, scale, requantize and write two Q6_K super-blocks (`outs[b]` when `Some`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q6k_finish(x: &[[__m512; 16]; 2], w: &[[__m512; 16]; 2], outs: [Option<&mut [u8]>; 2]) {
    let mut codes = [[_mm512_setzero_ps(); 16]; 2];
    let sc = q6k_search(x, w, &mut codes);
    for (b, ob) in outs.into_iter().enumerate() {
        let Some(ob) = ob else { continue };
        let Some((mut blk, ds)) = q6k_scales(&lanes(sc[b])) else {
            BlockQ6K::ZERO.write_bytes(ob);
            continue;
        };
        let d = from_lanes(ds);
        let requant = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(d, _mm512_setzero_ps());
        let mut l = [_mm512_setzero_ps(); 16];
        for i in 0..16 {
            let q = nearest_int_clamped(_mm512_div_ps(x[b][i], d), -32, 31);
            let q = _mm512_add_ps(q, _mm512_set1_ps(32.0));
            l[i] = _mm512_mask_blend_ps(requant, codes[b][i], q);
        }
        let mut lb = [0u8; QK_K];
        untranspose(&l, &mut lb);
        q6k_pack(&lb, &mut blk);
        blk.write_bytes(ob);
    }
}

/// Q6_K over whole super-blocks, two at a time.
///
/// # Safety
/// Features as the module.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn q6k<S: Dtype>(input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK_K * src.size();
    let nb = out.len() / 210;
    let mut buf = [0.0f32; 2 * QK_K];
    let mut i = 0;
    while i < nb {
        let j = (i + 1).min(nb - 1);
        for (b, k) in [i, j].into_iter().enumerate() {
            let blk = &input[k * in_blk..(k + 1) * in_blk];
            let dst: &mut [f32; QK_K] = (&mut buf[QK_K * b..QK_K * (b + 1)]).try_into().expect("256");
            // SAFETY: `blk` holds exactly 256 source elements.
            if unsafe { load_block::<S, QK_K>(blk.as_ptr(), dst) } != 0 {
                return quantize_blocks_ref::<BlockQ6K>(src, blk, &mut out[k * 210..(k + 1) * 210], k * QK_K);
            }
        }
        let x = [transpose::<16>(&buf[..QK_K]), transpose::<16>(&buf[QK_K..])];
        let mut w = [[_mm512_setzero_ps(); 16]; 2];
        for b in 0..2 {
            for i in 0..16 {
                w[b][i] = _mm512_mul_ps(x[b][i], x[b][i]);
            }
        }
        let (a, rest) = out[i * 210..].split_at_mut(210);
        let second = if j != i { Some(&mut rest[..210]) } else { None };
        q6k_finish(&x, &w, [Some(a), second]);
        i = j + 1;
    }
    Ok(())
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn q6k_weighted(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let nb = out.len() / 210;
    let mut i = 0;
    while i < nb {
        let j = (i + 1).min(nb - 1);
        let xt = [transpose::<16>(&x[i * QK_K..]), transpose::<16>(&x[j * QK_K..])];
        let wt = [transpose::<16>(&qw[i * QK_K..]), transpose::<16>(&qw[j * QK_K..])];
        let (a, rest) = out[i * 210..].split_at_mut(210);
        let second = if j != i { Some(&mut rest[..210]) } else { None };
        q6k_finish(&xt, &wt, [Some(a), second]);
        i = j + 1;
    }
}
