//! AVX2 and AVX-512 kernels for the compressed-tensors schemes.
//!
//! One group at a time, two passes over its (L1-resident) source bytes: the first loads with the
//! dtype conversion fused (bf16: widen and shift; f16: `vcvtph2ps`, exact; f32: unaligned load),
//! takes min/max and flags NaN/inf by their all-ones exponent; the group's scale and zero point
//! then come from the scalar [`qparams`] (one per 32..N elements, so its cost is small and its
//! rounding is by definition the reference's). The second pass does, lane by lane, exactly the
//! scalar steps: a true IEEE division (`vdivps`, never reciprocal-multiply, as torch divides),
//! rounding to the element dtype (bf16: integer round-to-nearest-even on the bit pattern; f16:
//! `vcvtps2ph` with round-to-nearest then back), `+ zp` and its rounding when asymmetric,
//! `roundscale` to nearest-even integer, clamp, `+ 2^(bits-1)`, and packs the nibbles/bytes.
//! A row with a non-finite value is reported exactly as the scalar path reports it.
//!
//! Groups whose length is not a multiple of the vector width (rare: odd per-channel rows) go to
//! the scalar reference for the whole call.

use super::scalar::{put_zp, qparams, store_scale};
use super::{elem_dtype, CtChunk, CtOutput, CtPacked, CtScheme, Geom, ScaleDtype};
use crate::convert::load;
use crate::convert::{with_src, Dtype, F32};
use crate::metrics::x86::LaneAcc256;
use crate::metrics::Lanes;
use crate::simd::x86::{load16, load8, round16, round8};
use crate::simd::Level;
use crate::{QuantError, SrcDtype};
use std::arch::x86_64::*;

/// Run the SIMD kernel of `level` for this call; `Ok(false)` when the shape needs the scalar
/// reference instead.
///
/// # Safety
/// The CPU must support `level`'s features (AVX2 + F16C, or AVX-512 F/BW/VL + F16C).
pub(crate) unsafe fn quantize(level: Level, c: &CtChunk, g: &Geom, out: CtOutput) -> Result<bool, QuantError> {
    let width = if level == Level::Avx512 { 16 } else { 8 };
    if !g.group.is_multiple_of(width) {
        return Ok(false);
    }
    let mut unused = Lanes::default();
    // SAFETY: as [`quantize_with_stats`]'s contract, which is this function's.
    unsafe { dispatch::<false>(level, c, g, out, &mut unused)? };
    Ok(true)
}

/// What [`quantize_with_stats`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fused {
    /// The SIMD path does not apply to this shape: nothing was written, run [`quantize`] or the
    /// scalar reference.
    NotApplicable,
    /// Bytes written and `lanes` holds the statistics, bit-identical to [`stats`] after
    /// [`quantize`].
    BytesAndStats,
    /// Bytes written, but the statistics must come from the scalar pass (a non-finite scale; see
    /// [`stats`]).
    BytesOnly,
}

/// [`quantize`] plus the chunk's error statistics in the same pass (the AVX2 kernel, also on
/// AVX-512 machines: one pass beats a faster quantizer plus a second pass over the input).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
pub(crate) unsafe fn quantize_with_stats(
    c: &CtChunk,
    g: &Geom,
    out: CtOutput,
    lanes: &mut Lanes,
) -> Result<Fused, QuantError> {
    if !g.group.is_multiple_of(8) || !lanes.count.is_multiple_of(8) || !matches!(c.scheme.bits, 4 | 8) {
        return Ok(Fused::NotApplicable);
    }
    // SAFETY: the caller guarantees the features.
    let stats = unsafe { dispatch::<true>(Level::Avx2, c, g, out, lanes)? };
    Ok(if stats { Fused::BytesAndStats } else { Fused::BytesOnly })
}

/// Pick the kernel instance for the dtypes and scheme; returns whether `lanes` got the
/// statistics (only with `ST`, AVX2 width).
unsafe fn dispatch<const ST: bool>(
    level: Level,
    c: &CtChunk,
    g: &Geom,
    out: CtOutput,
    lanes: &mut Lanes,
) -> Result<bool, QuantError> {
    let CtChunk { scheme: ref s, src, scale_dtype: sd, input, .. } = *c;
    let CtOutput { packed, scale, zp } = out;
    // Intermediate values round to the source's own dtype or stay f32 (`elem_dtype`'s contract):
    // one cascade per axis (source dtype, element dtype, bits, symmetry) picks the instance.
    let own = elem_dtype(src, sd) == ScaleDtype::for_source(src);
    let k = Kernel { s, src, sd, input, g };
    let wide = level == Level::Avx512 && !ST;
    macro_rules! call {
        ($S:ty, $E:ty) => {{
            macro_rules! sym {
                ($B:literal) => {
                    if s.symmetric {
                        k.rows::<$S, $E, $B, true, ST>(wide, packed, scale, zp, lanes)
                    } else {
                        k.rows::<$S, $E, $B, false, ST>(wide, packed, scale, zp, lanes)
                    }
                };
            }
            match s.bits {
                4 => sym!(4),
                8 => sym!(8),
                b => Err(QuantError::Shape(format!("{b}-bit compressed-tensors has no kernel"))),
            }
        }};
    }
    // SAFETY: the caller guarantees the CPU features of `level` (AVX2 for `ST`); the kernels
    // bound every pointer access by the slice lengths validated in `check`.
    unsafe { with_src!(src, S => if own { call!(S, S) } else { call!(S, F32) }) }
}

/// The call's inputs, shared by both kernel widths.
struct Kernel<'a> {
    s: &'a CtScheme,
    src: SrcDtype,
    sd: ScaleDtype,
    input: &'a [u8],
    g: &'a Geom,
}

impl Kernel<'_> {
    /// Both widths behind one signature: AVX-512 (`wide`, never with statistics) or AVX2.
    ///
    /// # Safety
    /// The CPU features of the chosen width.
    #[inline(always)]
    unsafe fn rows<S: Dtype, E: Dtype, const B: u8, const SYM: bool, const ST: bool>(
        &self,
        wide: bool,
        packed: &mut [u8],
        scale: &mut [u8],
        zp: Option<&mut [u8]>,
        lanes: &mut Lanes,
    ) -> Result<bool, QuantError> {
        // SAFETY: per this function's contract.
        unsafe {
            if wide {
                self.rows512::<S, E, B, SYM>(packed, scale, zp).map(|()| false)
            } else {
                self.rows256::<S, E, B, SYM, ST>(packed, scale, zp, lanes)
            }
        }
    }

    /// The error the scalar reference reports for row `r` (first non-finite element).
    #[cold]
    fn non_finite(&self, r: usize) -> QuantError {
        let row = r * self.g.cols;
        for i in 0..self.g.cols {
            let v = load(self.src, self.input, row + i);
            if !v.is_finite() {
                return QuantError::NonFinite { index: row + i, value: v };
            }
        }
        QuantError::Shape("non-finite flag without a non-finite value".into())
    }

    /// Scale/zero point of chunk row `r`, group `j` from its min/max; stored to the outputs.
    #[inline(always)]
    fn params(&self, r: usize, j: usize, mn: f32, mx: f32, scale: &mut [u8], zp: &mut Option<&mut [u8]>) -> (f32, i32) {
        let (sc, z) = qparams(self.s, self.src, self.sd, mn, mx);
        store_scale(self.sd, scale, r * self.g.scale_cols + j, sc);
        if let Some(zpb) = zp.as_deref_mut() {
            put_zp(self.s, zpb, self.g.scale_cols, r, j, z);
        }
        (sc, z)
    }

    /// AVX-512 kernel over all rows of the chunk: common group sizes get a register-resident
    /// single-pass version (`NV` vectors per group), others the two-pass loop.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn rows512<S: Dtype, E: Dtype, const B: u8, const SYM: bool>(
        &self,
        packed: &mut [u8],
        scale: &mut [u8],
        zp: Option<&mut [u8]>,
    ) -> Result<(), QuantError> {
        // SAFETY: same contract as this function.
        unsafe {
            if S::SRC == SrcDtype::BF16 && self.g.group.is_multiple_of(32) {
                return match self.g.group {
                    32 => self.rows512_bf16::<E, B, SYM, 1>(packed, scale, zp),
                    64 => self.rows512_bf16::<E, B, SYM, 2>(packed, scale, zp),
                    128 => self.rows512_bf16::<E, B, SYM, 4>(packed, scale, zp),
                    _ => self.rows512_bf16::<E, B, SYM, 0>(packed, scale, zp),
                };
            }
            match self.g.group {
                32 => self.rows512_n::<S, E, B, SYM, 2>(packed, scale, zp),
                64 => self.rows512_n::<S, E, B, SYM, 4>(packed, scale, zp),
                128 => self.rows512_n::<S, E, B, SYM, 8>(packed, scale, zp),
                _ => self.rows512_n::<S, E, B, SYM, 0>(packed, scale, zp),
            }
        }
    }

    /// [`Self::rows512`] with `NV` 16-lane vectors per group held in registers (`NV = 0`: any
    /// multiple of 16, loaded twice).
    // `i` offsets the pointer and, for register-resident groups only, indexes `regs`.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn rows512_n<S: Dtype, E: Dtype, const B: u8, const SYM: bool, const NV: usize>(
        &self,
        packed: &mut [u8],
        scale: &mut [u8],
        mut zp: Option<&mut [u8]>,
    ) -> Result<(), QuantError> {
        let g = self.g;
        let es = self.src.size();
        let obytes = g.group * B as usize / 8;
        let pw = g.packed_cols * 4;
        assert!(self.input.len() >= g.rows * g.cols * es);
        assert!(packed.len() >= g.rows * pw && obytes * g.scale_cols <= pw);
        assert!(NV == 0 || (NV <= 8 && NV * 16 == g.group));
        let absm = _mm512_set1_epi32(0x7fff_ffff);
        let c = Q512 {
            qmin: _mm512_set1_ps(self.s.qmin() as f32),
            qmax: _mm512_set1_ps(self.s.qmax() as f32),
            off: _mm512_set1_epi32(1 << (B - 1)),
        };
        let mut regs = [_mm512_setzero_ps(); 8];
        for r in 0..g.rows {
            for j in 0..g.scale_cols {
                // SAFETY (all pointer use below): group j of row r lies inside `input` and its
                // `obytes` of output inside `packed` (asserted above); loads read 16 elements at
                // k + 16 <= group, stores write 8 or 16 bytes at k * B / 8 + that <= obytes.
                let gp = unsafe { self.input.as_ptr().add((r * g.cols + j * g.group) * es) };
                prefetch_ahead(gp, g.group * es);
                let op = unsafe { packed.as_mut_ptr().add(r * pw + j * obytes) };
                let nv = if NV > 0 { NV } else { g.group / 16 };
                let mut vmin = _mm512_set1_ps(f32::INFINITY);
                let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
                let mut amax = _mm512_setzero_si512();
                for i in 0..nv {
                    let v = unsafe { load16::<S>(gp.add(i * 16 * es)) };
                    if NV > 0 {
                        regs[i] = v;
                    }
                    // |v| as bits: order-preserving, and >= 0x7f800000 exactly for inf/NaN.
                    amax = _mm512_max_epu32(amax, _mm512_and_si512(_mm512_castps_si512(v), absm));
                    if !SYM {
                        vmin = _mm512_min_ps(vmin, v);
                        vmax = _mm512_max_ps(vmax, v);
                    }
                }
                let amax = _mm512_reduce_max_epu32(amax);
                if amax >= 0x7f80_0000 {
                    return Err(self.non_finite(r));
                }
                let (mn, mx) = if SYM {
                    (0.0, f32::from_bits(amax))
                } else {
                    (_mm512_reduce_min_ps(vmin), _mm512_reduce_max_ps(vmax))
                };
                let (sc, z) = self.params(r, j, mn, mx, scale, &mut zp);
                let vs = _mm512_set1_ps(sc);
                let vz = _mm512_set1_ps(z as f32);
                for i in 0..nv {
                    let v = if NV > 0 { regs[i] } else { unsafe { load16::<S>(gp.add(i * 16 * es)) } };
                    unsafe { q16::<E, B, SYM>(v, vs, vz, &c, op.add(i * 2 * B as usize)) };
                }
            }
        }
        Ok(())
    }

    /// bf16 AVX-512 kernel, `NP` pairs of vectors per group held in registers (`NP = 0`: any
    /// multiple of 32, loaded twice). A 64-byte load holds 32 bf16 values; as 16 dwords, the
    /// even elements are `dword << 16` and the odd ones `dword & 0xffff0000`, one operation each.
    /// Quantizing the two halves separately keeps each packed pair of elements in the same lane,
    /// so they combine with a shift and an add before one narrowing store.
    // `i` offsets the pointer and, for register-resident groups only, indexes `regs`.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn rows512_bf16<E: Dtype, const B: u8, const SYM: bool, const NP: usize>(
        &self,
        packed: &mut [u8],
        scale: &mut [u8],
        mut zp: Option<&mut [u8]>,
    ) -> Result<(), QuantError> {
        let g = self.g;
        let obytes = g.group * B as usize / 8;
        let pw = g.packed_cols * 4;
        assert!(self.src == SrcDtype::BF16 && self.input.len() >= g.rows * g.cols * 2);
        assert!(packed.len() >= g.rows * pw && obytes * g.scale_cols <= pw);
        assert!(NP == 0 || (NP <= 4 && NP * 32 == g.group));
        let absm = _mm512_set1_epi32(0x7fff_ffff);
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let qmin = _mm512_set1_ps(self.s.qmin() as f32);
        let qmax = _mm512_set1_ps(self.s.qmax() as f32);
        let mut regs = [_mm512_setzero_si512(); 4];
        let split = |w: __m512i| -> (__m512, __m512) {
            (_mm512_castsi512_ps(_mm512_slli_epi32::<16>(w)), _mm512_castsi512_ps(_mm512_and_si512(w, hi)))
        };
        for r in 0..g.rows {
            for j in 0..g.scale_cols {
                // SAFETY (all pointer use below): group j of row r lies inside `input` and its
                // `obytes` of output inside `packed` (asserted above); loads read 64 bytes at
                // 32 * i + 32 <= group elements, stores write B * 4 bytes at i * B * 4 + that
                // <= obytes.
                let gp = unsafe { self.input.as_ptr().add((r * g.cols + j * g.group) * 2) };
                prefetch_ahead(gp, g.group * 2);
                let op = unsafe { packed.as_mut_ptr().add(r * pw + j * obytes) };
                prefetch_out(op, PREFETCH * B as usize / 16, obytes);
                let np = if NP > 0 { NP } else { g.group / 32 };
                let mut vmin = _mm512_set1_ps(f32::INFINITY);
                let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
                let mut amax = _mm512_setzero_si512();
                for i in 0..np {
                    let w = unsafe { _mm512_loadu_si512(gp.add(i * 64).cast()) };
                    if NP > 0 {
                        regs[i] = w;
                    }
                    let (e, o) = split(w);
                    // |v| as bits: order-preserving, and >= 0x7f800000 exactly for inf/NaN.
                    let ae = _mm512_and_si512(_mm512_castps_si512(e), absm);
                    let ao = _mm512_and_si512(_mm512_castps_si512(o), absm);
                    amax = _mm512_max_epu32(amax, _mm512_max_epu32(ae, ao));
                    if !SYM {
                        vmin = _mm512_min_ps(vmin, _mm512_min_ps(e, o));
                        vmax = _mm512_max_ps(vmax, _mm512_max_ps(e, o));
                    }
                }
                let amax = _mm512_reduce_max_epu32(amax);
                if amax >= 0x7f80_0000 {
                    return Err(self.non_finite(r));
                }
                let (mn, mx) = if SYM {
                    (0.0, f32::from_bits(amax))
                } else {
                    (_mm512_reduce_min_ps(vmin), _mm512_reduce_max_ps(vmax))
                };
                let (sc, z) = self.params(r, j, mn, mx, scale, &mut zp);
                let vs = _mm512_set1_ps(sc);
                let vz = _mm512_set1_ps(z as f32);
                let quant = |v: __m512| -> __m512i {
                    let mut x = round16::<E>(_mm512_div_ps(v, vs));
                    if !SYM {
                        x = round16::<E>(_mm512_add_ps(x, vz));
                    }
                    let x = _mm512_min_ps(_mm512_max_ps(x, qmin), qmax);
                    _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x)
                };
                for i in 0..np {
                    let w = if NP > 0 { regs[i] } else { unsafe { _mm512_loadu_si512(gp.add(i * 64).cast()) } };
                    let (e, o) = split(w);
                    let (qe, qo) = (quant(e), quant(o));
                    // (qe + 2^(B-1)) | (qo + 2^(B-1)) << B, as one add: the fields cannot carry.
                    let bias = if B == 4 { 0x88 } else { 0x8080 };
                    let packed2 = _mm512_add_epi32(
                        _mm512_add_epi32(
                            qe,
                            if B == 4 { _mm512_slli_epi32::<4>(qo) } else { _mm512_slli_epi32::<8>(qo) },
                        ),
                        _mm512_set1_epi32(bias),
                    );
                    unsafe {
                        if B == 4 {
                            _mm_storeu_si128(op.add(i * 16).cast(), _mm512_cvtepi32_epi8(packed2));
                        } else {
                            _mm256_storeu_si256(op.add(i * 32).cast(), _mm512_cvtepi32_epi16(packed2));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// AVX2 kernel over all rows of the chunk (8 lanes).
    #[target_feature(enable = "avx2,fma,f16c")]
    ///
    /// With `ST`, also the error statistics in [`stats`]' lane order (element `i` of the chunk in
    /// lane `i % 8`), from the codes still in registers; returns whether they are valid (every
    /// scale finite, as [`stats`] requires), and only then are they added to `lanes`.
    unsafe fn rows256<S: Dtype, E: Dtype, const B: u8, const SYM: bool, const ST: bool>(
        &self,
        packed: &mut [u8],
        scale: &mut [u8],
        mut zp: Option<&mut [u8]>,
        lanes: &mut Lanes,
    ) -> Result<bool, QuantError> {
        let mut acc = LaneAcc256::load(lanes);
        let mut finite = true;
        let g = self.g;
        let es = self.src.size();
        let obytes = g.group * B as usize / 8;
        let pw = g.packed_cols * 4;
        assert!(self.input.len() >= g.rows * g.cols * es && packed.len() >= g.rows * pw);
        let expo = _mm256_set1_epi32(0x7f80_0000);
        let qmin = _mm256_set1_ps(self.s.qmin() as f32);
        let qmax = _mm256_set1_ps(self.s.qmax() as f32);
        let off = _mm256_set1_epi32(1 << (B - 1));
        for r in 0..g.rows {
            for j in 0..g.scale_cols {
                // SAFETY: as in rows512, with 8-element loads.
                let gp = unsafe { self.input.as_ptr().add((r * g.cols + j * g.group) * es) };
                prefetch_ahead(gp, g.group * es);
                let mut vmin = _mm256_set1_ps(f32::INFINITY);
                let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
                let mut bad = _mm256_setzero_si256();
                let mut k = 0;
                while k < g.group {
                    let v = unsafe { load8::<S>(gp.add(k * es)) };
                    let e = _mm256_and_si256(_mm256_castps_si256(v), expo);
                    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, expo));
                    vmin = _mm256_min_ps(vmin, v);
                    vmax = _mm256_max_ps(vmax, v);
                    k += 8;
                }
                if _mm256_testz_si256(bad, bad) == 0 {
                    return Err(self.non_finite(r));
                }
                let mut lo = [0f32; 8];
                let mut hi = [0f32; 8];
                // SAFETY: 8-float arrays, unaligned stores.
                unsafe {
                    _mm256_storeu_ps(lo.as_mut_ptr(), vmin);
                    _mm256_storeu_ps(hi.as_mut_ptr(), vmax);
                }
                let mn = lo.iter().fold(f32::INFINITY, |a, &b| a.min(b));
                let mx = hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let (sc, z) = self.params(r, j, mn, mx, scale, &mut zp);
                finite &= sc.is_finite();
                let vs = _mm256_set1_ps(sc);
                let vz = _mm256_set1_ps(z as f32);
                let viz = _mm256_set1_epi32(z);
                let out = &mut packed[r * pw + j * obytes..r * pw + (j + 1) * obytes];
                let mut k = 0;
                while k < g.group {
                    // Two vectors at a time when possible (16 values -> 8 or 16 bytes).
                    let mut quant = |p: *const u8| -> __m256i {
                        // SAFETY: p + 8 elements stays inside the group (k + 8 <= group).
                        let v = unsafe { load8::<S>(p) };
                        let mut x = round8::<E>(_mm256_div_ps(v, vs));
                        if !SYM {
                            x = round8::<E>(_mm256_add_ps(x, vz));
                        }
                        let q = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
                        let q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(q, qmin), qmax));
                        if ST {
                            // What `stats` decodes: (code - zero point) * scale, rounded to E.
                            let y = round8::<E>(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, viz)), vs));
                            acc.add8(v, y);
                        }
                        _mm256_add_epi32(q, off)
                    };
                    let u0 = quant(unsafe { gp.add(k * es) });
                    if k + 16 <= g.group {
                        let u1 = quant(unsafe { gp.add((k + 8) * es) });
                        let bytes = bytes16(u0, u1);
                        if B == 4 {
                            let b = nibbles(bytes);
                            out[k / 2..k / 2 + 8].copy_from_slice(&b.to_le_bytes());
                        } else {
                            let mut a = [0u8; 16];
                            // SAFETY: 16-byte array, unaligned store.
                            unsafe { _mm_storeu_si128(a.as_mut_ptr().cast(), bytes) };
                            out[k..k + 16].copy_from_slice(&a);
                        }
                        k += 16;
                    } else {
                        let bytes = bytes16(u0, _mm256_setzero_si256());
                        if B == 4 {
                            let b = nibbles(bytes);
                            out[k / 2..k / 2 + 4].copy_from_slice(&b.to_le_bytes()[..4]);
                        } else {
                            let mut a = [0u8; 16];
                            // SAFETY: 16-byte array, unaligned store.
                            unsafe { _mm_storeu_si128(a.as_mut_ptr().cast(), bytes) };
                            out[k..k + 8].copy_from_slice(&a[..8]);
                        }
                        k += 8;
                    }
                }
            }
        }
        if ST && finite {
            acc.store(lanes);
            lanes.count += (g.rows * g.cols) as u64;
        }
        Ok(ST && finite)
    }
}

/// Software prefetch distance in bytes of input: the hardware prefetcher alone leaves the
/// out-of-cache kernel waiting on DRAM. Measured on the 2-core AVX-512 machine, bf16 int4 g128,
/// 256 MiB, one thread: ~1.3 Gelem/s without, ~2.0 with 4096 (2048 and 8192 were slower).
const PREFETCH: usize = 4096;

/// Prefetch the `len` input bytes `PREFETCH` bytes after `p` (one hint per 64-byte line; a hint
/// never faults, whatever the address).
#[inline(always)]
fn prefetch_ahead(p: *const u8, len: usize) {
    let q = p.wrapping_add(PREFETCH);
    let mut off = 0;
    while off < len {
        // SAFETY: prefetch is a hint that never faults; SSE is baseline on x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(off).cast()) };
        off += 64;
    }
}

/// Prefetch with write intent the `len` output bytes `dist` bytes after `p`, so stores to fresh
/// lines of the packed tensor do not stall on the read-for-ownership (a hint; never faults).
#[inline(always)]
fn prefetch_out(p: *mut u8, dist: usize, len: usize) {
    let q = p.wrapping_add(dist);
    let mut off = 0;
    while off < len {
        // SAFETY: prefetch is a hint that never faults; SSE is baseline on x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_ET0>(q.wrapping_add(off).cast::<i8>()) };
        off += 64;
    }
}

/// Clamp bounds and offset of the AVX-512 element step.
struct Q512 {
    qmin: __m512,
    qmax: __m512,
    off: __m512i,
}

/// Quantize and pack 16 values (the scalar `quant_one` lane by lane) to `dst`: 8 bytes (int4)
/// or 16 bytes (int8). `clamp(round(x))` is computed as `round(clamp(x))`, equal because rounding
/// is monotonic and the bounds are integers; the rounding is the conversion's embedded
/// round-to-nearest-even.
///
/// # Safety
/// `dst` must be valid for `B * 2` bytes; AVX-512 F/BW/VL + F16C available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn q16<E: Dtype, const B: u8, const SYM: bool>(v: __m512, vs: __m512, vz: __m512, c: &Q512, dst: *mut u8) {
    let mut x = round16::<E>(_mm512_div_ps(v, vs));
    if !SYM {
        x = round16::<E>(_mm512_add_ps(x, vz));
    }
    let x = _mm512_min_ps(_mm512_max_ps(x, c.qmin), c.qmax);
    let q = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let u = _mm512_add_epi32(q, c.off);
    // SAFETY: per the function contract.
    unsafe {
        if B == 4 {
            // Each qword holds elements 2i (low dword) and 2i+1 (high dword, < 16): shifting the
            // qword right by 28 puts 2i+1 at bits 4..8 of the low byte; vpmovqb keeps that byte.
            let w = _mm512_or_si512(u, _mm512_srli_epi64::<28>(u));
            _mm_storel_epi64(dst.cast(), _mm512_cvtepi64_epi8(w));
        } else {
            _mm_storeu_si128(dst.cast(), _mm512_cvtepi32_epi8(u));
        }
    }
}

/// Pack 16 bytes holding values 0..15 into 8 bytes: element 2i in the low nibble of byte i,
/// element 2i+1 in the high nibble (so element k of each 32-bit LE word sits at bits 4k).
#[inline(always)]
fn nibbles(bytes: __m128i) -> u64 {
    // SAFETY: SSE2 is part of the x86-64 baseline.
    unsafe {
        let lo = _mm_and_si128(bytes, _mm_set1_epi16(0x000f));
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(bytes), _mm_set1_epi16(0x00f0));
        let w = _mm_or_si128(lo, hi); // 8 u16 lanes < 256
        _mm_cvtsi128_si64(_mm_packus_epi16(w, w)) as u64
    }
}

/// 16 i32 lanes (values 0..255) of two AVX2 vectors → 16 bytes in element order.
#[inline]
#[target_feature(enable = "avx2")]
fn bytes16(u0: __m256i, u1: __m256i) -> __m128i {
    let p = _mm256_packs_epi32(u0, u1); // [u0 0..3, u1 0..3 | u0 4..7, u1 4..7] as i16
    let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(p); // [u0 0..7 | u1 0..7]
    _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p))
}

/// Error statistics of a quantized chunk with AVX2, the SIMD twin of
/// [`super::scalar::accumulate_stats`]: same dequantization (`(q - zp) * scale` rounded to the
/// element dtype, integer steps first) and the same lane order of [`Lanes`], so the sums are
/// bit-identical. Returns `false` (nothing accumulated) when the shape or data needs the scalar
/// path: groups not a multiple of 8, a chunk not starting on a lane boundary, or a non-finite
/// scale (whose NaN products could differ in payload bits).
///
/// Why: the scalar pass cost more CPU than quantizing (2 CPU-seconds per GB of bf16 input).
///
/// # Safety
/// The CPU must support AVX2 and F16C.
pub(crate) unsafe fn stats(c: &CtChunk, g: &Geom, q: CtPacked, lanes: &mut Lanes) -> bool {
    let CtChunk { scheme: ref s, src, scale_dtype: sd, .. } = *c;
    if !g.group.is_multiple_of(8) || !lanes.count.is_multiple_of(8) || !matches!(s.bits, 4 | 8) {
        return false;
    }
    let n_scales = g.rows * g.scale_cols;
    if (0..n_scales).any(|i| !super::scalar::load_scale(sd, q.scale, i).is_finite()) {
        return false;
    }
    let ed = elem_dtype(src, sd);
    // SAFETY: the caller guarantees the features; every access is bounded by the checked geometry.
    unsafe {
        let own = ed == ScaleDtype::for_source(src);
        with_src!(src, S => if own { stats_rows::<S, S>(c, g, q, lanes) } else { stats_rows::<S, F32>(c, g, q, lanes) });
    }
    true
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn stats_rows<S: Dtype, E: Dtype>(c: &CtChunk, g: &Geom, q: CtPacked, lanes: &mut Lanes) {
    let CtChunk { scheme: ref s, scale_dtype: sd, input, .. } = *c;
    let CtPacked { packed, scale, zp } = q;
    let es = S::SRC.size();
    let off = 1i32 << (s.bits - 1);
    let mut acc = LaneAcc256::load(lanes);
    let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    // Element i of the chunk is in lane i % 8: every 8-element step fills lanes 0..8.
    for row in 0..g.rows {
        let x_row = &input[row * g.cols * es..(row + 1) * g.cols * es];
        let p_row = &packed[row * g.packed_cols * 4..(row + 1) * g.packed_cols * 4];
        for j in 0..g.scale_cols {
            let sc = _mm256_set1_ps(super::scalar::load_scale(sd, scale, row * g.scale_cols + j));
            let z = zp.map_or(0, |zpb| super::scalar::get_zp(s, zpb, g.scale_cols, row, j));
            let base = _mm256_set1_epi32(off + z);
            let mut c = j * g.group;
            while c < (j + 1) * g.group {
                let u = if s.bits == 4 {
                    let w = super::scalar::word(p_row, c / 8) as i32;
                    _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(w), shifts), _mm256_set1_epi32(15))
                } else {
                    // SAFETY: codes c..c+8 are bytes c..c+8 of the row (8-bit codes, LE words).
                    unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p_row[c..c + 8].as_ptr().cast())) }
                };
                let y = round8::<E>(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(u, base)), sc));
                // SAFETY: elements c..c+8 of the row are in `x_row`.
                let x = unsafe { load8::<S>(x_row[c * es..(c + 8) * es].as_ptr()) };
                acc.add8(x, y);
                c += 8;
            }
        }
    }
    acc.store(lanes);
    lanes.count += (g.rows * g.cols) as u64;
}
