//! Element types of safetensors tensors.

use modelpack_quant::SrcDtype;

/// Element type of a safetensors tensor, spelled in files exactly as the variant name.
///
/// Covers every dtype of the safetensors 0.8 format, so a file from any writer is described
/// rather than refused; only F32, F16 and BF16 are quantization sources ([`Dtype::as_src`]).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// IEEE binary64.
    F64,
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits.
    F8_E4M3,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits.
    F8_E5M2,
    /// 8-bit power-of-two scale (MX formats).
    F8_E8M0,
    /// 8-bit float E4M3, AMD "fnuz" variant (no negative zero, NaN at 0x80).
    F8_E4M3FNUZ,
    /// 8-bit float E5M2, AMD "fnuz" variant.
    F8_E5M2FNUZ,
    /// 6-bit float, 2 exponent bits, 3 mantissa bits (packed, sub-byte).
    F6_E2M3,
    /// 6-bit float, 3 exponent bits, 2 mantissa bits (packed, sub-byte).
    F6_E3M2,
    /// 4-bit float E2M1 (packed, sub-byte).
    F4,
    /// Complex of two f32.
    C64,
    /// Signed 64-bit integer.
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 16-bit integer.
    I16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 64-bit integer.
    U64,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 8-bit integer.
    U8,
    /// Boolean, one byte per element.
    BOOL,
}

impl Dtype {
    /// Every dtype, for parsing and tests.
    pub const ALL: [Dtype; 22] = [
        Dtype::F64,
        Dtype::F32,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F8_E4M3,
        Dtype::F8_E5M2,
        Dtype::F8_E8M0,
        Dtype::F8_E4M3FNUZ,
        Dtype::F8_E5M2FNUZ,
        Dtype::F6_E2M3,
        Dtype::F6_E3M2,
        Dtype::F4,
        Dtype::C64,
        Dtype::I64,
        Dtype::I32,
        Dtype::I16,
        Dtype::I8,
        Dtype::U64,
        Dtype::U32,
        Dtype::U16,
        Dtype::U8,
        Dtype::BOOL,
    ];

    /// The name used in safetensors headers (`"BF16"`, `"F8_E4M3"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F8_E4M3 => "F8_E4M3",
            Dtype::F8_E5M2 => "F8_E5M2",
            Dtype::F8_E8M0 => "F8_E8M0",
            Dtype::F8_E4M3FNUZ => "F8_E4M3FNUZ",
            Dtype::F8_E5M2FNUZ => "F8_E5M2FNUZ",
            Dtype::F6_E2M3 => "F6_E2M3",
            Dtype::F6_E3M2 => "F6_E3M2",
            Dtype::F4 => "F4",
            Dtype::C64 => "C64",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U64 => "U64",
            Dtype::U32 => "U32",
            Dtype::U16 => "U16",
            Dtype::U8 => "U8",
            Dtype::BOOL => "BOOL",
        }
    }

    /// Parse a header dtype name; exact, case-sensitive match as the format requires.
    pub fn from_name(name: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bits per element. Sub-byte types (F4, F6_*) are packed, so sizes are computed in bits.
    pub const fn bits(self) -> usize {
        match self {
            Dtype::F4 => 4,
            Dtype::F6_E2M3 | Dtype::F6_E3M2 => 6,
            Dtype::F8_E4M3
            | Dtype::F8_E5M2
            | Dtype::F8_E8M0
            | Dtype::F8_E4M3FNUZ
            | Dtype::F8_E5M2FNUZ
            | Dtype::I8
            | Dtype::U8
            | Dtype::BOOL => 8,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 16,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 32,
            Dtype::F64 | Dtype::C64 | Dtype::I64 | Dtype::U64 => 64,
        }
    }

    /// Bytes per element, rounded up for the packed sub-byte types (use [`Dtype::bits`] for
    /// exact sizes of those).
    pub const fn size(self) -> usize {
        self.bits().div_ceil(8)
    }

    /// The quantization source type, for the dtypes the quant kernels read directly.
    pub fn as_src(self) -> Option<SrcDtype> {
        match self {
            Dtype::F32 => Some(SrcDtype::F32),
            Dtype::F16 => Some(SrcDtype::F16),
            Dtype::BF16 => Some(SrcDtype::BF16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_name(d.name()), Some(d));
        }
        let mut names: Vec<_> = Dtype::ALL.iter().map(|d| d.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Dtype::ALL.len());
        assert_eq!(Dtype::from_name("bf16"), None);
        assert_eq!(Dtype::from_name("Q4_0"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(Dtype::BF16.size(), 2);
        assert_eq!(Dtype::F8_E4M3.size(), 1);
        assert_eq!(Dtype::C64.size(), 8);
        assert_eq!(Dtype::F4.bits(), 4);
        assert_eq!(Dtype::BF16.as_src(), Some(SrcDtype::BF16));
        assert_eq!(Dtype::I8.as_src(), None);
    }
}
