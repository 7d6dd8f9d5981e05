//! GGUF quantization entry points and the one place that picks a kernel per (level, type).
//!
//! Layout (memchr's `arch/` order: reference → per-ISA → dispatch):
//! - [`crate::blocks`]: the type table, block layouts, the [`BlockFormat`] trait and the scalar
//!   references (legacy formats there, K-quants in [`crate::kquants`]);
//! - `gguf/scalar.rs`: plain float conversion and the scalar error statistics;
//! - `gguf/avx2.rs`, `gguf/avx512.rs`: the legacy-format kernels per ISA; `kquants/avx2.rs`,
//!   `kquants/avx512.rs` the K-quant kernels (also the imatrix-weighted K-quant searches);
//! - this file: shape checks, the dispatch (every (level, type) pair named, no catch-all arm) and
//!   the parallel driver. [`crate::simd`] only detects the CPU level and holds the fused loads.
//!
//! Every kernel reproduces the scalar reference's bytes exactly (`tests/gguf_props.rs`,
//! `tests/kquant_props.rs` compare every level).
//!
//! Signed zeros: where the references disagree on the sign of a zero scale or minimum, we follow
//! the `gguf` package for Q4_0 (the scale's sign comes from the first element of largest |x|, so an
//! all-zero block whose first element is `-0.0` stores `d = +0`; llama.cpp's C loop starts from
//! `+0` and would store `-0`), and llama.cpp's C loop for Q4_1 (min/max are the first occurrence;
//! numpy's min/max reductions pick a signed zero depending on SIMD lane order, so they are not a
//! usable definition). Both choices only change the sign bit of a zero, never a dequantized value.
//!
//! NaN and infinity are rejected ([`QuantError::NonFinite`], the first offending element in
//! input order) by every path and every type, like llama.cpp's tensor validator: a single
//! non-finite value would poison its block's scale.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;

use crate::blocks::quantize_blocks_ref;
pub use crate::blocks::{BlockFormat, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8_0, GgmlType, QK};
use crate::metrics::{ErrorStats, Lanes};
use crate::simd::{self, Level};
use crate::{QuantError, SrcDtype};

/// Check the shapes of a row chunk; returns the number of elements.
pub(crate) fn check_shape(
    ty: GgmlType,
    elem_in: usize,
    input_len: usize,
    row_len: usize,
    out_len: usize,
) -> Result<usize, QuantError> {
    if row_len == 0 {
        return Err(QuantError::Shape("row length is 0".into()));
    }
    let row_bytes = ty.row_bytes(row_len).ok_or_else(|| {
        QuantError::Shape(format!("row length {row_len} is not a multiple of {ty}'s block size {}", ty.block_size()))
    })?;
    let in_row = row_len * elem_in;
    if !input_len.is_multiple_of(in_row) {
        return Err(QuantError::Shape(format!(
            "input of {input_len} bytes is not whole rows of {row_len} elements ({in_row} bytes)"
        )));
    }
    let rows = input_len / in_row;
    let want = rows.checked_mul(row_bytes).ok_or_else(|| QuantError::Shape("output size overflows".into()))?;
    if out_len != want {
        return Err(QuantError::Shape(format!(
            "{rows} rows of {row_len} elements as {ty} need {want} bytes, output has {out_len}"
        )));
    }
    Ok(rows * row_len)
}

/// Quantize whole rows (`input` = raw little-endian bytes of `rows * row_len` elements of `src`)
/// into `out` (exactly `rows * ty.row_bytes(row_len)` bytes), with the active SIMD level.
///
/// `ty` may be a block format (Q8_0, Q4_0, Q4_1) or a plain float type (F32, F16, BF16: converted,
/// rounding to nearest even). When `stats` is `Some`, this chunk's error statistics (source vs.
/// dequantized output, element order) are added to it; the bytes written do not depend on it.
///
/// Errors: [`QuantError::Shape`] on inconsistent sizes or a row length that is not a multiple of the
/// block size, [`QuantError::Unsupported`] for types this crate cannot produce, and
/// [`QuantError::NonFinite`] for the first NaN/±inf element (index into `input`); on error `out`
/// holds unspecified bytes.
pub fn quantize_rows(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    quantize_rows_at(simd::active_level(), ty, src, input, row_len, out, stats)
}

/// [`quantize_rows`] at an explicit SIMD level (clamped to what the CPU supports). Output is the
/// same at every level; tests and benchmarks use this to compare paths without global state.
pub fn quantize_rows_at(
    level: Level,
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    out: &mut [u8],
    mut stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    if !ty.can_quantize() {
        return Err(QuantError::Unsupported(ty.name()));
    }
    check_shape(ty, src.size(), input.len(), row_len, out.len())?;
    let level = simd::clamp(level);
    let block = matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1);
    #[cfg(target_arch = "x86_64")]
    if let (true, Level::Avx2 | Level::Avx512, Some(stats)) = (block, level, stats.as_deref_mut()) {
        // AVX-512 machines take the fused AVX2 kernel too: one pass beats a faster quantizer plus
        // a second pass for the statistics.
        let mut lanes = Lanes::default();
        // SAFETY: `clamp` only returns levels whose features the CPU has.
        unsafe { avx2::quantize_with_stats(ty, src, input, out, &mut lanes)? };
        stats.merge(&lanes.finish());
        return Ok(());
    }
    quantize_kernel(level, ty, src, input, out)?;
    if let Some(stats) = stats {
        accumulate_stats(level, ty, src, input, out, stats);
    }
    Ok(())
}

/// One piece of a chunk that [`quantize_rows_at`] would take in one call, for a legacy 32-element
/// type (Q8_0, Q4_0, Q4_1): the statistics continue in `lanes` (at `lanes.count`), so a chunk
/// fed piece by piece (the FP8 path decodes a few KiB at a time) gives the same bytes and, after
/// `lanes.finish()`, the same statistics as one call over the whole chunk. `level` is clamped by
/// the caller. On error `lanes` holds unspecified sums.
pub(crate) fn quantize_piece(
    level: Level,
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    out: &mut [u8],
    lanes: Option<&mut Lanes>,
) -> Result<(), QuantError> {
    debug_assert!(matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1));
    match lanes {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller clamped `level` to what the CPU has; the AVX-512 level takes the
        // fused AVX2 statistics kernel, as `quantize_rows_at` does.
        Some(lanes) if matches!(level, Level::Avx2 | Level::Avx512) => unsafe {
            avx2::quantize_with_stats(ty, src, input, out, lanes)
        },
        Some(lanes) => {
            quantize_kernel(level, ty, src, input, out)?;
            scalar::accumulate_stats(ty, src, input, out, lanes);
            Ok(())
        }
        None => quantize_kernel(level, ty, src, input, out),
    }
}

/// Quantize whole blocks (or plain-convert whole rows) of `ty` with the kernel for `level`: the
/// single dispatch of the GGUF path. Every pair is named; a type without a kernel at a level
/// takes its scalar reference, and a type without any quantizer is refused.
fn quantize_kernel(level: Level, ty: GgmlType, src: SrcDtype, input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    use GgmlType::*;
    #[cfg(target_arch = "x86_64")]
    match (level, ty) {
        // SAFETY (all arms): `simd::clamp` only returns levels whose features the CPU has, and
        // the AVX-512 level implies AVX2 + FMA + F16C.
        (Level::Avx512, Q8_0 | Q4_0 | Q4_1) => return unsafe { avx512::quantize(ty, src, input, out) },
        (Level::Avx512, F32 | F16 | BF16) => return unsafe { avx512::convert(ty, src, input, out) },
        // Q5_0 only fills the odd tensors Q4_K cannot: its AVX2 kernel serves both levels.
        (Level::Avx2, Q8_0 | Q4_0 | Q4_1) | (Level::Avx2 | Level::Avx512, Q5_0) => {
            return unsafe { avx2::quantize(ty, src, input, out) }
        }
        (Level::Avx512, Q4_K | Q6_K) => return unsafe { crate::kquants::avx512::quantize(ty, src, input, out) },
        (Level::Avx2, Q4_K | Q6_K) => return unsafe { crate::kquants::avx2::quantize(ty, src, input, out) },
        (Level::Scalar, _) | (Level::Avx2, F32 | F16 | BF16) | (Level::Avx2 | Level::Avx512, Q5_1) => {}
    }
    let _ = level;
    match ty {
        Q8_0 => quantize_blocks_ref::<BlockQ8_0>(src, input, out, 0),
        Q4_0 => quantize_blocks_ref::<BlockQ4_0>(src, input, out, 0),
        Q4_1 => quantize_blocks_ref::<BlockQ4_1>(src, input, out, 0),
        Q5_0 => quantize_blocks_ref::<BlockQ5_0>(src, input, out, 0),
        Q4_K => quantize_blocks_ref::<BlockQ4K>(src, input, out, 0),
        Q6_K => quantize_blocks_ref::<BlockQ6K>(src, input, out, 0),
        F32 | F16 | BF16 => scalar::convert_rows_ref(ty, src, input, out, 0),
        Q5_1 => Err(QuantError::Unsupported(ty.name())),
    }
}

/// Error statistics of a quantized chunk (source vs. dequantized output), accumulated in the
/// lane order of [`crate::metrics::Lanes`]: identical at every level.
pub(crate) fn accumulate_stats(
    level: Level,
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    out: &[u8],
    stats: &mut ErrorStats,
) {
    use GgmlType::*;
    let mut lanes = Lanes::default();
    #[cfg(target_arch = "x86_64")]
    let done = match (level, ty) {
        // SAFETY (both arms): as in `quantize_kernel`; whole blocks of `ty` in `out`.
        (Level::Avx2 | Level::Avx512, Q8_0 | Q4_0 | Q4_1) => unsafe { avx2::stats(ty, src, input, out, &mut lanes) },
        (Level::Avx2 | Level::Avx512, Q4_K) => {
            unsafe { crate::kquants::avx2::stats::<BlockQ4K>(src, input, out, &mut lanes) };
            true
        }
        (Level::Avx2 | Level::Avx512, Q6_K) => {
            unsafe { crate::kquants::avx2::stats::<BlockQ6K>(src, input, out, &mut lanes) };
            true
        }
        (Level::Scalar, _) | (Level::Avx2 | Level::Avx512, F32 | F16 | BF16 | Q5_0 | Q5_1) => false,
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = {
        let _ = level;
        false
    };
    if !done {
        scalar::accumulate_stats(ty, src, input, out, &mut lanes);
    }
    stats.merge(&lanes.finish());
}

/// Dequantize whole rows of `ty` (`input` = `rows * ty.row_bytes(row_len)` bytes) into `out`
/// (`rows * row_len` values). Supports Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K, F32, F16, BF16.
pub fn dequantize_rows(ty: GgmlType, input: &[u8], row_len: usize, out: &mut [f32]) -> Result<(), QuantError> {
    if !ty.can_quantize() {
        return Err(QuantError::Unsupported(ty.name()));
    }
    if row_len == 0 {
        return Err(QuantError::Shape("row length is 0".into()));
    }
    let rb = ty.row_bytes(row_len).ok_or_else(|| {
        QuantError::Shape(format!("row length {row_len} is not a multiple of {ty}'s block size {}", ty.block_size()))
    })?;
    if !input.len().is_multiple_of(rb) || out.len() != input.len() / rb * row_len {
        return Err(QuantError::Shape(format!(
            "{} bytes of {ty} rows of {row_len} elements do not fill {} output values",
            input.len(),
            out.len()
        )));
    }
    scalar::dequantize(ty, input, out)
}

/// Elements per chunk of [`quantize_tensor_par`] (rounded to whole rows, at least one row).
/// Fixed, so results and statistics never depend on the thread count.
pub const PAR_CHUNK_ELEMS: usize = 1 << 16;

/// [`quantize_rows`] over a whole tensor on the current rayon pool: rows are split into fixed
/// chunks of about [`PAR_CHUNK_ELEMS`] elements (whole rows, so block-aligned), quantized in
/// parallel, and their statistics merged in chunk order. Bytes and statistics are identical for
/// any thread count; a non-finite error reports the first offending element of the tensor.
pub fn quantize_tensor_par(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    use rayon::prelude::*;
    if !ty.can_quantize() {
        return Err(QuantError::Unsupported(ty.name()));
    }
    let n = check_shape(ty, src.size(), input.len(), row_len, out.len())?;
    if n == 0 {
        return Ok(());
    }
    let level = simd::active_level();
    let rows_per_chunk = (PAR_CHUNK_ELEMS / row_len).max(1);
    let in_chunk = rows_per_chunk * row_len * src.size();
    let out_chunk = rows_per_chunk * ty.row_bytes(row_len).unwrap_or(0);
    let want_stats = stats.is_some();
    let results: Vec<Result<ErrorStats, QuantError>> = input
        .par_chunks(in_chunk)
        .zip(out.par_chunks_mut(out_chunk))
        .enumerate()
        .map(|(c, (ib, ob))| {
            let mut s = ErrorStats::new();
            quantize_rows_at(level, ty, src, ib, row_len, ob, want_stats.then_some(&mut s)).map_err(|e| match e {
                QuantError::NonFinite { index, value } => {
                    QuantError::NonFinite { index: index + c * rows_per_chunk * row_len, value }
                }
                e => e,
            })?;
            Ok(s)
        })
        .collect();
    let mut total = ErrorStats::new();
    for r in results {
        total.merge(&r?);
    }
    if let Some(stats) = stats {
        stats.merge(&total);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(x: &[f32]) -> Vec<u8> {
        x.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn type_table_matches_gguf_notes() {
        let want = [
            ("F32", 0, 1, 4),
            ("F16", 1, 1, 2),
            ("Q4_0", 2, 32, 18),
            ("Q4_1", 3, 32, 20),
            ("Q5_0", 6, 32, 22),
            ("Q5_1", 7, 32, 24),
            ("Q8_0", 8, 32, 34),
            ("Q4_K", 12, 256, 144),
            ("Q6_K", 14, 256, 210),
            ("BF16", 30, 1, 2),
        ];
        for (t, (name, id, bs, ts)) in GgmlType::ALL.into_iter().zip(want) {
            assert_eq!((t.name(), t.id(), t.block_size(), t.type_size()), (name, id, bs, ts));
            assert_eq!(GgmlType::from_id(id), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::Q8_0.row_bytes(64), Some(68));
        assert_eq!(GgmlType::Q8_0.row_bytes(48), None);
        assert_eq!(GgmlType::BF16.row_bytes(3), Some(6));
    }

    #[test]
    fn q8_0_hand_computed_block() {
        // amax = 127 → d = 1, id = 1: q = roundf(x), half away from zero.
        let mut x = [0.0f32; QK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 0.5;
        x[4] = -126.49;
        let mut out = [0u8; 34];
        quantize_rows_at(Level::Scalar, GgmlType::Q8_0, SrcDtype::F32, &f32_bytes(&x), 32, &mut out, None).unwrap();
        assert_eq!(&out[..2], &[0x00, 0x3c], "f16(1.0)");
        assert_eq!(&out[2..7], &[127, 3, (-3i8) as u8, 1, (-126i8) as u8]);
        assert!(out[7..].iter().all(|&b| b == 0));
    }

    #[test]
    fn q4_0_hand_computed_block() {
        // max = -16 (first of largest |x|, negative) → d = 2, id = 0.5, q = trunc(x/2 + 8.5) min 15.
        let mut x = [0.0f32; QK];
        x[0] = 3.0; // trunc(10.0) = 10
        x[1] = -16.0; // trunc(0.5) = 0
        x[2] = 16.0; // same |x|, later: not the max; trunc(16.5) = 16 → 15
        x[16] = -1.0; // trunc(8.0) = 8
        let mut out = [0u8; 18];
        quantize_rows_at(Level::Scalar, GgmlType::Q4_0, SrcDtype::F32, &f32_bytes(&x), 32, &mut out, None).unwrap();
        assert_eq!(&out[..2], &[0x00, 0x40], "f16(2.0)");
        assert_eq!(out[2], 10 | 8 << 4);
        assert_eq!(out[3], 8 << 4, "q = 0 | 8 << 4");
        assert_eq!(out[4], 15 | 8 << 4);
    }

    #[test]
    fn q4_1_hand_computed_block() {
        // min = -1, max = 14 → d = 1, q = trunc(x + 1 + 0.5).
        let mut x = [0.0f32; QK];
        x[0] = -1.0;
        x[1] = 14.0;
        x[17] = 2.4;
        let mut out = [0u8; 20];
        quantize_rows_at(Level::Scalar, GgmlType::Q4_1, SrcDtype::F32, &f32_bytes(&x), 32, &mut out, None).unwrap();
        assert_eq!(&out[..4], &[0x00, 0x3c, 0x00, 0xbc], "f16(1.0), f16(-1.0)");
        assert_eq!(out[4], 1 << 4);
        assert_eq!(out[5], 15 | 3 << 4);
    }

    #[test]
    fn q5_0_hand_computed_block() {
        // max = -32 (first of largest |x|) → d = 2, id = 0.5, q = min(31, trunc(x/2 + 16.5)).
        let mut x = [0.0f32; QK];
        x[0] = 3.0; // trunc(18.0) = 18 = 0b1_0010
        x[1] = -32.0; // trunc(0.5) = 0
        x[2] = 32.0; // later tie: trunc(32.5) = 32 → 31 = 0b1_1111
        x[16] = -1.0; // trunc(16.0) = 16 = 0b1_0000
        x[17] = -3.0; // trunc(15.0) = 15 = 0b0_1111
        for level in Level::supported() {
            let mut out = [0u8; 22];
            quantize_rows_at(level, GgmlType::Q5_0, SrcDtype::F32, &f32_bytes(&x), 32, &mut out, None).unwrap();
            assert_eq!(&out[..2], &[0x00, 0x40], "f16(2.0)");
            // Fifth bits: elements 0, 2 and (others at 0.0 → 16) everything except 1 and 17.
            let qh = u32::from_le_bytes(out[2..6].try_into().unwrap());
            assert_eq!(qh, !((1 << 1) | (1 << 17)), "{level:?}");
            assert_eq!(out[6], 2, "element 0 low nibble 2, element 16 low nibble 0");
            assert_eq!(out[7], 15 << 4, "element 1: 0, element 17: 15");
            assert_eq!(out[8], 15, "element 2: 31 & 15, element 18: 16 & 15");
        }
    }

    #[test]
    fn q5_0_zero_block_scale_is_negative_zero() {
        // llama.cpp's loop starts from max = +0: d = +0 / -16 = -0, even when the zeros are -0.
        let x = [-0.0f32; QK];
        for level in Level::supported() {
            let mut out = [0u8; 22];
            quantize_rows_at(level, GgmlType::Q5_0, SrcDtype::F32, &f32_bytes(&x), 32, &mut out, None).unwrap();
            assert_eq!(&out[..2], &[0x00, 0x80], "{level:?}");
            assert_eq!(&out[2..6], &[0xff; 4], "every code is 16: fifth bit set");
            assert!(out[6..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn non_finite_and_shape_errors() {
        let mut x = vec![1.0f32; 64];
        x[40] = f32::NEG_INFINITY;
        let mut out = vec![0u8; 68];
        let e = quantize_rows_at(Level::Scalar, GgmlType::Q8_0, SrcDtype::F32, &f32_bytes(&x), 32, &mut out, None);
        assert_eq!(e, Err(QuantError::NonFinite { index: 40, value: f32::NEG_INFINITY }));
        let e = quantize_rows(GgmlType::Q8_0, SrcDtype::F32, &f32_bytes(&x), 48, &mut out, None);
        assert!(matches!(e, Err(QuantError::Shape(_))));
        let e = quantize_rows(GgmlType::Q5_1, SrcDtype::F32, &f32_bytes(&x), 64, &mut out, None);
        assert_eq!(e, Err(QuantError::Unsupported("Q5_1")));
        let e = quantize_rows(GgmlType::Q4_K, SrcDtype::F32, &f32_bytes(&x), 64, &mut out, None);
        assert!(matches!(e, Err(QuantError::Shape(_))), "64 is not a multiple of 256");
    }
}
