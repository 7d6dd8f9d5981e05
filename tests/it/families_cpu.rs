//! The cpu target on the MoE-era families (Qwen3, Qwen3-MoE, GLM-4, GLM-4.5, MiniMax-M2), judged
//! without our code: small random checkpoints are written with numpy/safetensors, quantized with
//! `--scheme int8`, and the `gguf` package (0.19) checks the GGUF: its own `TensorNameMap` for
//! the names, numpy `np.stack` for the expert stacking (per-expert and fused transformers-5
//! layouts), `gguf.quants.quantize` for the Q8_0 bytes, F32 for norms, biases and routers.
//! Bad MoE input (a missing expert, a config contradicting the tensors) is refused with exit 2
//! before any output exists.
//!
//! Then llama.cpp itself is the judge, on the checkpoints transformers wrote
//! (`fixtures/families`, see its PROVENANCE.md): our int8 GGUF equals `convert_hf_to_gguf.py
//! --outtype q8_0` (every key but `general.*`, tensor names, shapes, types and bytes), from both
//! expert layouts, and `llama-simple` generates the same text from both; `--gguf-type q4_k_m`
//! equals `llama-quantize … Q4_K_M` of our F32 GGUF tensor by tensor on every family, and on a
//! generated 8-expert model whose expert rows are not whole 256-blocks (llama-quantize's
//! 8-expert bumps and row fallbacks).
use crate::common;

use common::llama::{llama_dir, run};
use std::path::Path;
use std::process::Command;

/// Writes a checkpoint of one family into argv[1]. argv[2] = family, argv[3] = "fused" to write
/// the transformers-5 fused expert layout (`experts.gate_up_proj [E,2F,H]`, `down_proj [E,H,F]`).
const GENERATOR: &str = r#"
import sys, json, shutil, numpy as np
from safetensors.numpy import save_file
d, fam, layout, fixtures = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rng = np.random.default_rng(11)
H, HEADS, KV, HD, V, L = 256, 2, 1, 128, 280, 2
E, F, FF = 4, 256, 512
if len(sys.argv) > 5:
    E, F, L = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
def w(*shape, s=0.5): return (rng.standard_normal(shape) * s).astype(np.float16)
def norm(n): return (1 + 0.1 * rng.standard_normal(n)).astype(np.float16)
t = {"model.embed_tokens.weight": w(V, H), "model.norm.weight": norm(H), "lm_head.weight": w(V, H)}
cfg = {"hidden_size": H, "num_attention_heads": HEADS, "num_key_value_heads": KV, "head_dim": HD,
       "vocab_size": V, "num_hidden_layers": L, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
       "tie_word_embeddings": False, "torch_dtype": "float16"}
def attn(p, bias=False, qk=None):
    t[p + "input_layernorm.weight"] = norm(H)
    t[p + "self_attn.q_proj.weight"] = w(HEADS * HD, H)
    t[p + "self_attn.k_proj.weight"] = w(KV * HD, H)
    t[p + "self_attn.v_proj.weight"] = w(KV * HD, H)
    t[p + "self_attn.o_proj.weight"] = w(H, HEADS * HD)
    if bias:
        t[p + "self_attn.q_proj.bias"] = w(HEADS * HD)
        t[p + "self_attn.k_proj.bias"] = w(KV * HD)
        t[p + "self_attn.v_proj.bias"] = w(KV * HD)
    if qk == "head":
        t[p + "self_attn.q_norm.weight"] = norm(HD); t[p + "self_attn.k_norm.weight"] = norm(HD)
    if qk == "full":
        t[p + "self_attn.q_norm.weight"] = norm(HEADS * HD); t[p + "self_attn.k_norm.weight"] = norm(KV * HD)
def swiglu(p, ff):
    t[p + "gate_proj.weight"] = w(ff, H); t[p + "up_proj.weight"] = w(ff, H); t[p + "down_proj.weight"] = w(H, ff)
def experts(p, names):
    if layout == "fused":
        t[p + "gate_up_proj"] = w(E, 2 * F, H); t[p + "down_proj"] = w(E, H, F)
    else:
        for e in range(E):
            t[f"{p}{e}.{names[0]}.weight"] = w(F, H); t[f"{p}{e}.{names[1]}.weight"] = w(F, H)
            t[f"{p}{e}.{names[2]}.weight"] = w(H, F)
if fam == "qwen3":
    cfg.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3", intermediate_size=FF,
               rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    for l in range(L):
        p = f"model.layers.{l}."; attn(p, qk="head"); t[p + "post_attention_layernorm.weight"] = norm(H); swiglu(p + "mlp.", FF)
elif fam == "qwen3moe":
    cfg.update(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", intermediate_size=FF,
               num_experts=E, num_experts_per_tok=2, moe_intermediate_size=F, norm_topk_prob=True,
               decoder_sparse_step=1, mlp_only_layers=[], rope_theta=1e6)
    for l in range(L):
        p = f"model.layers.{l}."; attn(p, qk="head"); t[p + "post_attention_layernorm.weight"] = norm(H)
        t[p + "mlp.gate.weight"] = w(E, H); experts(p + "mlp.experts.", ["gate_proj", "up_proj", "down_proj"])
elif fam == "glm4":
    cfg.update(architectures=["Glm4ForCausalLM"], model_type="glm4", intermediate_size=FF,
               partial_rotary_factor=0.5, attention_bias=True, rope_theta=1e4)
    for l in range(L):
        p = f"model.layers.{l}."; attn(p, bias=True)
        for n in ["post_self_attn_layernorm", "post_attention_layernorm", "post_mlp_layernorm"]:
            t[p + n + ".weight"] = norm(H)
        t[p + "mlp.gate_up_proj.weight"] = w(2 * FF, H); t[p + "mlp.down_proj.weight"] = w(H, FF)
elif fam == "glm4moe":
    cfg.update(architectures=["Glm4MoeForCausalLM"], model_type="glm4_moe", intermediate_size=FF,
               n_routed_experts=E, num_experts_per_tok=2, moe_intermediate_size=F, n_shared_experts=1,
               first_k_dense_replace=1, routed_scaling_factor=2.5, norm_topk_prob=True, n_group=1,
               topk_group=1, num_nextn_predict_layers=1, use_qk_norm=True, attention_bias=True,
               rope_parameters={"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5})
    for l in range(L + 1):
        p = f"model.layers.{l}."; attn(p, bias=True, qk="head"); t[p + "post_attention_layernorm.weight"] = norm(H)
        if l == 0:
            swiglu(p + "mlp.", FF); continue
        t[p + "mlp.gate.weight"] = w(E, H); t[p + "mlp.gate.e_score_correction_bias"] = w(E).astype(np.float32)
        experts(p + "mlp.experts.", ["gate_proj", "up_proj", "down_proj"]); swiglu(p + "mlp.shared_experts.", F)
        if l == L:
            t[p + "eh_proj.weight"] = w(H, 2 * H)
            for n in ["enorm", "hnorm", "shared_head.norm"]:
                t[p + n + ".weight"] = norm(H)
elif fam == "minimax":
    cfg.update(architectures=["MiniMaxM2ForCausalLM"], model_type="minimax_m2", intermediate_size=F,
               num_local_experts=E, num_experts_per_tok=2, rotary_dim=64, scoring_func="sigmoid",
               use_routing_bias=True, rope_theta=5e6)
    for l in range(L):
        p = f"model.layers.{l}."; attn(p, qk="full"); t[p + "post_attention_layernorm.weight"] = norm(H)
        t[p + "block_sparse_moe.gate.weight"] = w(E, H)
        t[p + "block_sparse_moe.e_score_correction_bias"] = w(E).astype(np.float32)
        experts(p + "block_sparse_moe.experts.", ["w1", "w3", "w2"])
save_file(t, d + "/model.safetensors", metadata={"format": "pt"})
json.dump(cfg, open(d + "/config.json", "w"), indent=1)
# The tiny fixture's byte-level BPE tokenizer, with GLM's special tokens added.
tj = json.load(open(fixtures + "/tiny-qwen2/tokenizer.json"))
for i, c in enumerate(["<|endoftext|>", "[gMASK]", "<|user|>", "<|observation|>"]):
    tj["added_tokens"].append({"id": 272 + i, "content": c, "single_word": False, "lstrip": False,
                               "rstrip": False, "normalized": False, "special": True})
json.dump(tj, open(d + "/tokenizer.json", "w"))
shutil.copy(fixtures + "/tiny-qwen2/tokenizer_config.json", d + "/tokenizer_config.json")
"#;

/// Judges our GGUF (argv[1]) against the checkpoint (argv[2]) with the `gguf` package alone.
const JUDGE: &str = r#"
import sys, json, glob, re, numpy as np, gguf
gg, src = sys.argv[1], sys.argv[2]
cfg = json.load(open(src + "/config.json"))
w = {}
for f in sorted(glob.glob(src + "/*.safetensors")):
    raw = open(f, "rb").read(); n = int.from_bytes(raw[:8], "little"); hdr = json.loads(raw[8:8 + n])
    for k, v in hdr.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; dt = {"F16": np.float16, "F32": np.float32}[v["dtype"]]
        w[k] = np.frombuffer(raw[8 + n + s: 8 + n + e], dt).reshape(v["shape"]).astype(np.float32)
r = gguf.GGUFReader(gg)
arch_name = bytes(r.fields["general.architecture"].parts[-1]).decode()
arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch_name]
blocks = int(r.fields[arch_name + ".block_count"].parts[-1][0])
tm = gguf.get_tensor_name_map(arch, blocks)
want, stacks = {}, {}
for name, a in w.items():
    m = re.match(r"(model\.layers\.\d+\.(?:mlp|block_sparse_moe)\.experts)\.(\d+)\.(\w+)\.weight$", name)
    if m:
        stacks.setdefault(m[1] + "." + m[3], {})[int(m[2])] = a; continue
    m = re.match(r"(model\.layers\.\d+\.(?:mlp|block_sparse_moe)\.experts)\.gate_up_proj$", name)
    if m:
        f = a.shape[1] // 2
        gate, up = ("w1", "w3") if "block_sparse_moe" in name else ("gate_proj", "up_proj")
        want[tm.get_name(m[1] + "." + gate + ".weight", try_suffixes=(".weight",))] = a[:, :f]
        want[tm.get_name(m[1] + "." + up + ".weight", try_suffixes=(".weight",))] = a[:, f:]
        continue
    if name.endswith("experts.down_proj"):
        down = name[: -len("down_proj")] + ("w2" if "block_sparse_moe" in name else "down_proj")
        want[tm.get_name(down + ".weight", try_suffixes=(".weight",))] = a; continue
    n2 = name.replace("e_score_correction_bias", "e_score_correction.bias")
    g = tm.get_name(n2, try_suffixes=(".weight", ".bias"))
    assert g is not None, name
    want[g] = a
for base, d in stacks.items():
    want[tm.get_name(base + ".weight", try_suffixes=(".weight",))] = np.stack([d[e] for e in sorted(d)])
got = {t.name: t for t in r.tensors}
mism = []
for name, a in want.items():
    t = got.get(name)
    if t is None: mism.append(f"missing {name}"); continue
    if [int(x) for x in t.shape] != list(a.shape[::-1]): mism.append(f"shape {name}"); continue
    ty = t.tensor_type.name
    router = name.endswith("ffn_gate_inp.weight")
    if a.ndim == 1 or router:
        if ty != "F32" or not np.array_equal(np.asarray(t.data).reshape(a.shape), a): mism.append(f"f32 {name} {ty}")
    else:
        if ty != "Q8_0": mism.append(f"type {name} {ty}"); continue
        ref = gguf.quants.quantize(a.reshape(-1, a.shape[-1]), gguf.GGMLQuantizationType.Q8_0)
        if ref.tobytes() != np.asarray(t.data).tobytes(): mism.append(f"bytes {name}")
extra = sorted(set(got) - set(want))
fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.") and not k.startswith("tokenizer.ggml.tokens") and not k.startswith("tokenizer.ggml.merges") and not k.startswith("tokenizer.ggml.token_type")}
print(json.dumps({"mismatches": mism, "extra": extra, "checked": len(want), "fields": fields}))
"#;

fn make(py: &Path, dir: &Path, family: &str, layout: &str) {
    make_sized(py, dir, family, layout, &[]);
}

/// [`make`] with `[experts, expert rows, layers]`.
fn make_sized(py: &Path, dir: &Path, family: &str, layout: &str, sizes: &[usize]) {
    std::fs::create_dir_all(dir).unwrap();
    let fixtures = common::fixture("");
    let sizes: Vec<String> = sizes.iter().map(usize::to_string).collect();
    let mut args: Vec<&std::ffi::OsStr> = vec![dir.as_os_str(), family.as_ref(), layout.as_ref(), fixtures.as_os_str()];
    args.extend(sizes.iter().map(|s| std::ffi::OsStr::new(s.as_str())));
    common::run_python(py, GENERATOR, &args);
}

fn judge(py: &Path, pkg: &Path, src: &Path) -> serde_json::Value {
    let out = common::run_python(py, JUDGE, &[pkg.join("model.gguf").as_os_str(), src.as_os_str()]);
    serde_json::from_str(&out).unwrap()
}

/// Every family, int8: names by gguf's TensorNameMap, stacked experts by np.stack, Q8_0 bytes by
/// gguf.quants, norms/biases/routers exact F32; and the family keys the reference writes.
#[test]
fn int8_gguf_of_every_family_matches_the_gguf_package() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (family, arch, tensors) in [
        ("qwen3", "qwen3", 3 + 2 * 11),
        ("qwen3moe", "qwen3moe", 3 + 2 * 12),
        ("glm4", "glm4", 3 + 2 * 13),
        ("glm4moe", "glm4moe", 3 + 14 + 2 * 19 + 4),
        ("minimax", "minimax-m2", 3 + 2 * 13),
    ] {
        let src = tmp.path().join(family);
        make(&py, &src, family, "per-expert");
        let pkg = tmp.path().join(format!("{family}-q8"));
        common::quantize(&src, &pkg, &["--target", "cpu", "--scheme", "int8", "--no-progress"]);
        let r = judge(&py, &pkg, &src);
        assert_eq!(r["mismatches"], serde_json::json!([]), "{family}: {r}");
        assert_eq!(r["extra"], serde_json::json!([]), "{family}");
        assert_eq!(r["checked"], tensors, "{family}");
        let f = &r["fields"];
        assert_eq!(f["general.architecture"], arch);
        let k = |s: &str| f[format!("{arch}.{s}")].clone();
        match family {
            "qwen3" => {
                assert_eq!(k("attention.key_length"), 128);
                assert!(k("rope.dimension_count").is_null(), "qwen3 writes no rope.dimension_count");
                assert_eq!(f["tokenizer.ggml.pre"], "qwen2");
            }
            "qwen3moe" => {
                assert_eq!((k("expert_count"), k("expert_used_count")), (4.into(), 2.into()));
                assert_eq!(k("expert_feed_forward_length"), 256);
            }
            "glm4" => {
                assert_eq!(k("rope.dimension_count"), 64);
                assert_eq!(f["tokenizer.ggml.pre"], "glm4");
                assert_eq!(f["tokenizer.ggml.eot_token_id"], 274);
            }
            "glm4moe" => {
                assert_eq!(k("block_count"), 3, "MTP layer counted");
                assert_eq!(k("nextn_predict_layers"), 1);
                assert_eq!(k("leading_dense_block_count"), 1);
                assert_eq!(k("expert_shared_count"), 1);
                assert_eq!(k("expert_gating_func"), 2);
                assert_eq!(k("expert_weights_norm"), true);
                assert_eq!(k("rope.dimension_count"), 64);
                assert_eq!(f["tokenizer.ggml.eom_token_id"], 275);
            }
            "minimax" => {
                assert_eq!(k("expert_gating_func"), 2);
                assert_eq!(k("rope.dimension_count"), 64);
                assert_eq!(k("expert_feed_forward_length"), 256);
                assert_eq!(f["tokenizer.ggml.pre"], "minimax-m2");
            }
            _ => unreachable!(),
        }
    }
}

/// The fused transformers-5 expert layout gives the same GGUF as the per-expert one (the judge
/// splits gate/up itself), for Qwen3-MoE, GLM-4.5 and MiniMax-M2.
#[test]
fn fused_expert_layout_is_stacked_like_per_expert() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for family in ["qwen3moe", "glm4moe", "minimax"] {
        let src = tmp.path().join(format!("{family}-fused"));
        make(&py, &src, family, "fused");
        let pkg = tmp.path().join(format!("{family}-fused-q8"));
        common::quantize(&src, &pkg, &["--target", "cpu", "--scheme", "int8", "--no-progress"]);
        let r = judge(&py, &pkg, &src);
        assert_eq!(r["mismatches"], serde_json::json!([]), "{family}: {r}");
        assert_eq!(r["extra"], serde_json::json!([]), "{family}");
    }
}

fn refused(src: &Path, out: &Path, needle: &str) {
    refused_with(src, out, &["--scheme", "int8"], needle);
}

pub(crate) fn refused_with(src: &Path, out: &Path, args: &[&str], needle: &str) {
    let o = common::modelpack()
        .arg("quantize")
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(["--target", "cpu", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stdout));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(needle), "expected `{needle}` in {text}");
    assert!(!out.exists(), "nothing may be written for a refused input");
}

/// A missing expert, an expert count or head size contradicting config.json, a missing router:
/// exit 2 naming the tensor, no output. An unknown architecture names the supported ones.
#[test]
fn bad_moe_checkpoints_are_refused_naming_the_tensor() {
    let Some(py) = common::python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    make(&py, &base, "qwen3moe", "per-expert");
    let edit = |name: &str, script: &str| -> std::path::PathBuf {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(base.join(f), d.join(f)).unwrap();
        }
        let prelude = "import sys, json\nfrom safetensors.numpy import load_file, save_file\nsrc, d = sys.argv[1], sys.argv[2]\nt = load_file(src + '/model.safetensors')\ncfg = json.load(open(d + '/config.json'))\n";
        let tail = "\nsave_file(t, d + '/model.safetensors', metadata={'format': 'pt'})\njson.dump(cfg, open(d + '/config.json', 'w'))\n";
        common::run_python(&py, &format!("{prelude}{script}{tail}"), &[base.as_os_str(), d.as_os_str()]);
        d
    };
    let missing = edit("missing", "del t['model.layers.1.mlp.experts.2.up_proj.weight']");
    refused(&missing, &tmp.path().join("o1"), "model.layers.1.mlp.experts.2.up_proj.weight");
    let count = edit("count", "cfg['num_experts'] = 3");
    refused(&count, &tmp.path().join("o2"), "config.json has 3 experts");
    let router = edit("router", "del t['model.layers.0.mlp.gate.weight']");
    refused(&router, &tmp.path().join("o3"), "model.layers.0.mlp.gate.weight");
    let heads = edit("heads", "cfg['head_dim'] = 64");
    refused(&heads, &tmp.path().join("o4"), "config.json implies");
    let more = edit(
        "more",
        "import numpy as np\ncfg['num_experts'] = 5\nfor l in (0, 1): t[f'model.layers.{l}.mlp.gate.weight'] = np.zeros((5, 256), np.float16)",
    );
    refused(&more, &tmp.path().join("o5"), "is missing: expert 4 of 5");
    let arch = edit("arch", "cfg['architectures'] = ['JambaForCausalLM']");
    refused(&arch, &tmp.path().join("o6"), "Qwen3MoeForCausalLM, Glm4ForCausalLM");
}

/// Compares two GGUFs with the `gguf` package: every key but `general.*` (value), every tensor
/// (shape, type, bytes). Prints the differences as JSON.
const COMPARE: &str = r#"
import sys, json, numpy as np, gguf
ours, ref = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2])
def fields(r):
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith(("GGUF.", "general."))}
fo, fr = fields(ours), fields(ref)
kv = [k for k in sorted(set(fo) | set(fr)) if fo.get(k) != fr.get(k)]
to = {t.name: t for t in ours.tensors}; tr = {t.name: t for t in ref.tensors}
bad, types = [], {}
for n in sorted(set(to) | set(tr)):
    a, b = to.get(n), tr.get(n)
    if a is None or b is None: bad.append(f"{n}: only in {'ref' if a is None else 'ours'}"); continue
    if list(a.shape) != list(b.shape): bad.append(f"{n}: shape {list(a.shape)} vs {list(b.shape)}"); continue
    if a.tensor_type != b.tensor_type: bad.append(f"{n}: {a.tensor_type.name} vs {b.tensor_type.name}"); continue
    types[a.tensor_type.name] = types.get(a.tensor_type.name, 0) + 1
    if np.asarray(a.data).tobytes() != np.asarray(b.data).tobytes(): bad.append(f"{n}: bytes ({a.tensor_type.name})")
arch = bytes(ref.fields["general.architecture"].parts[-1]).decode()
ours_arch = bytes(ours.fields["general.architecture"].parts[-1]).decode()
print(json.dumps({"kv": kv, "tensors": bad, "types": types, "n": len(tr), "arch": [ours_arch, arch]}))
"#;

pub(crate) fn compare(py: &Path, ours: &Path, reference: &Path) -> serde_json::Value {
    let out = common::run_python(py, COMPARE, &[ours.as_os_str(), reference.as_os_str()]);
    serde_json::from_str(&out).unwrap()
}

const FAMILIES: [&str; 5] = ["qwen3", "qwen3-moe", "glm4", "glm4-moe", "minimax-m2"];

/// Greedy text of `llama-simple` (stdout only).
fn generate(llama: &Path, gguf: &Path) -> String {
    let out = Command::new(llama.join("bin/llama-simple"))
        .arg("-m")
        .arg(gguf)
        .args(["-n", "16", "the capital of"])
        .output()
        .unwrap();
    assert!(out.status.success(), "llama-simple on {}: {}", gguf.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--scheme int8` equals the converter's Q8_0 reference, from both expert layouts; llama.cpp
/// loads ours and generates what it generates from the reference.
#[test]
fn int8_equals_the_converters_q8_0_reference() {
    let Some(py) = common::python() else { return };
    let llama = llama_dir();
    let tmp = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let reference = common::fixture(&format!("families/{family}/ref-q8_0.gguf"));
        let mut inputs = vec![family.to_string()];
        if family.contains("moe") || family.contains("minimax") {
            inputs.push(format!("{family}-fused"));
        }
        for input in inputs {
            let pkg = tmp.path().join(&input);
            common::quantize(
                &common::fixture(&format!("families/{input}")),
                &pkg,
                &["--target", "cpu", "--scheme", "int8"],
            );
            let r = compare(&py, &pkg.join("model.gguf"), &reference);
            assert_eq!(r["arch"][0], r["arch"][1], "{input}");
            assert_eq!(r["kv"], serde_json::json!([]), "{input}: keys differ: {r}");
            assert_eq!(r["tensors"], serde_json::json!([]), "{input}: tensors differ: {r}");
            assert!(r["types"]["Q8_0"].as_u64().unwrap() > 0, "{input}: {r}");
            if let Some(l) = &llama {
                let (ours, theirs) = (generate(l, &pkg.join("model.gguf")), generate(l, &reference));
                assert!(ours.len() > "the capital of".len(), "{input}: nothing generated: {ours:?}");
                assert_eq!(ours, theirs, "{input}: llama.cpp generates differently");
            }
        }
    }
}

/// Our F32 GGUF (llama-quantize's input) and our Q4_K_M of `src`, then llama-quantize Q4_K_M of
/// the F32 one: the comparison result. `extra` goes to both tools (e.g. `--tensor-type`).
pub(crate) fn q4km_vs_llama_quantize(
    py: &Path,
    llama: &Path,
    src: &Path,
    dir: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let f32_pkg = dir.join("f32");
    common::quantize(
        src,
        &f32_pkg,
        &[
            "--target",
            "cpu",
            "--scheme",
            "int8",
            "--gguf-type",
            "f32",
            "--tensor-type",
            "^(output|token_embd)\\.weight$=f32",
        ],
    );
    let ours = dir.join("q4km");
    let mut args = vec!["--target", "cpu", "--scheme", "int4", "--gguf-type", "q4_k_m", "--method", "rtn"];
    args.extend(extra);
    common::quantize(src, &ours, &args);
    let theirs = dir.join("llama-q4km.gguf");
    run(Command::new(llama.join("bin/llama-quantize"))
        .args(extra)
        .arg(f32_pkg.join("model.gguf"))
        .arg(&theirs)
        .args(["Q4_K_M", "2"]));
    compare(py, &ours.join("model.gguf"), &theirs)
}

/// `--gguf-type q4_k_m` equals llama-quantize on every family (ffn_down_exps / _shexp by block
/// number, routers left in F32, tied embeddings as the output).
#[test]
fn q4_k_m_equals_llama_quantize_on_every_family() {
    let Some(py) = common::python() else { return };
    let Some(llama) = llama_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let dir = tmp.path().join(family);
        std::fs::create_dir(&dir).unwrap();
        let r = q4km_vs_llama_quantize(&py, &llama, &common::fixture(&format!("families/{family}")), &dir, &[]);
        assert_eq!(r["tensors"], serde_json::json!([]), "{family}: {r}");
        assert!(r["types"]["Q6_K"].as_u64().unwrap() >= 3, "{family}: {r}");
    }
}

/// Exactly 8 experts (llama-quantize's Mixtral rules: attn_v and attn_k in Q8_0) and expert rows
/// of 352 (ffn_down_exps falls back: Q4_K → Q5_0, Q6_K → Q8_0). attn_output would be Q5_K, which
/// this build does not write, so both tools get `--tensor-type attn_output=q4_k`.
#[test]
fn q4_k_m_eight_experts_and_fallbacks_equal_llama_quantize() {
    let Some(py) = common::python() else { return };
    let Some(llama) = llama_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_sized(&py, &src, "qwen3moe", "per-expert", &[8, 352, 8]);
    let r = q4km_vs_llama_quantize(&py, &llama, &src, tmp.path(), &["--tensor-type", "attn_output=q4_k"]);
    assert_eq!(r["tensors"], serde_json::json!([]), "{r}");
    // attn_v and attn_k of 8 layers in Q8_0, plus the Q6_K→Q8_0 fallbacks of ffn_down_exps.
    assert!(r["types"]["Q8_0"].as_u64().unwrap() >= 16 + 4, "{r}");
    assert!(r["types"]["Q5_0"].as_u64().unwrap() >= 1, "{r}");
    // Without the override, Q5_K is refused up front, naming the tensor (exit 2, no output).
    refused_with(&src, &tmp.path().join("o"), &["--scheme", "int4", "--gguf-type", "q4_k_m"], "attn_output");
}
