#!/usr/bin/env python3
"""The other side of benches/come.mjs: CoMe (METHODS.md 3.4) as the released code runs it, in
PyTorch with transformers on the CPU, f32, the same text, windows and thread count as layerfold.

The authors' repository cannot be fetched here, so this is the published loop written out: every
step runs the whole current model over the whole calibration set (hooks on each layer's o_proj and
down_proj inputs, output_hidden_states for BI and the last-token states), then picks the adjacent
pair with the smallest D(a, 2) (CoMe's clamp, summed), and merges it by concatenation with budgets
from the pair's BI ratio (grouped GQA layout, layerfold's default). What it does not have is what
issue 13 asks of layerfold: re-scoring only from the merged layer on cached inputs.

Prints one JSON object: stage times, peak RSS and the merge record (layerfold's nested-list form).
"""
import argparse
import json
import math
import resource
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.llama.modeling_llama import LlamaDecoderLayer


def calibration_windows(tok, model, path, seq_len, n):
    """METHODS.md 1, chunked: documents (non-empty lines) joined with blank lines, one BOS, the
    first n whole windows."""
    text = open(path, encoding="utf-8").read()
    lines = [l[:-1] if l.endswith("\r") else l for l in text.split("\n")]
    ids = [model.config.bos_token_id] + tok("\n\n".join(l for l in lines if l.strip()), add_special_tokens=False).input_ids
    return torch.tensor([ids[k * seq_len:(k + 1) * seq_len] for k in range(min(n, len(ids) // seq_len))])


class Scores:
    """One scoring pass over the current model: CoMe's BI sums, mean |input| of o_proj and
    down_proj, and the last-token HF states."""

    def __init__(self, model, windows, batch):
        layers = model.model.layers
        n = len(layers)
        self.bi = [0.0] * n
        self.ffn = [None] * n
        self.attn = [None] * n
        self.last = [[] for _ in range(n + 1)]
        tokens = [0]

        def accumulate(store, i):
            def hook(_module, args):
                x = args[0].reshape(-1, args[0].shape[-1]).abs().sum(0)
                store[i] = x if store[i] is None else store[i] + x
            return hook

        # HF's states h_0…h_{L−1} (each layer's input) and ĥ (the final norm's output), caught by
        # hooks: transformers records hidden_states only on the layers it built.
        states = []

        def layer_input(_module, args, kwargs):
            states.append(args[0] if args else kwargs["hidden_states"])

        hooks = [model.model.norm.register_forward_hook(lambda _m, _a, out: states.append(out))]
        for i, layer in enumerate(layers):
            hooks.append(layer.register_forward_pre_hook(layer_input, with_kwargs=True))
            hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(accumulate(self.attn, i)))
            hooks.append(layer.mlp.down_proj.register_forward_pre_hook(accumulate(self.ffn, i)))
        with torch.inference_mode():
            for start in range(0, len(windows), batch):
                x = windows[start:start + batch]
                states.clear()
                model.model(x, use_cache=False)
                assert len(states) == n + 1, (len(states), n)
                tokens[0] += x.numel()
                for i in range(n):
                    cos = torch.nn.functional.cosine_similarity(states[i].double(), states[i + 1].double(), dim=-1)
                    clamped = torch.where(cos.isnan(), torch.full_like(cos, 0.5), cos.clamp(0, 1))
                    self.bi[i] += float((1 - clamped).sum())
                for i in range(n + 1):
                    self.last[i].extend(states[i][:, -1].double())
        for h in hooks:
            h.remove()
        self.tokens = tokens[0]

    def skip(self, a, n=2):
        """D(a, n), CoMe's clamp, summed over sequences."""
        total = 0.0
        for x, y in zip(self.last[a], self.last[a + n]):
            c = float(torch.dot(x, y) / (x.norm() * y.norm()))
            c = 1.0 if math.isnan(c) else min(max(c, 0.0), 1.0)
            total += math.acos(c) / math.pi
        return total

    def sensitivity(self, i, layer, n_kv):
        ffn = self.ffn[i] / self.tokens * layer.mlp.down_proj.weight.abs().sum(0)
        e = self.attn[i] / self.tokens * layer.self_attn.o_proj.weight.abs().sum(0)
        return ffn, e.reshape(n_kv, -1).mean(1)


def budgets(width, r_a):
    floor = lambda r: int(math.floor(width * r + 1e-9))
    if r_a < 1 - r_a:
        n_a = floor(r_a)
        return n_a, width - n_a
    n_b = floor(1 - r_a)
    return width - n_b, n_b


def top_n(scores, n):
    values = [float(v) for v in scores.tolist()]
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return sorted(order[:n])


def merge(config, a, b, r, s_a, s_b, layer_idx):
    """The concatenation merge of a then b (METHODS.md 3.4, grouped GQA layout)."""
    dh = config.head_dim
    n_q, n_kv = config.num_attention_heads, config.num_key_value_heads
    g = n_q // n_kv
    fa, fb = budgets(config.intermediate_size, r)
    ka, kb = budgets(n_kv, r)
    ffn_a, ffn_b = top_n(s_a[0], fa), top_n(s_b[0], fb)
    kv_a, kv_b = top_n(s_a[1], ka), top_n(s_b[1], kb)
    rows = lambda heads: [h * dh + j for h in heads for j in range(dh)]
    q_heads = lambda kv: [k * g + j for k in kv for j in range(g)]
    qa, qb = rows(q_heads(kv_a)), rows(q_heads(kv_b))
    kva, kvb = rows(kv_a), rows(kv_b)
    out = LlamaDecoderLayer(config, layer_idx).to(a.input_layernorm.weight.dtype)
    with torch.no_grad():
        cat_rows = lambda x, y, i, j: torch.cat([x[i], y[j]], 0)
        cat_cols = lambda x, y, i, j: torch.cat([x[:, i], y[:, j]], 1)
        sa, sb, so = a.self_attn, b.self_attn, out.self_attn
        so.q_proj.weight.copy_(cat_rows(sa.q_proj.weight, sb.q_proj.weight, qa, qb))
        so.k_proj.weight.copy_(cat_rows(sa.k_proj.weight, sb.k_proj.weight, kva, kvb))
        so.v_proj.weight.copy_(cat_rows(sa.v_proj.weight, sb.v_proj.weight, kva, kvb))
        so.o_proj.weight.copy_(cat_cols(sa.o_proj.weight, sb.o_proj.weight, qa, qb))
        ma, mb, mo = a.mlp, b.mlp, out.mlp
        mo.gate_proj.weight.copy_(cat_rows(ma.gate_proj.weight, mb.gate_proj.weight, ffn_a, ffn_b))
        mo.up_proj.weight.copy_(cat_rows(ma.up_proj.weight, mb.up_proj.weight, ffn_a, ffn_b))
        mo.down_proj.weight.copy_(cat_cols(ma.down_proj.weight, mb.down_proj.weight, ffn_a, ffn_b))
        for name in ("input_layernorm", "post_attention_layernorm"):
            w = (getattr(a, name).weight * 0.5 + getattr(b, name).weight * 0.5)
            getattr(out, name).weight.copy_(w)
    return out.eval()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gguf", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--remove", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    folder, name = a.gguf.rsplit("/", 1)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    stages = {"load": time.perf_counter() - t0}
    windows = calibration_windows(tok, model, a.data, a.seq_len, a.samples)
    config = model.config
    layers = model.model.layers
    record = [[i] for i in range(len(layers))]
    target = len(layers) - a.remove
    stages.update(calibrate=0.0, score=0.0, merge=0.0)
    first = True
    while len(layers) > target:
        t0 = time.perf_counter()
        s = Scores(model, windows, a.batch)
        stages["calibrate" if first else "score"] += time.perf_counter() - t0
        first = False
        t0 = time.perf_counter()
        n = len(layers)
        merged = lambda i: len(record[i]) > 1
        skip = [s.skip(i) for i in range(n - 1)]
        if not all(merged(i) or merged(i + 1) for i in range(n - 1)):
            skip = [math.inf if merged(i) or merged(i + 1) else v for i, v in enumerate(skip)]
        i = min(range(n - 1), key=lambda k: skip[k])
        r = s.bi[i] / (s.bi[i] + s.bi[i + 1]) if s.bi[i] + s.bi[i + 1] > 0 else 0.5
        n_kv = config.num_key_value_heads
        new = merge(config, layers[i], layers[i + 1], r, s.sensitivity(i, layers[i], n_kv), s.sensitivity(i + 1, layers[i + 1], n_kv), i)
        layers[i] = new
        del layers[i + 1]
        for k, layer in enumerate(layers):
            layer.self_attn.layer_idx = k
        record[i] = [record[i] if len(record[i]) > 1 else record[i][0], record[i + 1] if len(record[i + 1]) > 1 else record[i + 1][0]]
        del record[i + 1]
        config.num_hidden_layers = len(layers)
        stages["merge"] += time.perf_counter() - t0
    print(json.dumps({
        "impl": "PyTorch CoMe loop, transformers " + __import__("transformers").__version__ + " / torch " + torch.__version__,
        "stages": stages,
        "total": sum(stages.values()),
        "peakRssMb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "record": [r[0] if len(r) == 1 else r for r in record],
    }))


if __name__ == "__main__":
    main()
