//! DeepSeek-V3/R1 and Kimi K2 → GGUF `deepseek2` on the cpu target, judged by llama.cpp itself on
//! the checkpoints transformers wrote (`fixtures/families/{deepseek-v3,deepseek-v3-fp8,kimi-k2}`,
//! see PROVENANCE.md): our int8 GGUF equals `convert_hf_to_gguf.py --outtype q8_0` (every key but
//! `general.*`, including Kimi's tiktoken vocabulary, every tensor's name, shape, type and bytes:
//! the MLA tensors, the `kv_b` split into `attn_k_b`/`attn_v_b`, stacked experts, the dropped MTP
//! layer); our F16 equals `--outtype f16`; `--gguf-type q4_k_m` equals `llama-quantize Q4_K_M`;
//! `llama-perplexity` gives the same figure on ours and on the reference. Bad MLA/routing
//! configs are refused with exit 2 before any output.
use crate::common;
use crate::families_cpu::{compare, q4km_vs_llama_quantize, refused_with};

use common::llama::{llama_dir, logprobs};
use std::path::Path;

fn ppl_text(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("ppl.txt");
    let para = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. \
                modelpack quantizes Hugging Face checkpoints to GGUF and compressed-tensors packages. \
                Mixture of experts: a router picks the top-k experts for each token. ";
    std::fs::write(&p, para.repeat(12)).unwrap();
    p
}

fn kv(py: &Path, gguf: &Path) -> serde_json::Value {
    let script = "import sys, json, gguf\nr = gguf.GGUFReader(sys.argv[1])\nprint(json.dumps({k: f.contents() for k, f in r.fields.items() if not k.startswith('GGUF.') and k not in ('tokenizer.ggml.tokens', 'tokenizer.ggml.merges', 'tokenizer.ggml.token_type')}))";
    serde_json::from_str(&common::run_python(py, script, &[gguf.as_os_str()])).unwrap()
}

/// `--scheme int8` equals the converter's Q8_0 reference on DeepSeek-V3 (q_lora, group routing
/// 2/1, yarn, an MTP layer that both drop) and Kimi K2 (raw `kimi_k2` config, legacy
/// `rope_scaling`, tiktoken vocabulary → `kimi-k2`); llama.cpp loads ours and measures the same
/// perplexity as on the reference.
#[test]
fn deepseek2_int8_equals_the_converters_q8_0_reference() {
    let Some(py) = common::python() else { return };
    let llama = llama_dir();
    let tmp = tempfile::tempdir().unwrap();
    let text = ppl_text(tmp.path());
    for family in ["deepseek-v3", "kimi-k2"] {
        let reference = common::fixture(&format!("families/{family}/ref-q8_0.gguf"));
        let pkg = tmp.path().join(family);
        let report = common::quantize(
            &common::fixture(&format!("families/{family}")),
            &pkg,
            &["--target", "cpu", "--scheme", "int8"],
        );
        let r = compare(&py, &pkg.join("model.gguf"), &reference);
        assert_eq!(r["arch"], serde_json::json!(["deepseek2", "deepseek2"]), "{family}");
        assert_eq!(r["kv"], serde_json::json!([]), "{family}: keys differ: {r}");
        assert_eq!(r["tensors"], serde_json::json!([]), "{family}: tensors differ: {r}");
        assert!(r["types"]["Q8_0"].as_u64().unwrap() > 0, "{family}: {r}");
        // What the equality covers, read from the reference (not from our output).
        let f = kv(&py, &reference);
        let k = |s: &str| f[format!("deepseek2.{s}")].clone();
        assert_eq!(k("attention.head_count_kv"), 1);
        assert_eq!(k("attention.key_length_mla"), 96);
        assert_eq!(k("attention.q_lora_rank"), 96);
        assert_eq!(k("expert_gating_func"), 2);
        assert_eq!(k("rope.scaling.type"), "yarn");
        let dropped = report["dropped"].as_array().unwrap();
        match family {
            "deepseek-v3" => {
                assert_eq!((k("expert_group_count"), k("expert_group_used_count")), (2.into(), 1.into()));
                assert_eq!(k("block_count"), 3, "the MTP layer is not a block");
                assert_eq!(f["tokenizer.ggml.pre"], "deepseek-v3");
                assert_eq!(dropped.len(), 6, "{report}");
                assert!(dropped.iter().all(|d| d["tensor"].as_str().unwrap().starts_with("model.layers.3.")));
            }
            "kimi-k2" => {
                assert_eq!(f["tokenizer.ggml.pre"], "kimi-k2");
                assert_eq!(f["tokenizer.ggml.bos_token_id"], 384);
                assert!(dropped.is_empty());
            }
            _ => unreachable!(),
        }
        if let Some(l) = &llama {
            let (ours, theirs) = (logprobs(l, &pkg.join("model.gguf"), &text), logprobs(l, &reference, &text));
            assert!(ours == theirs, "{family}: llama-perplexity's log-probs differ");
        }
    }
}

/// F16 output equals the converter's `--outtype f16` (the output projection asked in F16 too:
/// our default keeps it at 8 bits).
#[test]
fn deepseek2_f16_equals_the_converters_f16_reference() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("f16");
    common::quantize(
        &common::fixture("families/deepseek-v3"),
        &pkg,
        &["--target", "cpu", "--scheme", "int8", "--gguf-type", "f16", "--tensor-type", "^output\\.weight$=f16"],
    );
    let r = compare(&py, &pkg.join("model.gguf"), &common::fixture("families/deepseek-v3/ref-f16.gguf"));
    assert_eq!(r["kv"], serde_json::json!([]), "{r}");
    assert_eq!(r["tensors"], serde_json::json!([]), "{r}");
    assert!(r["types"]["F16"].as_u64().unwrap() >= 30, "{r}");
}

/// `--gguf-type q4_k_m` equals llama-quantize on both (attn_k_b / attn_v_b / q_b rows of 64, 128
/// and 96 fall back to Q5_0, ffn_down by block number).
#[test]
fn deepseek2_q4_k_m_equals_llama_quantize() {
    let Some(py) = common::python() else { return };
    let Some(llama) = llama_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for family in ["deepseek-v3", "kimi-k2"] {
        let dir = tmp.path().join(family);
        std::fs::create_dir(&dir).unwrap();
        let r = q4km_vs_llama_quantize(&py, &llama, &common::fixture(&format!("families/{family}")), &dir, &[]);
        assert_eq!(r["tensors"], serde_json::json!([]), "{family}: {r}");
        assert!(r["types"]["Q5_0"].as_u64().unwrap() >= 10, "{family}: {r}");
    }
}

/// The FP8 release format (F8_E4M3 + 128×128 `weight_scale_inv`, partial edge blocks) gives the
/// GGUF the converter makes from the same FP8 files.
#[test]
fn deepseek2_fp8_int8_equals_the_converters_reference() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("fp8");
    common::quantize(&common::fixture("families/deepseek-v3-fp8"), &pkg, &["--target", "cpu", "--scheme", "int8"]);
    let r = compare(&py, &pkg.join("model.gguf"), &common::fixture("families/deepseek-v3-fp8/ref-q8_0.gguf"));
    assert_eq!(r["kv"], serde_json::json!([]), "{r}");
    assert_eq!(r["tensors"], serde_json::json!([]), "{r}");
}

/// A copy of the families/deepseek-v3 fixture with config.json edited by `edit`.
fn edited(tmp: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    common::edited_fixture("families/deepseek-v3", tmp, name, edit)
}

/// MLA dimensions contradicting the tensors, group routing llama.cpp cannot run, a softmax
/// `scoring_func`, and an MTP-less checkpoint claiming fewer layers than it holds: exit 2 naming
/// the field or tensor, no output. A `tiktoken.model` outside Kimi K2 is refused too.
#[test]
fn bad_deepseek_configs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let int8 = ["--scheme", "int8"];
    let kv_lora = edited(t, "kvlora", |c| c["kv_lora_rank"] = 64.into());
    refused_with(&kv_lora, &t.join("o1"), &int8, "config.json implies");
    let groups = edited(t, "groups", |c| c["n_group"] = 3.into());
    refused_with(&groups, &t.join("o2"), &int8, "n_group");
    let topk = edited(t, "topk", |c| c["topk_group"] = 2.into());
    refused_with(&topk, &t.join("o3"), &int8, "topk_group");
    let softmax = edited(t, "softmax", |c| c["scoring_func"] = "softmax".into());
    refused_with(&softmax, &t.join("o4"), &int8, "scoring_func");
    let nope = edited(t, "nope", |c| c["qk_nope_head_dim"] = 32.into());
    refused_with(&nope, &t.join("o5"), &int8, "kv_b_proj.weight");
    let no_q_lora = edited(t, "no-q-lora", |c| c["q_lora_rank"] = serde_json::Value::Null);
    refused_with(&no_q_lora, &t.join("o6"), &int8, "self_attn.q_a_");
    let tt = edited(t, "tiktoken", |_| {});
    std::fs::remove_file(tt.join("tokenizer.json")).unwrap();
    std::fs::copy(common::fixture("families/kimi-k2/tiktoken.model"), tt.join("tiktoken.model")).unwrap();
    refused_with(&tt, &t.join("o7"), &int8, "only understood for Kimi K2");
}
