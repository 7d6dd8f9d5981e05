"""A tiny random llama, written as GGUF by the `gguf` package, and a numpy forward pass of it.

Stand-alone cross-check of the llama.cpp harness (tests/it/llama_run.rs): it needs neither our
writer nor the fixture, so a failure here points at llama.cpp or the harness, not at modelpack.

  python tiny_llama_gguf.py write OUT.gguf --type f32|q8_0|q4_0|q4_1 [--seed N]
      Writes the model; prints its hyperparameters as JSON (what llama.cpp must report).
  python tiny_llama_gguf.py greedy MODEL.gguf N PROMPT_IDS...
      Reads any llama GGUF (ours or modelpack's) with gguf.GGUFReader, dequantizes with
      gguf.quants.dequantize, runs N greedy steps in float64 numpy and prints JSON
      {"ids": [...], "pieces": [...], "margins": [...], "eos": bool}: each generated token's
      bytes in hex, each step's top-1 minus top-2 logit, and whether generation stopped because
      EOS won (as llama-simple stops; EOS itself is not in ids).

The tokenizer is byte-level BPE (`gpt2`): the 256 GPT-2 byte symbols, a few merges, and two
control tokens; token ids of plain ASCII text are therefore easy to predict.
"""

import json
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

HP = dict(n_vocab=0, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_ctx=256,
          eps=1e-5, rope_base=10000.0)
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r"]
TYPES = {"f32": (Q.F32, 0), "q8_0": (Q.Q8_0, 7), "q4_0": (Q.Q4_0, 2), "q4_1": (Q.Q4_1, 3)}


def byte_symbols():
    """GPT-2's reversible byte -> printable-unicode map, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return [out[b] for b in range(256)]


def vocab():
    tokens = byte_symbols() + [m.replace(" ", "") for m in MERGES] + ["<|bos|>", "<|eos|>"]
    types = [1] * (len(tokens) - 2) + [3, 3]
    return tokens, types


def write(path, qname, seed):
    qtype, ftype = TYPES[qname]
    tokens, types = vocab()
    hp = dict(HP, n_vocab=len(tokens))
    rng = np.random.default_rng(seed)
    e, hd = hp["n_embd"], hp["n_embd"] // hp["n_head"]

    def mat(rows, cols, scale):
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-random-llama")
    w.add_context_length(hp["n_ctx"])
    w.add_embedding_length(e)
    w.add_block_count(hp["n_layer"])
    w.add_feed_forward_length(hp["n_ff"])
    w.add_head_count(hp["n_head"])
    w.add_head_count_kv(hp["n_head_kv"])
    w.add_layer_norm_rms_eps(hp["eps"])
    w.add_rope_freq_base(hp["rope_base"])
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(hp["n_vocab"])
    w.add_file_type(ftype)
    w.add_quantization_version(2)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(len(tokens) - 2)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_add_bos_token(True)

    def put(name, arr):
        if arr.ndim == 2 and qtype != Q.F32:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr)

    # Large output scale: confident logits, so quantization noise rarely flips the top-1 token.
    put("token_embd.weight", mat(hp["n_vocab"], e, np.sqrt(e)))
    for i in range(hp["n_layer"]):
        put(f"blk.{i}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(e)).astype(np.float32))
        put(f"blk.{i}.attn_q.weight", mat(e, e, 1.0))
        put(f"blk.{i}.attn_k.weight", mat(hp["n_head_kv"] * hd, e, 1.0))
        put(f"blk.{i}.attn_v.weight", mat(hp["n_head_kv"] * hd, e, 1.0))
        put(f"blk.{i}.attn_output.weight", mat(e, e, 1.0))
        put(f"blk.{i}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(e)).astype(np.float32))
        put(f"blk.{i}.ffn_gate.weight", mat(hp["n_ff"], e, 1.0))
        put(f"blk.{i}.ffn_up.weight", mat(hp["n_ff"], e, 1.0))
        put(f"blk.{i}.ffn_down.weight", mat(e, hp["n_ff"], 1.0))
    put("output_norm.weight", np.ones(e, np.float32))
    put("output.weight", mat(hp["n_vocab"], e, 8.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(json.dumps(dict(hp, file_type=ftype, type=qname)))


def field(reader, key):
    f = reader.fields[key]
    v = f.parts[f.data[0]]
    return v.tobytes().decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0].item()


def load(path):
    r = gguf.GGUFReader(path)
    arch = field(r, "general.architecture")
    assert arch == "llama", f"{path}: architecture {arch!r}, only llama is supported here"
    hp = dict(
        n_embd=field(r, "llama.embedding_length"),
        n_layer=field(r, "llama.block_count"),
        n_head=field(r, "llama.attention.head_count"),
        n_head_kv=field(r, "llama.attention.head_count_kv"),
        eps=field(r, "llama.attention.layer_norm_rms_epsilon"),
        rope_base=field(r, "llama.rope.freq_base") if "llama.rope.freq_base" in r.fields else 10000.0,
    )
    tf = r.fields["tokenizer.ggml.tokens"]
    tokens = [tf.parts[i].tobytes().decode() for i in tf.data]
    eos = field(r, "tokenizer.ggml.eos_token_id")
    t = {}
    for ti in r.tensors:
        shape = tuple(int(x) for x in reversed(ti.shape))  # numpy order: rows, cols
        a = gguf.quants.dequantize(ti.data, ti.tensor_type)
        t[ti.name] = np.asarray(a, np.float64).reshape(shape)
    if "output.weight" not in t:
        t["output.weight"] = t["token_embd.weight"]
    return hp, tokens, eos, t


def rope(x, pos, base):
    """llama.cpp's normal (non-NeoX) RoPE: rotate adjacent pairs (x[2i], x[2i+1])."""
    hd = x.shape[-1]
    theta = pos * base ** (-np.arange(0, hd, 2) / hd)
    c, s = np.cos(theta), np.sin(theta)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def forward(hp, t, ids):
    """Logits of the last position for the token sequence `ids` (no cache: tiny models only)."""
    e, nh, nkv = hp["n_embd"], hp["n_head"], hp["n_head_kv"]
    hd = e // nh
    n = len(ids)

    def norm(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + hp["eps"]) * w

    x = t["token_embd.weight"][ids]
    pos = np.arange(n)[:, None]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(hp["n_layer"]):
        p = f"blk.{i}."
        h = norm(x, t[p + "attn_norm.weight"])
        q = (h @ t[p + "attn_q.weight"].T).reshape(n, nh, hd)
        k = (h @ t[p + "attn_k.weight"].T).reshape(n, nkv, hd)
        v = (h @ t[p + "attn_v.weight"].T).reshape(n, nkv, hd)
        q = np.stack([rope(q[:, j], pos, hp["rope_base"]) for j in range(nh)], 1)
        k = np.stack([rope(k[:, j], pos, hp["rope_base"]) for j in range(nkv)], 1)
        att = np.empty((n, nh, hd))
        for j in range(nh):
            kv = j // (nh // nkv)
            s = q[:, j] @ k[:, kv].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, j] = (s / s.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + att.reshape(n, e) @ t[p + "attn_output.weight"].T
        h = norm(x, t[p + "ffn_norm.weight"])
        g = h @ t[p + "ffn_gate.weight"].T
        u = h @ t[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ t[p + "ffn_down.weight"].T
    x = norm(x, t["output_norm.weight"])
    return x[-1] @ t["output.weight"].T


def greedy(path, steps, ids):
    hp, tokens, eos, t = load(path)
    sym = {c: b for b, c in enumerate(byte_symbols())}
    out, margins, stopped = [], [], False
    for _ in range(steps):
        logits = forward(hp, t, ids + out)
        top2 = np.argsort(logits)[-2:]
        margins.append(float(logits[top2[1]] - logits[top2[0]]))
        if int(top2[1]) == eos:  # llama-simple stops at end of generation, before printing it
            stopped = True
            break
        out.append(int(top2[1]))
    # Control tokens print as their text (llama-simple renders specials); others are bytes.
    pieces = [bytes(sym[c] for c in tokens[i]).hex() if all(c in sym for c in tokens[i])
              else tokens[i].encode().hex() for i in out]
    print(json.dumps({"ids": out, "pieces": pieces, "margins": margins, "eos": stopped}))


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) >= 2 and a[0] == "write":
        qname = a[a.index("--type") + 1] if "--type" in a else "q8_0"
        seed = int(a[a.index("--seed") + 1]) if "--seed" in a else 0
        write(a[1], qname, seed)
    elif len(a) >= 3 and a[0] == "greedy":
        greedy(a[1], int(a[2]), [int(x) for x in a[3:]])
    else:
        sys.exit(__doc__)
