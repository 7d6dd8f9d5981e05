//! compressed-tensors `pack-quantized` int4/int8 checkpoints as a *source* (issue 15: Kimi
//! K2-Thinking ships that way). Judges:
//! - the packages compressed-tensors 0.20 itself wrote (`fixtures/compressed-tensors/
//!   w4a16_g128_sym`, `w8a16_channel_sym`) with the library's own codes (`P.q` of
//!   `expected_q_and_dequant.safetensors`): the exact weights are `q × scale` (numpy, f32);
//!   the cpu target's lossless Q4_0 dequantizes (the `gguf` package) to exactly those, and every
//!   requantized type equals `gguf.quants.quantize` of them;
//! - the cuda target passes a package of its own scheme through byte for byte and requantizes
//!   another scheme as the compressed-tensors reference does from the same f32 weights;
//! - bad packed input is an input error (exit 2) naming the tensor, with no package left.

use crate::common;
use std::path::{Path, PathBuf};

/// Args: gguf, fixture dir, ct reference, GGUF type, mode (`exact`: dequantized GGUF == q × s;
/// `quantize`: bytes == gguf.quants.quantize(q × s)). Prints {checked, bad}.
const CPU_JUDGE: &str = r#"
import sys, json, importlib.util, numpy as np, gguf
gg, fx, refp, typ, mode = sys.argv[1:6]
spec = importlib.util.spec_from_file_location("ct_ref", refp); ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
st = ref.read_dir(fx)  # model.safetensors + the library's expected_q_and_dequant.safetensors
cfg = json.load(open(fx + "/config.json"))
r = gguf.GGUFReader(gg)
got = {t.name: t for t in r.tensors}
tm = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
def permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
bad, n = [], 0
for k in sorted(st):
    if not k.endswith(".q"): continue
    m = k[:-2]
    q = st[k][1].astype(np.float32)
    sc = ref.bf16_to_f32(st[m + ".weight_scale"][1].view(np.uint16))
    rows, cols = q.shape
    w = (q.reshape(rows, sc.shape[1], -1) * sc[..., None]).reshape(rows, cols).astype(np.float32)
    if m.endswith("q_proj"): w = permute(w, cfg["num_attention_heads"])
    if m.endswith("k_proj"): w = permute(w, cfg["num_key_value_heads"])
    t = got[tm.get_name(m + ".weight", try_suffixes=(".weight",))]
    if t.tensor_type.name != typ: bad.append(f"type {t.name} {t.tensor_type.name}"); continue
    if mode == "exact":
        d = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(w.shape)
        if not np.array_equal(d.view(np.uint32), w.view(np.uint32)): bad.append(f"values {t.name}")
    else:
        if gguf.quants.quantize(w, gguf.GGMLQuantizationType[typ]).tobytes() != np.asarray(t.data).tobytes():
            bad.append(f"bytes {t.name}")
    n += 1
print(json.dumps({"checked": n, "bad": bad}))
"#;

/// A library-written package with a tokenizer beside it (the cpu target writes the vocabulary;
/// the packages have none): the qwen3 family fixture's byte-level BPE, vocab 512 like theirs.
fn with_tokenizer(variant: &str, tmp: &Path) -> PathBuf {
    let d = tmp.join(variant);
    std::fs::create_dir_all(&d).unwrap();
    for e in std::fs::read_dir(common::fixture(&format!("compressed-tensors/{variant}"))).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(common::fixture(&format!("families/qwen3/{f}")), d.join(f)).unwrap();
    }
    d
}

fn judge(py: &Path, reference: &Path, pkg: &Path, src: &Path, typ: &str, mode: &str) {
    let o = common::run_python(
        py,
        CPU_JUDGE,
        &[pkg.join("model.gguf").as_os_str(), src.as_os_str(), reference.as_os_str(), typ.as_ref(), mode.as_ref()],
    );
    let v: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
    assert_eq!(v["checked"], 7, "{src:?} {typ} {mode}: {o}");
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{src:?} {typ} {mode}: {o}");
}

#[test]
fn cpu_int4_source_to_q4_0_is_lossless() {
    let Some(py) = common::python() else { return };
    let Some(reference) = common::ct_reference() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = with_tokenizer("w4a16_g128_sym", tmp.path());
    // The default method (mse) is not used where the codes are copied.
    let out = tmp.path().join("q4");
    let rep = common::quantize(&src, &out, &["--target", "cpu", "--scheme", "int4"]);
    let t = rep["tensors"].as_array().unwrap();
    let lossless: Vec<_> = t.iter().filter(|t| t["method"] == "repack").collect();
    assert_eq!(lossless.len(), 7, "{rep}");
    for t in &lossless {
        let note = t["note"].as_str().unwrap();
        assert!(note.contains("(lossless)") && note.contains(" 0 requantized"), "{note}");
        assert_eq!(t["dtype_in"], "PACKED_INT4");
    }
    judge(&py, &reference, &out, &src, "Q4_0", "exact");
}

#[test]
fn cpu_packed_sources_requantize_to_other_types_from_the_exact_weights() {
    let Some(py) = common::python() else { return };
    let Some(reference) = common::ct_reference() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (variant, args, typ) in [
        ("w4a16_g128_sym", &["--scheme", "int8"][..], "Q8_0"),
        ("w8a16_channel_sym", &["--scheme", "int8"][..], "Q8_0"),
        ("w8a16_channel_sym", &["--scheme", "int4", "--method", "rtn"][..], "Q4_0"),
        ("w4a16_g128_sym", &["--scheme", "int4", "--method", "rtn", "--gguf-type", "q4_1"][..], "Q4_1"),
    ] {
        let src = with_tokenizer(variant, tmp.path());
        let out = tmp.path().join(format!("{variant}-{typ}"));
        let rep = common::quantize(&src, &out, &[&["--target", "cpu"], args].concat());
        let n = rep["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["note"].as_str().unwrap_or("").contains("dequantized from pack-quantized"))
            .count();
        assert_eq!(n, 7, "{variant} {typ}: {rep}");
        judge(&py, &reference, &out, &src, typ, "quantize");
    }
}

fn st_tensors(path: &Path) -> std::collections::BTreeMap<String, (String, Vec<u64>, Vec<u8>)> {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    h.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = &v["data_offsets"];
            let (a, e) = (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize);
            let shape = v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            (k.clone(), (v["dtype"].as_str().unwrap().to_string(), shape, b[8 + n + a..8 + n + e].to_vec()))
        })
        .collect()
}

#[test]
fn cuda_same_scheme_passes_through_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    for (variant, args) in [
        ("w4a16_g128_sym", &["--scheme", "int4", "--group-size", "128"][..]),
        ("w8a16_channel_sym", &["--scheme", "int8"][..]),
    ] {
        let src = common::fixture(&format!("compressed-tensors/{variant}"));
        let out = tmp.path().join(variant);
        // No --force-requantize: nothing is requantized.
        let rep = common::quantize(&src, &out, &[&["--target", "cuda"], args].concat());
        let passed = rep["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["note"].as_str().unwrap_or("").contains("passed through unchanged"))
            .count();
        assert_eq!(passed, 21, "{variant}: 7 modules x packed, scale, shape: {rep}");
        let (a, b) = (st_tensors(&src.join("model.safetensors")), st_tensors(&out.join("model.safetensors")));
        assert_eq!(a, b, "{variant}: every tensor byte-identical, same names, dtypes and shapes");
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        let w = &cfg["quantization_config"]["config_groups"]["group_0"]["weights"];
        let srcw: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
        let sw = &srcw["quantization_config"]["config_groups"]["group_0"]["weights"];
        for k in ["num_bits", "symmetric", "strategy", "group_size"] {
            assert_eq!(w[k], sw[k], "{variant}: {k}");
        }
    }
}

/// The exact weights (`q × scale`, f32) as a dense f32 checkpoint, the other tensors copied: the
/// compressed-tensors reference's input for judging a requantized package.
const DENSE: &str = r#"
import sys, os, json, importlib.util, shutil, numpy as np
from safetensors.numpy import save_file
src, refp, out = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("ct_ref", refp); ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
st = ref.read_dir(src)
d = {}
for k, (dt, a) in st.items():
    if k.endswith((".weight_packed", ".weight_shape", ".weight_scale", ".deq")): continue
    if k.endswith(".q"):
        m = k[:-2]; sc = ref.bf16_to_f32(st[m + ".weight_scale"][1].view(np.uint16))
        q = a.astype(np.float32); rows, cols = q.shape
        d[m + ".weight"] = (q.reshape(rows, sc.shape[1], -1) * sc[..., None]).reshape(rows, cols).astype(np.float32)
    else:
        d[k] = ref.bf16_to_f32(a) if dt == "BF16" else a
os.makedirs(out, exist_ok=True)
save_file(d, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
cfg = json.load(open(os.path.join(src, "config.json"))); cfg.pop("quantization_config"); cfg["dtype"] = "float32"
json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
"#;

#[test]
fn cuda_other_scheme_is_requantized_as_the_reference_does() {
    let Some(py) = common::python() else { return };
    let Some(reference) = common::ct_reference() else { return };
    let script = common::root().join("xtask/py/ct_scale_dtype_check.py");
    let tmp = tempfile::tempdir().unwrap();
    for (variant, args) in [
        ("w4a16_g128_sym", &["--scheme", "int4", "--group-size", "32", "--method", "rtn"][..]),
        ("w4a16_g128_sym", &["--scheme", "int8"][..]),
        ("w8a16_channel_sym", &["--scheme", "int4", "--group-size", "64", "--method", "rtn"][..]),
    ] {
        let src = common::fixture(&format!("compressed-tensors/{variant}"));
        let out = tmp.path().join(format!("{variant}-{}", args[1]));
        let rep = common::quantize(&src, &out, &[&["--target", "cuda"], args].concat());
        let re: Vec<_> = rep["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["note"].as_str().unwrap_or("").contains("re-quantized from pack-quantized"))
            .collect();
        assert_eq!(re.len(), 7, "{variant} {args:?}: {rep}");
        let dense = tmp.path().join(format!("dense-{variant}"));
        common::run_python(&py, DENSE, &[src.as_os_str(), reference.as_os_str(), dense.as_os_str()]);
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
        assert_eq!(v["modules"], 7, "{so}");
    }
}

/// Copy a library-written package (plus a tokenizer), let `edit` change it, and require
/// `quantize` to fail with exit 2, a message containing `want`, and no package.
fn refuses(variant: &str, target: &str, edit: impl Fn(&Path), want: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = with_tokenizer(variant, tmp.path());
    edit(&src);
    common::assert_refused(&src, target, want, variant);
}

/// Replace `from` by `to` (same length) in the safetensors header.
fn edit_header(dir: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let p = dir.join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let h = String::from_utf8(b[8..8 + n].to_vec()).unwrap();
    assert!(h.contains(from), "{from} not in the header");
    b[8..8 + n].copy_from_slice(h.replacen(from, to, 1).as_bytes());
    std::fs::write(&p, b).unwrap();
}

const DOWN: &str = "model.layers.0.mlp.down_proj";

#[test]
fn bad_packed_input_is_refused_naming_the_tensor() {
    let w = |c: &mut serde_json::Value| -> serde_json::Value {
        c["quantization_config"]["config_groups"]["group_0"]["weights"].clone()
    };
    for target in ["cpu", "cuda"] {
        refuses(
            "w4a16_g128_sym",
            target,
            |d| common::edit_config(d, |c| drop(c.as_object_mut().unwrap().remove("quantization_config"))),
            "has no quantization_config",
        );
        // The config says group 64: the [256, 4] scale of down_proj (in 512) is group 128.
        refuses(
            "w4a16_g128_sym",
            target,
            |d| {
                common::edit_config(d, |c| {
                    let mut x = w(c);
                    x["group_size"] = 64.into();
                    c["quantization_config"]["config_groups"]["group_0"]["weights"] = x;
                })
            },
            "matches no config group",
        );
        refuses(
            "w4a16_g128_sym",
            target,
            |d| {
                common::edit_config(d, |c| {
                    let mut x = w(c);
                    x["strategy"] = "tensor".into();
                    c["quantization_config"]["config_groups"]["group_0"]["weights"] = x;
                })
            },
            "weight strategy \"tensor\"",
        );
        refuses(
            "w4a16_g128_sym",
            target,
            |d| {
                common::edit_config(d, |c| {
                    c["quantization_config"]["config_groups"]["group_0"]["format"] = "int-quantized".into()
                })
            },
            "only \"pack-quantized\"",
        );
        // A missing weight_shape (renamed in the header).
        refuses(
            "w4a16_g128_sym",
            target,
            |d| edit_header(d, &format!("\"{DOWN}.weight_shape\""), &format!("\"{DOWN}.weight_shapf\"")),
            &format!("`{DOWN}.weight_packed`: packed weight without `{DOWN}.weight_shape`"),
        );
        // weight_shape [256, 512] edited to [256, 510] in the data: the [256, 4] scale no longer fits.
        refuses(
            "w4a16_g128_sym",
            target,
            |d| {
                let p = d.join("model.safetensors");
                let mut b = std::fs::read(&p).unwrap();
                let t = st_tensors(&p);
                let shape = &t[&format!("{DOWN}.weight_shape")].2;
                let at = b.windows(shape.len()).position(|x| x == shape.as_slice()).unwrap();
                b[at + 8..at + 16].copy_from_slice(&510i64.to_le_bytes());
                std::fs::write(&p, b).unwrap();
            },
            &format!("`{DOWN}.weight_scale`: scale of shape [256, 4] does not fit a [256, 510] weight"),
        );
        // A NaN scale.
        refuses(
            "w4a16_g128_sym",
            target,
            |d| {
                let p = d.join("model.safetensors");
                let mut b = std::fs::read(&p).unwrap();
                let t = st_tensors(&p);
                let sc = &t[&format!("{DOWN}.weight_scale")].2;
                let at = b.windows(sc.len()).position(|x| x == sc.as_slice()).unwrap();
                b[at + 6..at + 8].copy_from_slice(&0x7fc0u16.to_le_bytes());
                std::fs::write(&p, b).unwrap();
            },
            &format!("`{DOWN}.weight_scale`: scale NaN at index 3"),
        );
    }
}

/// Args: our gguf, the converter's F32 GGUF of the same int4 checkpoint, the report's repacked
/// tensors as JSON `{name: requantized blocks}`. Every Q4_0/Q8_0 block of ours either
/// dequantizes to exactly the converter's f32 values (a copied block) or equals
/// `gguf.quants.quantize` of them (`--method rtn`); copied blocks only in repacked tensors, and
/// exactly the reported number of requantized blocks among them.
const DS_JUDGE: &str = r#"
import sys, json, numpy as np, gguf
ours = {t.name: t for t in gguf.GGUFReader(sys.argv[1]).tensors}
ref = {t.name: t for t in gguf.GGUFReader(sys.argv[2]).tensors}
repacked = json.loads(sys.argv[3])
bad, copied, requant = [], 0, {}
for n, t in ours.items():
    r = np.asarray(ref[n].data).astype(np.float32)
    typ = t.tensor_type.name
    if typ == "F32":
        if not np.array_equal(np.asarray(t.data).view(np.uint32).reshape(-1), r.view(np.uint32).reshape(-1)): bad.append(n)
        continue
    bs, bb = {"Q4_0": (32, 18), "Q8_0": (32, 34)}[typ]
    raw = np.asarray(t.data).reshape(-1, bb)
    d = gguf.quants.dequantize(raw.reshape(-1), t.tensor_type).reshape(-1, bs)
    rb = r.reshape(-1, bs)
    q = gguf.quants.quantize(r.reshape(-1, bs), t.tensor_type).reshape(-1, bb)
    exact = np.all(d.view(np.uint32) == rb.view(np.uint32), axis=1)
    same = np.all(raw == q, axis=1)
    if n in repacked:
        copied += int(exact.sum()); requant[n] = int((~exact).sum())
        if not np.all(exact | same): bad.append(f"{n}: a block neither copied nor requantized as gguf does")
    elif not np.all(same): bad.append(f"{n}: bytes differ from gguf.quants.quantize")
print(json.dumps({"bad": bad, "copied": copied, "requantized": requant}))
"#;

/// The Kimi-K2-Thinking-shaped fixture (`fixtures/packed/deepseek-v3-int4`, written by
/// compressed-tensors 0.20 from the deepseek-v3 family fixture; see its PROVENANCE.md): llama.cpp's
/// converter reads it too, so its GGUFs of the int4 files are the judges. int8 equals its Q8_0
/// byte for byte; int4 copies codes and scales (dequantizing to exactly its F32 values) except
/// the two blocks whose scale is not an f16 value and DeepSeek's transposed `attn_k_b`.
#[test]
fn deepseek2_from_pack_quantized_int4_matches_the_converter() {
    let Some(py) = common::python() else { return };
    let src = common::fixture("packed/deepseek-v3-int4");
    let tmp = tempfile::tempdir().unwrap();
    let q8 = tmp.path().join("q8");
    common::quantize(&src, &q8, &["--target", "cpu", "--scheme", "int8"]);
    let r = crate::families_cpu::compare(&py, &q8.join("model.gguf"), &src.join("ref-q8_0.gguf"));
    assert_eq!(r["kv"], serde_json::json!([]), "{r}");
    assert_eq!(r["tensors"], serde_json::json!([]), "{r}");

    let q4 = tmp.path().join("q4");
    let rep = common::quantize(&src, &q4, &["--target", "cpu", "--scheme", "int4", "--method", "rtn"]);
    let mut repacked = serde_json::Map::new();
    let mut transposed = 0;
    for t in rep["tensors"].as_array().unwrap() {
        let note = t["note"].as_str().unwrap_or("");
        if t["method"] == "repack" {
            let n: u64 = note.split(", ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
            repacked.insert(t["name"].as_str().unwrap().to_string(), n.into());
        } else if note.contains("(transposed rows)") {
            transposed += 1;
        }
    }
    // Per layer: q_a, q_b, kv_a, v_b, o (+ 3 expert stacks in the 2 MoE layers); k_b requantized.
    assert_eq!(repacked.len(), 3 * 5 + 2 * 3, "{rep}");
    assert_eq!(transposed, 3, "{rep}");
    let o = common::run_python(
        &py,
        DS_JUDGE,
        &[
            q4.join("model.gguf").as_os_str(),
            src.join("ref-f32.gguf").as_os_str(),
            serde_json::Value::Object(repacked.clone()).to_string().as_ref(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(o.trim()).unwrap();
    assert_eq!(v["bad"], serde_json::json!([]), "{o}");
    assert_eq!(v["requantized"], serde_json::Value::Object(repacked), "reported counts: {o}");
    assert_eq!(v["requantized"]["blk.1.ffn_up_exps.weight"], 2, "the fixture's two sub-f16 scales: {o}");
    assert!(v["copied"].as_u64().unwrap() > 20_000, "{o}");
}
