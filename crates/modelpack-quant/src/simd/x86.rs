//! Pieces shared by every x86 kernel (GGUF and compressed-tensors): the source-dtype tags used
//! as const generics, the fused unaligned loads that widen f32/f16/bf16 to f32 lanes, and the
//! prefetch distance.

use crate::SrcDtype;
use std::arch::x86_64::*;

/// Const-generic tag for an f32 source.
pub(crate) const F32: u8 = 0;
/// Const-generic tag for an f16 source.
pub(crate) const F16: u8 = 1;
/// Const-generic tag for a bf16 source.
pub(crate) const BF16: u8 = 2;

/// The dtype a tag stands for.
pub(crate) const fn src_of<const S: u8>() -> SrcDtype {
    match S {
        F32 => SrcDtype::F32,
        F16 => SrcDtype::F16,
        _ => SrcDtype::BF16,
    }
}

/// Load 8 source elements at `p` (unaligned) as f32, conversion fused (bf16 is a shift; F16C's
/// conversion is exact).
///
/// # Safety
/// `p` must be valid for 8 elements of the source dtype `S`; AVX2 + F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn load8<const S: u8>(p: *const u8) -> __m256 {
    // SAFETY: per the function contract; loads are unaligned.
    unsafe {
        match S {
            F32 => _mm256_loadu_ps(p.cast()),
            F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())))),
        }
    }
}

/// Load 16 source elements at `p` (unaligned) as f32, conversion fused.
///
/// # Safety
/// `p` must be valid for 16 elements of the source dtype `S`; AVX-512 F/BW/VL + F16C available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
pub(crate) unsafe fn load16<const S: u8>(p: *const u8) -> __m512 {
    // SAFETY: per the function contract; loads are unaligned.
    unsafe {
        match S {
            F32 => _mm512_loadu_ps(p.cast()),
            F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
            _ => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast())))),
        }
    }
}

/// How far ahead (bytes) the GGUF kernels prefetch their input: one hint per 64-byte line, so
/// the loads of a block hit L1 when the input streams from DRAM (the pipeline reads mmap'd
/// checkpoints). Measured on the 2-core AVX-512 machine, Q8_0 from bf16 out of cache: 1.86 →
/// 2.63 Gelem/s per core.
pub(crate) const PREFETCH: usize = 4096;
