"""Make the FP8 fixtures (fixtures/fp8/) with torch; the judges of modelpack's FP8 source reader.

Usage (torch venv of `cargo xtask hf-check`):
    python xtask/py/make_fp8_fixtures.py fixtures/fp8

Writes
  codes.json              torch's own f32 value of each of the 256 codes of float8_e4m3fn and
                          float8_e5m2 (as u32 bit patterns; NaN codes as null)
  tiny-llama-fp8/         fixtures/tiny-llama with every Linear of the layer stack stored as
                          F8_E4M3 + `weight_scale_inv` (F32, blocks 48x40: partial edge blocks),
                          config `quantization_config` {quant_method fp8, fmt e4m3}
  tiny-llama-fp8-ct/      the same Linears as compressed-tensors `float-quantized` FP8, per-channel
                          `weight_scale` [rows,1] in BF16 (what llm-compressor's FP8 scheme writes)
  *.dequant.safetensors   torch's `w.float() * scale` (scale repeat_interleave'd per block and
                          cropped) for each FP8 weight: the reference's dequantized f32 values
"""
import json, os, shutil, sys
import torch
from safetensors.torch import load_file, save_file

out = sys.argv[1]
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
src = os.path.join(root, "fixtures", "tiny-llama")
os.makedirs(out, exist_ok=True)

codes = torch.arange(256, dtype=torch.uint8)
table = {}
for name, dt in (("e4m3fn", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)):
    v = codes.view(dt).float()
    bits = v.view(torch.int32).tolist()
    table[name] = [None if torch.isnan(v[i]) else (bits[i] & 0xFFFFFFFF) for i in range(256)]
with open(os.path.join(out, "codes.json"), "w") as f:
    json.dump(table, f, indent=0)
    f.write("\n")

LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BLOCK = [48, 40]


def block_quant(w):
    """DeepSeek's recipe: per 48x40 block, scale = amax/448, codes = (w/scale) in e4m3."""
    r, c = w.shape
    br, bc = BLOCK
    sr, sc = -(-r // br), -(-c // bc)
    s = torch.zeros(sr, sc, dtype=torch.float32)
    q = torch.zeros(r, c, dtype=torch.float8_e4m3fn)
    for i in range(sr):
        for j in range(sc):
            blk = w[i * br:(i + 1) * br, j * bc:(j + 1) * bc].float()
            amax = blk.abs().max().clamp(min=1e-8)
            s[i, j] = amax / 448.0
            q[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = (blk / s[i, j]).to(torch.float8_e4m3fn)
    return q, s


def dequant_block(q, s):
    """convert_hf_to_gguf.py dequant_simple: repeat_interleave per block, crop, multiply."""
    s = s.float()
    for i, size in enumerate(BLOCK):
        s = s.repeat_interleave(size, i)
    s = s[: q.shape[0], : q.shape[1]]
    return q.float() * s


def make(name, ct):
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(os.path.join(src, f), d)
    sd = load_file(os.path.join(src, "model.safetensors"))
    new, deq = {}, {}
    for k, w in sd.items():
        if k.endswith(".weight") and any(p in k for p in LINEAR):
            if ct:
                amax = w.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-8)
                s = (amax / 448.0).to(torch.bfloat16)
                q = (w.float() / s.float()).to(torch.float8_e4m3fn)
                new[k] = q
                new[k[: -len(".weight")] + ".weight_scale"] = s
                deq[k] = q.float() * s.float()
            else:
                q, s = block_quant(w)
                new[k] = q
                new[k + "_scale_inv"] = s
                deq[k] = dequant_block(q, s)
        else:
            new[k] = w
    save_file(new, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    save_file(deq, os.path.join(out, name + ".dequant.safetensors"), metadata={"format": "pt"})
    cfg = json.load(open(os.path.join(src, "config.json")))
    if ct:
        cfg["quantization_config"] = {
            "quant_method": "compressed-tensors",
            "format": "float-quantized",
            "quantization_status": "compressed",
            "ignore": ["lm_head"],
            "config_groups": {"group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True,
                            "dynamic": False, "group_size": None, "block_structure": None},
                "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                      "symmetric": True, "dynamic": True},
            }},
        }
    else:
        cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                      "weight_block_size": BLOCK}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


make("tiny-llama-fp8", ct=False)
make("tiny-llama-fp8-ct", ct=True)

# `cargo xtask fixtures --check` compares the tree with this list.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_family_fixtures import sha256sums  # noqa: E402
from pathlib import Path  # noqa: E402

sha256sums(Path(out))
