//! The fixture generator's randomness: the workspace's SplitMix64 and per-tensor seeds, built
//! only from IEEE-exact operations, so every machine produces the same bits.

/// The workspace's one SplitMix64 (`modelpack-testkit`, tested there against published values
/// and the copies it replaced): the fixtures' bytes depend on its exact stream.
pub use modelpack_testkit::SplitMix64;

/// A per-tensor seed: FNV-1a of the name mixed with a global seed.
pub fn seed_for(global: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ global;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}
