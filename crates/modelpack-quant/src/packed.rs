//! compressed-tensors `pack-quantized` source weights (int4/int8 codes in I32 words, a scale per
//! group or per row, an optional packed zero point) decoded to f32 rows, and int4 symmetric
//! weights moved into Q4_0 blocks without requantizing.
//!
//! Decoding is `(code - zero point) * scale` in f32, as llama.cpp's `convert_hf_to_gguf.py`
//! (`dequant_packed`) does and as FP8 sources are decoded: for bf16 and f16 scales the product of
//! a code difference (at most 8 bits) and the scale is exact in f32, so the decoded value *is* the
//! weight the checkpoint describes, and the lossless Q4_0 repack dequantizes to the same bits.
//! compressed-tensors' own `dequantize` computes in the scale's dtype, i.e. rounds that exact
//! product once more to bf16/f16 ([`round_to`] of our value; tested against the library's
//! output). Every SIMD path computes the same integer unpack, exact int→f32 and one f32 product,
//! so all levels give identical bits.
//!
//! Why rows, as FP8 does: the scale depends on the element's group, which the row quantizers do
//! not know; callers decode a few rows into a small reused buffer, never a whole tensor.

use crate::{simd, Level, QuantError, SrcDtype};

/// How a packed weight is laid out: `rows × cols` codes of `bits` bits, `32 / bits` per
/// little-endian I32 word (element k of a word at bits `[bits*k, bits*k+bits)`, stored as
/// `code + 2^(bits-1)`), each row padded to whole words; one scale per `group` columns of a row
/// (`group == cols` for per-channel); asymmetric weights have a zero point per scale, packed the
/// same way along the rows (`[ceil(rows*bits/32), cols/group]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedLayout {
    /// Output features.
    pub rows: usize,
    /// Input features (elements per row).
    pub cols: usize,
    /// 4 or 8.
    pub bits: u32,
    /// Columns per scale (divides `cols`).
    pub group: usize,
    /// No zero point (the code itself is the value's multiple of the scale).
    pub symmetric: bool,
}

impl PackedLayout {
    /// Codes per I32 word.
    pub fn per_word(&self) -> usize {
        32 / self.bits as usize
    }
    /// I32 words per packed row.
    pub fn words_per_row(&self) -> usize {
        self.cols.div_ceil(self.per_word())
    }
    /// Scales per row.
    pub fn groups(&self) -> usize {
        self.cols / self.group.max(1)
    }
    /// Rows of the packed zero-point tensor.
    pub fn zp_rows(&self) -> usize {
        (self.rows * self.bits as usize).div_ceil(32)
    }
    /// Check the layout is one compressed-tensors can describe.
    pub fn validate(&self) -> Result<(), QuantError> {
        if !matches!(self.bits, 4 | 8) {
            return Err(QuantError::Shape(format!("{} bits per code (only 4 and 8 are packed)", self.bits)));
        }
        if self.group == 0 || !self.cols.is_multiple_of(self.group) {
            return Err(QuantError::Shape(format!("group {} does not divide {} columns", self.group, self.cols)));
        }
        Ok(())
    }
}

/// A packed weight's raw little-endian tensors.
#[derive(Debug, Clone, Copy)]
pub struct PackedTensors<'a> {
    /// The whole `weight_packed` (I32).
    pub words: &'a [u8],
    /// The whole `weight_scale`.
    pub scales: &'a [u8],
    /// Its dtype.
    pub scale_dtype: SrcDtype,
    /// The whole `weight_zero_point` (I32), for asymmetric weights.
    pub zero_points: Option<&'a [u8]>,
}

#[inline]
fn word(bytes: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
}

/// Unsigned code of element `col` of packed row `r` (the stored `code + 2^(bits-1)`).
#[inline]
pub fn stored_code(l: &PackedLayout, words: &[u8], r: usize, col: usize) -> u32 {
    let per = l.per_word();
    let w = word(words, r * l.words_per_row() + col / per);
    (w >> (l.bits as usize * (col % per))) & ((1u32 << l.bits) - 1)
}

/// The unsigned zero point of row `r`, group `g` (the symmetric offset `2^(bits-1)` without one).
#[inline]
pub fn stored_zero(l: &PackedLayout, zp: Option<&[u8]>, r: usize, g: usize) -> u32 {
    match zp {
        None => 1 << (l.bits - 1),
        Some(z) => {
            let per = l.per_word();
            let w = word(z, (r / per) * l.groups() + g);
            (w >> (l.bits as usize * (r % per))) & ((1u32 << l.bits) - 1)
        }
    }
}

/// Round an f32 value to `dtype` and back: what compressed-tensors' `dequantize`, which computes
/// in the scale's dtype, makes of our exact decoded value.
#[inline]
pub fn round_to(dtype: SrcDtype, x: f32) -> f32 {
    match dtype {
        SrcDtype::F32 => x,
        SrcDtype::BF16 => crate::convert::round_bf16(x),
        SrcDtype::F16 => crate::convert::round_f16(x),
    }
}

/// Decode `out.len() / cols` rows from row `row0`: `out = (u - z) * s` in f32.
/// Sizes are checked against the layout; a non-finite result (a NaN/Inf scale, or a product past
/// the dtype's range) is [`QuantError::NonFinite`] at its index within `out`.
pub fn dequantize_rows(t: PackedTensors<'_>, l: &PackedLayout, row0: usize, out: &mut [f32]) -> Result<(), QuantError> {
    dequantize_rows_at(simd::active_level(), t, l, row0, out)
}

/// [`dequantize_rows`] at an explicit SIMD level (clamped to the CPU); identical output at every level.
pub fn dequantize_rows_at(
    level: Level,
    t: PackedTensors<'_>,
    l: &PackedLayout,
    row0: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    l.validate()?;
    let cols = l.cols;
    if cols == 0 || !out.len().is_multiple_of(cols) {
        return Err(QuantError::Shape(format!("{} outputs are not whole rows of {cols}", out.len())));
    }
    let n = out.len() / cols;
    let end = row0 + n;
    let g = l.groups();
    if end > l.rows
        || t.words.len() < l.rows * l.words_per_row() * 4
        || t.scales.len() < l.rows * g * t.scale_dtype.size()
        || t.zero_points.is_some_and(|z| z.len() < l.zp_rows() * g * 4)
        || t.zero_points.is_none() != l.symmetric
    {
        return Err(QuantError::Shape(format!(
            "packed rows {row0}..{end} of a {}x{} {}-bit weight: tensor sizes do not match",
            l.rows, cols, l.bits
        )));
    }
    let level = simd::clamp(level);
    let wpr = l.words_per_row();
    for i in 0..n {
        let r = row0 + i;
        let row_words = &t.words[r * wpr * 4..(r + 1) * wpr * 4];
        let o = &mut out[i * cols..(i + 1) * cols];
        for gi in 0..g {
            let s = crate::convert::load(t.scale_dtype, t.scales, r * g + gi);
            let z = stored_zero(l, t.zero_points, r, gi);
            let (c0, c1) = (gi * l.group, (gi + 1) * l.group);
            decode_run(level, l.bits, row_words, c0, z, s, &mut o[c0..c1]);
            if let Some(j) = o[c0..c1].iter().position(|v| !v.is_finite()) {
                return Err(QuantError::NonFinite { index: i * cols + c0 + j, value: o[c0 + j] });
            }
        }
    }
    Ok(())
}

/// Decode elements `c0 .. c0 + out.len()` of one packed row (`row` = its words' bytes).
#[inline]
fn decode_run(level: Level, bits: u32, row: &[u8], c0: usize, z: u32, s: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        let per = 32 / bits as usize;
        // The vector paths start on a word boundary; groups are whole words in practice.
        if c0.is_multiple_of(per) {
            let done = match level {
                // SAFETY: `clamp` only returns levels whose features the CPU has.
                Level::Avx512 => unsafe { x86::run16(bits, row, c0, z, s, out) },
                // SAFETY: as above.
                Level::Avx2 => unsafe { x86::run8(bits, row, c0, z, s, out) },
                Level::Scalar => 0,
            };
            decode_run_scalar(bits, row, c0 + done, z, s, &mut out[done..]);
            return;
        }
    }
    let _ = level;
    decode_run_scalar(bits, row, c0, z, s, out);
}

/// The scalar twin: one element at a time.
fn decode_run_scalar(bits: u32, row: &[u8], c0: usize, z: u32, s: f32, out: &mut [f32]) {
    let per = 32 / bits as usize;
    let mask = (1u32 << bits) - 1;
    for (k, o) in out.iter_mut().enumerate() {
        let c = c0 + k;
        let u = (word(row, c / per) >> (bits as usize * (c % per))) & mask;
        *o = (u as i32 - z as i32) as f32 * s;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Words broadcast to lanes, variable right shifts and a mask unpack the codes; the integer
    //! difference with the zero point converts to f32 exactly; one product.

    use std::arch::x86_64::*;

    /// Whole chunks of 16 elements from `c0` (a word boundary); returns how many were done.
    ///
    /// # Safety
    /// AVX-512 F/BW/VL and F16C available.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn run16(bits: u32, row: &[u8], c0: usize, z: u32, s: f32, out: &mut [f32]) -> usize {
        let per = 32 / bits as usize;
        let full = out.len() / 16 * 16;
        // Lane k holds element k: word k / per, shift bits * (k % per).
        let widx: [i32; 16] = std::array::from_fn(|k| (k / per) as i32);
        let sh: [i32; 16] = std::array::from_fn(|k| (bits as usize * (k % per)) as i32);
        let words = 16 / per;
        // SAFETY: reading 16-lane constant arrays.
        let (vidx, vsh) = unsafe { (_mm512_loadu_si512(widx.as_ptr().cast()), _mm512_loadu_si512(sh.as_ptr().cast())) };
        let mask = _mm512_set1_epi32(((1u32 << bits) - 1) as i32);
        let vz = _mm512_set1_epi32(z as i32);
        let vs = _mm512_set1_ps(s);
        let mut k = 0;
        while k < full {
            let w0 = (c0 + k) / per;
            let mut buf = [0i32; 16];
            for (j, b) in buf.iter_mut().enumerate().take(words) {
                *b = super::word(row, w0 + j) as i32;
            }
            // SAFETY: k + 16 <= out.len(); unaligned loads/stores of local and output memory.
            unsafe {
                let w = _mm512_loadu_si512(buf.as_ptr().cast());
                let u = _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutexvar_epi32(vidx, w), vsh), mask);
                let p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(u, vz)), vs);
                _mm512_storeu_ps(out.as_mut_ptr().add(k), p);
            }
            k += 16;
        }
        full
    }

    /// Whole chunks of 8 elements from `c0` (a word boundary); returns how many were done.
    ///
    /// # Safety
    /// AVX2 and F16C available.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn run8(bits: u32, row: &[u8], c0: usize, z: u32, s: f32, out: &mut [f32]) -> usize {
        let per = 32 / bits as usize;
        let full = out.len() / 8 * 8;
        let widx: [i32; 8] = std::array::from_fn(|k| (k / per) as i32);
        let sh: [i32; 8] = std::array::from_fn(|k| (bits as usize * (k % per)) as i32);
        let words = 8 / per;
        // SAFETY: reading 8-lane constant arrays.
        let (vidx, vsh) = unsafe { (_mm256_loadu_si256(widx.as_ptr().cast()), _mm256_loadu_si256(sh.as_ptr().cast())) };
        let mask = _mm256_set1_epi32(((1u32 << bits) - 1) as i32);
        let vz = _mm256_set1_epi32(z as i32);
        let vs = _mm256_set1_ps(s);
        let mut k = 0;
        while k < full {
            let w0 = (c0 + k) / per;
            let mut buf = [0i32; 8];
            for (j, b) in buf.iter_mut().enumerate().take(words) {
                *b = super::word(row, w0 + j) as i32;
            }
            // SAFETY: k + 8 <= out.len(); unaligned loads/stores of local and output memory.
            unsafe {
                let w = _mm256_loadu_si256(buf.as_ptr().cast());
                let u = _mm256_and_si256(_mm256_srlv_epi32(_mm256_permutevar8x32_epi32(w, vidx), vsh), mask);
                let p = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(u, vz)), vs);
                _mm256_storeu_ps(out.as_mut_ptr().add(k), p);
            }
            k += 8;
        }
        full
    }
}

/// Bytes of one Q4_0 block: an f16 scale and 16 bytes of nibbles.
pub const Q4_0_BLOCK_BYTES: usize = 18;

/// Move one row of an int4 *symmetric* packed weight into Q4_0 blocks without requantizing:
/// Q4_0's nibble is `code + 8`, which is exactly the stored unsigned code, and its `d` is the
/// group's scale. Exact only when the scale is an f16 value, so each block is checked: the
/// indices of blocks whose scale is not (their bytes untouched) are returned for the caller to
/// requantize. Needs `cols % 32 == 0` and a group (or the row) made of whole blocks.
pub fn q4_0_from_int4_row(
    t: PackedTensors<'_>,
    l: &PackedLayout,
    r: usize,
    out: &mut [u8],
) -> Result<Vec<usize>, QuantError> {
    l.validate()?;
    if l.bits != 4 || !l.symmetric || !l.cols.is_multiple_of(32) || !l.group.is_multiple_of(32) {
        return Err(QuantError::Shape(format!(
            "a {}-bit {} group-{} weight of {} columns is not Q4_0's grid",
            l.bits,
            if l.symmetric { "symmetric" } else { "asymmetric" },
            l.group,
            l.cols
        )));
    }
    let blocks = l.cols / 32;
    if out.len() != blocks * Q4_0_BLOCK_BYTES || r >= l.rows {
        return Err(QuantError::Shape(format!("Q4_0 row {r}: {} output bytes for {blocks} blocks", out.len())));
    }
    let wpr = l.words_per_row();
    let g = l.groups();
    let mut fallback = Vec::new();
    for b in 0..blocks {
        let s = crate::convert::load(t.scale_dtype, t.scales, r * g + b * 32 / l.group);
        let d = crate::convert::f32_to_f16(s);
        if crate::convert::f16_to_f32(d).to_bits() != s.to_bits() {
            fallback.push(b);
            continue;
        }
        let o = &mut out[b * Q4_0_BLOCK_BYTES..(b + 1) * Q4_0_BLOCK_BYTES];
        o[..2].copy_from_slice(&d.to_le_bytes());
        // Elements 32b .. 32b+32 are words 4b .. 4b+4 of the row; Q4_0 puts element j in the low
        // nibble of byte j and element j + 16 in its high nibble.
        let w: [u32; 4] = std::array::from_fn(|k| word(t.words, r * wpr + 4 * b + k));
        let nib = |j: usize| (w[j / 8] >> (4 * (j % 8))) as u8 & 0x0f;
        for j in 0..16 {
            o[2 + j] = nib(j) | (nib(j + 16) << 4);
        }
    }
    Ok(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_words() {
        // Codes -8..7 in order: stored 0..15, two words.
        let words: Vec<u8> = [0x7654_3210u32, 0xfedc_ba98].iter().flat_map(|w| w.to_le_bytes()).collect();
        let l = PackedLayout { rows: 1, cols: 16, bits: 4, group: 16, symmetric: true };
        let t = PackedTensors {
            words: &words,
            scales: &0.5f32.to_le_bytes(),
            scale_dtype: SrcDtype::F32,
            zero_points: None,
        };
        for level in Level::supported() {
            let mut out = [0.0f32; 16];
            dequantize_rows_at(level, t, &l, 0, &mut out).unwrap();
            let want: Vec<f32> = (-8..8).map(|c| c as f32 * 0.5).collect();
            assert_eq!(out.to_vec(), want, "{level:?}");
        }
    }
}
