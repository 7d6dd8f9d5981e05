//! Where an FP8 → GGUF conversion spends its CPU next to the same values from bf16, per element:
//! the quantizer alone (bf16 in), the FP8 decode alone, and the FP8 paths (decode into a small
//! f32 buffer then quantize, or the fused kernel). Best thread CPU time of several runs over an
//! out-of-cache weight (default 256 Mi elements of 4096 columns, 128×128 E4M3 scale blocks),
//! walked in 1 Mi-element tasks as the cpu pipeline does.
//!
//! `cargo run --profile ci -p modelpack-quant --example fp8_speed [Mi-elements] [reps]`

use modelpack_quant::fp8::{dequantize_rows_at, quantize_gguf_rows_at, table, Fp8Format, Fp8Layout, Fp8Scales};
use modelpack_quant::gguf::{quantize_rows_at, GgmlType};
use modelpack_quant::{ErrorStats, Level, SrcDtype};

const COLS: usize = 4096;
const TASK: usize = 1 << 20;

/// CPU time of this thread in seconds (other jobs on the shared machine do not count).
fn cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut b = f64::MAX;
    for _ in 0..reps {
        let t = cpu();
        f();
        b = b.min(cpu() - t);
    }
    b
}

fn main() {
    let mi: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let reps: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let n = mi << 20;
    let rows = n / COLS;
    let l = Fp8Layout { rows, cols: COLS, block_rows: 128, block_cols: 128 };
    let nsc = l.scale_rows() * l.scale_cols();
    // Gaussian-ish codes (no NaN) and scales around 1e-3, as a DeepSeek-V3 weight looks.
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let codes: Vec<u8> = (0..n)
        .map(|_| {
            let r = next();
            let mag = ((r & 0x3f) + ((r >> 8) & 0x1f)) as u8; // 0..=94: exponents up to 11
            mag | ((r >> 16) as u8 & 0x80)
        })
        .collect();
    let scales: Vec<f32> = (0..nsc).map(|_| (1 + next() % 1000) as f32 * 2e-6).collect();
    let sb: Vec<u8> = scales.iter().flat_map(|v| v.to_le_bytes()).collect();
    let sc = Fp8Scales { bytes: &sb, dtype: SrcDtype::F32 };
    // The same values in bf16 (FP8 × scale rounded to bf16): what the bf16 twin holds.
    let t = table(Fp8Format::E4M3);
    let bf: Vec<u8> = codes
        .iter()
        .enumerate()
        .flat_map(|(i, &c)| {
            let v = t[c as usize] * scales[(i / COLS / 128) * l.scale_cols() + (i % COLS) / 128];
            modelpack_quant::convert::f32_to_bf16(v).to_le_bytes()
        })
        .collect();
    let level = Level::supported().into_iter().last().unwrap();
    println!("{mi} Mi elements, {COLS} columns, level {}, best of {reps} (thread CPU ns/element)", level.name());
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
        let rb = ty.row_bytes(COLS).unwrap();
        let mut out = vec![0u8; rows * rb];
        for stats in [false, true] {
            let per = |t: f64| t / n as f64 * 1e9;
            let task_rows = TASK / COLS;
            let bf16 = best(reps, || {
                let mut st = ErrorStats::new();
                for r0 in (0..rows).step_by(task_rows) {
                    let r1 = (r0 + task_rows).min(rows);
                    let o = &mut out[r0 * rb..r1 * rb];
                    let x = &bf[r0 * COLS * 2..r1 * COLS * 2];
                    quantize_rows_at(level, ty, SrcDtype::BF16, x, COLS, o, stats.then_some(&mut st)).unwrap();
                }
            });
            let mut buf = vec![0f32; TASK];
            let decode_only = best(reps, || {
                for r0 in (0..rows).step_by(4) {
                    let c = &codes[r0 * COLS..(r0 + 4) * COLS];
                    dequantize_rows_at(level, Fp8Format::E4M3, c, sc, &l, r0, &mut buf[..4 * COLS]).unwrap();
                }
            });
            let mut two_step = |sub_rows: usize| {
                best(reps, || {
                    let mut st = ErrorStats::new();
                    for r0 in (0..rows).step_by(sub_rows) {
                        let r1 = (r0 + sub_rows).min(rows);
                        let k = r1 - r0;
                        let d = &mut buf[..k * COLS];
                        dequantize_rows_at(level, Fp8Format::E4M3, &codes[r0 * COLS..r1 * COLS], sc, &l, r0, d)
                            .unwrap();
                        let o = &mut out[r0 * rb..r1 * rb];
                        let x = modelpack_quant::fp8::f32_bytes(d);
                        quantize_rows_at(level, ty, SrcDtype::F32, x, COLS, o, stats.then_some(&mut st)).unwrap();
                    }
                })
            };
            let sub4 = two_step(4);
            let sub1 = two_step(1);
            let want = out.clone();
            let fused = best(reps, || {
                let mut st = ErrorStats::new();
                for r0 in (0..rows).step_by(task_rows) {
                    let r1 = (r0 + task_rows).min(rows);
                    let o = &mut out[r0 * rb..r1 * rb];
                    let c = &codes[r0 * COLS..r1 * COLS];
                    let done =
                        quantize_gguf_rows_at(level, ty, Fp8Format::E4M3, c, sc, &l, r0, o, stats.then_some(&mut st))
                            .unwrap();
                    assert!(done);
                }
            });
            let same = out == want;
            println!(
                "{} stats={stats}: bf16 {:.3} | fp8 decode only {:.3} | fp8 decode+quantize 4 rows {:.3}, 1 row {:.3} | fused {:.3} (fused bytes = two-step bytes: {same})",
                ty.name(),
                per(bf16),
                per(decode_only),
                per(sub4),
                per(sub1),
                per(fused),
            );
        }
    }
}
