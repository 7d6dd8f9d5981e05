"""Local check (not CI): HF transformers + compressed-tensors load a modelpack cuda package of a
family fixture (fixtures/families) with every weight accounted for and the source's logits.

Usage: python hf_family_check.py SOURCE_DIR PACKAGE_DIR MIN_COSINE [default|dequantize]

1. `AutoModelForCausalLM.from_pretrained(..., output_loading_info=True)` on CPU in f32, for the
   source checkpoint and for the package (`default`: as a user loads it; `dequantize`:
   `CompressedTensorsConfig(run_compressed=False)`, dequantized at load).
2. The package must load with no missing and no mismatched weights, and with unexpected weights
   only where the source has them too (GLM-4.5's MTP layer, which transformers does not build).
   A Linear left dense but absent from `ignore` shows up here as missing (randomly initialised).
3. The logits on a fixed prompt must have cosine >= MIN_COSINE with the source's.
Prints one JSON line; exit 0 when everything holds.
"""
import json
import re
import sys
import warnings

import torch
from transformers import AutoModelForCausalLM

try:
    from transformers import CompressedTensorsConfig
except ImportError:  # older transformers
    from transformers.utils.quantization_config import CompressedTensorsConfig

warnings.filterwarnings("ignore")
LAYER = re.compile(r"^(.*?\.layers\.\d+)\.")


def load(path, mode=None):
    kw = dict(dtype=torch.float32, output_loading_info=True)
    if mode == "dequantize":
        kw["quantization_config"] = CompressedTensorsConfig(run_compressed=False)
    model, info = AutoModelForCausalLM.from_pretrained(path, **kw)
    return model.eval(), info


def layers_of(keys):
    return {m.group(1) for k in keys if (m := LAYER.match(k))}


def main():
    src_dir, pkg_dir, min_cos = sys.argv[1], sys.argv[2], float(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "default"
    src, src_info = load(src_dir)
    pkg, info = load(pkg_dir, mode)
    problems = []
    missing = sorted(info.get("missing_keys", []))
    if missing:
        problems.append(f"missing {len(missing)}: {missing[:6]}")
    mismatched = list(info.get("mismatched_keys", []))
    if mismatched:
        problems.append(f"mismatched {len(mismatched)}: {mismatched[:6]}")
    src_unexp_layers = layers_of(src_info.get("unexpected_keys", []))
    unexpected = sorted(info.get("unexpected_keys", []))
    stray = [k for k in unexpected if not ((m := LAYER.match(k)) and m.group(1) in src_unexp_layers)]
    if stray:
        problems.append(f"unexpected {len(stray)}: {stray[:6]}")
    gen = torch.Generator().manual_seed(0)
    vocab = src.config.vocab_size
    ids = torch.randint(0, vocab - 8, (2, 24), generator=gen)
    with torch.no_grad():
        a = src(ids).logits.flatten().double()
        b = pkg(ids).logits.flatten().double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    same_top1 = (src(ids).logits.argmax(-1) == pkg(ids).logits.argmax(-1)).float().mean().item()
    if not cos >= min_cos:
        problems.append(f"logits cosine {cos:.5f} < {min_cos}")
    print(
        json.dumps(
            dict(
                mode=mode,
                cosine=round(cos, 6),
                top1_agreement=round(same_top1, 4),
                missing=len(missing),
                unexpected=len(unexpected),
                unexpected_also_in_source=len(unexpected) - len(stray),
                problems=problems,
            )
        )
    )
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
