//! Nemotron Super/Ultra (`DeciLMForCausalLM`) → GGUF `deci` on the cpu target, judged by llama.cpp
//! itself on a hand-written checkpoint (`fixtures/families/deci`, see PROVENANCE.md): five layers,
//! one of each kind (GQA with 2, 1 and 4 kv heads, a linear attention, a no-op attention, a no-op
//! FFN), Llama-3 RoPE. Our int8 GGUF equals `convert_hf_to_gguf.py --outtype q8_0` (every key but
//! `general.*`, including the INT32 arrays of head counts and FFN widths, every tensor's name,
//! shape, type and bytes, `rope_freqs`); our F16 equals `--outtype f16`; `llama-perplexity` gives
//! the same figure on ours and on the reference. Bad `block_configs` are refused with exit 2.
//! `--gguf-type q4_k_m` equals `llama-quantize Q4_K_M` of the converter's F16 GGUF; `--target
//! cuda` packs every Linear (variable FFN widths, the linear attention) and passes the numpy
//! compressed-tensors reference.
use crate::common;
use crate::families_cpu::{compare, refused_with};
use crate::families_cuda;
use std::collections::BTreeSet;

use common::llama::{llama_dir, logprobs};
use std::path::Path;

fn kv(py: &Path, gguf: &Path) -> serde_json::Value {
    let script = "import sys, json, gguf\nr = gguf.GGUFReader(sys.argv[1])\nprint(json.dumps({k: [f.contents(), [int(t) for t in f.types]] for k, f in r.fields.items() if k.startswith('deci.')}))";
    serde_json::from_str(&common::run_python(py, script, &[gguf.as_os_str()])).unwrap()
}

/// `--scheme int8` equals the converter's Q8_0 reference; what the equality covers is read from
/// the reference (INT32 arrays, llama3 `rope_freqs`, no tensors for no-op layers); llama.cpp
/// loads ours and measures the same perplexity as on the reference.
#[test]
fn deci_int8_equals_the_converters_q8_0_reference() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let reference = common::fixture("families/deci/ref-q8_0.gguf");
    let pkg = tmp.path().join("deci");
    common::quantize(&common::fixture("families/deci"), &pkg, &["--target", "cpu", "--scheme", "int8"]);
    let ours = pkg.join("model.gguf");
    let r = compare(&py, &ours, &reference);
    assert_eq!(r["arch"], serde_json::json!(["deci", "deci"]));
    assert_eq!(r["kv"], serde_json::json!([]), "keys differ: {r}");
    assert_eq!(r["tensors"], serde_json::json!([]), "tensors differ: {r}");
    assert!(r["types"]["Q8_0"].as_u64().unwrap() > 0, "{r}");
    // gguf-py's type ids: ARRAY 9 of INT32 5.
    let (f, o) = (kv(&py, &reference), kv(&py, &ours));
    for k in ["attention.head_count", "attention.head_count_kv", "feed_forward_length"] {
        assert_eq!(f[format!("deci.{k}")][1], serde_json::json!([9, 5]), "{k}");
        assert_eq!(o[format!("deci.{k}")], f[format!("deci.{k}")], "{k}");
    }
    assert_eq!(f["deci.attention.head_count_kv"][0], serde_json::json!([2, 0, 0, 1, 4]));
    assert_eq!(f["deci.attention.head_count"][0], serde_json::json!([4, 4, 0, 4, 4]));
    assert_eq!(f["deci.feed_forward_length"][0], serde_json::json!([256, 512, 256, 0, 256]));
    if let Some(l) = llama_dir() {
        let text = tmp.path().join("ppl.txt");
        let para = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. \
                    Attention heads share keys and values; rotary position embeddings rotate half of each head. ";
        std::fs::write(&text, para.repeat(12)).unwrap();
        let (a, b) = (logprobs(&l, &ours, &text), logprobs(&l, &reference, &text));
        assert!(a == b, "llama-perplexity's log-probs differ");
    }
}

/// F16 output equals the converter's `--outtype f16` (the output projection asked in F16 too).
#[test]
fn deci_f16_equals_the_converters_f16_reference() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("f16");
    common::quantize(
        &common::fixture("families/deci"),
        &pkg,
        &["--target", "cpu", "--scheme", "int8", "--gguf-type", "f16", "--tensor-type", "^output\\.weight$=f16"],
    );
    let r = compare(&py, &pkg.join("model.gguf"), &common::fixture("families/deci/ref-f16.gguf"));
    assert_eq!(r["kv"], serde_json::json!([]), "{r}");
    assert_eq!(r["tensors"], serde_json::json!([]), "{r}");
    assert!(r["types"]["F16"].as_u64().unwrap() >= 20, "{r}");
}

/// A copy of the families/deci fixture with config.json edited by `edit`.
fn edited(tmp: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    common::edited_fixture("families/deci", tmp, name, edit)
}

/// `block_configs` of the wrong length, missing `ffn_mult`, a group that does not divide the
/// heads, a linear FFN, no `block_configs`, and a layer kind contradicting the tensors: exit 2
/// naming the field or tensor, no output.
#[test]
fn bad_deci_configs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let int8 = ["--scheme", "int8"];
    let short = edited(t, "short", |c| {
        c["block_configs"].as_array_mut().unwrap().pop();
    });
    refused_with(&short, &t.join("o1"), &int8, "block_configs");
    let no_mult = edited(t, "nomult", |c| c["block_configs"][0]["ffn"]["ffn_mult"] = serde_json::Value::Null);
    refused_with(&no_mult, &t.join("o2"), &int8, "ffn_mult");
    let group = edited(t, "group", |c| c["block_configs"][0]["attention"]["n_heads_in_group"] = 3.into());
    refused_with(&group, &t.join("o3"), &int8, "n_heads_in_group");
    let linear = edited(t, "linear", |c| c["block_configs"][4]["ffn"]["replace_with_linear"] = true.into());
    refused_with(&linear, &t.join("o4"), &int8, "replace_with_linear");
    let none = edited(t, "none", |c| {
        c.as_object_mut().unwrap().remove("block_configs");
    });
    refused_with(&none, &t.join("o5"), &int8, "block_configs");
    // Layer 0 said to have 4 kv heads: its k_proj (2 heads) contradicts config.json.
    let kv = edited(t, "kv", |c| c["block_configs"][0]["attention"]["n_heads_in_group"] = 1.into());
    refused_with(&kv, &t.join("o6"), &int8, "k_proj.weight");
    // Layer 3 said to have an FFN: its mlp tensors are missing.
    let ffn = edited(t, "ffn", |c| {
        c["block_configs"][3]["ffn"] = serde_json::json!({"ffn_mult": 1.0, "no_op": false});
    });
    refused_with(&ffn, &t.join("o7"), &int8, "is missing");
    for o in ["o1", "o2", "o3", "o4", "o5", "o6", "o7"] {
        assert!(!t.join(o).exists(), "{o} written");
    }
}

/// `--gguf-type q4_k_m --method rtn` equals `llama-quantize Q4_K_M` of the converter's F16 GGUF
/// (`ref-f16.gguf`): same type per tensor (attn_v counted over the three layers that have one,
/// ffn_down over the four that have an FFN, as llama-quantize counts them) and same bytes.
#[test]
fn deci_q4_k_m_equals_llama_quantize_of_the_converters_f16() {
    let Some(py) = common::python() else { return };
    let Some(llama) = llama_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture("families/deci");
    let ours = tmp.path().join("q4km");
    common::quantize(&src, &ours, &["--target", "cpu", "--scheme", "int4", "--gguf-type", "q4_k_m", "--method", "rtn"]);
    let theirs = tmp.path().join("llama-q4km.gguf");
    let st = std::process::Command::new(llama.join("bin/llama-quantize"))
        .arg(common::fixture("families/deci/ref-f16.gguf"))
        .arg(&theirs)
        .args(["Q4_K_M", "2"])
        .output()
        .unwrap();
    assert!(st.status.success(), "llama-quantize: {}", String::from_utf8_lossy(&st.stderr));
    let r = compare(&py, &ours.join("model.gguf"), &theirs);
    assert_eq!(r["arch"], serde_json::json!(["deci", "deci"]));
    assert_eq!(r["kv"], serde_json::json!([]), "keys differ: {r}");
    assert_eq!(r["tensors"], serde_json::json!([]), "tensors differ: {r}");
    // The mix really mixes: Q6_K for the output and some attn_v / ffn_down, Q4_K elsewhere.
    assert!(r["types"]["Q6_K"].as_u64().unwrap() >= 3, "{r}");
    assert!(r["types"]["Q4_K"].as_u64().unwrap() >= 10, "{r}");
}

/// `--target cuda`: every Linear of the layer stack is packed, whatever its layer's kind: the
/// linear attention (`self_attn.linear_attn`), the FFNs of widths 256 and 512;
/// no-op layers have no modules; lm_head is dense and ignored; the numpy compressed-tensors
/// reference re-quantizes every module from the bf16 source and finds the same codes and scales.
#[test]
fn deci_cuda_packs_every_linear_and_passes_the_numpy_judge() {
    let judge = common::python().zip(common::ct_reference());
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture("families/deci");
    let (want_packed, want_ignored) = families_cuda::expected(&src);
    // What the rule must find, written out: 4 + 1 + 0 + 4 + 4 attention modules, 3 in each of four FFNs.
    assert_eq!(want_packed.len(), 13 + 12, "{want_packed:?}");
    assert!(want_packed.contains("model.layers.1.self_attn.linear_attn"));
    assert!(!want_packed.iter().any(|m| m.starts_with("model.layers.2.self_attn")));
    assert!(!want_packed.iter().any(|m| m.starts_with("model.layers.3.mlp")));
    for scheme in [&["--scheme", "int8"][..], &["--scheme", "int4", "--group-size", "128"][..]] {
        let out = tmp.path().join(format!("deci-{}", scheme[1]));
        let report = families_cuda::quantize(&src, &out, scheme);
        let st = families_cuda::header(&out.join("model.safetensors"));
        let packed: BTreeSet<String> =
            st.keys().filter_map(|k| k.strip_suffix(".weight_packed")).map(str::to_string).collect();
        assert_eq!(packed, want_packed, "{scheme:?}: packed modules");
        for m in &want_packed {
            assert!(!st.contains_key(&format!("{m}.weight")), "{m}.weight left dense beside its packed form");
        }
        // Per-layer FFN widths survive: [rows, cols] of each module's weight_shape tensor is
        // checked by the judge; here the packed widths of the 512-wide layer-1 FFN.
        let bits: usize = if scheme[1] == "int8" { 8 } else { 4 };
        assert_eq!(st["model.layers.1.mlp.gate_proj.weight_packed"].1, vec![512, 256 * bits / 32]);
        assert_eq!(st["model.layers.1.mlp.down_proj.weight_packed"].1, vec![256, 512 * bits / 32]);
        let ignore: BTreeSet<String> = families_cuda::config(&out)["quantization_config"]["ignore"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(ignore, want_ignored, "{scheme:?}: ignore");
        for t in report["tensors"].as_array().unwrap() {
            if t["shape"].as_array().unwrap().len() >= 2 && !t["type_out"].as_str().unwrap().starts_with("pack") {
                assert!(!t["note"].as_str().unwrap_or("").is_empty(), "{} kept without a reason", t["name"]);
            }
        }
        if let Some((py, judge)) = &judge {
            let o = std::process::Command::new(py).arg(judge).arg("check").arg(&src).arg(&out).output().unwrap();
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{scheme:?}: numpy judge failed:\n{text}");
            assert!(text.contains(&format!("{0}/{0} modules bit-exact", want_packed.len())), "{text}");
        }
    }
}
