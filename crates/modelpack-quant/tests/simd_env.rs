//! `MODELPACK_SIMD` is read once, on first use (its own test binary, so nothing chose a level
//! before), and a level above what the CPU has falls back to the best supported.

use modelpack_quant::simd::{active_level, best_supported, set_level};
use modelpack_quant::Level;

#[test]
fn env_var_forces_the_level_and_set_level_clamps() {
    std::env::set_var("MODELPACK_SIMD", "avx2");
    assert_eq!(active_level(), Level::Avx2.min(best_supported()));
    // Read once: changing the variable later has no effect.
    std::env::set_var("MODELPACK_SIMD", "scalar");
    assert_eq!(active_level(), Level::Avx2.min(best_supported()));
    assert_eq!(set_level(Level::Scalar), Level::Scalar);
    assert_eq!(active_level(), Level::Scalar);
    assert_eq!(set_level(Level::Avx512), best_supported());
    assert_eq!(active_level(), best_supported());
}
