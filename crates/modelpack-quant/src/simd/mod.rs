//! Run-time choice of the SIMD path, made once (memchr style) and cached.
//!
//! The level is detected on first use from the CPU (`is_x86_feature_detected!`), lowered by the
//! environment variable `MODELPACK_SIMD=scalar|avx2|avx512` for tests and benchmarks, and can be
//! changed afterwards with [`set_level`]. Asking for a level the CPU lacks falls back to the best
//! supported one, and [`active_level`] tells which path really runs. Any other value of the
//! variable is a mistake the caller should report ([`env_level`] returns [`SimdEnvError`]; the CLI
//! exits 2): a typo must not quietly run the fastest kernels in a job that meant to force scalar. Kernels dispatch on the cached
//! level with one relaxed atomic load per call (per chunk of rows, not per block).

use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// A kernel family. Ordered: a higher level needs every feature of the lower ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Portable scalar reference kernels (the definition of correct output).
    Scalar,
    /// AVX2 + F16C kernels (256-bit).
    Avx2,
    /// AVX-512 F + BW + VL kernels (512-bit), with F16C for f16 loads.
    Avx512,
}

impl Level {
    /// Lower-case name as accepted by `MODELPACK_SIMD`.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Parse a `MODELPACK_SIMD` value (case-insensitive).
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Level::Scalar),
            "avx2" => Some(Level::Avx2),
            "avx512" => Some(Level::Avx512),
            _ => None,
        }
    }

    /// Every level this CPU can run, lowest first (for tests that compare all paths).
    pub fn supported() -> Vec<Level> {
        let best = best_supported();
        [Level::Scalar, Level::Avx2, Level::Avx512].into_iter().filter(|&l| l <= best).collect()
    }

    fn from_u8(v: u8) -> Level {
        match v {
            2 => Level::Avx2,
            3 => Level::Avx512,
            _ => Level::Scalar,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Level::Scalar => 1,
            Level::Avx2 => 2,
            Level::Avx512 => 3,
        }
    }
}

/// The best level this CPU supports.
pub fn best_supported() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        // FMA comes with AVX2 on every x86-64 that has it; the statistics accumulate with it.
        let avx2 = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        if avx2
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
        {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// `MODELPACK_SIMD` holds something other than `scalar`, `avx2` or `avx512`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MODELPACK_SIMD={0:?} is not one of scalar, avx2, avx512")]
pub struct SimdEnvError(pub String);

/// The level `MODELPACK_SIMD` asks for (`None` when unset or empty), before clamping to the CPU.
///
/// Callers that can report errors (the CLI) check this before any kernel runs, since
/// [`active_level`] cannot fail: if it meets a bad value it runs the scalar reference kernels,
/// the one choice that is correct on every CPU.
pub fn env_level() -> Result<Option<Level>, SimdEnvError> {
    parse_env(std::env::var_os("MODELPACK_SIMD"))
}

fn parse_env(value: Option<std::ffi::OsString>) -> Result<Option<Level>, SimdEnvError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => {
            let s = v.to_string_lossy();
            Level::parse(&s).map(Some).ok_or_else(|| SimdEnvError(s.into_owned()))
        }
    }
}

/// 0 = not chosen yet.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The level kernels run at: chosen on first use from the CPU and `MODELPACK_SIMD`.
#[inline]
pub fn active_level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        0 => init(),
        v => Level::from_u8(v),
    }
}

#[cold]
fn init() -> Level {
    let best = best_supported();
    let wanted = env_level().unwrap_or(Some(Level::Scalar)).unwrap_or(best);
    let level = wanted.min(best);
    LEVEL.store(level.to_u8(), Ordering::Relaxed);
    level
}

/// Force a level (clamped to what the CPU supports); returns the level now active.
/// Process-wide: tests that switch levels must not run concurrently with tests that rely on a
/// particular one (our tests compare levels by calling [`crate::gguf::quantize_rows_at`] instead).
pub fn set_level(level: Level) -> Level {
    let level = level.min(best_supported());
    LEVEL.store(level.to_u8(), Ordering::Relaxed);
    level
}

/// Clamp a requested level to what the CPU supports (used by the `*_at` entry points).
#[inline]
pub(crate) fn clamp(level: Level) -> Level {
    if level == Level::Scalar {
        return level;
    }
    level.min(best_supported_cached())
}

static BEST: AtomicU8 = AtomicU8::new(0);

#[inline]
fn best_supported_cached() -> Level {
    match BEST.load(Ordering::Relaxed) {
        0 => {
            let b = best_supported();
            BEST.store(b.to_u8(), Ordering::Relaxed);
            b
        }
        v => Level::from_u8(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        for l in [Level::Scalar, Level::Avx2, Level::Avx512] {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse("AVX2 "), Some(Level::Avx2));
        assert_eq!(Level::parse("neon"), None);
    }

    #[test]
    fn env_level_refuses_unknown_values() {
        // The parser, not the variable: other tests in this process may be choosing a level.
        let p = |v: &str| parse_env(Some(v.into()));
        assert_eq!(p("avx-512"), Err(SimdEnvError("avx-512".into())));
        assert_eq!(p("sse4"), Err(SimdEnvError("sse4".into())));
        assert_eq!(p("Scalar"), Ok(Some(Level::Scalar)));
        assert_eq!(p(""), Ok(None));
        assert_eq!(parse_env(None), Ok(None));
    }

    #[test]
    fn clamp_never_exceeds_cpu() {
        assert!(clamp(Level::Avx512) <= best_supported());
        assert_eq!(clamp(Level::Scalar), Level::Scalar);
        assert_eq!(Level::supported()[0], Level::Scalar);
    }
}
