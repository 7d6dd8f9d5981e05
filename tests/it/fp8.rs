//! FP8 sources (issue 15): the torch-made FP8 tiny-llama variants of `fixtures/fp8/`
//! (`xtask/py/make_fp8_fixtures.py`) through both targets, judged by torch's own dequantization
//! (`*.dequant.safetensors`: `w.float() * scale`, the scale repeated per block and cropped, as
//! llama.cpp's `dequant_model` does) fed to the external quantizers: `gguf.quants.quantize` for
//! the cpu target's Q8_0/Q4_0 bytes, the compressed-tensors reference (through
//! `xtask/py/ct_scale_dtype_check.py`) for the cuda target's codes and scales. Bad FP8 input is
//! an input error (exit 2) naming the tensor, with no package left behind.

use crate::common;
use std::path::{Path, PathBuf};

const CPU_JUDGE: &str = r#"
import sys, json, re, numpy as np, gguf
from safetensors.numpy import load_file
gg, deq, typ = sys.argv[1], load_file(sys.argv[2]), sys.argv[3]
cfg = json.load(open(sys.argv[4]))
r = gguf.GGUFReader(gg)
got = {t.name: t for t in r.tensors}
tm = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
def permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
bad, n = [], 0
for k, w in deq.items():
    w = w.astype(np.float32)
    if k.endswith("q_proj.weight"): w = permute(w, cfg["num_attention_heads"])
    if k.endswith("k_proj.weight"): w = permute(w, cfg["num_key_value_heads"])
    name = tm.get_name(k, try_suffixes=(".weight",))
    t = got[name]
    if t.tensor_type.name != typ: bad.append(f"type {name} {t.tensor_type.name}"); continue
    ref = gguf.quants.quantize(w, gguf.GGMLQuantizationType[typ])
    if ref.tobytes() != np.asarray(t.data).tobytes(): bad.append(f"bytes {name}")
    n += 1
extra = [t for t in got if "scale" in t]
print(json.dumps({"checked": n, "bad": bad, "extra": extra}))
"#;

fn fixture(name: &str) -> PathBuf {
    common::fixture(&format!("fp8/{name}"))
}

#[test]
fn cpu_fp8_block_and_channel_scales_match_the_reference_dequant() {
    let Some(py) = common::python() else { return };
    for variant in ["tiny-llama-fp8", "tiny-llama-fp8-ct"] {
        for (args, typ) in [(&["--scheme", "int8"][..], "Q8_0"), (&["--scheme", "int4", "--method", "rtn"][..], "Q4_0")]
        {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("pkg");
            let rep = common::quantize(&fixture(variant), &out, &[&["--target", "cpu"], args].concat());
            let tensors = rep["tensors"].as_array().unwrap();
            let fp8 = tensors.iter().filter(|t| t["dtype_in"] == "F8_E4M3").count();
            assert_eq!(fp8, 14, "{variant}: every Linear read as FP8: {rep}");
            let deq = fixture(&format!("{variant}.dequant.safetensors"));
            let cfg = fixture(variant).join("config.json");
            let o = common::run_python(
                &py,
                CPU_JUDGE,
                &[out.join("model.gguf").as_os_str(), deq.as_os_str(), typ.as_ref(), cfg.as_os_str()],
            );
            let v: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
            assert_eq!(v["checked"], 14, "{variant} {typ}: {o}");
            assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{variant} {typ}: {o}");
            assert_eq!(v["extra"].as_array().unwrap().len(), 0, "{variant} {typ}: scale tensors written: {o}");
        }
    }
}

/// The dequantized weights as a dense f32 checkpoint (the reference's input).
fn dense_dir(variant: &str, dir: &Path) -> PathBuf {
    let d = dir.join("dense");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(fixture(&format!("{variant}.dequant.safetensors")), d.join("model.safetensors")).unwrap();
    d
}

#[test]
fn cuda_fp8_is_requantized_and_codes_match_the_reference() {
    let Some(py) = common::python() else { return };
    let Some(reference) = common::ct_reference() else { return };
    let script = common::root().join("xtask/py/ct_scale_dtype_check.py");
    for variant in ["tiny-llama-fp8", "tiny-llama-fp8-ct"] {
        for args in [&["--scheme", "int4", "--group-size", "32", "--method", "rtn"][..], &["--scheme", "int8"][..]] {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("pkg");
            // No --force-requantize: FP8 → int is allowed, and said so per module.
            let rep = common::quantize(&fixture(variant), &out, &[&["--target", "cuda"], args].concat());
            let notes: Vec<&serde_json::Value> =
                rep["tensors"].as_array().unwrap().iter().filter(|t| t["dtype_in"] == "F8_E4M3").collect();
            assert_eq!(notes.len(), 14, "{rep}");
            assert!(notes.iter().all(|t| t["note"].as_str().unwrap().contains("re-quantized from FP8")), "{rep}");
            let cfg: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
            let qc = &cfg["quantization_config"];
            assert_eq!(qc["quant_method"], "compressed-tensors", "{qc}");
            assert_eq!(qc["format"], "pack-quantized", "{qc}");
            let st = std::fs::read(out.join("model.safetensors")).unwrap();
            let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
            let hdr = std::str::from_utf8(&st[8..8 + n]).unwrap();
            assert!(!hdr.contains("_scale_inv") && !hdr.contains("F8_"), "FP8 leftovers: {hdr}");
            let dense = dense_dir(variant, tmp.path());
            let o = std::process::Command::new(&py)
                .arg(&script)
                .arg(&reference)
                .arg(&dense)
                .arg(&out)
                .arg("BF16")
                .output()
                .unwrap();
            let so = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{variant} {args:?}: {so}{}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_str(so.trim()).unwrap();
            assert_eq!(v["modules"], 14, "{so}");
        }
    }
}

/// Copy a fixture checkpoint, let `edit` change it, and require `quantize` to fail with exit 2,
/// a message containing `want`, and no package.
fn refuses(variant: &str, target: &str, edit: impl Fn(&Path), want: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for e in std::fs::read_dir(fixture(variant)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), src.join(e.file_name())).unwrap();
    }
    edit(&src);
    common::assert_refused(&src, target, want, variant);
}

/// Byte range of tensor `name`'s data in a safetensors file.
fn data_range(bytes: &[u8], name: &str) -> std::ops::Range<usize> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let o = &h[name]["data_offsets"];
    8 + n + o[0].as_u64().unwrap() as usize..8 + n + o[1].as_u64().unwrap() as usize
}

/// Replace `from` by `to` (same length) in the safetensors header.
fn rename_in_header(dir: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let p = dir.join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h = String::from_utf8(b[8..8 + n].to_vec()).unwrap().replace(&format!("\"{from}\""), &format!("\"{to}\""));
    b[8..8 + n].copy_from_slice(h.as_bytes());
    std::fs::write(&p, b).unwrap();
}

const Q: &str = "model.layers.0.self_attn.q_proj.weight";

#[test]
fn bad_fp8_input_is_refused_naming_the_tensor() {
    for target in ["cpu", "cuda"] {
        refuses(
            "tiny-llama-fp8",
            target,
            |d| common::edit_config(d, |c| drop(c.as_object_mut().unwrap().remove("quantization_config"))),
            "has no quantization_config",
        );
        refuses(
            "tiny-llama-fp8",
            target,
            |d| common::edit_config(d, |c| c["quantization_config"]["fmt"] = "e9m9".into()),
            "fmt \"e9m9\"",
        );
        // 64x64 blocks: down_proj [64, 192] needs a [1, 3] scale, the file has [2, 5].
        refuses(
            "tiny-llama-fp8",
            target,
            |d| common::edit_config(d, |c| c["quantization_config"]["weight_block_size"] = serde_json::json!([64, 64])),
            "`model.layers.0.mlp.down_proj.weight_scale_inv` has shape [2, 5] but 64x64 blocks",
        );
        refuses(
            "tiny-llama-fp8",
            target,
            |d| rename_in_header(d, &format!("{Q}_scale_inv"), &format!("{Q}_scale_inx")),
            &format!("`{Q}`: FP8 weight without its scale tensor"),
        );
        refuses(
            "tiny-llama-fp8-ct",
            target,
            |d| {
                common::edit_config(d, |c| {
                    c["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "tensor".into()
                })
            },
            "is not one per tensor (strategy \"tensor\")",
        );
        refuses(
            "tiny-llama-fp8",
            target,
            |d| {
                let p = d.join("model.safetensors");
                let mut b = std::fs::read(&p).unwrap();
                let r = data_range(&b, "model.layers.1.mlp.down_proj.weight");
                b[r.start + 100] = 0xff; // e4m3fn NaN
                std::fs::write(&p, b).unwrap();
            },
            "model.layers.1.mlp.down_proj.weight",
        );
    }
}

/// The FP8 checkpoint with torch's dequantized Linear weights (F32) spliced in over the FP8 ones
/// and their scales, the other tensors' bytes copied, and no `quantization_config`: what a user
/// would get by dequantizing with torch first. Written from the raw safetensors layout.
const SPLICE: &str = r#"
import sys, json, struct, os
def read(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return h, b[8 + n:]
src, deq, out = sys.argv[1], sys.argv[2], sys.argv[3]
h, data = read(os.path.join(src, "model.safetensors")); dh, dd = read(deq)
tensors = {}
for k, v in h.items():
    if k.endswith("_scale_inv") or k.endswith("_scale"): continue
    if k in dh:
        v, blob = dh[k], dd
    else:
        blob = data
    a, e = v["data_offsets"]
    tensors[k] = (v["dtype"], v["shape"], blob[a:e])
hdr, off, parts = {}, 0, []
for k in sorted(tensors):
    dt, sh, by = tensors[k]
    hdr[k] = {"dtype": dt, "shape": sh, "data_offsets": [off, off + len(by)]}; off += len(by); parts.append(by)
hb = json.dumps(hdr, separators=(",", ":")).encode(); hb += b" " * (-len(hb) % 8)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(hb))); f.write(hb); [f.write(p) for p in parts]
cfg = json.load(open(os.path.join(src, "config.json"))); cfg.pop("quantization_config")
json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
for n in ("tokenizer.json", "tokenizer_config.json"):
    open(os.path.join(out, n), "wb").write(open(os.path.join(src, n), "rb").read())
"#;

/// `--bpw` samples FP8 weights decoded (not their raw code bytes): its choices and the whole GGUF
/// equal those made from torch's dequantized f32 weights of the same checkpoint.
#[test]
fn bpw_on_fp8_equals_bpw_on_the_torch_dequantized_checkpoint() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dense = tmp.path().join("dense");
    let o = std::process::Command::new(&py)
        .args(["-c", SPLICE])
        .arg(fixture("tiny-llama-fp8"))
        .arg(fixture("tiny-llama-fp8.dequant.safetensors"))
        .arg(&dense)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let args = ["--target", "cpu", "--scheme", "int4", "--bpw", "6"];
    let a = tmp.path().join("from-fp8");
    let b = tmp.path().join("from-dense");
    let ra = common::quantize(&fixture("tiny-llama-fp8"), &a, &args);
    common::quantize(&dense, &b, &args);
    let types = |r: &serde_json::Value| -> std::collections::BTreeSet<String> {
        r["tensors"].as_array().unwrap().iter().filter_map(|t| t["type_out"].as_str().map(String::from)).collect()
    };
    assert!(types(&ra).len() >= 2, "a mixture was chosen: {ra}");
    assert_eq!(std::fs::read(a.join("model.gguf")).unwrap(), std::fs::read(b.join("model.gguf")).unwrap());
}
