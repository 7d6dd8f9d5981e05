"""Check a safetensors file with the reference reader and writer (safetensors==0.8, numpy).

Usage: python safetensors_dump.py FILE.safetensors

Prints {"metadata", "tensors": [{"name", "dtype", "shape", "hex"}] in file order, and
"reference_equal": whether `safetensors.numpy.save` of the same tensors and metadata produces
byte-identical file contents}. Dtypes numpy lacks (BF16, F8_*) are compared as raw bytes only.
"""

import json
import struct
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
      "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
      "U8": np.uint8, "BOOL": np.bool_}


def main() -> None:
    path = sys.argv[1]
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    order = [k for k in header if k != "__metadata__"]
    out = []
    arrays = {}
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
        names = set(f.keys())
        assert names == set(order), (names, order)
        for name in order:
            info = header[name]
            a, b = info["data_offsets"]
            raw = blob[8 + n + a : 8 + n + b]
            entry = {"name": name, "dtype": info["dtype"], "shape": info["shape"], "hex": raw.hex()}
            if info["dtype"] in NP:
                t = f.get_tensor(name)
                assert t.tobytes() == raw and list(t.shape) == info["shape"], name
                arrays[name] = t
            out.append(entry)
    ref_equal = None
    if len(arrays) == len(order):
        ref_equal = save(arrays, metadata=metadata) == blob
    print(json.dumps({"metadata": metadata, "tensors": out, "reference_equal": ref_equal}))


if __name__ == "__main__":
    main()
