"""Judge a float GGUF converted from a llama-family HF checkpoint, the way llama.cpp's converter
would have produced it.

Usage: python check_llama_gguf.py FILE.gguf HF_DIR

For every tensor of HF_DIR/model.safetensors (bf16/f16/f32, read with numpy), maps the name
with gguf-py's own `TensorNameMap`, applies the converter's q/k permutation for arch `llama`
(`reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2)`), and compares with the f32
tensor `gguf.GGUFReader` finds under that name: shape (ggml order) and exact values.
Prints JSON {"checked", "mismatches", "extra", "fields": scalar metadata}.
"""

import json
import struct
import sys

import numpy as np
import gguf


def load_safetensors(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = blob[8 + n + a : 8 + n + b]
        if info["dtype"] == "BF16":
            x = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            x = np.frombuffer(raw, dtype={"F16": np.float16, "F32": np.float32}[info["dtype"]])
            x = x.astype(np.float32)
        out[name] = x.reshape(info["shape"])
    return out


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main() -> None:
    gguf_path, hf_dir = sys.argv[1], sys.argv[2]
    config = json.load(open(f"{hf_dir}/config.json"))
    r = gguf.GGUFReader(gguf_path)
    arch_name = r.fields["general.architecture"].contents()
    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}[arch_name]
    tmap = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    tensors = {t.name: t for t in r.tensors}
    mismatches, seen = [], set()
    for hf, w in load_safetensors(f"{hf_dir}/model.safetensors").items():
        name = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None or name not in tensors:
            mismatches.append(f"{hf}: no GGUF tensor {name}")
            continue
        seen.add(name)
        if arch_name == "llama" and hf.endswith(("q_proj.weight", "q_proj.bias")):
            w = permute(w, config["num_attention_heads"])
        if arch_name == "llama" and hf.endswith(("k_proj.weight", "k_proj.bias")):
            w = permute(w, config.get("num_key_value_heads", config["num_attention_heads"]))
        t = tensors[name]
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            mismatches.append(f"{name}: type {t.tensor_type.name}")
            continue
        if [int(x) for x in t.shape] != list(reversed(w.shape)):
            mismatches.append(f"{name}: shape {list(t.shape)} vs HF {list(w.shape)}")
            continue
        got = np.asarray(t.data, dtype=np.float32).reshape(w.shape)
        if got.tobytes() != np.ascontiguousarray(w, dtype=np.float32).tobytes():
            mismatches.append(f"{name}: data differs")
    fields = {}
    for k, f in r.fields.items():
        if not k.startswith("GGUF.") and f.types and f.types[0] != gguf.GGUFValueType.ARRAY:
            fields[k] = f.contents()
    print(json.dumps({"checked": len(seen), "mismatches": mismatches,
                      "extra": sorted(set(tensors) - seen), "fields": fields}))


if __name__ == "__main__":
    main()
