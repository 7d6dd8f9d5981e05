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
