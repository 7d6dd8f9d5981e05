//! Per-tensor SQNR of `rtn` vs `mse` on the 2-D Linear weights of an f32 safetensors file
//! (all-MiniLM-L6-v2 in DESIGN §6), for Q8_0, Q4_0, Q4_1 and compressed-tensors int4 g128
//! sym/asym (and int8 per-channel). Prints median and worst SQNR per format × method, and the
//! number of blocks where mse changed the bytes.
//!
//! `cargo run --profile ci -p modelpack-quant --example mse_quality -- model.safetensors [FILTER]`
//! (FILTER: substring a tensor name must contain; default `encoder.`).

#![allow(missing_docs)]

use modelpack_quant::ct::{self, CtChunk, CtOutput, CtScheme, ScaleDtype, Strategy};
use modelpack_quant::gguf::{quantize_rows, GgmlType};
use modelpack_quant::metrics::ErrorStats;
use modelpack_quant::{mse, SrcDtype};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: mse_quality model.safetensors [FILTER]");
    let filter = args.get(2).map(String::as_str).unwrap_or("encoder.");
    let data = std::fs::read(path).expect("read");
    let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&data[8..8 + n]).expect("header");
    let base = 8 + n;
    let mut tensors = Vec::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" || !name.contains(filter) || !name.ends_with(".weight") {
            continue;
        }
        let shape: Vec<usize> =
            info["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        if shape.len() != 2 || info["dtype"] != "F32" {
            continue;
        }
        let off = info["data_offsets"].as_array().unwrap();
        let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
        tensors.push((name.clone(), shape, data[base + a..base + b].to_vec()));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let total: usize = tensors.iter().map(|t| t.1[0] * t.1[1]).sum();
    println!("{} tensors matching `{filter}`, {total} elements", tensors.len());
    println!(
        "| format | method | median SQNR dB | upper median (n/2) | worst SQNR dB | Melem/s per CPU-second (1 thread) |"
    );
    println!("|---|---|---|---|---|---|");
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
        for method in ["rtn", "mse"] {
            let t0 = cpu_now();
            let mut sq = Vec::new();
            for (_, shape, bytes) in &tensors {
                let mut out = vec![0u8; shape[0] * ty.row_bytes(shape[1]).unwrap()];
                let mut st = ErrorStats::new();
                if method == "rtn" {
                    quantize_rows(ty, SrcDtype::F32, bytes, shape[1], &mut out, Some(&mut st)).unwrap();
                } else {
                    mse::quantize_gguf_rows(ty, SrcDtype::F32, bytes, shape[1], &mut out, Some(&mut st)).unwrap();
                }
                sq.push(st.sqnr_db());
            }
            report(ty.name(), method, sq, cpu_now() - t0, total);
        }
    }
    let schemes = [
        ("CT int4 g128 sym", CtScheme::w4_group_sym(128)),
        ("CT int4 g128 asym", CtScheme { bits: 4, strategy: Strategy::Group(128), symmetric: false }),
        ("CT int4 g32 sym", CtScheme::w4_group_sym(32)),
        ("CT int8 channel", CtScheme::w8_channel_sym()),
    ];
    for sd in [ScaleDtype::F32, ScaleDtype::BF16, ScaleDtype::F16] {
        for (label, s) in schemes {
            for method in ["rtn", "mse"] {
                let t0 = cpu_now();
                let mut sq = Vec::new();
                for (_, shape, bytes) in &tensors {
                    let (rows, cols) = (shape[0], shape[1]);
                    let mut packed = vec![0u8; rows * s.packed_cols(cols) * 4];
                    let mut scale = vec![0u8; rows * s.scale_cols(cols).unwrap() * sd.size()];
                    let mut zp = (!s.symmetric).then(|| vec![0u8; s.zp_rows(rows) * s.scale_cols(cols).unwrap() * 4]);
                    let mut st = ErrorStats::new();
                    let f = if method == "rtn" { ct::quantize_rows } else { mse::quantize_ct_rows };
                    let c =
                        CtChunk { scheme: s, src: SrcDtype::F32, scale_dtype: sd, input: bytes, row0: 0, rows, cols };
                    f(&c, CtOutput { packed: &mut packed, scale: &mut scale, zp: zp.as_deref_mut() }, Some(&mut st))
                        .unwrap();
                    sq.push(st.sqnr_db());
                }
                report(&format!("{label} ({sd:?} scales)"), method, sq, cpu_now() - t0, total);
            }
        }
    }
}

/// CPU time of this thread in seconds (the machine is shared: wall time measures the scheduler).
fn cpu_now() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn report(fmt: &str, method: &str, mut sq: Vec<f64>, secs: f64, elems: usize) {
    sq.sort_by(f64::total_cmp);
    let med = if sq.len() % 2 == 1 { sq[sq.len() / 2] } else { (sq[sq.len() / 2 - 1] + sq[sq.len() / 2]) / 2.0 };
    let upper = sq[sq.len() / 2];
    let rate = elems as f64 / secs / 1e6;
    println!("| {fmt} | {method} | {med:.3} | {upper:.3} | {:.2} | {rate:.0} |", sq[0]);
}
