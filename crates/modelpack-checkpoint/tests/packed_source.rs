//! pack-quantized checkpoints written by compressed-tensors 0.20 itself
//! (`fixtures/compressed-tensors/w4a16_g128_sym`, `w8a16_channel_sym`) read as a source: every
//! virtual `P.weight` decodes, at every SIMD level, to exactly the library's codes (`P.q` in
//! `expected_q_and_dequant.safetensors`) times the scale in f32, which rounded to bf16 is the
//! library's own `dequantize` output (`P.deq`); the int4 Q4_0 repack holds exactly those codes
//! and scales.

use modelpack_checkpoint::packed::PackedMap;
use modelpack_checkpoint::{Checkpoint, Shard};
use modelpack_quant::packed::{dequantize_rows_at, q4_0_from_int4_row, Q4_0_BLOCK_BYTES};
use modelpack_quant::Level;
use std::path::PathBuf;

fn fixture(v: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/compressed-tensors").join(v)
}

#[test]
fn decode_equals_the_library_dequantize() {
    for (v, bits, group) in [("w4a16_g128_sym", 4, 128), ("w8a16_channel_sym", 8, 0)] {
        let ck = Checkpoint::open(&fixture(v)).unwrap();
        let map = PackedMap::of(&ck).unwrap();
        assert_eq!(map.len(), 7, "{v}");
        let exp = Shard::open(&fixture(v).join("expected_q_and_dequant.safetensors")).unwrap();
        let expected: std::collections::BTreeMap<String, Vec<u8>> =
            exp.tensors(0).map(|t| (t.name.to_string(), t.data.to_vec())).collect();
        for (name, [rows, cols]) in map.virtual_weights() {
            let w = map.get(name).unwrap();
            assert_eq!(w.layout.bits, bits);
            assert_eq!(w.layout.group, if group == 0 { cols } else { group });
            let m = name.strip_suffix(".weight").unwrap();
            let deq = &expected[&format!("{m}.deq")];
            // The library made `deq` by fake-quantizing the dense weight, which leaves -0.0 where a
            // small negative weight rounds to code 0; packed integer codes have no sign of zero.
            let want: Vec<u16> = deq
                .chunks_exact(2)
                .map(|c| match u16::from_le_bytes([c[0], c[1]]) {
                    0x8000 => 0,
                    b => b,
                })
                .collect();
            assert_eq!(want.len(), rows * cols);
            let (t, l) = map.tensors(&ck, name).unwrap();
            for level in Level::supported() {
                let mut out = vec![0.0f32; rows * cols];
                dequantize_rows_at(level, t, &l, 0, &mut out).unwrap();
                // Our value is the exact f32 product; the library computes in bf16, i.e. rounds it.
                let got: Vec<u16> = out.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
                if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
                    panic!(
                        "{v} {name} {level:?}: element {i}: decoded {} (bf16 {:#06x}), library {:#06x}",
                        out[i], got[i], want[i]
                    );
                }
                // And it is exactly the library's codes times the scale.
                let q = &expected[&format!("{m}.q")];
                for (i, &x) in out.iter().enumerate() {
                    let s = modelpack_quant::convert::load(
                        t.scale_dtype,
                        t.scales,
                        (i / cols) * l.groups() + (i % cols) / l.group,
                    );
                    assert_eq!(x.to_bits(), ((q[i] as i8) as f32 * s).to_bits(), "{name} element {i}");
                }
            }
            if bits == 4 {
                // Q4_0 repack: exactly the library's codes times the group scale.
                let q = &expected[&format!("{m}.q")];
                for r in 0..rows {
                    let mut blocks = vec![0u8; cols / 32 * Q4_0_BLOCK_BYTES];
                    let fallback = q4_0_from_int4_row(t, &l, r, &mut blocks).unwrap();
                    assert!(fallback.is_empty(), "{name} row {r}: bf16 scales in f16's range are f16 values");
                    for (b, blk) in blocks.chunks_exact(Q4_0_BLOCK_BYTES).enumerate() {
                        let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                        let s =
                            modelpack_quant::convert::load(t.scale_dtype, t.scales, r * l.groups() + b * 32 / l.group);
                        assert_eq!(d.to_bits(), s.to_bits());
                        for j in 0..32 {
                            let nib = if j < 16 { blk[2 + j] & 15 } else { blk[2 + j - 16] >> 4 };
                            let code = q[r * cols + 32 * b + j] as i8;
                            assert_eq!(nib as i32 - 8, code as i32, "{name} row {r} block {b} element {j}");
                        }
                    }
                }
            }
        }
    }
}
