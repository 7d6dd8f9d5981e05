//! `--target cuda` on Nemotron-H (`NemotronHForCausalLM`, Mamba2 hybrids), dense (`M-M*-`) and
//! MoE (`M E * E M E`, non-gated ReLU² experts + shared expert), on the checkpoints transformers'
//! own classes wrote (`fixtures/families/nemotron-h{,-moe}`).
//!
//! Judges: the set of packed modules, `ignore` and the tensors copied bit for bit are derived here
//! from the source's tensor list alone (every 2-D `.weight` in `backbone.layers.N.` but the router
//! is a Linear: Mamba in_proj/out_proj, q/k/v/o, MLP and expert up/down; the depthwise conv1d,
//! A_log, D, dt_bias, norms and embeddings are not); the shared numpy compressed-tensors reference
//! re-derives every packed module's bytes, int8 and int4; a fused (transformers-5 in-memory)
//! copy of the MoE checkpoint gives the per-expert package byte for byte. HF transformers'
//! loading is judged locally by `cargo xtask hf-check families nemotron-h nemotron-h-moe`.
use crate::common;
use crate::families_cuda::{config, copy_dir, family, quantize, refused, without_tensor};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// dtype, shape and raw bytes of every tensor of a safetensors file.
type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn read_st(path: &Path) -> Tensors {
    let raw = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&raw[8..8 + n]).unwrap();
    h.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let shape = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            let off = v["data_offsets"].as_array().unwrap();
            let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
            let bytes = raw[8 + n + a..8 + n + b].to_vec();
            (k.clone(), (v["dtype"].as_str().unwrap().to_string(), shape, bytes))
        })
        .collect()
}

fn write_st(path: &Path, t: &Tensors) {
    let mut h = serde_json::Map::new();
    h.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut data = Vec::new();
    for (k, (dtype, shape, bytes)) in t {
        h.insert(
            k.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    let mut hb = serde_json::to_vec(&serde_json::Value::Object(h)).unwrap();
    while !hb.len().is_multiple_of(8) {
        hb.push(b' ');
    }
    let mut file = (hb.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&hb);
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

/// From the source's tensor list: the modules to pack, the modules `ignore` must list (routers,
/// `mtp.*` Linears, lm_head) and the tensors to copy unchanged (everything not packed).
fn expected(src: &Tensors) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let mut packed = BTreeSet::new();
    let mut ignored = BTreeSet::from(["lm_head".to_string()]);
    let mut copied = BTreeSet::new();
    for (name, (_, shape, _)) in src {
        let module = name.strip_suffix(".weight").filter(|_| shape.len() == 2);
        let in_stack = name.starts_with("backbone.layers.");
        match module {
            Some(m) if in_stack && !m.ends_with(".mixer.gate") => {
                packed.insert(m.to_string());
            }
            Some(m) if (in_stack && m.ends_with(".mixer.gate")) || m.starts_with("mtp.") => {
                ignored.insert(m.to_string());
                copied.insert(name.clone());
            }
            _ => {
                copied.insert(name.clone());
            }
        }
    }
    (packed, ignored, copied)
}

fn ignore_of(pkg: &Path) -> BTreeSet<String> {
    config(pkg)["quantization_config"]["ignore"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Every tensor of the package is a packed module's part or a source tensor copied bit for bit;
/// `ignore` is what `expected` says. Returns the number of packed modules.
fn check_package(label: &str, src_dir: &Path, pkg: &Path, bits: u64) -> usize {
    let src = read_st(&src_dir.join("model.safetensors"));
    let (want_packed, want_ignored, want_copied) = expected(&src);
    let st = read_st(&pkg.join("model.safetensors"));
    let packed: BTreeSet<String> =
        st.keys().filter_map(|k| k.strip_suffix(".weight_packed")).map(str::to_string).collect();
    assert_eq!(packed, want_packed, "{label}: packed modules");
    for m in &packed {
        let (rows, cols) = (src[&format!("{m}.weight")].1[0], src[&format!("{m}.weight")].1[1]);
        let (dtype, shape, _) = &st[&format!("{m}.weight_packed")];
        assert_eq!((dtype.as_str(), shape.as_slice()), ("I32", &[rows, cols * bits as usize / 32][..]), "{label}: {m}");
        assert!(st.contains_key(&format!("{m}.weight_scale")) && st.contains_key(&format!("{m}.weight_shape")));
    }
    for name in &want_copied {
        assert_eq!(st.get(name), src.get(name), "{label}: `{name}` not copied bit for bit");
    }
    let parts = ["weight_packed", "weight_scale", "weight_shape"];
    let extra: Vec<&String> = st
        .keys()
        .filter(|k| !want_copied.contains(*k))
        .filter(|k| {
            !parts
                .iter()
                .any(|p| k.strip_suffix(p).and_then(|m| m.strip_suffix('.')).is_some_and(|m| packed.contains(m)))
        })
        .collect();
    assert!(extra.is_empty(), "{label}: unexpected tensors {extra:?}");
    assert_eq!(ignore_of(pkg), want_ignored, "{label}: ignore");
    // config.json: the source's, plus our quantization_config.
    let (mut got, want) = (config(pkg), config(src_dir));
    let qc = got.as_object_mut().unwrap().remove("quantization_config").expect("quantization_config");
    assert_eq!(got, want, "{label}: config.json changed beyond quantization_config");
    assert_eq!(qc["format"], "pack-quantized", "{label}: {qc}");
    let group = &qc["config_groups"]["group_0"];
    assert_eq!(group["targets"], serde_json::json!(["Linear"]), "{label}: {qc}");
    assert_eq!(group["weights"]["num_bits"], bits, "{label}: {qc}");
    packed.len()
}

fn numpy_judge(label: &str, src: &Path, pkg: &Path, modules: usize) {
    let Some((py, judge)) = common::python().zip(common::ct_reference()) else { return };
    let o = std::process::Command::new(py).arg(judge).arg("check").arg(src).arg(pkg).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{label}: numpy judge failed:\n{text}");
    assert!(text.contains(&format!("{0}/{0} modules bit-exact", modules)), "{label}: {text}");
}

const SCHEMES: [(&[&str], u64); 2] = [(&["--scheme", "int8"], 8), (&["--scheme", "int4", "--group-size", "128"], 4)];

/// Both fixtures, int8 and int4: every Linear packed (12 on the dense fixture: 2 Mamba layers'
/// in/out_proj, q/k/v/o, 2 MLP layers' up/down; 38 on the MoE one: in each of 3 MoE layers 4
/// experts' and the shared expert's up/down, besides 2 Mamba and 1 attention layer), nothing else
/// touched, the numpy judge re-derives every module; the dense kept tensors say why (the conv1d:
/// a Conv1d, not a Linear).
#[test]
fn every_nemotron_h_linear_is_packed_and_passes_the_numpy_judge() {
    let tmp = tempfile::tempdir().unwrap();
    for fixture in ["nemotron-h", "nemotron-h-moe"] {
        for (scheme, bits) in SCHEMES {
            let label = format!("{fixture} {scheme:?}");
            let out = tmp.path().join(format!("{fixture}-{bits}"));
            let report = quantize(&family(fixture), &out, scheme);
            let n = check_package(&label, &family(fixture), &out, bits);
            assert_eq!(n, if fixture == "nemotron-h" { 12 } else { 38 }, "{label}");
            numpy_judge(&label, &family(fixture), &out, n);
            let tensors = report["tensors"].as_array().unwrap();
            let conv = tensors.iter().find(|t| t["name"] == "backbone.layers.0.mixer.conv1d.weight").unwrap();
            assert!(conv["note"].as_str().unwrap().contains("Conv1d, not a Linear"), "{label}: {conv}");
            for t in tensors {
                if t["shape"].as_array().unwrap().len() >= 2 && !t["type_out"].as_str().unwrap().starts_with("pack") {
                    assert!(
                        !t["note"].as_str().unwrap_or("").is_empty(),
                        "{label}: {} kept without a reason",
                        t["name"]
                    );
                }
            }
        }
    }
}

/// transformers 5's in-memory layout of the MoE (`experts.up_proj [E,F,H]`, `experts.down_proj
/// [E,H,F]`, built here by stacking the per-expert tensors) gives the per-expert package byte for
/// byte, in both schemes.
#[test]
fn fused_nemotron_h_experts_give_the_per_expert_package() {
    let tmp = tempfile::tempdir().unwrap();
    let src = family("nemotron-h-moe");
    let fused_dir = tmp.path().join("fused");
    copy_dir(&src, &fused_dir);
    let mut t = read_st(&src.join("model.safetensors"));
    let e = config(&src)["n_routed_experts"].as_u64().unwrap() as usize;
    let mut stacked = 0;
    for layer in [1, 3, 5] {
        for proj in ["up_proj", "down_proj"] {
            let mut bytes = Vec::new();
            let mut shape = Vec::new();
            let mut dtype = String::new();
            for x in 0..e {
                let (d, s, b) = t.remove(&format!("backbone.layers.{layer}.mixer.experts.{x}.{proj}.weight")).unwrap();
                (dtype, shape) = (d, s);
                bytes.extend_from_slice(&b);
            }
            let name = format!("backbone.layers.{layer}.mixer.experts.{proj}");
            t.insert(name, (dtype, vec![e, shape[0], shape[1]], bytes));
            stacked += 1;
        }
    }
    assert_eq!(stacked, 6);
    write_st(&fused_dir.join("model.safetensors"), &t);
    for (scheme, bits) in SCHEMES {
        let a = tmp.path().join(format!("per-expert-{bits}"));
        let b = tmp.path().join(format!("fused-{bits}"));
        quantize(&src, &a, scheme);
        quantize(&fused_dir, &b, scheme);
        let (pa, pb) =
            (std::fs::read(a.join("model.safetensors")).unwrap(), std::fs::read(b.join("model.safetensors")).unwrap());
        assert!(pa == pb, "{scheme:?}: the fused checkpoint's package differs from the per-expert one's");
        assert_eq!(ignore_of(&a), ignore_of(&b));
    }
    // A fused up_proj without its down_proj twin is refused, naming the missing tensor.
    let broken = tmp.path().join("fused-broken");
    copy_dir(&fused_dir, &broken);
    without_tensor(
        &fused_dir.join("model.safetensors"),
        &broken.join("model.safetensors"),
        "backbone.layers.3.mixer.experts.down_proj",
    );
    refused(&broken, &tmp.path().join("fused-broken-out"), "`backbone.layers.3.mixer.experts.down_proj`");
}

/// An MTP head (`mtp.layers.N.…`, as Nemotron-3 Super ships) is not part of the layer stack the
/// runtimes quantize: its Linears stay dense, in `ignore`, copied bit for bit.
#[test]
fn nemotron_h_mtp_head_stays_dense_and_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let src = family("nemotron-h");
    let dir = tmp.path().join("mtp");
    copy_dir(&src, &dir);
    let mut t = read_st(&src.join("model.safetensors"));
    for (from, to) in [
        ("backbone.layers.3.mixer.q_proj.weight", "mtp.layers.0.mixer.q_proj.weight"),
        ("backbone.layers.1.mixer.up_proj.weight", "mtp.layers.1.mixer.up_proj.weight"),
        ("backbone.layers.3.norm.weight", "mtp.layers.0.norm.weight"),
    ] {
        let v = t[from].clone();
        t.insert(to.to_string(), v);
    }
    write_st(&dir.join("model.safetensors"), &t);
    let out = tmp.path().join("pkg");
    quantize(&dir, &out, &["--scheme", "int8"]);
    let n = check_package("mtp", &dir, &out, 8);
    assert_eq!(n, 12);
    let ignore = ignore_of(&out);
    assert!(
        ignore.contains("mtp.layers.0.mixer.q_proj") && ignore.contains("mtp.layers.1.mixer.up_proj"),
        "{ignore:?}"
    );
}

/// Bad inputs: exit 2 naming the tensor or key, nothing written. The latent MoE of Nemotron-3
/// Super/Ultra (`moe_latent_size`) is refused: no package of that shape was loaded here.
#[test]
fn bad_nemotron_h_cuda_inputs_are_refused_before_any_output() {
    let tmp = tempfile::tempdir().unwrap();
    let moe = family("nemotron-h-moe");
    for (i, drop) in
        ["backbone.layers.3.mixer.experts.2.down_proj.weight", "backbone.layers.1.mixer.gate.weight"].iter().enumerate()
    {
        let d = tmp.path().join(format!("drop{i}"));
        copy_dir(&moe, &d);
        without_tensor(&moe.join("model.safetensors"), &d.join("model.safetensors"), drop);
        refused(&d, &tmp.path().join(format!("drop{i}-out")), &format!("`{drop}`"));
    }
    for (key, value, needle) in [
        ("moe_latent_size", serde_json::json!(64), "moe_latent_size = 64"),
        ("n_routed_experts", serde_json::json!(3), "backbone.layers.1.mixer.experts.3."),
        ("moe_intermediate_size", serde_json::json!(64), "moe_intermediate_size = 64"),
        ("hidden_size", serde_json::json!(64), "hidden_size = 64"),
    ] {
        let d = tmp.path().join(key);
        copy_dir(&moe, &d);
        common::edit_config(&d, |c| c[key] = value.clone());
        refused(&d, &tmp.path().join(format!("{key}-out")), needle);
    }
}
