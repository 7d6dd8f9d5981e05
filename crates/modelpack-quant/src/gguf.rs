//! GGUF block formats (Q8_0, Q4_0, Q4_1, Q5_0) and plain conversions (F32, F16, BF16).
//!
//! The scalar `quantize_block_ref` of each format follows `ggml-quants.c` literally (see
//! `gguf-notes.md`): f32 arithmetic left to right, `roundf` half away from zero in Q8_0, multiply by
//! `1/d` (never divide by `d`), truncating cast in Q4_0/Q4_1, no fused multiply-add. Output is byte
//! identical to `gguf.quants.quantize` of the `gguf` Python package (0.19.0), which the golden tests
//! check. The SIMD kernels in [`crate::simd`] must reproduce these bytes exactly.
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

use crate::convert::{f32_to_bf16, f32_to_f16, load_slice};
use crate::metrics::{ErrorStats, Lanes};
use crate::simd::{self, Level};
use crate::{QuantError, SrcDtype};
use half::f16;

/// Elements per block of the legacy formats (Q4_0, Q4_1, Q5_x, Q8_0).
pub const QK: usize = 32;

/// A GGML tensor type as stored in a GGUF tensor info (`u32` id).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// IEEE binary32, id 0.
    F32,
    /// IEEE binary16, id 1.
    F16,
    /// 4-bit symmetric, blocks of 32, id 2.
    Q4_0,
    /// 4-bit with minimum, blocks of 32, id 3.
    Q4_1,
    /// 5-bit symmetric, blocks of 32, id 6 (llama-quantize's fallback for Q4_K rows that are not
    /// whole 256-blocks).
    Q5_0,
    /// 5-bit with minimum, blocks of 32, id 7 (layout only; not produced here).
    Q5_1,
    /// 8-bit symmetric, blocks of 32, id 8.
    Q8_0,
    /// 4-bit k-quant with minimum, super-blocks of 256 (eight sub-blocks of 32), id 12.
    Q4_K,
    /// 6-bit symmetric k-quant, super-blocks of 256 (sixteen sub-blocks of 16), id 14.
    Q6_K,
    /// bfloat16, id 30.
    BF16,
}

impl GgmlType {
    /// Every type known to this crate, in id order.
    pub const ALL: [GgmlType; 10] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::BF16,
    ];

    /// The `ggml_type` id written to GGUF tensor infos.
    pub const fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q6_K => 14,
            GgmlType::BF16 => 30,
        }
    }

    /// The type for a GGUF id, `None` for ids this crate does not know (readers report those).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The name llama.cpp and the `gguf` package print (`"Q4_0"`, `"BF16"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// Elements per block (1 for plain float types). A row length must be a multiple of it.
    pub const fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => QK,
            GgmlType::Q4_K | GgmlType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_K => 144,
            GgmlType::Q6_K => 210,
        }
    }

    /// Bytes of a row of `n` elements; `None` when `n` is not a multiple of the block size or the
    /// size overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }

    /// Whether [`quantize_rows`] can produce this type.
    pub const fn can_quantize(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q8_0
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q4_K
                | GgmlType::Q6_K
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A Q8_0 block: `f16 d; i8 qs[32]`, value = `d * qs[j]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ8_0 {
    /// Scale, `max|x| / 127` rounded to f16.
    pub d: f16,
    /// Quantized values.
    pub qs: [i8; QK],
}

/// A Q4_0 block: `f16 d; u8 qs[16]`, value = `d * (nibble - 8)`; byte `j` holds element `j` in
/// its low nibble and element `j + 16` in its high nibble.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ4_0 {
    /// Scale, `max / -8` (max = signed value of largest magnitude) rounded to f16.
    pub d: f16,
    /// Packed nibbles.
    pub qs: [u8; QK / 2],
}

/// A Q4_1 block: `f16 d; f16 m; u8 qs[16]`, value = `d * nibble + m`; nibble order as in Q4_0.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ4_1 {
    /// Step, `(max - min) / 15` rounded to f16.
    pub d: f16,
    /// Block minimum rounded to f16.
    pub m: f16,
    /// Packed nibbles.
    pub qs: [u8; QK / 2],
}

/// A Q5_0 block: `f16 d; u8 qh[4]; u8 qs[16]`, value = `d * (q - 16)` with the 5-bit code `q`
/// split in two: its low four bits packed like Q4_0's nibbles (element `j` low, `j + 16` high in
/// byte `j`), its fifth bit at bit `j` of the little-endian `u32` `qh` for element `j`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ5_0 {
    /// Scale, `max / -16` (max = signed value of largest magnitude) rounded to f16.
    pub d: f16,
    /// Fifth bits of the 32 codes, a little-endian `u32` (bytes, so the struct stays 22 bytes).
    pub qh: [u8; 4],
    /// Packed low nibbles.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// One GGUF block format: its reference quantizer, its dequantizer and its byte layout.
///
/// Blocks are (de)serialised explicitly, never cast from the output buffer, since output offsets
/// in a GGUF data section carry no alignment guarantee for the block struct.
pub trait BlockFormat: Sized + Copy {
    /// The GGUF type id this block is.
    const TYPE: GgmlType;
    /// Elements per block.
    const BLOCK: usize;
    /// Serialised bytes per block.
    const BYTES: usize;
    /// Quantize one block with the scalar reference algorithm. `x` must be finite.
    fn quantize_block_ref(x: &[f32; QK]) -> Self;
    /// Expand to `Self::BLOCK` f32 values (the `gguf` package's dequantization, f32 math).
    fn dequantize(&self, out: &mut [f32]);
    /// Write the little-endian on-disk bytes (`out.len() == Self::BYTES`).
    fn write_bytes(&self, out: &mut [u8]);
    /// Read a block from its on-disk bytes (`b.len() == Self::BYTES`).
    fn read_bytes(b: &[u8]) -> Self;
}

#[inline]
fn f16_from_le(b: &[u8]) -> f16 {
    f16::from_bits(u16::from_le_bytes([b[0], b[1]]))
}

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK: usize = QK;
    const BYTES: usize = 34;

    fn quantize_block_ref(x: &[f32; QK]) -> Self {
        let mut amax = 0.0f32;
        for &v in x {
            let a = v.abs();
            amax = if amax > a { amax } else { a };
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(x) {
            // roundf: half away from zero; |v * id| <= 127 (+ rounding) whenever id is finite.
            *q = cvtt_i8((v * id).round());
        }
        BlockQ8_0 { d: f16::from_bits(f32_to_f16(d)), qs }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }

    fn write_bytes(&self, out: &mut [u8]) {
        out[..2].copy_from_slice(&self.d.to_bits().to_le_bytes());
        for (o, &q) in out[2..34].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
    }

    fn read_bytes(b: &[u8]) -> Self {
        let mut qs = [0i8; QK];
        for (q, &v) in qs.iter_mut().zip(&b[2..34]) {
            *q = v as i8;
        }
        BlockQ8_0 { d: f16_from_le(b), qs }
    }
}

/// C's `(int8_t)f` as the references run on x86-64 (`cvttss2si` to 32 bits, then the low byte):
/// truncation toward zero, and 0 for NaN, ±inf and values outside the i32 range.
///
/// This matters only for blocks whose scale is so small that `id = 1/d` overflows to +inf
/// (max |x| below about 3.7e-37 in Q8_0): there `x * id` is ±inf or NaN, and both llama.cpp and
/// the `gguf` package store 0 for every element. Rust's saturating `as i8` would store ±127.
#[inline]
pub(crate) fn cvtt_i8(v: f32) -> i8 {
    if v > -2_147_483_648.0 && v < 2_147_483_648.0 {
        v as i32 as i8
    } else {
        0
    }
}

/// Pack 32 4-bit values: low nibbles hold the first half of the block.
#[inline]
fn pack_nibbles(q: &[u8; QK]) -> [u8; QK / 2] {
    let mut qs = [0u8; QK / 2];
    for j in 0..QK / 2 {
        qs[j] = q[j] | (q[j + QK / 2] << 4);
    }
    qs
}

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK: usize = QK;
    const BYTES: usize = 18;

    fn quantize_block_ref(x: &[f32; QK]) -> Self {
        // The signed value of largest magnitude, first occurrence (numpy argmax semantics).
        let mut amax = x[0].abs();
        let mut max = x[0];
        for &v in &x[1..] {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            // Truncating cast, then clamp to 15 (x*id + 8.5 lies in [0.5, 16.5]).
            *q = cvtt_i8(v * id + 8.5).min(15) as u8;
        }
        BlockQ4_0 { d: f16::from_bits(f32_to_f16(d)), qs: pack_nibbles(&q) }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for j in 0..QK / 2 {
            out[j] = d * f32::from((self.qs[j] & 0x0f) as i8 - 8);
            out[j + QK / 2] = d * f32::from((self.qs[j] >> 4) as i8 - 8);
        }
    }

    fn write_bytes(&self, out: &mut [u8]) {
        out[..2].copy_from_slice(&self.d.to_bits().to_le_bytes());
        out[2..18].copy_from_slice(&self.qs);
    }

    fn read_bytes(b: &[u8]) -> Self {
        let mut qs = [0u8; QK / 2];
        qs.copy_from_slice(&b[2..18]);
        BlockQ4_0 { d: f16_from_le(b), qs }
    }
}

impl BlockFormat for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const BLOCK: usize = QK;
    const BYTES: usize = 20;

    fn quantize_block_ref(x: &[f32; QK]) -> Self {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = cvtt_i8((v - min) * id + 0.5).min(15) as u8;
        }
        BlockQ4_1 { d: f16::from_bits(f32_to_f16(d)), m: f16::from_bits(f32_to_f16(min)), qs: pack_nibbles(&q) }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for j in 0..QK / 2 {
            out[j] = d * f32::from(self.qs[j] & 0x0f) + m;
            out[j + QK / 2] = d * f32::from(self.qs[j] >> 4) + m;
        }
    }

    fn write_bytes(&self, out: &mut [u8]) {
        out[..2].copy_from_slice(&self.d.to_bits().to_le_bytes());
        out[2..4].copy_from_slice(&self.m.to_bits().to_le_bytes());
        out[4..20].copy_from_slice(&self.qs);
    }

    fn read_bytes(b: &[u8]) -> Self {
        let mut qs = [0u8; QK / 2];
        qs.copy_from_slice(&b[4..20]);
        BlockQ4_1 { d: f16_from_le(b), m: f16_from_le(&b[2..]), qs }
    }
}

impl BlockFormat for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK: usize = QK;
    const BYTES: usize = 22;

    /// llama.cpp's `quantize_row_q5_0_ref` (the `gguf` package has the same arithmetic but picks
    /// the sign of an all-zero block's scale from its first element; we follow the C loop, which
    /// starts from `max = +0` and so stores `d = -0` there: llama-quantize's bytes).
    fn quantize_block_ref(x: &[f32; QK]) -> Self {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            // Truncating cast, then clamp to 31 (x*id + 16.5 lies in [0.5, 32.5]).
            *q = cvtt_i8(v * id + 16.5).min(31) as u8;
        }
        let mut qh = 0u32;
        for (j, &c) in q.iter().enumerate() {
            qh |= u32::from(c >> 4) << j;
        }
        let lo = q.map(|c| c & 0x0f);
        BlockQ5_0 { d: f16::from_bits(f32_to_f16(d)), qh: qh.to_le_bytes(), qs: pack_nibbles(&lo) }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..QK / 2 {
            let h0 = ((qh >> j) << 4) as u8 & 0x10;
            let h1 = (qh >> (j + 12)) as u8 & 0x10;
            out[j] = f32::from(((self.qs[j] & 0x0f) | h0) as i8 - 16) * d;
            out[j + QK / 2] = f32::from(((self.qs[j] >> 4) | h1) as i8 - 16) * d;
        }
    }

    fn write_bytes(&self, out: &mut [u8]) {
        out[..2].copy_from_slice(&self.d.to_bits().to_le_bytes());
        out[2..6].copy_from_slice(&self.qh);
        out[6..22].copy_from_slice(&self.qs);
    }

    fn read_bytes(b: &[u8]) -> Self {
        let mut qh = [0u8; 4];
        qh.copy_from_slice(&b[2..6]);
        let mut qs = [0u8; QK / 2];
        qs.copy_from_slice(&b[6..22]);
        BlockQ5_0 { d: f16_from_le(b), qh, qs }
    }
}

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
        unsafe { simd::avx2::quantize_with_stats(ty, src, input, out, &mut lanes)? };
        stats.merge(&lanes.finish());
        return Ok(());
    }
    match ty {
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 => {
            quantize_blocks(level, ty, src, input, out)?
        }
        GgmlType::Q4_K | GgmlType::Q6_K => crate::kquants::quantize_blocks(level, ty, src, input, out)?,
        _ => convert_rows(level, ty, src, input, out)?,
    }
    if let Some(stats) = stats {
        accumulate_stats(level, ty, src, input, out, stats);
    }
    Ok(())
}

/// Dispatch the block kernels; `input` holds whole blocks.
fn quantize_blocks(level: Level, ty: GgmlType, src: SrcDtype, input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    #[cfg(target_arch = "x86_64")]
    match level {
        // Q5_0 only fills the odd tensors Q4_K cannot: its AVX2 kernel serves both levels.
        // SAFETY: `clamp` only returns levels whose features the CPU has (AVX-512 implies AVX2).
        Level::Avx512 | Level::Avx2 if ty == GgmlType::Q5_0 => {
            return unsafe { simd::avx2::quantize(ty, src, input, out) }
        }
        // SAFETY: as above.
        Level::Avx512 => return unsafe { simd::avx512::quantize(ty, src, input, out) },
        Level::Avx2 => return unsafe { simd::avx2::quantize(ty, src, input, out) },
        Level::Scalar => {}
    }
    let _ = level;
    match ty {
        GgmlType::Q8_0 => quantize_blocks_ref::<BlockQ8_0>(src, input, out, 0),
        GgmlType::Q4_0 => quantize_blocks_ref::<BlockQ4_0>(src, input, out, 0),
        GgmlType::Q5_0 => quantize_blocks_ref::<BlockQ5_0>(src, input, out, 0),
        _ => quantize_blocks_ref::<BlockQ4_1>(src, input, out, 0),
    }
}

/// Scalar reference over whole blocks. `base` is the element index of `input[0]` within the
/// caller's slice, for error reporting (SIMD kernels hand their non-finite blocks to this).
pub(crate) fn quantize_blocks_ref<B: BlockFormat>(
    src: SrcDtype,
    input: &[u8],
    out: &mut [u8],
    base: usize,
) -> Result<(), QuantError> {
    let in_blk = B::BLOCK * src.size();
    let mut x = [0.0f32; QK];
    for (i, (ib, ob)) in input.chunks_exact(in_blk).zip(out.chunks_exact_mut(B::BYTES)).enumerate() {
        load_slice(src, ib, &mut x);
        check_finite(&x, base + i * B::BLOCK)?;
        B::quantize_block_ref(&x).write_bytes(ob);
    }
    Ok(())
}

#[inline]
fn check_finite(x: &[f32], base: usize) -> Result<(), QuantError> {
    match crate::convert::first_non_finite(x) {
        Some((i, value)) => Err(QuantError::NonFinite { index: base + i, value }),
        None => Ok(()),
    }
}

/// Plain conversions (F32/F16/BF16 targets): vectorised at the AVX-512 level, else scalar.
fn convert_rows(level: Level, ty: GgmlType, src: SrcDtype, input: &[u8], out: &mut [u8]) -> Result<(), QuantError> {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // SAFETY: `clamp` only returns levels whose features the CPU has.
        return unsafe { simd::avx512::convert(ty, src, input, out) };
    }
    let _ = level;
    convert_rows_ref(ty, src, input, out, 0)
}

/// Scalar plain conversion; `base` is the element index of `input[0]` for error reporting.
pub(crate) fn convert_rows_ref(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    out: &mut [u8],
    base: usize,
) -> Result<(), QuantError> {
    let mut x = [0.0f32; QK];
    let osz = ty.type_size();
    for (c, (ib, ob)) in input.chunks(QK * src.size()).zip(out.chunks_mut(QK * osz)).enumerate() {
        let x = &mut x[..ib.len() / src.size()];
        load_slice(src, ib, x);
        check_finite(x, base + c * QK)?;
        match ty {
            GgmlType::F32 => {
                ob.chunks_exact_mut(4).zip(x.iter()).for_each(|(o, v)| o.copy_from_slice(&v.to_le_bytes()))
            }
            GgmlType::F16 => {
                ob.chunks_exact_mut(2).zip(x.iter()).for_each(|(o, &v)| o.copy_from_slice(&f32_to_f16(v).to_le_bytes()))
            }
            _ => ob
                .chunks_exact_mut(2)
                .zip(x.iter())
                .for_each(|(o, &v)| o.copy_from_slice(&f32_to_bf16(v).to_le_bytes())),
        }
    }
    Ok(())
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
    let mut lanes = Lanes::default();
    let block = matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1);
    #[cfg(target_arch = "x86_64")]
    if matches!(level, Level::Avx2 | Level::Avx512) && block {
        // SAFETY: `clamp` only returns levels whose features the CPU has (AVX-512 implies AVX2).
        unsafe { simd::avx2::stats(ty, src, input, out, &mut lanes) };
        stats.merge(&lanes.finish());
        return;
    }
    let kquant = matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K);
    #[cfg(target_arch = "x86_64")]
    if level >= Level::Avx2 && kquant {
        // SAFETY: as above (AVX-512 implies AVX2 + F16C); whole super-blocks.
        unsafe { simd::avx2::stats_kquant(ty, src, input, out, &mut lanes) };
        stats.merge(&lanes.finish());
        return;
    }
    let _ = (level, block);
    if kquant {
        let mut x = [0.0f32; crate::kquants::QK_K];
        let mut y = [0.0f32; crate::kquants::QK_K];
        let in_blk = crate::kquants::QK_K * src.size();
        for (ib, ob) in input.chunks_exact(in_blk).zip(out.chunks_exact(ty.type_size())) {
            load_slice(src, ib, &mut x);
            crate::kquants::dequantize_blocks(ty, ob, &mut y);
            lanes.add(&x, &y);
        }
        stats.merge(&lanes.finish());
        return;
    }
    let mut x = [0.0f32; QK];
    let mut y = [0.0f32; QK];
    let in_blk = QK * src.size();
    let osz = ty.row_bytes(QK).unwrap_or(0);
    for (ib, ob) in input.chunks(in_blk).zip(out.chunks(osz)) {
        let m = ib.len() / src.size();
        load_slice(src, ib, &mut x[..m]);
        match ty {
            GgmlType::Q8_0 => BlockQ8_0::read_bytes(ob).dequantize(&mut y),
            GgmlType::Q4_0 => BlockQ4_0::read_bytes(ob).dequantize(&mut y),
            GgmlType::Q4_1 => BlockQ4_1::read_bytes(ob).dequantize(&mut y),
            GgmlType::Q5_0 => BlockQ5_0::read_bytes(ob).dequantize(&mut y),
            _ => decode_plain(ty, ob, &mut y[..m]),
        }
        lanes.add(&x[..m], &y[..m]);
    }
    stats.merge(&lanes.finish());
}

fn decode_plain(ty: GgmlType, b: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => load_slice(SrcDtype::F32, b, out),
        GgmlType::F16 => load_slice(SrcDtype::F16, b, out),
        _ => load_slice(SrcDtype::BF16, b, out),
    }
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
    match ty {
        GgmlType::Q8_0 => dequantize_blocks::<BlockQ8_0>(input, out),
        GgmlType::Q4_0 => dequantize_blocks::<BlockQ4_0>(input, out),
        GgmlType::Q4_1 => dequantize_blocks::<BlockQ4_1>(input, out),
        GgmlType::Q5_0 => dequantize_blocks::<BlockQ5_0>(input, out),
        GgmlType::Q4_K | GgmlType::Q6_K => crate::kquants::dequantize_blocks(ty, input, out),
        _ => decode_plain(ty, input, out),
    }
    Ok(())
}

fn dequantize_blocks<B: BlockFormat>(input: &[u8], out: &mut [f32]) {
    for (b, o) in input.chunks_exact(B::BYTES).zip(out.chunks_exact_mut(B::BLOCK)) {
        B::read_bytes(b).dequantize(o);
    }
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
