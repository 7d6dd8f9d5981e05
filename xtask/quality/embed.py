#!/usr/bin/env python3
"""Sentence embeddings of all-MiniLM-L6-v2 with a numpy BERT forward pass, for `cargo xtask quality`.

    embed.py MODEL_DIR VARIANTS_JSON OUT_JSON

MODEL_DIR holds the fp32 checkpoint (model.safetensors, tokenizer.json). VARIANTS_JSON is a list
of {"label", "file"}: each file holds dequantized f32 Linear weights that replace the fp32 ones.

The forward pass is what sentence-transformers runs for this model (modules.json: BertModel, then
mean pooling over the attention mask, then L2 normalisation): embeddings + position + token-type
embeddings, LayerNorm, six post-LN encoder layers (12 heads, exact-erf GELU), mean pooling, L2.
Tokenisation is HF `tokenizers` on the model's own tokenizer.json (max 256 tokens).

The fp32 pass is validated first against the similarity matrix sentence-transformers publishes for
this model in its documentation (quickstart: "The weather is lovely today." / "It's so sunny
outside!" / "He drove to the stadium." -> 0.6660, 0.1046, 0.1411); the script fails if any value
is off by more than 5e-4 (the published values are rounded to 1e-4). Then, per variant, the cosine
of each sentence's embedding to its fp32 embedding, and the largest change of any pairwise
similarity.
"""
import json, math, sys
import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

PUBLISHED = {  # sentence-transformers docs, all-MiniLM-L6-v2 quickstart
    "sentences": ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."],
    "similarity": [[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]],
}

SENTENCES = PUBLISHED["sentences"] + [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A monkey is playing drums.",
    "The new movie is awesome and everyone loved it.",
    "Quantization maps 32-bit floats to 4-bit integers with a per-group scale.",
    "How do I verify the signature of a downloaded model package?",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "def add(a, b): return a + b",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
]


def erf(x):
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, below f32 resolution of GELU's output scale),
    # vectorised: numpy has no erf and the exact GELU of HF "gelu" needs one.
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return s * y


def gelu(x):
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(np.float32)


def layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def encode(w, cfg, ids_list):
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = H // nh
    eps = cfg["layer_norm_eps"]
    p = "" if "embeddings.word_embeddings.weight" in w else "bert."
    out = []
    for ids in ids_list:
        n = len(ids)
        x = (w[p + "embeddings.word_embeddings.weight"][ids] + w[p + "embeddings.position_embeddings.weight"][:n]
             + w[p + "embeddings.token_type_embeddings.weight"][0])
        x = layer_norm(x, w[p + "embeddings.LayerNorm.weight"], w[p + "embeddings.LayerNorm.bias"], eps)
        for i in range(cfg["num_hidden_layers"]):
            L = f"{p}encoder.layer.{i}."
            lin = lambda name, v: v @ w[L + name + ".weight"].T + w[L + name + ".bias"]
            q = lin("attention.self.query", x).reshape(n, nh, hd).transpose(1, 0, 2)
            k = lin("attention.self.key", x).reshape(n, nh, hd).transpose(1, 0, 2)
            v = lin("attention.self.value", x).reshape(n, nh, hd).transpose(1, 0, 2)
            s = q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(hd))
            s = np.exp(s - s.max(-1, keepdims=True))
            s = s / s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(n, H)
            x = layer_norm(x + lin("attention.output.dense", ctx), w[L + "attention.output.LayerNorm.weight"],
                           w[L + "attention.output.LayerNorm.bias"], eps)
            h = gelu(lin("intermediate.dense", x))
            x = layer_norm(x + lin("output.dense", h), w[L + "output.LayerNorm.weight"], w[L + "output.LayerNorm.bias"], eps)
        e = x.mean(0)
        out.append(e / max(np.linalg.norm(e), 1e-12))
    return np.stack(out)


def main():
    model_dir, variants_json, out_json = sys.argv[1:4]
    cfg = json.load(open(f"{model_dir}/config.json"))
    base = {k: v.astype(np.float32) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(256)
    ids = [np.array(tok.encode(s).ids) for s in SENTENCES]
    ref = encode(base, cfg, ids)
    sim = ref @ ref.T
    pub = np.array(PUBLISHED["similarity"])
    diff = float(np.abs(sim[:3, :3] - pub).max())
    print(f"fp32 similarities {np.round(sim[:3, :3], 4).tolist()} vs published: max |diff| {diff:.2e}", file=sys.stderr)
    if diff > 5e-4:
        sys.exit(f"fp32 forward pass does not reproduce the published similarities (max |diff| {diff})")
    res = {"sentences": SENTENCES, "fp32_check": {"pairs": 3, "max_abs_diff": diff,
                                                    "similarity": np.round(sim[:3, :3], 6).tolist()},
           "variants": []}
    for v in json.load(open(variants_json)):
        w = dict(base)
        for k, t in load_file(v["file"]).items():
            assert k in w and w[k].shape == t.shape, k
            w[k] = t.astype(np.float32)
        e = encode(w, cfg, ids)
        cos = (e * ref).sum(-1) / (np.linalg.norm(e, axis=-1) * np.linalg.norm(ref, axis=-1))
        dsim = float(np.abs(e @ e.T - sim).max())
        res["variants"].append({"label": v["label"], "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                                "max_similarity_change": dsim})
        print(f"  {v['label']:<28} cos mean {cos.mean():.5f} min {cos.min():.5f}  max sim change {dsim:.4f}",
              file=sys.stderr)
    json.dump(res, open(out_json, "w"), indent=1)


if __name__ == "__main__":
    main()
