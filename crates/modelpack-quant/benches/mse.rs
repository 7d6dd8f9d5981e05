//! `--method mse` kernel throughput (Gelem/s on one thread) per format × SIMD level, with the RTN
//! kernel of the same format beside it. Input: 1 Mi bf16 elements (rows of 4096) of
//! heavy-tailed synthetic weights, in cache-friendly chunks of 64 rows as the pipeline feeds them.
//!
//! `cargo bench -p modelpack-quant --bench mse` (filter e.g. `-- 'Q4_0/mse/avx2'`).

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use modelpack_quant::ct::{self, CtChunk, CtOutput, CtScheme, ScaleDtype, Strategy};
use modelpack_quant::gguf::{self, GgmlType};
use modelpack_quant::{mse, Level, SrcDtype};
use std::hint::black_box;
use std::time::Duration;

const ROW: usize = 4096;
const ROWS: usize = 256;
const CHUNK_ROWS: usize = 16;

/// Heavy-tailed (Gaussian times a random magnitude) bf16 weights.
fn input() -> Vec<u8> {
    let mut s = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..ROW * ROWS)
        .flat_map(|_| {
            let r = next();
            let g = ((r & 0xffff) as f32 + ((r >> 16) & 0xffff) as f32 + ((r >> 32) & 0xffff) as f32) / 65536.0 - 1.5;
            let tail = if (r >> 48) % 64 == 0 { 8.0 } else { 1.0 };
            modelpack_quant::convert::f32_to_bf16(g * 0.02 * tail).to_le_bytes()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let inp = input();
    let n = ROW * ROWS;
    let in_chunk = ROW * CHUNK_ROWS * 2;
    let mut g = c.benchmark_group("mse");
    g.throughput(Throughput::Elements(n as u64)).sample_size(10).measurement_time(Duration::from_secs(3));
    for level in Level::supported() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let ob = ty.row_bytes(ROW).unwrap() * CHUNK_ROWS;
            let mut out = vec![0u8; ob];
            for method in ["rtn", "mse"] {
                g.bench_function(format!("{ty}/{method}/{}", level.name()), |b| {
                    b.iter(|| {
                        for ic in inp.chunks(in_chunk) {
                            if method == "mse" {
                                mse::quantize_gguf_rows_at(level, ty, SrcDtype::BF16, ic, ROW, &mut out, None).unwrap();
                            } else {
                                gguf::quantize_rows_at(level, ty, SrcDtype::BF16, ic, ROW, &mut out, None).unwrap();
                            }
                        }
                        black_box(&out);
                    })
                });
            }
        }
        for (name, s) in [
            ("ct-int4-g128-sym", CtScheme::w4_group_sym(128)),
            ("ct-int4-g128-asym", CtScheme { bits: 4, strategy: Strategy::Group(128), symmetric: false }),
            ("ct-int8-channel", CtScheme::w8_channel_sym()),
        ] {
            let sd = ScaleDtype::BF16;
            let sc = s.scale_cols(ROW).unwrap();
            let mut p = vec![0u8; CHUNK_ROWS * s.packed_cols(ROW) * 4];
            let mut scale = vec![0u8; CHUNK_ROWS * sc * sd.size()];
            let mut zp = (!s.symmetric).then(|| vec![0u8; s.zp_rows(CHUNK_ROWS) * sc * 4]);
            for method in ["rtn", "mse"] {
                g.bench_function(format!("{name}/{method}/{}", level.name()), |b| {
                    b.iter(|| {
                        for ic in inp.chunks(in_chunk) {
                            let f = if method == "mse" { mse::quantize_ct_rows_at } else { ct::quantize_rows_at };
                            let c = CtChunk {
                                scheme: s,
                                src: SrcDtype::BF16,
                                scale_dtype: sd,
                                input: ic,
                                row0: 0,
                                rows: CHUNK_ROWS,
                                cols: ROW,
                            };
                            f(level, &c, CtOutput { packed: &mut p, scale: &mut scale, zp: zp.as_deref_mut() }, None)
                                .unwrap();
                        }
                        black_box(&p);
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
