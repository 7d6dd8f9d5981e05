//! Scalar twins of the GGUF kernels that are not per-block references: plain float conversion,
//! dequantization of any type, and the error statistics in [`Lanes`] order (the definition the
//! SIMD statistics reproduce bit for bit).

use crate::blocks::{
    check_finite, dequantize_blocks, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8_0, GgmlType, QK, QK_K,
};
use crate::convert::{f32_to_bf16, f32_to_f16, load_slice};
use crate::metrics::Lanes;
use crate::{QuantError, SrcDtype};

/// Scalar plain conversion to F32/F16/BF16 (round to nearest even); `base` is the element index
/// of `input[0]` for error reporting.
pub(crate) fn convert_rows_ref(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    out: &mut [u8],
    base: usize,
) -> Result<(), QuantError> {
    if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        return Err(QuantError::Unsupported(ty.name()));
    }
    let mut x = [0.0f32; QK];
    let osz = ty.type_size();
    for (c, (ib, ob)) in input.chunks(QK * src.size()).zip(out.chunks_mut(QK * osz)).enumerate() {
        let x = &mut x[..ib.len() / src.size()];
        load_slice(src, ib, x);
        check_finite(x, base + c * QK)?;
        let pairs = ob.chunks_exact_mut(osz).zip(x.iter());
        match ty {
            GgmlType::F32 => pairs.for_each(|(o, v)| o.copy_from_slice(&v.to_le_bytes())),
            GgmlType::F16 => pairs.for_each(|(o, &v)| o.copy_from_slice(&f32_to_f16(v).to_le_bytes())),
            GgmlType::BF16 => pairs.for_each(|(o, &v)| o.copy_from_slice(&f32_to_bf16(v).to_le_bytes())),
            // Refused above.
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {}
            GgmlType::Q4_K | GgmlType::Q6_K => {}
        }
    }
    Ok(())
}

/// Dequantize whole rows of any supported type (shapes checked by the caller).
pub(crate) fn dequantize(ty: GgmlType, input: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    match ty {
        GgmlType::Q8_0 => dequantize_blocks::<BlockQ8_0>(input, out),
        GgmlType::Q4_0 => dequantize_blocks::<BlockQ4_0>(input, out),
        GgmlType::Q4_1 => dequantize_blocks::<BlockQ4_1>(input, out),
        GgmlType::Q5_0 => dequantize_blocks::<BlockQ5_0>(input, out),
        GgmlType::Q4_K => dequantize_blocks::<BlockQ4K>(input, out),
        GgmlType::Q6_K => dequantize_blocks::<BlockQ6K>(input, out),
        GgmlType::F32 => load_slice(SrcDtype::F32, input, out),
        GgmlType::F16 => load_slice(SrcDtype::F16, input, out),
        GgmlType::BF16 => load_slice(SrcDtype::BF16, input, out),
        GgmlType::Q5_1 => return Err(QuantError::Unsupported(ty.name())),
    }
    Ok(())
}

/// Scalar error statistics of a quantized chunk: each block (or run of 32 plain values) is
/// decoded and added in element order. Types without a decoder add nothing (the callers only pass
/// types they could quantize).
pub(crate) fn accumulate_stats(ty: GgmlType, src: SrcDtype, input: &[u8], out: &[u8], lanes: &mut Lanes) {
    let (blk, osz) = match ty {
        GgmlType::Q4_K | GgmlType::Q6_K => (QK_K, ty.type_size()),
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 => (QK, ty.type_size()),
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => (QK, QK * ty.type_size()),
        GgmlType::Q5_1 => return,
    };
    let mut x = [0.0f32; QK_K];
    let mut y = [0.0f32; QK_K];
    for (ib, ob) in input.chunks(blk * src.size()).zip(out.chunks(osz)) {
        let m = ib.len() / src.size();
        load_slice(src, ib, &mut x[..m]);
        // Cannot fail: `ty` has a decoder (checked above).
        let _ = dequantize(ty, ob, &mut y[..m]);
        lanes.add(&x[..m], &y[..m]);
    }
}
