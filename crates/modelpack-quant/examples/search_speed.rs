//! Throughput of the searching quantizers (the `mse` and `mse-fast` methods, K-quants, imatrix-weighted
//! K-quants) per SIMD level, in Melem per CPU-second of one thread, so it can be read on a
//! shared machine: `cargo run --profile ci -p modelpack-quant --example search_speed [MiB] [FILTER]`
//! (FILTER: a substring of e.g. `Q4_0/mse/avx512`). Also the profiling target for `perf record`.

use modelpack_quant::gguf::{self, GgmlType};
use modelpack_quant::{imatrix, mse, Level, SrcDtype};
use std::hint::black_box;

const ROW: usize = 4096;

/// CPU time of this thread in seconds.
fn cpu_now() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Heavy-tailed bf16 weights with a few outlier columns (the bench model's shape of data).
fn input(n: usize) -> Vec<u8> {
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..n)
        .flat_map(|i| {
            let r = next();
            let g = ((r & 0xffff) as f32 + ((r >> 16) & 0xffff) as f32 + ((r >> 32) & 0xffff) as f32) / 65536.0 - 1.5;
            let tail = if (r >> 48) % 64 == 0 || i % ROW == 17 { 8.0 } else { 1.0 };
            modelpack_quant::convert::f32_to_bf16(g * 0.02 * tail).to_le_bytes()
        })
        .collect()
}

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let filter = std::env::args().nth(2);
    let n = mib * 1024 * 1024 / 2 / ROW * ROW;
    let inp = input(n);
    let weights: Vec<f32> = (0..ROW).map(|j| 0.1 + ((j * 7919) % 97) as f32 * 0.05).collect();
    let chunk_rows = 16;
    println!("| task | level | Melem per CPU-s |\n|---|---|---:|");
    for (ty, method) in [
        (GgmlType::Q4_0, "mse"),
        (GgmlType::Q4_0, "mse-fast"),
        (GgmlType::Q4_1, "mse"),
        (GgmlType::Q5_0, "mse"),
        (GgmlType::Q8_0, "mse"),
        (GgmlType::Q4_0, "rtn"),
        (GgmlType::Q4_K, "rtn"),
        (GgmlType::Q6_K, "rtn"),
        (GgmlType::Q4_K, "imatrix"),
        (GgmlType::Q6_K, "imatrix"),
    ] {
        for level in Level::supported() {
            let key = format!("{ty}/{method}/{}", level.name());
            if filter.as_ref().is_some_and(|f| !key.contains(f.as_str())) {
                continue;
            }
            let ob = ty.row_bytes(ROW).unwrap() * chunk_rows;
            let mut out = vec![0u8; ob];
            let t0 = cpu_now();
            for ic in inp.chunks(ROW * chunk_rows * 2) {
                let r = match method {
                    "mse" => mse::quantize_gguf_rows_at(level, ty, SrcDtype::BF16, ic, ROW, &mut out, None),
                    "mse-fast" => mse::quantize_gguf_rows_fast_at(level, ty, SrcDtype::BF16, ic, ROW, &mut out, None),
                    "imatrix" => {
                        imatrix::quantize_rows_weighted_at(level, ty, SrcDtype::BF16, ic, ROW, &weights, &mut out, None)
                    }
                    _ => gguf::quantize_rows_at(level, ty, SrcDtype::BF16, ic, ROW, &mut out, None),
                };
                r.unwrap();
                black_box(&out);
            }
            let dt = cpu_now() - t0;
            println!("| {ty} {method} | {} | {:.1} |", level.name(), n as f64 / dt / 1e6);
        }
    }
}
