//! K-quant throughput (Q4_K, Q6_K): Gelem/s per source dtype × SIMD level, on 1 thread
//! (`quantize_rows_at`, 4 MiB of bf16 input) and on a 2-thread rayon pool (`quantize_tensor_par`).
//!
//! `cargo bench -p modelpack-quant --bench kquants` (filter with a criterion regex, e.g.
//! `-- 'Q4_K/bf16'`). The reference point is llama.cpp's `quantize_row_q4_K_ref`, which
//! `llama-quantize` runs at about 0.05 GB/s of f16 input on this machine's 2 threads
//! (0.025 Gelem/s).

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use modelpack_quant::gguf::{quantize_rows_at, quantize_tensor_par, GgmlType};
use modelpack_quant::{set_level, Level, SrcDtype};
use std::hint::black_box;
use std::time::Duration;

const ROW: usize = 4096;

/// Deterministic Gaussian-ish input (sum of uniforms) encoded as `src`, `bytes` long.
fn input(src: SrcDtype, bytes: usize) -> Vec<u8> {
    let n = bytes / src.size();
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut out = Vec::with_capacity(bytes);
    for _ in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let u = ((s & 0xffff) as f32 + ((s >> 16) & 0xffff) as f32 + ((s >> 32) & 0xffff) as f32) / 65536.0 - 1.5;
        let v = u * 0.05;
        match src {
            SrcDtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
            SrcDtype::F16 => out.extend_from_slice(&modelpack_quant::convert::f32_to_f16(v).to_le_bytes()),
            SrcDtype::BF16 => out.extend_from_slice(&modelpack_quant::convert::f32_to_bf16(v).to_le_bytes()),
        }
    }
    out
}

fn kquants(c: &mut Criterion) {
    let pool2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for (src, sname) in [(SrcDtype::BF16, "bf16"), (SrcDtype::F16, "f16"), (SrcDtype::F32, "f32")] {
        let inp = input(src, 4 << 20);
        let n = inp.len() / src.size();
        for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
            let mut out = vec![0u8; ty.row_bytes(n).unwrap()];
            let mut g = c.benchmark_group(format!("{}/{sname}", ty.name()));
            g.throughput(Throughput::Elements(n as u64));
            g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
            for level in Level::supported() {
                g.bench_function(BenchmarkId::new("1thread", level.name()), |b| {
                    b.iter(|| quantize_rows_at(level, ty, src, black_box(&inp), ROW, &mut out, None).unwrap())
                });
            }
            let best = *Level::supported().last().unwrap();
            set_level(best);
            g.bench_function(BenchmarkId::new("2threads", best.name()), |b| {
                b.iter(|| pool2.install(|| quantize_tensor_par(ty, src, black_box(&inp), ROW, &mut out, None).unwrap()))
            });
            g.finish();
        }
    }
}

criterion_group!(benches, kquants);
criterion_main!(benches);
