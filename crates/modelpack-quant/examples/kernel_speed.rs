//! Contention-robust kernel throughput: the best of many timed runs (the criterion bench reports
//! means, which a shared machine inflates). `cargo run --release -p modelpack-quant --example
//! kernel_speed [MiB] [FILTER]` (FILTER: a substring of `Q8_0/bf16/avx512`) prints Gelem/s per format × source × level for a 64 KiB input and an
//! input of MiB (default 256) on one thread, and on two threads for the big input.

use modelpack_quant::gguf::{quantize_rows_at, quantize_tensor_par, GgmlType};
use modelpack_quant::{set_level, Level, SrcDtype};
use std::time::Instant;

fn input(src: SrcDtype, bytes: usize) -> Vec<u8> {
    let n = bytes / src.size();
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut out = Vec::with_capacity(bytes);
    for _ in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let v = (((s & 0xffff) + ((s >> 16) & 0xffff) + ((s >> 32) & 0xffff)) as f32 / 65536.0 - 1.5) * 0.05;
        match src {
            SrcDtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
            SrcDtype::F16 => out.extend_from_slice(&modelpack_quant::convert::f32_to_f16(v).to_le_bytes()),
            SrcDtype::BF16 => out.extend_from_slice(&modelpack_quant::convert::f32_to_bf16(v).to_le_bytes()),
        }
    }
    out
}

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut b = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        b = b.min(t.elapsed().as_secs_f64());
    }
    b
}

/// CPU time of `clock` (thread or process) in seconds: unlike wall time, it does not count the
/// time other jobs on this shared machine hold the core.
fn cpu(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Best CPU time of `reps` runs.
fn best_cpu(clock: libc::clockid_t, reps: usize, mut f: impl FnMut()) -> f64 {
    let mut b = f64::MAX;
    for _ in 0..reps {
        let t = cpu(clock);
        f();
        b = b.min(cpu(clock) - t);
    }
    b
}

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let pool2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    // Context: what memory does right now (other jobs share the machine's bandwidth).
    let a = vec![1u8; mib << 20];
    let mut b = vec![0u8; mib << 20];
    let tc = best(5, || b.copy_from_slice(std::hint::black_box(&a)));
    println!("memcpy {mib} MiB, 1 thread: {:.1} GB/s (read + write)", 2.0 * a.len() as f64 / tc / 1e9);
    drop((a, b));
    if std::env::var_os("STATS_ONLY").is_some() {
        let small = input(SrcDtype::BF16, 64 << 10);
        let n = small.len() / 2;
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let mut o = vec![0u8; ty.row_bytes(n).unwrap()];
            let t0 =
                best(500, || quantize_rows_at(Level::Avx512, ty, SrcDtype::BF16, &small, 4096, &mut o, None).unwrap());
            let t1 = best(200, || {
                let mut st = modelpack_quant::ErrorStats::new();
                quantize_rows_at(Level::Avx512, ty, SrcDtype::BF16, &small, 4096, &mut o, Some(&mut st)).unwrap()
            });
            println!(
                "{} bf16 64KiB: {:.2} Gelem/s, with stats {:.2}",
                ty.name(),
                n as f64 / t0 / 1e9,
                n as f64 / t1 / 1e9
            );
        }
        return;
    }
    println!("| format | src | level | 64 KiB 1t | {mib} MiB 1t (CPU time) | {mib} MiB 1t (wall) | {mib} MiB 2t (wall) | 2t per core (CPU time) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (src, sname) in [(SrcDtype::BF16, "bf16"), (SrcDtype::F16, "f16"), (SrcDtype::F32, "f32")] {
        let small = input(src, 64 << 10);
        let big = input(src, mib << 20);
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            for level in Level::supported() {
                let key = format!("{}/{sname}/{}", ty.name(), level.name());
                if std::env::args().nth(2).is_some_and(|f| !key.contains(&f)) {
                    continue;
                }
                let ns = small.len() / src.size();
                let nb = big.len() / src.size();
                let mut os = vec![0u8; ty.row_bytes(ns).unwrap()];
                let mut ob = vec![0u8; ty.row_bytes(nb).unwrap()];
                let reps_small = if level == Level::Scalar { 50 } else { 2000 };
                let ts = best(reps_small, || quantize_rows_at(level, ty, src, &small, 4096, &mut os, None).unwrap());
                let reps_big = if level == Level::Scalar { 2 } else { 5 };
                set_level(level);
                let c1 = best_cpu(libc::CLOCK_THREAD_CPUTIME_ID, reps_big, || {
                    quantize_rows_at(level, ty, src, &big, 4096, &mut ob, None).unwrap()
                });
                let w1 = best(reps_big, || quantize_rows_at(level, ty, src, &big, 4096, &mut ob, None).unwrap());
                let w2 = best(reps_big, || {
                    pool2.install(|| quantize_tensor_par(ty, src, &big, 4096, &mut ob, None).unwrap())
                });
                let c2 = best_cpu(libc::CLOCK_PROCESS_CPUTIME_ID, reps_big, || {
                    pool2.install(|| quantize_tensor_par(ty, src, &big, 4096, &mut ob, None).unwrap())
                });
                let g = |n: usize, t: f64| n as f64 / t / 1e9;
                println!(
                    "| {} | {sname} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    ty.name(),
                    level.name(),
                    g(ns, ts),
                    g(nb, c1),
                    g(nb, w1),
                    g(nb, w2),
                    g(nb, c2),
                );
            }
        }
    }
}
