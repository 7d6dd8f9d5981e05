#!/usr/bin/env python3
"""Tiny Kimi-K2-Thinking-shaped pack-quantized checkpoint, written by compressed-tensors itself.

  make_packed_fixtures.py OUT_DIR LLAMA_SRC

Takes fixtures/families/deepseek-v3 (transformers' DeepseekV3 classes, bf16) and writes its
Linears as compressed-tensors 0.20 `pack-quantized` int4, symmetric, group 32, the way
Kimi-K2-Thinking ships: `P.weight_packed` (I32, 8 codes per word), `P.weight_scale` (BF16
[out, in/32]), `P.weight_shape` (I32 [2]) and a `quantization_config` with one config group
targeting Linear and an explicit `ignore` list of the modules kept in bf16. Scales, codes and
packing are the library's (`calculate_qparams`, the pack-quantized compressor); nothing here
quantizes by hand. Writes into OUT_DIR:

  deepseek-v3-int4/                 the checkpoint (config, tokenizer, model.safetensors)
  deepseek-v3-int4.dequant.safetensors
                                    the library's decompression of every packed module (bf16,
                                    `P.weight`): what HF transformers computes with
  deepseek-v3-int4/ref-q8_0.gguf,   llama.cpp's convert_hf_to_gguf.py --outtype q8_0 / f32 on the
  deepseek-v3-int4/ref-f32.gguf     int4 checkpoint (the converter dequantizes pack-quantized)

Run through `cargo xtask packed-fixtures` in the hf-check venv (torch, transformers,
compressed-tensors 0.20.0); CI only reads the results.
"""
import json, shutil, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import compressed_tensors
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.utils import calculate_qparams
from compressed_tensors.compressors import BaseCompressor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_family_fixtures as mff  # noqa: E402  (its converter runner)

GROUP = 32
ARGS = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=GROUP)
SCHEME = QuantizationScheme(targets=["Linear"], weights=ARGS)


def ignored(name):
    """Kimi-K2-Thinking keeps attention's low-rank input projections, the dense first layer's MLP,
    the shared experts and lm_head in bf16; the fixture keeps the dense MLP and the shared experts
    (listed by name, as Kimi lists them) and packs attention too, so the MLA split of `kv_b_proj`
    is exercised."""
    return ".layers.0.mlp." in name or ".shared_experts." in name


def main():
    out_root, llama_src = Path(sys.argv[1]), Path(sys.argv[2])
    src = out_root.parent / "families" / "deepseek-v3"
    dst = out_root / "deepseek-v3-int4"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    cfg = json.loads((src / "config.json").read_text())
    layers = cfg["num_hidden_layers"]
    sd = load_file(src / "model.safetensors")
    comp = BaseCompressor.get_value_from_registry("pack-quantized")
    out, deq, ignore = {}, {}, ["lm_head"]
    # One group of one expert is scaled down so its scale falls below f16's normal range (not
    # an f16 value): the cpu target must requantize that Q4_0 block instead of copying it.
    tiny = f"model.layers.1.mlp.experts.0.up_proj.weight"
    for name, w in sd.items():
        parts = name.split(".")
        is_linear = (
            w.dim() == 2 and name.endswith(".weight") and parts[1] == "layers" and int(parts[2]) < layers
            and not name.endswith("mlp.gate.weight") and "layernorm" not in name and "norm" not in parts[-2]
        )
        if not is_linear:
            out[name] = w
            continue
        m = name[: -len(".weight")]
        if ignored(name):
            ignore.append(m)
            out[name] = w
            continue
        if name == tiny:
            w = w.clone()
            w[:2, :GROUP] = (w[:2, :GROUP].float() * 2.0**-14).to(torch.bfloat16)
        rows, cols = w.shape
        g = w.reshape(rows, cols // GROUP, GROUP)
        # The library's observer math on the bf16 weight (min/max per group), then its compressor.
        scale, zp = calculate_qparams(g.amin(-1), g.amax(-1), ARGS)
        c = comp.compress({"weight": w, "weight_scale": scale, "weight_zero_point": zp}, SCHEME)
        assert set(c) == {"weight_packed", "weight_scale", "weight_shape"}, sorted(c)
        assert c["weight_scale"].dtype == torch.bfloat16
        out[m + ".weight_packed"] = c["weight_packed"].contiguous()
        # Kimi-K2-Thinking stores weight_shape as I32 (the library writes I64): the reader takes both.
        out[m + ".weight_shape"] = c["weight_shape"].to(torch.int32)
        out[m + ".weight_scale"] = c["weight_scale"].contiguous()
        d = comp.decompress(dict(c), SCHEME)["weight"]
        deq[name] = d.to(torch.bfloat16).contiguous()
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})
    save_file(deq, out_root / "deepseek-v3-int4.dequant.safetensors", metadata={"format": "pt"})
    cfg["quantization_config"] = {
        "config_groups": {
            "group_0": {
                "format": "pack-quantized",
                "input_activations": None,
                "output_activations": None,
                "targets": ["Linear"],
                "weights": json.loads(ARGS.model_dump_json()),
            }
        },
        "format": "pack-quantized",
        "ignore": ignore,
        "kv_cache_scheme": None,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": compressed_tensors.__version__,
    }
    (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for f in ("generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, dst / f)

    # The judges: llama.cpp's converter on the int4 checkpoint itself (its `dequant_model`
    # decodes pack-quantized as `(code - offset) * scale.float()`), in Q8_0 and F32.
    for outtype in ("q8_0", "f32"):
        mff.convert(llama_src, dst, outtype, dst / f"ref-{outtype}.gguf", "deepseek-v3")
    mff.sha256sums(out_root)  # `cargo xtask fixtures --check` compares the tree with it
    print(f"compressed-tensors {compressed_tensors.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
