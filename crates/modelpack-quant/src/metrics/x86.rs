//! The AVX2 twin of [`super::Lanes`]: the error-statistics accumulator every x86 kernel (GGUF,
//! K-quant, compressed-tensors) adds its blocks to, in the scalar lane order.

use std::arch::x86_64::*;

/// The eight f64 lanes of [`crate::metrics::Lanes`] in two ymm registers per sum (lanes 4k..4k+4
/// in `[k]`), plus a running max of |x − y| in f32: the AVX2 accumulator shared by every kernel's
/// error statistics, so each adds values exactly as the scalar `Lanes::add` does.
pub(crate) struct LaneAcc256 {
    sq_ref: [__m256d; 2],
    sq_err: [__m256d; 2],
    sq_deq: [__m256d; 2],
    dot: [__m256d; 2],
    max: __m256,
}

impl LaneAcc256 {
    /// Continue from `lanes`' sums (its max is merged back by [`LaneAcc256::store`]).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn load(lanes: &crate::metrics::Lanes) -> Self {
        // SAFETY: the lane arrays are 8 f64 each; unaligned loads.
        let ld = |v: &[f64; 8]| unsafe { [0, 1].map(|k| _mm256_loadu_pd(v.as_ptr().add(4 * k))) };
        LaneAcc256 {
            sq_ref: ld(&lanes.sq_ref),
            sq_err: ld(&lanes.sq_err),
            sq_deq: ld(&lanes.sq_deq),
            dot: ld(&lanes.dot),
            max: _mm256_setzero_ps(),
        }
    }

    /// Add 8 consecutive elements (source `x`, reconstruction `y`), which fall in lanes 0..8 (the
    /// caller keeps the element count a multiple of 8): fused multiply-add (one rounding), as the
    /// scalar code's `mul_add`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn add8(&mut self, x: __m256, y: __m256) {
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        // max_ps returns its second operand when the first is NaN: NaN errors are skipped, as
        // the scalar `ae > max` test skips them.
        self.max = _mm256_max_ps(_mm256_and_ps(_mm256_sub_ps(x, y), abs_mask), self.max);
        let halves = [
            (_mm256_castps256_ps128(x), _mm256_castps256_ps128(y)),
            (_mm256_extractf128_ps::<1>(x), _mm256_extractf128_ps::<1>(y)),
        ];
        for (k, (xh, yh)) in halves.into_iter().enumerate() {
            let (a, b) = (_mm256_cvtps_pd(xh), _mm256_cvtps_pd(yh));
            let d = _mm256_sub_pd(a, b);
            self.sq_ref[k] = _mm256_fmadd_pd(a, a, self.sq_ref[k]);
            self.sq_err[k] = _mm256_fmadd_pd(d, d, self.sq_err[k]);
            self.sq_deq[k] = _mm256_fmadd_pd(b, b, self.sq_deq[k]);
            self.dot[k] = _mm256_fmadd_pd(a, b, self.dot[k]);
        }
    }

    /// Write the sums back and merge the max; the caller adds the element count.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) fn store(self, lanes: &mut crate::metrics::Lanes) {
        let st = |v: &mut [f64; 8], acc: [__m256d; 2]| {
            for (k, a) in acc.into_iter().enumerate() {
                // SAFETY: as in `load`; unaligned stores.
                unsafe { _mm256_storeu_pd(v.as_mut_ptr().add(4 * k), a) };
            }
        };
        st(&mut lanes.sq_ref, self.sq_ref);
        st(&mut lanes.sq_err, self.sq_err);
        st(&mut lanes.sq_deq, self.sq_deq);
        st(&mut lanes.dot, self.dot);
        let mut m8 = [0f32; 8];
        // SAFETY: 8 lanes into an 8-element array.
        unsafe { _mm256_storeu_ps(m8.as_mut_ptr(), self.max) };
        lanes.max_abs_err = m8.iter().fold(lanes.max_abs_err, |a, &b| a.max(b));
    }
}
