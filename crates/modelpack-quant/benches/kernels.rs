//! GGUF kernel throughput: Gelem/s per format × source dtype × SIMD level, in cache (64 KiB of
//! input) and out of cache (256 MiB of input), on 1 thread (`quantize_rows_at`) and 2 threads
//! (`quantize_tensor_par` on a 2-thread rayon pool).
//!
//! `cargo bench -p modelpack-quant --bench kernels` (filter with a criterion regex, e.g.
//! `-- 'Q8_0/bf16/avx512'`). `MODELPACK_BENCH_QUICK=1` skips the 256 MiB sizes.

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

fn kernels(c: &mut Criterion) {
    let quick = std::env::var_os("MODELPACK_BENCH_QUICK").is_some();
    let pool2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut sizes = vec![("64KiB", 64usize << 10)];
    if !quick {
        sizes.push(("256MiB", 256 << 20));
    }
    for (size_name, bytes) in sizes {
        for (src, sname) in [(SrcDtype::BF16, "bf16"), (SrcDtype::F16, "f16"), (SrcDtype::F32, "f32")] {
            let inp = input(src, bytes);
            let n = inp.len() / src.size();
            let big = bytes > (1 << 20);
            for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
                let mut out = vec![0u8; ty.row_bytes(n).unwrap()];
                let mut g = c.benchmark_group(format!("{}/{sname}/{size_name}", ty.name()));
                g.throughput(Throughput::Elements(n as u64));
                if big {
                    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
                } else {
                    g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
                }
                for level in Level::supported() {
                    g.bench_function(BenchmarkId::new(level.name(), "1t"), |b| {
                        b.iter(|| quantize_rows_at(level, ty, src, black_box(&inp), ROW, &mut out, None).unwrap())
                    });
                    set_level(level);
                    g.bench_function(BenchmarkId::new(level.name(), "2t"), |b| {
                        b.iter(|| {
                            pool2
                                .install(|| quantize_tensor_par(ty, src, black_box(&inp), ROW, &mut out, None).unwrap())
                        })
                    });
                }
                g.finish();
            }
        }
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
