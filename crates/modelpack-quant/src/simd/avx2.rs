//! avx2 kernels (placeholder: scalar until the vector code lands).

use crate::gguf::{quantize_blocks_ref, BlockQ4_0, BlockQ4_1, BlockQ8_0, GgmlType};
use crate::{QuantError, SrcDtype};

/// Quantize whole blocks of `ty` (Q8_0, Q4_0 or Q4_1).
///
/// # Safety
/// The CPU must support the avx2 level's features.
pub(crate) unsafe fn quantize(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    out: &mut [u8],
) -> Result<(), QuantError> {
    match ty {
        GgmlType::Q8_0 => quantize_blocks_ref::<BlockQ8_0>(src, input, out, 0),
        GgmlType::Q4_0 => quantize_blocks_ref::<BlockQ4_0>(src, input, out, 0),
        _ => quantize_blocks_ref::<BlockQ4_1>(src, input, out, 0),
    }
}
