//! compressed-tensors kernel throughput: Gelem/s per scheme × source dtype × SIMD level, in cache
//! (64 KiB of input) and out of cache (256 MiB), on 1 thread (`ct::quantize_rows_at`) and 2
//! threads (`ct::quantize_tensor_par` on a 2-thread rayon pool).
//!
//! `cargo bench -p modelpack-quant --bench ct` (filter with a criterion regex, e.g.
//! `-- 'w4_g128_sym/bf16/256MiB/avx512'`). `MODELPACK_BENCH_QUICK=1` skips the 256 MiB sizes.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use modelpack_quant::ct::{quantize_rows_at, quantize_tensor_par, CtChunk, CtOutput, CtScheme, ScaleDtype, Strategy};
use modelpack_quant::{set_level, Level, SrcDtype};
use std::hint::black_box;
use std::time::Duration;

const COLS: usize = 4096;

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
            SrcDtype::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
            SrcDtype::BF16 => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
        }
    }
    out
}

fn kernels(c: &mut Criterion) {
    let quick = std::env::var_os("MODELPACK_BENCH_QUICK").is_some();
    let pool2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let schemes = [
        ("w4_g128_sym", CtScheme::w4_group_sym(128)),
        ("w4_g128_asym", CtScheme { bits: 4, strategy: Strategy::Group(128), symmetric: false }),
        ("w4_g32_sym", CtScheme::w4_group_sym(32)),
        ("w8_channel_sym", CtScheme::w8_channel_sym()),
    ];
    let mut sizes = vec![("64KiB", 64usize << 10)];
    if !quick {
        sizes.push(("256MiB", 256 << 20));
    }
    for (size_name, bytes) in sizes {
        for (src, sname) in [(SrcDtype::BF16, "bf16"), (SrcDtype::F16, "f16"), (SrcDtype::F32, "f32")] {
            let inp = input(src, bytes);
            let n = inp.len() / src.size();
            let rows = n / COLS;
            let big = bytes > (1 << 20);
            let sd = ScaleDtype::for_source(src);
            for (name, s) in schemes {
                let sc = s.scale_cols(COLS).unwrap();
                let mut packed = vec![0u8; rows * s.packed_cols(COLS) * 4];
                let mut scale = vec![0u8; rows * sc * sd.size()];
                let mut zp = (!s.symmetric).then(|| vec![0u8; s.zp_rows(rows) * sc * 4]);
                let mut g = c.benchmark_group(format!("{name}/{sname}/{size_name}"));
                g.throughput(Throughput::Elements(n as u64));
                if big {
                    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
                } else {
                    g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
                }
                for level in Level::supported() {
                    g.bench_function(BenchmarkId::new(level.name(), "1t"), |b| {
                        b.iter(|| {
                            quantize_rows_at(
                                level,
                                &CtChunk {
                                    scheme: s,
                                    src,
                                    scale_dtype: sd,
                                    input: black_box(&inp),
                                    row0: 0,
                                    rows,
                                    cols: COLS,
                                },
                                CtOutput { packed: &mut packed, scale: &mut scale, zp: zp.as_deref_mut() },
                                None,
                            )
                            .unwrap()
                        })
                    });
                    if big {
                        set_level(level);
                        g.bench_function(BenchmarkId::new(level.name(), "2t"), |b| {
                            b.iter(|| {
                                pool2.install(|| {
                                    quantize_tensor_par(
                                        &CtChunk {
                                            scheme: s,
                                            src,
                                            scale_dtype: sd,
                                            input: black_box(&inp),
                                            row0: 0,
                                            rows,
                                            cols: COLS,
                                        },
                                        CtOutput { packed: &mut packed, scale: &mut scale, zp: zp.as_deref_mut() },
                                        None,
                                    )
                                    .unwrap()
                                })
                            })
                        });
                    }
                }
                g.finish();
            }
        }
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
