//! GGUF block formats: the type table ([`GgmlType`]), the `#[repr(C)]` block layouts with their
//! sizes asserted at compile time, the [`BlockFormat`] trait every block implements, and the
//! scalar reference of each legacy format (Q8_0, Q4_0, Q4_1, Q5_0); the K-quant references live in
//! [`crate::kquants`] and implement the same trait.
//!
//! A leaf: it depends only on [`crate::convert`], so the kernels (`gguf/avx2.rs`,
//! `gguf/avx512.rs`, `kquants/avx2.rs`) and the dispatcher ([`crate::gguf`]) all depend on it and
//! never on each other's files.
//!
//! The scalar `quantize_block_ref` of each legacy format follows `ggml-quants.c` literally:
//! f32 arithmetic left to right, `roundf` half away from zero in Q8_0, multiply by `1/d` (never
//! divide by `d`), truncating cast in Q4_0/Q4_1/Q5_0, no fused multiply-add. Output is byte
//! identical to `gguf.quants.quantize` of the `gguf` Python package (0.19.0), which the golden
//! tests check. Signed zeros are discussed in [`crate::gguf`].

use crate::convert::{f32_to_f16, first_non_finite, load_slice};
use crate::{QuantError, SrcDtype};
use half::f16;

/// Elements per block of the legacy formats (Q4_0, Q4_1, Q5_x, Q8_0).
pub const QK: usize = 32;

/// Elements per K-quant super-block (Q4_K, Q6_K).
pub const QK_K: usize = 256;

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
            GgmlType::Q4_K | GgmlType::Q6_K => QK_K,
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

    /// Whether [`crate::gguf::quantize_rows`] can produce this type.
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

/// A Q4_K super-block: eight sub-blocks of 32 values, value = `d·sc·q − dmin·m` with 6-bit `sc`
/// and `m` per sub-block packed in `scales` and 4-bit codes `q`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockQ4K {
    /// f16 bits of the super-scale of the sub-block scales.
    pub d: u16,
    /// f16 bits of the super-scale of the sub-block minima.
    pub dmin: u16,
    /// Six-bit scales and minima: bytes 0..4 hold scales 0..3 (low 6 bits) and the high 2 bits of
    /// scales 4..7; bytes 4..8 the same for the minima; bytes 8..12 the low nibbles of scale and
    /// minimum 4..7.
    pub scales: [u8; 12],
    /// Codes: byte `32·c + l` holds element `64·c + l` in its low nibble and `64·c + 32 + l` in
    /// its high nibble.
    pub qs: [u8; 128],
}

/// A Q6_K super-block: sixteen sub-blocks of 16 values, value = `d·scales[s]·(q − 32)` with
/// 6-bit codes split into a low nibble (`ql`) and two high bits (`qh`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockQ6K {
    /// Low nibbles: per half of 128 elements, byte `l` holds elements `l` and `l + 64` and byte
    /// `32 + l` elements `l + 32` and `l + 96` (low, high nibble).
    pub ql: [u8; 128],
    /// High two bits: per half, byte `l` holds elements `l`, `l + 32`, `l + 64`, `l + 96` at bit
    /// offsets 0, 2, 4, 6.
    pub qh: [u8; 64],
    /// Signed 8-bit sub-block scales.
    pub scales: [i8; 16],
    /// f16 bits of the super-scale.
    pub d: u16,
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// One GGUF block format: its reference quantizer, its dequantizer and its byte layout.
///
/// Implemented by the legacy blocks here and by the K-quant super-blocks in
/// [`crate::kquants`] (whose reference search lives there), so the scalar drivers
/// ([`quantize_blocks_ref`], [`dequantize_blocks`]) serve every format.
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
    /// Quantize one block with the scalar reference algorithm (the definition of correct bytes
    /// that every SIMD kernel reproduces). `x` holds `Self::BLOCK` finite values.
    fn quantize_block_ref(x: &[f32]) -> Self;
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

    fn quantize_block_ref(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), QK);
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

    fn quantize_block_ref(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), QK);
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

    fn quantize_block_ref(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), QK);
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
    fn quantize_block_ref(x: &[f32]) -> Self {
        debug_assert_eq!(x.len(), QK);
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

/// The scalar reference over whole blocks of `B`: `input` holds `out.len() / B::BYTES` blocks of
/// `src` elements. `base` is the element index of `input[0]` within the caller's slice, for error
/// reporting (SIMD kernels hand the blocks they cannot take, e.g. non-finite ones, to this).
pub(crate) fn quantize_blocks_ref<B: BlockFormat>(
    src: SrcDtype,
    input: &[u8],
    out: &mut [u8],
    base: usize,
) -> Result<(), QuantError> {
    let in_blk = B::BLOCK * src.size();
    let mut buf = [0.0f32; QK_K];
    let x = &mut buf[..B::BLOCK];
    for (i, (ib, ob)) in input.chunks_exact(in_blk).zip(out.chunks_exact_mut(B::BYTES)).enumerate() {
        load_slice(src, ib, x);
        check_finite(x, base + i * B::BLOCK)?;
        B::quantize_block_ref(x).write_bytes(ob);
    }
    Ok(())
}

/// Expand whole blocks of `B` (`input.len() / B::BYTES` of them) into `out`.
pub(crate) fn dequantize_blocks<B: BlockFormat>(input: &[u8], out: &mut [f32]) {
    for (b, o) in input.chunks_exact(B::BYTES).zip(out.chunks_exact_mut(B::BLOCK)) {
        B::read_bytes(b).dequantize(o);
    }
}

/// [`QuantError::NonFinite`] for the first NaN/±inf of `x`; `base` is the index of `x[0]`.
#[inline]
pub(crate) fn check_finite(x: &[f32], base: usize) -> Result<(), QuantError> {
    match first_non_finite(x) {
        Some((i, value)) => Err(QuantError::NonFinite { index: base + i, value }),
        None => Ok(()),
    }
}
