//! AVX2 (+ F16C) K-quant kernels: llama.cpp's reference searches with one sub-block per lane.
//!
//! `make_qkx2_quants` and `make_qx_quants` are sequential within a sub-block (every candidate
//! scale depends on the previous winner, every sum runs left to right), so they cannot be
//! vectorised across elements without changing the bytes. They can across sub-blocks: a Q4_K
//! super-block has eight sub-blocks of 32 (one ymm register of eight lanes), a Q6_K super-block
//! sixteen of 16 (two registers). The input is transposed so that vector `i` holds element `i` of
//! every sub-block, and each lane then runs exactly the scalar sequence of IEEE operations: the
//! same multiplies and adds in the same order (never FMA), `vminps`/`vmaxps` with the operand
//! order that equals the C comparisons, and masked blends where the C code branches.
//!
//! `nearest_int` (the `x + 1.5·2^23` bit trick) equals round-half-to-even only for |x| ≤ 4194303.
//! The hot loops use `vroundps` and prove per step, from the lane's extreme values (IEEE multiply
//! and subtract are monotone), that every rounded value is in that range; a super-block pair for
//! which the proof fails (only possible for pathological ranges, e.g. near f32 overflow) goes to
//! the scalar reference. The final requantization (a division per element, done once) uses the
//! bit trick itself. Two Q4_K super-blocks run interleaved to hide the add latency of the
//! sequential sums. The searches take the elements' weights as an argument, so the
//! imatrix-weighted quantizers of [`crate::imatrix`] run here too ([`quantize_weighted`]).

// The kernels walk several per-element arrays (values, weights, codes of two super-blocks) with
// one index; iterator chains over four arrays would hide the sequential order that matters here.
#![allow(clippy::needless_range_loop)]

use crate::blocks::{quantize_blocks_ref, BlockFormat, BlockQ4K, BlockQ6K, GgmlType, QK_K};
use crate::convert::{with_src, Dtype, F32};
use crate::kquants::{q4k_pack, q4k_scales, q6k_pack, q6k_scales};
use crate::metrics::x86::LaneAcc256;
use crate::metrics::Lanes;
use crate::simd::x86::load8;
use crate::{QuantError, SrcDtype};
use std::arch::x86_64::*;

/// Quantize whole super-blocks of `ty` (Q4_K or Q6_K).
///
/// # Safety
/// The CPU must support AVX2 and F16C.
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

/// Largest |x| for which `nearest_int(x)` is round-half-to-even.
const NEAREST_LIMIT: f32 = 4_194_303.0;

/// 8×8 transpose: output vector `j` holds element `j` of every input vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// Load `SUB` sub-blocks of `LEN` elements starting at `p` and transpose them: `out[i]` lane
/// `k` is element `i` of sub-block `k`. `SUB` is 8; `LEN` a multiple of 8. Returns whether any
/// value is NaN or infinite.
///
/// # Safety
/// `p` must be valid for `8 * LEN` source elements; AVX2 + F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_transposed<S: Dtype, const LEN: usize>(p: *const u8, out: &mut [__m256; LEN]) -> bool {
    let es = S::SRC.size();
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut amax = _mm256_setzero_si256();
    for q in 0..LEN / 8 {
        let mut r = [_mm256_setzero_ps(); 8];
        for (k, r) in r.iter_mut().enumerate() {
            // SAFETY: element `LEN * k + 8 * q + 7` < `8 * LEN`, inside the caller's range.
            *r = unsafe { load8::<S>(p.add((LEN * k + 8 * q) * es)) };
            amax = _mm256_max_epu32(amax, _mm256_castps_si256(_mm256_and_ps(*r, abs_mask)));
        }
        let t = transpose8(r);
        out[8 * q..8 * q + 8].copy_from_slice(&t);
    }
    // Any |x| bit pattern above f32::MAX's is ±inf or NaN.
    let bad = _mm256_cmpgt_epi32(amax, _mm256_set1_epi32(0x7f7f_ffff));
    _mm256_movemask_epi8(bad) != 0
}

/// `nearest_int` exactly (bit trick), clamped to `[lo, hi]`, as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nearest_int_clamped(x: __m256, lo: i32, hi: i32) -> __m256 {
    let v = _mm256_add_ps(x, _mm256_set1_ps(12_582_912.0));
    let i = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x007f_ffff));
    let i = _mm256_sub_epi32(i, _mm256_set1_epi32(0x0040_0000));
    let i = _mm256_min_epi32(_mm256_max_epi32(i, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
    _mm256_cvtepi32_ps(i)
}

/// Round half to even, then clamp: `nearest_int` where the caller proved |x| ≤ 4194303.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_clamped(x: __m256, lo: __m256, hi: __m256) -> __m256 {
    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    // `max(r, lo)` returns `lo` for r = -0 (like C's int 0, which converts to +0).
    _mm256_min_ps(_mm256_max_ps(r, lo), hi)
}

/// Lanes where `|a| <= limit` fails (NaN included).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn out_of_range(a: __m256) -> __m256 {
    let abs = _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
    _mm256_cmp_ps::<_CMP_NLE_UQ>(abs, _mm256_set1_ps(NEAREST_LIMIT))
}

#[inline]
fn lanes(v: __m256) -> [f32; 8] {
    // SAFETY: __m256 and [f32; 8] have the same size and every bit pattern is valid for both.
    unsafe { std::mem::transmute::<__m256, [f32; 8]>(v) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn from_lanes(a: &[f32; 8]) -> __m256 {
    // SAFETY: reads exactly 8 f32 from a valid array.
    unsafe { _mm256_loadu_ps(a.as_ptr()) }
}

/// Write transposed codes (`l[i]` lane `k` = code of element `len·k + i`, `len` = `l.len()`)
/// into element order at `dst[len·k + i]` for sub-blocks `k` of this group.
#[inline]
fn untranspose(l: &[__m256], dst: &mut [u8]) {
    let len = l.len();
    for (i, v) in l.iter().enumerate() {
        let a = lanes(*v);
        for (k, &c) in a.iter().enumerate() {
            dst[len * k + i] = c as u8;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q4_K

/// The search state of one super-block (eight sub-blocks of 32, one per lane).
struct Q4Search {
    x: [__m256; 32],
    w: [__m256; 32],
    /// Data maximum and minimum (before the clamp of the minimum to ≤ 0).
    max: __m256,
    xmin: __m256,
    sum_w: __m256,
    sum_x: __m256,
    /// Lanes whose values are all equal (`max == min`): codes 0, scale 0.
    eq: __m256,
    /// Current `min` (the C variable: the clamped data minimum, then the winners' minima).
    min: __m256,
    scale: __m256,
    best_error: __m256,
    /// The step that produced the current codes: its inverse scale and the `min` it used.
    win_iscale: __m256,
    win_min: __m256,
    /// Lanes for which the range proof failed.
    bad: __m256,
}

/// The search parameters `(rmin, rdelta, nstep)` of `make_qkx2_quants` as `quantize_row_q4_K_ref`
/// calls it.
pub(crate) const QKX2: (f32, f32, i32) = (-1.0, 0.1, 20);
/// The search parameters of `make_qkx3_quants` as `quantize_row_q4_K_impl` (imatrix) calls it.
pub(crate) const QKX3: (f32, f32, i32) = (-0.9, 0.05, 36);

/// The unweighted Q4_K weights of eight sub-blocks: `sqrt(Σx²/32) + |x|` per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_plain_weights(x: &[__m256; 32]) -> [__m256; 32] {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut sum_x2 = _mm256_setzero_ps();
    for &v in x {
        sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(v, v));
    }
    let av_x = _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps(32.0)));
    let mut w = [_mm256_setzero_ps(); 32];
    for (w, &v) in w.iter_mut().zip(x) {
        *w = _mm256_add_ps(av_x, _mm256_and_ps(v, abs_mask));
    }
    w
}

/// The imatrix Q4_K weights of eight sub-blocks (`quantize_row_q4_K_impl`): `qw·sqrt(σ² + x²)`
/// per element, and each sub-block's weight sum (from 0, left to right).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_imatrix_weights(x: &[__m256; 32], qw: &[__m256; 32], sigma2: __m256) -> ([__m256; 32], __m256) {
    let mut w = [_mm256_setzero_ps(); 32];
    let mut sum = _mm256_setzero_ps();
    for i in 0..32 {
        w[i] = _mm256_mul_ps(qw[i], _mm256_sqrt_ps(_mm256_add_ps(sigma2, _mm256_mul_ps(x[i], x[i]))));
        sum = _mm256_add_ps(sum, w[i]);
    }
    (w, sum)
}

impl Q4Search {
    /// Extrema and sums of `make_qkx_quants`'s first loop, for the given weights.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn new(x: &[__m256; 32], w: [__m256; 32]) -> Q4Search {
        let mut min = x[0];
        let mut max = x[0];
        let mut sum_w = w[0];
        let mut sum_x = _mm256_mul_ps(w[0], x[0]);
        for i in 1..32 {
            // `if (x < min) min = x`: vminps(a, b) is `a < b ? a : b`.
            min = _mm256_min_ps(x[i], min);
            max = _mm256_max_ps(x[i], max);
            sum_w = _mm256_add_ps(sum_w, w[i]);
            sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(w[i], x[i]));
        }
        let zero = _mm256_setzero_ps();
        let xmin = min;
        // `if (min > 0) min = 0` (keeps a -0 minimum, unlike vminps with 0).
        let min = _mm256_blendv_ps(min, zero, _mm256_cmp_ps::<_CMP_GT_OQ>(min, zero));
        let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(max, min);
        Q4Search {
            x: *x,
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
            bad: zero,
        }
    }

    /// `max - min` with all-equal lanes replaced by 1 (their results are overridden at the end),
    /// and `c / (max - min)`; records lanes whose codes could leave `nearest_int`'s exact range.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn iscale(&mut self, c: f32) -> __m256 {
        let range = _mm256_sub_ps(self.max, self.min);
        let range = _mm256_blendv_ps(range, _mm256_set1_ps(1.0), self.eq);
        let iscale = _mm256_div_ps(_mm256_set1_ps(c), range);
        // Every `iscale * (x - min)` lies between these two (x in [xmin, max], monotone ops).
        let lo = _mm256_mul_ps(iscale, _mm256_sub_ps(self.xmin, self.min));
        let hi = _mm256_mul_ps(iscale, range);
        let bad = _mm256_or_ps(out_of_range(lo), out_of_range(hi));
        self.bad = _mm256_or_ps(self.bad, _mm256_andnot_ps(self.eq, bad));
        iscale
    }
}

/// `make_qkx2_quants(32, 15, x, w, L, &min, Laux, rmin, rdelta, nstep, false)` (or
/// `make_qkx3_quants`, the same search with [`QKX3`]) on two super-blocks at once; fills `scale`,
/// `min` (the C `*the_min`, i.e. minus the offset) and the codes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_search(
    s: &mut [Q4Search; 2],
    codes: &mut [[__m256; 32]; 2],
    out_min: &mut [__m256; 2],
    (rmin, rdelta, nstep): (f32, f32, i32),
) {
    let zero = _mm256_setzero_ps();
    let fifteen = _mm256_set1_ps(15.0);
    let mut laux = [[zero; 32]; 2];

    // Initial codes from iscale = 15 / (max - min), scale = 1 / iscale.
    for s in s.iter_mut() {
        let iscale = s.iscale(15.0);
        s.scale = _mm256_div_ps(_mm256_set1_ps(1.0), iscale);
        s.win_iscale = iscale;
        s.win_min = s.min;
    }
    let mut err = [zero; 2];
    for i in 0..32 {
        for b in 0..2 {
            let s = &s[b];
            let l = round_clamped(_mm256_mul_ps(s.win_iscale, _mm256_sub_ps(s.x[i], s.min)), zero, fifteen);
            let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(s.scale, l), s.min), s.x[i]);
            err[b] = _mm256_add_ps(err[b], _mm256_mul_ps(s.w[i], _mm256_mul_ps(diff, diff)));
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
                let l = round_clamped(_mm256_mul_ps(iscale[b], _mm256_sub_ps(s.x[i], s.min)), zero, fifteen);
                laux[b][i] = l;
                let wl = _mm256_mul_ps(s.w[i], l);
                sum_l[b] = _mm256_add_ps(sum_l[b], wl);
                sum_l2[b] = _mm256_add_ps(sum_l2[b], _mm256_mul_ps(wl, l));
                sum_xl[b] = _mm256_add_ps(sum_xl[b], _mm256_mul_ps(wl, s.x[i]));
            }
        }
        let mut this_scale = [zero; 2];
        let mut this_min = [zero; 2];
        let mut dpos = [zero; 2];
        for b in 0..2 {
            let s = &s[b];
            let d = _mm256_sub_ps(_mm256_mul_ps(s.sum_w, sum_l2[b]), _mm256_mul_ps(sum_l[b], sum_l[b]));
            dpos[b] = _mm256_cmp_ps::<_CMP_GT_OQ>(d, zero);
            let sc =
                _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(s.sum_w, sum_xl[b]), _mm256_mul_ps(s.sum_x, sum_l[b])), d);
            let mn =
                _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2[b], s.sum_x), _mm256_mul_ps(sum_l[b], sum_xl[b])), d);
            let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(mn, zero);
            this_min[b] = _mm256_blendv_ps(mn, zero, pos);
            this_scale[b] = _mm256_blendv_ps(sc, _mm256_div_ps(sum_xl[b], sum_l2[b]), pos);
        }
        let mut cur = [zero; 2];
        for i in 0..32 {
            for b in 0..2 {
                let s = &s[b];
                let diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale[b], laux[b][i]), this_min[b]), s.x[i]);
                cur[b] = _mm256_add_ps(cur[b], _mm256_mul_ps(s.w[i], _mm256_mul_ps(diff, diff)));
            }
        }
        for b in 0..2 {
            let s = &mut s[b];
            let take = _mm256_and_ps(dpos[b], _mm256_cmp_ps::<_CMP_LT_OQ>(cur[b], s.best_error));
            s.best_error = _mm256_blendv_ps(s.best_error, cur[b], take);
            s.scale = _mm256_blendv_ps(s.scale, this_scale[b], take);
            s.win_iscale = _mm256_blendv_ps(s.win_iscale, iscale[b], take);
            s.win_min = _mm256_blendv_ps(s.win_min, s.min, take);
            s.min = _mm256_blendv_ps(s.min, this_min[b], take);
        }
    }

    // The winners' codes, recomputed with the winning step's exact operands.
    for b in 0..2 {
        let s = &s[b];
        for i in 0..32 {
            let l = round_clamped(_mm256_mul_ps(s.win_iscale, _mm256_sub_ps(s.x[i], s.win_min)), zero, fifteen);
            codes[b][i] = _mm256_andnot_ps(s.eq, l);
        }
        out_min[b] = _mm256_xor_ps(s.min, _mm256_set1_ps(-0.0));
    }
    for s in s.iter_mut() {
        s.scale = _mm256_andnot_ps(s.eq, s.scale);
    }
}

/// Finish one Q4_K super-block from its search and its header (`q4k_scales` or the imatrix
/// twin): requantized codes, packed.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_finish(s: &Q4Search, codes: &[__m256; 32], header: (BlockQ4K, [f32; 8], [f32; 8]), out: &mut [u8]) {
    let (mut blk, ds, dms) = header;
    let d = from_lanes(&ds);
    let dm = from_lanes(&dms);
    // `if (!d) continue;`: NaN requantizes too.
    let requant = _mm256_cmp_ps::<_CMP_NEQ_UQ>(d, _mm256_setzero_ps());
    let mut l = [_mm256_setzero_ps(); 32];
    for i in 0..32 {
        let q = nearest_int_clamped(_mm256_div_ps(_mm256_add_ps(s.x[i], dm), d), 0, 15);
        l[i] = _mm256_blendv_ps(codes[i], q, requant);
    }
    let mut lb = [0u8; QK_K];
    untranspose(&l, &mut lb);
    q4k_pack(&lb, &mut blk.qs);
    blk.write_bytes(out);
}

/// Q4_K over whole super-blocks, two at a time.
///
/// # Safety
/// AVX2 + F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k<S: Dtype>(input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK_K * src.size();
    let nb = out.len() / 144;
    debug_assert_eq!(input.len(), nb * in_blk);
    let mut i = 0;
    while i < nb {
        // A lone last super-block runs paired with itself.
        let j = if i + 1 < nb { i + 1 } else { i };
        let mut x = [[_mm256_setzero_ps(); 32]; 2];
        for (b, &k) in [i, j].iter().enumerate() {
            let blk = &input[k * in_blk..(k + 1) * in_blk];
            // SAFETY: `blk` holds exactly 256 source elements.
            if unsafe { load_transposed::<S, 32>(blk.as_ptr(), &mut x[b]) } {
                // Non-finite: the scalar path reports the first offending element.
                return quantize_blocks_ref::<BlockQ4K>(src, blk, &mut out[k * 144..(k + 1) * 144], k * QK_K);
            }
        }
        let mut s = [Q4Search::new(&x[0], q4k_plain_weights(&x[0])), Q4Search::new(&x[1], q4k_plain_weights(&x[1]))];
        let mut codes = [[_mm256_setzero_ps(); 32]; 2];
        let mut mins = [_mm256_setzero_ps(); 2];
        q4k_search(&mut s, &mut codes, &mut mins, QKX2);
        let bad = _mm256_movemask_ps(_mm256_or_ps(s[0].bad, s[1].bad)) != 0;
        let end = j + 1;
        if bad {
            quantize_blocks_ref::<BlockQ4K>(
                src,
                &input[i * in_blk..end * in_blk],
                &mut out[i * 144..end * 144],
                i * QK_K,
            )?;
        } else {
            let h0 = q4k_scales(&lanes(s[0].scale), &lanes(mins[0]));
            q4k_finish(&s[0], &codes[0], h0, &mut out[i * 144..(i + 1) * 144]);
            if j != i {
                let h1 = q4k_scales(&lanes(s[1].scale), &lanes(mins[1]));
                q4k_finish(&s[1], &codes[1], h1, &mut out[j * 144..(j + 1) * 144]);
            }
        }
        i = end;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Q6_K

/// `make_qx_quants(16, 32, x, L, 1, qw)` for two groups of eight sub-blocks (one per lane) with
/// weights `w` (`x²` without an imatrix, as the C code's `qw == NULL` branch); returns the scales
/// and fills the codes (`l + 32`, 0..=63).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6k_search(x: &[[__m256; 16]; 2], w: &[[__m256; 16]; 2], codes: &mut [[__m256; 16]; 2]) -> [__m256; 2] {
    let zero = _mm256_setzero_ps();
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let lo = _mm256_set1_ps(-32.0);
    let hi = _mm256_set1_ps(31.0);
    let mut max = [zero; 2];
    let mut small = [zero; 2];
    let mut wx = [[zero; 16]; 2];
    for b in 0..2 {
        let mut amax = zero;
        for i in 0..16 {
            let ax = _mm256_and_ps(x[b][i], abs_mask);
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(ax, amax);
            amax = _mm256_blendv_ps(amax, ax, gt);
            max[b] = _mm256_blendv_ps(max[b], x[b][i], gt);
            wx[b][i] = _mm256_mul_ps(w[b][i], x[b][i]);
        }
        small[b] = _mm256_cmp_ps::<_CMP_LT_OQ>(amax, _mm256_set1_ps(super::GROUP_MAX_EPS));
        // All-zero lanes compute with max = 1 and are overridden at the end. Otherwise
        // |max| >= 1e-15 keeps every |iscale * x| <= ~33: `vroundps` is `nearest_int` there.
        max[b] = _mm256_blendv_ps(max[b], _mm256_set1_ps(1.0), small[b]);
    }

    let sums = |iscale: &[__m256; 2]| {
        let mut sumlx = [zero; 2];
        let mut suml2 = [zero; 2];
        for i in 0..16 {
            for b in 0..2 {
                let l = round_clamped(_mm256_mul_ps(iscale[b], x[b][i]), lo, hi);
                sumlx[b] = _mm256_add_ps(sumlx[b], _mm256_mul_ps(wx[b][i], l));
                suml2[b] = _mm256_add_ps(suml2[b], _mm256_mul_ps(_mm256_mul_ps(w[b][i], l), l));
            }
        }
        (sumlx, suml2)
    };

    let mut win = [zero; 2];
    let mut scale = [zero; 2];
    let mut best = [zero; 2];
    let iscale0 = [_mm256_div_ps(_mm256_set1_ps(-32.0), max[0]), _mm256_div_ps(_mm256_set1_ps(-32.0), max[1])];
    let (sumlx, suml2) = sums(&iscale0);
    for b in 0..2 {
        win[b] = iscale0[b];
        // `suml2 ? sumlx/suml2 : 0` (NaN counts as true).
        let nz = _mm256_cmp_ps::<_CMP_NEQ_UQ>(suml2[b], zero);
        scale[b] = _mm256_and_ps(nz, _mm256_div_ps(sumlx[b], suml2[b]));
        best[b] = _mm256_mul_ps(scale[b], sumlx[b]);
    }
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let c = _mm256_set1_ps(-(32.0f32 + 0.1f32 * is as f32));
        let iscale = [_mm256_div_ps(c, max[0]), _mm256_div_ps(c, max[1])];
        let (sumlx, suml2) = sums(&iscale);
        for b in 0..2 {
            let take = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(suml2[b], zero),
                _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_mul_ps(sumlx[b], sumlx[b]), _mm256_mul_ps(best[b], suml2[b])),
            );
            let sc = _mm256_div_ps(sumlx[b], suml2[b]);
            win[b] = _mm256_blendv_ps(win[b], iscale[b], take);
            scale[b] = _mm256_blendv_ps(scale[b], sc, take);
            best[b] = _mm256_blendv_ps(best[b], _mm256_mul_ps(sc, sumlx[b]), take);
        }
    }
    let offset = _mm256_set1_ps(32.0);
    for b in 0..2 {
        for i in 0..16 {
            let l = _mm256_add_ps(round_clamped(_mm256_mul_ps(win[b], x[b][i]), lo, hi), offset);
            codes[b][i] = _mm256_andnot_ps(small[b], l);
        }
        scale[b] = _mm256_andnot_ps(small[b], scale[b]);
    }
    scale
}

/// Q6_K over whole super-blocks (two groups of eight sub-blocks each).
///
/// # Safety
/// AVX2 + F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k<S: Dtype>(input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK_K * src.size();
    for (k, (blk, ob)) in input.chunks_exact(in_blk).zip(out.chunks_exact_mut(210)).enumerate() {
        let mut x = [[_mm256_setzero_ps(); 16]; 2];
        // SAFETY: `blk` holds 256 elements: two groups of 8 × 16.
        let bad = unsafe {
            let a = load_transposed::<S, 16>(blk.as_ptr(), &mut x[0]);
            let b = load_transposed::<S, 16>(blk.as_ptr().add(128 * src.size()), &mut x[1]);
            a | b
        };
        if bad {
            return quantize_blocks_ref::<BlockQ6K>(src, blk, ob, k * QK_K);
        }
        let mut w = [[_mm256_setzero_ps(); 16]; 2];
        for g in 0..2 {
            for i in 0..16 {
                w[g][i] = _mm256_mul_ps(x[g][i], x[g][i]);
            }
        }
        q6k_finish(&x, &w, ob);
    }
    Ok(())
}

/// Search, scale and requantize one Q6_K super-block (two transposed groups of eight sub-blocks)
/// with weights `w`, and write its 210 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6k_finish(x: &[[__m256; 16]; 2], w: &[[__m256; 16]; 2], ob: &mut [u8]) {
    let mut codes = [[_mm256_setzero_ps(); 16]; 2];
    let sc = q6k_search(x, w, &mut codes);
    let (a, b) = (lanes(sc[0]), lanes(sc[1]));
    let mut scales = [0.0f32; 16];
    scales[..8].copy_from_slice(&a);
    scales[8..].copy_from_slice(&b);
    let Some((mut blk6, ds)) = q6k_scales(&scales) else {
        BlockQ6K::ZERO.write_bytes(ob);
        return;
    };
    let mut lb = [0u8; QK_K];
    for g in 0..2 {
        let d = from_lanes(ds[8 * g..8 * g + 8].try_into().expect("8 scales"));
        let requant = _mm256_cmp_ps::<_CMP_NEQ_UQ>(d, _mm256_setzero_ps());
        let mut l = [_mm256_setzero_ps(); 16];
        for i in 0..16 {
            let q = nearest_int_clamped(_mm256_div_ps(x[g][i], d), -32, 31);
            let q = _mm256_add_ps(q, _mm256_set1_ps(32.0));
            l[i] = _mm256_blendv_ps(codes[g][i], q, requant);
        }
        untranspose(&l, &mut lb[128 * g..128 * g + 128]);
    }
    q6k_pack(&lb, &mut blk6);
    blk6.write_bytes(ob);
}

/// The imatrix-weighted K-quants (`quantize_row_q4_K_impl` / `quantize_row_q6_K_impl`, i.e.
/// [`crate::imatrix::q4k_block`] / [`crate::imatrix::q6k_block`]) on one row: `x` finite f32
/// values (whole super-blocks), `qw` the row's column weights, `out` the row's bytes.
/// Byte-identical to the scalar functions, which take super-blocks the range proof rejects.
///
/// # Safety
/// The CPU must support AVX2 and F16C; `ty` is Q4_K or Q6_K; `x.len() == qw.len()`, a multiple
/// of 256; `out` holds exactly the row's super-blocks.
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

/// Load 256 f32 values as eight transposed sub-blocks of 32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_f32_32(v: &[f32]) -> [__m256; 32] {
    assert!(v.len() >= QK_K);
    let mut t = [_mm256_setzero_ps(); 32];
    // SAFETY: `v` holds at least 256 f32 (asserted).
    unsafe { load_transposed::<F32, 32>(v.as_ptr().cast(), &mut t) };
    t
}

/// The imatrix search state of one super-block and its sub-blocks' weight sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_weighted_state(xs: &[f32], ws: &[f32]) -> (Q4Search, __m256) {
    let xt = load_f32_32(xs);
    let qt = load_f32_32(ws);
    let sigma2 = _mm256_set1_ps(crate::imatrix::q4k_sigma2(xs));
    let (w, sw) = q4k_imatrix_weights(&xt, &qt, sigma2);
    (Q4Search::new(&xt, w), sw)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_weighted(x: &[f32], qw: &[f32], out: &mut [u8]) {
    let nb = out.len() / 144;
    let mut i = 0;
    while i < nb {
        let j = if i + 1 < nb { i + 1 } else { i };
        let (s0, sw0) = q4k_weighted_state(&x[i * QK_K..(i + 1) * QK_K], &qw[i * QK_K..(i + 1) * QK_K]);
        let (s1, sw1) = q4k_weighted_state(&x[j * QK_K..(j + 1) * QK_K], &qw[j * QK_K..(j + 1) * QK_K]);
        let sw = [sw0, sw1];
        let mut st = [s0, s1];
        let mut codes = [[_mm256_setzero_ps(); 32]; 2];
        let mut mins = [_mm256_setzero_ps(); 2];
        q4k_search(&mut st, &mut codes, &mut mins, QKX3);
        let bad = _mm256_movemask_ps(_mm256_or_ps(st[0].bad, st[1].bad)) != 0;
        for (b, k) in [i, j].into_iter().enumerate() {
            if b == 1 && j == i {
                break;
            }
            let ob = &mut out[k * 144..(k + 1) * 144];
            if bad {
                let xs = x[k * QK_K..(k + 1) * QK_K].try_into().expect("256");
                let ws = qw[k * QK_K..(k + 1) * QK_K].try_into().expect("256");
                crate::imatrix::q4k_block(xs, ws).write_bytes(ob);
            } else {
                let h = crate::imatrix::q4k_weighted_scales(&lanes(st[b].scale), &lanes(mins[b]), &lanes(sw[b]));
                q4k_finish(&st[b], &codes[b], h, ob);
            }
        }
        i = j + 1;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q6k_weighted(x: &[f32], qw: &[f32], out: &mut [u8]) {
    for ((xs, ws), ob) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.chunks_exact_mut(210)) {
        let mut xt = [[_mm256_setzero_ps(); 16]; 2];
        let mut wt = [[_mm256_setzero_ps(); 16]; 2];
        for g in 0..2 {
            // SAFETY: `xs` and `ws` hold 256 f32: two groups of 8 × 16.
            unsafe {
                load_transposed::<F32, 16>(xs.as_ptr().add(128 * g).cast(), &mut xt[g]);
                load_transposed::<F32, 16>(ws.as_ptr().add(128 * g).cast(), &mut wt[g]);
            }
        }
        q6k_finish(&xt, &wt, ob);
    }
}

/// Error statistics of K-quant super-blocks (Q4_K, Q6_K) against their source, in the lane order
/// of [`crate::metrics::Lanes`] (element `j` in lane `j % 16`, in element order) exactly as its
/// scalar `add`: bit-identical sums. The super-block is dequantized by the scalar
/// [`BlockFormat::dequantize`] (the definition of the reconstruction); only the f64
/// accumulation is vectorised.
///
/// Why: the scalar f64 pass was 17% of an end-to-end Q4_K_M run's CPU time (perf, 1.4 GB bf16).
///
/// # Safety
/// The CPU must support AVX2 and F16C; `ty` is Q4_K or Q6_K, `out` holds the quantized
/// super-blocks of `input` (whole super-blocks), `lanes.count` a multiple of 16.
pub(crate) unsafe fn stats<B: BlockFormat>(src: SrcDtype, input: &[u8], out: &[u8], lanes: &mut Lanes) {
    // SAFETY: the caller guarantees the features.
    unsafe { with_src!(src, S => stats_impl::<S, B>(input, out, lanes)) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn stats_impl<S: Dtype, B: BlockFormat>(input: &[u8], out: &[u8], lanes: &mut Lanes) {
    let esz = S::SRC.size();
    let bs = B::BYTES;
    debug_assert_eq!(lanes.count % 8, 0);
    let mut acc = LaneAcc256::load(lanes);
    let mut y = [0.0f32; QK_K];
    let mut n = 0u64;
    for (ib, ob) in input.chunks_exact(QK_K * esz).zip(out.chunks_exact(bs)) {
        B::read_bytes(ob).dequantize(&mut y);
        for v in 0..QK_K / 8 {
            // SAFETY: `ib` holds 256 source elements and `y` 256 values; unaligned loads.
            let (xv, yv) =
                unsafe { (load8::<S>(ib.as_ptr().add(8 * v * esz)), _mm256_loadu_ps(y.as_ptr().add(8 * v))) };
            // Vector v holds elements 8v..8v+8, in lanes 0..8 (element j in lane j % 8).
            acc.add8(xv, yv);
        }
        n += QK_K as u64;
    }
    acc.store(lanes);
    lanes.count += n;
}
