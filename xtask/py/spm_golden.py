"""Golden SentencePiece model for modelpack-format's tokenizer.model parser.

Usage: python spm_golden.py OUT_DIR   (needs `pip install sentencepiece==0.2.1`; not in the CI
venv, so its outputs are checked in: tests/data/spm/{tokenizer.model,expected.json})

Trains a tiny BPE model with byte fallback and user-defined/control symbols (deterministic:
fixed input, one thread), then records what `SentencePieceProcessor` reports for every id:
piece, score and the type predicates llama.cpp's converter uses.
"""

import io
import json
import os
import sys

import sentencepiece as spm

TEXT = """The quick brown fox jumps over the lazy dog.
Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump!
Sphinx of black quartz, judge my vow. Üñíçødé tëxt, 漢字, emoji 🙂 and tabs\tand newlines.
""" * 20


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT.splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        user_defined_symbols=["<tool>", "▁xy"],
        control_symbols=["<|im_start|>"],
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        normalization_rule_name="identity",  # no 240 KB precompiled charsmap
    )
    blob = model.getvalue()
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(blob)
    sp = spm.SentencePieceProcessor(model_proto=blob)
    pieces = []
    for i in range(sp.vocab_size()):
        pieces.append({
            "piece": sp.IdToPiece(i),
            "score": sp.GetScore(i),
            "unknown": sp.IsUnknown(i),
            "control": sp.IsControl(i),
            "unused": sp.IsUnused(i),
            "byte": sp.IsByte(i),
        })
    with open(os.path.join(out, "expected.json"), "w") as f:
        f.write('{"vocab_size": %d, "pieces": [\n' % sp.vocab_size())
        f.write(",\n".join(json.dumps(p, ensure_ascii=False) for p in pieces))
        f.write("\n]}\n")


if __name__ == "__main__":
    main()
