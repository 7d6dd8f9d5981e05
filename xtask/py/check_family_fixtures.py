"""Torch-free check of fixtures/families (run by `cargo xtask fixtures --check` in CI).

Usage: python check_family_fixtures.py FIXTURES/families

For every family directory: config.json names the expected architecture, model.safetensors
parses and holds only BF16 weights, and each ref-<type>.gguf opens with the pinned `gguf` package
with the GGUF architecture of that family, the file type of its name, the config's block count
(+ nextn layers) and one token per vocab id. Fused variants (<family>-fused) must hold the same model as their per-expert twin:
the same non-expert tensors, byte for byte, and the same experts once split.
Exit 1 with a list of problems.
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader

# family directory -> (HF architecture, GGUF architecture)
EXPECTED = {
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "qwen3-moe": ("Qwen3MoeForCausalLM", "qwen3moe"),
    "glm4": ("Glm4ForCausalLM", "glm4"),
    "glm4-moe": ("Glm4MoeForCausalLM", "glm4moe"),
    "minimax-m2": ("MiniMaxM2ForCausalLM", "minimax-m2"),
    "deepseek-v3": ("DeepseekV3ForCausalLM", "deepseek2"),
    "deepseek-v3-fp8": ("DeepseekV3ForCausalLM", "deepseek2"),
    "kimi-k2": ("DeepseekV3ForCausalLM", "deepseek2"),
    "deci": ("DeciLMForCausalLM", "deci"),
    "nemotron-h": ("NemotronHForCausalLM", "nemotron_h"),
    "nemotron-h-moe": ("NemotronHForCausalLM", "nemotron_h_moe"),
}
# Families whose reference drops the MTP layers (block_count = num_hidden_layers).
MTP_DROPPED = {"deepseek-v3", "deepseek-v3-fp8", "kimi-k2"}
# Families with only a Q8_0 reference (size budget).
Q8_ONLY = {"deepseek-v3-fp8", "kimi-k2"}
# FP8 families: F8_E4M3 weights, each with an F32 weight_scale_inv of one scale per 128x128 block.
FP8 = {"deepseek-v3-fp8"}
FILE_TYPE = {"f16": 1, "q8_0": 7, "bf16": 32}
REFS = ["ref-q8_0.gguf", "ref-f16.gguf"]

problems = []


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    v = f.parts[f.data[0]]
    if f.types and f.types[0].name == "STRING":
        return bytes(v).decode()
    return v[0].item()


def load_bf16(path):
    """safetensors' numpy loader has no bf16: read BF16 as uint16 through the header."""
    import struct

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dt = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32, "F8_E4M3": np.uint8}[v["dtype"]]
        out[k] = np.frombuffer(raw[base + a : base + b], dtype=dt).reshape(v["shape"])
    return out


def split_fused(t):
    """Per-expert tensors of a fused checkpoint, named as in the per-expert one."""
    out = {}
    for k, v in t.items():
        if k.endswith(".experts.gate_up_proj"):
            f = v.shape[1] // 2
            base = k[: -len("gate_up_proj")]
            for e in range(v.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = v[e, :f]
                out[f"{base}{e}.up_proj.weight"] = v[e, f:]
        elif k.endswith(".experts.down_proj"):
            base = k[: -len("down_proj")]
            for e in range(v.shape[0]):
                out[f"{base}{e}.down_proj.weight"] = v[e]
        else:
            out[k] = v
    return out


def canon(name):
    """Per-expert names of every family in one spelling (MiniMax w1/w3/w2, block_sparse_moe)."""
    return (
        name.replace("block_sparse_moe.", "mlp.")
        .replace(".w1.", ".gate_proj.")
        .replace(".w3.", ".up_proj.")
        .replace(".w2.", ".down_proj.")
    )


def check_family(d: Path, fam: str):
    hf_arch, gguf_arch = EXPECTED[fam]
    cfg = json.loads((d / "config.json").read_text())
    if cfg.get("architectures") != [hf_arch]:
        problems.append(f"{d.name}: architectures {cfg.get('architectures')} != [{hf_arch}]")
    st = d / "model.safetensors"
    tensors = load_bf16(st)
    if not tensors:
        problems.append(f"{d.name}: no tensors")
    for k, v in tensors.items():
        if fam in FP8 and v.dtype == np.uint8:
            s = tensors.get(k + "_scale_inv")
            want = (-(-v.shape[0] // 128), -(-v.shape[1] // 128))
            if s is None or s.dtype != np.float32 or s.shape != want:
                problems.append(f"{d.name}: {k} has no F32 weight_scale_inv of shape {want}")
        elif fam in FP8 and k.endswith("_scale_inv"):
            continue
        elif v.dtype != np.uint16:
            problems.append(f"{d.name}: {k} is not BF16")
    if fam in FP8 and cfg.get("quantization_config", {}).get("quant_method") != "fp8":
        problems.append(f"{d.name}: config.json has no fp8 quantization_config")
    # transformers 5's Nemotron-H config counts layers by its layers_block_type list.
    blocks = len(cfg["layers_block_type"]) if "layers_block_type" in cfg else cfg["num_hidden_layers"]
    if fam not in MTP_DROPPED:
        blocks += cfg.get("num_nextn_predict_layers", 0)
    for ref in REFS[:1] if fam in Q8_ONLY else REFS:
        p = d / ref
        if not p.exists():
            problems.append(f"{d.name}: {ref} missing")
            continue
        r = GGUFReader(str(p))
        arch = field(r, "general.architecture")
        if arch != gguf_arch:
            problems.append(f"{d.name}/{ref}: architecture {arch} != {gguf_arch}")
            continue
        ft = field(r, "general.file_type")
        want_ft = FILE_TYPE[ref[len("ref-") : -len(".gguf")]]
        if ft != want_ft:
            problems.append(f"{d.name}/{ref}: file_type {ft} != {want_ft}")
        bc = field(r, f"{arch}.block_count")
        if bc != blocks:
            problems.append(f"{d.name}/{ref}: block_count {bc} != {blocks}")
        if len(r.tensors) == 0:
            problems.append(f"{d.name}/{ref}: no tensors")
        if cfg.get("vocab_size") != len(r.fields["tokenizer.ggml.tokens"].data):
            problems.append(f"{d.name}/{ref}: token count differs from vocab_size")
    return tensors


def main():
    root = Path(sys.argv[1])
    per_expert = {}
    for fam in EXPECTED:
        d = root / fam
        if not d.is_dir():
            problems.append(f"{fam}: missing directory")
            continue
        per_expert[fam] = check_family(d, fam)
    for fused in sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith("-fused")):
        fam = fused.name[: -len("-fused")]
        if fam not in per_expert:
            problems.append(f"{fused.name}: no per-expert twin")
            continue
        cfg = json.loads((fused / "config.json").read_text())
        if cfg != json.loads((root / fam / "config.json").read_text()):
            problems.append(f"{fused.name}: config.json differs from {fam}'s")
        raw = load_bf16(fused / "model.safetensors")
        if not any(k.endswith(".experts.gate_up_proj") for k in raw):
            problems.append(f"{fused.name}: no fused experts.gate_up_proj tensor")
        got = {canon(k): v for k, v in split_fused(raw).items()}
        want = {canon(k): v for k, v in per_expert[fam].items()}
        if sorted(got) != sorted(want):
            extra = sorted(set(got) - set(want))[:5]
            missing = sorted(set(want) - set(got))[:5]
            problems.append(f"{fused.name}: tensor names differ from {fam} (extra {extra}, missing {missing})")
            continue
        for k in want:
            if got[k].shape != want[k].shape or not np.array_equal(got[k], want[k]):
                problems.append(f"{fused.name}: {k} differs from {fam}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(f"ok: {len(per_expert)} families")


if __name__ == "__main__":
    main()
