//! AVX2 (+ F16C) kernels for Q8_0, Q4_0, Q4_1 and Q5_0.
//!
//! Same algorithm as the AVX-512 kernels with a block in four ymm registers: fused source
//! conversion on load, the scalar reference's arithmetic lane by lane (separate mul and add, never
//! FMA), integer maxima of |x| bit patterns (which also flag NaN/inf blocks for the scalar path).

use crate::blocks::{quantize_blocks_ref, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8_0, GgmlType, QK};
use crate::convert::load;
use crate::convert::{with_src, Dtype};
use crate::metrics::x86::LaneAcc256;
use crate::metrics::Lanes;
use crate::simd::x86::{load8, PREFETCH};
use crate::{QuantError, SrcDtype};
use std::arch::x86_64::*;

/// Quantize whole blocks of `ty` (Q8_0, Q4_0, Q4_1 or Q5_0); `input` holds `out.len() / ty.type_size()`
/// blocks of `src` elements.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
pub(crate) unsafe fn quantize(ty: GgmlType, src: SrcDtype, input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    let mut unused = Lanes::default();
    // SAFETY: the caller guarantees the features.
    unsafe { quantize_impl::<false>(ty, src, input, out, &mut unused) }
}

/// [`quantize`] and [`stats`] in one pass: each block's error statistics are taken while its
/// source values are still in registers and its bytes in L1, instead of a second pass that loads
/// and converts the whole input again (the statistics cost ⅔ of the quantization otherwise).
/// Same sums, bit for bit, as [`stats`] after [`quantize`]; `lanes` is only updated on success.
///
/// # Safety
/// As [`quantize`]; `lanes.count` a multiple of 8.
pub(crate) unsafe fn quantize_with_stats(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    out: &mut [u8],
    lanes: &mut Lanes,
) -> Result<(), QuantError> {
    // SAFETY: as above.
    unsafe { quantize_impl::<true>(ty, src, input, out, lanes) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_impl<const ST: bool>(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    out: &mut [u8],
    lanes: &mut Lanes,
) -> Result<(), QuantError> {
    // SAFETY: the caller guarantees the features; the kernels bound every access by the slices.
    unsafe {
        match ty {
            GgmlType::Q8_0 => with_src!(src, S => q8_0::<S, ST>(input, out, lanes)),
            GgmlType::Q4_0 => with_src!(src, S => q4_0::<S, ST>(input, out, lanes)),
            // Q5_0 (only a K-quant fallback) has no fused statistics: callers take the separate pass.
            GgmlType::Q5_0 => with_src!(src, S => q5_0::<S>(input, out)),
            GgmlType::Q4_1 => with_src!(src, S => q4_1::<S, ST>(input, out, lanes)),
            // No AVX2 kernel.
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q6_K => {
                Err(QuantError::Unsupported(ty.name()))
            }
        }
    }
}

/// Running statistics of one kernel call: the lane accumulator and the element count.
struct BlockStats {
    acc: LaneAcc256,
    n: u64,
}

impl BlockStats {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn new(lanes: &Lanes) -> Self {
        debug_assert_eq!(lanes.count % 8, 0);
        BlockStats { acc: LaneAcc256::load(lanes), n: 0 }
    }

    /// Add a block: its source `x` against what its written bytes `ob` decode to.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn add(&mut self, ty: Fused, x: &[__m256; 4], ob: &[u8]) {
        self.add_xy(x, &dequant_block(ty, ob));
    }

    /// Add a block: its source `x` against its reconstruction `y` (computed from the codes still in
    /// registers, exactly as [`dequant_block`] decodes them; reading the just-stored bytes back
    /// instead stalls on store forwarding).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn add_xy(&mut self, x: &[__m256; 4], y: &[__m256; 4]) {
        // Vector v holds elements 8v..8v+8, in lanes 0..8 (element j in lane j % 8).
        for v in 0..4 {
            self.acc.add8(x[v], y[v]);
        }
        self.n += QK as u64;
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn store(self, lanes: &mut Lanes) {
        self.acc.store(lanes);
        lanes.count += self.n;
    }
}

/// Load a block of 32 elements as four vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_block<S: Dtype>(b: &[u8]) -> [__m256; 4] {
    debug_assert_eq!(b.len(), QK * S::SRC.size());
    let p = b.as_ptr();
    let step = 8 * S::SRC.size();
    // SAFETY: `b` holds exactly 32 elements.
    unsafe { [load8::<S>(p), load8::<S>(p.add(step)), load8::<S>(p.add(2 * step)), load8::<S>(p.add(3 * step))] }
}

/// Prefetch the input block [`PREFETCH`] bytes ahead (see there).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn prefetch_ahead(b: &[u8]) {
    let p = b.as_ptr().wrapping_add(PREFETCH);
    let mut off = 0;
    while off < b.len() {
        // A hint: never faults, whatever the address.
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast());
        off += 64;
    }
}

/// f32 → f16 bits, round to nearest even (exactly `convert::f32_to_f16`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_bits(x: f32) -> u16 {
    _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))) as u16
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax_epu32(v: __m256i) -> u32 {
    let m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    _mm_cvtsi128_si32(m) as u32
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmin_ps(v: __m256) -> f32 {
    let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_min_ss(m, _mm_shuffle_ps::<0b01>(m, m));
    _mm_cvtss_f32(m)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax_ps(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<0b01>(m, m));
    _mm_cvtss_f32(m)
}

/// |x| bit patterns of a block, and their maximum (≥ 0x7f80_0000 when a NaN/inf is present).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn abs_bits(x: &[__m256; 4]) -> ([__m256i; 4], u32) {
    let m = _mm256_set1_epi32(0x7fff_ffff);
    let a = x.map(|v| _mm256_and_si256(_mm256_castps_si256(v), m));
    let hmax = hmax_epu32(_mm256_max_epu32(_mm256_max_epu32(a[0], a[1]), _mm256_max_epu32(a[2], a[3])));
    (a, hmax)
}

/// `roundf` (half away from zero) of every lane, as i32; see the AVX-512 twin for the proof sketch.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_away(v: __m256) -> __m256i {
    let sign = _mm256_set1_ps(-0.0);
    let a = _mm256_andnot_ps(sign, v);
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(a);
    let f = _mm256_sub_ps(a, t);
    let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(f, _mm256_set1_ps(0.5)), _mm256_set1_ps(1.0));
    let r = _mm256_or_ps(_mm256_add_ps(t, up), _mm256_and_ps(v, sign));
    _mm256_cvttps_epi32(r)
}

/// Restores element order after two rounds of in-lane packing.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unlane() -> __m256i {
    _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)
}

/// Blocks whose scales are computed together: the two dependent divisions of a block's scale
/// (`d = m / k`, `id = 1 / d`) are a ~25-cycle latency chain that, block by block, the kernel
/// waits on; eight blocks share one vector division instead (IEEE division is the same in a
/// vector lane as in a scalar).
const GROUP: usize = 8;

/// The scale arithmetic of up to [`GROUP`] blocks: `d = num / div`, `id = d != 0 ? 1 / d : 0`,
/// `d` as f16 bits and that f16 back in f32 (what the block decodes with).
struct Scales {
    id: [f32; GROUP],
    dh: [u16; GROUP],
    dq: [f32; GROUP],
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales(num: &[f32; GROUP], div: f32) -> Scales {
    // SAFETY: unaligned loads/stores of 8 lanes from/to 8-element arrays.
    unsafe {
        let d = _mm256_div_ps(_mm256_loadu_ps(num.as_ptr()), _mm256_set1_ps(div));
        let nz = _mm256_cmp_ps::<_CMP_NEQ_OQ>(d, _mm256_setzero_ps());
        let id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0), d), nz);
        let dh = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(d);
        let mut s = Scales { id: [0.0; GROUP], dh: [0; GROUP], dq: [0.0; GROUP] };
        _mm256_storeu_ps(s.id.as_mut_ptr(), id);
        _mm_storeu_si128(s.dh.as_mut_ptr().cast(), dh);
        _mm256_storeu_ps(s.dq.as_mut_ptr(), _mm256_cvtph_ps(dh));
        s
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0<S: Dtype, const ST: bool>(input: &[u8], out: &mut [u8], lanes: &mut Lanes) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK * src.size();
    let mut st = BlockStats::new(lanes);
    for (g, (ig, og)) in input.chunks(GROUP * in_blk).zip(out.chunks_mut(GROUP * 34)).enumerate() {
        // Pass 1: each block's max |x|; a NaN/inf goes to the reference, which reports it.
        let mut amax = [0f32; GROUP];
        for (k, ib) in ig.chunks_exact(in_blk).enumerate() {
            prefetch_ahead(ib);
            // SAFETY: `ib` is one whole block.
            let hmax = abs_bits(&unsafe { load_block::<S>(ib) }).1;
            if hmax >= 0x7f80_0000 {
                return quantize_blocks_ref::<BlockQ8_0>(src, ig, og, g * GROUP * QK);
            }
            amax[k] = f32::from_bits(hmax);
        }
        let sc = scales(&amax, 127.0);
        // Pass 2: codes (the block is still in L1).
        for (k, (ib, ob)) in ig.chunks_exact(in_blk).zip(og.chunks_exact_mut(34)).enumerate() {
            // SAFETY: `ib` is one whole block.
            let x = unsafe { load_block::<S>(ib) };
            ob[..2].copy_from_slice(&sc.dh[k].to_le_bytes());
            if sc.id[k] == f32::INFINITY {
                // 1/d overflowed: the references store 0 for every element (see `cvtt_i8`).
                ob[2..34].fill(0);
                if ST {
                    st.add(Fused::Q8_0, &x, ob);
                }
                continue;
            }
            let vid = _mm256_set1_ps(sc.id[k]);
            let q = x.map(|v| round_away(_mm256_mul_ps(v, vid)));
            // Saturating packs (like the reference's saturating cast), then undo the lane interleave.
            let p01 = _mm256_packs_epi32(q[0], q[1]);
            let p23 = _mm256_packs_epi32(q[2], q[3]);
            let b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), unlane());
            // SAFETY: `ob[2..34]` is 32 bytes.
            unsafe { _mm256_storeu_si256(ob[2..34].as_mut_ptr().cast(), b) };
            if ST {
                // The stored codes are the saturated ones.
                let (lo, hi) = (_mm256_set1_epi32(-128), _mm256_set1_epi32(127));
                let vd = _mm256_set1_ps(sc.dq[k]);
                let y = q.map(|q| _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(q, lo), hi)), vd));
                st.add_xy(&x, &y);
            }
        }
    }
    if ST {
        st.store(lanes);
    }
    Ok(())
}

/// `min(15, trunc(v))` of a block: its 4-bit codes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles(v: [__m256; 4]) -> [__m256i; 4] {
    let fifteen = _mm256_set1_epi32(15);
    v.map(|v| _mm256_min_epi32(_mm256_cvttps_epi32(v), fifteen))
}

/// A block's codes packed as `q[j] | q[j + 16] << 4` into 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pack_nibbles(q: [__m256i; 4]) -> __m128i {
    let r0 = _mm256_or_si256(q[0], _mm256_slli_epi32::<4>(q[2]));
    let r1 = _mm256_or_si256(q[1], _mm256_slli_epi32::<4>(q[3]));
    let w = _mm256_packus_epi32(r0, r1);
    let b = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w, w), unlane());
    _mm256_castsi256_si128(b)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0<S: Dtype, const ST: bool>(input: &[u8], out: &mut [u8], lanes: &mut Lanes) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK * src.size();
    let mut st = BlockStats::new(lanes);
    for (g, (ig, og)) in input.chunks(GROUP * in_blk).zip(out.chunks_mut(GROUP * 18)).enumerate() {
        // Pass 1: each block's signed value of largest magnitude (the first one, as the reference).
        let mut max = [0f32; GROUP];
        for (k, ib) in ig.chunks_exact(in_blk).enumerate() {
            prefetch_ahead(ib);
            // SAFETY: `ib` is one whole block.
            let (a, hmax) = abs_bits(&unsafe { load_block::<S>(ib) });
            if hmax >= 0x7f80_0000 {
                return quantize_blocks_ref::<BlockQ4_0>(src, ig, og, g * GROUP * QK);
            }
            let hv = _mm256_set1_epi32(hmax as i32);
            let mut mask = 0u32;
            for (j, &aj) in a.iter().enumerate() {
                let m = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(aj, hv))) as u32;
                mask |= m << (8 * j);
            }
            max[k] = load(src, ib, mask.trailing_zeros() as usize);
        }
        let sc = scales(&max, -8.0);
        // Pass 2: codes.
        for (k, (ib, ob)) in ig.chunks_exact(in_blk).zip(og.chunks_exact_mut(18)).enumerate() {
            // SAFETY: `ib` is one whole block.
            let x = unsafe { load_block::<S>(ib) };
            let (vid, half) = (_mm256_set1_ps(sc.id[k]), _mm256_set1_ps(8.5));
            let v = x.map(|v| _mm256_add_ps(_mm256_mul_ps(v, vid), half));
            ob[..2].copy_from_slice(&sc.dh[k].to_le_bytes());
            let q = nibbles(v);
            // SAFETY: `ob[2..18]` is 16 bytes.
            unsafe { _mm_storeu_si128(ob[2..18].as_mut_ptr().cast(), pack_nibbles(q)) };
            if ST {
                if sc.id[k].is_finite() {
                    // Finite `id` keeps every code in 0..=15, so the registers hold the stored codes.
                    let (vd, eight) = (_mm256_set1_ps(sc.dq[k]), _mm256_set1_epi32(8));
                    let y = q.map(|q| _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_sub_epi32(q, eight))));
                    st.add_xy(&x, &y);
                } else {
                    st.add(Fused::Q4_0, &x, ob);
                }
            }
        }
    }
    if ST {
        st.store(lanes);
    }
    Ok(())
}

/// Q5_0: like Q4_0 with `max / -16`, codes `min(31, trunc(x * id + 16.5))`, the low nibbles
/// packed as Q4_0's and the fifth bits gathered by `movemask` (bit 4 shifted into the sign).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0<S: Dtype>(input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK * src.size();
    for (i, (ib, ob)) in input.chunks_exact(in_blk).zip(out.chunks_exact_mut(22)).enumerate() {
        prefetch_ahead(ib);
        // SAFETY: `ib` is one whole block.
        let x = unsafe { load_block::<S>(ib) };
        let (a, hmax) = abs_bits(&x);
        if hmax >= 0x7f80_0000 {
            return quantize_blocks_ref::<BlockQ5_0>(src, ib, ob, i * QK);
        }
        // The reference's loop starts from `max = +0` and replaces it only on a strictly larger
        // |x|: an all-zero block keeps +0 (whatever the sign of its zeros), else the first
        // element of largest |x| sets the scale.
        let max = if hmax == 0 {
            0.0
        } else {
            let hv = _mm256_set1_epi32(hmax as i32);
            let mut mask = 0u32;
            for (k, &ak) in a.iter().enumerate() {
                let m = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(ak, hv))) as u32;
                mask |= m << (8 * k);
            }
            load(src, ib, mask.trailing_zeros() as usize)
        };
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (vid, k) = (_mm256_set1_ps(id), _mm256_set1_ps(16.5));
        // Truncate, clamp to 31. NaN/inf lanes (id overflowed) become i32::MIN, whose low five
        // bits are 0: the reference's `(int8_t)` of `cvttss2si` stores 0 there too.
        let q = x.map(|v| {
            _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(v, vid), k)), _mm256_set1_epi32(31))
        });
        let mut qh = 0u32;
        for (j, &qj) in q.iter().enumerate() {
            let bit4 = _mm256_castsi256_ps(_mm256_slli_epi32::<27>(qj));
            qh |= (_mm256_movemask_ps(bit4) as u32) << (8 * j);
        }
        let f = _mm256_set1_epi32(15);
        let lo = q.map(|v| _mm256_and_si256(v, f));
        let r0 = _mm256_or_si256(lo[0], _mm256_slli_epi32::<4>(lo[2]));
        let r1 = _mm256_or_si256(lo[1], _mm256_slli_epi32::<4>(lo[3]));
        let w = _mm256_packus_epi32(r0, r1);
        let b = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(w, w), unlane());
        ob[..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        ob[2..6].copy_from_slice(&qh.to_le_bytes());
        // SAFETY: `ob[6..22]` is 16 bytes.
        unsafe { _mm_storeu_si128(ob[6..22].as_mut_ptr().cast(), _mm256_castsi256_si128(b)) };
    }
    Ok(())
}

/// The first element of the block comparing equal to 0.0, with its sign (see the AVX-512 twin).
#[inline]
fn first_zero(src: SrcDtype, b: &[u8]) -> f32 {
    (0..QK).map(|j| load(src, b, j)).find(|&v| v == 0.0).unwrap_or(0.0)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1<S: Dtype, const ST: bool>(input: &[u8], out: &mut [u8], lanes: &mut Lanes) -> Result<(), QuantError> {
    let src = S::SRC;
    let in_blk = QK * src.size();
    let mut st = BlockStats::new(lanes);
    for (i, (ib, ob)) in input.chunks_exact(in_blk).zip(out.chunks_exact_mut(20)).enumerate() {
        prefetch_ahead(ib);
        // SAFETY: `ib` is one whole block.
        let x = unsafe { load_block::<S>(ib) };
        let (_, hmax) = abs_bits(&x);
        if hmax >= 0x7f80_0000 {
            return quantize_blocks_ref::<BlockQ4_1>(src, ib, ob, i * QK);
        }
        let mut min = hmin_ps(_mm256_min_ps(_mm256_min_ps(x[0], x[1]), _mm256_min_ps(x[2], x[3])));
        let mut max = hmax_ps(_mm256_max_ps(_mm256_max_ps(x[0], x[1]), _mm256_max_ps(x[2], x[3])));
        if min == 0.0 {
            min = first_zero(src, ib);
        }
        if max == 0.0 {
            max = first_zero(src, ib);
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (vmin, vid, h) = (_mm256_set1_ps(min), _mm256_set1_ps(id), _mm256_set1_ps(0.5));
        let v = x.map(|v| _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, vmin), vid), h));
        let (dh, mh) = (f16_bits(d), f16_bits(min));
        ob[..2].copy_from_slice(&dh.to_le_bytes());
        ob[2..4].copy_from_slice(&mh.to_le_bytes());
        let q = nibbles(v);
        // SAFETY: `ob[4..20]` is 16 bytes.
        unsafe { _mm_storeu_si128(ob[4..20].as_mut_ptr().cast(), pack_nibbles(q)) };
        if ST {
            if d.is_finite() && id.is_finite() {
                // Then every code is in 0..=15: the registers hold the stored codes.
                let vd = _mm256_set1_ps(crate::convert::f16_to_f32(dh));
                let vm = _mm256_set1_ps(crate::convert::f16_to_f32(mh));
                let y = q.map(|q| _mm256_add_ps(_mm256_mul_ps(vd, _mm256_cvtepi32_ps(q)), vm));
                st.add_xy(&x, &y);
            } else {
                st.add(Fused::Q4_1, &x, ob);
            }
        }
    }
    if ST {
        st.store(lanes);
    }
    Ok(())
}

/// Error statistics of quantized blocks against their source, accumulated in the sixteen f64
/// lanes of [`crate::metrics::Lanes`] exactly as its scalar `add` does (element `j` of a block
/// in lane `j % 8`, element `j` before `j + 8`, fused multiply-add): bit-identical sums.
///
/// Why here: without it the AVX2 path fell back to a scalar f64 pass that cost more CPU than
/// quantizing (1.5 CPU-seconds per GB of bf16 input on this machine).
///
/// # Safety
/// The CPU must support AVX2 and F16C; `ty` is Q8_0, Q4_0 or Q4_1 and `out` holds the quantized
/// blocks of `input` (whole blocks; `lanes.count` a multiple of 8).
pub(crate) unsafe fn stats(ty: GgmlType, src: SrcDtype, input: &[u8], out: &[u8], lanes: &mut Lanes) -> bool {
    let Some(ty) = Fused::of(ty) else { return false };
    // SAFETY: the caller guarantees the features.
    unsafe { with_src!(src, S => stats_impl::<S>(ty, input, out, lanes)) }
    true
}

/// The formats whose statistics this file computes (from registers or from the written bytes).
#[derive(Debug, Clone, Copy)]
enum Fused {
    Q8_0,
    Q4_0,
    Q4_1,
}

impl Fused {
    /// Bytes per block.
    const fn bytes(self) -> usize {
        match self {
            Fused::Q8_0 => 34,
            Fused::Q4_0 => 18,
            Fused::Q4_1 => 20,
        }
    }
}

impl Fused {
    fn of(ty: GgmlType) -> Option<Fused> {
        // Every type named: a new one must decide here whether it has statistics in this file.
        match ty {
            GgmlType::Q8_0 => Some(Fused::Q8_0),
            GgmlType::Q4_0 => Some(Fused::Q4_0),
            GgmlType::Q4_1 => Some(Fused::Q4_1),
            GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q4_K
            | GgmlType::Q6_K => None,
        }
    }
}

/// Dequantize one block's bytes to four vectors (elements 0..8, 8..16, 16..24, 24..32), with the
/// reference's arithmetic (`q * d`, `d * q + m`, multiply then add).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dequant_block(ty: Fused, b: &[u8]) -> [__m256; 4] {
    let h = |o: usize| crate::convert::f16_to_f32(u16::from_le_bytes([b[o], b[o + 1]]));
    let d = _mm256_set1_ps(h(0));
    // SAFETY: every block format stores at least 16 bytes after its header; unaligned 8-byte loads.
    unsafe {
        let ld8 = |o: usize| _mm_loadl_epi64(b[o..o + 8].as_ptr().cast());
        match ty {
            Fused::Q8_0 => {
                let q = |o: usize| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(ld8(o)));
                [2, 10, 18, 26].map(|o| _mm256_mul_ps(q(o), d))
            }
            Fused::Q4_0 => {
                let (f, eight) = (_mm256_set1_epi32(15), _mm256_set1_epi32(8));
                let (a, b2) = (_mm256_cvtepu8_epi32(ld8(2)), _mm256_cvtepu8_epi32(ld8(10)));
                let lo = |q: __m256i| _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(q, f), eight));
                let hi = |q: __m256i| _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32::<4>(q), eight));
                [lo(a), lo(b2), hi(a), hi(b2)].map(|q| _mm256_mul_ps(d, q))
            }
            Fused::Q4_1 => {
                let m = _mm256_set1_ps(h(2));
                let f = _mm256_set1_epi32(15);
                let (a, b2) = (_mm256_cvtepu8_epi32(ld8(4)), _mm256_cvtepu8_epi32(ld8(12)));
                let lo = |q: __m256i| _mm256_cvtepi32_ps(_mm256_and_si256(q, f));
                let hi = |q: __m256i| _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(q));
                [lo(a), lo(b2), hi(a), hi(b2)].map(|q| _mm256_add_ps(_mm256_mul_ps(d, q), m))
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn stats_impl<S: Dtype>(ty: Fused, input: &[u8], out: &[u8], lanes: &mut Lanes) {
    let in_blk = QK * S::SRC.size();
    let mut st = BlockStats::new(lanes);
    for (ib, ob) in input.chunks_exact(in_blk).zip(out.chunks_exact(ty.bytes())) {
        // SAFETY: `ib` is one whole block.
        let x = unsafe { load_block::<S>(ib) };
        st.add(ty, &x, ob);
    }
    st.store(lanes);
}
