//! The one median every report uses (`quantize --json`, `inspect --json`, `compare`), so the
//! same tensors give the same figure everywhere.

/// Median of the finite values: the middle one for an odd count, the mean of the two middle
/// ones for an even count (the textbook definition, and numpy's `median`); `None` when no value
/// is finite. Non-finite values (an exact tensor's infinite SQNR) are left out rather than
/// pulling the median up.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn odd_even_and_non_finite() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        // Even count: the mean of the two middle values, not the upper one (2.5, not 3).
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::INFINITY, 1.0]), Some(1.0));
        assert_eq!(median(&[f64::NAN, 5.0, f64::NEG_INFINITY, 7.0]), Some(6.0));
        assert_eq!(median(&[f64::INFINITY]), None);
        assert_eq!(median(&[]), None);
    }
}
