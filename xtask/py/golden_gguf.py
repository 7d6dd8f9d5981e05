"""Golden vectors for modelpack-quant's GGUF kernels, produced by the reference `gguf` package.

Usage: python golden_gguf.py OUT_DIR

Writes, per case and source dtype, the raw little-endian source bytes and the bytes of
`gguf.quants.quantize(f32 data, GGMLQuantizationType.X)` for the types that case covers, plus
`index.json` with shapes, file names and the SHA-256 of `gguf.quants.dequantize` of each output
(f32 little-endian). For f16/bf16 sources the data is upcast to f32 exactly first, which is what
llama.cpp does. Deterministic: fixed seed, no timestamps.
"""

import hashlib
import json
import os
import sys
import warnings

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

QK = 32
ROW = 96  # three blocks per row; odd block count per row
ALL = ["Q8_0", "Q4_0", "Q4_1"]


def bf16_round(x: np.ndarray) -> np.ndarray:
    """f32 -> bf16 bits, round to nearest even (finite inputs)."""
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16)


def blocks_general(rng: np.random.Generator, huge: float, tiny: float) -> list:
    """Varied finite blocks for all three types (no block whose min or max is a zero of mixed
    sign: numpy's min/max pick that zero's sign by SIMD lane order)."""
    out = []
    for scale in [1e-3, 0.02, 1.0, 37.0, 1e3]:
        for _ in range(3):
            out.append(rng.standard_normal(QK) * scale)
    # Heavy tails / outliers.
    for _ in range(4):
        b = rng.standard_normal(QK) * 0.05
        b[rng.integers(QK)] = rng.choice([-1, 1]) * rng.uniform(2, 20)
        out.append(b)
    # Largest magnitude negative, and ties in |x| between +m and -m (first occurrence wins).
    b = rng.uniform(-1, 1, QK)
    b[7] = -3.0
    out.append(b)
    b = rng.uniform(-1, 1, QK)
    b[3], b[20] = 2.5, -2.5
    out.append(b)
    b = rng.uniform(-1, 1, QK)
    b[3], b[20] = -2.5, 2.5
    out.append(b)
    # Q8_0 exact .5 ties: amax = 127 * 2^k gives d = 2^k, id = 2^-k, x*id = n + 0.5.
    for k in [-4, 0, 3]:
        n = rng.integers(-126, 126, QK).astype(np.float64)
        b = (n + 0.5) * 2.0**k
        b[0] = 127 * 2.0**k
        out.append(b)
    # Q4_0 boundaries: max = -8 * 2^k gives d = 2^k; x*id + 8.5 lands on integers.
    for k in [-2, 1]:
        n = rng.integers(-8, 8, QK).astype(np.float64)
        b = (n - 0.5) * 2.0**k
        b[5] = -8 * 2.0**k
        out.append(b)
    # Q4_1 boundaries: min = 0, max = 15 gives d = 1; values n + 0.5.
    n = rng.integers(0, 14, QK).astype(np.float64)
    b = n + 0.5
    b[0], b[1] = 0.0, 15.0
    out.append(b)
    # Constant blocks, all +0 zeros, and all -0 zeros.
    out.append(np.full(QK, 0.75))
    out.append(np.full(QK, -3.0))
    out.append(np.zeros(QK))
    out.append(np.full(QK, -0.0))
    # Subnormal f32 values (with and without a normal companion) and huge values.
    # (For f32/bf16, 1/d overflows to inf there: the references store q = 0.)
    out.append(rng.standard_normal(QK) * tiny)
    b = rng.standard_normal(QK) * tiny * 0.1
    b[9] = tiny * 1e3
    out.append(b)
    out.append(rng.uniform(0.5, 1.0, QK) * huge)
    out.append(-rng.uniform(0.5, 1.0, QK) * huge)
    # Pad to a whole number of rows with Gaussian blocks.
    while (len(out) * QK) % ROW:
        out.append(rng.standard_normal(QK))
    return out


def blocks_signed_zero() -> list:
    """Zero-sign cases for Q8_0 and Q4_0 only (the scale's sign comes from the first |x| max)."""
    out = []
    b = np.zeros(QK)
    b[0] = -0.0
    out.append(b)  # -0 first, then +0: Q4_0 d = +0
    b = np.full(QK, -0.0)
    b[0] = 0.0
    out.append(b)  # +0 first: Q4_0 d = -0
    b = np.zeros(QK)
    b[1::2] = -0.0
    b[31] = 1e-3
    out.append(b)
    return out


def main() -> None:
    # Expected: huge blocks overflow f16 scales to inf, tiny ones overflow 1/d (references store 0).
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261128)
    cases = []
    for src in ["f32", "f16", "bf16"]:
        huge = {"f32": 1e30, "f16": 6e4, "bf16": 1e30}[src]
        tiny = {"f32": 1e-39, "f16": 3e-6, "bf16": 1e-39}[src]  # subnormal in each dtype
        for name, blocks, types in [
            ("mixed", blocks_general(rng, huge, tiny), ALL),
            ("signed_zero", blocks_signed_zero(), ["Q8_0", "Q4_0"]),
        ]:
            x = np.concatenate(blocks).astype(np.float32)
            if src == "f32":
                raw = x.astype("<f4").tobytes()
                data = x
            elif src == "f16":
                h = x.astype(np.float16)
                raw = h.astype("<f2").tobytes()
                data = h.astype(np.float32)
            else:
                bits = bf16_round(x)
                raw = bits.astype("<u2").tobytes()
                data = (bits.astype(np.uint32) << 16).view(np.float32)
            assert np.isfinite(data).all()
            row = ROW if data.size % ROW == 0 else QK
            data = data.reshape(-1, row)
            stem = f"{name}.{src}"
            with open(os.path.join(out_dir, stem + ".input.bin"), "wb") as f:
                f.write(raw)
            outs = {}
            for t in types:
                q = quantize(data, T[t])
                qb = np.ascontiguousarray(q).tobytes()
                fname = f"{stem}.{t}.bin"
                with open(os.path.join(out_dir, fname), "wb") as f:
                    f.write(qb)
                deq = dequantize(q, T[t]).astype("<f4").tobytes()
                outs[t] = {"file": fname, "dequant_sha256": hashlib.sha256(deq).hexdigest()}
            cases.append(
                {"name": name, "src": src, "rows": data.shape[0], "row_len": row, "input": stem + ".input.bin", "outputs": outs}
            )
    index = {
        "generator": "xtask/py/golden_gguf.py",
        "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
        "numpy": np.__version__,
        "cases": cases,
    }
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
