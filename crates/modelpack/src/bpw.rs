//! `--bpw BITS`: size-budgeted mixed precision for the cpu target.
//!
//! Every free 2-D weight (not pinned by `--tensor-type`, `--keep`, a router rule or 1-D) gets
//! one GGUF type from [`CANDIDATES`], with llama-quantize's row fallbacks (Q4_K → Q5_0,
//! Q6_K → Q8_0 when a row is not whole 256-blocks). The estimated model error of a choice is
//! the sum over tensors of `n · Σ w(x − x̂)² / Σ w·x²`: each tensor's relative squared error
//! (activation-weighted by the `--imatrix` column weights when given, else w = 1) times its
//! element count, so a tensor's importance is its size and the error is scale-free (norm gains
//! folded into a weight do not change its share), times [`importance`] (measured end to end:
//! the token embedding counts 0.1, the attention value projection 16). The error is measured on up to
//! [`SAMPLE_ELEMS`] evenly spaced whole rows with the RTN (or imatrix-weighted) quantizer; `mse`
//! is never worse per block, so it bounds the written package's error from above.
//!
//! Allocation: each tensor's candidates are reduced to their lower convex hull in (bytes, error);
//! every tensor starts at its smallest hull point, then the hull step with the largest error
//! reduction per byte that still fits the budget is taken, repeatedly (ties: the earlier tensor
//! in file order). The result depends only on the weights and options, never on thread count.
use crate::cpu::CpuTensor;
use crate::plan::PlanError;
use crate::quant::gguf::GgmlType;
use crate::quant::SrcDtype;
use rayon::prelude::*;

/// The types `--bpw` chooses among (before row fallbacks), smallest first.
pub const CANDIDATES: [GgmlType; 6] =
    [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0];

/// Elements of a tensor measured per candidate (whole rows, evenly spaced).
pub const SAMPLE_ELEMS: usize = 1 << 17;

/// One candidate of one tensor: type, bytes of the whole tensor, estimated error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Stored type (after the row fallback).
    pub ty: GgmlType,
    /// Bytes of the whole tensor in this type.
    pub bytes: u64,
    /// Estimated error (element count × relative squared error).
    pub err: f64,
}

/// A tensor's rows for the estimate: source dtype, row length, and the byte slices of the
/// sampled rows.
pub struct Sample<'a> {
    /// Source element type.
    pub src: SrcDtype,
    /// Columns.
    pub row_len: usize,
    /// Total rows of the tensor.
    pub rows: usize,
    /// Sampled rows' bytes: borrowed from the mapped checkpoint, or owned f32 rows decoded from an
    /// FP8 source (whose bytes the quantizers cannot read directly).
    pub rows_data: Vec<std::borrow::Cow<'a, [u8]>>,
    /// `--imatrix` column weights, when the matrix has an entry.
    pub weights: Option<Vec<f32>>,
}

/// The type a candidate is stored in for rows of `row_len` (llama-quantize's fallbacks), or
/// `None` when even 32-blocks do not fit.
pub fn stored_type(ty: GgmlType, row_len: usize) -> Option<GgmlType> {
    let ty = match ty {
        GgmlType::Q4_K if ty.row_bytes(row_len).is_none() => GgmlType::Q5_0,
        GgmlType::Q6_K if ty.row_bytes(row_len).is_none() => GgmlType::Q8_0,
        t => t,
    };
    ty.row_bytes(row_len).map(|_| ty)
}

/// Measure every candidate on a sample. Errors are kernel refusals (NaN/Inf weights).
pub fn candidates(s: &Sample<'_>) -> Result<Vec<Candidate>, PlanError> {
    let mut tys: Vec<GgmlType> = CANDIDATES.iter().filter_map(|&t| stored_type(t, s.row_len)).collect();
    tys.dedup();
    let mut seen = Vec::new();
    tys.retain(|t| {
        let new = !seen.contains(t);
        seen.push(*t);
        new
    });
    let mut x = vec![0f32; s.row_len];
    let mut xb = vec![0u8; s.row_len * 4];
    let mut y = vec![0f32; s.row_len];
    let mut out = Vec::new();
    for ty in tys {
        let rb = ty.row_bytes(s.row_len).expect("stored_type checked the row");
        let mut q = vec![0u8; rb];
        let (mut num, mut den) = (0f64, 0f64);
        for row in &s.rows_data {
            match &s.weights {
                Some(w) => crate::quant::imatrix::quantize_rows_weighted(ty, s.src, row, s.row_len, w, &mut q, None)?,
                None => crate::quant::gguf::quantize_rows(ty, s.src, row, s.row_len, &mut q, None)?,
            }
            crate::quant::gguf::dequantize_rows(ty, &q, s.row_len, &mut y)?;
            crate::quant::gguf::quantize_rows(GgmlType::F32, s.src, row, s.row_len, &mut xb, None)?;
            for (v, b) in x.iter_mut().zip(xb.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            for j in 0..s.row_len {
                let w = s.weights.as_ref().map_or(1.0, |w| f64::from(w[j]));
                num += w * (f64::from(x[j]) - f64::from(y[j])).powi(2);
                den += w * f64::from(x[j]).powi(2);
            }
        }
        let elems = (s.rows * s.row_len) as f64;
        let rel = if den > 0.0 { num / den } else { 0.0 };
        out.push(Candidate { ty, bytes: (rb * s.rows) as u64, err: elems * rel });
    }
    Ok(out)
}

/// How much a tensor's estimated error counts, per element, relative to the other weights:
/// the token embedding 0.1, the attention value projection 16, everything else 1.
///
/// Measured end to end (docs/quality.md, SmolLM2 `rot1`, gpl3, 4 chunks, llama-perplexity KLD
/// against the all-F16 GGUF; one role in Q4_0, every other weight F16, all roles at the same
/// weight SQNR), KLD per 10⁹ elements relative to `ffn_down`: `attn_v` 15.6, `attn_k` 1.6,
/// `ffn_up` 1.1, `attn_q` 0.8, `output` 0.6, `ffn_gate` 0.6, `attn_output` 0.45, `token_embd`
/// 0.06. Only the two outliers get a factor: the embedding is a lookup (each token reads one row,
/// once, at the bottom of the network), and the value projection's error goes straight into
/// every attention output its head group serves (llama.cpp's Q4_K_M gives it more bits for the
/// same reason). The others lie within a factor of two of each other, closer than one model's
/// measurement can rank them, so they stay at 1 rather than being tuned to that model.
pub fn importance(name: &str) -> f64 {
    if name == "token_embd.weight" {
        0.1
    } else if name.ends_with(".attn_v.weight") {
        16.0
    } else {
        1.0
    }
}

/// Lower convex hull of candidates in (bytes, error), smallest first; dominated points dropped.
pub fn hull(mut c: Vec<Candidate>) -> Vec<Candidate> {
    c.sort_by(|a, b| a.bytes.cmp(&b.bytes).then(a.err.total_cmp(&b.err)));
    let mut h: Vec<Candidate> = Vec::new();
    for p in c {
        if h.last().is_some_and(|l| p.err >= l.err) {
            continue;
        }
        while h.len() >= 2 {
            let (a, b) = (h[h.len() - 2], h[h.len() - 1]);
            // b is above the segment a→p: drop it.
            let slope_ab = (a.err - b.err) / (b.bytes - a.bytes) as f64;
            let slope_ap = (a.err - p.err) / (p.bytes - a.bytes) as f64;
            if slope_ab <= slope_ap {
                h.pop();
            } else {
                break;
            }
        }
        h.push(p);
    }
    h
}

/// Choose one hull point per tensor under `budget` bytes; returns the chosen index into each
/// hull, or `None` when even the smallest points exceed the budget.
pub fn allocate(hulls: &[Vec<Candidate>], budget: u64) -> Option<Vec<usize>> {
    let mut pick = vec![0usize; hulls.len()];
    let mut used: u64 = hulls.iter().map(|h| h[0].bytes).sum();
    if used > budget {
        return None;
    }
    loop {
        let mut best: Option<(f64, usize)> = None;
        for (i, h) in hulls.iter().enumerate() {
            let Some(next) = h.get(pick[i] + 1) else { continue };
            let cur = h[pick[i]];
            let extra = next.bytes - cur.bytes;
            if used + extra > budget {
                continue;
            }
            let gain = (cur.err - next.err) / extra.max(1) as f64;
            if best.is_none_or(|(g, _)| gain > g) {
                best = Some((gain, i));
            }
        }
        let Some((_, i)) = best else { break };
        used += hulls[i][pick[i] + 1].bytes - hulls[i][pick[i]].bytes;
        pick[i] += 1;
    }
    Some(pick)
}

/// Run the budget over the free tensors of a plan (indices into `tensors`), given each free
/// tensor's sample; sets their types and reasons. `fixed_bytes` are the other tensors' bytes,
/// `total_elems` every tensor's elements.
pub fn apply(
    bpw: f64,
    tensors: &mut [CpuTensor],
    free: &[usize],
    samples: Vec<Sample<'_>>,
    fixed_bytes: u64,
    total_elems: u64,
) -> Result<(), PlanError> {
    let mut cands: Vec<Vec<Candidate>> = samples.par_iter().map(candidates).collect::<Result<_, _>>()?;
    for (k, &ti) in free.iter().enumerate() {
        let m = importance(&tensors[ti].name);
        for c in &mut cands[k] {
            c.err *= m;
        }
    }
    let hulls: Vec<Vec<Candidate>> = cands.iter().cloned().map(hull).collect();
    let budget_total = (bpw * total_elems as f64 / 8.0).floor() as u64;
    let min_bytes: u64 = fixed_bytes + hulls.iter().map(|h| h[0].bytes).sum::<u64>();
    let min_bpw = 8.0 * min_bytes as f64 / total_elems as f64;
    let budget = budget_total.checked_sub(fixed_bytes).filter(|&b| b >= min_bytes - fixed_bytes).ok_or_else(|| {
        PlanError::Input(format!(
            "--bpw {bpw}: below the smallest mix of the candidate types ({min_bpw:.3} bits per weight with every \
             free tensor in its smallest type and the others as planned)"
        ))
    })?;
    let pick = allocate(&hulls, budget).expect("the smallest points fit: checked above");
    for (k, &ti) in free.iter().enumerate() {
        let chosen = hulls[k][pick[k]];
        let list = cands[k]
            .iter()
            .map(|c| format!("{} {:.3e}", c.ty.name(), c.err / (tensors[ti].shape.iter().product::<usize>() as f64)))
            .collect::<Vec<_>>()
            .join(", ");
        tensors[ti].ty = chosen.ty;
        tensors[ti].reason = format!(
            "--bpw {bpw}: {} (hull point {} of {}; relative error per candidate: {list})",
            chosen.ty.name(),
            pick[k] + 1,
            hulls[k].len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ty: GgmlType, bytes: u64, err: f64) -> Candidate {
        Candidate { ty, bytes, err }
    }

    #[test]
    fn hull_drops_dominated_and_concave_points() {
        let h = hull(vec![
            c(GgmlType::Q4_0, 18, 10.0),
            c(GgmlType::Q4_1, 20, 9.9), // above the segment Q4_0 → Q5_0: dropped
            c(GgmlType::Q5_0, 22, 4.0),
            c(GgmlType::Q4_K, 24, 5.0), // dominated by Q5_0: dropped
            c(GgmlType::Q8_0, 34, 0.1),
        ]);
        assert_eq!(h.iter().map(|c| c.ty).collect::<Vec<_>>(), [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0]);
    }

    #[test]
    fn allocate_spends_on_the_best_ratio_first_and_respects_the_budget() {
        let a = vec![c(GgmlType::Q4_0, 10, 100.0), c(GgmlType::Q8_0, 20, 1.0)];
        let b = vec![c(GgmlType::Q4_0, 10, 10.0), c(GgmlType::Q8_0, 20, 1.0)];
        assert_eq!(allocate(&[a.clone(), b.clone()], 19), None);
        assert_eq!(allocate(&[a.clone(), b.clone()], 20), Some(vec![0, 0]));
        assert_eq!(allocate(&[a.clone(), b.clone()], 30), Some(vec![1, 0]));
        assert_eq!(allocate(&[a.clone(), b.clone()], 40), Some(vec![1, 1]));
        // Equal ratios: the earlier tensor first.
        assert_eq!(allocate(&[b.clone(), b], 30), Some(vec![1, 0]));
    }

    #[test]
    fn the_embedding_counts_less_and_the_value_projection_more() {
        assert!(importance("token_embd.weight") < 1.0);
        assert!(importance("blk.0.attn_v.weight") > 10.0);
        assert!(importance("blk.17.attn_v.weight") > 10.0);
        for n in ["output.weight", "blk.0.attn_k.weight", "blk.3.ffn_down.weight", "blk.0.attn_v_b.weight"] {
            assert_eq!(importance(n), 1.0, "{n}");
        }
    }

    #[test]
    fn stored_type_follows_llama_quantize_fallbacks() {
        assert_eq!(stored_type(GgmlType::Q4_K, 576), Some(GgmlType::Q5_0));
        assert_eq!(stored_type(GgmlType::Q6_K, 576), Some(GgmlType::Q8_0));
        assert_eq!(stored_type(GgmlType::Q4_K, 512), Some(GgmlType::Q4_K));
        assert_eq!(stored_type(GgmlType::Q4_0, 48), None);
    }
}
