//! Manual throughput probe (ignored by default): quantize `CT_SPEED_MIB` MiB (default 256) of bf16
//! with int4 g128 symmetric at the level named by `MODELPACK_SIMD` (default: best), `CT_SPEED_REPS`
//! times, and print the best run's elements per second (best-of, to see through a busy shared
//! machine): `MODELPACK_SIMD=avx512 cargo test --release -p modelpack-quant --test
//! ct_speed -- --ignored --nocapture`. `CT_SPEED_STATS=1` adds the error-statistics pass.

use modelpack_quant::ct::{quantize_rows, CtChunk, CtOutput, CtScheme, ScaleDtype};
use modelpack_quant::{active_level, SrcDtype};
use std::time::Instant;

#[test]
#[ignore = "manual benchmark"]
fn ct_speed() {
    let mib: usize = std::env::var("CT_SPEED_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let reps: usize = std::env::var("CT_SPEED_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let cols = 4096;
    let n = (mib << 20) / 2;
    let rows = n / cols;
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let input: Vec<u8> = (0..rows * cols)
        .flat_map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
            half::bf16::from_f32(v).to_le_bytes()
        })
        .collect();
    let sch = CtScheme::w4_group_sym(128);
    let mut packed = vec![0u8; rows * sch.packed_cols(cols) * 4];
    let mut scale = vec![0u8; rows * sch.scale_cols(cols).unwrap() * 2];
    // CT_SPEED_STATS=1 also accumulates error statistics (a separate scalar pass).
    let with_stats = std::env::var_os("CT_SPEED_STATS").is_some();
    let mut stats = modelpack_quant::ErrorStats::new();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        quantize_rows(
            &CtChunk {
                scheme: sch,
                src: SrcDtype::BF16,
                scale_dtype: ScaleDtype::BF16,
                input: &input,
                row0: 0,
                rows,
                cols,
            },
            CtOutput { packed: &mut packed, scale: &mut scale, zp: None },
            with_stats.then_some(&mut stats),
        )
        .unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{:?}: {} elements, best of {reps}: {best:.4} s = {:.3} Gelem/s",
        active_level(),
        rows * cols,
        (rows * cols) as f64 / best / 1e9
    );
}
