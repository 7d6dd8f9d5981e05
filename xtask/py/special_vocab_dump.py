"""Dump what llama.cpp's converter adds from `gguf.SpecialVocab` (gguf==0.19.0) for a
tokenizer directory: merges, special token ids, add-token flags and chat templates.

Usage: python special_vocab_dump.py DIR [N_VOCAB]   (N_VOCAB as the SentencePiece path passes it)

Prints a JSON list of [key, GGUFValueType name, value] in the order GGUFWriter received them
(the `tokenizer.chat_templates` names sorted: gguf-py builds them from a set).
modelpack-format's tokenizer tests compare their own metadata against it.
"""

import json
import sys

import gguf


def main() -> None:
    w = gguf.GGUFWriter(None, "llama")
    n_vocab = int(sys.argv[2]) if len(sys.argv) > 2 else None
    gguf.SpecialVocab(sys.argv[1], load_merges=n_vocab is None, n_vocab=n_vocab).add_to_gguf(w, quiet=True)
    out = []
    for key, v in w.kv_data[0].items():
        if key == "general.architecture":
            continue
        value = v.value
        if key == "tokenizer.chat_templates":
            value = sorted(value)  # built from a set: order depends on the string hash seed
        out.append([key, v.type.name, value])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
