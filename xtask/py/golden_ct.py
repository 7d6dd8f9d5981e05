"""Golden vectors for modelpack-quant's compressed-tensors (pack-quantized) kernels.

Usage: python golden_ct.py OUT_DIR

An independent numpy implementation of the compressed-tensors 0.20 weight math,
for the schemes the library-written fixtures (int4 g128 sym, int8 channel sym) do not cover:
asymmetric int4, groups 32/64, per-channel int4, int8 groups / asymmetric, f16 and f32 sources.

Arithmetic model (what torch does inside compressed-tensors): every single operation is computed
in f32, then rounded (nearest, ties to even) to the working dtype: bf16 for bf16 models, f16 for
f16 models, nothing for f32 models. Scales are stored in the scale dtype; when source and scale
dtypes differ (f32 source with bf16 scales) the scale is rounded to the scale dtype and the
element steps stay in f32 (torch type promotion).

Per case writes `<case>.input.bin` (raw little-endian source), `<case>.packed.bin` (I32 words),
`<case>.scale.bin`, `<case>.zp.bin` (asymmetric only) and an entry in `index.json`.
Deterministic: fixed seed, no timestamps.
"""

import json
import os
import sys
import warnings

import numpy as np


def to_bf16_bits(x):
    """f32 -> bf16 bits, nearest even (finite or overflowing-to-inf inputs; no NaN here)."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    lsb = (u >> 16) & 1
    return ((u + 0x7FFF + lsb) >> 16).astype(np.uint16)


def from_bf16_bits(b):
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(np.float32)


ROUND = {
    "bf16": lambda x: from_bf16_bits(to_bf16_bits(x)),
    "f16": lambda x: np.asarray(x, np.float32).astype(np.float16).astype(np.float32),
    "f32": lambda x: np.asarray(x, np.float32),
}
EPS = {"bf16": np.float32(2.0**-7), "f16": np.float32(2.0**-10), "f32": np.float32(2.0**-23)}


def quantize(w, bits, group, sym, src, sdt):
    """w: f32 [rows, cols] (exact source values). Returns q int [rows, cols], scale f32
    [rows, ngroups] (values of the scale dtype), zp int [rows, ngroups]."""
    r_src, r_sc = ROUND[src], ROUND[sdt]
    r_el = ROUND[src] if src == sdt else ROUND["f32"]
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    rows, cols = w.shape
    g = cols if group is None else group
    ng = cols // g
    q = np.empty((rows, cols), np.int64)
    scale = np.empty((rows, ng), np.float32)
    zp = np.zeros((rows, ng), np.int64)
    for r in range(rows):
        for j in range(ng):
            x = w[r, j * g:(j + 1) * g]
            lo = np.float32(min(float(x.min()), 0.0))
            hi = np.float32(max(float(x.max()), 0.0))
            if sym:
                s = r_sc(r_src(np.float32(max(abs(lo), abs(hi))) / np.float32((qmax - qmin) / 2)))
                z = 0
            else:
                s = r_sc(r_src(r_src(np.float32(hi - lo)) / np.float32(qmax - qmin)))
                d = s if s != 0 else np.float32(1)
                zf = r_el(np.float32(qmin) - r_el(np.float32(lo / d)))
                z = int(np.round(np.clip(zf, qmin, qmax)))
            s = np.float32(s) if s != 0 else EPS[sdt]
            v = r_el(x / s)
            if not sym:
                v = r_el(v + np.float32(z))
            q[r, j * g:(j + 1) * g] = np.clip(np.rint(v), qmin, qmax).astype(np.int64)
            scale[r, j] = s
            zp[r, j] = z
    return q, scale, zp


def pack_rows(q, bits):
    """Along dim 1: element k of each run of 32/bits at bits [bits*k, ...), u = q + 2^(bits-1),
    last word zero-padded."""
    per = 32 // bits
    rows, cols = q.shape
    words = -(-cols // per)
    out = np.zeros((rows, words), np.uint64)
    u = (q + 2 ** (bits - 1)).astype(np.uint64)
    for c in range(cols):
        out[:, c // per] |= u[:, c] << np.uint64(bits * (c % per))
    return out.astype(np.uint32)


def pack_zp(zp, bits):
    """Along dim 0: result [ceil(rows/per), ngroups]."""
    return pack_rows(zp.T, bits).T.copy()


def scale_bytes(scale, sdt):
    if sdt == "bf16":
        return to_bf16_bits(scale).astype("<u2").tobytes()
    if sdt == "f16":
        return scale.astype("<f2").tobytes()
    return scale.astype("<f4").tobytes()


def src_bytes(w, src):
    if src == "bf16":
        return to_bf16_bits(w).astype("<u2").tobytes()
    if src == "f16":
        return w.astype("<f2").tobytes()
    return w.astype("<f4").tobytes()


def make_input(rng, rows, cols, src, special):
    """Mostly Gaussian weights with per-row magnitudes, plus special rows: all zero, constant,
    exact .5 ties after division, subnormals, the largest value negative, huge values."""
    mags = 10.0 ** rng.uniform(-3, 1, size=(rows, 1))
    w = (rng.standard_normal((rows, cols)) * mags).astype(np.float32)
    if special:
        w[0] = 0
        if rows > 1:
            w[1] = np.float32(0.375)  # constant positive row
        if rows > 2:
            w[2] = -np.float32(1.75)  # constant negative row
        if rows > 3:
            # ties: multiples of scale/2 with max |x| = 7.5*scale when scale = 1
            w[3] = (rng.integers(-15, 16, size=cols) / 2.0).astype(np.float32)
            w[3, 0] = -7.5
        if rows > 4:
            tiny = {"bf16": 1e-39, "f16": 3e-6, "f32": 1e-40}[src]
            w[4] = (rng.standard_normal(cols) * tiny).astype(np.float32)
        if rows > 5:
            w[5] = np.abs(w[5])
            w[5, cols // 2] = -4 * w[5].max()  # largest magnitude is negative
        if rows > 6:
            big = {"bf16": 1e37, "f16": 3e4, "f32": 1e37}[src]
            w[6] = np.clip(rng.standard_normal(cols) * big, -2 * big, 2 * big).astype(np.float32)
    # Make the values exactly representable in the source dtype.
    if src == "bf16":
        w = from_bf16_bits(to_bf16_bits(w))
    elif src == "f16":
        w = w.astype(np.float16).astype(np.float32)
    assert np.isfinite(w).all()
    return w


CASES = [
    # name, bits, group (None = channel), sym, src, scale dtype, rows, cols
    ("w4_g128_asym_bf16", 4, 128, False, "bf16", "bf16", 24, 256),
    ("w4_g32_asym_bf16", 4, 32, False, "bf16", "bf16", 19, 96),
    ("w4_g64_sym_bf16", 4, 64, True, "bf16", "bf16", 16, 192),
    ("w4_g32_sym_bf16", 4, 32, True, "bf16", "bf16", 11, 160),
    ("w4_g64_asym_bf16", 4, 64, False, "bf16", "bf16", 17, 128),
    ("w4_channel_sym_bf16", 4, None, True, "bf16", "bf16", 12, 100),
    ("w4_channel_asym_bf16", 4, None, False, "bf16", "bf16", 9, 256),
    ("w4_g128_sym_f16", 4, 128, True, "f16", "f16", 10, 256),
    ("w4_g32_asym_f16", 4, 32, False, "f16", "f16", 13, 128),
    ("w4_g64_sym_f16", 4, 64, True, "f16", "f16", 8, 192),
    ("w8_channel_sym_f16", 8, None, True, "f16", "f16", 8, 160),
    ("w8_channel_asym_bf16", 8, None, False, "bf16", "bf16", 10, 128),
    ("w8_g128_sym_bf16", 8, 128, True, "bf16", "bf16", 8, 256),
    ("w4_g128_sym_f32", 4, 128, True, "f32", "f32", 8, 256),
    ("w4_g32_asym_f32", 4, 32, False, "f32", "f32", 9, 96),
    ("w4_g128_sym_f32_bf16scale", 4, 128, True, "f32", "bf16", 8, 256),
    ("w4_g64_asym_f32_bf16scale", 4, 64, False, "f32", "bf16", 9, 128),
]


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261128)
    index = []
    warnings.simplefilter("ignore")  # overflow to inf in the huge-value rows is intended
    for name, bits, group, sym, src, sdt, rows, cols in CASES:
        w = make_input(rng, rows, cols, src, special=True)
        q, scale, zp = quantize(w, bits, group, sym, src, sdt)
        files = {"input": src_bytes(w, src),
                 "packed": pack_rows(q, bits).astype("<u4").tobytes(),
                 "scale": scale_bytes(scale, sdt)}
        if not sym:
            files["zp"] = pack_zp(zp, bits).astype("<u4").tobytes()
        entry = {"name": name, "bits": bits, "group": group, "symmetric": sym, "src": src,
                 "scale_dtype": sdt, "rows": rows, "cols": cols}
        for k, b in files.items():
            fn = f"{name}.{k}.bin"
            with open(os.path.join(out, fn), "wb") as f:
                f.write(b)
            entry[k] = fn
        index.append(entry)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1])
