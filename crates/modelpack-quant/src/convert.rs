//! Scalar element conversions between little-endian source bytes and f32.
//!
//! Safetensors data written by other tools may sit at any byte offset, so every load here goes
//! through `from_le_bytes` on a copied array: never a pointer cast. The f32 → f16/bf16 stores round
//! to nearest, ties to even, and keep subnormals, like numpy's `astype` and PyTorch's `.to()`; the
//! references (gguf, compressed-tensors) depend on exactly that rounding.

use crate::SrcDtype;

/// Exact f16 (bits) → f32. Every f16 value, subnormals and NaN payload class included, is
/// representable in f32, so this never rounds.
#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Exact bf16 (bits) → f32: bf16 is the upper half of an f32.
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 → f16 bits, round to nearest even, subnormals kept, overflow to ±inf (numpy `astype(float16)`).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// f32 → bf16 bits, round to nearest even, subnormals kept (PyTorch `.to(torch.bfloat16)`).
/// NaN stays NaN (quiet).
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// Round an f32 to the nearest f16 value and widen it back: the "round to the model dtype" step
/// of compressed-tensors' math when the model is f16.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    f16_to_f32(f32_to_f16(x))
}

/// Round an f32 to the nearest bf16 value and widen it back (compressed-tensors' per-step rounding
/// for bf16 models).
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(x))
}

/// Load element `i` of `bytes`, read as little-endian `src`. Panics only if `i` is out of range,
/// which callers rule out by checking the slice length against the shape first.
#[inline]
pub fn load(src: SrcDtype, bytes: &[u8], i: usize) -> f32 {
    match src {
        SrcDtype::F32 => {
            let o = i * 4;
            f32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]])
        }
        SrcDtype::F16 => f16_to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])),
        SrcDtype::BF16 => bf16_to_f32(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])),
    }
}

/// Convert a run of `out.len()` source elements (`bytes` holds exactly `out.len() * src.size()`
/// bytes) to f32. Used for a block at a time, never for a whole tensor.
#[inline]
pub fn load_slice(src: SrcDtype, bytes: &[u8], out: &mut [f32]) {
    debug_assert_eq!(bytes.len(), out.len() * src.size());
    match src {
        SrcDtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        SrcDtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        SrcDtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
    }
}

/// Index and value of the first NaN or infinity in `x`, if any.
#[inline]
pub fn first_non_finite(x: &[f32]) -> Option<(usize, f32)> {
    x.iter().position(|v| !v.is_finite()).map(|i| (i, x[i]))
}

/// A float dtype as a type: the tag a kernel is instantiated with for its source elements or for
/// the dtype its intermediate values round to. One encoding for every kernel family (GGUF,
/// K-quant, compressed-tensors, `mse`); the runtime enums ([`SrcDtype`], `ct::ScaleDtype`) reach
/// it through [`with_src!`] only, so a new source dtype is one tag and one arm there (and the
/// compiler then points at every exhaustive `match` on [`Dtype::SRC`] that must learn it).
pub(crate) trait Dtype: Copy + 'static {
    /// The runtime dtype this tag stands for.
    const SRC: SrcDtype;
}

/// Tag of IEEE binary32.
#[derive(Debug, Clone, Copy)]
pub(crate) struct F32;
/// Tag of IEEE binary16.
#[derive(Debug, Clone, Copy)]
pub(crate) struct F16;
/// Tag of bfloat16.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bf16;

impl Dtype for F32 {
    const SRC: SrcDtype = SrcDtype::F32;
}
impl Dtype for F16 {
    const SRC: SrcDtype = SrcDtype::F16;
}
impl Dtype for Bf16 {
    const SRC: SrcDtype = SrcDtype::BF16;
}

/// Evaluate `$body` with the type name `$T` bound to the [`Dtype`] tag of the runtime
/// [`SrcDtype`] `$src`: the one place a runtime dtype picks a kernel instance.
macro_rules! with_src {
    ($src:expr, $T:ident => $body:expr) => {
        match $src {
            $crate::SrcDtype::F32 => {
                type $T = $crate::convert::F32;
                $body
            }
            $crate::SrcDtype::F16 => {
                type $T = $crate::convert::F16;
                $body
            }
            $crate::SrcDtype::BF16 => {
                type $T = $crate::convert::Bf16;
                $body
            }
        }
    };
}
pub(crate) use with_src;

/// Round to the dtype `E` (nearest, ties to even) and widen back: the scalar element rounding of
/// the compressed-tensors and `mse` kernels.
#[inline(always)]
pub(crate) fn round_to<E: Dtype>(v: f32) -> f32 {
    match E::SRC {
        SrcDtype::F32 => v,
        SrcDtype::F16 => round_f16(v),
        SrcDtype::BF16 => round_bf16(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_roundtrip_is_exact_for_every_finite_value() {
        for b in 0..=u16::MAX {
            let x = f16_to_f32(b);
            if x.is_nan() {
                assert!(f32_to_f16(x) & 0x7c00 == 0x7c00);
                continue;
            }
            assert_eq!(f32_to_f16(x), b, "f16 bits {b:#06x}");
        }
    }

    #[test]
    fn f16_store_rounds_ties_to_even_and_keeps_subnormals() {
        // 1 + 2^-11 is halfway between 1.0 (0x3c00, even) and 1 + 2^-10 (0x3c01): stays 1.0.
        assert_eq!(f32_to_f16(1.0 + f32::powi(2.0, -11)), 0x3c00);
        // 1 + 3*2^-11 is halfway between 0x3c01 (odd) and 0x3c02 (even): goes up.
        assert_eq!(f32_to_f16(1.0 + 3.0 * f32::powi(2.0, -11)), 0x3c02);
        // Smallest f16 subnormal 2^-24, and half of it (a tie with 0 → even → 0).
        assert_eq!(f32_to_f16(f32::powi(2.0, -24)), 0x0001);
        assert_eq!(f32_to_f16(f32::powi(2.0, -25)), 0x0000);
        assert_eq!(f32_to_f16(1.5 * f32::powi(2.0, -25)), 0x0001);
        assert_eq!(f32_to_f16(65520.0), 0x7c00, "rounds past f16::MAX to inf");
        assert_eq!(f32_to_f16(-0.0), 0x8000);
    }

    #[test]
    fn bf16_store_rounds_ties_to_even() {
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80, "tie to even (down)");
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82, "tie to even (up)");
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::from_bits(0x0000_0001)), 0x0000);
        assert_eq!(f32_to_bf16(f32::from_bits(0x0001_8000)), 0x0002, "subnormal tie");
        assert_eq!(bf16_to_f32(0xc0a0), -5.0);
    }

    #[test]
    fn loads_from_unaligned_offsets() {
        let mut buf = [0u8; 1 + 8];
        buf[1..5].copy_from_slice(&1.5f32.to_le_bytes());
        buf[5..9].copy_from_slice(&(-2.25f32).to_le_bytes());
        let mut out = [0.0f32; 2];
        load_slice(SrcDtype::F32, &buf[1..], &mut out);
        assert_eq!(out, [1.5, -2.25]);
        assert_eq!(load(SrcDtype::F32, &buf[1..], 1), -2.25);
        let h = [0u8, 0x00, 0x3e, 0x00, 0xc0];
        assert_eq!(load(SrcDtype::F16, &h[1..], 0), 1.5);
        assert_eq!(load(SrcDtype::BF16, &h[1..], 1), -2.0);
    }
}
