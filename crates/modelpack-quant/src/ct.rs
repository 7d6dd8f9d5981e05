//! compressed-tensors `pack-quantized` schemes (int4 group-wise / per-channel, int8 per-channel),
//! bit-exact with compressed-tensors 0.20 (DESIGN §5.3).
//!
//! The pipeline hands [`quantize_rows`] a chunk of whole rows of one `[out, in]` Linear weight and
//! gets back the chunk's slice of the three output tensors as raw little-endian bytes:
//! `weight_packed` (I32 `[rows, packed_cols]`), `weight_scale` (`[rows, scale_cols]` in the scale
//! dtype) and, when asymmetric, `weight_zero_point` (I32 `[zp_rows, scale_cols]`, packed along
//! dim 0, so a chunk must start at a multiple of [`CtScheme::rows_per_zp_word`]).
//!
//! # Arithmetic
//! compressed-tensors runs the whole computation in torch, in the weight's dtype: every
//! intermediate tensor is rounded to bf16 (bf16 model) or f16 (f16 model), while each single
//! operation is computed in f32 first (torch upcasts half-precision operands). The kernels mirror
//! that literally: an f32 operation followed by a round-to-nearest-even to the element dtype.
//!
//! For an f32 model compressed-tensors keeps everything in f32 and writes f32 scales
//! ([`ScaleDtype::for_source`] picks that). Asking for bf16/f16 scales on an f32 source (smaller
//! files) rounds only the scale to that dtype; the element steps then stay in f32, as torch's type
//! promotion of an f32 tensor with a bf16 scale would do. In general the element steps round to the
//! source dtype when it equals the scale dtype and are plain f32 otherwise.
//!
//! NaN or ±inf anywhere in the input is refused with [`QuantError::NonFinite`] (the index is into
//! the chunk's `input`), like the GGUF kernels: one such value would poison its group's scale.

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::convert::{round_bf16, round_f16};
use crate::metrics::ErrorStats;
use crate::simd::{self, Level};
use crate::{QuantError, SrcDtype};

pub(crate) use scalar::{get_zp, load_scale, store_scale};

/// How many input columns share one scale (and zero point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// One scale per output row (`strategy: "channel"`).
    Channel,
    /// One scale per run of this many columns of a row (`strategy: "group"`, `group_size`); it
    /// must divide the row length.
    Group(usize),
}

/// The dtype scales are computed in and stored as (compressed-tensors uses the model dtype).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleDtype {
    /// bfloat16 scales: steps round to bf16 (bf16 models).
    BF16,
    /// IEEE half scales: steps round to f16 (f16 models).
    F16,
    /// f32 scales: no rounding (what compressed-tensors writes for f32 models).
    F32,
}

impl ScaleDtype {
    /// What compressed-tensors itself would use for a model stored as `src`: the same dtype.
    pub const fn for_source(src: SrcDtype) -> ScaleDtype {
        match src {
            SrcDtype::BF16 => ScaleDtype::BF16,
            SrcDtype::F16 => ScaleDtype::F16,
            SrcDtype::F32 => ScaleDtype::F32,
        }
    }

    /// Bytes per stored scale.
    pub const fn size(self) -> usize {
        match self {
            ScaleDtype::BF16 | ScaleDtype::F16 => 2,
            ScaleDtype::F32 => 4,
        }
    }

    /// safetensors dtype name of the `weight_scale` tensor.
    pub const fn safetensors_name(self) -> &'static str {
        match self {
            ScaleDtype::BF16 => "BF16",
            ScaleDtype::F16 => "F16",
            ScaleDtype::F32 => "F32",
        }
    }

    /// `torch.finfo(dtype).eps`: the value a zero scale is replaced by (2^-7, 2^-10, 2^-23), so
    /// an all-zero group divides by something finite and dequantizes to exact zeros.
    pub fn eps(self) -> f32 {
        match self {
            ScaleDtype::BF16 => f32::powi(2.0, -7),
            ScaleDtype::F16 => f32::powi(2.0, -10),
            ScaleDtype::F32 => f32::EPSILON,
        }
    }

    /// Round an f32 to the nearest value of this dtype (ties to even), widened back.
    #[inline]
    pub fn round(self, x: f32) -> f32 {
        match self {
            ScaleDtype::BF16 => round_bf16(x),
            ScaleDtype::F16 => round_f16(x),
            ScaleDtype::F32 => x,
        }
    }
}

/// The dtype per-element steps (`w/scale`, `+zp`, dequantization) round to: the common dtype of
/// source and scale, f32 when they differ (torch type promotion).
#[inline]
pub(crate) fn elem_dtype(src: SrcDtype, scale: ScaleDtype) -> ScaleDtype {
    if ScaleDtype::for_source(src) == scale {
        scale
    } else {
        ScaleDtype::F32
    }
}

/// A compressed-tensors weight quantization scheme (`config_groups.*.weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtScheme {
    /// `num_bits`: 4 or 8.
    pub bits: u8,
    /// Channel or group strategy.
    pub strategy: Strategy,
    /// `symmetric`: no zero point when true.
    pub symmetric: bool,
}

impl CtScheme {
    /// W4A16 group-wise symmetric (the usual vLLM int4 scheme).
    pub const fn w4_group_sym(group: usize) -> CtScheme {
        CtScheme { bits: 4, strategy: Strategy::Group(group), symmetric: true }
    }

    /// W8A16 per-channel symmetric.
    pub const fn w8_channel_sym() -> CtScheme {
        CtScheme { bits: 8, strategy: Strategy::Channel, symmetric: true }
    }

    /// Refuse schemes the format cannot express (bits other than 4/8, a zero group size).
    pub fn validate(&self) -> Result<(), QuantError> {
        if self.bits != 4 && self.bits != 8 {
            return Err(QuantError::Shape(format!(
                "compressed-tensors pack-quantized needs 4 or 8 bits, not {}",
                self.bits
            )));
        }
        if self.strategy == Strategy::Group(0) {
            return Err(QuantError::Shape("group size 0".into()));
        }
        Ok(())
    }

    /// Smallest quantized value (`-2^(bits-1)`).
    pub const fn qmin(&self) -> i32 {
        -(1 << (self.safe_bits() - 1))
    }

    /// Largest quantized value (`2^(bits-1) - 1`).
    pub const fn qmax(&self) -> i32 {
        (1 << (self.safe_bits() - 1)) - 1
    }

    /// `bits` clamped to 1..=16 so the layout helpers never overflow or divide by zero on a
    /// scheme that [`CtScheme::validate`] would refuse (their results are then meaningless).
    const fn safe_bits(&self) -> u32 {
        let b = self.bits as u32;
        if b == 0 {
            1
        } else if b > 16 {
            16
        } else {
            b
        }
    }

    /// Values per packed i32 word (8 for int4, 4 for int8).
    pub const fn per_word(&self) -> usize {
        32 / self.safe_bits() as usize
    }

    /// i32 words per packed row: `ceil(cols * bits / 32)` (a partial last word is zero-padded,
    /// as compressed-tensors does).
    pub const fn packed_cols(&self, cols: usize) -> usize {
        cols.div_ceil(self.per_word())
    }

    /// Scales per row (`1` per channel, `cols / group`); an error if the group does not divide
    /// `cols` (the caller then falls back to another group or to per-channel).
    pub fn scale_cols(&self, cols: usize) -> Result<usize, QuantError> {
        match self.strategy {
            Strategy::Channel => Ok(1),
            Strategy::Group(g) if g > 0 && cols.is_multiple_of(g) && cols > 0 => Ok(cols / g),
            Strategy::Group(g) => {
                Err(QuantError::Shape(format!("group size {g} does not divide the row length {cols}")))
            }
        }
    }

    /// Columns per scale.
    fn group_len(&self, cols: usize) -> usize {
        match self.strategy {
            Strategy::Channel => cols,
            Strategy::Group(g) => g,
        }
    }

    /// Rows of the packed zero-point tensor for `rows` weight rows: `ceil(rows * bits / 32)`.
    pub const fn zp_rows(&self, rows: usize) -> usize {
        rows.div_ceil(self.per_word())
    }

    /// Weight rows per zero-point word (`32 / bits`): asymmetric chunks must start at a multiple
    /// of this row so each chunk writes whole zero-point words.
    pub const fn rows_per_zp_word(&self) -> usize {
        self.per_word()
    }
}

/// What one compressed-tensors call quantizes: the scheme, the dtypes and a chunk of whole rows
/// `row0..row0 + rows` of a `[_, cols]` Linear weight. The values that travel together through
/// every entry point (RTN, `mse`, importance-weighted, parallel driver) in one place.
#[derive(Debug, Clone, Copy)]
pub struct CtChunk<'a> {
    /// The quantization scheme.
    pub scheme: CtScheme,
    /// Element type of `input`.
    pub src: SrcDtype,
    /// The dtype scales are computed in and stored as.
    pub scale_dtype: ScaleDtype,
    /// Raw little-endian bytes of `rows * cols` source elements (possibly unaligned).
    pub input: &'a [u8],
    /// Index of the chunk's first row in the weight: only matters for zero-point packing, and must
    /// be a multiple of [`CtScheme::rows_per_zp_word`] for asymmetric schemes.
    pub row0: usize,
    /// Rows in the chunk.
    pub rows: usize,
    /// Elements per row (the weight's input features).
    pub cols: usize,
}

/// The chunk's slices of the three output tensors, exactly sized: `packed` = `rows *
/// packed_cols(cols) * 4` bytes, `scale` = `rows * scale_cols(cols) * scale_dtype.size()`, `zp` =
/// `zp_rows(rows) * scale_cols * 4` (asymmetric schemes only, else `None`).
#[derive(Debug)]
pub struct CtOutput<'a> {
    /// `weight_packed` bytes (little-endian i32 words).
    pub packed: &'a mut [u8],
    /// `weight_scale` bytes in the scale dtype.
    pub scale: &'a mut [u8],
    /// `weight_zero_point` bytes (little-endian i32 words packed along dim 0), asymmetric only.
    pub zp: Option<&'a mut [u8]>,
}

impl CtOutput<'_> {
    /// A shorter-lived copy of the three borrows, so one output can be handed down twice.
    pub fn reborrow(&mut self) -> CtOutput<'_> {
        CtOutput { packed: self.packed, scale: self.scale, zp: self.zp.as_deref_mut() }
    }

    /// The written bytes, read-only.
    pub fn as_packed(&self) -> CtPacked<'_> {
        CtPacked { packed: self.packed, scale: self.scale, zp: self.zp.as_deref() }
    }
}

/// A quantized chunk, read-only: what [`dequantize_rows`] and the error statistics read.
#[derive(Debug, Clone, Copy)]
pub struct CtPacked<'a> {
    /// `weight_packed` bytes.
    pub packed: &'a [u8],
    /// `weight_scale` bytes.
    pub scale: &'a [u8],
    /// `weight_zero_point` bytes (asymmetric only).
    pub zp: Option<&'a [u8]>,
}

/// Validated geometry of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    pub rows: usize,
    pub cols: usize,
    pub group: usize,
    pub scale_cols: usize,
    pub packed_cols: usize,
}

/// Validate a chunk's geometry (the `mse` path reuses the checks of [`quantize_rows`]).
pub(crate) fn geom(c: &CtChunk, packed_len: usize, scale_len: usize) -> Result<Geom, QuantError> {
    // Zero points were checked by the RTN pass; only the common geometry is recomputed here.
    let nozp = CtChunk { scheme: CtScheme { symmetric: true, ..c.scheme }, ..*c };
    check(&nozp, c.input.len(), packed_len, scale_len, None)
}

/// Overwrite zero point `zp` of chunk row `r`, group `j` in the dim-0-packed words.
pub(crate) fn set_zp(s: &CtScheme, zpb: &mut [u8], scale_cols: usize, r: usize, j: usize, zp: i32) {
    let per = s.per_word();
    let bits = u32::from(s.bits);
    let i = (r / per) * scale_cols + j;
    let sh = bits * (r % per) as u32;
    let mask = ((1u32 << bits) - 1) << sh;
    let u = ((zp + (1 << (bits - 1))) as u32) << sh;
    let w = u32::from_le_bytes([zpb[4 * i], zpb[4 * i + 1], zpb[4 * i + 2], zpb[4 * i + 3]]);
    zpb[4 * i..4 * i + 4].copy_from_slice(&((w & !mask) | (u & mask)).to_le_bytes());
}

/// Check every size of a call against its scheme and shape; `input_len` is in bytes of `c.src`
/// (`c.input` itself is not read, so dequantization can check an f32 output in its place).
fn check(
    c: &CtChunk,
    input_len: usize,
    packed_len: usize,
    scale_len: usize,
    zp_len: Option<usize>,
) -> Result<Geom, QuantError> {
    let CtChunk { scheme: ref s, src, scale_dtype, row0, rows, cols, .. } = *c;
    let src_size = src.size();
    s.validate()?;
    if cols == 0 {
        return Err(QuantError::Shape("row length 0".into()));
    }
    let scale_cols = s.scale_cols(cols)?;
    let packed_cols = s.packed_cols(cols);
    let want = |what: &str, got: usize, want: Option<usize>| match want {
        Some(w) if w == got => Ok(()),
        Some(w) => {
            Err(QuantError::Shape(format!("{what}: {got} bytes, expected {w} for {rows} rows x {cols} columns")))
        }
        None => Err(QuantError::Shape(format!("{what}: size overflows"))),
    };
    want("input", input_len, rows.checked_mul(cols).and_then(|n| n.checked_mul(src_size)))?;
    want("weight_packed", packed_len, rows.checked_mul(packed_cols).and_then(|n| n.checked_mul(4)))?;
    want("weight_scale", scale_len, rows.checked_mul(scale_cols).and_then(|n| n.checked_mul(scale_dtype.size())))?;
    match (s.symmetric, zp_len) {
        (true, None) => {}
        (true, Some(_)) => return Err(QuantError::Shape("symmetric scheme has no weight_zero_point".into())),
        (false, None) => return Err(QuantError::Shape("asymmetric scheme needs a weight_zero_point buffer".into())),
        (false, Some(n)) => {
            want("weight_zero_point", n, Some(s.zp_rows(rows) * scale_cols * 4))?;
            if !row0.is_multiple_of(s.rows_per_zp_word()) {
                return Err(QuantError::Shape(format!(
                    "chunk starts at row {row0}, not a multiple of {} (zero points pack {} rows per word)",
                    s.rows_per_zp_word(),
                    s.rows_per_zp_word()
                )));
            }
        }
    }
    Ok(Geom { rows, cols, group: s.group_len(cols), scale_cols, packed_cols })
}

/// Quantize a chunk of whole rows with the active SIMD level into `out` (see [`CtChunk`] and
/// [`CtOutput`] for the layouts). When `stats` is `Some`, the chunk's error against the
/// dequantized values is added to it.
///
/// Errors: [`QuantError::Shape`] for inconsistent sizes, [`QuantError::NonFinite`] for the first
/// NaN/±inf (index into `input`); on error the outputs hold unspecified bytes.
pub fn quantize_rows(c: &CtChunk, out: CtOutput, stats: Option<&mut ErrorStats>) -> Result<(), QuantError> {
    quantize_rows_at(simd::active_level(), c, out, stats)
}

/// [`quantize_rows`] at an explicit SIMD level (clamped to what the CPU supports); every level
/// writes the same bytes, so tests and benchmarks compare paths with this.
pub fn quantize_rows_at(
    level: Level,
    c: &CtChunk,
    mut out: CtOutput,
    mut stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    let g = check(c, c.input.len(), out.packed.len(), out.scale.len(), out.zp.as_ref().map(|z| z.len()))?;
    if let Some(z) = out.zp.as_deref_mut() {
        z.fill(0);
    }
    let level = simd::clamp(level);
    let mut done = false;
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(st)) = (level > Level::Scalar, stats.as_deref_mut()) {
        let mut lanes = crate::metrics::Lanes::default();
        // SAFETY: `clamp` only returns levels whose features this CPU has (AVX2 is part of both).
        let fused = unsafe { x86::quantize_with_stats(c, &g, out.reborrow(), &mut lanes)? };
        match fused {
            x86::Fused::BytesAndStats => {
                st.merge(&lanes.finish());
                return Ok(());
            }
            x86::Fused::BytesOnly => {
                accumulate_stats_at(Level::Scalar, c, &g, out.as_packed(), st);
                return Ok(());
            }
            x86::Fused::NotApplicable => {}
        }
    }
    #[cfg(target_arch = "x86_64")]
    if level > Level::Scalar {
        // SAFETY: `clamp` only returns levels whose features this CPU has.
        done = unsafe { x86::quantize(level, c, &g, out.reborrow())? };
    }
    if !done {
        scalar::quantize(c, &g, out.reborrow())?;
    }
    if let Some(stats) = stats {
        accumulate_stats_at(level, c, &g, out.as_packed(), stats);
    }
    Ok(())
}

/// Add a quantized chunk's error statistics to `stats`: the SIMD pass where the level and shape
/// allow it, else the scalar reference; the same bits either way (see `ct/x86.rs` `stats`).
pub(crate) fn accumulate_stats_of(c: &CtChunk, g: &Geom, q: CtPacked, stats: &mut ErrorStats) {
    accumulate_stats_at(simd::active_level(), c, g, q, stats);
}

/// [`accumulate_stats_of`] at an explicit SIMD level (the bits are the same at every level).
pub(crate) fn accumulate_stats_at(level: Level, c: &CtChunk, g: &Geom, q: CtPacked, stats: &mut ErrorStats) {
    let mut lanes = crate::metrics::Lanes::default();
    let mut done = false;
    #[cfg(target_arch = "x86_64")]
    if simd::clamp(level) > Level::Scalar {
        // SAFETY: `clamp` only returns levels whose features this CPU has (AVX2 is part of both
        // SIMD levels).
        done = unsafe { x86::stats(c, g, q, &mut lanes) };
    }
    if !done {
        scalar::accumulate_stats(c, g, q, &mut lanes);
    }
    stats.merge(&lanes.finish());
}

/// Dequantize a chunk written by [`quantize_rows`] back to f32 (`out` = `rows * cols` values):
/// `(q - zp) * scale`, rounded to the scale dtype as the consumer computes it in that dtype.
/// Used for comparisons, metrics and tests.
pub fn dequantize_rows(
    s: &CtScheme,
    scale_dtype: ScaleDtype,
    q: CtPacked,
    row0: usize,
    rows: usize,
    cols: usize,
    out: &mut [f32],
) -> Result<(), QuantError> {
    // Checked as if the f32 output were the input of an f32 chunk.
    let c = CtChunk { scheme: *s, src: SrcDtype::F32, scale_dtype, input: &[], row0, rows, cols };
    let g = check(&c, out.len() * 4, q.packed.len(), q.scale.len(), q.zp.map(|z| z.len()))?;
    scalar::dequantize(s, scale_dtype, scale_dtype, q, &g, |i, v| out[i] = v);
    Ok(())
}

/// Elements per chunk of [`quantize_tensor_par`] (rounded to whole rows, and to a multiple of
/// [`CtScheme::rows_per_zp_word`] rows). Fixed, so bytes and statistics never depend on the
/// thread count.
pub const PAR_CHUNK_ELEMS: usize = 1 << 16;

/// Rows per chunk of [`quantize_tensor_par`] for rows of `cols` elements.
pub fn par_chunk_rows(s: &CtScheme, cols: usize) -> usize {
    let per = s.rows_per_zp_word();
    ((PAR_CHUNK_ELEMS / cols.max(1)).max(1)).div_ceil(per) * per
}

/// [`quantize_rows`] over a whole `[rows, cols]` weight (or a run of rows starting at `c.row0`) on
/// the current rayon pool: fixed chunks of [`par_chunk_rows`] rows, quantized in parallel with the
/// active SIMD level, statistics merged in chunk order. Same bytes and statistics for any thread
/// count; a non-finite error reports the first offending element (index into `c.input`).
pub fn quantize_tensor_par(c: &CtChunk, out: CtOutput, stats: Option<&mut ErrorStats>) -> Result<(), QuantError> {
    use rayon::prelude::*;
    let g = check(c, c.input.len(), out.packed.len(), out.scale.len(), out.zp.as_ref().map(|z| z.len()))?;
    let CtChunk { scheme: ref s, src, scale_dtype, input, rows, cols, .. } = *c;
    if rows == 0 {
        return Ok(());
    }
    let level = simd::active_level();
    let cr = par_chunk_rows(s, cols);
    let in_c = cr * cols * src.size();
    let p_c = cr * g.packed_cols * 4;
    let s_c = cr * g.scale_cols * scale_dtype.size();
    let z_c = s.zp_rows(cr) * g.scale_cols * 4;
    let zps: Vec<Option<&mut [u8]>> = match out.zp {
        Some(z) => z.chunks_mut(z_c).map(Some).collect(),
        None => (0..rows.div_ceil(cr)).map(|_| None).collect(),
    };
    let want_stats = stats.is_some();
    let results: Vec<Result<ErrorStats, QuantError>> = input
        .par_chunks(in_c)
        .zip(out.packed.par_chunks_mut(p_c))
        .zip(out.scale.par_chunks_mut(s_c))
        .zip(zps.into_par_iter())
        .enumerate()
        .map(|(i, (((inp, p), sc), z))| {
            let r0 = i * cr;
            let n = (rows - r0).min(cr);
            let mut st = ErrorStats::new();
            let chunk = CtChunk { input: inp, row0: c.row0 + r0, rows: n, ..*c };
            let out = CtOutput { packed: p, scale: sc, zp: z };
            quantize_rows_at(level, &chunk, out, want_stats.then_some(&mut st)).map_err(|e| match e {
                QuantError::NonFinite { index, value } => QuantError::NonFinite { index: index + r0 * cols, value },
                e => e,
            })?;
            Ok(st)
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
