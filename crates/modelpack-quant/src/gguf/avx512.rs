//! AVX-512 (F + BW + VL, with F16C) kernels for Q8_0, Q4_0 and Q4_1.
//!
//! A block of 32 values is two zmm registers. The source conversion is fused into the load
//! (bf16: zero-extend and shift left 16; f16: `vcvtph2ps`, exact; f32: unaligned load), so no
//! f32 copy of the input exists. Every arithmetic step is the scalar reference's, lane by lane:
//! separate multiply and add (never FMA), the same `1/d`, the same truncations. Maxima of |x| are
//! taken on the integer bit patterns (order-preserving for non-negative floats), which also
//! detects NaN/inf: such a block is handed to the scalar reference, which reports the error.

use super::scalar::convert_rows_ref;
use crate::blocks::{quantize_blocks_ref, BlockQ4_0, BlockQ4_1, BlockQ8_0, GgmlType, QK};
use crate::convert::load;
use crate::convert::{with_src, Dtype};
use crate::simd::x86::{load16, PREFETCH};
use crate::{QuantError, SrcDtype};
use std::arch::x86_64::*;

/// Quantize whole blocks of `ty` (Q8_0, Q4_0 or Q4_1); `input` holds `out.len() / ty.type_size()`
/// blocks of `src` elements.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and F16C.
pub(crate) unsafe fn quantize(ty: GgmlType, src: SrcDtype, input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    // SAFETY: the caller guarantees the features; the kernels bound every access by the slices.
    unsafe {
        match ty {
            GgmlType::Q8_0 => with_src!(src, S => q8_0::<S>(input, out)),
            GgmlType::Q4_0 => with_src!(src, S => q4_0::<S>(input, out)),
            GgmlType::Q4_1 => with_src!(src, S => q4_1::<S>(input, out)),
            GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q4_K
            | GgmlType::Q6_K => Err(QuantError::Unsupported(ty.name())),
        }
    }
}

/// Load a block of 32 elements.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn load_block<S: Dtype>(b: &[u8]) -> (__m512, __m512) {
    debug_assert_eq!(b.len(), QK * S::SRC.size());
    let p = b.as_ptr();
    // SAFETY: `b` holds exactly 32 elements.
    unsafe { (load16::<S>(p), load16::<S>(p.add(16 * S::SRC.size()))) }
}

/// |x| bit patterns of a block, and their maximum (≥ 0x7f80_0000 when a NaN/inf is present).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn abs_bits(x0: __m512, x1: __m512) -> (__m512i, __m512i, u32) {
    let m = _mm512_set1_epi32(0x7fff_ffff);
    let a0 = _mm512_and_si512(_mm512_castps_si512(x0), m);
    let a1 = _mm512_and_si512(_mm512_castps_si512(x1), m);
    let hmax = _mm512_reduce_max_epu32(_mm512_max_epu32(a0, a1));
    (a0, a1, hmax)
}

/// `roundf` (half away from zero) of every lane, as i32: trunc(|v|) + (frac ≥ 0.5), sign restored.
/// `frac = |v| - trunc(|v|)` is exact, so this equals `f32::round` for every finite input.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn round_away(v: __m512) -> __m512i {
    let sign = _mm512_set1_epi32(i32::MIN);
    let vi = _mm512_castps_si512(v);
    let a = _mm512_castsi512_ps(_mm512_andnot_si512(sign, vi));
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(a);
    let f = _mm512_sub_ps(a, t);
    let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(f, _mm512_set1_ps(0.5));
    let r = _mm512_mask_add_ps(t, up, t, _mm512_set1_ps(1.0));
    let r = _mm512_or_si512(_mm512_castps_si512(r), _mm512_and_si512(vi, sign));
    _mm512_cvttps_epi32(_mm512_castsi512_ps(r))
}

/// Prefetch the input block `PREFETCH` bytes ahead of `b` (one request per 64-byte line).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn prefetch_ahead(b: &[u8]) {
    let p = b.as_ptr().wrapping_add(PREFETCH);
    let mut off = 0;
    while off < b.len() {
        // A hint: never faults, whatever the address.
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast());
        off += 64;
    }
}

/// Prefetch with write intent the output lines 2 KiB past the start of `og` (a later group's),
/// so the read-for-ownership of output lines overlaps computation: Q8_0 from bf16 out of cache,
/// 2.33 → 2.60 Gelem/s per core.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn prefetch_out(og: &[u8]) {
    let p = og.as_ptr().wrapping_add(2048);
    let mut off = 0;
    while off < og.len() {
        // A hint: never faults, whatever the address.
        _mm_prefetch::<_MM_HINT_ET0>(p.wrapping_add(off).cast());
        off += 64;
    }
}

/// Plain conversion to F32/F16/BF16 (round to nearest even), 16 elements at a time; a vector
/// holding NaN/inf, and the tail, go through the scalar path (which reports the error).
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and F16C.
pub(crate) unsafe fn convert(ty: GgmlType, src: SrcDtype, input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        return Err(QuantError::Unsupported(ty.name()));
    }
    // SAFETY: the caller guarantees the features.
    unsafe { with_src!(src, S => conv::<S>(ty, input, out)) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn conv<S: Dtype>(ty: GgmlType, input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    let src = S::SRC;
    let (es, os) = (src.size(), ty.type_size());
    let n = input.len() / es;
    let nv = n / 16;
    let absm = _mm512_set1_epi32(0x7fff_ffff);
    let inf = _mm512_set1_epi32(0x7f80_0000);
    for i in 0..nv {
        let (ib, ob) = (&input[i * 16 * es..(i + 1) * 16 * es], &mut out[i * 16 * os..(i + 1) * 16 * os]);
        // SAFETY: `ib` holds 16 elements.
        let x = unsafe { load16::<S>(ib.as_ptr()) };
        let bits = _mm512_castps_si512(x);
        if _mm512_cmpge_epu32_mask(_mm512_and_si512(bits, absm), inf) != 0 {
            return convert_rows_ref(ty, src, ib, ob, i * 16);
        }
        // SAFETY: `ob` holds 16 outputs of `os` bytes; unaligned stores.
        unsafe {
            match ty {
                GgmlType::F32 => _mm512_storeu_ps(ob.as_mut_ptr().cast(), x),
                GgmlType::F16 => {
                    _mm256_storeu_si256(ob.as_mut_ptr().cast(), _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
                }
                GgmlType::BF16 => {
                    // Round to nearest even on the bit pattern (finite inputs only).
                    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
                    let r = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb);
                    _mm256_storeu_si256(ob.as_mut_ptr().cast(), _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(r)));
                }
                // Refused in `convert`.
                GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q4_K
                | GgmlType::Q6_K => {}
            }
        }
    }
    convert_rows_ref(ty, src, &input[nv * 16 * es..], &mut out[nv * 16 * os..], nv * 16)
}

/// Blocks per group: the per-block scales of a group are divided, inverted and rounded to f16
/// together in one zmm (16 lanes), instead of two scalar divisions and a conversion per block.
const G: usize = 16;

/// Scales of a group: `d = num / den` per lane, `id = d != 0 ? 1/d : 0`, and `f16(d)`.
/// Lane-wise IEEE division is the scalar division, so this is the reference's arithmetic.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn group_scales(num: &[f32; G], den: f32) -> ([f32; G], [f32; G], [u16; G]) {
    let (mut d, mut id, mut dh) = ([0f32; G], [0f32; G], [0u16; G]);
    // SAFETY: all arrays hold 16 lanes; unaligned loads/stores.
    unsafe {
        let vd = _mm512_div_ps(_mm512_loadu_ps(num.as_ptr()), _mm512_set1_ps(den));
        let nz = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(vd, _mm512_setzero_ps());
        let vid = _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0), vd);
        _mm512_storeu_ps(d.as_mut_ptr(), vd);
        _mm512_storeu_ps(id.as_mut_ptr(), vid);
        _mm256_storeu_si256(dh.as_mut_ptr().cast(), _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(vd));
    }
    (d, id, dh)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn q8_0<S: Dtype>(input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK * src.size();
    for (gi, (ig, og)) in input.chunks(G * in_blk).zip(out.chunks_mut(G * 34)).enumerate() {
        // Pass 1: max |x| of every block (integer max of |x| bits; flags NaN/inf).
        let mut amax = [0f32; G];
        for (j, ib) in ig.chunks_exact(in_blk).enumerate() {
            prefetch_ahead(ib);
            // SAFETY: `ib` is one whole block.
            let (x0, x1) = unsafe { load_block::<S>(ib) };
            let (_, _, hmax) = abs_bits(x0, x1);
            if hmax >= 0x7f80_0000 {
                let ob = &mut og[j * 34..(j + 1) * 34];
                return quantize_blocks_ref::<BlockQ8_0>(src, ib, ob, (gi * G + j) * QK);
            }
            amax[j] = f32::from_bits(hmax);
        }
        prefetch_out(og);
        let (_, id, dh) = group_scales(&amax, 127.0);
        // Pass 2: quantize (the group's input is still in L1).
        for (j, (ib, ob)) in ig.chunks_exact(in_blk).zip(og.chunks_exact_mut(34)).enumerate() {
            ob[..2].copy_from_slice(&dh[j].to_le_bytes());
            if id[j] == f32::INFINITY {
                // 1/d overflowed: the references store 0 for every element (see `cvtt_i8`).
                ob[2..34].fill(0);
                continue;
            }
            // SAFETY: `ib` is one whole block.
            let (x0, x1) = unsafe { load_block::<S>(ib) };
            let vid = _mm512_set1_ps(id[j]);
            let q0 = _mm512_cvtsepi32_epi8(round_away(_mm512_mul_ps(x0, vid)));
            let q1 = _mm512_cvtsepi32_epi8(round_away(_mm512_mul_ps(x1, vid)));
            let p = ob[2..34].as_mut_ptr();
            // SAFETY: `ob[2..34]` has room for two 16-byte unaligned stores.
            unsafe {
                _mm_storeu_si128(p.cast(), q0);
                _mm_storeu_si128(p.add(16).cast(), q1);
            }
        }
    }
    Ok(())
}

/// `min(15, trunc(v))` of two half-blocks, packed as `lo | hi << 4` into 16 bytes. Lanes that
/// are ±inf/NaN (a block whose `1/d` overflowed) convert to `i32::MIN`, whose low byte is 0, as
/// in the references.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn pack_nibbles(v0: __m512, v1: __m512) -> __m128i {
    let fifteen = _mm512_set1_epi32(15);
    let q0 = _mm512_min_epi32(_mm512_cvttps_epi32(v0), fifteen);
    let q1 = _mm512_min_epi32(_mm512_cvttps_epi32(v1), fifteen);
    _mm512_cvtepi32_epi8(_mm512_or_si512(q0, _mm512_slli_epi32::<4>(q1)))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn q4_0<S: Dtype>(input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK * src.size();
    for (gi, (ig, og)) in input.chunks(G * in_blk).zip(out.chunks_mut(G * 18)).enumerate() {
        // Pass 1: the signed value of largest |x|, first occurrence, of every block.
        let mut max = [0f32; G];
        for (j, ib) in ig.chunks_exact(in_blk).enumerate() {
            prefetch_ahead(ib);
            // SAFETY: `ib` is one whole block.
            let (x0, x1) = unsafe { load_block::<S>(ib) };
            let (a0, a1, hmax) = abs_bits(x0, x1);
            if hmax >= 0x7f80_0000 {
                let ob = &mut og[j * 18..(j + 1) * 18];
                return quantize_blocks_ref::<BlockQ4_0>(src, ib, ob, (gi * G + j) * QK);
            }
            let hv = _mm512_set1_epi32(hmax as i32);
            let mask = u32::from(_mm512_cmpeq_epi32_mask(a0, hv)) | u32::from(_mm512_cmpeq_epi32_mask(a1, hv)) << 16;
            max[j] = load(src, ib, mask.trailing_zeros() as usize);
        }
        prefetch_out(og);
        let (_, id, dh) = group_scales(&max, -8.0);
        // Pass 2: quantize.
        let k = _mm512_set1_ps(8.5);
        for (j, (ib, ob)) in ig.chunks_exact(in_blk).zip(og.chunks_exact_mut(18)).enumerate() {
            // SAFETY: `ib` is one whole block.
            let (x0, x1) = unsafe { load_block::<S>(ib) };
            let vid = _mm512_set1_ps(id[j]);
            let v0 = _mm512_add_ps(_mm512_mul_ps(x0, vid), k);
            let v1 = _mm512_add_ps(_mm512_mul_ps(x1, vid), k);
            ob[..2].copy_from_slice(&dh[j].to_le_bytes());
            // SAFETY: `ob[2..18]` is 16 bytes.
            unsafe { _mm_storeu_si128(ob[2..18].as_mut_ptr().cast(), pack_nibbles(v0, v1)) };
        }
    }
    Ok(())
}

/// The first element of the block comparing equal to 0.0, with its sign (the reference's
/// strict-comparison loop keeps the first of equal values; only ±0 compare equal with different bits).
#[inline]
fn first_zero(src: SrcDtype, b: &[u8]) -> f32 {
    (0..QK).map(|j| load(src, b, j)).find(|&v| v == 0.0).unwrap_or(0.0)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn q4_1<S: Dtype>(input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK * src.size();
    for (gi, (ig, og)) in input.chunks(G * in_blk).zip(out.chunks_mut(G * 20)).enumerate() {
        // Pass 1: min and max of every block (first occurrence for signed zeros).
        let (mut min, mut range) = ([0f32; G], [0f32; G]);
        for (j, ib) in ig.chunks_exact(in_blk).enumerate() {
            prefetch_ahead(ib);
            // SAFETY: `ib` is one whole block.
            let (x0, x1) = unsafe { load_block::<S>(ib) };
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x0, x0) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x1, x1);
            let mut mn = _mm512_reduce_min_ps(_mm512_min_ps(x0, x1));
            let mut mx = _mm512_reduce_max_ps(_mm512_max_ps(x0, x1));
            if nan != 0 || mn == f32::NEG_INFINITY || mx == f32::INFINITY {
                let ob = &mut og[j * 20..(j + 1) * 20];
                return quantize_blocks_ref::<BlockQ4_1>(src, ib, ob, (gi * G + j) * QK);
            }
            if mn == 0.0 {
                mn = first_zero(src, ib);
            }
            if mx == 0.0 {
                mx = first_zero(src, ib);
            }
            min[j] = mn;
            range[j] = mx - mn;
        }
        prefetch_out(og);
        let (_, id, dh) = group_scales(&range, 15.0);
        let mut mh = [0u16; G];
        // SAFETY: 16 lanes each.
        unsafe {
            let v = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm512_loadu_ps(min.as_ptr()));
            _mm256_storeu_si256(mh.as_mut_ptr().cast(), v);
        }
        // Pass 2: quantize.
        let h = _mm512_set1_ps(0.5);
        for (j, (ib, ob)) in ig.chunks_exact(in_blk).zip(og.chunks_exact_mut(20)).enumerate() {
            // SAFETY: `ib` is one whole block.
            let (x0, x1) = unsafe { load_block::<S>(ib) };
            let (vmin, vid) = (_mm512_set1_ps(min[j]), _mm512_set1_ps(id[j]));
            let v0 = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(x0, vmin), vid), h);
            let v1 = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(x1, vmin), vid), h);
            ob[..2].copy_from_slice(&dh[j].to_le_bytes());
            ob[2..4].copy_from_slice(&mh[j].to_le_bytes());
            // SAFETY: `ob[4..20]` is 16 bytes.
            unsafe { _mm_storeu_si128(ob[4..20].as_mut_ptr().cast(), pack_nibbles(v0, v1)) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `round_away` equals `f32::round` for every f32 with |x| ≤ 256 (both signs), which covers
    /// all Q8_0 can produce (|x·id| ≤ 127.0001), and for every f32 around 2^23, where the spacing
    /// of floats reaches 1 and `floor(x + 0.5)`-style shortcuts break.
    #[test]
    fn round_away_is_exact_exhaustively() {
        if !std::is_x86_feature_detected!("avx512f") || !std::is_x86_feature_detected!("avx512bw") {
            return;
        }
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
        fn check(start: u32, end: u32) -> Option<u32> {
            let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let mut b = start;
            while b < end {
                for sign in [0u32, 0x8000_0000] {
                    let bits = _mm512_add_epi32(_mm512_set1_epi32((b | sign) as i32), lanes);
                    let got = round_away(_mm512_castsi512_ps(bits));
                    let mut g = [0i32; 16];
                    // SAFETY: 16 i32 of room.
                    unsafe { _mm512_storeu_si512(g.as_mut_ptr().cast(), got) };
                    for (k, &gv) in g.iter().enumerate() {
                        let x = f32::from_bits((b | sign) + k as u32);
                        if gv != x.round() as i32 {
                            return Some(x.to_bits());
                        }
                    }
                }
                b += 16;
            }
            None
        }
        // SAFETY: features checked above.
        let bad = unsafe { check(0, 0x4380_0010).or(check(0x4aff_0000, 0x4b01_0000)) };
        assert_eq!(bad.map(f32::from_bits), None);
    }
}
