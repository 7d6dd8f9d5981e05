"""External-writer fixture for tests/it/inspect.rs: Python's `safetensors` writes files our reader
must read exactly. Usage: write_safetensors.py OUT_DIR. Prints one JSON document:
{file: {tensor: {"dtype", "shape", "hex"}}} where dtype/shape come from the reference reader
(safe_open) and hex is the bytes numpy (or, for bf16, the writer's input buffer) holds.

Files:
- numpy.safetensors: safetensors.numpy.save_file of several dtypes, odd-sized U8/I8 included.
- spec.safetensors: safetensors.serialize_file with a real BF16 tensor (numpy has no bf16).
- unaligned.safetensors: laid out by hand with a 7-byte U8 tensor first, so the F32/BF16 data
  sits at odd offsets (the reference writer sorts by alignment and never does this; other tools
  may); the reference reader must accept it and returns the F32 values we compare against.
"""
import json
import struct
import sys

import numpy as np
import safetensors
from safetensors import TensorSpec, safe_open
from safetensors.numpy import save_file

out = sys.argv[1]
rng = np.random.default_rng(1234)
raw_inputs = {}

numpy_tensors = {
    "a_odd_u8": np.arange(7, dtype=np.uint8) * 3,
    "b_i8": np.array([-128, -1, 0, 1, 127], dtype=np.int8),
    "c_f32": rng.standard_normal((3, 5)).astype(np.float32),
    "d_f16": rng.standard_normal((4,)).astype(np.float16),
    "e_i64": np.array([[1, -2], [3, 1 << 40]], dtype=np.int64),
    "f_f64": rng.standard_normal((2,)),
    "g_bool": np.array([True, False, True]),
}
save_file(numpy_tensors, f"{out}/numpy.safetensors", metadata={"format": "np"})

bf = (rng.standard_normal(12).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
odd = np.arange(5, dtype=np.uint8)
safetensors.serialize_file(
    {
        "bf16": TensorSpec(dtype="bfloat16", shape=(3, 4), data_ptr=bf.ctypes.data, data_len=bf.nbytes),
        "odd": TensorSpec(dtype="uint8", shape=(5,), data_ptr=odd.ctypes.data, data_len=odd.nbytes),
    },
    f"{out}/spec.safetensors",
    metadata={"format": "pt"},
)
raw_inputs["spec.safetensors"] = {"bf16": bf.tobytes().hex()}

u8 = np.arange(7, dtype=np.uint8) + 200
f32 = rng.standard_normal(3).astype(np.float32)
bf2 = (rng.standard_normal(4).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
header = {
    "__metadata__": {"format": "pt"},
    "a": {"dtype": "U8", "shape": [7], "data_offsets": [0, 7]},
    "b": {"dtype": "F32", "shape": [3], "data_offsets": [7, 19]},
    "c": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [19, 27]},
}
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(f"{out}/unaligned.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + u8.tobytes() + f32.tobytes() + bf2.tobytes())
raw_inputs["unaligned.safetensors"] = {"c": bf2.tobytes().hex()}

report = {}
for name in ["numpy.safetensors", "spec.safetensors", "unaligned.safetensors"]:
    entries = {}
    with safe_open(f"{out}/{name}", "numpy") as f:
        for k in f.keys():
            s = f.get_slice(k)
            e = {"dtype": s.get_dtype(), "shape": list(s.get_shape())}
            if e["dtype"] == "BF16":
                e["hex"] = raw_inputs[name][k]
            else:
                e["hex"] = np.ascontiguousarray(f.get_tensor(k)).tobytes().hex()
            entries[k] = e
    report[name] = entries
print(json.dumps(report))
