"""Local check (not CI): is a logits gap between a Nemotron-H cuda package and its bf16 source the
quantization scheme's own loss, or a loading error?

Usage: python hf_fakequant_check.py CT_REFERENCE SOURCE_DIR PACKAGE_DIR [default|dequantize]

The "fake-quant" model is the source loaded by transformers with every packed module's weight
replaced by the shared numpy reference's dequantization of the package (CT_REFERENCE,
compressed_tensors_ref.py), so it is what a correct loader must compute. Checks:
1. `dequantize` mode: every packed module's weight in the loaded package equals the numpy
   dequantization exactly (experts: their slab of the fused 3-D parameter);
2. the package's logits have cosine >= 0.999 with the fake-quant model's.
Prints one JSON line with the scheme's own loss (fake-quant vs source cosine); exit 0 when both
hold. Module names: the checkpoint's `backbone.` is transformers' `model.`, and
`…experts.E.proj` is row E of the fused `…experts.proj` parameter (Nemotron-H's layout).
"""
import importlib.util
import json
import re
import sys
import warnings

import numpy as np
import torch
from transformers import AutoModelForCausalLM

try:
    from transformers import CompressedTensorsConfig
except ImportError:  # older transformers
    from transformers.utils.quantization_config import CompressedTensorsConfig

warnings.filterwarnings("ignore")
EXPERT = re.compile(r"(.*\.experts)\.(\d+)\.(\w+)$")


def reference(path):
    spec = importlib.util.spec_from_file_location("ct_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dequantized(ref, pkg):
    """Module name (transformers' spelling) -> f32 weight, as the numpy reference decodes it."""
    bits, _, sym = ref.weights_config(pkg)
    assert sym, "symmetric packages only"
    st = ref.read_dir(pkg)
    out = {}
    for k in sorted(st):
        if not k.endswith(".weight_packed"):
            continue
        m = k[: -len(".weight_packed")]
        shape = st[m + ".weight_shape"][1].tolist()
        q = ref.unpack(st[m + ".weight_packed"][1], bits, shape[1])
        sc = st[m + ".weight_scale"][1]
        sc = ref.bf16_to_f32(sc.view(np.uint16)) if sc.dtype == np.uint16 else sc.astype(np.float32)
        gs = shape[1] // sc.shape[1]
        deq = ref.bf(q.reshape(shape[0], -1, gs).astype(np.float32) * sc[..., None]).reshape(shape)
        out[m.replace("backbone.", "model.", 1)] = torch.from_numpy(deq)
    return out


def weight_of(model, name):
    e = EXPERT.match(name)
    if e:
        return model.get_parameter(f"{e.group(1)}.{e.group(3)}")[int(e.group(2))]
    return model.get_submodule(name).weight


def main():
    ref_path, src_dir, pkg_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    mode = sys.argv[4] if len(sys.argv) > 4 else "default"
    ref = reference(ref_path)
    deq = dequantized(ref, pkg_dir)
    src = AutoModelForCausalLM.from_pretrained(src_dir, dtype=torch.float32).eval()
    fq = AutoModelForCausalLM.from_pretrained(src_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, w in deq.items():
            weight_of(fq, name).copy_(w)
    kw = dict(dtype=torch.float32)
    if mode == "dequantize":
        kw["quantization_config"] = CompressedTensorsConfig(run_compressed=False)
    pkg = AutoModelForCausalLM.from_pretrained(pkg_dir, **kw).eval()
    problems = []
    if mode == "dequantize":
        differ = [n for n, w in deq.items() if not torch.equal(weight_of(pkg, n).detach().float(), w)]
        if differ:
            problems.append(f"{len(differ)} modules differ from the numpy dequantization: {differ[:4]}")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, src.config.vocab_size - 8, (2, 24), generator=gen)
    with torch.no_grad():
        a, f, b = (m(ids).logits.flatten().double() for m in (src, fq, pkg))
    cos = lambda x, y: torch.nn.functional.cosine_similarity(x, y, dim=0).item()  # noqa: E731
    if not cos(b, f) >= 0.999:
        problems.append(f"logits cosine with the fake-quant model {cos(b, f):.6f} < 0.999")
    print(
        json.dumps(
            dict(
                mode=mode,
                modules=len(deq),
                weights_checked=len(deq) if mode == "dequantize" else 0,
                package_vs_fakequant=round(cos(b, f), 6),
                fakequant_vs_source=round(cos(f, a), 6),
                package_vs_source=round(cos(b, a), 6),
                problems=problems,
            )
        )
    )
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
