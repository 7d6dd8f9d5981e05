//! SplitMix64 and the value distributions the tests and the fixture generator draw from it.
//!
//! Before this crate the generator was copied into nine files with three different "Gaussian"
//! helpers; each of those is kept below as a named method so that every test and fixture still
//! draws exactly the values it drew before (proptest regression seeds and committed fixture
//! bytes stay valid). The `tests` module proves it against verbatim copies of the old code.
//! Only IEEE-exact operations (+, ×, ÷) are used, so every machine produces the same bits.

/// SplitMix64 (Steele, Lea & Flood, 2014): small, fast, statistically good enough for
/// synthetic weights. The state is public so a test can write `SplitMix64(seed)`.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Approximately standard normal: Irwin–Hall sum of 12 [`uniform`](Self::uniform)s minus 6
    /// (exact arithmetic, unlike Box–Muller's libm calls). The fixture generator's distribution.
    pub fn normal(&mut self) -> f64 {
        let mut s = 0.0;
        for _ in 0..12 {
            s += self.uniform();
        }
        s - 6.0
    }

    /// Heavy-tailed, unit-variance-ish: a [`normal`](Self::normal) times a random scale from a
    /// discrete mixture (most values ×0.85, 4% ×2.5, 0.5% ×6), like trained weights' outliers.
    pub fn heavy(&mut self) -> f64 {
        let u = self.uniform();
        let scale = if u < 0.005 {
            6.0
        } else if u < 0.045 {
            2.5
        } else {
            0.85
        };
        self.normal() * scale
    }

    /// Uniform in [-1, 1) on a 2^-23 grid (24 random bits), exact in f32.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in [0, n) by modulo (slightly biased for large `n`; fine for picking indices).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform integer in [lo, hi) by modulo.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo) as u64) as i64
    }

    /// Roughly standard normal in f32: four [`unit`](Self::unit)s summed and scaled by 0.87
    /// (variance 4/3 · 0.87² ≈ 1). The K-quant, importance-matrix and llama.cpp end-to-end
    /// tests draw from this one.
    pub fn gauss4(&mut self) -> f32 {
        (0..4).map(|_| self.unit()).sum::<f32>() * 0.87
    }

    /// Mean-zero bell in f32 with variance 1/4: three uniforms in [0, 1) (24 bits) minus 1.5.
    /// The MSE and importance-matrix property tests draw from this one.
    pub fn gauss3(&mut self) -> f32 {
        let mut u = || (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        u() + u() + u() - 1.5
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    /// The generators as they were copied into the test files before this crate, verbatim
    /// (modulo names): the oracle that the merge changed no drawn value.
    mod before {
        pub struct Rng(pub u64);
        impl Rng {
            pub fn next(&mut self) -> u64 {
                self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.0;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            }
            /// kquant_props, gguf_props, kquant_llama, imatrix_llama.
            pub fn unit(&mut self) -> f32 {
                (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            }
            /// kquant_props.
            pub fn below(&mut self, n: usize) -> usize {
                (self.next() % n as u64) as usize
            }
            /// gguf_props.
            pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
                lo + (self.next() % (hi - lo) as u64) as i64
            }
            /// kquant_props, kquant_llama, imatrix_llama, tests/common/llama.rs.
            pub fn gauss_sum4(&mut self) -> f32 {
                (0..4).map(|_| self.unit()).sum::<f32>() * 0.87
            }
            /// mse_props, imatrix_props.
            pub fn gauss_sum3(&mut self) -> f32 {
                let u = |r: &mut Rng| (r.next() >> 40) as f32 / (1u64 << 24) as f32;
                u(self) + u(self) + u(self) - 1.5
            }
            /// xtask/src/fixture_gen/rng.rs.
            pub fn uniform(&mut self) -> f64 {
                (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
            }
            pub fn normal(&mut self) -> f64 {
                let mut s = 0.0;
                for _ in 0..12 {
                    s += self.uniform();
                }
                s - 6.0
            }
            pub fn heavy(&mut self) -> f64 {
                let u = self.uniform();
                let scale = if u < 0.005 {
                    6.0
                } else if u < 0.045 {
                    2.5
                } else {
                    0.85
                };
                self.normal() * scale
            }
        }
    }

    const SEEDS: [u64; 6] = [0, 1, 7, 42, 0x9e37_79b9_7f4a_7c15, u64::MAX];

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (published reference values).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    /// Every method draws the same bits as the copy it replaced, interleaved the way tests mix
    /// them, so each test's inputs (and its proptest regression seeds) are unchanged.
    #[test]
    fn streams_equal_the_replaced_copies() {
        for seed in SEEDS {
            let (mut a, mut b) = (SplitMix64(seed), before::Rng(seed));
            for i in 0..20_000u32 {
                match i % 8 {
                    0 => assert_eq!(a.next_u64(), b.next()),
                    1 => assert_eq!(a.unit().to_bits(), b.unit().to_bits()),
                    2 => assert_eq!(a.below(1 + i as usize), b.below(1 + i as usize)),
                    3 => assert_eq!(a.int(-126, 126), b.int(-126, 126)),
                    4 => assert_eq!(a.gauss4().to_bits(), b.gauss_sum4().to_bits()),
                    5 => assert_eq!(a.gauss3().to_bits(), b.gauss_sum3().to_bits()),
                    6 => assert_eq!(a.normal().to_bits(), b.normal().to_bits()),
                    _ => assert_eq!(a.heavy().to_bits(), b.heavy().to_bits()),
                }
            }
            assert_eq!(a.0, b.0, "seed {seed}: same state after the run");
        }
    }

    /// The three bells are what their docs say (so a test picking one gets that spread).
    #[test]
    fn bells_have_their_documented_spread() {
        let n = 200_000;
        let moments = |xs: Vec<f64>| {
            let mean = xs.iter().sum::<f64>() / n as f64;
            (mean, xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64)
        };
        let mut r = SplitMix64(3);
        let (m4, v4) = moments((0..n).map(|_| f64::from(r.gauss4())).collect());
        let (m3, v3) = moments((0..n).map(|_| f64::from(r.gauss3())).collect());
        let (m12, v12) = moments((0..n).map(|_| r.normal()).collect());
        assert!(m4.abs() < 0.01 && (v4 - 4.0 / 3.0 * 0.87 * 0.87).abs() < 0.02, "{m4} {v4}");
        assert!(m3.abs() < 0.01 && (v3 - 0.25).abs() < 0.01, "{m3} {v3}");
        assert!(m12.abs() < 0.01 && (v12 - 1.0).abs() < 0.02, "{m12} {v12}");
    }

    #[test]
    fn heavy_has_a_heavy_tail() {
        let mut r = SplitMix64::new(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.heavy()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((0.8..1.3).contains(&var), "{var}");
        let tail = xs.iter().filter(|x| x.abs() > 4.0).count();
        assert!(tail > 50, "heavy tail expected, got {tail}");
    }
}
