//! Importance-weighted quantizers: llama.cpp's `quant_weights` paths, byte for byte.
//!
//! With an importance matrix, `llama-quantize` passes each tensor's per-column mean squared
//! activation (`imatrix[j]`, one value per column of the weight) to ggml's quantizers, which then
//! take different code paths from the reference (`*_ref`) quantizers:
//!
//! | type | llama.cpp function | search |
//! |------|--------------------|--------|
//! | Q4_K | `quantize_row_q4_K_impl` | `make_qkx3_quants` per 32, weights `imatrix[j]·sqrt(σ² + x_j²)` (σ² = 2·Σx²/256 of the super-block); 6-bit scales and mins by `make_qp_quants` weighted by the sub-block weight sums |
//! | Q6_K | `quantize_row_q6_K_impl` | `make_qx_quants(16, 32, rmse_type 1)` with weights `imatrix[j]` |
//! | Q4_0 | `quantize_row_q4_0_impl` | `make_qx_quants(32, 8)`, weights `imatrix[j]·sqrt(σ² + x_j²)` (σ² = Σx²/n of the whole row) |
//! | Q4_1 | `quantize_row_q4_1_impl` | `make_qkx3_quants(32, 15)`, same weights |
//! | Q5_0 | `quantize_row_q5_0_impl` | `make_qx_quants(32, 16)`, same weights |
//!
//! Q8_0 and the float types ignore the matrix in llama.cpp (`quantize_q8_0` drops
//! `quant_weights`), so they do here. The scalar code follows the C code's f32 operation order
//! exactly (no FMA; Rust never contracts) and uses [`nearest_int`]'s bit trick, so the bytes
//! equal `ggml_quantize_chunk(..., imatrix)`. The Q4_K and Q6_K searches also run in the AVX2 and
//! AVX-512 K-quant kernels (one sub-block per lane, the same operations in the same order),
//! bit-identical to this scalar code (`tests/imatrix_props.rs`); the `kquant_llama` test checks this
//! against llama.cpp's own code through `quant_harness --weights`.

use crate::blocks::BlockFormat;
use crate::convert::{f16_to_f32, f32_to_f16, first_non_finite, load_slice};
use crate::gguf::{self, GgmlType};
use crate::kquants::{get_scale_min_k4, nearest_int, BlockQ4K, BlockQ6K, QK_K};
use crate::metrics::ErrorStats;
use crate::{simd, QuantError, SrcDtype};

/// ggml's `GROUP_MAX_EPS`: below this a group counts as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Whether llama.cpp quantizes `ty` differently when given an importance matrix (and so do we).
/// For other types the weights are ignored.
pub const fn uses_weights(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0)
}

/// [`crate::gguf::quantize_rows`] with per-column importance weights (`weights.len() ==
/// row_len`, finite and non-negative, as [`uses_weights`] types expect): the bytes
/// `ggml_quantize_chunk(ty, ..., imatrix = weights)` writes. Types that ignore the matrix get
/// their ordinary RTN bytes. Same errors as `quantize_rows`, plus [`QuantError::Shape`] when
/// the weight vector does not match the row length.
pub fn quantize_rows_weighted(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    weights: &[f32],
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    quantize_rows_weighted_at(simd::active_level(), ty, src, input, row_len, weights, out, stats)
}

/// [`quantize_rows_weighted`] at an explicit SIMD level (clamped to what the CPU supports). The
/// bytes are the same at every level: Q4_K and Q6_K run their searches in the K-quant kernels
/// (one sub-block per lane, the scalar operation order), the legacy types stay scalar.
#[allow(clippy::too_many_arguments)]
pub fn quantize_rows_weighted_at(
    level: simd::Level,
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    weights: &[f32],
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    let level = simd::clamp(level);
    if !uses_weights(ty) {
        return gguf::quantize_rows_at(level, ty, src, input, row_len, out, stats);
    }
    if weights.len() != row_len {
        return Err(QuantError::Shape(format!(
            "importance weights have {} values, the rows have {row_len} columns",
            weights.len()
        )));
    }
    gguf::check_shape(ty, src.size(), input.len(), row_len, out.len())?;
    let row_in = row_len * src.size();
    let row_out = ty.row_bytes(row_len).expect("checked by check_shape");
    let mut x = vec![0.0f32; row_len];
    for (r, (ib, ob)) in input.chunks_exact(row_in).zip(out.chunks_exact_mut(row_out)).enumerate() {
        load_slice(src, ib, &mut x);
        if let Some((k, value)) = first_non_finite(&x) {
            return Err(QuantError::NonFinite { index: r * row_len + k, value });
        }
        quantize_row_at(level, ty, &x, weights, ob);
    }
    if let Some(stats) = stats {
        gguf::accumulate_stats(level, ty, src, input, out, stats);
    }
    Ok(())
}

/// One finite row of a [`uses_weights`] type with the kernel of `level` (already clamped).
fn quantize_row_at(level: simd::Level, ty: GgmlType, x: &[f32], qw: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    match (level, ty) {
        // SAFETY (both arms): `simd::clamp` only returns levels whose features the CPU has;
        // the row is whole super-blocks (checked by `check_shape`) and finite.
        (simd::Level::Avx512, GgmlType::Q4_K | GgmlType::Q6_K) => {
            return unsafe { crate::kquants::avx512::quantize_weighted(ty, x, qw, out) }
        }
        (simd::Level::Avx2, GgmlType::Q4_K | GgmlType::Q6_K) => {
            return unsafe { crate::kquants::avx2::quantize_weighted(ty, x, qw, out) }
        }
        _ => {}
    }
    let _ = level;
    quantize_row(ty, x, qw, out)
}

/// The `mse` method with importance weights, for the types `mse` searches
/// ([`crate::mse::gguf_supported`]; others get [`quantize_rows_weighted`]): per 32-value block,
/// the candidate with the smallest activation-weighted squared error `Σ_j imatrix[j]·(x_j − x̂_j)²`
/// among llama.cpp's weighted quantization ([`quantize_rows_weighted`], the `rtn` bytes, kept on
/// ties), the unweighted reference rounding and the unweighted `mse` search
/// ([`crate::mse::quantize_gguf_rows`]).
///
/// Why this metric and not llama.cpp's `imatrix[j]·sqrt(σ² + x_j²)`: `imatrix[j]` is the mean
/// squared input activation of column `j`, so for an output `y = Σ_j a_j·w_j` the expected squared
/// output error of a row, with activations uncorrelated across columns, is exactly
/// `Σ_j E[a_j²]·e_j²`. The `sqrt(σ² + x²)` factor is llama.cpp's search heuristic, not an error
/// measure. Because the weighted `rtn` bytes are a candidate, the result is never worse than
/// `rtn` in this metric on any block (property-tested). Bytes are independent of SIMD level and
/// thread count (every candidate is).
pub fn quantize_rows_mse(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    weights: &[f32],
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    quantize_rows_mse_at(simd::active_level(), ty, src, input, row_len, weights, out, stats)
}

/// [`quantize_rows_mse`] at an explicit SIMD level (clamped to what the CPU supports): the
/// bytes are the same at every level.
#[allow(clippy::too_many_arguments)]
pub fn quantize_rows_mse_at(
    level: simd::Level,
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    weights: &[f32],
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    let level = simd::clamp(level);
    if weights.len() != row_len {
        return Err(QuantError::Shape(format!(
            "importance weights have {} values, the rows have {row_len} columns",
            weights.len()
        )));
    }
    if !crate::mse::gguf_supported(ty) {
        // No search for this type (K-quants, floats): llama.cpp's weighted bytes, so a tensor
        // labelled `rtn` in the manifest really is what llama-quantize --imatrix writes.
        return quantize_rows_weighted_at(level, ty, src, input, row_len, weights, out, stats);
    }
    // Validates shapes and finiteness; the first candidate.
    quantize_rows_weighted_at(level, ty, src, input, row_len, weights, out, None)?;
    let blk = ty.block_size();
    let mut others = Vec::new();
    if uses_weights(ty) {
        let mut b = vec![0u8; out.len()];
        gguf::quantize_rows_at(level, ty, src, input, row_len, &mut b, None)?;
        others.push(b);
    }
    let mut c = vec![0u8; out.len()];
    crate::mse::quantize_gguf_rows_at(level, ty, src, input, row_len, &mut c, None)?;
    others.push(c);
    let osz = ty.type_size();
    let in_blk = blk * src.size();
    let mut x = vec![0.0f32; blk];
    let mut y = vec![0.0f32; blk];
    for (b, ib) in input.chunks_exact(in_blk).enumerate() {
        load_slice(src, ib, &mut x);
        let col0 = (b * blk) % row_len;
        let w = &weights[col0..col0 + blk];
        let ob = b * osz..(b + 1) * osz;
        let mut best = weighted_error(ty, &out[ob.clone()], &x, w, &mut y);
        for o in &others {
            let e = weighted_error(ty, &o[ob.clone()], &x, w, &mut y);
            if e < best {
                best = e;
                out[ob.clone()].copy_from_slice(&o[ob.clone()]);
            }
        }
    }
    if let Some(stats) = stats {
        gguf::accumulate_stats(level, ty, src, input, out, stats);
    }
    Ok(())
}

/// `Σ_j w_j·(x_j − x̂_j)²` in f64 for one block of `ty`; `y` is scratch of the block's length.
/// Columns of weight 0 do not count (even where the block decodes to ±inf/NaN, as an f16 scale
/// overflow does), and a NaN total is +inf, so comparisons between candidates are total.
pub fn weighted_error(ty: GgmlType, block: &[u8], x: &[f32], w: &[f32], y: &mut [f32]) -> f64 {
    gguf::dequantize_rows(ty, block, x.len(), y).expect("one whole block");
    let e: f64 = x
        .iter()
        .zip(y.iter())
        .zip(w)
        .filter(|(_, &w)| w != 0.0)
        .map(|((&a, &b), &w)| f64::from(w) * (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

/// compressed-tensors `mse` with importance weights (`weights.len() == cols`): per group, the
/// candidate with the smaller activation-weighted error `Σ imatrix[j]·(x − x̂)²` between the
/// unweighted `mse` search ([`crate::mse::quantize_ct_rows_at`], kept on ties) and
/// compressed-tensors' RTN, decoded as [`crate::ct::dequantize_rows`] does. No library computes
/// an imatrix-weighted compressed-tensors format, so there is no byte-exact reference: the
/// guarantee is "never worse than either candidate on any group" in that metric. Same arguments
/// and errors as [`crate::mse::quantize_ct_rows_at`].
pub fn quantize_ct_rows_mse_at(
    level: simd::Level,
    c: &crate::ct::CtChunk,
    weights: &[f32],
    out: crate::ct::CtOutput,
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    use crate::ct::{self, CtChunk, CtOutput, CtPacked};
    let CtChunk { scheme: ref s, src, scale_dtype, input, row0, rows, cols } = *c;
    if weights.len() != cols {
        return Err(QuantError::Shape(format!(
            "importance weights have {} values, the rows have {cols} columns",
            weights.len()
        )));
    }
    let level = simd::clamp(level);
    let CtOutput { packed, scale, mut zp } = out;
    let out = CtOutput { packed: &mut *packed, scale: &mut *scale, zp: zp.as_deref_mut() };
    crate::mse::quantize_ct_rows_at(level, c, out, None)?;
    let (mut pb, mut sb) = (vec![0u8; packed.len()], vec![0u8; scale.len()]);
    let mut zb = zp.as_deref().map(|z| vec![0u8; z.len()]);
    ct::quantize_rows_at(level, c, CtOutput { packed: &mut pb, scale: &mut sb, zp: zb.as_deref_mut() }, None)?;
    let g = ct::geom(c, packed.len(), scale.len())?;
    let (mut ya, mut yb) = (vec![0f32; rows * cols], vec![0f32; rows * cols]);
    let qa = CtPacked { packed, scale, zp: zp.as_deref() };
    ct::dequantize_rows(s, scale_dtype, qa, row0, rows, cols, &mut ya)?;
    let qb = CtPacked { packed: &pb, scale: &sb, zp: zb.as_deref() };
    ct::dequantize_rows(s, scale_dtype, qb, row0, rows, cols, &mut yb)?;
    let es = src.size();
    let ssz = scale_dtype.size();
    let bits = usize::from(s.bits);
    let mut x = vec![0f32; cols];
    for r in 0..rows {
        load_slice(src, &input[r * cols * es..(r + 1) * cols * es], &mut x);
        for j in 0..g.scale_cols {
            let c0 = j * g.group;
            let cs = c0..c0 + g.group;
            let err = |y: &[f32]| -> f64 {
                let e: f64 = cs
                    .clone()
                    .filter(|&c| weights[c] != 0.0)
                    .map(|c| f64::from(weights[c]) * (f64::from(x[c]) - f64::from(y[r * cols + c])).powi(2))
                    .sum();
                if e.is_nan() {
                    f64::INFINITY
                } else {
                    e
                }
            };
            if err(&yb) >= err(&ya) {
                continue;
            }
            let si = r * g.scale_cols + j;
            scale[si * ssz..(si + 1) * ssz].copy_from_slice(&sb[si * ssz..(si + 1) * ssz]);
            if let (Some(zpa), Some(zpb)) = (zp.as_deref_mut(), zb.as_deref()) {
                ct::set_zp(s, zpa, g.scale_cols, r, j, ct::get_zp(s, zpb, g.scale_cols, r, j));
            }
            let (pa, pr) = (
                &mut packed[r * g.packed_cols * 4..(r + 1) * g.packed_cols * 4],
                &pb[r * g.packed_cols * 4..(r + 1) * g.packed_cols * 4],
            );
            let mask = ((1u16 << bits) - 1) as u8;
            for c in cs {
                let (bi, sh) = (c * bits / 8, (c * bits) % 8);
                pa[bi] = (pa[bi] & !(mask << sh)) | (pr[bi] & (mask << sh));
            }
        }
    }
    if let Some(stats) = stats {
        ct::accumulate_stats_of(c, &g, CtPacked { packed, scale, zp: zp.as_deref() }, stats);
    }
    Ok(())
}

/// One row of a [`uses_weights`] type into its on-disk bytes.
pub fn quantize_row(ty: GgmlType, x: &[f32], qw: &[f32], out: &mut [u8]) {
    match ty {
        GgmlType::Q4_K => {
            for ((xs, w), o) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.chunks_exact_mut(144)) {
                q4k_block(xs.try_into().expect("256"), w.try_into().expect("256")).write_bytes(o);
            }
        }
        GgmlType::Q6_K => {
            for ((xs, w), o) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(out.chunks_exact_mut(210)) {
                q6k_block(xs.try_into().expect("256"), w.try_into().expect("256")).write_bytes(o);
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 => legacy_row(ty, x, qw, out),
        _ => unreachable!("uses_weights() is false for {ty}"),
    }
}

/// `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw)` with weights: returns the scale, the
/// codes `l + nmax` go to `l_out`.
pub(crate) fn make_qx_quants_w<const N: usize>(nmax: i32, x: &[f32; N], qw: &[f32; N], l_out: &mut [u8; N]) -> f32 {
    let n = N;
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as u8;
        let w = qw[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            let w = qw[i];
            let lf = l as f32;
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                l_out[i] = (nmax + l) as u8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_qkx3_quants(n, nmax, x, weights, L, &the_min, Laux, -0.9, 0.05, 36, false)`: returns
/// `(scale, the_min)`, codes in `l_out`. The same search as `make_qkx2_quants` with other steps.
pub(crate) fn make_qkx3_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    weights: &[f32; N],
    l_out: &mut [u8; N],
) -> (f32, f32) {
    crate::kquants::make_qkx_quants(nmax, (-0.9, 0.05, 36), x, weights, l_out)
}

/// `make_qp_quants(n, nmax, x, L, quant_weights)`: quantize the non-negative sub-block scales
/// (or mins) `x` to `0..=nmax` codes with a weighted search; returns the super-scale. Codes are
/// stored as `uint8_t` like the C code (a negative intermediate wraps).
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0.0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = qw[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != i32::from(l_out[i]) {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// σ² of `quantize_row_q4_K_impl`: `2·Σx²/256` over the super-block, summed left to right.
pub(crate) fn q4k_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in &x[..QK_K] {
        sum_x2 += v * v;
    }
    2.0 * sum_x2 / QK_K as f32
}

/// The second half of `quantize_row_q4_K_impl`, shared by the scalar and SIMD paths: from the
/// eight sub-block `(scale, min)` pairs of the search and their weight sums `sw`, the 6-bit codes
/// by `make_qp_quants`, the f16 super-scales and the final per-sub-block scales `(d, dm)` the
/// codes are requantized with (`d == 0` keeps the search's codes).
pub(crate) fn q4k_weighted_scales(scales: &[f32; 8], mins: &[f32; 8], sw: &[f32; 8]) -> (BlockQ4K, [f32; 8], [f32; 8]) {
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, scales, &mut ls, sw);
    let m_block = make_qp_quants(63, mins, &mut lm, sw);
    let mut b = BlockQ4K { d: 0, dmin: 0, scales: [0; 12], qs: [0; 128] };
    for j in 0..8 {
        let (s, m) = (ls[j], lm[j]);
        if j < 4 {
            b.scales[j] = s;
            b.scales[j + 4] = m;
        } else {
            b.scales[j + 4] = (s & 0xf) | ((m & 0xf) << 4);
            b.scales[j - 4] |= (s >> 4) << 6;
            b.scales[j] |= (m >> 4) << 6;
        }
    }
    b.d = f32_to_f16(d_block);
    b.dmin = f32_to_f16(m_block);
    let (d_all, m_all) = (f16_to_f32(b.d), f16_to_f32(b.dmin));
    let mut ds = [0.0f32; 8];
    let mut dms = [0.0f32; 8];
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &b.scales);
        ds[j] = d_all * sc as f32;
        dms[j] = m_all * m as f32;
    }
    (b, ds, dms)
}

/// `quantize_row_q4_K_impl` for one super-block with its 256 column weights.
pub fn q4k_block(x: &[f32; QK_K], qw: &[f32; QK_K]) -> BlockQ4K {
    let sigma2 = q4k_sigma2(x);
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut sw = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        for (i, w) in weights.iter_mut().enumerate() {
            *w = qw[32 * j + i] * (sigma2 + xs[i] * xs[i]).sqrt();
        }
        let mut sumw = 0.0f32;
        for &w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let xs: &[f32; 32] = xs.try_into().expect("32");
        let lj: &mut [u8; 32] = (&mut l[32 * j..32 * j + 32]).try_into().expect("32");
        let (s, m) = make_qkx3_quants(15, xs, &weights, lj);
        scales[j] = s;
        mins[j] = m;
    }
    let (mut b, ds, dms) = q4k_weighted_scales(&scales, &mins, &sw);
    for j in 0..8 {
        let d = ds[j];
        if d == 0.0 {
            continue;
        }
        let dm = dms[j];
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, 15) as u8;
        }
    }
    crate::kquants::q4k_pack(&l, &mut b.qs);
    b
}

/// `quantize_row_q6_K_impl` for one super-block with its 256 column weights.
pub fn q6k_block(x: &[f32; QK_K], qw: &[f32; QK_K]) -> BlockQ6K {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    for (j, s) in scales.iter_mut().enumerate() {
        let r = 16 * j..16 * j + 16;
        let lj: &mut [u8; 16] = (&mut l[r.clone()]).try_into().expect("16");
        *s = make_qx_quants_w(32, x[r.clone()].try_into().expect("16"), qw[r].try_into().expect("16"), lj);
    }
    let Some((mut b, ds)) = crate::kquants::q6k_scales(&scales) else {
        return BlockQ6K::ZERO;
    };
    for (j, &d) in ds.iter().enumerate() {
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            let q = nearest_int(x[16 * j + i] / d).clamp(-32, 31);
            l[16 * j + i] = (q + 32) as u8;
        }
    }
    crate::kquants::q6k_pack(&l, &mut b);
    b
}

/// `quantize_row_q4_0_impl` / `q4_1_impl` / `q5_0_impl`: one row of 32-element blocks; σ² is
/// the mean square of the whole row.
fn legacy_row(ty: GgmlType, x: &[f32], qw: &[f32], out: &mut [u8]) {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = sum_x2 / x.len() as f32;
    let osz = ty.type_size();
    let mut weight = [0.0f32; 32];
    let mut l = [0u8; 32];
    for ((xb, qb), o) in x.chunks_exact(32).zip(qw.chunks_exact(32)).zip(out.chunks_exact_mut(osz)) {
        let xb: &[f32; 32] = xb.try_into().expect("32");
        for j in 0..32 {
            weight[j] = qb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
        }
        match ty {
            GgmlType::Q4_0 => {
                let d = make_qx_quants_w(8, xb, &weight, &mut l);
                o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
                for j in 0..16 {
                    o[2 + j] = l[j] | (l[j + 16] << 4);
                }
            }
            GgmlType::Q4_1 => {
                let (d, the_min) = make_qkx3_quants(15, xb, &weight, &mut l);
                o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
                o[2..4].copy_from_slice(&f32_to_f16(-the_min).to_le_bytes());
                for j in 0..16 {
                    o[4 + j] = l[j] | (l[j + 16] << 4);
                }
            }
            GgmlType::Q5_0 => {
                let d = make_qx_quants_w(16, xb, &weight, &mut l);
                o[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
                let mut qh = 0u32;
                for j in 0..16 {
                    let (x0, x1) = (l[j], l[j + 16]);
                    o[6 + j] = (x0 & 0x0f) | ((x1 & 0x0f) << 4);
                    qh |= u32::from((x0 & 0x10) >> 4) << j;
                    qh |= u32::from((x1 & 0x10) >> 4) << (j + 16);
                }
                o[2..6].copy_from_slice(&qh.to_le_bytes());
            }
            GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q4_K
            | GgmlType::Q6_K => unreachable!("legacy_row is only called for Q4_0, Q4_1 and Q5_0"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_ignores_weights_like_llama_cpp() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let w: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let mut a = vec![0u8; 68];
        let mut b = vec![0u8; 68];
        quantize_rows_weighted(GgmlType::Q8_0, SrcDtype::F32, &bytes, 64, &w, &mut a, None).unwrap();
        gguf::quantize_rows(GgmlType::Q8_0, SrcDtype::F32, &bytes, 64, &mut b, None).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn wrong_weight_length_and_non_finite_are_errors() {
        let bytes = vec![0u8; 256 * 4];
        let mut out = vec![0u8; 144];
        let r = quantize_rows_weighted(GgmlType::Q4_K, SrcDtype::F32, &bytes, 256, &[1.0; 255], &mut out, None);
        assert!(matches!(r, Err(QuantError::Shape(_))));
        let mut bytes = bytes;
        bytes[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
        let r = quantize_rows_weighted(GgmlType::Q4_K, SrcDtype::F32, &bytes, 256, &[1.0; 256], &mut out, None);
        assert!(matches!(r, Err(QuantError::NonFinite { index: 10, .. })));
    }

    #[test]
    fn heavier_weights_pull_error_to_their_columns() {
        // Weighting the first half of each block 1000× more must not make its error larger.
        let mut s = 7u64;
        let x: Vec<f32> = (0..512)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect();
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        for ty in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0] {
            let w: Vec<f32> = (0..512).map(|i| if i % 32 < 16 { 1000.0 } else { 1.0 }).collect();
            let err = |w: &[f32]| {
                let mut out = vec![0u8; ty.row_bytes(512).unwrap()];
                quantize_rows_weighted(ty, SrcDtype::F32, &bytes, 512, w, &mut out, None).unwrap();
                let mut y = vec![0.0f32; 512];
                gguf::dequantize_rows(ty, &out, 512, &mut y).unwrap();
                (0..512).filter(|i| i % 32 < 16).map(|i| (x[i] - y[i]).powi(2)).sum::<f32>()
            };
            let flat = vec![1.0f32; 512];
            assert!(err(&w) <= err(&flat), "{ty}: {} > {}", err(&w), err(&flat));
        }
    }
}
