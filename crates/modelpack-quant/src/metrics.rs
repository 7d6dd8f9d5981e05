//! Quantization error metrics (SQNR, relative RMSE, max abs error, cosine similarity).
//!
//! Sums are kept in f64. [`ErrorStats::add`] accumulates element by element in index order; the
//! quantizers accumulate a chunk in eight interleaved f64 lanes (element `j` in lane `j % 8`,
//! lanes summed in order at the end of the chunk), which AVX2 computes in two 4-wide registers per
//! sum and the scalar path reproduces exactly. Either way a chunk's statistics are a pure function of the chunk. The pipeline splits tensors into chunks of a size
//! independent of the thread count and merges them in chunk order, which makes the reported
//! figures (and the manifest that records them) bit-identical on any machine and thread count.

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

/// Running error statistics of a quantized tensor (or of a chunk of it) against its source.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorStats {
    /// Σ x² over the reference (source) values.
    pub sum_sq_ref: f64,
    /// Σ (x − x̂)² over the reconstruction error.
    pub sum_sq_err: f64,
    /// Σ x̂² over the dequantized values (for cosine similarity).
    pub sum_sq_deq: f64,
    /// Σ x·x̂ (for cosine similarity).
    pub dot: f64,
    /// max |x − x̂|.
    pub max_abs_err: f32,
    /// Number of elements seen.
    pub count: u64,
}

impl ErrorStats {
    /// Empty statistics (no elements).
    pub const fn new() -> Self {
        ErrorStats { sum_sq_ref: 0.0, sum_sq_err: 0.0, sum_sq_deq: 0.0, dot: 0.0, max_abs_err: 0.0, count: 0 }
    }

    /// Accumulate reference values `x` against their reconstruction `y` (same length), in order.
    pub fn add(&mut self, x: &[f32], y: &[f32]) {
        debug_assert_eq!(x.len(), y.len());
        for (&a, &b) in x.iter().zip(y) {
            let (a64, b64) = (f64::from(a), f64::from(b));
            let e = a64 - b64;
            self.sum_sq_ref += a64 * a64;
            self.sum_sq_err += e * e;
            self.sum_sq_deq += b64 * b64;
            self.dot += a64 * b64;
            let ae = (a - b).abs();
            if ae > self.max_abs_err {
                self.max_abs_err = ae;
            }
        }
        self.count += x.len() as u64;
    }

    /// Fold `other` (the statistics of the following chunk) into `self`. Merge in chunk order
    /// for reproducible sums.
    pub fn merge(&mut self, other: &ErrorStats) {
        self.sum_sq_ref += other.sum_sq_ref;
        self.sum_sq_err += other.sum_sq_err;
        self.sum_sq_deq += other.sum_sq_deq;
        self.dot += other.dot;
        if other.max_abs_err > self.max_abs_err {
            self.max_abs_err = other.max_abs_err;
        }
        self.count += other.count;
    }

    /// Signal-to-quantization-noise ratio in dB, `10·log10(Σx² / Σ(x−x̂)²)`.
    /// `+inf` for a lossless result (including an all-zero tensor), `-inf` for a zero reference
    /// with non-zero error.
    pub fn sqnr_db(&self) -> f64 {
        if self.sum_sq_err == 0.0 {
            return f64::INFINITY;
        }
        10.0 * (self.sum_sq_ref / self.sum_sq_err).log10()
    }

    /// Relative RMSE, `sqrt(Σ(x−x̂)² / Σx²)`; 0 when lossless, `+inf` when the reference is all
    /// zero but the reconstruction is not.
    pub fn rel_rmse(&self) -> f64 {
        if self.sum_sq_err == 0.0 {
            return 0.0;
        }
        (self.sum_sq_err / self.sum_sq_ref).sqrt()
    }

    /// Cosine similarity between source and reconstruction; 1 when both are all zero.
    pub fn cosine(&self) -> f64 {
        let den = (self.sum_sq_ref * self.sum_sq_deq).sqrt();
        if den == 0.0 {
            return if self.sum_sq_ref == self.sum_sq_deq { 1.0 } else { 0.0 };
        }
        self.dot / den
    }
}

/// Lanes of the per-chunk accumulation used by the quantizers: element `j` of a chunk goes to
/// lane `j % 8`, each lane sums in element order (f64 fused multiply-add: one rounding per term,
/// one instruction per term on every x86-64 with AVX2), and the lanes are added in order at the
/// end. Eight lanes are two 4-wide f64 registers per sum: the eight accumulators of the four sums
/// stay in registers inside the fused quantize kernels (sixteen lanes spilled them to memory and
/// made the statistics cost more than the quantization), so SIMD and scalar give the same bits.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Lanes {
    pub(crate) sq_ref: [f64; 8],
    pub(crate) sq_err: [f64; 8],
    pub(crate) sq_deq: [f64; 8],
    pub(crate) dot: [f64; 8],
    pub(crate) max_abs_err: f32,
    /// Elements accumulated so far (the next element's lane is `count % 8`).
    pub(crate) count: u64,
}

impl Lanes {
    /// Accumulate `x` (source) against `y` (reconstruction), continuing at element `self.count`.
    pub(crate) fn add(&mut self, x: &[f32], y: &[f32]) {
        for (&a, &b) in x.iter().zip(y) {
            let l = (self.count % 8) as usize;
            let (a64, b64) = (f64::from(a), f64::from(b));
            let e = a64 - b64;
            self.sq_ref[l] = a64.mul_add(a64, self.sq_ref[l]);
            self.sq_err[l] = e.mul_add(e, self.sq_err[l]);
            self.sq_deq[l] = b64.mul_add(b64, self.sq_deq[l]);
            self.dot[l] = a64.mul_add(b64, self.dot[l]);
            let ae = (a - b).abs();
            if ae > self.max_abs_err {
                self.max_abs_err = ae;
            }
            self.count += 1;
        }
    }

    /// Sum the lanes in order.
    pub(crate) fn finish(&self) -> ErrorStats {
        let sum = |v: &[f64; 8]| v.iter().fold(0.0, |s, &x| s + x);
        ErrorStats {
            sum_sq_ref: sum(&self.sq_ref),
            sum_sq_err: sum(&self.sq_err),
            sum_sq_deq: sum(&self.sq_deq),
            dot: sum(&self.dot),
            max_abs_err: self.max_abs_err,
            count: self.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_match_hand_computation() {
        let mut s = ErrorStats::new();
        s.add(&[3.0, -4.0], &[3.0, -3.0]);
        // Σx² = 25, Σe² = 1 → SQNR = 10·log10(25) ≈ 13.9794 dB, rel RMSE = 0.2.
        assert!((s.sqnr_db() - 13.979_400_086_720_377).abs() < 1e-12);
        assert!((s.rel_rmse() - 0.2).abs() < 1e-15);
        assert_eq!(s.max_abs_err, 1.0);
        assert_eq!(s.count, 2);
        // cos = (9 + 12) / (5 · sqrt(18))
        assert!((s.cosine() - 21.0 / (5.0 * 18f64.sqrt())).abs() < 1e-15);
    }

    #[test]
    fn merge_equals_one_pass() {
        let x = [1.0, 2.5, -7.0, 0.125];
        let y = [1.0, 2.0, -6.5, 0.0];
        let mut all = ErrorStats::new();
        all.add(&x, &y);
        let mut a = ErrorStats::new();
        a.add(&x[..2], &y[..2]);
        let mut b = ErrorStats::new();
        b.add(&x[2..], &y[2..]);
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn lossless_and_empty_edge_cases() {
        let mut s = ErrorStats::new();
        assert_eq!(s.sqnr_db(), f64::INFINITY);
        assert_eq!(s.rel_rmse(), 0.0);
        assert_eq!(s.cosine(), 1.0);
        s.add(&[0.0], &[1.0]);
        assert_eq!(s.sqnr_db(), f64::NEG_INFINITY);
        assert_eq!(s.rel_rmse(), f64::INFINITY);
    }
}
