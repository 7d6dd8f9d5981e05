//! End-to-end `modelpack quantize`: the packages are judged by external readers (the `gguf`
//! package's own quantizers, files written by the compressed-tensors library, `model_signing`),
//! never by values our code produced.
use crate::common;

use std::path::{Path, PathBuf};

use crate::common::quantize;

/// For every tensor of our GGUF: the `gguf` package reads it, and each quantized tensor's bytes
/// equal `gguf.quants.quantize` of the source weights (llama.cpp's q/k permutation applied with
/// numpy, as llama.cpp's converter does).
const GGUF_JUDGE: &str = r#"
import sys, json, glob, numpy as np, gguf
from safetensors import safe_open
gg, src = sys.argv[1], sys.argv[2]
cfg = json.load(open(src + "/config.json"))
w = {}
# numpy has no bfloat16: read raw bytes through the safetensors package's own header parsing.
for f in sorted(glob.glob(src + "/*.safetensors")):
    raw = open(f, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    with safe_open(f, "np") as h:
        names = set(h.keys())
    for k, v in hdr.items():
        if k == "__metadata__": continue
        assert k in names
        s, e = v["data_offsets"]
        b = raw[8 + n + s: 8 + n + e]
        dt = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}[v["dtype"]]
        a = np.frombuffer(b, dt).reshape(v["shape"])
        w[k] = (a.astype(np.uint32) << 16).view(np.float32) if v["dtype"] == "BF16" else a.astype(np.float32)
def f32(a):
    return a
names = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
         "output_norm.weight": "model.norm.weight"}
parts = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
         "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
         "ffn_down": "mlp.down_proj"}
def hf(n):
    if n in names: return names[n]
    _, b, p, kind = n.split(".")
    return f"model.layers.{b}.{parts[p]}.{kind}"
def permute(x, heads):
    return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)
r = gguf.GGUFReader(gg)
arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
assert arch == "llama", arch
checked = 0
for t in r.tensors:
    x = f32(w[hf(t.name)])
    if t.name.endswith("attn_q.weight"): x = permute(x, cfg["num_attention_heads"])
    if t.name.endswith("attn_k.weight"): x = permute(x, cfg["num_key_value_heads"])
    ty = gguf.GGMLQuantizationType(t.tensor_type)
    if ty == gguf.GGMLQuantizationType.F32:
        want = x.astype(np.float32).tobytes()
    else:
        want = gguf.quants.quantize(x, ty).tobytes()
    got = np.asarray(t.data).tobytes()
    assert got == want, f"{t.name} ({ty.name}) differs from gguf.quants.quantize"
    assert list(reversed([int(d) for d in t.shape])) == list(x.shape), (t.name, t.shape, x.shape)
    checked += 1
f = lambda k: r.fields[k].parts[-1][0]
assert f("llama.block_count") == cfg["num_hidden_layers"]
assert f("llama.embedding_length") == cfg["hidden_size"]
assert f("llama.attention.head_count_kv") == cfg["num_key_value_heads"]
assert len(r.fields["tokenizer.ggml.tokens"].data) == cfg["vocab_size"]
print(json.dumps({"checked": checked, "file_type": int(f("general.file_type"))}))
"#;

fn gguf_judge(input: &Path, scheme: &[&str], want_file_type: u64) {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pkg");
    let mut args = vec!["--target", "cpu"];
    args.extend_from_slice(scheme);
    let report = quantize(input, &out, &args);
    assert_eq!(report["status"], "ok");
    let res = common::run_python(&py, GGUF_JUDGE, &[out.join("model.gguf").as_os_str(), input.as_os_str()]);
    let v: serde_json::Value = serde_json::from_str(res.trim()).unwrap();
    // 2 layers × 9 tensors + embedding, output, norm.
    assert_eq!(v["checked"], 21, "{res}");
    assert_eq!(v["file_type"], want_file_type, "{res}");
}

#[test]
fn cpu_int8_equals_gguf_reference_quantizer() {
    gguf_judge(&common::fixture("tiny-llama"), &["--scheme", "int8"], 7);
}

#[test]
fn cpu_int4_q4_0_equals_gguf_reference_quantizer() {
    gguf_judge(&common::fixture("tiny-llama"), &["--scheme", "int4", "--method", "rtn"], 2);
}

#[test]
fn cpu_int4_q4_1_from_f16_sharded_and_f32_equal_reference() {
    gguf_judge(&common::fixture("tiny-llama-f16"), &["--scheme", "int4", "--gguf-type", "q4_1", "--method", "rtn"], 3);
    gguf_judge(&common::fixture("tiny-llama-sharded"), &["--scheme", "int4", "--method", "rtn"], 2);
    gguf_judge(&common::fixture("tiny-llama-f32"), &["--scheme", "int8"], 7);
}

/// `--gguf-type f16|bf16|f32` is the unquantized reference: as `convert_hf_to_gguf.py --outtype`
/// (and llama-quantize, which never bumps the output of a float file), every 2-D weight is in that
/// type, the output projection and a tied embedding included; 1-D tensors are F32. The `gguf`
/// package reads the types and `gguf.quants.quantize` judges the bytes.
#[test]
fn cpu_float_gguf_types_keep_every_weight_in_that_type() {
    let Some(py) = common::python() else { return };
    const TYPES: &str = r#"
import sys, json, gguf
r = gguf.GGUFReader(sys.argv[1])
print(json.dumps({t.name: [gguf.GGMLQuantizationType(t.tensor_type).name, len(t.shape)] for t in r.tensors}))
"#;
    let tmp = tempfile::tempdir().unwrap();
    for (fixture, ty, want, file_type) in [
        ("tiny-llama", "f16", "F16", 1),
        ("tiny-llama", "bf16", "BF16", 32),
        ("tiny-llama", "f32", "F32", 0),
        ("tiny-qwen2", "f16", "F16", 1),
    ] {
        let input = common::fixture(fixture);
        if fixture == "tiny-llama" {
            gguf_judge(&input, &["--scheme", "int8", "--gguf-type", ty], file_type);
        }
        let out = tmp.path().join(format!("{fixture}-{ty}"));
        quantize(&input, &out, &["--target", "cpu", "--scheme", "int8", "--gguf-type", ty]);
        let res = common::run_python(&py, TYPES, &[out.join("model.gguf").as_os_str()]);
        let types: std::collections::BTreeMap<String, (String, usize)> = serde_json::from_str(res.trim()).unwrap();
        // The output projection (tiny-llama) or the tied embedding serving as it (tiny-qwen2).
        let output = if fixture == "tiny-llama" { "output.weight" } else { "token_embd.weight" };
        assert!(types.contains_key(output), "{fixture}: no {output}: {res}");
        assert!(types.values().any(|(_, d)| *d == 1), "{fixture}: no 1-D tensor: {res}");
        for (name, (got, dims)) in &types {
            let expect = if *dims == 1 { "F32" } else { want };
            assert_eq!(got, expect, "{fixture} --gguf-type {ty}: {name}");
        }
    }
}

fn read_st(path: &Path) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let ck = modelpack::checkpoint::Checkpoint::open(path).unwrap();
    ck.tensors()
        .map(|t| (t.name.to_string(), (t.dtype.name().to_string(), t.shape.to_vec(), t.data.to_vec())))
        .collect()
}

/// The compressed-tensors library itself wrote these packages from `dense_bf16`: our packed
/// words, scales and shapes must be the same bytes, and our config.json the same document.
#[test]
fn cuda_packages_equal_compressed_tensors_library_output() {
    let ct = common::fixture("compressed-tensors");
    for (args, want_dir) in [
        (vec!["--scheme", "int4", "--method", "rtn"], "w4a16_g128_sym"),
        (vec!["--scheme", "int8"], "w8a16_channel_sym"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("pkg");
        let mut a = vec!["--target", "cuda"];
        a.extend(args);
        quantize(&ct.join("dense_bf16"), &out, &a);
        let ours = read_st(&out.join("model.safetensors"));
        let theirs = read_st(&ct.join(want_dir).join("model.safetensors"));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{want_dir}: tensor names differ"
        );
        for (k, v) in &theirs {
            assert!(ours[k] == *v, "{want_dir}: tensor {k} differs from compressed-tensors' bytes");
        }
        let cfg = |p: PathBuf| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
        assert_eq!(
            cfg(out.join("config.json"))["quantization_config"],
            cfg(ct.join(want_dir).join("config.json"))["quantization_config"],
            "{want_dir}: quantization_config differs"
        );
    }
}

/// The numpy reference in ../shared (present beside the repo in CI) re-derives every module of
/// the asymmetric and small-group schemes the library fixtures do not cover.
#[test]
fn cuda_asymmetric_and_small_groups_pass_the_numpy_reference() {
    let Some(py) = common::python() else { return };
    let Some(judge) = common::ct_reference() else { return };
    let dense = common::fixture("compressed-tensors/dense_bf16");
    for args in [
        vec!["--scheme", "int4", "--asymmetric", "--method", "rtn"],
        vec!["--scheme", "int4", "--group-size", "32", "--method", "rtn"],
        vec!["--scheme", "int4", "--group-size", "64", "--asymmetric", "--method", "rtn"],
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("pkg");
        let mut a = vec!["--target", "cuda"];
        a.extend(args.iter().copied());
        quantize(&dense, &out, &a);
        let o = std::process::Command::new(&py).arg(&judge).arg("check").arg(&dense).arg(&out).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn output_is_identical_for_1_and_2_threads_and_repeated_runs() {
    for target in [["--target", "cpu", "--scheme", "int4"], ["--target", "cuda", "--scheme", "int4"]] {
        let tmp = tempfile::tempdir().unwrap();
        let mut trees = Vec::new();
        for (i, threads) in ["1", "2", "2"].iter().enumerate() {
            let out = tmp.path().join(format!("p{i}"));
            let mut a = target.to_vec();
            a.extend(["--threads", threads, "--sign-key"]);
            let key = common::fixture("keys/p256-pkcs8.pem");
            a.push(key.to_str().unwrap());
            quantize(&common::fixture("tiny-llama"), &out, &a);
            let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
                })
                .collect();
            files.sort();
            trees.push(files);
        }
        assert!(trees[0].iter().any(|(n, _)| n == "model.sig"));
        // Different directory names are signed under their own names: compare all but model.sig.
        let strip =
            |t: &Vec<(String, Vec<u8>)>| t.iter().filter(|(n, _)| n != "model.sig").cloned().collect::<Vec<_>>();
        assert_eq!(strip(&trees[0]), strip(&trees[1]), "{target:?}: 1 vs 2 threads");
        assert_eq!(strip(&trees[1]), strip(&trees[2]), "{target:?}: repeated run");
    }
}

#[test]
fn signed_package_verifies_with_both_tools_and_tampering_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pkg");
    let key = common::fixture("keys/p256-pkcs8.pem");
    let pubkey = common::fixture("keys/p256.pub");
    quantize(
        &common::fixture("tiny-llama"),
        &out,
        &["--target", "cpu", "--scheme", "int8", "--sign-key", key.to_str().unwrap()],
    );
    common::modelpack().arg("verify").arg(&out).arg("--key").arg(&pubkey).assert().code(0);
    if let Some(py) = common::python() {
        let ms = py.parent().unwrap().join("model_signing");
        let o = std::process::Command::new(ms)
            .args(["verify", "key"])
            .arg(&out)
            .arg("--signature")
            .arg(out.join("model.sig"))
            .arg("--public_key")
            .arg(&pubkey)
            .output()
            .unwrap();
        assert!(o.status.success(), "model_signing rejected our package: {}", String::from_utf8_lossy(&o.stderr));
    }
    let gguf = out.join("model.gguf");
    let mut b = std::fs::read(&gguf).unwrap();
    let n = b.len();
    b[n - 40] ^= 1;
    std::fs::write(&gguf, b).unwrap();
    let o = common::modelpack().arg("verify").arg(&out).arg("--key").arg(&pubkey).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("model.gguf"));
}

fn fails_cleanly(input: &Path, out: &Path, args: &[&str], code: i32, needle: &str) {
    let o = common::modelpack().arg("quantize").arg(input).arg("-o").arg(out).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: expected `{needle}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "{args:?}: a failed run left {}", out.display());
    let parent = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".modelpack-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary output left behind: {leftovers:?}");
}

/// Copy a fixture into a temp dir so a test can break it.
fn copy_fixture(name: &str, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(common::fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn hostile_inputs_fail_cleanly_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out").join("pkg");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let cpu4 = ["--target", "cpu", "--scheme", "int4"];

    let no_tok = tmp.path().join("no_tok");
    copy_fixture("tiny-llama", &no_tok);
    std::fs::remove_file(no_tok.join("tokenizer.json")).unwrap();
    fails_cleanly(&no_tok, &out, &cpu4, 2, "tokenizer.json is missing");

    let arch = tmp.path().join("arch");
    copy_fixture("tiny-llama", &arch);
    let cfg =
        std::fs::read_to_string(arch.join("config.json")).unwrap().replace("LlamaForCausalLM", "GPTBigCodeForCausalLM");
    std::fs::write(arch.join("config.json"), cfg).unwrap();
    fails_cleanly(&arch, &out, &cpu4, 2, "GPTBigCodeForCausalLM");

    let shape = tmp.path().join("shape");
    copy_fixture("tiny-llama", &shape);
    let cfg = std::fs::read_to_string(shape.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 192", "\"intermediate_size\": 128");
    std::fs::write(shape.join("config.json"), cfg).unwrap();
    fails_cleanly(&shape, &out, &cpu4, 2, "config.json implies");

    let inside = common::fixture("tiny-llama");
    let o =
        common::modelpack().arg("quantize").arg(&inside).arg("-o").arg(inside.join("pkg")).args(cpu4).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("inside the input"));
    assert!(!inside.join("pkg").exists());

    // A dense checkpoint whose config claims another quantization (pack-quantized and FP8 sources
    // are read as such; anything else needs --force-requantize).
    let requant = tmp.path().join("requant");
    copy_fixture("compressed-tensors/dense_bf16", &requant);
    let cfg = std::fs::read_to_string(requant.join("config.json")).unwrap();
    let cfg = cfg.replacen('{', "{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4},", 1);
    std::fs::write(requant.join("config.json"), cfg).unwrap();
    fails_cleanly(&requant, &out, &["--target", "cuda", "--scheme", "int4"], 2, "already has a quantization_config");

    let nan = tmp.path().join("nan");
    copy_fixture("tiny-llama-f32", &nan);
    let st = nan.join("model.safetensors");
    let ck = modelpack::checkpoint::Checkpoint::open(&nan).unwrap();
    let t = ck.tensor("model.layers.1.mlp.up_proj.weight").unwrap();
    let off = t.offset as usize + 4 * 7;
    drop(ck);
    let mut b = std::fs::read(&st).unwrap();
    b[off..off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&st, b).unwrap();
    fails_cleanly(&nan, &out, &cpu4, 2, "model.layers.1.mlp.up_proj.weight");

    // A read-only output directory: an I/O error (exit 3) unless running as root, which ignores modes.
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mut p = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o555);
    std::fs::set_permissions(&ro, p).unwrap();
    if std::fs::write(ro.join("probe"), b"x").is_err() {
        fails_cleanly(&common::fixture("tiny-llama"), &ro.join("pkg"), &cpu4, 3, "Permission denied");
    }
}

#[test]
fn refuses_non_empty_output_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pkg");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("precious"), b"keep me").unwrap();
    let o = common::modelpack()
        .arg("quantize")
        .arg(common::fixture("tiny-llama"))
        .arg("-o")
        .arg(&out)
        .args(["--target", "cpu", "--scheme", "int8"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(out.join("precious")).unwrap(), b"keep me");
    quantize(&common::fixture("tiny-llama"), &out, &["--target", "cpu", "--scheme", "int8", "--force"]);
    assert!(out.join("model.gguf").exists() && !out.join("precious").exists());
}

/// Above `--max-shard-size` the weights are split into `model-0000i-of-0000N.safetensors` with an
/// index; the shards hold exactly the tensors of the unsharded file, and the index names them.
#[test]
fn cuda_sharded_output_equals_unsharded_and_has_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    let many = tmp.path().join("many");
    // rtn: the compressed-tensors reference re-derives the bytes below.
    let args = ["--target", "cuda", "--scheme", "int4", "--group-size", "64", "--method", "rtn"];
    quantize(&common::fixture("tiny-llama"), &one, &args);
    let mut a = args.to_vec();
    a.extend(["--max-shard-size", "60KB"]);
    quantize(&common::fixture("tiny-llama"), &many, &a);
    let shards: Vec<String> = std::fs::read_dir(&many)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert!(shards.len() >= 2, "{shards:?}");
    assert!(shards.iter().all(|n| n.starts_with("model-0000") && n.contains(&format!("-of-{:05}", shards.len()))));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(many.join("model.safetensors.index.json")).unwrap()).unwrap();
    let wm = index["weight_map"].as_object().unwrap();
    let whole = read_st(&one.join("model.safetensors"));
    assert_eq!(wm.len(), whole.len());
    let total: u64 = whole.values().map(|(_, _, b)| b.len() as u64).sum();
    assert_eq!(index["metadata"]["total_size"], total);
    // The checkpoint reader cross-checks the index against every shard header.
    let split = read_st(&many);
    assert_eq!(split, whole);
    if let (Some(py), Some(judge)) = (common::python(), common::ct_reference()) {
        let o = std::process::Command::new(&py)
            .arg(&judge)
            .arg("check")
            .arg(common::fixture("tiny-llama"))
            .arg(&many)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
}

/// MoE: experts are quantized one by one; the router stays in the model dtype and is ignored.
#[test]
fn cuda_moe_router_is_ignored_and_experts_quantized() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("moe");
    std::fs::create_dir(&src).unwrap();
    let script = r#"
import sys, json, numpy as np
from safetensors.numpy import save_file
d = sys.argv[1]
rng = np.random.default_rng(7)
t = {"model.layers.0.mlp.gate.weight": rng.standard_normal((4, 64)).astype(np.float16)}
for e in range(4):
    for p, shape in (("gate_proj", (32, 64)), ("up_proj", (32, 64)), ("down_proj", (64, 32))):
        t[f"model.layers.0.mlp.experts.{e}.{p}.weight"] = (rng.standard_normal(shape) * 0.02).astype(np.float16)
t["model.embed_tokens.weight"] = rng.standard_normal((16, 64)).astype(np.float16)
save_file(t, d + "/model.safetensors", metadata={"format": "pt"})
json.dump({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "torch_dtype": "float16"}, open(d + "/config.json", "w"))
"#;
    common::run_python(&py, script, &[src.as_os_str()]);
    let out = tmp.path().join("pkg");
    quantize(&src, &out, &["--target", "cuda", "--scheme", "int4", "--group-size", "32"]);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let ignore = cfg["quantization_config"]["ignore"].as_array().unwrap();
    assert!(ignore.iter().any(|m| m == "model.layers.0.mlp.gate"), "{ignore:?}");
    let st = read_st(&out.join("model.safetensors"));
    assert_eq!(st["model.layers.0.mlp.gate.weight"].0, "F16");
    for e in 0..4 {
        let (dt, shape, _) = &st[&format!("model.layers.0.mlp.experts.{e}.down_proj.weight_packed")];
        assert_eq!((dt.as_str(), shape.clone()), ("I32", vec![64, 4]));
        assert_eq!(st[&format!("model.layers.0.mlp.experts.{e}.down_proj.weight_scale")].0, "F16");
    }
}

/// A Hugging Face cache snapshot is a directory of symlinks into a blob store: the package must
/// hold real copies (a signed package never contains links) and verify.
#[test]
fn hf_cache_snapshot_of_symlinks_gives_a_self_contained_package() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snapshot");
    std::fs::create_dir(&snap).unwrap();
    for e in std::fs::read_dir(common::fixture("tiny-llama")).unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), snap.join(e.file_name())).unwrap();
    }
    let out = tmp.path().join("pkg");
    let key = common::fixture("keys/p256-pkcs8.pem");
    quantize(&snap, &out, &["--target", "cpu", "--scheme", "int8", "--sign-key", key.to_str().unwrap()]);
    for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        let m = std::fs::symlink_metadata(out.join(name)).unwrap();
        assert!(m.is_file(), "{name} is not a regular file in the package");
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(common::fixture("tiny-llama").join(name)).unwrap()
        );
    }
    common::modelpack().arg("verify").arg(&out).arg("--key").arg(common::fixture("keys/p256.pub")).assert().code(0);
}
