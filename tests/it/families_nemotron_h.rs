//! Nemotron-H (`NemotronHForCausalLM`, Mamba2 hybrids) → GGUF `nemotron_h` / `nemotron_h_moe` on
//! the cpu target, judged by llama.cpp itself on checkpoints written by transformers' own
//! `NemotronHForCausalLM` (`fixtures/families/nemotron-h{,-moe}`, see PROVENANCE.md): the dense one
//! with the pattern `M-M*-` in the releases' config shape, the MoE one with `M E * E M E` in
//! transformers 5's `layers_block_type` form. Ours equals `convert_hf_to_gguf.py --outtype q8_0` /
//! `f16` (every key but `general.*`, including the per-layer INT32 arrays, every tensor's name,
//! shape, type and bytes: `ssm_a = −exp(A_log)`, the squeezed conv1d, the grouped norm), and
//! `llama-perplexity` gives the same log-probs on ours and on the reference. Q4_0 and Q4_K_M equal
//! llama-quantize run on our F32 GGUF. Bad patterns are refused with exit 2. The cuda target is
//! judged in `families_nemotron_h_cuda.rs`.
use crate::common;
use crate::families_cpu::{compare, q4km_vs_llama_quantize, refused_with};

use common::llama::{llama_dir, logprobs, run};
use std::path::Path;
use std::process::Command;

/// The `<arch>.*` keys of a GGUF with their gguf-py type ids.
fn kv(py: &Path, gguf: &Path, arch: &str) -> serde_json::Value {
    let script = "import sys, json, gguf\nr = gguf.GGUFReader(sys.argv[1])\nprint(json.dumps({k: [f.contents(), [int(t) for t in f.types]] for k, f in r.fields.items() if k.startswith(sys.argv[2] + '.')}))";
    serde_json::from_str(&common::run_python(py, script, &[gguf.as_os_str(), arch.as_ref()])).unwrap()
}

/// `ssm_a` of every Mamba layer of `gguf` against `−exp(A_log)` computed by numpy from the
/// checkpoint's bf16 values (an independent check of what the reference is taken to do). Returns
/// the number of layers checked.
fn ssm_a_is_neg_exp(py: &Path, gguf: &Path, ckpt: &Path) -> u64 {
    let script = r#"
import sys, json, struct, numpy as np, gguf
raw = open(sys.argv[2] + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]; hdr = json.loads(raw[8:8 + n])
r = gguf.GGUFReader(sys.argv[1]); t = {x.name: x for x in r.tensors}
ok = 0
for k, v in hdr.items():
    if not k.endswith(".mixer.A_log"): continue
    a, b = v["data_offsets"]
    bits = np.frombuffer(raw[8 + n + a: 8 + n + b], np.uint16).astype(np.uint32) << 16
    want = (-np.exp(bits.view(np.float32).astype(np.float64))).astype(np.float32)
    got = t[f"blk.{k.split('.')[2]}.ssm_a"]
    assert list(got.shape) == [1, len(want)], got.shape
    assert np.asarray(got.data).reshape(-1).tobytes() == want.tobytes(), k
    ok += 1
print(ok)
"#;
    common::run_python(py, script, &[gguf.as_os_str(), ckpt.as_os_str()]).trim().parse().unwrap()
}

fn ppl_text(dir: &Path) -> std::path::PathBuf {
    let text = dir.join("ppl.txt");
    let para = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. \
                Attention heads share keys and values; a state space layer scans the sequence. ";
    std::fs::write(&text, para.repeat(12)).unwrap();
    text
}

/// `--scheme int8` of `family` equals the converter's Q8_0 reference; llama.cpp measures the
/// same log-probs on both. Returns the reference's `<arch>.*` keys.
fn int8_equals_reference(family: &str, arch: &str, mamba_layers: u64) -> serde_json::Value {
    let py = common::python().expect("checked by the caller");
    let tmp = tempfile::tempdir().unwrap();
    let src = common::fixture(&format!("families/{family}"));
    let reference = src.join("ref-q8_0.gguf");
    let pkg = tmp.path().join(family);
    common::quantize(&src, &pkg, &["--target", "cpu", "--scheme", "int8"]);
    let ours = pkg.join("model.gguf");
    let r = compare(&py, &ours, &reference);
    assert_eq!(r["arch"], serde_json::json!([arch, arch]), "{r}");
    assert_eq!(r["kv"], serde_json::json!([]), "{family}: keys differ: {r}");
    assert_eq!(r["tensors"], serde_json::json!([]), "{family}: tensors differ: {r}");
    assert!(r["types"]["Q8_0"].as_u64().unwrap() > 0, "{r}");
    assert!(r["types"]["F32"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(ssm_a_is_neg_exp(&py, &reference, &src), mamba_layers, "{family}: Mamba layers");
    let (f, o) = (kv(&py, &reference, arch), kv(&py, &ours, arch));
    // gguf-py's type ids: ARRAY 9 of INT32 5.
    for k in ["attention.head_count_kv", "feed_forward_length"] {
        assert_eq!(f[format!("{arch}.{k}")][1], serde_json::json!([9, 5]), "{k}");
        assert_eq!(o[format!("{arch}.{k}")], f[format!("{arch}.{k}")], "{k}");
    }
    if let Some(l) = llama_dir() {
        let text = ppl_text(tmp.path());
        let (a, b) = (logprobs(&l, &ours, &text), logprobs(&l, &reference, &text));
        assert!(a == b, "{family}: llama-perplexity's log-probs differ");
    }
    f
}

/// Dense Nemotron-H (`M-M*-`): the reference's layer arrays are what the pattern says.
#[test]
fn nemotron_h_int8_equals_the_converters_q8_0_reference() {
    if common::python().is_none() {
        return;
    }
    let f = int8_equals_reference("nemotron-h", "nemotron_h", 2);
    assert_eq!(f["nemotron_h.attention.head_count_kv"][0], serde_json::json!([0, 0, 0, 2, 0]));
    assert_eq!(f["nemotron_h.feed_forward_length"][0], serde_json::json!([0, 256, 0, 0, 256]));
}

/// Nemotron-H MoE (`M E * E M E`, routed + shared ReLU² experts without gate projections).
#[test]
fn nemotron_h_moe_int8_equals_the_converters_q8_0_reference() {
    if common::python().is_none() {
        return;
    }
    let f = int8_equals_reference("nemotron-h-moe", "nemotron_h_moe", 2);
    assert_eq!(f["nemotron_h_moe.attention.head_count_kv"][0], serde_json::json!([0, 0, 2, 0, 0, 0]));
    assert_eq!(f["nemotron_h_moe.feed_forward_length"][0], serde_json::json!([0, 128, 0, 128, 0, 128]));
}

/// F16 output equals the converter's `--outtype f16` (the output projection asked in F16 too).
#[test]
fn nemotron_h_f16_equals_the_converters_f16_reference() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for family in ["nemotron-h", "nemotron-h-moe"] {
        let pkg = tmp.path().join(family);
        common::quantize(
            &common::fixture(&format!("families/{family}")),
            &pkg,
            &["--target", "cpu", "--scheme", "int8", "--gguf-type", "f16", "--tensor-type", "^output\\.weight$=f16"],
        );
        let r = compare(&py, &pkg.join("model.gguf"), &common::fixture(&format!("families/{family}/ref-f16.gguf")));
        assert_eq!(r["kv"], serde_json::json!([]), "{family}: {r}");
        assert_eq!(r["tensors"], serde_json::json!([]), "{family}: {r}");
        assert!(r["types"]["F16"].as_u64().unwrap() >= 8, "{family}: {r}");
    }
}

/// `--gguf-type q4_0 --method rtn` and `--gguf-type q4_k_m --method rtn` equal llama-quantize
/// (`Q4_0` / `Q4_K_M`) run on our F32 GGUF: the Mamba conv1d, `ssm_a`, `ssm_d`, `ssm_norm`
/// stay F32, 128-wide rows fall back as llama-quantize's rules say.
#[test]
fn nemotron_h_q4_0_and_q4_k_m_equal_llama_quantize() {
    let Some(py) = common::python() else { return };
    let Some(llama) = llama_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for family in ["nemotron-h", "nemotron-h-moe"] {
        let src = common::fixture(&format!("families/{family}"));
        let dir = tmp.path().join(family);
        std::fs::create_dir(&dir).unwrap();
        let r = q4km_vs_llama_quantize(&py, &llama, &src, &dir, &[]);
        assert_eq!(r["tensors"], serde_json::json!([]), "{family} q4_k_m: {r}");
        assert!(r["types"]["F32"].as_u64().unwrap() >= 12, "{family}: {r}");
        let ours = dir.join("q4_0");
        common::quantize(
            &src,
            &ours,
            &["--target", "cpu", "--scheme", "int4", "--gguf-type", "q4_0", "--method", "rtn"],
        );
        let theirs = dir.join("llama-q4_0.gguf");
        run(Command::new(llama.join("bin/llama-quantize"))
            .arg(dir.join("f32/model.gguf"))
            .arg(&theirs)
            .args(["Q4_0", "2"]));
        let r = compare(&py, &ours.join("model.gguf"), &theirs);
        assert_eq!(r["tensors"], serde_json::json!([]), "{family} q4_0: {r}");
        assert!(r["types"]["Q4_0"].as_u64().unwrap() >= 4, "{family}: {r}");
    }
}

/// A copy of the nemotron-h fixture with config.json edited by `edit`.
fn edited(tmp: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    common::edited_fixture("families/nemotron-h", tmp, name, edit)
}

/// A pattern of the wrong length or with an unknown letter, a MoE layer in a dense config, a
/// vocabulary the reference would pad, a layer kind contradicting the tensors: exit 2 naming
/// the field or tensor, no output.
#[test]
fn bad_nemotron_h_configs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let int8 = ["--scheme", "int8"];
    let short = edited(t, "short", |c| c["hybrid_override_pattern"] = "M-M*".into());
    refused_with(&short, &t.join("o1"), &int8, "has 4 layers");
    let letter = edited(t, "letter", |c| c["hybrid_override_pattern"] = "M-M*X".into());
    refused_with(&letter, &t.join("o2"), &int8, "`X`");
    let moe = edited(t, "moe", |c| c["hybrid_override_pattern"] = "M-M*E".into());
    refused_with(&moe, &t.join("o3"), &int8, "num_experts_per_tok");
    let vocab = edited(t, "vocab", |c| c["vocab_size"] = 510.into());
    refused_with(&vocab, &t.join("o4"), &int8, "multiple of 8");
    // Layer 1 said to be Mamba: its MLP tensors have no counterpart there.
    let kind = edited(t, "kind", |c| c["hybrid_override_pattern"] = "MMM*-".into());
    refused_with(&kind, &t.join("o5"), &int8, "backbone.layers.1.");
    for o in ["o1", "o2", "o3", "o4", "o5"] {
        assert!(!t.join(o).exists(), "{o} written");
    }
}
