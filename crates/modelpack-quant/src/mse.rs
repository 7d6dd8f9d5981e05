//! `--method mse`: an error-minimising search of each block's (or group's) scale, and for
//! asymmetric formats its minimum / zero point, in the same on-disk formats as round-to-nearest.
//!
//! # Algorithm (identical at every SIMD level)
//! For each block the round-to-nearest (RTN) bytes are produced first by the ordinary kernels;
//! they are the fallback, so `mse` is never worse than `rtn` on any block (a tie keeps the RTN
//! bytes). Then:
//! 1. **Grid**: 16 candidate mappings of the block's range onto the code range (a fixed table per
//!    format). For each, the codes `u = clamp(round_half_even((x - m) * id), lo, hi)` are chosen
//!    and the least-squares scale (`d = Σxu / Σu²`, or the 2×2 solve of `x ≈ d·u + m` for the
//!    asymmetric formats) is computed, then rounded to the stored scale dtype (f16 for GGUF, the
//!    scale dtype for compressed-tensors) *before* its error is estimated.
//! 2. **Refine**: 16 candidates around the best grid results: the rounded scale and its
//!    neighbours in the stored dtype (one unit in the last place at a time), with the codes
//!    re-chosen for each. Their error is computed exactly, with the dequantization formula the
//!    runtime uses (`d·u + m` for GGUF, `round_to_elem_dtype((q − zp)·scale)` for
//!    compressed-tensors).
//! 3. The best refined candidate replaces the RTN block only if its exact error is strictly
//!    smaller than the RTN block's exact error.
//!
//! The hot loop is [`Cands`] evaluation: 16 candidates side by side, one candidate per lane, the
//! block's elements visited in order. Every sum of a candidate is therefore a plain sequential
//! sum over the block in element order, in every path: the scalar twin loops over lanes, AVX2
//! holds the 16 lanes in two 8-lane registers and AVX-512 in one. Each lane performs the same f32
//! operations in the same order (no FMA), so all levels produce identical bits. Everything else
//! (grids, least squares, choices) is shared scalar code.
//!
//! Nothing depends on the thread count: each block's result is a pure function of its values.

// Lane loops index several parallel 16-lane arrays at once, and `!(a > b)` is the deliberate
// NaN-rejecting form of the comparisons.
#![allow(clippy::needless_range_loop, clippy::neg_cmp_op_on_partial_ord)]

#[cfg(target_arch = "x86_64")]
mod x86;

use crate::convert::{f16_to_f32, f32_to_f16, load_slice, round_bf16, round_f16, round_to, with_src, Dtype};
use crate::ct::{self, CtChunk, CtOutput, CtPacked, ScaleDtype};
use crate::gguf::{self, GgmlType, QK};
use crate::metrics::ErrorStats;
use crate::simd::{self, Level};
use crate::{QuantError, SrcDtype};

/// Candidates evaluated side by side (one per lane of an AVX-512 register).
pub(crate) const L: usize = 16;

/// Sixteen candidates, one per lane: code `u = clamp(round((x - m) * id), lo, hi)` and
/// dequantized value `round_E(d * u + m)`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cands {
    /// Reciprocal step used to choose codes.
    pub id: [f32; L],
    /// Dequantization scale.
    pub d: [f32; L],
    /// Offset (0 for symmetric and compressed-tensors formats).
    pub m: [f32; L],
    /// Smallest code.
    pub lo: [f32; L],
    /// Largest code.
    pub hi: [f32; L],
}

/// Per-lane sums of an evaluation, each a sequential f32 sum in element order.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sums {
    /// Σ (x − x̂)² (only when the error was asked for; else 0).
    pub err: [f32; L],
    /// Σ x·u.
    pub sxu: [f32; L],
    /// Σ u².
    pub suu: [f32; L],
    /// Σ u.
    pub su: [f32; L],
}

/// The scalar twin of the SIMD evaluation kernels: the definition of their output.
///
/// `ERR`: also compute the exact squared error; `ASYM`: subtract `m` before coding and add it
/// after (otherwise `m` is ignored and must be 0).
pub(crate) fn eval_scalar<E: Dtype, const ERR: bool, const ASYM: bool>(x: &[f32], c: &Cands, s: &mut Sums) {
    for k in 0..L {
        let (id, d, m, lo, hi) = (c.id[k], c.d[k], c.m[k], c.lo[k], c.hi[k]);
        let (mut err, mut sxu, mut suu, mut su) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for &xj in x {
            let t = if ASYM { (xj - m) * id } else { xj * id };
            let r = t.round_ties_even();
            // vmaxps(r, lo) / vminps(u, hi) semantics: the second operand unless strictly beyond.
            let u = if r > lo { r } else { lo };
            let u = if u < hi { u } else { hi };
            sxu += xj * u;
            suu += u * u;
            if ASYM {
                su += u;
            }
            if ERR {
                let y = if ASYM { round_to::<E>(d * u + m) } else { round_to::<E>(d * u) };
                let e = xj - y;
                err += e * e;
            }
        }
        s.err[k] = err;
        s.sxu[k] = sxu;
        s.suu[k] = suu;
        s.su[k] = su;
    }
}

/// Evaluate 16 candidates on `x` at `level` (clamped by the caller).
#[inline]
fn eval<E: Dtype, const ERR: bool, const ASYM: bool>(level: Level, x: &[f32], c: &Cands, s: &mut Sums) {
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: callers pass a level from `simd::clamp`, so the CPU has its features.
        Level::Avx512 => return unsafe { x86::eval512::<E, ERR, ASYM>(x, c, s) },
        Level::Avx2 => return unsafe { x86::eval256::<E, ERR, ASYM>(x, c, s) },
        Level::Scalar => {}
    }
    let _ = level;
    eval_scalar::<E, ERR, ASYM>(x, c, s)
}

/// Element rounding of an evaluation, as a runtime value (dispatched to the const tags).
#[inline]
fn eval_dyn<const ERR: bool, const ASYM: bool>(level: Level, er: ScaleDtype, x: &[f32], c: &Cands, s: &mut Sums) {
    let er = match er {
        ScaleDtype::F32 => SrcDtype::F32,
        ScaleDtype::F16 => SrcDtype::F16,
        ScaleDtype::BF16 => SrcDtype::BF16,
    };
    with_src!(er, E => eval::<E, ERR, ASYM>(level, x, c, s))
}

/// The stored dtype of a scale (and of Q4_1's minimum): rounding and neighbour steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    F16,
    BF16,
    F32,
}

impl Store {
    fn of(sd: ScaleDtype) -> Store {
        match sd {
            ScaleDtype::F16 => Store::F16,
            ScaleDtype::BF16 => Store::BF16,
            ScaleDtype::F32 => Store::F32,
        }
    }

    #[inline]
    fn round(self, v: f32) -> f32 {
        match self {
            Store::F16 => fast_round_f16(v),
            Store::BF16 => round_bf16(v),
            Store::F32 => v,
        }
    }

    /// [`Store::step`] through the f16 bit pattern (every f16 value, subnormals included).
    fn step_exact(self, v: f32, k: i32) -> f32 {
        let b = f32_to_f16(v);
        let (sign, mag) = (b & 0x8000, i32::from(b & 0x7fff));
        let mag = (mag + k).clamp(1, 0x7bff) as u16;
        f16_to_f32(sign | mag)
    }

    /// The representable value `k` steps away from the representable `v` in magnitude (sign
    /// kept; never crosses zero). f32 scales step by 2^-12 relative (an ulp would be a no-op).
    fn step(self, v: f32, k: i32) -> f32 {
        if k == 0 {
            return v;
        }
        match self {
            Store::F16 if (0x3880_0000..0x4770_0000).contains(&(v.to_bits() & 0x7fff_ffff)) && k.abs() <= 64 => {
                // A normal f16 value: one unit in the last place is 2^13 f32 units, and the
                // f16 exponent steps exactly where the f32 one does.
                let b = i64::from(v.to_bits()) + i64::from(k) * 0x2000;
                let r = f32::from_bits(b as u32);
                if (0x3880_0000..0x477f_e001).contains(&(r.to_bits() & 0x7fff_ffff)) {
                    r
                } else {
                    Store::F16.step_exact(v, k)
                }
            }
            Store::F16 => self.step_exact(v, k),
            Store::BF16 => {
                let b = (v.to_bits() >> 16) as u16;
                let (sign, mag) = (b & 0x8000, i32::from(b & 0x7fff));
                let mag = (mag + k).clamp(1, 0x7f7f) as u16;
                f32::from_bits(u32::from(sign | mag) << 16)
            }
            Store::F32 => v * (1.0 + k as f32 * (1.0 / 4096.0)),
        }
    }
}

/// [`round_f16`] without a conversion call for values in f16's normal range (where rounding
/// to nearest even is rounding the f32 significand to 10 bits); everything else goes through
/// the exact conversion.
#[inline]
fn fast_round_f16(v: f32) -> f32 {
    let b = v.to_bits();
    let a = b & 0x7fff_ffff;
    // 2^-14 <= |v| < 65504: the result stays normal and finite.
    if (0x3880_0000..0x477f_e000).contains(&a) {
        let r = b.wrapping_add(0x0fff + ((b >> 13) & 1)) & !0x1fff;
        f32::from_bits(r)
    } else {
        round_f16(v)
    }
}

/// A usable scale: finite and normal (so its reciprocal is finite too), checked on the bits
/// rather than with a division. Subnormal scales are left to RTN.
#[inline]
fn usable(d: f32) -> bool {
    let a = d.to_bits() & 0x7fff_ffff;
    (0x0080_0000..0x7f80_0000).contains(&a)
}

/// Index of the smallest score (first on ties); `None` if no score is finite.
fn argmin(score: &[f32], valid: &[bool]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for k in 0..score.len() {
        if valid[k] && score[k].is_finite() && best.is_none_or(|b| score[k] < score[b]) {
            best = Some(k);
        }
    }
    best
}

/// The indices of the `N` best-scoring valid entries with distinct `(d, m)` pairs, best first,
/// and how many there are (ties: lower index first).
fn best_distinct<const N: usize>(score: &[f32], valid: &[bool], d: &[f32], m: &[f32]) -> ([usize; N], usize) {
    let mut out = [0usize; N];
    let mut n = 0;
    while n < N {
        let mut best: Option<usize> = None;
        for k in 0..score.len() {
            if valid[k]
                && score[k].is_finite()
                && !out[..n].iter().any(|&o| d[o] == d[k] && m[o] == m[k])
                && best.is_none_or(|b| score[k] < score[b])
            {
                best = Some(k);
            }
        }
        let Some(b) = best else { break };
        out[n] = b;
        n += 1;
    }
    (out, n)
}

/// A chosen candidate: codes rule and dequantization parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Choice {
    id: f32,
    d: f32,
    m: f32,
    lo: f32,
    hi: f32,
    err: f32,
}

impl Choice {
    /// The code of `x` under this choice (the kernels' formula).
    #[inline]
    fn code(&self, x: f32, asym: bool) -> f32 {
        let t = if asym { (x - self.m) * self.id } else { x * self.id };
        // Clamping before rounding gives the same code (rounding is monotone, bounds are
        // integers), and |t| <= 257 lets the add-and-subtract of 1.5·2^23 round half to even
        // exactly without a libm call.
        const MAGIC: f32 = 12_582_912.0;
        let t = if t > self.lo - 1.0 { t } else { self.lo - 1.0 };
        let t = if t < self.hi + 1.0 { t } else { self.hi + 1.0 };
        let r = (t + MAGIC) - MAGIC;
        let u = if r > self.lo { r } else { self.lo };
        if u < self.hi {
            u
        } else {
            self.hi
        }
    }
}

/// Two-pass grid: multiples of the RTN mapping, 0.80 to 1.30.
const SYM_GRID2: [f32; 2 * L] = {
    let mut g = [0.0f32; 2 * L];
    let mut k = 0;
    while k < 2 * L {
        g[k] = 0.80 + 0.5 * k as f32 / (2 * L - 1) as f32;
        k += 1;
    }
    g
};

/// Symmetric search (Q8_0, Q4_0, Q5_0, compressed-tensors symmetric).
///
/// `t_rtn` is the code RTN maps the largest-|x| element `mx` to (signed), `flip` the code of the
/// opposite mapping for formats whose scale may be negative (Q4_0: mx → +7), or `None`.
#[allow(clippy::too_many_arguments)]
fn search_sym(
    level: Level,
    er: ScaleDtype,
    store: Store,
    x: &[f32],
    lo: f32,
    hi: f32,
    t_rtn: f32,
    flip: Option<f32>,
    positive_only: bool,
) -> Option<Choice> {
    let mut mx = x[0];
    for &v in x {
        if v.abs() > mx.abs() {
            mx = v;
        }
    }
    if mx == 0.0 || !mx.is_finite() {
        return None;
    }
    let inv = 1.0 / mx;
    let mut score = [f32::INFINITY; 2 * L];
    let mut scale = [0.0f32; 2 * L];
    let mut valid = [false; 2 * L];
    let mut s = Sums::default();
    for pass in 0..2 {
        let mut c = Cands { lo: [lo; L], hi: [hi; L], ..Cands::default() };
        for k in 0..L {
            let g = pass * L + k;
            // With a flip mapping, the last six lanes try it instead of the widest RTN multiples.
            let t = match flip {
                Some(f) if g >= 2 * L - 6 => f * SYM_GRID2[(g - (2 * L - 6)) * 3 + 6],
                _ => t_rtn * SYM_GRID2[g],
            };
            c.id[k] = t * inv;
        }
        eval_dyn::<false, false>(level, er, x, &c, &mut s);
        for k in 0..L {
            let g = pass * L + k;
            if s.suu[k] > 0.0 {
                let d = store.round(s.sxu[k] / s.suu[k]);
                if usable(d) && (!positive_only || d > 0.0) {
                    scale[g] = d;
                    score[g] = d * (d * s.suu[k] - 2.0 * s.sxu[k]);
                    valid[g] = true;
                }
            }
        }
    }
    // Refine: eleven neighbours (-5..+5 units in the last place) of the best grid scale and five
    // (-2..+2) of the best other scale, codes re-chosen, exact error.
    let (top, nt) = best_distinct::<2>(&score, &valid, &scale, &scale);
    if nt == 0 {
        return None;
    }
    let b2 = top[nt - 1];
    let mut r = Cands { lo: [lo; L], hi: [hi; L], ..Cands::default() };
    let mut rv = [false; L];
    for k in 0..L {
        let d = if k < 11 { store.step(scale[top[0]], k as i32 - 5) } else { store.step(scale[b2], k as i32 - 13) };
        if usable(d) && (!positive_only || d > 0.0) {
            r.d[k] = d;
            r.id[k] = 1.0 / d;
            rv[k] = true;
        }
    }
    eval_dyn::<true, false>(level, er, x, &r, &mut s);
    let k = argmin(&s.err, &rv)?;
    let mut best = Choice { id: r.id[k], d: r.d[k], m: 0.0, lo, hi, err: s.err[k] };
    // Second round: the least-squares scale of the best codes, and its neighbours.
    if s.suu[k] > 0.0 {
        let d2 = store.round(s.sxu[k] / s.suu[k]);
        if usable(d2) && d2 != best.d && (!positive_only || d2 > 0.0) {
            let mut rv = [false; L];
            for k in 0..L {
                let d = store.step(d2, k as i32 - 7);
                if usable(d) && (!positive_only || d > 0.0) {
                    r.d[k] = d;
                    r.id[k] = 1.0 / d;
                    rv[k] = true;
                }
            }
            eval_dyn::<true, false>(level, er, x, &r, &mut s);
            if let Some(k) = argmin(&s.err, &rv) {
                if s.err[k] < best.err {
                    best = Choice { id: r.id[k], d: r.d[k], m: 0.0, lo, hi, err: s.err[k] };
                }
            }
        }
    }
    Some(best)
}

/// Grid of the `mse-fast` search ([`search_sym_fast`]): multiples of the RTN mapping (the code
/// the largest-|x| element maps to), then of the flipped mapping where the format has one.
/// Chosen on synthetic Q4_0 blocks (`tests::fast_grid_experiment`: gaussian, outliers,
/// Laplace, cubed): with the least-squares re-fit these six reach 22.49 / 17.09 / 19.83 /
/// 19.88 dB against the full search's 22.51 / 17.09 / 19.83 / 19.89 and RTN's 21.97 / 16.82 /
/// 19.43 / 19.55; four candidates lose 0.02–0.04 dB, eleven gain ≤ 0.01.
pub(crate) const FAST_GRID: [f32; FAST_G] = [0.90, 0.97, 1.04, 1.11];
/// Multiples of the flipped mapping in the `mse-fast` grid (formats with one: Q4_0, Q5_0).
pub(crate) const FAST_FLIP: [f32; FAST_F] = [1.0, 1.07];
/// Entries of [`FAST_GRID`].
pub(crate) const FAST_G: usize = 4;
/// Entries of [`FAST_FLIP`].
pub(crate) const FAST_F: usize = 2;

/// The `mse-fast` candidate `g`'s mapping of the largest-|x| element (`FAST_GRID` then
/// `FAST_FLIP`; without a flip mapping the flip entries repeat the RTN one).
#[inline]
pub(crate) fn fast_t(g: usize, t_rtn: f32, flip: Option<f32>) -> f32 {
    match flip {
        Some(f) if g >= FAST_G => f * FAST_FLIP[g - FAST_G],
        _ if g >= FAST_G => t_rtn,
        _ => t_rtn * FAST_GRID[g],
    }
}

/// One candidate's sums over a block in element order: codes `u = clamp(round(x·id), lo, hi)`,
/// `(Σ(x − d·u)², Σxu, Σu²)` (the error only with `ERR`; `d·u` is rounded to f32 as the
/// runtime's dequantization does). Each product is added with one rounding (fused
/// multiply-add: IEEE-exact at every level, and a third fewer operations than `mul` + `add`).
/// The per-lane operations of the batched kernels (`x86::search_fast16` / `search_fast8`).
#[inline]
fn sums_f32<const ERR: bool>(x: &[f32], id: f32, d: f32, lo: f32, hi: f32) -> (f32, f32, f32) {
    let (mut err, mut sxu, mut suu) = (0.0f32, 0.0f32, 0.0f32);
    for &xj in x {
        let r = (xj * id).round_ties_even();
        let u = if r > lo { r } else { lo };
        let u = if u < hi { u } else { hi };
        sxu = xj.mul_add(u, sxu);
        suu = u.mul_add(u, suu);
        if ERR {
            let e = xj - d * u;
            err = e.mul_add(e, err);
        }
    }
    (err, sxu, suu)
}

/// `--method mse-fast` for the symmetric GGUF types (scale stored as f16, sign free): about
/// a sixth of [`search_sym`]'s work. Grid: the six [`FAST_GRID`] / [`FAST_FLIP`] mappings, each
/// scored by the error of its codes at their least-squares scale `d = Σxu/Σu²` (rounded to
/// f16). Then the best one's codes are re-chosen at that `d` (exact error), and the
/// least-squares scale of those codes is tried once more (codes re-chosen again, exact
/// error); the smaller exact error wins. This is the closed-form refinement llama.cpp's
/// `make_qx_quants` uses, with the f16 rounding of the stored scale inside the loop.
/// The definition (scalar twin) of the batched kernels, which equal it lane by lane.
pub(crate) fn search_sym_fast(x: &[f32], lo: f32, hi: f32, t_rtn: f32, flip: Option<f32>) -> Option<Choice> {
    let ts: [f32; FAST_G + FAST_F] = std::array::from_fn(|g| fast_t(g, t_rtn, flip));
    search_sym_fast_with(x, lo, hi, &ts)
}

/// [`search_sym_fast`] on an explicit list of mappings `ts` (the code the largest-|x| element
/// maps to, per grid candidate).
fn search_sym_fast_with(x: &[f32], lo: f32, hi: f32, ts: &[f32]) -> Option<Choice> {
    let mut mx = x[0];
    for &v in x {
        if v.abs() > mx.abs() {
            mx = v;
        }
    }
    if mx == 0.0 || !mx.is_finite() {
        return None;
    }
    let inv = 1.0 / mx;
    let (mut best_score, mut best_d) = (f32::INFINITY, None);
    for &t in ts {
        let id = t * inv;
        let (_, sxu, suu) = sums_f32::<false>(x, id, 0.0, lo, hi);
        if suu > 0.0 {
            let d = fast_round_f16(sxu / suu);
            let score = d * (d * suu - 2.0 * sxu);
            if usable(d) && score.is_finite() && score < best_score {
                (best_score, best_d) = (score, Some(d));
            }
        }
    }
    let d1 = best_d?;
    let (e1, sxu, suu) = sums_f32::<true>(x, 1.0 / d1, d1, lo, hi);
    let mut best = e1.is_finite().then_some(Choice { id: 1.0 / d1, d: d1, m: 0.0, lo, hi, err: e1 });
    if suu > 0.0 {
        let d2 = fast_round_f16(sxu / suu);
        if usable(d2) && d2 != d1 {
            let (e2, _, _) = sums_f32::<true>(x, 1.0 / d2, d2, lo, hi);
            if e2.is_finite() && best.is_none_or(|b| e2 < b.err) {
                best = Some(Choice { id: 1.0 / d2, d: d2, m: 0.0, lo, hi, err: e2 });
            }
        }
    }
    best
}

/// Fractions of the range trimmed from the bottom and top by the asymmetric grid.
const ASYM_TRIM: [(f32, f32); L] = [
    (0.0, 0.0),
    (0.0, 0.03),
    (0.03, 0.0),
    (0.03, 0.03),
    (0.0, 0.06),
    (0.06, 0.0),
    (0.06, 0.06),
    (0.03, 0.06),
    (0.06, 0.03),
    (0.0, 0.10),
    (0.10, 0.0),
    (0.10, 0.10),
    (0.05, 0.10),
    (0.10, 0.05),
    (-0.02, -0.02),
    (0.15, 0.15),
];

/// Q4_1-style asymmetric search: `x ≈ d·u + m`, `u ∈ [0, n]`, `d` and `m` stored in `store`.
fn search_affine(level: Level, store: Store, x: &[f32], nmax: f32) -> Option<Choice> {
    let (mut mn, mut mx) = (x[0], x[0]);
    for &v in x {
        mn = if v < mn { v } else { mn };
        mx = if v > mx { v } else { mx };
    }
    let range = mx - mn;
    if !(range > 0.0) || !range.is_finite() {
        return None;
    }
    let n = x.len() as f32;
    let mut sx = 0.0f32;
    for &v in x {
        sx += v;
    }
    // 2×2 least squares of x ≈ d·u + m for the codes behind sums (su, suu, sxu), rounded to
    // the stored dtype, with its error minus Σx² as the score.
    let ls = |su: f32, suu: f32, sxu: f32| -> Option<(f32, f32, f32)> {
        let det = suu * n - su * su;
        if !(det > 0.0) {
            return None;
        }
        let d = store.round((n * sxu - su * sx) / det);
        let m = store.round((suu * sx - su * sxu) / det);
        (usable(d) && m.is_finite()).then_some((
            d,
            m,
            d * (d * suu - 2.0 * sxu) + m * (2.0 * d * su + n * m - 2.0 * sx),
        ))
    };
    let mut score = [f32::INFINITY; 2 * L];
    let mut dd = [0.0f32; 2 * L];
    let mut mm = [0.0f32; 2 * L];
    let mut valid = [false; 2 * L];
    let mut s = Sums::default();
    for pass in 0..2 {
        let mut c = Cands { lo: [0.0; L], hi: [nmax; L], ..Cands::default() };
        for k in 0..L {
            let (a, b) = AFFINE_TRIM[pass * L + k];
            let bot = mn + a * range;
            let d = (mx - b * range - bot) / nmax;
            c.m[k] = bot;
            c.id[k] = if d > 0.0 { 1.0 / d } else { 0.0 };
        }
        eval_dyn::<false, true>(level, ScaleDtype::F32, x, &c, &mut s);
        for k in 0..L {
            if let Some((d, m, sc)) = ls(s.su[k], s.suu[k], s.sxu[k]) {
                let g = pass * L + k;
                (dd[g], mm[g], score[g], valid[g]) = (d, m, sc, true);
            }
        }
    }
    // Round 1: the four best distinct (d, m) of the grid, each with d at -1..+2 units in the
    // last place; codes re-chosen, exact error.
    let (top, nt) = best_distinct::<4>(&score, &valid, &dd, &mm);
    let mut r = Cands { lo: [0.0; L], hi: [nmax; L], ..Cands::default() };
    let mut rv = [false; L];
    for k in 0..L {
        if k / 4 >= nt {
            break;
        }
        let g = top[k / 4];
        let d = store.step(dd[g], (k % 4) as i32 - 1);
        if usable(d) {
            (r.d[k], r.id[k], r.m[k], rv[k]) = (d, 1.0 / d, mm[g], true);
        }
    }
    eval_dyn::<true, true>(level, ScaleDtype::F32, x, &r, &mut s);
    let k = argmin(&s.err, &rv)?;
    let mut best = Choice { id: r.id[k], d: r.d[k], m: r.m[k], lo: 0.0, hi: nmax, err: s.err[k] };
    let mut sums = (s.su[k], s.suu[k], s.sxu[k]);
    // Rounds 2 and 3: least squares of the best codes, and its neighbours (d and m: -1..+2
    // units in the last place).
    for _ in 0..2 {
        let Some((d2, m2, _)) = ls(sums.0, sums.1, sums.2) else { break };
        if d2 == best.d && m2 == best.m {
            break;
        }
        let mut rv = [false; L];
        for k in 0..L {
            let d = store.step(d2, (k / 4) as i32 - 1);
            let m = step_signed(store, m2, (k % 4) as i32 - 1);
            if usable(d) && m.is_finite() {
                (r.d[k], r.id[k], r.m[k], rv[k]) = (d, 1.0 / d, m, true);
            }
        }
        eval_dyn::<true, true>(level, ScaleDtype::F32, x, &r, &mut s);
        let Some(k) = argmin(&s.err, &rv) else { break };
        if !(s.err[k] < best.err) {
            break;
        }
        best = Choice { id: r.id[k], d: r.d[k], m: r.m[k], lo: 0.0, hi: nmax, err: s.err[k] };
        sums = (s.su[k], s.suu[k], s.sxu[k]);
    }
    Some(best)
}

/// Two-pass grid of Q4_1-style searches: fractions of the range trimmed from the bottom and
/// the top (first pass 0, 4, 8, 12 %; second pass 2, 6, 10, 14 %).
const AFFINE_TRIM: [(f32, f32); 2 * L] = {
    let mut g = [(0.0f32, 0.0f32); 2 * L];
    let mut k = 0;
    while k < 2 * L {
        let (pass, i) = (k / L, k % L);
        let base = 0.0075 * pass as f32;
        g[k] = (base + 0.015 * (i / 4) as f32, base + 0.015 * (i % 4) as f32);
        k += 1;
    }
    g
};

/// Step a representable value `k` places along the real line (crossing zero if needed).
fn step_signed(store: Store, v: f32, k: i32) -> f32 {
    if k == 0 {
        return v;
    }
    if v == 0.0 {
        return v;
    }
    // Moving away from zero grows the magnitude.
    let away = (v > 0.0) == (k > 0);
    let mag = if away { k.abs() } else { -k.abs() };
    let r = store.step(v, mag);
    if (r > 0.0) != (v > 0.0) {
        0.0
    } else {
        r
    }
}

/// compressed-tensors asymmetric search: `x ≈ round_E(s · (q − z))`, `q, z ∈ [qmin, qmax]`.
fn search_ct_asym(level: Level, er: ScaleDtype, store: Store, x: &[f32], qmin: f32, qmax: f32) -> Option<Choice> {
    let (mut mn, mut mx) = (0.0f32, 0.0f32);
    for &v in x {
        mn = if v < mn { v } else { mn };
        mx = if v > mx { v } else { mx };
    }
    let range = mx - mn;
    if !(range > 0.0) || !range.is_finite() {
        return None;
    }
    let nmax = qmax - qmin;
    let n = x.len() as f32;
    let mut sx = 0.0f32;
    for &v in x {
        sx += v;
    }
    // Candidate (s, z): codes u = q - z in [qmin - z, qmax - z].
    let cand = |bot: f32, top: f32| -> Option<(f32, f32)> {
        let s = store.round((top - bot) / nmax);
        if !usable(s) || s < 0.0 {
            return None;
        }
        let z = (qmin - bot / s).round_ties_even().clamp(qmin, qmax);
        Some((s, z))
    };
    let mut c = Cands::default();
    let mut zs = [0.0f32; L];
    let mut valid = [false; L];
    for (k, &(a, b)) in ASYM_TRIM.iter().enumerate() {
        if let Some((s, z)) = cand(mn + a * range, mx - b * range) {
            c.id[k] = 1.0 / s;
            c.d[k] = s;
            c.lo[k] = qmin - z;
            c.hi[k] = qmax - z;
            zs[k] = z;
            valid[k] = true;
        }
    }
    let mut s = Sums::default();
    eval_dyn::<false, true>(level, er, x, &c, &mut s);
    // 2×2 least squares in the unsigned code v = u + z - qmin ∈ [0, nmax]: x ≈ d·v + m.
    let mut score = [f32::INFINITY; L];
    let mut ss = [0.0f32; L];
    let mut zz = [0.0f32; L];
    for k in 0..L {
        if !valid[k] {
            continue;
        }
        let off = zs[k] - qmin;
        let sv = s.su[k] + n * off;
        let svv = s.suu[k] + 2.0 * off * s.su[k] + n * off * off;
        let sxv = s.sxu[k] + off * sx;
        let det = svv * n - sv * sv;
        if det > 0.0 {
            let d = store.round((n * sxv - sv * sx) / det);
            let m = (svv * sx - sv * sxv) / det;
            if usable(d) && d > 0.0 && m.is_finite() {
                let z = (qmin - m / d).round_ties_even().clamp(qmin, qmax);
                let mq = (qmin - z) * d;
                ss[k] = d;
                zz[k] = z;
                score[k] = d * (d * svv - 2.0 * sxv) + mq * (2.0 * d * sv + n * mq - 2.0 * sx);
                continue;
            }
        }
        valid[k] = false;
    }
    let b = argmin(&score, &valid)?;
    // Refine: scale -2..+2 ulps × zero point z-1..z+1 (15 lanes; the last repeats lane 7).
    let mut r = Cands::default();
    let mut rv = [false; L];
    for k in 0..L {
        let kk = if k == L - 1 { 7 } else { k };
        let d = store.step(ss[b], (kk / 3) as i32 - 2);
        let z = (zz[b] + ((kk % 3) as f32 - 1.0)).clamp(qmin, qmax);
        if usable(d) && d > 0.0 && k != L - 1 {
            r.d[k] = d;
            r.id[k] = 1.0 / d;
            r.lo[k] = qmin - z;
            r.hi[k] = qmax - z;
            rv[k] = true;
        }
    }
    eval_dyn::<true, false>(level, er, x, &r, &mut s);
    let k = argmin(&s.err, &rv)?;
    Some(Choice { id: r.id[k], d: r.d[k], m: 0.0, lo: r.lo[k], hi: r.hi[k], err: s.err[k] })
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// Exact squared error of a block against its dequantization `y`, summed in element order with
/// the kernels' per-element formula.
#[inline]
fn block_err(x: &[f32], y: &[f32]) -> f32 {
    let mut err = 0.0f32;
    for (&a, &b) in x.iter().zip(y) {
        let e = a - b;
        err += e * e;
    }
    err
}

/// The symmetric search's parameters for a GGUF type: code range, RTN's code of the
/// largest-|x| element, and the flipped mapping (formats whose scale may be negative); `None`
/// for Q4_1 and the types without a search.
fn sym_params(ty: GgmlType) -> Option<(f32, f32, f32, Option<f32>)> {
    match ty {
        GgmlType::Q8_0 => Some((-127.0, 127.0, 127.0, None)),
        GgmlType::Q4_0 => Some((-8.0, 7.0, -8.0, Some(7.0))),
        // RTN maps the largest-|x| element to -16 (d = max / -16); the flip maps it to +15.
        GgmlType::Q5_0 => Some((-16.0, 15.0, -16.0, Some(15.0))),
        GgmlType::Q4_1
        | GgmlType::F32
        | GgmlType::F16
        | GgmlType::BF16
        | GgmlType::Q5_1
        | GgmlType::Q4_K
        | GgmlType::Q6_K => None,
    }
}

/// Search one GGUF block given its RTN bytes (`blk`, overwritten when the search wins).
fn gguf_block(level: Level, ty: GgmlType, x: &[f32; QK], blk: &mut [u8]) {
    let choice = match (ty, sym_params(ty)) {
        (_, Some((lo, hi, t, flip))) => search_sym(level, ScaleDtype::F32, Store::F16, x, lo, hi, t, flip, false),
        (GgmlType::Q4_1, None) => search_affine(level, Store::F16, x, 15.0),
        // Not searched (callers check `gguf_supported`): the RTN bytes stay.
        _ => return,
    };
    gguf_finish(ty, x, blk, choice);
}

/// Write `choice` over the RTN bytes in `blk` if its error is strictly smaller than theirs.
fn gguf_finish(ty: GgmlType, x: &[f32; QK], blk: &mut [u8], choice: Option<Choice>) {
    let Some(ch) = choice else { return };
    let mut y = [0.0f32; QK];
    rtn_deq(ty, blk, &mut y);
    if !(ch.err < block_err(x, &y)) {
        return;
    }
    let asym = ty == GgmlType::Q4_1;
    write_block(ty, ch.d, ch.m, |j| ch.code(x[j], asym) as i32, blk);
}

/// Write a searched block: scale `d` (and Q4_1's `m`) and the codes `code(j)` of its elements.
fn write_block(ty: GgmlType, d: f32, m: f32, code: impl Fn(usize) -> i32, blk: &mut [u8]) {
    let d16 = f32_to_f16(d);
    match ty {
        GgmlType::Q8_0 => {
            blk[..2].copy_from_slice(&d16.to_le_bytes());
            for (j, o) in blk[2..34].iter_mut().enumerate() {
                *o = (code(j) as i8) as u8;
            }
        }
        GgmlType::Q4_0 => {
            blk[..2].copy_from_slice(&d16.to_le_bytes());
            for j in 0..QK / 2 {
                let a = (code(j) + 8) as u8;
                let b = (code(j + QK / 2) + 8) as u8;
                blk[2 + j] = a | (b << 4);
            }
        }
        GgmlType::Q5_0 => {
            // Codes 0..=31: low nibbles packed as Q4_0's, fifth bits in the u32 `qh`.
            blk[..2].copy_from_slice(&d16.to_le_bytes());
            let mut qh = 0u32;
            for j in 0..QK / 2 {
                let a = (code(j) + 16) as u8;
                let b = (code(j + QK / 2) + 16) as u8;
                blk[6 + j] = (a & 0x0f) | ((b & 0x0f) << 4);
                qh |= u32::from(a >> 4) << j | u32::from(b >> 4) << (j + QK / 2);
            }
            blk[2..6].copy_from_slice(&qh.to_le_bytes());
        }
        GgmlType::Q4_1 => {
            blk[..2].copy_from_slice(&d16.to_le_bytes());
            blk[2..4].copy_from_slice(&f32_to_f16(m).to_le_bytes());
            for j in 0..QK / 2 {
                let a = code(j) as u8;
                let b = code(j + QK / 2) as u8;
                blk[4 + j] = a | (b << 4);
            }
        }
        // Returned above: no search ran.
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q6_K => {}
    }
}

/// Dequantize one block of `ty` (the `gguf` package's formula) into `y`.
fn rtn_deq(ty: GgmlType, blk: &[u8], y: &mut [f32; QK]) {
    // A block is a whole row of 32 for dequantize_rows; the shape always fits.
    let _ = gguf::dequantize_rows(ty, blk, QK, y);
}

/// Whether [`quantize_gguf_rows`] has a search for `ty` (the others are written as by RTN).
pub const fn gguf_supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0)
}

/// [`crate::gguf::quantize_rows`] with the `mse` method, at the active SIMD level: same
/// arguments, same errors, same output format. Types without a search ([`gguf_supported`]) get
/// their RTN bytes. Bytes are identical at every SIMD level and thread count.
pub fn quantize_gguf_rows(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    quantize_gguf_rows_at(simd::active_level(), ty, src, input, row_len, out, stats)
}

/// [`quantize_gguf_rows`] at an explicit SIMD level (clamped to what the CPU supports).
pub fn quantize_gguf_rows_at(
    level: Level,
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    gguf_rows(level, false, ty, src, input, row_len, out, stats)
}

/// Whether [`quantize_gguf_rows_fast`] has its own (short) search for `ty`: the symmetric
/// types. Q4_1 gets the full `mse` search from it; the others their RTN bytes.
pub const fn gguf_fast_supported(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0)
}

/// `--method mse-fast`: [`quantize_gguf_rows`] with the short search ([`search_sym_fast`]: 6
/// grid candidates and a closed-form least-squares re-fit, about a sixth of the full search's
/// work) for the types of [`gguf_fast_supported`]; Q4_1 gets the full search. Same arguments,
/// errors and format; never worse than RTN on any block; bytes identical at every SIMD level
/// and thread count.
pub fn quantize_gguf_rows_fast(
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    quantize_gguf_rows_fast_at(simd::active_level(), ty, src, input, row_len, out, stats)
}

/// [`quantize_gguf_rows_fast`] at an explicit SIMD level (clamped to what the CPU supports).
pub fn quantize_gguf_rows_fast_at(
    level: Level,
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    gguf_rows(level, true, ty, src, input, row_len, out, stats)
}

/// The GGUF `mse` driver: RTN bytes, then the full (`fast == false`) or short search per block.
#[allow(clippy::too_many_arguments)]
fn gguf_rows(
    level: Level,
    fast: bool,
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    row_len: usize,
    out: &mut [u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    let level = simd::clamp(level);
    // RTN first: validates shapes and finiteness, and is the fallback of every block.
    gguf::quantize_rows_at(level, ty, src, input, row_len, out, None)?;
    if gguf_supported(ty) {
        let in_blk = QK * src.size();
        let ob = ty.type_size();
        let mut x = [0.0f32; QK];
        #[cfg(target_arch = "x86_64")]
        if let (Level::Avx512 | Level::Avx2, Some((lo, hi, t, flip))) = (level, sym_params(ty)) {
            // W blocks at a time, one per lane (the tail padded with zero blocks, which have no
            // result), by the batched twin of `search_sym` for the level.
            macro_rules! batched {
                ($w:literal, $search:path) => {{
                    let mut xb = [0.0f32; $w * QK];
                    let mut yb = [0.0f32; $w * QK];
                    for (ib, ob) in input.chunks($w * in_blk).zip(out.chunks_mut($w * ob)) {
                        let nb = ib.len() / in_blk;
                        load_slice(src, ib, &mut xb[..nb * QK]);
                        xb[nb * QK..].fill(0.0);
                        // The RTN blocks' values (a block is a whole row of 32: the shape fits).
                        let _ = gguf::dequantize_rows(ty, ob, QK, &mut yb[..nb * QK]);
                        yb[nb * QK..].fill(0.0);
                        let (mut xt, mut yt) = ([[0.0f32; $w]; QK], [[0.0f32; $w]; QK]);
                        for b in 0..$w {
                            for j in 0..QK {
                                xt[j][b] = xb[b * QK + j];
                                yt[j][b] = yb[b * QK + j];
                            }
                        }
                        // SAFETY: `level` is clamped to what the CPU supports.
                        let f = unsafe { $search(&xt, &yt, lo, hi, t, flip) };
                        for (b, blk) in ob.chunks_exact_mut(ty.type_size()).enumerate() {
                            if f.win >> b & 1 == 1 {
                                write_block(ty, f.d[b], 0.0, |j| f.codes[j][b], blk);
                            }
                        }
                    }
                }};
            }
            // AVX-512: the data moves (transposes, RTN values, packing the winners' codes) are
            // vectorised too; they took as long as the `mse-fast` search itself.
            if level == Level::Avx512 {
                let simd_io = matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0);
                let mut xb = [0.0f32; 16 * QK];
                let mut yb = [0.0f32; 16 * QK];
                let (mut xt, mut yt) = ([[0.0f32; 16]; QK], [[0.0f32; 16]; QK]);
                for (ib, ob) in input.chunks(16 * in_blk).zip(out.chunks_mut(16 * ob)) {
                    let nb = ib.len() / in_blk;
                    load_slice(src, ib, &mut xb[..nb * QK]);
                    xb[nb * QK..].fill(0.0);
                    // SAFETY (all four calls): `level` is clamped to what the CPU supports, and
                    // `ob` holds `nb` blocks of `ty`.
                    unsafe { x86::transpose_blocks16(&xb, &mut xt) };
                    if simd_io {
                        unsafe { x86::dequant_blocks16(ty, ob, nb, &mut yt) };
                    } else {
                        let _ = gguf::dequantize_rows(ty, ob, QK, &mut yb[..nb * QK]);
                        yb[nb * QK..].fill(0.0);
                        unsafe { x86::transpose_blocks16(&yb, &mut yt) };
                    }
                    let f = if fast {
                        unsafe { x86::search_fast16(&xt, &yt, lo, hi, t, flip) }
                    } else {
                        unsafe { x86::search_sym_gguf16(&xt, &yt, lo, hi, t, flip) }
                    };
                    if simd_io {
                        unsafe { x86::write_blocks16(ty, &f, nb, ob) };
                    } else {
                        for (b, blk) in ob.chunks_exact_mut(ty.type_size()).enumerate() {
                            if f.win >> b & 1 == 1 {
                                write_block(ty, f.d[b], 0.0, |j| f.codes[j][b], blk);
                            }
                        }
                    }
                }
                return finish_stats(level, ty, src, input, out, stats);
            }
            if fast {
                batched!(8, x86::search_fast8);
            } else {
                batched!(8, x86::search_sym_gguf8);
            }
            return finish_stats(level, ty, src, input, out, stats);
        }
        for (ib, blk) in input.chunks_exact(in_blk).zip(out.chunks_exact_mut(ob)) {
            load_slice(src, ib, &mut x);
            match (fast, sym_params(ty)) {
                (true, Some((lo, hi, t, flip))) => gguf_finish(ty, &x, blk, search_sym_fast(&x, lo, hi, t, flip)),
                _ => gguf_block(level, ty, &x, blk),
            }
        }
    }
    finish_stats(level, ty, src, input, out, stats)
}

/// The error statistics of the finished bytes, when asked for.
fn finish_stats(
    level: Level,
    ty: GgmlType,
    src: SrcDtype,
    input: &[u8],
    out: &[u8],
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    if let Some(stats) = stats {
        gguf::accumulate_stats(level, ty, src, input, out, stats);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// compressed-tensors

/// [`crate::ct::quantize_rows`] with the `mse` method, at the active SIMD level: same arguments,
/// errors and layout; bytes identical at every SIMD level and thread count.
pub fn quantize_ct_rows(c: &CtChunk, out: CtOutput, stats: Option<&mut ErrorStats>) -> Result<(), QuantError> {
    quantize_ct_rows_at(simd::active_level(), c, out, stats)
}

/// [`quantize_ct_rows`] at an explicit SIMD level (clamped to what the CPU supports).
pub fn quantize_ct_rows_at(
    level: Level,
    c: &CtChunk,
    mut out: CtOutput,
    stats: Option<&mut ErrorStats>,
) -> Result<(), QuantError> {
    let level = simd::clamp(level);
    ct::quantize_rows_at(level, c, out.reborrow(), None)?;
    let g = ct::geom(c, out.packed.len(), out.scale.len())?;
    let CtChunk { scheme: ref s, src, scale_dtype, input, .. } = *c;
    let CtOutput { packed, scale, mut zp } = out;
    let ed = ct::elem_dtype(src, scale_dtype);
    let er = ed;
    let store = Store::of(scale_dtype);
    let (qmin, qmax) = (s.qmin() as f32, s.qmax() as f32);
    let bits = u32::from(s.bits);
    let mask = (1u32 << bits) - 1;
    let off = 1i32 << (bits - 1);
    let es = src.size();
    let mut x = vec![0f32; g.cols];
    let mut y = vec![0f32; g.group];
    for r in 0..g.rows {
        load_slice(src, &input[r * g.cols * es..(r + 1) * g.cols * es], &mut x);
        let prow = &mut packed[r * g.packed_cols * 4..(r + 1) * g.packed_cols * 4];
        for j in 0..g.scale_cols {
            let c0 = j * g.group;
            let xg = &x[c0..c0 + g.group];
            let si = r * g.scale_cols + j;
            let sc = ct::load_scale(scale_dtype, scale, si);
            let z = zp.as_deref().map_or(0, |zpb| ct::get_zp(s, zpb, g.scale_cols, r, j));
            for (k, o) in y.iter_mut().enumerate() {
                let c = c0 + k;
                let b = prow[c * bits as usize / 8];
                let u = (u32::from(b) >> ((c * bits as usize) % 8)) & mask;
                *o = er.round((u as i32 - off - z) as f32 * sc);
            }
            let choice = if s.symmetric {
                sym_ct(level, er, store, xg, qmin, qmax)
            } else {
                search_ct_asym(level, er, store, xg, qmin, qmax)
            };
            let Some(ch) = choice else { continue };
            if !(ch.err < block_err(xg, &y)) {
                continue;
            }
            // The chosen scale is representable in the scale dtype, so the store is exact.
            ct::store_scale(scale_dtype, scale, si, ch.d);
            let znew = (qmin - ch.lo) as i32;
            if let Some(zpb) = zp.as_deref_mut() {
                ct::set_zp(s, zpb, g.scale_cols, r, j, znew);
            }
            for (k, &v) in xg.iter().enumerate() {
                let q = ch.code(v, false) as i32 + znew;
                let c = c0 + k;
                let bi = c * bits as usize / 8;
                let sh = (c * bits as usize) % 8;
                let u = ((q + off) as u32 & mask) as u8;
                prow[bi] = (prow[bi] & !((mask as u8) << sh)) | (u << sh);
            }
        }
    }
    if let Some(stats) = stats {
        ct::accumulate_stats_of(c, &g, CtPacked { packed, scale, zp: zp.as_deref() }, stats);
    }
    Ok(())
}

/// compressed-tensors symmetric: positive scales, `mx` mapped toward `qmax` or `qmin` (`-qmin`
/// side is one code longer) like RTN's `amax / ((qmax - qmin) / 2)`.
fn sym_ct(level: Level, er: ScaleDtype, store: Store, x: &[f32], qmin: f32, qmax: f32) -> Option<Choice> {
    let mut mx = x[0];
    for &v in x {
        if v.abs() > mx.abs() {
            mx = v;
        }
    }
    // RTN maps |mx| to (qmax - qmin) / 2 with the sign of mx (scale > 0).
    let half = (qmax - qmin) / 2.0;
    let t = if mx < 0.0 { -half } else { half };
    search_sym(level, er, store, x, qmin, qmax, t, None, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: deterministic test data without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// A value from a mix of distributions, including the awkward ones.
        fn val(&mut self) -> f32 {
            let r = self.next();
            let u = (r >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            match r % 9 {
                0 => 0.0,
                1 => f32::from_bits((r >> 20) as u32 & 0x007f_ffff) * if r & 1 == 0 { 1.0 } else { -1.0 }, // subnormal
                2 => u * 1e30,
                3 => u * 1e-30,
                4 => (u * 16.0).round() * 0.25, // ties
                _ => u,
            }
        }
    }

    fn cands(rng: &mut Rng, asym: bool) -> Cands {
        let mut c = Cands::default();
        for k in 0..L {
            c.d[k] = rng.val();
            c.id[k] = if k % 5 == 0 { rng.val() * 1e35 } else { 1.0 / c.d[k].max(1e-3) };
            if !c.id[k].is_finite() {
                c.id[k] = 0.0;
            }
            c.m[k] = if asym { rng.val() } else { 0.0 };
            let z = (rng.next() % 16) as f32 - 8.0;
            c.lo[k] = -8.0 - z;
            c.hi[k] = 7.0 - z;
        }
        c
    }

    /// Every SIMD evaluation kernel equals its scalar twin bit for bit, for every mode, element
    /// rounding and block length (odd ones included).
    #[test]
    fn eval_kernels_equal_scalar_twin() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for iter in 0..400 {
            let n = [1, 7, 16, 31, 32, 33, 64, 100, 128][iter % 9];
            let x: Vec<f32> = (0..n).map(|_| rng.val()).collect();
            for asym in [false, true] {
                let c = cands(&mut rng, asym);
                for level in Level::supported() {
                    let level = simd::clamp(level);
                    macro_rules! cmp {
                        ($e:ty, $err:expr, $asym:expr) => {{
                            let mut a = Sums::default();
                            let mut b = Sums::default();
                            eval_scalar::<$e, $err, $asym>(&x, &c, &mut a);
                            eval::<$e, $err, $asym>(level, &x, &c, &mut b);
                            let bits = |s: &Sums| {
                                [s.err, s.sxu, s.suu, s.su].concat().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                            };
                            assert_eq!(bits(&a), bits(&b), "level {level:?} E {} n {n} iter {iter}", stringify!($e));
                        }};
                    }
                    if asym {
                        cmp!(crate::convert::F32, true, true);
                        cmp!(crate::convert::F32, false, true);
                    } else {
                        cmp!(crate::convert::F32, true, false);
                        cmp!(crate::convert::F16, true, false);
                        cmp!(crate::convert::Bf16, true, false);
                        cmp!(crate::convert::Bf16, false, false);
                    }
                }
            }
        }
    }

    /// The 16-block AVX-512 symmetric search equals the one-block search lane by lane (found or
    /// not, scale and error bits), for every GGUF type it serves, on blocks mixing every kind of
    /// value `Rng::val` makes (zeros, subnormals, ties, huge and tiny ranges) and all-zero /
    /// all-subnormal / constant blocks.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn batched_sym_search_equals_one_block_search() {
        if simd::clamp(Level::Avx512) != Level::Avx512 {
            eprintln!("no AVX-512 on this machine: nothing to compare");
            return;
        }
        let mut rng = Rng(0x005e_ed0f_b10c);
        for iter in 0..300 {
            let mut xs = [[0.0f32; QK]; 16];
            for (b, blk) in xs.iter_mut().enumerate() {
                let kind = (iter + b) % 7;
                let scale = [1.0f32, 1e-3, 1e4, 1e-38, 1e30, 0.02, 7.0][(iter / 7 + b) % 7];
                for v in blk.iter_mut() {
                    *v = match kind {
                        0 => 0.0,
                        1 => scale,
                        2 => f32::from_bits((rng.next() >> 41) as u32), // subnormal or zero
                        _ => rng.val() * scale,
                    };
                }
            }
            let mut xt: x86::Blocks16 = [[0.0; 16]; QK];
            for b in 0..16 {
                for j in 0..QK {
                    xt[j][b] = xs[b][j];
                }
            }
            let mut xt8: [x86::Blocks8; 2] = [[[0.0; 8]; QK]; 2];
            for b in 0..16 {
                for j in 0..QK {
                    xt8[b / 8][j][b % 8] = xs[b][j];
                }
            }
            for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
                let (lo, hi, t, flip) = sym_params(ty).unwrap();
                // The AVX2 twin on the same blocks, eight at a time: the same fields.
                for h in 0..2 {
                    // SAFETY: AVX-512 machines have AVX2 and F16C.
                    let f8 = unsafe { x86::search_sym_gguf8(&xt8[h], &[[0.0; 8]; QK], lo, hi, t, flip) };
                    let f = unsafe { x86::search_sym_gguf16(&xt, &[[0.0; 16]; QK], lo, hi, t, flip) };
                    for b in 0..8 {
                        let l = 8 * h + b;
                        assert_eq!(
                            (f8.ok >> b & 1, f8.win >> b & 1),
                            ((f.ok >> l & 1) as u8, (f.win >> l & 1) as u8),
                            "{ty} {iter} {l}"
                        );
                        if f8.ok >> b & 1 == 1 {
                            assert_eq!(
                                (f8.d[b].to_bits(), f8.err[b].to_bits()),
                                (f.d[l].to_bits(), f.err[l].to_bits()),
                                "{ty} {iter} {l}"
                            );
                        }
                        if f8.win >> b & 1 == 1 {
                            assert!((0..QK).all(|j| f8.codes[j][b] == f.codes[j][l]), "{ty} {iter} {l}");
                        }
                    }
                }
                // SAFETY: AVX-512 checked above.
                // Against all-zero "RTN" values every found block with an error below Σx² wins.
                let f = unsafe { x86::search_sym_gguf16(&xt, &[[0.0; 16]; QK], lo, hi, t, flip) };
                for b in 0..16 {
                    for level in [Level::Scalar, Level::Avx2] {
                        let want = search_sym(level, ScaleDtype::F32, Store::F16, &xs[b], lo, hi, t, flip, false);
                        let got = (f.ok >> b & 1 == 1).then_some((f.d[b].to_bits(), f.err[b].to_bits()));
                        assert_eq!(got, want.map(|c| (c.d.to_bits(), c.err.to_bits())), "{ty} iter {iter} block {b}");
                        let wins = want.is_some_and(|c| c.err < block_err(&xs[b], &[0.0; QK]));
                        assert_eq!(f.win >> b & 1 == 1, wins, "{ty} iter {iter} block {b}");
                        if let (true, Some(c)) = (wins, want) {
                            for j in 0..QK {
                                assert_eq!(
                                    f.codes[j][b],
                                    c.code(xs[b][j], false) as i32,
                                    "{ty} iter {iter} block {b} elem {j}"
                                );
                            }
                        }
                    }
                }
            }
            // `mse-fast`: both batched kernels equal the one-block search lane by lane.
            for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
                let (lo, hi, t, flip) = sym_params(ty).unwrap();
                // SAFETY: AVX-512 checked above; AVX-512 machines have AVX2 and F16C.
                let f = unsafe { x86::search_fast16(&xt, &[[0.0; 16]; QK], lo, hi, t, flip) };
                for b in 0..16 {
                    let f8 = unsafe { x86::search_fast8(&xt8[b / 8], &[[0.0; 8]; QK], lo, hi, t, flip) };
                    let l8 = b % 8;
                    let want = search_sym_fast(&xs[b], lo, hi, t, flip);
                    let wins = want.is_some_and(|c| c.err < block_err(&xs[b], &[0.0; QK]));
                    let got16 = (f.ok >> b & 1 == 1).then_some((f.d[b].to_bits(), f.err[b].to_bits()));
                    let got8 = (f8.ok >> l8 & 1 == 1).then_some((f8.d[l8].to_bits(), f8.err[l8].to_bits()));
                    let want_bits = want.map(|c| (c.d.to_bits(), c.err.to_bits()));
                    assert_eq!(got16, want_bits, "fast {ty} iter {iter} block {b}");
                    assert_eq!(got8, want_bits, "fast8 {ty} iter {iter} block {b}");
                    assert_eq!(f.win >> b & 1 == 1, wins, "fast {ty} iter {iter} block {b}");
                    assert_eq!(f8.win >> l8 & 1 == 1, wins, "fast8 {ty} iter {iter} block {b}");
                    if let (true, Some(c)) = (wins, want) {
                        for j in 0..QK {
                            let code = c.code(xs[b][j], false) as i32;
                            assert_eq!((f.codes[j][b], f8.codes[j][l8]), (code, code), "fast {ty} {iter} {b} {j}");
                        }
                    }
                }
            }
        }
    }

    /// The AVX-512 drivers' data moves equal their scalar definitions: the transpose, the RTN
    /// values (`gguf::dequantize_rows`, transposed) and the packing of the winners (`write_block`).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_block_moves_equal_scalar() {
        if simd::clamp(Level::Avx512) != Level::Avx512 {
            eprintln!("no AVX-512 on this machine: nothing to compare");
            return;
        }
        let mut rng = Rng(0x7a5e_0f16);
        for iter in 0..200 {
            let nb = 1 + iter % 16;
            let xb: [f32; 16 * QK] = std::array::from_fn(|_| rng.val());
            let mut xt: x86::Blocks16 = [[0.0; 16]; QK];
            // SAFETY: AVX-512 checked above.
            unsafe { x86::transpose_blocks16(&xb, &mut xt) };
            for b in 0..16 {
                for j in 0..QK {
                    assert_eq!(xt[j][b].to_bits(), xb[b * QK + j].to_bits(), "transpose {iter} {b} {j}");
                }
            }
            for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
                let ts = ty.type_size();
                let blk: Vec<u8> = (0..nb * ts)
                    .map(|i| if i % ts < 2 { (rng.next() % 0x7c) as u8 } else { rng.next() as u8 })
                    .collect();
                let mut want = vec![0.0f32; nb * QK];
                gguf::dequantize_rows(ty, &blk, QK, &mut want).unwrap();
                let mut yt: x86::Blocks16 = [[1.0; 16]; QK];
                // SAFETY: AVX-512 checked above; `blk` holds `nb` blocks.
                unsafe { x86::dequant_blocks16(ty, &blk, nb, &mut yt) };
                for b in 0..16 {
                    for j in 0..QK {
                        let w = if b < nb { want[b * QK + j] } else { 0.0 };
                        assert_eq!(yt[j][b].to_bits(), w.to_bits(), "{ty} dequant {iter} {b} {j}");
                    }
                }
                let (lo, hi) = if ty == GgmlType::Q4_0 { (-8, 7) } else { (-127, 127) };
                let mut f = x86::SymFound {
                    d: std::array::from_fn(|_| rng.val()),
                    err: [0.0; 16],
                    ok: 0,
                    win: rng.next() as u16,
                    codes: [[0; 16]; QK],
                };
                for j in 0..QK {
                    for b in 0..16 {
                        f.codes[j][b] = lo + (rng.next() % (hi - lo + 1) as u64) as i32;
                    }
                }
                let mut got = blk.clone();
                let mut want = blk.clone();
                // SAFETY: AVX-512 checked above; `got` holds `nb` blocks.
                unsafe { x86::write_blocks16(ty, &f, nb, &mut got) };
                for (b, o) in want.chunks_exact_mut(ts).enumerate() {
                    if f.win >> b & 1 == 1 {
                        write_block(ty, f.d[b], 0.0, |j| f.codes[j][b], o);
                    }
                }
                assert_eq!(got, want, "{ty} write {iter}");
            }
        }
    }

    /// The weight error of rtn, `mse` and `mse-fast` grids on synthetic Q4_0 blocks (gaussian,
    /// outliers, Laplace, cubed): `mse-fast`'s grid keeps nearly all of the full search's gain
    /// over rtn. With `--nocapture` it prints the figures behind [`FAST_GRID`]'s choice.
    #[test]
    fn fast_grid_experiment() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut unif = move || (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
        let nb = 20000;
        let mut blocks = Vec::new();
        for b in 0..nb {
            let kind = b % 4;
            let mut x = [0.0f32; QK];
            for v in x.iter_mut() {
                let g = unif() + unif() + unif() - 1.5;
                *v = match kind {
                    0 => g,
                    1 => g * if unif() < 1.0 / 64.0 { 8.0 } else { 1.0 },
                    2 => -(unif().max(1e-7)).ln() * if unif() < 0.5 { 1.0 } else { -1.0 },
                    _ => g * g * g,
                };
            }
            blocks.push(x);
        }
        let (lo, hi, t, flip) = sym_params(GgmlType::Q4_0).unwrap();
        let f = flip.unwrap();
        let grids: Vec<(&str, Vec<f32>)> = vec![
            ("const", (0..FAST_G + FAST_F).map(|g| fast_t(g, t, flip)).collect()),
            ("5+2", vec![t * 0.88, t * 0.94, t, t * 1.06, t * 1.12, f, f * 1.07]),
            ("rtn only", vec![t]),
            ("3+1", vec![t * 0.94, t, t * 1.06, f * 1.07]),
            ("4+2", vec![t * 0.9, t * 0.97, t * 1.04, t * 1.11, f, f * 1.07]),
            ("6+2", vec![t * 0.88, t * 0.93, t * 0.98, t * 1.03, t * 1.08, t * 1.13, f * 1.0, f * 1.07]),
            (
                "8+3",
                vec![
                    t * 0.86,
                    t * 0.9,
                    t * 0.94,
                    t * 0.98,
                    t * 1.02,
                    t * 1.06,
                    t * 1.1,
                    t * 1.14,
                    f * 0.98,
                    f * 1.04,
                    f * 1.1,
                ],
            ),
        ];
        let mut tot_rtn = [0.0f64; 4];
        let mut tot_full = [0.0f64; 4];
        let mut tot = vec![[0.0f64; 4]; grids.len()];
        let mut sig = [0.0f64; 4];
        for (b, x) in blocks.iter().enumerate() {
            let k = b % 4;
            let mut blk = [0u8; 18];
            crate::gguf::quantize_rows_at(
                Level::Scalar,
                GgmlType::Q4_0,
                SrcDtype::F32,
                bytemuck_f32(x),
                QK,
                &mut blk,
                None,
            )
            .unwrap();
            let mut y = [0.0f32; QK];
            rtn_deq(GgmlType::Q4_0, &blk, &mut y);
            let er = block_err(x, &y) as f64;
            sig[k] += x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
            tot_rtn[k] += er;
            let full = search_sym(Level::Scalar, ScaleDtype::F32, Store::F16, x, lo, hi, t, flip, false);
            tot_full[k] += full.map_or(er, |c| (c.err as f64).min(er));
            for (i, (_, ts)) in grids.iter().enumerate() {
                let c = search_sym_fast_with(x, lo, hi, ts);
                tot[i][k] += c.map_or(er, |c| (c.err as f64).min(er));
            }
        }
        let db = |e: f64, s: f64| 10.0 * (s / e).log10();
        for k in 0..4 {
            eprintln!("kind {k}: rtn {:.3} dB, full {:.3} dB", db(tot_rtn[k], sig[k]), db(tot_full[k], sig[k]));
            for (i, (name, _)) in grids.iter().enumerate() {
                eprintln!("   {name}: {:.3} dB", db(tot[i][k], sig[k]));
            }
            // The shipped grid ("const"): at least 90 % of the full search's gain over rtn.
            let (r, f, c) = (db(tot_rtn[k], sig[k]), db(tot_full[k], sig[k]), db(tot[0][k], sig[k]));
            assert!(f > r && c - r >= 0.9 * (f - r), "kind {k}: rtn {r:.3} full {f:.3} mse-fast {c:.3} dB");
        }
    }

    fn bytemuck_f32(x: &[f32]) -> &[u8] {
        // SAFETY: f32 has no padding and any byte pattern is a valid u8.
        unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len() * 4) }
    }

    /// The fast f16 paths equal the exact conversions: rounding for every 2^16-th f32 pattern
    /// plus neighbours of the bounds, steps for every finite f16 value.
    #[test]
    fn fast_f16_paths_equal_exact_ones() {
        let mut pats: Vec<u32> = (0..=u32::MAX).step_by(65_521).collect();
        for b in [0x3880_0000u32, 0x477f_e000, 0x477f_efff, 0x477f_f000, 0x3880_0000 - 1] {
            pats.extend([b.wrapping_sub(1), b, b + 1]);
        }
        for p in pats {
            for b in [p, p | 0x8000_0000] {
                let v = f32::from_bits(b);
                if v.is_finite() {
                    assert_eq!(fast_round_f16(v).to_bits(), round_f16(v).to_bits(), "{v:e}");
                }
            }
        }
        for h in 0u16..0x7c00 {
            for sign in [0u16, 0x8000] {
                let v = f16_to_f32(h | sign);
                for k in [-64, -7, -1, 1, 2, 5, 64] {
                    assert_eq!(Store::F16.step(v, k).to_bits(), Store::F16.step_exact(v, k).to_bits(), "{v:e} {k}");
                }
            }
        }
    }

    #[test]
    fn store_steps_are_monotone_and_representable() {
        for store in [Store::F16, Store::BF16, Store::F32] {
            for v in [0.013f32, -0.013, 1.0, 6.1e-5, -3.0e4] {
                let v = store.round(v);
                let up = store.step(v, 1);
                let dn = store.step(v, -1);
                assert!(up.abs() > v.abs() && dn.abs() < v.abs(), "{store:?} {v} {up} {dn}");
                assert_eq!(store.round(up), up);
                assert_eq!(store.round(dn), dn);
                assert_eq!(up.signum(), v.signum());
            }
        }
    }
}
