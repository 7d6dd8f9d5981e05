//! Pieces shared by every x86 kernel (GGUF, K-quant, compressed-tensors, `mse`): the fused
//! unaligned loads that widen a [`Dtype`] to f32 lanes, the lane-wise rounding to a [`Dtype`],
//! and the prefetch distance.

use crate::convert::Dtype;
use crate::SrcDtype;
use std::arch::x86_64::*;

/// Load 8 source elements at `p` (unaligned) as f32, conversion fused (bf16 is a shift; F16C's
/// conversion is exact).
///
/// # Safety
/// `p` must be valid for 8 elements of the source dtype `S`; AVX2 + F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load8<S: Dtype>(p: *const u8) -> __m256 {
    // SAFETY: per the function contract; loads are unaligned.
    unsafe {
        match S::SRC {
            SrcDtype::F32 => _mm256_loadu_ps(p.cast()),
            SrcDtype::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            SrcDtype::BF16 => {
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()))))
            }
        }
    }
}

/// Load 16 source elements at `p` (unaligned) as f32, conversion fused.
///
/// # Safety
/// `p` must be valid for 16 elements of the source dtype `S`; AVX-512 F/BW/VL + F16C available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(crate) unsafe fn load16<S: Dtype>(p: *const u8) -> __m512 {
    // SAFETY: per the function contract; loads are unaligned.
    unsafe {
        match S::SRC {
            SrcDtype::F32 => _mm512_loadu_ps(p.cast()),
            SrcDtype::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
            SrcDtype::BF16 => {
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()))))
            }
        }
    }
}

/// How far ahead (bytes) the GGUF kernels prefetch their input: one hint per 64-byte line, so
/// the loads of a block hit L1 when the input streams from DRAM (the pipeline reads mmap'd
/// checkpoints). Measured on the 2-core AVX-512 machine, Q8_0 from bf16 out of cache: 1.86 →
/// 2.63 Gelem/s per core.
pub(crate) const PREFETCH: usize = 4096;

/// Round 8 lanes to the dtype `E` (nearest, ties to even) and widen back. bf16: add
/// `0x7fff + lsb` to the bit pattern and clear the low half (exact round-to-nearest-even for every
/// non-NaN value, subnormals and overflow to inf included); f16: `vcvtps2ph` round to nearest.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn round8<E: Dtype>(x: __m256) -> __m256 {
    match E::SRC {
        SrcDtype::F32 => x,
        SrcDtype::F16 => _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x)),
        SrcDtype::BF16 => {
            let b = _mm256_castps_si256(x);
            let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
            let b = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), lsb);
            _mm256_castsi256_ps(_mm256_and_si256(b, _mm256_set1_epi32(0xffff_0000u32 as i32)))
        }
    }
}

/// [`round8`] for 16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(crate) fn round16<E: Dtype>(x: __m512) -> __m512 {
    match E::SRC {
        SrcDtype::F32 => x,
        SrcDtype::F16 => _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x)),
        SrcDtype::BF16 => {
            let b = _mm512_castps_si512(x);
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
            let b = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb);
            _mm512_castsi512_ps(_mm512_and_si512(b, _mm512_set1_epi32(0xffff_0000u32 as i32)))
        }
    }
}
