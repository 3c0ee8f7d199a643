#!/usr/bin/env python3
"""The independent oracle: PyTorch + Hugging Face transformers numbers that layerfold's tests compare
against. Writes small JSON fixtures (and the tiny seeded random models they describe) beside this file.

Usage (in a venv with `pip install torch transformers gguf`; see README "Oracle"):

    python crates/core/tests/oracle/make_fixtures.py            # every fixture
    python crates/core/tests/oracle/make_fixtures.py --only smollm2
    python crates/core/tests/oracle/make_fixtures.py --roundtrip <folder saved by layerfold>

Reads `../shared` (stories260K, WikiText-2) and the SmolLM2 GGUF from LAYERFOLD_CACHE
(default ~/.cache/layerfold; `npm run fetch-model` puts it there).

For each model the fixture holds:
- `tokenize`: ids (no special tokens) of a few texts that exercise the pre-tokenizer;
- `corpus`: the length and SHA-256 of the ids of the whole WikiText-2 test corpus (documents
  joined by a blank line, one BOS first; METHODS.md 4.1);
- `logits`: for one BOS-prefixed input, logits at a few positions (whole rows for tiny vocabularies,
  else the first 64 entries, 8 fixed ids, the argmax and the log-sum-exp of the row);
- `hidden_norms`: per-position L2 norms of h_0..h_L (h_L = last layer output, before the final
  norm) and of the post-norm state (METHODS.md 0);
- `perplexity`: PPL on the first windows of WikiText-2 at a stated seqLen (METHODS.md 4.1).
All in float32 on the CPU, eager attention.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import struct
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
SHARED = Path(os.environ.get("LAYERFOLD_SHARED", REPO.parent / "shared"))
CACHE = Path(os.environ.get("LAYERFOLD_CACHE", Path.home() / ".cache" / "layerfold"))
SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WIKITEXT = SHARED / "data" / "text" / "wikitext2_raw_test.txt"
CALIB = SHARED / "data" / "text" / "wikitext2_valid_tokenized.txt"

TEXTS = [
    "Hello world",
    " = Robert Boulter = ",
    "Numbers 1234567 and 3.14159, dates 2024-01-01.",
    "Unicode: caf\u00e9 na\u00efve \u2014 \u201cquotes\u201d \u65e5\u672c\u8a9e \U0001f642",
    "Line one\n\nLine two\r\n\ttabbed   spaces  ",
    "It's they'll we've I'M",
]
FIXED_IDS = [0, 1, 2, 3, 5, 8, 13, 21]


def need(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"missing fixture input: {path}")
    return path


def documents(path: Path) -> list[str]:
    """METHODS.md 1: lines without their ending, skipping empty or whitespace-only lines."""
    text = need(path).read_bytes().decode("utf-8")
    lines = [l[:-1] if l.endswith("\r") else l for l in text.split("\n")]
    return [l for l in lines if l.strip()]


def corpus_ids(tok, bos: int | None) -> list[int]:
    ids = tok("\n\n".join(documents(WIKITEXT)), add_special_tokens=False).input_ids
    return ([bos] if bos is not None else []) + ids


def ids_digest(ids: list[int]) -> str:
    return hashlib.sha256(struct.pack(f"<{len(ids)}I", *ids)).hexdigest()


def hidden_states(model, input_ids: torch.Tensor):
    """(h_0..h_L, post-norm) for one sequence: HF's tuple ends post-norm, so h_L comes from a hook."""
    captured = {}
    handle = model.model.layers[-1].register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("h_L", out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        out = model(input_ids, output_hidden_states=True)
    handle.remove()
    hs = list(out.hidden_states)
    return hs[:-1] + [captured["h_L"]], hs[-1], out.logits


def perplexity(model, ids: list[int], seq_len: int, windows: int) -> dict:
    nll, count = 0.0, 0
    usable = len(ids) // seq_len
    for w in range(min(windows, usable)):
        x = torch.tensor([ids[w * seq_len : (w + 1) * seq_len]])
        with torch.no_grad():
            logits = model(x).logits[0, :-1].double()
        nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
        count += seq_len - 1
    return {"seq_len": seq_len, "windows": min(windows, usable), "tokens": count, "nll": nll / count, "ppl": math.exp(nll / count)}


def describe(model, tok, bos, *, seq_len, windows, positions=None, full_rows=False, logit_tokens=48):
    docs = documents(WIKITEXT)
    ids = corpus_ids(tok, bos)
    text_ids = ids[:logit_tokens]
    x = torch.tensor([text_ids])
    states, post, logits = hidden_states(model, x)
    positions = positions or [0, len(text_ids) // 2, len(text_ids) - 1]
    rows = []
    for p in positions:
        row = logits[0, p].double()
        entry = {"position": p, "argmax": int(row.argmax()), "logsumexp": float(torch.logsumexp(row, 0))}
        if full_rows:
            entry["values"] = row.tolist()
        else:
            entry["first"] = row[:64].tolist()
            entry["fixed"] = {str(i): float(row[i]) for i in FIXED_IDS}
        rows.append(entry)
    return {
        "tokenize": [{"text": t, "ids": tok(t, add_special_tokens=False).input_ids} for t in TEXTS],
        "corpus": {"documents": len(docs), "tokens": len(ids), "sha256_u32le": ids_digest(ids), "bos": bos},
        "logits": {"input_ids": text_ids, "rows": rows},
        "hidden_norms": {
            "layers": [s[0].double().norm(dim=-1).tolist() for s in states],
            "post_norm": post[0].double().norm(dim=-1).tolist(),
        },
        "perplexity": perplexity(model, ids, seq_len, windows),
    }


def layer_scores(model, tok, bos, seq_len: int, n: int) -> dict:
    """METHODS.md 2.1 and 2.2 from HF's hidden states (h_0..h_{L-1}, post-norm) on a chunked
    calibration set of CALIB (documents joined by a blank line, one BOS, the first n windows)."""
    ids = ([bos] if bos is not None else []) + tok("\n\n".join(documents(CALIB)), add_special_tokens=False).input_ids
    windows = [ids[k * seq_len : (k + 1) * seq_len] for k in range(n)]
    L = model.config.num_hidden_layers
    bi_sum = torch.zeros(L, dtype=torch.float64)
    come_sum = torch.zeros(L, dtype=torch.float64)
    last = [[] for _ in range(L + 1)]
    tokens = 0
    for w in windows:
        with torch.no_grad():
            hs = [h[0].double() for h in model(torch.tensor([w]), output_hidden_states=True).hidden_states]
        for i in range(L):
            cos = torch.nn.functional.cosine_similarity(hs[i], hs[i + 1], dim=-1, eps=0.0)
            bi_sum[i] += (1 - cos.nan_to_num(0.5)).sum()
            come_sum[i] += (1 - cos.nan_to_num(0.5).clamp(0, 1)).sum()
        for i in range(L + 1):
            last[i].append(hs[i][-1])
        tokens += len(w)

    def angular(l, k, lo):
        cs = [torch.nn.functional.cosine_similarity(a, b, dim=0, eps=0.0).clamp(lo, 1) for a, b in zip(last[l], last[l + k])]
        return [float(torch.arccos(c) / math.pi) for c in cs]

    return {
        "calibration": {"file": CALIB.name, "kind": "chunked", "seq_len": seq_len, "n_samples": n, "tokens": tokens},
        "bi_mean": (bi_sum / tokens).tolist(),
        "bi_come_sum": come_sum.tolist(),
        "angular": {
            str(k): {
                "mean": [sum(angular(l, k, -1)) / n for l in range(L - k + 1)],
                "come_sum": [sum(angular(l, k, 0)) for l in range(L - k + 1)],
            }
            for k in (1, 2, 3)
        },
    }


def channel_sensitivity(model, tok, bos, seq_len: int, n: int) -> dict:
    """METHODS.md 2.5 with torch forward pre-hooks on every down_proj and o_proj, on the same chunked
    calibration windows as layer_scores: s_j = mean|a_j| * ||W_down[:, j]||_1 per FFN channel, and
    per KV group the mean over its G query heads' channels of mean|o_c| * ||W_o[:, c]||_1."""
    ids = ([bos] if bos is not None else []) + tok("\n\n".join(documents(CALIB)), add_special_tokens=False).input_ids
    windows = [ids[k * seq_len : (k + 1) * seq_len] for k in range(n)]
    layers = model.model.layers
    sums = {}
    handles = []
    for i, layer in enumerate(layers):
        for name, module in (("ffn", layer.mlp.down_proj), ("attn", layer.self_attn.o_proj)):
            def hook(_m, args, key=(i, name)):
                x = args[0].double().abs().reshape(-1, args[0].shape[-1]).sum(0)
                sums[key] = sums.get(key, 0) + x
            handles.append(module.register_forward_pre_hook(hook))
    tokens = 0
    with torch.no_grad():
        for w in windows:
            model(torch.tensor([w]))
            tokens += len(w)
    for h in handles:
        h.remove()
    cfg = model.config
    n_kv = cfg.num_key_value_heads
    out = []
    for i, layer in enumerate(layers):
        s_ffn = sums[(i, "ffn")] / tokens * layer.mlp.down_proj.weight.double().abs().sum(0)
        e = sums[(i, "attn")] / tokens * layer.self_attn.o_proj.weight.double().abs().sum(0)
        out.append({
            "ffn_first": s_ffn[:32].tolist(),
            "ffn_sum": float(s_ffn.sum()),
            "ffn_top8": torch.argsort(s_ffn, descending=True)[:8].tolist(),
            "kv_groups": e.reshape(n_kv, -1).mean(1).tolist(),
        })
    return {"calibration": {"file": CALIB.name, "kind": "chunked", "seq_len": seq_len, "n_samples": n}, "layers": out}


def provenance() -> dict:
    return {
        "script": "crates/core/tests/oracle/make_fixtures.py",
        "argv": sys.argv[1:],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": "float32",
        "attn_implementation": "eager",
    }


def write(name: str, payload: dict) -> None:
    payload = {"provenance": provenance(), **payload}
    (HERE / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {HERE / (name + '.json')}")


def folder_tokenizer(path: Path):
    """The folder's tokenizer.json exactly as written. transformers 5 rebuilds the pipeline of some
    classes from the model type instead (LlamaTokenizer swaps stories260K's Prepend/Replace
    normalizer for a Metaspace pre-tokenizer, which drops the dummy prefix before a leading space;
    Qwen2Tokenizer imposes its own split regex), so AutoTokenizer is not the file's tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(need(path / "tokenizer.json")))


def load(path, **kw):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", **kw).eval()


def stories() -> None:
    path = need(SHARED / "models" / "stories260K")
    model, tok = load(path), folder_tokenizer(path)
    bos = model.config.bos_token_id
    write("stories260K", describe(model, tok, bos, seq_len=256, windows=8) | {
        "scores": layer_scores(model, tok, bos, 128, 4),
        "channel_sensitivity": channel_sensitivity(model, tok, bos, 128, 4),
    })


def smollm_path() -> Path:
    return need(CACHE / SMOLLM_FILE)


def smollm() -> None:
    path = smollm_path()
    model = load(path.parent, gguf_file=path.name)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    bos = model.config.bos_token_id
    write("smollm2", describe(model, tok, bos, seq_len=512, windows=2) | {
        "scores": layer_scores(model, tok, bos, 256, 2),
        "channel_sensitivity": channel_sensitivity(model, tok, bos, 256, 2),
    })


def tiny_tokenizer():
    """A byte-level BPE of 320 tokens trained on the first WikiText-2 lines (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|bos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    t.train_from_iterator(documents(WIKITEXT)[:2000], trainer)
    return t


TINY = {
    # Qwen2: q/k/v biases, tied embeddings.
    "qwen2-tiny": dict(
        model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=32, intermediate_size=64,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        rope_theta=1000000.0, max_position_embeddings=256, rms_norm_eps=1e-6, use_sliding_window=False,
    ),
    # Qwen3: q_norm/k_norm, explicit head_dim larger than hidden/heads, untied.
    "qwen3-tiny": dict(
        model_type="qwen3", architectures=["Qwen3ForCausalLM"], hidden_size=32, intermediate_size=64,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        tie_word_embeddings=False, rope_theta=1000000.0, max_position_embeddings=256, rms_norm_eps=1e-6,
        use_sliding_window=False,
    ),
    # Mistral: a sliding window shorter than the test sequences.
    "mistral-tiny": dict(
        model_type="mistral", architectures=["MistralForCausalLM"], hidden_size=32, intermediate_size=64,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, sliding_window=16,
        tie_word_embeddings=False, rope_theta=10000.0, max_position_embeddings=256, rms_norm_eps=1e-5,
    ),
    # Llama: llama3 RoPE scaling, attention_bias (q/k/v/o biases), MHA.
    "llama3-tiny": dict(
        model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=32, intermediate_size=64,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, attention_bias=True,
        tie_word_embeddings=False, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
    ),
}


def tiny() -> None:
    from transformers import AutoConfig, PreTrainedTokenizerFast

    tok_model = tiny_tokenizer()
    for i, (name, spec) in enumerate(TINY.items()):
        folder = HERE / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        spec = dict(spec)
        model_type = spec.pop("model_type")
        cfg = AutoConfig.for_model(model_type, vocab_size=320, bos_token_id=1, eos_token_id=0, **spec)
        torch.manual_seed(1234 + i)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():  # larger than the default init so the layers matter
            for n, p in model.named_parameters():
                if n.endswith("bias"):
                    p.normal_(0, 0.1)
                elif "norm" in n:
                    p.uniform_(0.5, 1.5)
                else:
                    p.normal_(0, 0.2)
        model.save_pretrained(folder)
        tok = PreTrainedTokenizerFast(tokenizer_object=tok_model, bos_token="<|bos|>", eos_token="<|endoftext|>")
        tok.save_pretrained(folder)
        model = load(folder)
        tok = folder_tokenizer(folder)
        write(name, describe(model, tok, 1, seq_len=64, windows=4, full_rows=True, logit_tokens=40))


def roundtrip(folder: Path, name: str) -> None:
    """Logits transformers computes from a folder layerfold saved, with the SHA-256 of its weights,
    so the Rust round-trip test can check it reloads the very same bytes."""
    model = load(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    weights = sorted(folder.glob("*.safetensors"))
    digest = hashlib.sha256()
    for w in weights:
        digest.update(w.read_bytes())
    ids = corpus_ids(tok, model.config.bos_token_id)[:48]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    rows = [{"position": p, "argmax": int(logits[p].argmax()), "logsumexp": float(torch.logsumexp(logits[p], 0)),
             "first": logits[p, :64].tolist(), "fixed": {str(i): float(logits[p, i]) for i in FIXED_IDS}}
            for p in (0, len(ids) // 2, len(ids) - 1)]
    write(name, {
        "saved_with": "layerfold, f32",
        "layerfold_json": json.loads((folder / "layerfold.json").read_text()) if (folder / "layerfold.json").exists() else None,
        "weights_sha256": digest.hexdigest(),
        "config": json.loads((folder / "config.json").read_text()),
        "input_ids": ids,
        "rows": rows,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["stories260K", "smollm2", "tiny"], action="append")
    parser.add_argument("--roundtrip", type=Path, help="a folder layerfold saved from the SmolLM2 GGUF")
    parser.add_argument("--name", default="smollm2_roundtrip", help="fixture name for --roundtrip")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.roundtrip:
        roundtrip(args.roundtrip, args.name)
        return
    steps = {"stories260K": stories, "smollm2": smollm, "tiny": tiny}
    for name in args.only or steps:
        steps[name]()


if __name__ == "__main__":
    main()
