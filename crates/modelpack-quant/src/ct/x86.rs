//! x86-64 SIMD dispatch for the compressed-tensors kernels.

use super::{CtScheme, Geom, ScaleDtype};
use crate::simd::Level;
use crate::{QuantError, SrcDtype};

/// Run the best SIMD kernel for this call; `Ok(false)` when none applies (the caller then runs
/// the scalar reference).
///
/// # Safety
/// The CPU must support `level`'s features.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn quantize(
    level: Level,
    s: &CtScheme,
    src: SrcDtype,
    sd: ScaleDtype,
    input: &[u8],
    g: &Geom,
    packed: &mut [u8],
    scale: &mut [u8],
    zp: Option<&mut [u8]>,
) -> Result<bool, QuantError> {
    let _ = (level, s, src, sd, input, g, packed, scale, zp);
    Ok(false)
}
