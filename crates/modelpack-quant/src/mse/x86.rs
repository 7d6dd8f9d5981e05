//! AVX2 and AVX-512 twins of [`super::eval_scalar`]: 16 candidates side by side (two 8-lane
//! registers, or one 16-lane register), the block's elements broadcast one at a time in order.
//! Each lane performs exactly the scalar twin's f32 operations in its order (no FMA; `vmaxps` /
//! `vminps` operand order as written there; round-half-even), so the sums are bit-identical.

use super::{Cands, Sums, L};
use crate::convert::Dtype;
use crate::simd::x86::{round16, round8};
use std::arch::x86_64::*;

const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// AVX2 evaluation of 16 candidates (lanes 0–7 in the first register, 8–15 in the second).
///
/// # Safety
/// AVX2 and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn eval256<E: Dtype, const ERR: bool, const ASYM: bool>(x: &[f32], c: &Cands, s: &mut Sums) {
    const { assert!(L == 16) };
    // SAFETY: every array is 16 f32 long; offsets 0 and 8 leave 8 valid lanes.
    let ld = |a: &[f32; L], h: usize| unsafe { _mm256_loadu_ps(a.as_ptr().add(8 * h)) };
    let (id0, id1) = (ld(&c.id, 0), ld(&c.id, 1));
    let (d0, d1) = (ld(&c.d, 0), ld(&c.d, 1));
    let (m0, m1) = (ld(&c.m, 0), ld(&c.m, 1));
    let (lo0, lo1) = (ld(&c.lo, 0), ld(&c.lo, 1));
    let (hi0, hi1) = (ld(&c.hi, 0), ld(&c.hi, 1));
    let z = _mm256_setzero_ps();
    let (mut e0, mut e1, mut xu0, mut xu1, mut uu0, mut uu1, mut u0s, mut u1s) = (z, z, z, z, z, z, z, z);
    for &xj in x {
        let xb = _mm256_set1_ps(xj);
        let (t0, t1) = if ASYM {
            (_mm256_mul_ps(_mm256_sub_ps(xb, m0), id0), _mm256_mul_ps(_mm256_sub_ps(xb, m1), id1))
        } else {
            (_mm256_mul_ps(xb, id0), _mm256_mul_ps(xb, id1))
        };
        let u0 = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps::<RNE>(t0), lo0), hi0);
        let u1 = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps::<RNE>(t1), lo1), hi1);
        xu0 = _mm256_add_ps(xu0, _mm256_mul_ps(xb, u0));
        xu1 = _mm256_add_ps(xu1, _mm256_mul_ps(xb, u1));
        uu0 = _mm256_add_ps(uu0, _mm256_mul_ps(u0, u0));
        uu1 = _mm256_add_ps(uu1, _mm256_mul_ps(u1, u1));
        if ASYM {
            u0s = _mm256_add_ps(u0s, u0);
            u1s = _mm256_add_ps(u1s, u1);
        }
        if ERR {
            let (y0, y1) = if ASYM {
                (
                    round8::<E>(_mm256_add_ps(_mm256_mul_ps(d0, u0), m0)),
                    round8::<E>(_mm256_add_ps(_mm256_mul_ps(d1, u1), m1)),
                )
            } else {
                (round8::<E>(_mm256_mul_ps(d0, u0)), round8::<E>(_mm256_mul_ps(d1, u1)))
            };
            let (q0, q1) = (_mm256_sub_ps(xb, y0), _mm256_sub_ps(xb, y1));
            e0 = _mm256_add_ps(e0, _mm256_mul_ps(q0, q0));
            e1 = _mm256_add_ps(e1, _mm256_mul_ps(q1, q1));
        }
    }
    // SAFETY: as for the loads.
    let st = |a: &mut [f32; L], v0: __m256, v1: __m256| unsafe {
        _mm256_storeu_ps(a.as_mut_ptr(), v0);
        _mm256_storeu_ps(a.as_mut_ptr().add(8), v1);
    };
    st(&mut s.err, e0, e1);
    st(&mut s.sxu, xu0, xu1);
    st(&mut s.suu, uu0, uu1);
    st(&mut s.su, u0s, u1s);
}

/// AVX-512 evaluation of 16 candidates (one register).
///
/// # Safety
/// AVX-512 F/BW/VL and F16C must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(super) unsafe fn eval512<E: Dtype, const ERR: bool, const ASYM: bool>(x: &[f32], c: &Cands, s: &mut Sums) {
    const { assert!(L == 16) };
    // SAFETY: every array is 16 f32 long.
    let ld = |a: &[f32; L]| unsafe { _mm512_loadu_ps(a.as_ptr()) };
    let (id, d, m, lo, hi) = (ld(&c.id), ld(&c.d), ld(&c.m), ld(&c.lo), ld(&c.hi));
    let z = _mm512_setzero_ps();
    let (mut e, mut xu, mut uu, mut us) = (z, z, z, z);
    for &xj in x {
        let xb = _mm512_set1_ps(xj);
        let t = if ASYM { _mm512_mul_ps(_mm512_sub_ps(xb, m), id) } else { _mm512_mul_ps(xb, id) };
        let u = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps::<RNE>(t), lo), hi);
        xu = _mm512_add_ps(xu, _mm512_mul_ps(xb, u));
        uu = _mm512_add_ps(uu, _mm512_mul_ps(u, u));
        if ASYM {
            us = _mm512_add_ps(us, u);
        }
        if ERR {
            let y = if ASYM {
                round16::<E>(_mm512_add_ps(_mm512_mul_ps(d, u), m))
            } else {
                round16::<E>(_mm512_mul_ps(d, u))
            };
            let q = _mm512_sub_ps(xb, y);
            e = _mm512_add_ps(e, _mm512_mul_ps(q, q));
        }
    }
    // SAFETY: as for the loads.
    let st = |a: &mut [f32; L], v: __m512| unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) };
    st(&mut s.err, e);
    st(&mut s.sxu, xu);
    st(&mut s.suu, uu);
    st(&mut s.su, us);
}

/// Sixteen GGUF blocks searched side by side by [`search_sym_gguf16`]: element `j` of block `b`
/// is `x[j][b]` (blocks transposed so one register holds one element of every block).
pub(super) type Blocks16 = [[f32; 16]; super::QK];

/// What [`search_sym_gguf16`] found per block: the stored scale, its exact error, which lanes
/// have a result (`ok` bit `b`; the others are `None` in the scalar search), which of those beat
/// the RTN bytes (`win`), and the winners' codes (`codes[j][b]`).
#[derive(Debug, Clone, Copy)]
pub(super) struct SymFound {
    pub d: [f32; 16],
    pub err: [f32; 16],
    #[cfg_attr(not(test), allow(dead_code))] // the unit test compares it with the scalar search
    pub ok: u16,
    pub win: u16,
    pub codes: [[i32; 16]; super::QK],
}

/// `|v|` (clears the sign bit).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn abs512(v: __m512) -> __m512 {
    _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fff_ffff)))
}

/// [`super::usable`] per lane: finite and normal.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn usable512(d: __m512) -> __mmask16 {
    let a = _mm512_and_si512(_mm512_castps_si512(d), _mm512_set1_epi32(0x7fff_ffff));
    _mm512_cmplt_epu32_mask(_mm512_sub_epi32(a, _mm512_set1_epi32(0x0080_0000)), _mm512_set1_epi32(0x7f00_0000))
}

/// `f32::is_finite` per lane: `|v| < inf` (false for NaN).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn finite512(v: __m512) -> __mmask16 {
    _mm512_cmp_ps_mask::<_CMP_LT_OQ>(abs512(v), _mm512_set1_ps(f32::INFINITY))
}

/// [`super::Store::step`] for f16 per lane, on an f16-representable `v` (its exact form: the f16
/// magnitude moved by `k` and clamped to the finite non-zero values, sign kept).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn step_f16_512(v: __m512, k: i32) -> __m512 {
    if k == 0 {
        return v;
    }
    let h = _mm512_cvtepu16_epi32(_mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v));
    let sign = _mm512_and_si512(h, _mm512_set1_epi32(0x8000));
    let mag = _mm512_add_epi32(_mm512_and_si512(h, _mm512_set1_epi32(0x7fff)), _mm512_set1_epi32(k));
    let mag = _mm512_min_epi32(_mm512_max_epi32(mag, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7bff));
    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_or_si512(sign, mag)))
}

/// Per-lane sums of one candidate over a block, in element order.
#[derive(Clone, Copy)]
struct Acc {
    err: __m512,
    sxu: __m512,
    suu: __m512,
}

/// Evaluate `N` candidates (inverse step `id[n]`, scale `d[n]`, per lane) on transposed blocks:
/// `N` independent sequential sums per lane, interleaved to hide the adds' latency. Each lane
/// does [`super::eval_scalar`]'s operations for `E = f32`, `ASYM = false`; with `FMA` each
/// product is added with one rounding instead (`super::sums_f32`, the `mse-fast` search).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn eval_n<const N: usize, const SUMS: bool, const ERR: bool, const FMA: bool>(
    x: &[__m512; 32],
    id: &[__m512; N],
    d: &[__m512; N],
    lo: __m512,
    hi: __m512,
) -> [Acc; N] {
    let z = _mm512_setzero_ps();
    let mut a = [Acc { err: z, sxu: z, suu: z }; N];
    for &xj in x {
        for n in 0..N {
            let u = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps::<RNE>(_mm512_mul_ps(xj, id[n])), lo), hi);
            if SUMS && FMA {
                a[n].sxu = _mm512_fmadd_ps(xj, u, a[n].sxu);
                a[n].suu = _mm512_fmadd_ps(u, u, a[n].suu);
            } else if SUMS {
                a[n].sxu = _mm512_add_ps(a[n].sxu, _mm512_mul_ps(xj, u));
                a[n].suu = _mm512_add_ps(a[n].suu, _mm512_mul_ps(u, u));
            }
            if ERR {
                let q = _mm512_sub_ps(xj, _mm512_mul_ps(d[n], u));
                a[n].err =
                    if FMA { _mm512_fmadd_ps(q, q, a[n].err) } else { _mm512_add_ps(a[n].err, _mm512_mul_ps(q, q)) };
            }
        }
    }
    a
}

/// The running arg-min of a refinement round: first smallest finite error among valid lanes.
struct Best {
    err: __m512,
    d: __m512,
    sxu: __m512,
    suu: __m512,
    have: __mmask16,
}

/// Offer candidate results in candidate order (ties keep the earlier one, as
/// [`super::argmin`] does).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn offer(b: &mut Best, valid: __mmask16, d: __m512, a: &Acc) {
    let c = valid & finite512(a.err) & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a.err, b.err);
    b.err = _mm512_mask_blend_ps(c, b.err, a.err);
    b.d = _mm512_mask_blend_ps(c, b.d, d);
    b.have |= c;
}

/// Run 16 refinement candidates `d[k]` (valid where `valid[k]`) and return their arg-min; with
/// `SUMS`, also the winner's `Σxu` and `Σu²` (a second pass over its codes only: the same
/// sequential sums the scalar search takes from all sixteen).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn refine16<const SUMS: bool>(
    x: &[__m512; 32],
    d: &[__m512; 16],
    valid: &[__mmask16; 16],
    lo: __m512,
    hi: __m512,
) -> Best {
    let z = _mm512_setzero_ps();
    let mut best = Best { err: _mm512_set1_ps(f32::INFINITY), d: z, sxu: z, suu: z, have: 0 };
    let one = _mm512_set1_ps(1.0);
    for q in 0..4 {
        let mut dd = [z; 4];
        let mut id = [z; 4];
        for n in 0..4 {
            dd[n] = d[4 * q + n];
            id[n] = _mm512_div_ps(one, dd[n]);
        }
        let a = eval_n::<4, false, true, false>(x, &id, &dd, lo, hi);
        for n in 0..4 {
            offer(&mut best, valid[4 * q + n], dd[n], &a[n]);
        }
    }
    if SUMS {
        let [a] = eval_n::<1, true, false, false>(x, &[_mm512_div_ps(one, best.d)], &[best.d], lo, hi);
        best.sxu = a.sxu;
        best.suu = a.suu;
    }
    best
}

/// [`super::search_sym`] for GGUF blocks (scale stored as f16, elements compared in f32, scale
/// sign free) on sixteen blocks at once, one block per lane. Every lane performs the scalar
/// search's f32 operations in its order and every data-dependent choice is a per-lane mask, so
/// each lane's result equals `search_sym(level, ScaleDtype::F32, Store::F16, x, lo, hi, t_rtn,
/// flip, false)` bit for bit (`tests/mse_props.rs`; `super::tests`). Why: one block per call
/// left the search latency-bound on one accumulator chain and its scalar driver (set-up, f16
/// rounding, arg-mins) dominant; across blocks both vectorise.
///
/// # Safety
/// AVX-512 F/BW/VL and F16C must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
/// `yt` holds the RTN bytes' dequantized values, transposed like `xt`: a lane wins (as in
/// `super::gguf_finish`) when its error is strictly below `Σ (x − y)²` summed in element order.
pub(super) unsafe fn search_sym_gguf16(
    xt: &Blocks16,
    yt: &Blocks16,
    lo: f32,
    hi: f32,
    t_rtn: f32,
    flip: Option<f32>,
) -> SymFound {
    let z = _mm512_setzero_ps();
    let mut x = [z; 32];
    for j in 0..32 {
        // SAFETY: each row of `xt` is 16 f32.
        x[j] = unsafe { _mm512_loadu_ps(xt[j].as_ptr()) };
    }
    let (lov, hiv) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    // The element of largest |x| (first one on ties).
    let mut mx = x[0];
    for &v in &x {
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(abs512(v), abs512(mx));
        mx = _mm512_mask_blend_ps(gt, mx, v);
    }
    let mut live = finite512(mx) & _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(mx, z);
    let inv = _mm512_div_ps(_mm512_set1_ps(1.0), mx);
    // Grid: 32 mappings; least-squares scale rounded to f16; scored.
    let mut scale = [z; 2 * L];
    let mut score = [z; 2 * L];
    let mut valid = [0 as __mmask16; 2 * L];
    let two = _mm512_set1_ps(2.0);
    for q in 0..(2 * L) / 4 {
        let mut id = [z; 4];
        for n in 0..4 {
            let g = 4 * q + n;
            let t = match flip {
                Some(f) if g >= 2 * L - 6 => f * super::SYM_GRID2[(g - (2 * L - 6)) * 3 + 6],
                _ => t_rtn * super::SYM_GRID2[g],
            };
            id[n] = _mm512_mul_ps(_mm512_set1_ps(t), inv);
        }
        let a = eval_n::<4, true, false, false>(&x, &id, &id, lov, hiv);
        for n in 0..4 {
            let g = 4 * q + n;
            let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a[n].suu, z);
            let d = round16::<crate::convert::F16>(_mm512_div_ps(a[n].sxu, a[n].suu));
            valid[g] = live & pos & usable512(d);
            scale[g] = d;
            score[g] = _mm512_mul_ps(d, _mm512_sub_ps(_mm512_mul_ps(d, a[n].suu), _mm512_mul_ps(two, a[n].sxu)));
        }
    }
    // The best grid scale, and the best one different from it.
    let inf = _mm512_set1_ps(f32::INFINITY);
    let (mut b0, mut s0, mut have0) = (inf, z, 0 as __mmask16);
    for g in 0..2 * L {
        let c = valid[g] & finite512(score[g]) & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(score[g], b0);
        b0 = _mm512_mask_blend_ps(c, b0, score[g]);
        s0 = _mm512_mask_blend_ps(c, s0, scale[g]);
        have0 |= c;
    }
    live &= have0;
    let (mut b1, mut s1) = (inf, s0);
    for g in 0..2 * L {
        let c = valid[g]
            & finite512(score[g])
            & _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(scale[g], s0)
            & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(score[g], b1);
        b1 = _mm512_mask_blend_ps(c, b1, score[g]);
        s1 = _mm512_mask_blend_ps(c, s1, scale[g]);
    }
    // Refine: -5..+5 steps of the best, -2..+2 of the second best.
    let mut d = [z; 16];
    let mut v = [0 as __mmask16; 16];
    for k in 0..16 {
        d[k] = if k < 11 { step_f16_512(s0, k as i32 - 5) } else { step_f16_512(s1, k as i32 - 13) };
        v[k] = usable512(d[k]);
    }
    let mut best = refine16::<true>(&x, &d, &v, lov, hiv);
    live &= best.have;
    // Second round around the least-squares scale of the best codes, where that differs.
    let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(best.suu, z);
    let d2 = round16::<crate::convert::F16>(_mm512_div_ps(best.sxu, best.suu));
    let again = live & pos & usable512(d2) & _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(d2, best.d);
    if again != 0 {
        for k in 0..16 {
            d[k] = step_f16_512(d2, k as i32 - 7);
            v[k] = usable512(d[k]) & again;
        }
        let b2 = refine16::<false>(&x, &d, &v, lov, hiv);
        let win = b2.have & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(b2.err, best.err);
        best.err = _mm512_mask_blend_ps(win, best.err, b2.err);
        best.d = _mm512_mask_blend_ps(win, best.d, b2.d);
    }
    // The RTN bytes' error, and the winners' codes (the evaluation's formula, so the bytes
    // decode to the error just compared).
    let mut rerr = z;
    for j in 0..32 {
        // SAFETY: each row of `yt` is 16 f32.
        let q = _mm512_sub_ps(x[j], unsafe { _mm512_loadu_ps(yt[j].as_ptr()) });
        rerr = _mm512_add_ps(rerr, _mm512_mul_ps(q, q));
    }
    let win = live & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(best.err, rerr);
    let mut out = SymFound { d: [0.0; 16], err: [0.0; 16], ok: live, win, codes: [[0; 16]; super::QK] };
    let id = _mm512_div_ps(_mm512_set1_ps(1.0), best.d);
    for j in 0..32 {
        let u = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps::<RNE>(_mm512_mul_ps(x[j], id)), lov), hiv);
        // SAFETY: each row of `codes` is 16 i32.
        unsafe { _mm512_storeu_si512(out.codes[j].as_mut_ptr().cast(), _mm512_cvtps_epi32(u)) };
    }
    // SAFETY: both arrays are 16 f32 long.
    unsafe {
        _mm512_storeu_ps(out.d.as_mut_ptr(), best.d);
        _mm512_storeu_ps(out.err.as_mut_ptr(), best.err);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The same search on eight blocks with AVX2 (masks are all-ones lanes instead of mask registers).

/// Eight GGUF blocks for [`search_sym_gguf8`]: element `j` of block `b` is `x[j][b]`.
pub(super) type Blocks8 = [[f32; 8]; super::QK];

/// What [`search_sym_gguf8`] found: as [`SymFound`], for eight lanes.
#[derive(Debug, Clone, Copy)]
pub(super) struct SymFound8 {
    pub d: [f32; 8],
    pub err: [f32; 8],
    #[cfg_attr(not(test), allow(dead_code))] // the unit test compares it with the scalar search
    pub ok: u8,
    pub win: u8,
    pub codes: [[i32; 8]; super::QK],
}

/// All-ones lanes where `a < b` (ordered).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lt8(a: __m256, b: __m256) -> __m256 {
    _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)
}

/// `|v|`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn abs8(v: __m256) -> __m256 {
    _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fff_ffff)))
}

/// [`super::usable`] per lane (all-ones where finite and normal).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn usable8(d: __m256) -> __m256 {
    let a = _mm256_and_si256(_mm256_castps_si256(d), _mm256_set1_epi32(0x7fff_ffff));
    let ge = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x007f_ffff));
    let lt = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x7f80_0000), a);
    _mm256_castsi256_ps(_mm256_and_si256(ge, lt))
}

/// `f32::is_finite` per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn finite8(v: __m256) -> __m256 {
    lt8(abs8(v), _mm256_set1_ps(f32::INFINITY))
}

/// [`step_f16_512`] for eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn step_f16_8(v: __m256, k: i32) -> __m256 {
    if k == 0 {
        return v;
    }
    let h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
    let sign = _mm256_and_si256(h, _mm256_set1_epi32(0x8000));
    let mag = _mm256_add_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x7fff)), _mm256_set1_epi32(k));
    let mag = _mm256_min_epi32(_mm256_max_epi32(mag, _mm256_set1_epi32(1)), _mm256_set1_epi32(0x7bff));
    let r = _mm256_or_si256(sign, mag);
    // Every lane is ≤ 0xffff: the unsigned saturating pack is exact.
    let p = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
    _mm256_cvtph_ps(p)
}

/// [`Acc`] for eight lanes.
#[derive(Clone, Copy)]
struct Acc8 {
    err: __m256,
    sxu: __m256,
    suu: __m256,
}

/// [`eval_n`] for eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn eval_n8<const N: usize, const SUMS: bool, const ERR: bool, const FMA: bool>(
    x: &[__m256; 32],
    id: &[__m256; N],
    d: &[__m256; N],
    lo: __m256,
    hi: __m256,
) -> [Acc8; N] {
    let z = _mm256_setzero_ps();
    let mut a = [Acc8 { err: z, sxu: z, suu: z }; N];
    for &xj in x {
        for n in 0..N {
            let u = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps::<RNE>(_mm256_mul_ps(xj, id[n])), lo), hi);
            if SUMS && FMA {
                a[n].sxu = _mm256_fmadd_ps(xj, u, a[n].sxu);
                a[n].suu = _mm256_fmadd_ps(u, u, a[n].suu);
            } else if SUMS {
                a[n].sxu = _mm256_add_ps(a[n].sxu, _mm256_mul_ps(xj, u));
                a[n].suu = _mm256_add_ps(a[n].suu, _mm256_mul_ps(u, u));
            }
            if ERR {
                let q = _mm256_sub_ps(xj, _mm256_mul_ps(d[n], u));
                a[n].err =
                    if FMA { _mm256_fmadd_ps(q, q, a[n].err) } else { _mm256_add_ps(a[n].err, _mm256_mul_ps(q, q)) };
            }
        }
    }
    a
}

/// [`Best`] for eight lanes (`have` all-ones where a candidate was taken).
struct Best8 {
    err: __m256,
    d: __m256,
    sxu: __m256,
    suu: __m256,
    have: __m256,
}

/// [`refine16`] for eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn refine16_8<const SUMS: bool>(
    x: &[__m256; 32],
    d: &[__m256; 16],
    valid: &[__m256; 16],
    lo: __m256,
    hi: __m256,
) -> Best8 {
    let z = _mm256_setzero_ps();
    let mut b = Best8 { err: _mm256_set1_ps(f32::INFINITY), d: z, sxu: z, suu: z, have: z };
    let one = _mm256_set1_ps(1.0);
    for q in 0..4 {
        let mut dd = [z; 4];
        let mut id = [z; 4];
        for n in 0..4 {
            dd[n] = d[4 * q + n];
            id[n] = _mm256_div_ps(one, dd[n]);
        }
        let a = eval_n8::<4, false, true, false>(x, &id, &dd, lo, hi);
        for n in 0..4 {
            let c = _mm256_and_ps(_mm256_and_ps(valid[4 * q + n], finite8(a[n].err)), lt8(a[n].err, b.err));
            b.err = _mm256_blendv_ps(b.err, a[n].err, c);
            b.d = _mm256_blendv_ps(b.d, dd[n], c);
            b.have = _mm256_or_ps(b.have, c);
        }
    }
    if SUMS {
        let [a] = eval_n8::<1, true, false, false>(x, &[_mm256_div_ps(one, b.d)], &[b.d], lo, hi);
        b.sxu = a.sxu;
        b.suu = a.suu;
    }
    b
}

/// [`search_sym_gguf16`] on eight blocks with AVX2: the same per-lane operations and choices.
///
/// # Safety
/// AVX2 and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn search_sym_gguf8(
    xt: &Blocks8,
    yt: &Blocks8,
    lo: f32,
    hi: f32,
    t_rtn: f32,
    flip: Option<f32>,
) -> SymFound8 {
    let z = _mm256_setzero_ps();
    let mut x = [z; 32];
    for j in 0..32 {
        // SAFETY: each row of `xt` is 8 f32.
        x[j] = unsafe { _mm256_loadu_ps(xt[j].as_ptr()) };
    }
    let (lov, hiv) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    let mut mx = x[0];
    for &v in &x {
        mx = _mm256_blendv_ps(mx, v, _mm256_cmp_ps::<_CMP_GT_OQ>(abs8(v), abs8(mx)));
    }
    let mut live = _mm256_and_ps(finite8(mx), _mm256_cmp_ps::<_CMP_NEQ_UQ>(mx, z));
    let inv = _mm256_div_ps(_mm256_set1_ps(1.0), mx);
    let mut scale = [z; 2 * L];
    let mut score = [z; 2 * L];
    let mut valid = [z; 2 * L];
    let two = _mm256_set1_ps(2.0);
    for q in 0..(2 * L) / 4 {
        let mut id = [z; 4];
        for n in 0..4 {
            let g = 4 * q + n;
            let t = match flip {
                Some(f) if g >= 2 * L - 6 => f * super::SYM_GRID2[(g - (2 * L - 6)) * 3 + 6],
                _ => t_rtn * super::SYM_GRID2[g],
            };
            id[n] = _mm256_mul_ps(_mm256_set1_ps(t), inv);
        }
        let a = eval_n8::<4, true, false, false>(&x, &id, &id, lov, hiv);
        for n in 0..4 {
            let g = 4 * q + n;
            let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(a[n].suu, z);
            let d = round8::<crate::convert::F16>(_mm256_div_ps(a[n].sxu, a[n].suu));
            valid[g] = _mm256_and_ps(_mm256_and_ps(live, pos), usable8(d));
            scale[g] = d;
            score[g] = _mm256_mul_ps(d, _mm256_sub_ps(_mm256_mul_ps(d, a[n].suu), _mm256_mul_ps(two, a[n].sxu)));
        }
    }
    let inf = _mm256_set1_ps(f32::INFINITY);
    let (mut b0, mut s0, mut have0) = (inf, z, z);
    for g in 0..2 * L {
        let c = _mm256_and_ps(_mm256_and_ps(valid[g], finite8(score[g])), lt8(score[g], b0));
        b0 = _mm256_blendv_ps(b0, score[g], c);
        s0 = _mm256_blendv_ps(s0, scale[g], c);
        have0 = _mm256_or_ps(have0, c);
    }
    live = _mm256_and_ps(live, have0);
    let (mut b1, mut s1) = (inf, s0);
    for g in 0..2 * L {
        let c = _mm256_and_ps(
            _mm256_and_ps(valid[g], finite8(score[g])),
            _mm256_and_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(scale[g], s0), lt8(score[g], b1)),
        );
        b1 = _mm256_blendv_ps(b1, score[g], c);
        s1 = _mm256_blendv_ps(s1, scale[g], c);
    }
    let mut d = [z; 16];
    let mut v = [z; 16];
    for k in 0..16 {
        d[k] = if k < 11 { step_f16_8(s0, k as i32 - 5) } else { step_f16_8(s1, k as i32 - 13) };
        v[k] = usable8(d[k]);
    }
    let mut best = refine16_8::<true>(&x, &d, &v, lov, hiv);
    live = _mm256_and_ps(live, best.have);
    let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(best.suu, z);
    let d2 = round8::<crate::convert::F16>(_mm256_div_ps(best.sxu, best.suu));
    let again =
        _mm256_and_ps(_mm256_and_ps(live, pos), _mm256_and_ps(usable8(d2), _mm256_cmp_ps::<_CMP_NEQ_UQ>(d2, best.d)));
    if _mm256_movemask_ps(again) != 0 {
        for k in 0..16 {
            d[k] = step_f16_8(d2, k as i32 - 7);
            v[k] = _mm256_and_ps(usable8(d[k]), again);
        }
        let b2 = refine16_8::<false>(&x, &d, &v, lov, hiv);
        let win = _mm256_and_ps(b2.have, lt8(b2.err, best.err));
        best.err = _mm256_blendv_ps(best.err, b2.err, win);
        best.d = _mm256_blendv_ps(best.d, b2.d, win);
    }
    let mut rerr = z;
    for j in 0..32 {
        // SAFETY: each row of `yt` is 8 f32.
        let q = _mm256_sub_ps(x[j], unsafe { _mm256_loadu_ps(yt[j].as_ptr()) });
        rerr = _mm256_add_ps(rerr, _mm256_mul_ps(q, q));
    }
    let win = _mm256_and_ps(live, lt8(best.err, rerr));
    let mut out = SymFound8 {
        d: [0.0; 8],
        err: [0.0; 8],
        ok: _mm256_movemask_ps(live) as u8,
        win: _mm256_movemask_ps(win) as u8,
        codes: [[0; 8]; super::QK],
    };
    let id = _mm256_div_ps(_mm256_set1_ps(1.0), best.d);
    for j in 0..32 {
        let u = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps::<RNE>(_mm256_mul_ps(x[j], id)), lov), hiv);
        // SAFETY: each row of `codes` is 8 i32.
        unsafe { _mm256_storeu_si256(out.codes[j].as_mut_ptr().cast(), _mm256_cvtps_epi32(u)) };
    }
    // SAFETY: both arrays are 8 f32 long.
    unsafe {
        _mm256_storeu_ps(out.d.as_mut_ptr(), best.d);
        _mm256_storeu_ps(out.err.as_mut_ptr(), best.err);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// `mse-fast`: the short grid and closed-form refinement of `super::search_sym_fast`, batched.

/// [`super::search_sym_fast`] on sixteen GGUF blocks at once, one block per lane: each lane
/// performs the scalar search's f32 operations in its order, every choice a per-lane mask, so
/// each lane's `d`, `err`, `ok` equal the scalar search's result bit for bit (`super::tests`,
/// `tests/mse_props.rs`). `yt` as in [`search_sym_gguf16`] (the RTN bytes' values: `win` marks
/// the lanes whose error is strictly below theirs).
///
/// # Safety
/// AVX-512 F/BW/VL and F16C must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(super) unsafe fn search_fast16(
    xt: &Blocks16,
    yt: &Blocks16,
    lo: f32,
    hi: f32,
    t_rtn: f32,
    flip: Option<f32>,
) -> SymFound {
    const G: usize = super::FAST_G + super::FAST_F;
    let z = _mm512_setzero_ps();
    let mut x = [z; 32];
    for j in 0..32 {
        // SAFETY: each row of `xt` is 16 f32.
        x[j] = unsafe { _mm512_loadu_ps(xt[j].as_ptr()) };
    }
    let (lov, hiv) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let mut mx = x[0];
    for &v in &x {
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(abs512(v), abs512(mx));
        mx = _mm512_mask_blend_ps(gt, mx, v);
    }
    let mut live = finite512(mx) & _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(mx, z);
    let one = _mm512_set1_ps(1.0);
    let inv = _mm512_div_ps(one, mx);
    let id: [__m512; G] = std::array::from_fn(|g| _mm512_mul_ps(_mm512_set1_ps(super::fast_t(g, t_rtn, flip)), inv));
    // Grid: sums of every candidate (four, then the rest, interleaved), scored in order.
    let acc = eval_n::<G, true, false, true>(&x, &id, &[z; G], lov, hiv);
    let two = _mm512_set1_ps(2.0);
    let (mut bs, mut d1, mut have) = (_mm512_set1_ps(f32::INFINITY), z, 0 as __mmask16);
    for a in &acc {
        let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a.suu, z);
        let d = round16::<crate::convert::F16>(_mm512_div_ps(a.sxu, a.suu));
        let score = _mm512_mul_ps(d, _mm512_sub_ps(_mm512_mul_ps(d, a.suu), _mm512_mul_ps(two, a.sxu)));
        let c = pos & usable512(d) & finite512(score) & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(score, bs);
        bs = _mm512_mask_blend_ps(c, bs, score);
        d1 = _mm512_mask_blend_ps(c, d1, d);
        have |= c;
    }
    live &= have;
    // The best candidate's codes re-chosen at its scale: exact error and new sums.
    let [a1] = eval_n::<1, true, true, true>(&x, &[_mm512_div_ps(one, d1)], &[d1], lov, hiv);
    let ok1 = live & finite512(a1.err);
    let (mut err, mut d) = (a1.err, d1);
    let mut ok = ok1;
    // Once more at the least-squares scale of those codes, where it differs.
    let d2 = round16::<crate::convert::F16>(_mm512_div_ps(a1.sxu, a1.suu));
    let again =
        live & _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a1.suu, z) & usable512(d2) & _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(d2, d1);
    if again != 0 {
        let [a2] = eval_n::<1, false, true, true>(&x, &[_mm512_div_ps(one, d2)], &[d2], lov, hiv);
        let take = again & finite512(a2.err) & (!ok1 | _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a2.err, a1.err));
        err = _mm512_mask_blend_ps(take, err, a2.err);
        d = _mm512_mask_blend_ps(take, d, d2);
        ok |= take;
    }
    let mut rerr = z;
    for j in 0..32 {
        // SAFETY: each row of `yt` is 16 f32.
        let q = _mm512_sub_ps(x[j], unsafe { _mm512_loadu_ps(yt[j].as_ptr()) });
        rerr = _mm512_add_ps(rerr, _mm512_mul_ps(q, q));
    }
    let win = ok & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(err, rerr);
    let mut out = SymFound { d: [0.0; 16], err: [0.0; 16], ok, win, codes: [[0; 16]; super::QK] };
    let idb = _mm512_div_ps(one, d);
    for j in 0..32 {
        let u = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps::<RNE>(_mm512_mul_ps(x[j], idb)), lov), hiv);
        // SAFETY: each row of `codes` is 16 i32.
        unsafe { _mm512_storeu_si512(out.codes[j].as_mut_ptr().cast(), _mm512_cvtps_epi32(u)) };
    }
    // SAFETY: both arrays are 16 f32 long.
    unsafe {
        _mm512_storeu_ps(out.d.as_mut_ptr(), d);
        _mm512_storeu_ps(out.err.as_mut_ptr(), err);
    }
    out
}

/// [`search_fast16`] on eight blocks with AVX2: the same per-lane operations and choices.
///
/// # Safety
/// AVX2 and F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn search_fast8(
    xt: &Blocks8,
    yt: &Blocks8,
    lo: f32,
    hi: f32,
    t_rtn: f32,
    flip: Option<f32>,
) -> SymFound8 {
    const G: usize = super::FAST_G + super::FAST_F;
    let z = _mm256_setzero_ps();
    let mut x = [z; 32];
    for j in 0..32 {
        // SAFETY: each row of `xt` is 8 f32.
        x[j] = unsafe { _mm256_loadu_ps(xt[j].as_ptr()) };
    }
    let (lov, hiv) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    let mut mx = x[0];
    for &v in &x {
        mx = _mm256_blendv_ps(mx, v, _mm256_cmp_ps::<_CMP_GT_OQ>(abs8(v), abs8(mx)));
    }
    let mut live = _mm256_and_ps(finite8(mx), _mm256_cmp_ps::<_CMP_NEQ_UQ>(mx, z));
    let one = _mm256_set1_ps(1.0);
    let inv = _mm256_div_ps(one, mx);
    let id: [__m256; G] = std::array::from_fn(|g| _mm256_mul_ps(_mm256_set1_ps(super::fast_t(g, t_rtn, flip)), inv));
    let mut acc = [Acc8 { err: z, sxu: z, suu: z }; G];
    let a4 = eval_n8::<4, true, false, true>(&x, &[id[0], id[1], id[2], id[3]], &[z; 4], lov, hiv);
    acc[..4].copy_from_slice(&a4);
    let rest: [__m256; G - 4] = std::array::from_fn(|n| id[4 + n]);
    let ar = eval_n8::<{ G - 4 }, true, false, true>(&x, &rest, &[z; G - 4], lov, hiv);
    acc[4..].copy_from_slice(&ar);
    let two = _mm256_set1_ps(2.0);
    let (mut bs, mut d1, mut have) = (_mm256_set1_ps(f32::INFINITY), z, z);
    for a in &acc {
        let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(a.suu, z);
        let d = round8::<crate::convert::F16>(_mm256_div_ps(a.sxu, a.suu));
        let score = _mm256_mul_ps(d, _mm256_sub_ps(_mm256_mul_ps(d, a.suu), _mm256_mul_ps(two, a.sxu)));
        let c = _mm256_and_ps(_mm256_and_ps(pos, usable8(d)), _mm256_and_ps(finite8(score), lt8(score, bs)));
        bs = _mm256_blendv_ps(bs, score, c);
        d1 = _mm256_blendv_ps(d1, d, c);
        have = _mm256_or_ps(have, c);
    }
    live = _mm256_and_ps(live, have);
    let [a1] = eval_n8::<1, true, true, true>(&x, &[_mm256_div_ps(one, d1)], &[d1], lov, hiv);
    let ok1 = _mm256_and_ps(live, finite8(a1.err));
    let (mut err, mut d, mut ok) = (a1.err, d1, ok1);
    let d2 = round8::<crate::convert::F16>(_mm256_div_ps(a1.sxu, a1.suu));
    let again = _mm256_and_ps(
        _mm256_and_ps(live, _mm256_cmp_ps::<_CMP_GT_OQ>(a1.suu, z)),
        _mm256_and_ps(usable8(d2), _mm256_cmp_ps::<_CMP_NEQ_UQ>(d2, d1)),
    );
    if _mm256_movemask_ps(again) != 0 {
        let [a2] = eval_n8::<1, false, true, true>(&x, &[_mm256_div_ps(one, d2)], &[d2], lov, hiv);
        let better =
            _mm256_or_ps(_mm256_andnot_ps(ok1, _mm256_castsi256_ps(_mm256_set1_epi32(-1))), lt8(a2.err, a1.err));
        let take = _mm256_and_ps(_mm256_and_ps(again, finite8(a2.err)), better);
        err = _mm256_blendv_ps(err, a2.err, take);
        d = _mm256_blendv_ps(d, d2, take);
        ok = _mm256_or_ps(ok, take);
    }
    let mut rerr = z;
    for j in 0..32 {
        // SAFETY: each row of `yt` is 8 f32.
        let q = _mm256_sub_ps(x[j], unsafe { _mm256_loadu_ps(yt[j].as_ptr()) });
        rerr = _mm256_add_ps(rerr, _mm256_mul_ps(q, q));
    }
    let win = _mm256_and_ps(ok, lt8(err, rerr));
    let mut out = SymFound8 {
        d: [0.0; 8],
        err: [0.0; 8],
        ok: _mm256_movemask_ps(ok) as u8,
        win: _mm256_movemask_ps(win) as u8,
        codes: [[0; 8]; super::QK],
    };
    let idb = _mm256_div_ps(one, d);
    for j in 0..32 {
        let u = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps::<RNE>(_mm256_mul_ps(x[j], idb)), lov), hiv);
        // SAFETY: each row of `codes` is 8 i32.
        unsafe { _mm256_storeu_si256(out.codes[j].as_mut_ptr().cast(), _mm256_cvtps_epi32(u)) };
    }
    // SAFETY: both arrays are 8 f32 long.
    unsafe {
        _mm256_storeu_ps(out.d.as_mut_ptr(), d);
        _mm256_storeu_ps(out.err.as_mut_ptr(), err);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The batched drivers' data movement with AVX-512 (exact: only moves, integer ops and the
// dequantization's one f32 product, so the bytes do not change).

/// Transpose a 16×16 f32 matrix held as 16 rows (`r[i]` lane `j` = M[i][j]) into its columns
/// (`out[j]` lane `i` = M[i][j]): 32-bit and 64-bit unpacks, then a 4×4 transpose of the
/// 128-bit lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn transpose16x16(r: &[__m512; 16]) -> [__m512; 16] {
    let z = _mm512_setzero_ps();
    let mut t = [z; 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + c] lane l = M[4i..4i+4][4l + c].
    let mut u = [z; 16];
    let pd = _mm512_castps_pd;
    for i in 0..4 {
        let (a, b, c, d) = (pd(t[4 * i]), pd(t[4 * i + 2]), pd(t[4 * i + 1]), pd(t[4 * i + 3]));
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    let mut out = [z; 16];
    for c in 0..4 {
        let (a0, a1, a2, a3) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
        let p = _mm512_shuffle_f32x4::<0x44>(a0, a1);
        let q = _mm512_shuffle_f32x4::<0xee>(a0, a1);
        let r2 = _mm512_shuffle_f32x4::<0x44>(a2, a3);
        let s = _mm512_shuffle_f32x4::<0xee>(a2, a3);
        out[c] = _mm512_shuffle_f32x4::<0x88>(p, r2);
        out[4 + c] = _mm512_shuffle_f32x4::<0xdd>(p, r2);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(q, s);
        out[12 + c] = _mm512_shuffle_f32x4::<0xdd>(q, s);
    }
    out
}

/// Sixteen blocks of 32 values, block-major (`src[32·b + j]`), transposed into `dst[j][b]`.
///
/// # Safety
/// AVX-512 F/BW/VL must be available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(super) unsafe fn transpose_blocks16(src: &[f32; 16 * super::QK], dst: &mut Blocks16) {
    for h in 0..2 {
        // SAFETY: block b's half h is src[32b + 16h .. +16], in bounds for b < 16.
        let r: [__m512; 16] = std::array::from_fn(|b| unsafe { _mm512_loadu_ps(src.as_ptr().add(32 * b + 16 * h)) });
        let c = transpose16x16(&r);
        for j in 0..16 {
            // SAFETY: each row of `dst` is 16 f32.
            unsafe { _mm512_storeu_ps(dst[16 * h + j].as_mut_ptr(), c[j]) };
        }
    }
}

/// The values of sixteen Q4_0 or Q8_0 blocks (`blk`, `nb` ≤ 16 of them; the rest zero),
/// transposed into `dst[j][b]`: the `gguf` dequantization's `d · q` per element.
///
/// # Safety
/// AVX-512 F/BW/VL and F16C must be available; `blk` holds `nb` blocks of `ty`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(super) unsafe fn dequant_blocks16(ty: crate::gguf::GgmlType, blk: &[u8], nb: usize, dst: &mut Blocks16) {
    use crate::gguf::GgmlType;
    let tsz = ty.type_size();
    let z = _mm512_setzero_ps();
    let mut rows = [[z; 16]; 2];
    for b in 0..nb {
        let p = &blk[b * tsz..(b + 1) * tsz];
        let d = _mm512_set1_ps(crate::convert::f16_to_f32(u16::from_le_bytes([p[0], p[1]])));
        let (lo, hi) = match ty {
            GgmlType::Q4_0 => {
                // SAFETY: bytes 2..18 of a Q4_0 block.
                let q = unsafe { _mm_loadu_si128(p[2..18].as_ptr().cast()) };
                let m = _mm_set1_epi8(0x0f);
                let l = _mm512_cvtepu8_epi32(_mm_and_si128(q, m));
                let h = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16::<4>(q), m));
                let e = _mm512_set1_epi32(8);
                (_mm512_sub_epi32(l, e), _mm512_sub_epi32(h, e))
            }
            _ => {
                // Q8_0: bytes 2..34 are the i8 codes.
                // SAFETY: bytes 2..34 of a Q8_0 block.
                let (l, h) =
                    unsafe { (_mm_loadu_si128(p[2..18].as_ptr().cast()), _mm_loadu_si128(p[18..34].as_ptr().cast())) };
                (_mm512_cvtepi8_epi32(l), _mm512_cvtepi8_epi32(h))
            }
        };
        rows[0][b] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(lo));
        rows[1][b] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(hi));
    }
    for h in 0..2 {
        let c = transpose16x16(&rows[h]);
        for j in 0..16 {
            // SAFETY: each row of `dst` is 16 f32.
            unsafe { _mm512_storeu_ps(dst[16 * h + j].as_mut_ptr(), c[j]) };
        }
    }
}

/// Write the winning lanes of `f` (`f.win`) over their RTN blocks in `out` (`nb` blocks of
/// Q4_0 or Q8_0): the f16 scale, then the codes packed as the format stores them.
///
/// # Safety
/// AVX-512 F/BW/VL and F16C must be available; `out` holds `nb` blocks of `ty`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(super) unsafe fn write_blocks16(ty: crate::gguf::GgmlType, f: &SymFound, nb: usize, out: &mut [u8]) {
    use crate::gguf::GgmlType;
    if f.win == 0 {
        return;
    }
    let tsz = ty.type_size();
    // Codes back to block-major: the same transpose on their bit patterns.
    let mut cols = [[_mm512_setzero_ps(); 16]; 2];
    for h in 0..2 {
        // SAFETY: each row of `codes` is 16 i32.
        let r: [__m512; 16] = std::array::from_fn(|j| unsafe { _mm512_loadu_ps(f.codes[16 * h + j].as_ptr().cast()) });
        cols[h] = transpose16x16(&r);
    }
    for b in 0..nb {
        if f.win >> b & 1 == 0 {
            continue;
        }
        let p = &mut out[b * tsz..(b + 1) * tsz];
        p[..2].copy_from_slice(&crate::convert::f32_to_f16(f.d[b]).to_le_bytes());
        let (lo, hi) = (_mm512_castps_si512(cols[0][b]), _mm512_castps_si512(cols[1][b]));
        match ty {
            GgmlType::Q4_0 => {
                let e = _mm512_set1_epi32(8);
                let v = _mm512_or_si512(_mm512_add_epi32(lo, e), _mm512_slli_epi32::<4>(_mm512_add_epi32(hi, e)));
                // SAFETY: bytes 2..18 of a Q4_0 block.
                unsafe { _mm_storeu_si128(p[2..18].as_mut_ptr().cast(), _mm512_cvtepi32_epi8(v)) };
            }
            _ => {
                // SAFETY: bytes 2..34 of a Q8_0 block.
                unsafe {
                    _mm_storeu_si128(p[2..18].as_mut_ptr().cast(), _mm512_cvtepi32_epi8(lo));
                    _mm_storeu_si128(p[18..34].as_mut_ptr().cast(), _mm512_cvtepi32_epi8(hi));
                }
            }
        }
    }
}
