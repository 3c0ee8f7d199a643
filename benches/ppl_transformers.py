#!/usr/bin/env python3
"""The transformers side of benches/ppl.mjs: one perplexity pass (METHODS.md 4.1) with PyTorch on the
CPU, f32, the same text, windows and thread count as layerfold. Prints one JSON object."""
import argparse
import json
import math
import resource
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gguf", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--windows", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--attn", default="sdpa")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    folder, name = a.gguf.rsplit("/", 1)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, attn_implementation=a.attn).eval()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    text = open(a.data, encoding="utf-8").read()
    lines = [l[:-1] if l.endswith("\r") else l for l in text.split("\n")]
    ids = [model.config.bos_token_id] + tok("\n\n".join(l for l in lines if l.strip()), add_special_tokens=False).input_ids
    tok_s = time.perf_counter() - t0
    nll, count = 0.0, 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for w in range(a.windows):
            x = torch.tensor([ids[w * a.seq_len:(w + 1) * a.seq_len]])
            logits = model(x).logits[0, :-1].float()
            nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            count += a.seq_len - 1
    fwd_s = time.perf_counter() - t0
    print(json.dumps({
        "impl": "transformers " + __import__("transformers").__version__ + " / torch " + torch.__version__,
        "ppl": math.exp(nll / count), "tokens": a.windows * a.seq_len, "load_s": load_s,
        "tokenize_s": tok_s, "forward_s": fwd_s, "tokens_per_s": a.windows * a.seq_len / fwd_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "attn": a.attn,
    }))


if __name__ == "__main__":
    main()
