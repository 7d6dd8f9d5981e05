//! FP8 source weights (`F8_E4M3` / `F8_E5M2` with block, per-channel or per-tensor scales)
//! decoded to f32 rows, as the references do: `w.float() * scale`, the scale broadcast over its
//! block (llama.cpp `convert_hf_to_gguf.py` `dequant_simple`, transformers' finegrained-fp8).
//!
//! Each FP8 code widens to f32 exactly, so the only rounding is the one f32 product per element;
//! scalar and SIMD paths therefore give identical bits. The SIMD paths turn a code into an f16
//! bit pattern with integer shifts (E5M2 *is* the top byte of an f16; E4M3 becomes the f16 with
//! the same exponent and mantissa fields, 2^8 too small, fixed by an exact multiply by 256) and
//! widen with F16C. A NaN code (E4M3 `0x7f`/`0xff`; E5M2 NaN or ±Inf) is refused: one would
//! poison a quantization block, and a checkpoint holding one is broken.
//!
//! Why decode rows instead of fusing into every quantizer's load: the scale depends on the
//! element's (row, column) block, which the row kernels (GGUF, K-quants, compressed-tensors,
//! `mse`, imatrix) do not know; the caller decodes a few rows at a time into a small, reused f32
//! buffer that stays in cache, so no tensor-sized f32 copy ever exists. The `rtn` legacy GGUF
//! types (Q8_0, Q4_0, Q4_1), where the decode is a visible share of the work, take
//! [`quantize_gguf_rows`] instead: 2048 values at a time decoded into an L1-resident buffer and
//! quantized from it, with the statistics carried across the pieces, so bytes and statistics
//! are those of the two-step path.

use crate::blocks::{GgmlType, QK};
use crate::metrics::{ErrorStats, Lanes};
use crate::{simd, Level, QuantError, SrcDtype};

/// The FP8 element encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8Format {
    /// `float8_e4m3fn`: 4 exponent bits (bias 7), 3 mantissa bits, no Inf, NaN = `0x7f`/`0xff`,
    /// max 448 (DeepSeek-V3, Kimi-K2, compressed-tensors FP8).
    E4M3,
    /// `float8_e5m2`: IEEE-like, the upper byte of an f16 (Inf and NaN exist).
    E5M2,
}

/// Exact value of one FP8 code (NaN for NaN codes, ±Inf for E5M2's Inf codes): the scalar
/// definition every other path is tested against.
pub fn decode(fmt: Fp8Format, code: u8) -> f32 {
    match fmt {
        Fp8Format::E5M2 => crate::convert::f16_to_f32(u16::from(code) << 8),
        Fp8Format::E4M3 => {
            if code & 0x7f == 0x7f {
                return f32::NAN;
            }
            let sign = if code & 0x80 != 0 { -1.0f32 } else { 1.0 };
            let e = i32::from((code >> 3) & 0x0f);
            let m = f32::from(code & 0x07);
            let mag = if e == 0 { m / 8.0 * 2f32.powi(-6) } else { (1.0 + m / 8.0) * 2f32.powi(e - 7) };
            sign * mag
        }
    }
}

/// Whether `code` decodes to NaN or ±Inf.
#[inline]
pub fn is_non_finite(fmt: Fp8Format, code: u8) -> bool {
    match fmt {
        Fp8Format::E4M3 => code & 0x7f == 0x7f,
        Fp8Format::E5M2 => code & 0x7c == 0x7c,
    }
}

/// How a weight's scale tensor covers it. A weight is `matrices` stacked matrices of
/// `rows × cols` (1 for a 2-D weight; 3-D expert stacks block their last two axes); the scale
/// grid of each matrix is `ceil(rows / block_rows) × ceil(cols / block_cols)`, row-major, the
/// matrices one after another. Per-channel scales are `block_rows = 1, block_cols = cols`, a
/// per-tensor scale `block_rows = rows, block_cols = cols`. A partial last block has its own entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Layout {
    /// Rows of one matrix.
    pub rows: usize,
    /// Columns (elements per row).
    pub cols: usize,
    /// Rows covered by one scale.
    pub block_rows: usize,
    /// Columns covered by one scale.
    pub block_cols: usize,
}

impl Fp8Layout {
    /// Scale entries per matrix row of blocks.
    pub fn scale_cols(&self) -> usize {
        self.cols.div_ceil(self.block_cols.max(1))
    }

    /// Scale rows per matrix.
    pub fn scale_rows(&self) -> usize {
        self.rows.div_ceil(self.block_rows.max(1))
    }

    /// Index of the first scale of flattened row `r` (matrices stacked).
    fn scale_row_base(&self, r: usize) -> usize {
        let (m, rr) = (r / self.rows, r % self.rows);
        (m * self.scale_rows() + rr / self.block_rows) * self.scale_cols()
    }
}

/// A weight's scale tensor: its raw little-endian bytes and dtype (F32, BF16 or F16).
#[derive(Debug, Clone, Copy)]
pub struct Fp8Scales<'a> {
    /// Scale bytes, the whole tensor.
    pub bytes: &'a [u8],
    /// Their dtype.
    pub dtype: SrcDtype,
}

/// Decode `out.len() / layout.cols` rows starting at flattened row `row0` of an FP8 weight:
/// `codes` holds exactly those rows. `out[i] = decode(code) * scale` in f32, one rounding.
/// A NaN/Inf code is [`QuantError::NonFinite`] with its element index within `codes`.
pub fn dequantize_rows(
    fmt: Fp8Format,
    codes: &[u8],
    scales: Fp8Scales<'_>,
    layout: &Fp8Layout,
    row0: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    dequantize_rows_at(simd::active_level(), fmt, codes, scales, layout, row0, out)
}

/// [`dequantize_rows`] at an explicit SIMD level (clamped to the CPU); identical output at every level.
pub fn dequantize_rows_at(
    level: Level,
    fmt: Fp8Format,
    codes: &[u8],
    scales: Fp8Scales<'_>,
    layout: &Fp8Layout,
    row0: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let cols = layout.cols;
    if cols == 0 || layout.rows == 0 || layout.block_rows == 0 || layout.block_cols == 0 {
        return if codes.is_empty() && out.is_empty() {
            Ok(())
        } else {
            Err(QuantError::Shape("FP8 layout with a zero dimension".into()))
        };
    }
    if codes.len() != out.len() || !codes.len().is_multiple_of(cols) {
        return Err(QuantError::Shape(format!(
            "FP8 rows: {} codes for {} outputs of rows of {cols}",
            codes.len(),
            out.len()
        )));
    }
    let n = codes.len() / cols;
    check_scales(scales, layout, row0, n)?;
    let level = simd::clamp(level);
    let mut rs = RowScales::default();
    for i in 0..n {
        let row = &codes[i * cols..(i + 1) * cols];
        let o = &mut out[i * cols..(i + 1) * cols];
        decode_span(level, fmt, row, rs.of(scales, layout, row0 + i), layout.block_cols, 0, o)
            .map_err(|j| QuantError::NonFinite { index: i * cols + j, value: decode(fmt, row[j]) })?;
    }
    Ok(())
}

/// The scales must cover rows `row0 .. row0 + n`.
fn check_scales(scales: Fp8Scales<'_>, layout: &Fp8Layout, row0: usize, n: usize) -> Result<(), QuantError> {
    let need = if n == 0 { 0 } else { layout.scale_row_base(row0 + n - 1) + layout.scale_cols() };
    if scales.bytes.len() < need * scales.dtype.size() {
        return Err(QuantError::Shape(format!(
            "FP8 scales: {} bytes, rows up to {} need {need} scales",
            scales.bytes.len(),
            row0 + n
        )));
    }
    Ok(())
}

/// The scales of the current block row, widened to f32 once: consecutive rows share them
/// (`block_rows` of them, 128 for DeepSeek-V3), so the per-row work is the decode alone.
#[derive(Default)]
struct RowScales {
    widened: Vec<f32>,
    base: Option<usize>,
}

impl RowScales {
    /// The widened scales of flattened row `r` (checked by [`check_scales`]).
    fn of(&mut self, scales: Fp8Scales<'_>, layout: &Fp8Layout, r: usize) -> &[f32] {
        let base = layout.scale_row_base(r);
        if self.base != Some(base) {
            self.widened.clear();
            let sc = layout.scale_cols();
            self.widened.extend((0..sc).map(|b| crate::convert::load(scales.dtype, scales.bytes, base + b)));
            self.base = Some(base);
        }
        &self.widened
    }
}

/// Elements of a row decoded at a time by [`quantize_gguf_rows_at`]: 8 KiB of f32, written and
/// read back while still in L1 (the decoded rows never travel to L2 and back).
const PIECE: usize = 2048;

/// Decode FP8 rows and quantize them to a legacy GGUF block type (Q8_0, Q4_0 or Q4_1, the `rtn`
/// quantizers) in one pass, [`PIECE`] elements at a time: the same bytes, and the same
/// statistics, as [`dequantize_rows`] into a buffer followed by one
/// [`crate::gguf::quantize_rows`] call (`SrcDtype::F32`) over it, without the buffer's round
/// trip through memory.
///
/// `Ok(false)`: the rows hold a NaN/Inf code or a product that is not finite; `out` is then
/// unspecified and `stats` untouched, and the caller takes the two-step path, which reports the
/// error with its index. Shape errors as those two functions; other types are
/// [`QuantError::Unsupported`].
#[allow(clippy::too_many_arguments)]
pub fn quantize_gguf_rows(
    ty: GgmlType,
    fmt: Fp8Format,
    codes: &[u8],
    scales: Fp8Scales<'_>,
    layout: &Fp8Layout,
    row0: usize,
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<bool, QuantError> {
    quantize_gguf_rows_at(simd::active_level(), ty, fmt, codes, scales, layout, row0, out, stats)
}

/// [`quantize_gguf_rows`] at an explicit SIMD level (clamped to the CPU); identical output at
/// every level.
#[allow(clippy::too_many_arguments)]
pub fn quantize_gguf_rows_at(
    level: Level,
    ty: GgmlType,
    fmt: Fp8Format,
    codes: &[u8],
    scales: Fp8Scales<'_>,
    layout: &Fp8Layout,
    row0: usize,
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<bool, QuantError> {
    if !matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1) {
        return Err(QuantError::Unsupported(ty.name()));
    }
    let cols = layout.cols;
    if layout.rows == 0 || layout.block_rows == 0 || layout.block_cols == 0 {
        return Err(QuantError::Shape("FP8 layout with a zero dimension".into()));
    }
    let n = crate::gguf::check_shape(ty, 1, codes.len(), cols, out.len())? / cols;
    check_scales(scales, layout, row0, n)?;
    let level = simd::clamp(level);
    let (rb, tsz) = (out.len() / n.max(1), ty.type_size());
    let mut lanes = stats.is_some().then(Lanes::default);
    let mut buf = [0f32; PIECE];
    let mut rs = RowScales::default();
    for i in 0..n {
        let sc = rs.of(scales, layout, row0 + i);
        let row = &codes[i * cols..(i + 1) * cols];
        let orow = &mut out[i * rb..(i + 1) * rb];
        let mut c0 = 0;
        while c0 < cols {
            let c1 = (c0 + PIECE).min(cols);
            let x = &mut buf[..c1 - c0];
            if decode_span(level, fmt, &row[c0..c1], sc, layout.block_cols, c0, x).is_err() {
                return Ok(false);
            }
            let o = &mut orow[c0 / QK * tsz..c1 / QK * tsz];
            match crate::gguf::quantize_piece(level, ty, SrcDtype::F32, f32_bytes(x), o, lanes.as_mut()) {
                Ok(()) => {}
                Err(QuantError::NonFinite { .. }) => return Ok(false),
                Err(e) => return Err(e),
            }
            c0 = c1;
        }
    }
    if let (Some(stats), Some(lanes)) = (stats, lanes) {
        stats.merge(&lanes.finish());
    }
    Ok(true)
}

/// Columns `c0 .. c0 + codes.len()` of one row: `scales[b]` covers columns `b * block_cols ..`.
/// `Err(j)`: the first non-finite code is at `codes[j]`. One dispatch per span; the SIMD paths
/// loop over the scale blocks themselves.
#[inline]
fn decode_span(
    level: Level,
    fmt: Fp8Format,
    codes: &[u8],
    scales: &[f32],
    block_cols: usize,
    c0: usize,
    out: &mut [f32],
) -> Result<(), usize> {
    debug_assert_eq!(codes.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    {
        match level {
            // SAFETY: `clamp` only returns levels whose features the CPU has.
            Level::Avx512 => return unsafe { x86::span16(fmt, codes, scales, block_cols, c0, out) },
            // SAFETY: as above.
            Level::Avx2 => return unsafe { x86::span8(fmt, codes, scales, block_cols, c0, out) },
            Level::Scalar => {}
        }
    }
    let _ = level;
    for_runs(codes.len(), block_cols, c0, |a, b, blk| {
        decode_run_scalar(fmt, &codes[a..b], scales[blk], &mut out[a..b]).map_err(|j| a + j)
    })
}

/// Split the span of `len` columns starting at column `c0` into runs under one scale each:
/// `f(a, b, block)` gets span-relative bounds and the scale block's index.
#[inline(always)]
fn for_runs(
    len: usize,
    block_cols: usize,
    c0: usize,
    mut f: impl FnMut(usize, usize, usize) -> Result<(), usize>,
) -> Result<(), usize> {
    let mut a = 0;
    while a < len {
        let blk = (c0 + a) / block_cols;
        let b = ((blk + 1) * block_cols - c0).min(len);
        f(a, b, blk)?;
        a = b;
    }
    Ok(())
}

/// The scalar twin: table decode and one f32 product per element.
fn decode_run_scalar(fmt: Fp8Format, codes: &[u8], s: f32, out: &mut [f32]) -> Result<(), usize> {
    let t = table(fmt);
    for (j, (&c, o)) in codes.iter().zip(out.iter_mut()).enumerate() {
        if is_non_finite(fmt, c) {
            return Err(j);
        }
        *o = t[c as usize] * s;
    }
    Ok(())
}

/// The 256 decoded values of a format, built once from [`decode`].
pub fn table(fmt: Fp8Format) -> &'static [f32; 256] {
    use std::sync::OnceLock;
    static E4M3: OnceLock<[f32; 256]> = OnceLock::new();
    static E5M2: OnceLock<[f32; 256]> = OnceLock::new();
    let cell = match fmt {
        Fp8Format::E4M3 => &E4M3,
        Fp8Format::E5M2 => &E5M2,
    };
    cell.get_or_init(|| std::array::from_fn(|c| decode(fmt, c as u8)))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! FP8 → f16 bits by shifts, F16C widening, exact ×256 for E4M3, then the scale product.

    use super::{decode_run_scalar, for_runs, Fp8Format};

    /// How far ahead (bytes) the AVX-512 decode prefetches its codes.
    const PREFETCH: usize = 2048;
    use std::arch::x86_64::*;

    /// A span of a row (from column `c0`), each scale block with its own scale, at 16 lanes.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and F16C available.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn span16(
        fmt: Fp8Format,
        codes: &[u8],
        scales: &[f32],
        block_cols: usize,
        c0: usize,
        out: &mut [f32],
    ) -> Result<(), usize> {
        for_runs(codes.len(), block_cols, c0, |a, b, blk| {
            // SAFETY: same features as this function.
            unsafe { run16(fmt, &codes[a..b], scales[blk], &mut out[a..b]) }.map_err(|j| a + j)
        })
    }

    /// A span of a row (from column `c0`), each scale block with its own scale, at 8 lanes.
    ///
    /// # Safety
    /// AVX2 and F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn span8(
        fmt: Fp8Format,
        codes: &[u8],
        scales: &[f32],
        block_cols: usize,
        c0: usize,
        out: &mut [f32],
    ) -> Result<(), usize> {
        for_runs(codes.len(), block_cols, c0, |a, b, blk| {
            // SAFETY: same features as this function.
            unsafe { run8(fmt, &codes[a..b], scales[blk], &mut out[a..b]) }.map_err(|j| a + j)
        })
    }

    /// 16 lanes at a time; the tail goes to the scalar twin. The codes are checked for NaN/Inf
    /// 64 at a time (one byte compare), then each 16 become f16 bit patterns with a sign-extending
    /// load, one shift and one mask (E4M3: `(c << 7) & 0xbf80`, the sign landing in bit 15 and the
    /// 7 magnitude bits in f16's exponent and mantissa fields; E5M2: `c << 8`), F16C widens them
    /// exactly, and one multiply applies the scale: E4M3's 2^8 correction is folded into the scale
    /// (`256 × s` is exact and `v × (256 s)` is the same real product as `(256 v) × s`, one
    /// rounding either way) unless `256 × s` overflows, where the two multiplies are kept.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and F16C available.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    #[inline]
    unsafe fn run16(fmt: Fp8Format, codes: &[u8], s: f32, out: &mut [f32]) -> Result<(), usize> {
        let n = codes.len().min(out.len());
        let full = n / 16 * 16;
        let e4 = fmt == Fp8Format::E4M3;
        let (bad_bits, mul) = if e4 { (0x7fu8, 256.0 * s) } else { (0x7cu8, s) };
        // E4M3 with a scale above f32::MAX / 256: scale in two steps, as the scalar twin.
        let two_step = e4 && !mul.is_finite();
        let (vs, vpre) = if two_step {
            (_mm512_set1_ps(s), _mm512_set1_ps(256.0))
        } else {
            (_mm512_set1_ps(mul), _mm512_set1_ps(1.0))
        };
        let bad8 = _mm512_set1_epi8(bad_bits as i8);
        let bad16 = _mm_set1_epi8(bad_bits as i8);
        let p = codes.as_ptr();
        let o = out.as_mut_ptr();
        let mut j = 0;
        while j < full {
            // The NaN/Inf check of the next 64 codes (or of the next 16 near the end).
            if j % 64 == 0 && j + 64 <= full {
                // A hint for the line 2 KiB ahead (never faults, whatever the address): the
                // codes stream from the mmap'd checkpoint.
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(j + PREFETCH).cast());
                // SAFETY: j + 64 <= full <= codes.len(); unaligned load.
                let v = unsafe { _mm512_loadu_si512(p.add(j).cast()) };
                let bad = _mm512_cmpeq_epi8_mask(_mm512_and_si512(v, bad8), bad8);
                if bad != 0 {
                    return Err(j + bad.trailing_zeros() as usize);
                }
            } else if j + 64 > full {
                // SAFETY: j + 16 <= full; unaligned load.
                let v = unsafe { _mm_loadu_si128(p.add(j).cast()) };
                let bad = _mm_cmpeq_epi8_mask(_mm_and_si128(v, bad16), bad16);
                if bad != 0 {
                    return Err(j + bad.trailing_zeros() as usize);
                }
            }
            // SAFETY: j + 16 <= n <= codes.len(), out.len(); unaligned loads/stores.
            unsafe {
                let b = _mm_loadu_si128(p.add(j).cast());
                let h = if e4 {
                    _mm256_and_si256(
                        _mm256_slli_epi16::<7>(_mm256_cvtepi8_epi16(b)),
                        _mm256_set1_epi16(0xbf80u16 as i16),
                    )
                } else {
                    _mm256_slli_epi16::<8>(_mm256_cvtepu8_epi16(b))
                };
                let mut f = _mm512_cvtph_ps(h);
                if two_step {
                    f = _mm512_mul_ps(f, vpre);
                }
                _mm512_storeu_ps(o.add(j), _mm512_mul_ps(f, vs));
            }
            j += 16;
        }
        decode_run_scalar(fmt, &codes[full..n], s, &mut out[full..n]).map_err(|k| full + k)
    }

    /// 8 lanes at a time; the tail goes to the scalar twin.
    ///
    /// # Safety
    /// AVX2 and F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn run8(fmt: Fp8Format, codes: &[u8], s: f32, out: &mut [f32]) -> Result<(), usize> {
        let n = codes.len().min(out.len());
        let full = n / 8 * 8;
        let vs = _mm256_set1_ps(s);
        let k256 = _mm256_set1_ps(256.0);
        let mut j = 0;
        while j < full {
            // SAFETY: j + 8 <= n; unaligned 8-byte load and 32-byte store.
            unsafe {
                let b = _mm_loadl_epi64(codes.as_ptr().add(j).cast());
                let x = _mm_cvtepu8_epi16(b);
                let (h, bad) = match fmt {
                    Fp8Format::E4M3 => {
                        let mag = _mm_and_si128(x, _mm_set1_epi16(0x7f));
                        let bad = _mm_movemask_epi8(_mm_cmpeq_epi16(mag, _mm_set1_epi16(0x7f)));
                        let h = _mm_or_si128(
                            _mm_slli_epi16::<7>(mag),
                            _mm_and_si128(_mm_slli_epi16::<8>(x), _mm_set1_epi16(0x8000u16 as i16)),
                        );
                        (h, bad)
                    }
                    Fp8Format::E5M2 => {
                        let e = _mm_and_si128(x, _mm_set1_epi16(0x7c));
                        let bad = _mm_movemask_epi8(_mm_cmpeq_epi16(e, _mm_set1_epi16(0x7c)));
                        (_mm_slli_epi16::<8>(x), bad)
                    }
                };
                if bad != 0 {
                    // Two mask bits per 16-bit lane.
                    return Err(j + bad.trailing_zeros() as usize / 2);
                }
                let mut f = _mm256_cvtph_ps(h);
                if fmt == Fp8Format::E4M3 {
                    f = _mm256_mul_ps(f, k256);
                }
                _mm256_storeu_ps(out.as_mut_ptr().add(j), _mm256_mul_ps(f, vs));
            }
            j += 8;
        }
        decode_run_scalar(fmt, &codes[full..n], s, &mut out[full..n]).map_err(|k| full + k)
    }
}

/// View decoded f32 values as the little-endian bytes the quantizers read (`SrcDtype::F32`).
pub fn f32_bytes(x: &[f32]) -> &[u8] {
    const { assert!(cfg!(target_endian = "little"), "the quantizers read little-endian f32") };
    // SAFETY: f32 has no padding and every byte pattern is a valid u8; the length is exact and
    // u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_known_values() {
        assert_eq!(decode(Fp8Format::E4M3, 0x00), 0.0);
        assert_eq!(decode(Fp8Format::E4M3, 0x38), 1.0);
        assert_eq!(decode(Fp8Format::E4M3, 0x7e), 448.0);
        assert_eq!(decode(Fp8Format::E4M3, 0xfe), -448.0);
        assert_eq!(decode(Fp8Format::E4M3, 0x01), 2f32.powi(-9));
        assert!(decode(Fp8Format::E4M3, 0x7f).is_nan());
        assert!(decode(Fp8Format::E4M3, 0xff).is_nan());
        assert_eq!(decode(Fp8Format::E5M2, 0x3c), 1.0);
        assert_eq!(decode(Fp8Format::E5M2, 0x7b), 57344.0);
        assert!(decode(Fp8Format::E5M2, 0x7c).is_infinite());
    }
}
