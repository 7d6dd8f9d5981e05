"""Regenerate fixtures/families/: tiny random-weight checkpoints of the MoE-era families, written by
transformers' own classes, and the reference GGUFs llama.cpp's converter makes from them.

Usage (the torch venv `cargo xtask hf-check` builds, ~/.cache/modelpack/hf-venv):
    python make_family_fixtures.py OUT_DIR LLAMA_SRC [FAMILY...]
OUT_DIR is fixtures/families; LLAMA_SRC is the llama.cpp source tree (`cargo xtask llama
--print-dir`/src) holding convert_hf_to_gguf.py, conversion/ and gguf-py/. `cargo xtask
family-fixtures` runs exactly this.

Per family, OUT_DIR/<family>/ gets:
  config.json, generation_config.json, model.safetensors   `save_pretrained` (bf16), per-expert names
  tokenizer.json, tokenizer_config.json                     a small byte-level BPE + the family's specials
  ref-q8_0.gguf, ref-f16.gguf                               convert_hf_to_gguf.py --outtype q8_0 / f16
and each MoE family also OUT_DIR/<family>-fused/ with the same model in transformers 5's fused
in-memory expert layout (`experts.gate_up_proj [E,2F,H]`, `experts.down_proj [E,H,F]`), written by
`save_pretrained(save_original_format=False)` (see PROVENANCE.md). Finally OUT_DIR/SHA256SUMS lists
every file so the torch-free CI check can prove the set complete and unchanged.

Everything is seeded; the weights use a wide init (normal with std 1/sqrt(fan_in) for matrices,
norms around 1 with +-30 % spread, random biases and routing biases) so a permuted head, swapped
expert or dropped bias visibly changes the logits.
"""
import hashlib
import json
import math
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file

SEED = 1414
VOCAB = 512  # config vocab_size; the tokenizer fills it except the last PAD_SLOTS ids
PAD_SLOTS = 4  # ids with no token: the reference writes them as [PAD{id}] (UNUSED)
HIDDEN = 256
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 64  # != HIDDEN / HEADS for Qwen3 (head_dim is independent there): see qwen3 below

# Probe text for the tokenizer trainer: fixed, so the vocabulary is reproducible.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "modelpack quantizes Hugging Face checkpoints to GGUF and compressed-tensors packages.",
    "Mixture of experts: a router picks the top-k experts for each token, and their outputs are mixed.",
    "def main():\n    print('hello, world')\n    return 0\n",
    "0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 3.14159 2.71828",
    "User: what is the capital of France?\nAssistant: Paris is the capital of France.",
    "Qwen, GLM and MiniMax are model families; llama.cpp runs them on a CPU.",
    "Release engineers sign every package, verify the manifest and publish it to a registry.",
    "Attention heads share keys and values; rotary position embeddings rotate half of each head.",
    "Weights, scales, zero points, groups, channels, tensors, layers, blocks, tokens, vocabulary.",
    "Il était une fois un petit modèle qui voulait apprendre à parler plusieurs langues.",
    "Ein kleines Modell lernt schnell, wenn die Daten sauber und die Gewichte gut verteilt sind.",
    "我想在apple工作1314151天～ нещо на Български ⚡ emoji 🦙🦙 and symbols <>{}[]()#@!$%^&*",
] * 4

# tokenizer.ggml.pre per family (families.md §1.6): the reference hashes a probe encoding to find
# it, which no made-up tokenizer matches, so it is supplied (see `convert`).
FAMILIES = {
    "qwen3": dict(pre="qwen2", moe=False),
    "qwen3-moe": dict(pre="qwen2", moe=True),
    "glm4": dict(pre="glm4", moe=False),
    "glm4-moe": dict(pre="glm4", moe=True),
    "minimax-m2": dict(pre="minimax-m2", moe=True),
    # DeepSeek-V3 (MLA, group routing, yarn, a dropped MTP layer); the reference only reads
    # per-expert checkpoints for deepseek2, so no fused twin.
    "deepseek-v3": dict(pre="deepseek-v3", moe=False),
    # The same weights as DeepSeek ships them: F8_E4M3 + 128x128 weight_scale_inv (made from
    # deepseek-v3, so generate that first).
    "deepseek-v3-fp8": dict(pre="deepseek-v3", moe=False, outtypes=["q8_0"]),
    # Kimi K2: model_type kimi_k2 (raw config, legacy rope_scaling), a tiktoken.model vocabulary.
    "kimi-k2": dict(pre="kimi-k2", moe=False, outtypes=["q8_0"]),
    # Nemotron Super/Ultra (DeciLMForCausalLM): per-layer block_configs, hand-written (no
    # transformers class; the release ships remote code), Llama-3 tokenizer regex and RoPE.
    "deci": dict(pre="llama-bpe", moe=False),
    # Nemotron-H (NemotronHForCausalLM, Mamba2 hybrid): config.json rewritten to the releases'
    # shape (hybrid_override_pattern string, no MoE keys), Llama-3 regex so the pre name is known.
    "nemotron-h": dict(pre="llama-bpe", moe=False),
    # Its MoE twin (Nemotron-3-Nano style): M/E/* pattern, routed + shared ReLU² experts.
    "nemotron-h-moe": dict(pre="llama-bpe", moe=False),
}

DEEPSEEK_SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"]
DEEPSEEK_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
    "{% else %}{{ '<｜Assistant｜>' + m['content'] + eos_token }}{% endif %}{% endfor %}"
)
KIMI_SPECIALS = {0: "[BOS]", 1: "[EOS]", 2: "<|im_end|>", 3: "<|im_user|>", 4: "<|im_assistant|>",
                 9: "[EOT]", 10: "<|im_system|>", 17: "<|im_middle|>", 254: "[UNK]", 255: "[PAD]"}
KIMI_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_' + m['role'] + '|>' + m['role'] + '<|im_middle|>' + m['content'] + "
    "'<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_assistant|>assistant<|im_middle|>' }}{% endif %}"
)
KIMI_BASE = 384  # tiktoken base tokens: 256 bytes + 128 merges (the release has 163584)
# Kimi's tokenizer code is remote code (tokenization_kimi.py, needs tiktoken); the reference loads it
# with trust_remote_code and reads `model._mergeable_ranks` and `special_tokens`. This is a minimal
# stand-in written for the fixture with the same two attributes and the same special-token naming.
KIMI_TOKENIZER_PY = '''"""Minimal tiktoken tokenizer for modelpack's Kimi K2 fixture (not Moonshot's file)."""
import base64

import tiktoken
from transformers import PreTrainedTokenizer

PAT = r"""[\\p{L}\\p{N}]+|[^\\s\\p{L}\\p{N}]+|\\s+"""


class TikTokenTokenizer(PreTrainedTokenizer):
    vocab_files_names = {"vocab_file": "tiktoken.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, **kwargs):
        ranks = {}
        with open(vocab_file, "rb") as f:
            for line in f:
                if line.strip():
                    tok, rank = line.split()
                    ranks[base64.b64decode(tok)] = int(rank)
        n = len(ranks)
        dec = kwargs.get("added_tokens_decoder") or {}
        names = {}
        for k, v in dec.items():
            names[int(k)] = v.content if hasattr(v, "content") else v["content"]
        self.special_tokens = {names.get(i, f"<|reserved_token_{i}|>"): i for i in range(n, n + 256)}
        self.model = tiktoken.Encoding(name="kimi-fixture", pat_str=PAT, mergeable_ranks=ranks,
                                       special_tokens=self.special_tokens)
        self._id_to_bytes = {r: t for t, r in ranks.items()}
        super().__init__(**kwargs)

    @property
    def vocab_size(self):
        return self.model.n_vocab

    def get_vocab(self):
        v = {t.decode("latin-1"): r for t, r in self.model._mergeable_ranks.items()}
        v.update(self.special_tokens)
        return v

    def _tokenize(self, text, **kwargs):
        return [str(i) for i in self.model.encode(text, allowed_special="all")]

    def _convert_token_to_id(self, token):
        return self.special_tokens.get(token, int(token) if token.isdigit() else 0)

    def _convert_id_to_token(self, index):
        return str(index)
'''

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_ADDED = ["<think>", "</think>"]  # added but not special, as in Qwen3's tokenizer
GLM_SPECIALS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
]
MINIMAX_SPECIALS = ["]~!b[", "]~b]", "[e~[", "]!d~[", "]!p~[", "<think>", "</think>"]

QWEN_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
GLM_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
MINIMAX_TEMPLATE = (
    "{% for m in messages %}{{ ']~b]' + m['role'] + '\\n' + m['content'] + '[e~[\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ ']~b]ai\\n' }}{% endif %}"
)

# Qwen2's split regex (the other families' real regexes differ in detail; llama.cpp only reads
# the pre name, and HF tokenization is not what these fixtures test).
SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def tokenizer_files(out: Path, specials, added, template, bos, eos, pad, unk, split_regex=None):
    """A byte-level BPE trained on CORPUS up to VOCAB - PAD_SLOTS tokens, specials last."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_regex or SPLIT_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    n_plain = VOCAB - PAD_SLOTS - len(specials) - len(added)
    trainer = trainers.BpeTrainer(
        vocab_size=n_plain,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    assert tok.get_vocab_size() == n_plain, (tok.get_vocab_size(), n_plain)
    tok.add_special_tokens(specials)
    tok.add_tokens(added)
    tok.save(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in specials + added}
    decoder = {}
    for t in specials + added:
        decoder[str(ids[t])] = dict(
            content=t, lstrip=False, normalized=t in added, rstrip=False, single_word=False,
            special=t in specials,
        )
    cfg = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "bos_token": bos,
        "chat_template": template,
        "clean_up_tokenization_spaces": False,
        "eos_token": eos,
        "model_max_length": 4096,
        "pad_token": pad,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": unk,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return ids


def make_config(family, ids):
    common = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    if family == "qwen3":
        # head_dim 128 != hidden / heads = 64: the qwen3 arch takes key_length from head_dim.
        c = dict(common, head_dim=128, intermediate_size=512, num_hidden_layers=2,
                 bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], tie_word_embeddings=True)
        return transformers.Qwen3Config(**c), transformers.Qwen3ForCausalLM
    if family == "qwen3-moe":
        c = dict(common, intermediate_size=512, moe_intermediate_size=256, num_hidden_layers=2,
                 num_experts=4, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                 mlp_only_layers=[], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
        return transformers.Qwen3MoeConfig(**c), transformers.Qwen3MoeForCausalLM
    if family == "glm4":
        c = dict(common, intermediate_size=512, num_hidden_layers=2, partial_rotary_factor=0.5,
                 attention_bias=True, pad_token_id=ids["<|endoftext|>"],
                 eos_token_id=[ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]])
        return transformers.Glm4Config(**c), transformers.Glm4ForCausalLM
    if family == "glm4-moe":
        # 3 main layers are built: layers 0..1 are the model, layer 2 becomes the MTP (nextn) layer.
        c = dict(common, intermediate_size=512, moe_intermediate_size=256, num_hidden_layers=3,
                 n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1,
                 routed_scaling_factor=2.5, norm_topk_prob=True, n_group=1, topk_group=1,
                 partial_rotary_factor=0.5, attention_bias=True, use_qk_norm=True,
                 num_nextn_predict_layers=1, pad_token_id=ids["<|endoftext|>"],
                 eos_token_id=[ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]])
        return transformers.Glm4MoeConfig(**c), transformers.Glm4MoeForCausalLM
    if family == "minimax-m2":
        c = dict(common, intermediate_size=256, num_hidden_layers=2, num_local_experts=4,
                 num_experts_per_tok=2, partial_rotary_factor=0.5, use_qk_norm=True,
                 scoring_func="sigmoid", use_routing_bias=True,
                 bos_token_id=ids["]~!b["], eos_token_id=ids["[e~["])
        return transformers.MiniMaxM2Config(**c), transformers.MiniMaxM2ForCausalLM
    raise ValueError(family)


def deepseek_config(ids, vocab, layers, kimi):
    """DeepseekV3Config with MLA dims whose FP8 128x128 blocks have partial edges (q_lora 96,
    kv_a rows 160, expert rows 192), group routing 2/1 over 4 experts (not for Kimi: 1/1)."""
    c = dict(vocab_size=vocab, hidden_size=128, intermediate_size=256, moe_intermediate_size=192,
             num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2, n_shared_experts=1,
             n_routed_experts=4, routed_scaling_factor=2.5, kv_lora_rank=128, q_lora_rank=96,
             qk_rope_head_dim=32, v_head_dim=64, qk_nope_head_dim=64, n_group=1 if kimi else 2,
             topk_group=1, num_experts_per_tok=2, first_k_dense_replace=1, norm_topk_prob=True,
             max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False, dtype="bfloat16",
             rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                              "original_max_position_embeddings": 1024, "beta_fast": 32.0, "beta_slow": 1.0,
                              "mscale": 1.0, "mscale_all_dim": 1.0},
             bos_token_id=ids["bos"], eos_token_id=ids["eos"])
    return transformers.DeepseekV3Config(**c), transformers.DeepseekV3ForCausalLM


def deepseek_mtp(dst: Path, gen):
    """Add a multi-token-prediction layer as DeepSeek-V3 ships it (model.layers.{num_hidden_layers},
    here a few of its tensors): the reference drops it, and so must we."""
    st = load_file(str(dst / "model.safetensors"))
    h = 128
    layer = json.loads((dst / "config.json").read_text())["num_hidden_layers"]
    p = f"model.layers.{layer}."
    extra = {
        p + "eh_proj.weight": torch.randn((h, 2 * h), generator=gen) * (2 * h) ** -0.5,
        p + "enorm.weight": 1.0 + 0.3 * (torch.rand((h,), generator=gen) * 2 - 1),
        p + "hnorm.weight": 1.0 + 0.3 * (torch.rand((h,), generator=gen) * 2 - 1),
        p + "shared_head.norm.weight": 1.0 + 0.3 * (torch.rand((h,), generator=gen) * 2 - 1),
        p + "input_layernorm.weight": 1.0 + 0.3 * (torch.rand((h,), generator=gen) * 2 - 1),
        p + "self_attn.q_a_proj.weight": torch.randn((96, h), generator=gen) * h ** -0.5,
    }
    for k, v in extra.items():
        st[k] = v.to(torch.bfloat16)
    rewrite_safetensors(dst / "model.safetensors", st)


def to_fp8(src: Path, dst: Path):
    """DeepSeek's FP8 release format from the bf16 checkpoint: every Linear weight of the layer stack
    (not the router, norms, embeddings, lm_head) becomes F8_E4M3 with an F32 `weight_scale_inv` per
    128x128 block ([ceil(R/128), ceil(C/128)], partial edge blocks with their own scale; the value is
    fp8 * scale), and config.json gets DeepSeek's quantization_config."""
    st = load_file(str(src / "model.safetensors"))
    out = {}
    for k, w in st.items():
        linear = (k.startswith("model.layers.") and k.endswith(".weight") and w.ndim == 2
                  and not k.endswith("mlp.gate.weight"))
        if not linear:
            out[k] = w
            continue
        r, c = w.shape
        br, bc = -(-r // 128), -(-c // 128)
        wf = torch.zeros((br * 128, bc * 128), dtype=torch.float32)
        wf[:r, :c] = w.float()
        blocks = wf.view(br, 128, bc, 128)
        amax = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-8)
        scale = amax / 448.0
        q = (blocks / scale[:, None, :, None]).view(br * 128, bc * 128)[:r, :c]
        out[k] = q.to(torch.float8_e4m3fn)
        out[k + "_scale_inv"] = scale.to(torch.float32).contiguous()
    rewrite_safetensors(dst / "model.safetensors", out)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                  "weight_block_size": [128, 128]}
    (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for f in ["generation_config.json", "tokenizer.json", "tokenizer_config.json"]:
        if (src / f).exists():
            shutil.copy(src / f, dst / f)


def kimi_tokenizer(out: Path):
    """A tiny tiktoken.model (a byte-level BPE trained on CORPUS: 256 byte ranks, then merged tokens
    in merge order), Kimi's tokenizer_config.json shape (auto_map to tokenization_kimi, specials
    named in added_tokens_decoder) and the stand-in tokenization_kimi.py. Returns the special ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    import base64

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=KIMI_BASE, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(CORPUS, trainer=trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    dec = {v: k for k, v in bytes_to_unicode().items()}
    ranks = [bytes([b]) for b in range(256)]
    seen = set(ranks)
    for m in merges:
        a, b = m if isinstance(m, list) else m.split(" ")
        t = bytes(dec[ch] for ch in a + b)
        if t not in seen:
            seen.add(t)
            ranks.append(t)
    ranks = ranks[:KIMI_BASE]
    assert len(ranks) == KIMI_BASE, len(ranks)
    (out / "tiktoken.model").write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(ranks)))
    (out / "tokenization_kimi.py").write_text(KIMI_TOKENIZER_PY)
    # Kimi's config.json maps AutoConfig to its remote configuration_deepseek.py; AutoTokenizer needs a
    # loadable config first, so a stand-in subclass is shipped as Kimi does.
    (out / "configuration_deepseek.py").write_text(
        '"""Stand-in for Kimi K2\'s remote config class (modelpack fixture)."""\n'
        "from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config as _Base\n\n\n"
        "class DeepseekV3Config(_Base):\n    model_type = \"kimi_k2\"\n"
    )
    decoder = {str(KIMI_BASE + i): dict(content=c, lstrip=False, normalized=False, rstrip=False,
                                         single_word=False, special=True) for i, c in KIMI_SPECIALS.items()}
    cfg = {
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_end|>", "<|im_user|>", "<|im_assistant|>", "<|im_system|>",
                                      "<|im_middle|>"],
        "auto_map": {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", None]},
        "bos_token": "[BOS]",
        "chat_template": KIMI_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "[EOS]",
        "model_max_length": 4096,
        "pad_token": "[PAD]",
        "tokenizer_class": "TikTokenTokenizer",
        "unk_token": "[UNK]",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return dict(bos=KIMI_BASE, eos=KIMI_BASE + 1)


def kimi_config(dst: Path):
    """Rewrite the saved config as Kimi K2 ships it: model_type kimi_k2 (AutoConfig rejects it, so the
    reference reads the raw file), 4.x-style rope_theta + rope_scaling{type: yarn}, no head_dim."""
    cfg = json.loads((dst / "config.json").read_text())
    rp = cfg.pop("rope_parameters")
    for k in ["head_dim", "qk_head_dim", "rope_interleave", "output_router_logits", "pretraining_tp"]:
        cfg.pop(k, None)
    cfg.update(model_type="kimi_k2", rope_theta=50000.0, num_nextn_predict_layers=0, scoring_func="sigmoid",
               topk_method="noaux_tc",
               auto_map={"AutoConfig": "configuration_deepseek.DeepseekV3Config",
                         "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
               rope_scaling={"type": "yarn", "factor": 32.0, "original_max_position_embeddings": 128,
                             "beta_fast": 1.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0})
    del rp
    (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def wide_init(model, gen):
    """Seeded init wide enough that structural mistakes change the logits."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            shape = p.shape
            if p.ndim >= 2:
                std = 1.0 if "embed" in name else shape[-1] ** -0.5
                if name.endswith("gate.weight") or "router" in name:
                    std *= 4.0  # decisive routing: a swapped expert changes the choice
                v = torch.randn(shape, generator=gen, dtype=torch.float32) * std
            elif "norm" in name:
                v = 1.0 + 0.3 * (torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1)
            else:  # biases, e_score_correction_bias
                v = 0.1 * torch.randn(shape, generator=gen, dtype=torch.float32)
            p.copy_(v.to(p.dtype))
        for name, b in sorted(model.named_buffers(), key=lambda kv: kv[0]):
            if name.endswith("e_score_correction_bias"):
                b.copy_((0.1 * torch.randn(b.shape, generator=gen, dtype=torch.float32)).to(b.dtype))


def rewrite_safetensors(path: Path, tensors: dict):
    """Write tensors in name order with the metadata transformers writes."""
    save_file({k: tensors[k].contiguous() for k in sorted(tensors)}, str(path), metadata={"format": "pt"})


def glm4_moe_mtp(dst: Path, gen):
    """Turn the 3-layer Glm4Moe save into 2 layers + 1 nextn (MTP) layer, as GLM-4.5 ships it:
    layer 2 keeps its attention + MoE block and gains eh_proj, enorm, hnorm, shared_head.norm
    (the HF class builds no MTP module; the reference maps them to blk.2.nextn.*)."""
    cfg_path = dst / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_hidden_layers"] = 2
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    st = load_file(str(dst / "model.safetensors"))
    h = HIDDEN
    extra = {
        "model.layers.2.eh_proj.weight": torch.randn((h, 2 * h), generator=gen) * (2 * h) ** -0.5,
        "model.layers.2.enorm.weight": 1.0 + 0.3 * (torch.rand((h,), generator=gen) * 2 - 1),
        "model.layers.2.hnorm.weight": 1.0 + 0.3 * (torch.rand((h,), generator=gen) * 2 - 1),
        "model.layers.2.shared_head.norm.weight": 1.0 + 0.3 * (torch.rand((h,), generator=gen) * 2 - 1),
    }
    for k, v in extra.items():
        st[k] = v.to(torch.bfloat16)
    rewrite_safetensors(dst / "model.safetensors", st)


def convert(llama_src: Path, model_dir: Path, outtype: str, out: Path, pre: str):
    """Run llama.cpp's convert_hf_to_gguf.py in a child process with the pre-tokenizer name
    supplied: `TextModel.get_vocab_base_pre` is replaced by one returning `pre` (the reference
    would hash the probe encoding, which a made-up tokenizer never matches).

    DeciLM: `DeciModel.set_vocab` takes its gpt2 path only for `vocab_size == 128256` (every
    Nemotron Super/Ultra release) and reads anything else as DeciLM-7B's SentencePiece-style
    vocabulary; the tiny fixture's 512 would take that path, so it is pointed at the same gpt2
    code the releases take (`TextModel._set_vocab_gpt2`, line for line the 128256 branch). And
    transformers 5's `AutoTokenizer` first loads the `nemotron-nas` config, which (remote code,
    not trusted) fails; the stand-in loads tokenizer.json + tokenizer_config.json directly with
    `PreTrainedTokenizerFast`, the class tokenizer_config.json names."""
    deci_patch = ""
    if model_dir.name == "deci":
        deci_patch = (
            "import conversion.deci as deci\n"
            "deci.DeciModel.set_vocab = base.TextModel._set_vocab_gpt2\n"
            "import transformers\n"
            "transformers.AutoTokenizer.from_pretrained = transformers.PreTrainedTokenizerFast.from_pretrained\n"
        )
    if model_dir.name == "nemotron-h":
        # transformers 5's NemotronHConfig fills class defaults, num_experts_per_tok = 2 among
        # them, so with AutoConfig this tree's converter labels every dense Nemotron-H
        # `nemotron_h_moe` with all-zero feed_forward_length (MLP layers read as recurrent; the
        # GGUF does not load). It falls back to the raw config.json when AutoConfig fails, as
        # for remote-code releases: the stand-in makes it take that path.
        deci_patch = (
            "def _no_autoconfig(*a, **k):\n"
            "    raise ValueError('fixture: read the raw config.json')\n"
            "base.AutoConfig.from_pretrained = _no_autoconfig\n"
        )
    code = f"""
import sys
sys.path.insert(0, {str(llama_src)!r})
sys.path.insert(1, {str(llama_src / 'gguf-py')!r})
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}
{deci_patch}import runpy
sys.argv = ['convert_hf_to_gguf.py', {str(model_dir)!r}, '--outtype', {outtype!r}, '--outfile', {str(out)!r}]
runpy.run_path({str(llama_src / 'convert_hf_to_gguf.py')!r}, run_name='__main__')
"""
    env = dict(os.environ, NO_LOCAL_GGUF="1", PYTHONHASHSEED="0")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-8000:])
        raise SystemExit(f"convert_hf_to_gguf.py --outtype {outtype} failed on {model_dir}")


LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + "
    "m['content'] + '<|eot_id|>' }}{% endfor %}"
)
# Per layer: (attention, ffn) as Nemotron's block_configs spell them. Every kind of layer once:
# GQA with 2, 1 and 4 kv heads, a linear attention, a no-op attention, a no-op FFN, and FFN
# widths from ffn_mult that round up (1.0 → 170 → 256, 2.0 → 341 → 512) or land exactly (1.5).
DECI_BLOCKS = [
    ({"n_heads_in_group": 2}, {"ffn_mult": 1.0}),
    ({"n_heads_in_group": None, "replace_with_linear": True}, {"ffn_mult": 2.0}),
    ({"n_heads_in_group": None, "no_op": True}, {"ffn_mult": 1.5}),
    ({"n_heads_in_group": 4}, {"ffn_mult": None, "no_op": True}),
    ({"n_heads_in_group": 1}, {"ffn_mult": 0.5}),
]


def deci_fixture(dst: Path, gen):
    """Nemotron-style DeciLM checkpoint written by hand (bf16 safetensors in HF's names)."""
    t = tokenizer_files(dst, LLAMA3_SPECIALS, [], LLAMA3_TEMPLATE, LLAMA3_SPECIALS[0], LLAMA3_SPECIALS[4],
                        None, None, split_regex=LLAMA3_REGEX)
    blocks = []
    for att, ffn in DECI_BLOCKS:
        a = dict(n_heads_in_group=None, no_op=False, replace_with_linear=False, sparsify=None)
        a.update(att)
        f = dict(ffn_mult=None, no_op=False, replace_with_linear=False, sparsify=None)
        f.update(ffn)
        blocks.append(dict(attention=a, ffn=f))
    h, heads, d = HIDDEN, HEADS, HIDDEN // HEADS
    cfg = dict(
        _name_or_path="deci-fixture", architectures=["DeciLMForCausalLM"], model_type="nemotron-nas",
        auto_map={"AutoConfig": "configuration_decilm.DeciLMConfig",
                  "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM"},
        block_configs=blocks, bos_token_id=t[LLAMA3_SPECIALS[0]], eos_token_id=t[LLAMA3_SPECIALS[4]],
        hidden_act="silu", hidden_size=h, initializer_range=0.02, max_position_embeddings=1024,
        num_attention_heads=heads, num_hidden_layers=len(blocks), rms_norm_eps=1e-5,
        rope_scaling=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=128, rope_type="llama3"),
        rope_theta=500000.0, tie_word_embeddings=False, torch_dtype="bfloat16", vocab_size=VOCAB,
    )
    (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (dst / "generation_config.json").write_text(json.dumps(
        dict(bos_token_id=cfg["bos_token_id"], eos_token_id=cfg["eos_token_id"]), indent=2) + "\n")
    shapes = {"model.embed_tokens.weight": (VOCAB, h), "model.norm.weight": (h,), "lm_head.weight": (VOCAB, h)}
    for i, blk in enumerate(blocks):
        p = f"model.layers.{i}."
        a, f = blk["attention"], blk["ffn"]
        if a["replace_with_linear"]:
            shapes[p + "input_layernorm.weight"] = (h,)
            shapes[p + "self_attn.linear_attn.weight"] = (h, h)
        elif not a["no_op"]:
            kv = heads // a["n_heads_in_group"]
            shapes[p + "input_layernorm.weight"] = (h,)
            for n, rows in [("q_proj", heads * d), ("k_proj", kv * d), ("v_proj", kv * d)]:
                shapes[p + f"self_attn.{n}.weight"] = (rows, h)
            shapes[p + "self_attn.o_proj.weight"] = (h, heads * d)
        if not f["no_op"]:
            n = int(2 * f["ffn_mult"] * h / 3)
            ff = n if n % 256 == 0 else n + 256 - n % 256
            shapes[p + "post_attention_layernorm.weight"] = (h,)
            shapes[p + "mlp.gate_proj.weight"] = (ff, h)
            shapes[p + "mlp.up_proj.weight"] = (ff, h)
            shapes[p + "mlp.down_proj.weight"] = (h, ff)
    st = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if len(shape) == 2:
            std = 1.0 if "embed" in name else shape[-1] ** -0.5
            v = torch.randn(shape, generator=gen, dtype=torch.float32) * std
        else:
            v = 1.0 + 0.3 * (torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1)
        st[name] = v.to(torch.bfloat16)
    rewrite_safetensors(dst / "model.safetensors", st)


NEMOTRON_SPECIALS = ["<unk>", "<s>", "</s>", "<SPECIAL_10>", "<SPECIAL_11>"]
NEMOTRON_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<SPECIAL_10>' + m['role'] + '\\n' + m['content'] + '<SPECIAL_11>\\n' }}"
    "{% endfor %}"
)
# Layer patterns (M Mamba2, * attention, - ReLU² MLP, E MoE): every kind at least once, a Mamba
# layer first (as the releases) and attention between Mamba layers.
NEMOTRON_H_PATTERN = "M-M*-"
NEMOTRON_H_MOE_TYPES = ["linear_attention", "moe", "full_attention", "moe", "linear_attention", "moe"]
# Keys of transformers 5's NemotronHConfig that a dense release config.json does not have; with
# `num_experts_per_tok` present the reference converts to nemotron_h_moe (families.md §2.8c).
NEMOTRON_MOE_KEYS = ["n_routed_experts", "n_shared_experts", "moe_intermediate_size",
                     "moe_shared_expert_intermediate_size", "moe_latent_size", "moe_shared_expert_overlap",
                     "num_experts_per_tok", "routed_scaling_factor", "n_group", "topk_group", "norm_topk_prob",
                     "num_nextn_predict_layers", "mtp_layers_block_type", "mtp_hybrid_override_pattern"]


def nemotron_h_model(dst: Path, gen, moe: bool):
    """NemotronHForCausalLM(NemotronHConfig(...)).save_pretrained() with Mamba2 parameters in their
    trained ranges (A_log = log(uniform[1,16]), dt_bias = softplus^-1 of a log-uniform step in
    [1e-3, 1e-1], D around 1). The dense twin's config.json is then rewritten to the releases'
    shape (Nemotron-H-8B: `hybrid_override_pattern` string, no MoE keys); the MoE twin keeps the
    transformers-5 `layers_block_type` list as saved."""
    t = tokenizer_files(dst, NEMOTRON_SPECIALS, [], NEMOTRON_TEMPLATE, "<s>", "</s>", None, "<unk>",
                        split_regex=LLAMA3_REGEX)
    c = dict(vocab_size=VOCAB, hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             max_position_embeddings=4096, intermediate_size=256, mamba_num_heads=8, mamba_head_dim=32,
             n_groups=2, ssm_state_size=16, conv_kernel=4, layer_norm_epsilon=1e-5, tie_word_embeddings=False,
             bos_token_id=t["<s>"], eos_token_id=t["</s>"], pad_token_id=t["<unk>"], dtype="bfloat16")
    if moe:
        c.update(layers_block_type=NEMOTRON_H_MOE_TYPES, n_routed_experts=4, n_shared_experts=1,
                 moe_intermediate_size=128, moe_shared_expert_intermediate_size=256, num_experts_per_tok=2,
                 routed_scaling_factor=2.5, norm_topk_prob=True, n_group=1, topk_group=1)
    else:
        c.update(hybrid_override_pattern=NEMOTRON_H_PATTERN)
    config = transformers.NemotronHConfig(**c)
    torch.manual_seed(SEED)
    model = transformers.NemotronHForCausalLM(config)
    wide_init(model, gen)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            n = p.shape[0] if p.ndim else 1
            if name.endswith("A_log"):
                p.copy_(torch.log(1.0 + 15.0 * torch.rand((n,), generator=gen)).to(p.dtype))
            elif name.endswith("dt_bias"):
                dt = torch.exp(torch.rand((n,), generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
                p.copy_((dt + torch.log(-torch.expm1(-dt))).to(p.dtype))
            elif name.endswith(".D"):
                p.copy_((0.5 + torch.rand((n,), generator=gen)).to(p.dtype))
    model = model.to(torch.bfloat16).eval()
    model.save_pretrained(str(dst))
    cfg = json.loads((dst / "config.json").read_text())
    if not moe:
        for k in NEMOTRON_MOE_KEYS + ["layers_block_type"]:
            cfg.pop(k, None)
        cfg["hybrid_override_pattern"] = NEMOTRON_H_PATTERN
        cfg["num_hidden_layers"] = len(NEMOTRON_H_PATTERN)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def make_family(out_root: Path, llama_src: Path, family: str):
    spec = FAMILIES[family]
    dst = out_root / family
    if family == "deci":
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        deci_fixture(dst, torch.Generator().manual_seed(SEED + sum(map(ord, family))))
        for outtype in spec.get("outtypes", ["q8_0", "f16"]):
            convert(llama_src, dst, outtype, dst / f"ref-{outtype}.gguf", spec["pre"])
        return
    if family.startswith("nemotron-h"):
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        nemotron_h_model(dst, torch.Generator().manual_seed(SEED + sum(map(ord, family))), family.endswith("moe"))
        for outtype in spec.get("outtypes", ["q8_0", "f16"]):
            convert(llama_src, dst, outtype, dst / f"ref-{outtype}.gguf", spec["pre"])
        return
    if family == "deepseek-v3-fp8":
        src = out_root / "deepseek-v3"
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        to_fp8(src, dst)
        for outtype in spec.get("outtypes", ["q8_0", "f16"]):
            convert(llama_src, dst, outtype, dst / f"ref-{outtype}.gguf", spec["pre"])
        return
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    if family in ("deepseek-v3", "kimi-k2"):
        kimi = family == "kimi-k2"
        if kimi:
            ids = kimi_tokenizer(dst)
            vocab = KIMI_BASE + 256
        else:
            t = tokenizer_files(dst, DEEPSEEK_SPECIALS, [], DEEPSEEK_TEMPLATE, DEEPSEEK_SPECIALS[0],
                                DEEPSEEK_SPECIALS[1], DEEPSEEK_SPECIALS[2], None)
            ids = dict(bos=t[DEEPSEEK_SPECIALS[0]], eos=t[DEEPSEEK_SPECIALS[1]])
            vocab = VOCAB
        config, cls = deepseek_config(ids, vocab, 2 if kimi else 3, kimi)
    elif family.startswith("qwen3"):
        ids = tokenizer_files(dst, QWEN_SPECIALS, QWEN_ADDED, QWEN_TEMPLATE, None, "<|im_end|>", "<|endoftext|>", None)
    elif family.startswith("glm4"):
        ids = tokenizer_files(dst, GLM_SPECIALS, [], GLM_TEMPLATE, None, "<|endoftext|>", "<|endoftext|>", None)
    else:
        ids = tokenizer_files(dst, MINIMAX_SPECIALS, [], MINIMAX_TEMPLATE, "]~!b[", "[e~[", None, "]!d~[")
    if not family.startswith(("deepseek", "kimi")):
        config, cls = make_config(family, ids)
    gen = torch.Generator().manual_seed(SEED + sum(map(ord, family)))
    torch.manual_seed(SEED)
    model = cls(config)
    wide_init(model, gen)
    model = model.to(torch.bfloat16).eval()
    model.save_pretrained(str(dst))
    if family == "glm4-moe":
        glm4_moe_mtp(dst, gen)
    if family == "deepseek-v3":
        deepseek_mtp(dst, gen)
    # Canonical JSON so a regeneration diffs cleanly.
    cfg = json.loads((dst / "config.json").read_text())
    if family == "minimax-m2":
        # The reference reads rotary_dim (v5 saves partial_rotary_factor only): families.md §2.7.
        cfg["rotary_dim"] = int(HEAD_DIM * cfg.get("partial_rotary_factor", 0.5))
    if family in ("deepseek-v3", "kimi-k2"):
        # Released configs state the routing function; transformers-5 drops it (families.md §2.3).
        cfg["scoring_func"] = "sigmoid"
        cfg["topk_method"] = "noaux_tc"
    (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if family == "kimi-k2":
        kimi_config(dst)
    if spec["moe"]:
        fused = out_root / f"{family}-fused"
        if fused.exists():
            shutil.rmtree(fused)
        fused.mkdir(parents=True)
        model.save_pretrained(str(fused), save_original_format=False)
        for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]:
            if (dst / f).exists():
                shutil.copy(dst / f, fused / f)
        if family == "glm4-moe":
            # The same nextn tensors as the per-expert checkpoint, in the fused form.
            per = load_file(str(dst / "model.safetensors"))
            fst = load_file(str(fused / "model.safetensors"))
            for k, v in per.items():
                if k.startswith("model.layers.2.") and ".experts." not in k:
                    fst[k] = v
            for k in [k for k in fst if k.startswith("model.layers.2.") and ".experts." in k]:
                pass  # layer 2's fused experts were saved with the 3-layer model already
            rewrite_safetensors(fused / "model.safetensors", fst)
    for outtype in spec.get("outtypes", ["q8_0", "f16"]):
        convert(llama_src, dst, outtype, dst / f"ref-{outtype}.gguf", spec["pre"])


def sha256sums(out_root: Path):
    lines = []
    for p in sorted(out_root.rglob("*")):
        if p.is_file() and p.name not in ("SHA256SUMS", "PROVENANCE.md"):
            h = hashlib.sha256(p.read_bytes()).hexdigest()
            lines.append(f"{h}  {p.relative_to(out_root).as_posix()}")
    (out_root / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def main():
    out_root = Path(sys.argv[1])
    llama_src = Path(sys.argv[2])
    families = sys.argv[3:] or list(FAMILIES)
    out_root.mkdir(parents=True, exist_ok=True)
    for family in families:
        make_family(out_root, llama_src, family)
        print(f"made {family}", file=sys.stderr)
    sha256sums(out_root)
    versions = dict(torch=torch.__version__, transformers=transformers.__version__)
    print(json.dumps(versions))


if __name__ == "__main__":
    main()
