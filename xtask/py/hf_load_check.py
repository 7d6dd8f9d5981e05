"""Local check (not CI): HF transformers + compressed-tensors load a modelpack cuda package on CPU.

Usage: python hf_load_check.py REF_PY DENSE_DIR PACKAGE_DIR [default|dequantize]

Needs torch, transformers and compressed-tensors (`cargo xtask hf-check` makes that venv).
REF_PY is ../shared/reference/compressed_tensors_ref.py, whose numpy unpacking is the
independent dequantization here.

1. `AutoModelForCausalLM.from_pretrained(PACKAGE_DIR)` in f32 on CPU: by default as a user would
   (compressed-tensors matches each module to its config group and decompresses it), or with
   `dequantize` through `CompressedTensorsConfig(run_compressed=False)`. Measured with
   transformers 5.24 / compressed-tensors 0.20: the `dequantize` path applies the first config
   group to every dense module, so packages whose fallback modules have their own group
   (per-channel when `in_features` does not divide by the group size) fail to load that way.
2. Every quantized Linear's decompressed weight is compared with numpy's dequantization of the
   packed words, scales and zero points, `(q - zp) * scale` (rounded once to the stored scale
   dtype in `dequantize` mode, where compressed-tensors computes in it), bit for bit.
3. Logits of the loaded package on a fixed prompt are compared with the logits of the dense
   checkpoint whose Linear weights are replaced by numpy's dequantization: the package must
   load as exactly that model.
Prints one JSON line; exit 0 when everything agrees.
"""
import importlib.util
import json
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM

try:
    from transformers import CompressedTensorsConfig
except ImportError:  # older transformers
    from transformers.utils.quantization_config import CompressedTensorsConfig


def load_ref(path):
    spec = importlib.util.spec_from_file_location("ct_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def to_f32(ref, dtype, a):
    if dtype == "BF16":
        return ref.bf16_to_f32(a.view(np.uint16))
    return a.astype(np.float32)


def round_to(ref, dtype, x):
    if dtype == "BF16":
        return ref.bf(x)
    if dtype == "F16":
        return x.astype(np.float16).astype(np.float32)
    return x.astype(np.float32)


def numpy_dequant(ref, pkg, round_stored):
    """{module: f32 weight} from the package's tensors, numpy only."""
    bits, _group, sym = ref.weights_config(pkg)
    st = ref.read_dir(pkg)
    out = {}
    for m in sorted(k[: -len(".weight_packed")] for k in st if k.endswith(".weight_packed")):
        rows, cols = st[m + ".weight_shape"][1].tolist()
        q = ref.unpack(st[m + ".weight_packed"][1], bits, cols).astype(np.float32)
        sd, sc = st[m + ".weight_scale"]
        sc = to_f32(ref, sd, sc)
        if sym:
            z = np.zeros_like(sc)
        else:
            z = ref.unpack(st[m + ".weight_zero_point"][1], bits, rows, axis=0).astype(np.float32)
        g = cols // sc.shape[1]
        w = (q.reshape(rows, -1, g) - z[..., None]) * sc[..., None]
        # compressed-tensors dequantizes in the dtype of the scale it holds: the stored dtype when
        # it dequantizes at load, the model dtype (f32 here) once the scale sits in a module.
        if round_stored:
            w = round_to(ref, sd, w)
        out[m] = (w.reshape(rows, cols), sd)
    return out


def decompressed(model, params, m):
    """The module's dense weight: the parameter after a dequantizing load, else what
    compressed-tensors' own decompressor makes of the module's packed parameters under the
    config group it matched the module to (what its forward pass computes with)."""
    if m + ".weight" in params:
        return params[m + ".weight"].detach().to(torch.float32).numpy()
    from compressed_tensors.compressors import BaseCompressor

    mod = model.get_submodule(m)
    scheme = mod.quantization_scheme
    state = {n: p.detach() for n, p in mod.named_parameters()}
    comp = BaseCompressor.get_value_from_registry(scheme.format)
    return comp.decompress(state, scheme)["weight"].to(torch.float32).numpy()


def main():
    ref = load_ref(sys.argv[1])
    dense_dir, pkg = sys.argv[2], sys.argv[3]
    torch.manual_seed(0)
    mode = sys.argv[4] if len(sys.argv) > 4 else "default"
    if mode == "dequantize":
        # transformers' dequantize-at-load path (`run_compressed=False`).
        qm = AutoModelForCausalLM.from_pretrained(
            pkg, dtype=torch.float32, quantization_config=CompressedTensorsConfig(run_compressed=False)
        ).eval()
    else:
        # The default path: compressed-tensors applies each module's config group, loads the
        # packed tensors and decompresses them (on CPU every module ends up dense).
        qm = AutoModelForCausalLM.from_pretrained(pkg, dtype=torch.float32).eval()
    deq = numpy_dequant(ref, pkg, mode == "dequantize")
    params = dict(qm.named_parameters())
    worst = 0.0
    exact = 0
    for m, (w, sd) in deq.items():
        got = decompressed(qm, params, m)
        assert got.shape == w.shape, (m, got.shape, w.shape)
        diff = float(np.max(np.abs(got - w)))
        scale = float(np.max(np.abs(w))) or 1.0
        worst = max(worst, diff / scale)
        exact += int(diff == 0.0)
    # The dense model with numpy's dequantized weights in place of each quantized Linear.
    dm = AutoModelForCausalLM.from_pretrained(dense_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        dparams = dict(dm.named_parameters())
        for m, (w, _) in deq.items():
            dparams[m + ".weight"].copy_(torch.from_numpy(w))
        ids = torch.tensor([[1, 5, 9, 42, 7, 100, 3, 64, 17, 2]]) % dm.config.vocab_size
        lq = qm(ids).logits.float().numpy()
        ld = dm(ids).logits.float().numpy()
    logit_diff = float(np.max(np.abs(lq - ld)))
    ok = exact == len(deq) and logit_diff <= 1e-5 * max(1.0, float(np.max(np.abs(ld))))
    print(json.dumps({"modules": len(deq), "bit_exact_modules": exact, "worst_rel_weight_diff": worst,
                      "max_logit_diff": logit_diff, "max_logit": float(np.max(np.abs(ld))),
                      "torch": torch.__version__, "mode": mode, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
