"""compressed-tensors reference check generalised to any source and scale dtype (numpy only).

Usage: python ct_scale_dtype_check.py REF_PY DENSE_DIR PACKAGE_DIR EXPECTED_SCALE_DTYPE

REF_PY is ../shared/reference/compressed_tensors_ref.py: its safetensors reader, packer and
config reader are reused. That reference re-derives bf16 models (every step rounded to bf16);
this check extends its math to f32 and f16 models and to a scale dtype that differs from the
model dtype, following compressed-tensors' `calculate_qparams` with `scale_dtype` set and torch's
type promotion:

- the scale is computed in the model dtype, then rounded to the scale dtype (before any code is
  chosen); a zero scale becomes the scale dtype's eps;
- element steps (`w / scale`, `+ zp`) round to the model dtype when it equals the scale dtype,
  else run in f32 (torch promotes f32 x bf16, f16 x bf16, ... to f32);
- the asymmetric zero point uses the stored (rounded) scale, as compressed-tensors 0.20 writes it.

Checks, per packed module: packed words, scale bytes in EXPECTED_SCALE_DTYPE (BF16, F16, F32),
zero points, weight_shape. Prints one summary line; exit 0 when every module is bit-exact.
"""
import importlib.util
import json
import sys

import numpy as np

EPS = {"BF16": np.float32(2.0 ** -7), "F16": np.float32(2.0 ** -10), "F32": np.float32(np.finfo(np.float32).eps)}


def load_ref(path):
    spec = importlib.util.spec_from_file_location("ct_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rounder(ref, dtype):
    if dtype == "BF16":
        return ref.bf
    if dtype == "F16":
        return lambda x: np.asarray(x, np.float32).astype(np.float16).astype(np.float32)
    return lambda x: np.asarray(x, np.float32)


def quantize(ref, w, src, sd, bits, group, sym):
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    rs, rsd = rounder(ref, src), rounder(ref, sd)
    ed = rsd if src == sd else rounder(ref, "F32")
    out, inn = w.shape
    g = inn if group == -1 else group
    wg = w.reshape(out, inn // g, g)
    mn = np.minimum(wg.min(-1), np.float32(0))
    mx = np.maximum(wg.max(-1), np.float32(0))
    if sym:
        scale = rsd(rs(np.maximum(np.abs(mn), np.abs(mx)) / np.float32((qmax - qmin) / 2)))
        zp = np.zeros(scale.shape, np.int8)
    else:
        scale = rsd(rs(rs(mx - mn) / np.float32(qmax - qmin)))
        z = ed(np.float32(qmin) - ed(mn / np.where(scale == 0, np.float32(1), scale)))
        zp = np.round(np.clip(z, qmin, qmax)).astype(np.int8)
    scale = np.where(scale == 0, EPS[sd], scale).astype(np.float32)
    x = ed(wg / scale[..., None])
    if not sym:
        x = ed(x + zp[..., None].astype(np.float32))
    q = np.clip(np.round(x), qmin, qmax).astype(np.int8).reshape(out, inn)
    return q, scale, zp


def scale_bytes(ref, scale, sd):
    if sd == "BF16":
        return ref.f32_to_bf16(scale).tobytes()
    if sd == "F16":
        return scale.astype(np.float16).tobytes()
    return scale.astype(np.float32).tobytes()


def main():
    ref = load_ref(sys.argv[1])
    dense_dir, pkg, want_sd = sys.argv[2], sys.argv[3], sys.argv[4]
    bits, group, sym = ref.weights_config(pkg)
    dense, st = ref.read_dir(dense_dir), ref.read_dir(pkg)
    mods = sorted(k[: -len(".weight_packed")] for k in st if k.endswith(".weight_packed"))
    if not mods:
        print("FAIL: no *.weight_packed tensors")
        return 1
    bad = []
    for m in mods:
        src, w = dense[m + ".weight"]
        w = ref.bf16_to_f32(w) if src == "BF16" else w.astype(np.float32)
        sd, stored = st[m + ".weight_scale"]
        ncols = stored.shape[1]
        g = -1 if ncols == 1 else w.shape[1] // ncols
        q, scale, zp = quantize(ref, w, src, want_sd, bits, g, sym)
        ok = sd == want_sd
        ok &= np.array_equal(ref.pack(q, bits), st[m + ".weight_packed"][1])
        ok &= scale_bytes(ref, scale, want_sd) == stored.tobytes()
        ok &= st[m + ".weight_shape"][1].tolist() == list(w.shape)
        if not sym:
            ok &= np.array_equal(ref.pack(zp, bits, axis=0), st[m + ".weight_zero_point"][1])
        elif m + ".weight_zero_point" in st:
            ok = False
        if not ok:
            bad.append(m)
    print(json.dumps({"modules": len(mods), "bad": bad, "bits": bits, "group": group, "sym": sym,
                      "scale_dtype": want_sd}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
