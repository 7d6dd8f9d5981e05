"""Write a GGUF file with the reference writer `gguf.GGUFWriter` (gguf==0.19.0) from a spec.

Usage: python gguf_write_ref.py SPEC.json OUT.gguf

SPEC: {"arch": str, "metadata": [[key, GGUFValueType name, value, sub-type name or null]...]
(without general.architecture, which GGUFWriter adds first), "tensors": [[name, ne (ggml
order), GGMLQuantizationType name, hex bytes]...]}. modelpack-format's tests compare the file
byte for byte with the one our layout produces.
"""

import json
import sys

import numpy as np
import gguf
from gguf import GGUFValueType as V, GGMLQuantizationType as Q


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    w = gguf.GGUFWriter(sys.argv[2], spec["arch"])
    for key, vtype, value, sub in spec["metadata"]:
        w.add_key_value(key, value, V[vtype], V[sub] if sub else None)
    for name, ne, qtype, hexdata in spec["tensors"]:
        raw = np.frombuffer(bytes.fromhex(hexdata), dtype=np.uint8)
        rows = list(reversed(ne[1:]))
        raw = raw.reshape(rows + [raw.size // max(1, int(np.prod(rows)))])
        w.add_tensor(name, raw, raw_dtype=Q[qtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
