#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, made from the real files in ../shared (standard library only).

    python3 crates/core/fuzz/make_seeds.py            # writes crates/core/fuzz/corpus/<target>/

Nothing here is committed: the corpora derive from ../shared, which the repository never copies.
- safetensors:        stories260K's model.safetensors, a subset of its tensors, an empty header.
- safetensors_index:  the index of stories260K saved one tensor per shard (the shards the fixture
                      writes: `model-{k:05}-of-{n:05}.safetensors` in tensor-name order), and a subset.
- gguf:               stories260K as a llama GGUF v3 (as llama.cpp's converter writes it: q/k rows
                      permuted, a byte-level BPE vocabulary from its tokenizer.json) in F32, F16, and
                      Q8_0 where the row length allows; a one-layer model with its vocabulary and
                      small random weights; and the start of the SmolLM2 GGUF header.
- config:             every config.json in ../shared and in the oracle's tiny models.
- text:               4 KiB slices of the perplexity and calibration corpora, a jsonl of their lines.
"""
import json
import os
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SHARED = Path(os.environ.get("LAYERFOLD_SHARED", REPO.parent / "shared"))
CACHE = Path(os.environ.get("LAYERFOLD_CACHE", Path.home() / ".cache" / "layerfold"))
STORIES = SHARED / "models" / "stories260K"
OUT = HERE / "corpus"


def need(p: Path) -> Path:
    if not p.exists():
        sys.exit(f"missing {p}: the seeds are made from ../shared (and `npm run fetch-model`)")
    return p


def write(target: str, name: str, data: bytes) -> None:
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def read_safetensors(path: Path):
    b = path.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    return header, b[8 + n :], meta


def safetensors_bytes(tensors: dict) -> bytes:
    """tensors: name -> (dtype, shape, raw bytes)."""
    header, data, offset = {}, b"", 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def stories_tensors():
    header, data, _ = read_safetensors(need(STORIES / "model.safetensors"))
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0] : v["data_offsets"][1]]) for k, v in header.items()}


def f32s(raw: bytes):
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# ---- GGUF (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) ----------------------------
U32, F32, BOOL, STRING, ARRAY, I32 = 4, 6, 7, 8, 9, 5


def gstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gvalue(kind: int, v) -> bytes:
    if kind == U32:
        return struct.pack("<I", v)
    if kind == I32:
        return struct.pack("<i", v)
    if kind == F32:
        return struct.pack("<f", v)
    if kind == BOOL:
        return struct.pack("<?", v)
    if kind == STRING:
        return gstr(v)
    raise ValueError(kind)


def garray(kind: int, values) -> bytes:
    return struct.pack("<IQ", kind, len(values)) + b"".join(gvalue(kind, v) for v in values)


def permute_rows(values, rows, cols, n_head):
    """llama.cpp's `permute`: w.reshape(n_head, 2, half, cols).swapaxes(1, 2) (HF → interleaved)."""
    dh = rows // n_head
    half = dh // 2
    out = [0.0] * (rows * cols)
    for h in range(n_head):
        for a in range(2):
            for b in range(half):
                src = h * dh + a * half + b
                dst = h * dh + b * 2 + a
                out[dst * cols : (dst + 1) * cols] = values[src * cols : (src + 1) * cols]
    return out


def q8_0(values):
    """ggml Q8_0: blocks of 32, an f16 scale then 32 int8."""
    out = b""
    for i in range(0, len(values), 32):
        block = values[i : i + 32]
        amax = max(abs(x) for x in block)
        d = amax / 127 if amax else 0.0
        qs = [int(round(x / d)) if d else 0 for x in block]
        out += struct.pack("<e", d) + struct.pack("<32b", *[max(-128, min(127, q)) for q in qs])
    return out


def bytes_to_unicode():
    """GPT-2's byte → printable character map (as in transformers and tokenizers)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_level(token: str) -> str:
    """A SentencePiece token (▁ for a space) in GPT-2's byte-level spelling."""
    spell = bytes_to_unicode()
    return "".join(spell[b] for b in token.replace("\u2581", " ").encode())


def stories_gguf(kind: str) -> bytes:
    cfg = json.loads(need(STORIES / "config.json").read_text())
    tok = json.loads(need(STORIES / "tokenizer.json").read_text())
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [byte_level(t) for t, _ in vocab]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in tok["model"]["merges"]]
    merges = [f"{byte_level(a)} {byte_level(b)}" for a, b in pairs]
    special = {t["id"] for t in tok.get("added_tokens", []) if t.get("special")}
    types = [3 if i in special else 1 for i in range(len(tokens))]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    meta = [
        ("general.architecture", STRING, "llama"),
        ("general.name", STRING, "stories260K"),
        ("llama.block_count", U32, cfg["num_hidden_layers"]),
        ("llama.context_length", U32, cfg["max_position_embeddings"]),
        ("llama.embedding_length", U32, cfg["hidden_size"]),
        ("llama.feed_forward_length", U32, cfg["intermediate_size"]),
        ("llama.attention.head_count", U32, nh),
        ("llama.attention.head_count_kv", U32, nkv),
        ("llama.attention.layer_norm_rms_epsilon", F32, cfg["rms_norm_eps"]),
        ("llama.rope.freq_base", F32, cfg["rope_theta"]),
        ("general.alignment", U32, 32),
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.pre", STRING, "default"),
        ("tokenizer.ggml.bos_token_id", U32, cfg["bos_token_id"]),
        ("tokenizer.ggml.eos_token_id", U32, cfg["eos_token_id"]),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
    ]
    body = b"".join(gstr(k) + struct.pack("<I", t) + gvalue(t, v) for k, t, v in meta)
    body += gstr("tokenizer.ggml.tokens") + struct.pack("<I", ARRAY) + garray(STRING, tokens)
    body += gstr("tokenizer.ggml.merges") + struct.pack("<I", ARRAY) + garray(STRING, merges)
    body += gstr("tokenizer.ggml.token_type") + struct.pack("<I", ARRAY) + garray(I32, types)
    n_meta = len(meta) + 3

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }
    layer = {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    }
    infos, data = b"", b""
    for hf, (_dtype, shape, raw) in sorted(stories_tensors().items()):
        if hf in names:
            g = names[hf]
        else:
            _, _, i, rest = hf.split(".", 3)
            module = rest.rsplit(".", 1)[0]
            g = f"blk.{i}.{layer[module]}.weight"
        values = f32s(raw)
        rows, cols = (shape + [1])[:2] if len(shape) == 1 else shape
        if g.endswith("attn_q.weight"):
            values = permute_rows(values, rows, cols, nh)
        elif g.endswith("attn_k.weight"):
            values = permute_rows(values, rows, cols, nkv)
        ne0 = shape[-1]
        if kind == "q8_0" and len(shape) == 2 and ne0 % 32 == 0:
            ggml_type, blob = 8, q8_0(values)
        elif kind in ("f16", "q8_0") and len(shape) == 2:
            ggml_type, blob = 1, struct.pack(f"<{len(values)}e", *values)
        else:
            ggml_type, blob = 0, struct.pack(f"<{len(values)}f", *values)
        data += b"\0" * (-len(data) % 32)
        infos += gstr(g) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in reversed(shape))
        infos += struct.pack("<IQ", ggml_type, len(data))
        data += blob
    head = b"GGUF" + struct.pack("<IQQ", 3, len(stories_tensors()), n_meta) + body + infos
    head += b"\0" * (-len(head) % 32)
    return head + data


def tiny_gguf() -> bytes:
    """A one-layer llama GGUF with stories260K's vocabulary and seeded random weights (d 16): small
    tensor data, so that mutations land in the header and the tokenizer as often as in the data."""
    import random

    rng = random.Random(0)
    tok = json.loads(need(STORIES / "tokenizer.json").read_text())
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [byte_level(t) for t, _ in vocab]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in tok["model"]["merges"]]
    merges = [f"{byte_level(a)} {byte_level(b)}" for a, b in pairs][:64]
    v, d, ff, nh = len(tokens), 16, 32, 2
    meta = [
        ("general.architecture", STRING, "llama"),
        ("llama.block_count", U32, 1),
        ("llama.context_length", U32, 64),
        ("llama.embedding_length", U32, d),
        ("llama.feed_forward_length", U32, ff),
        ("llama.attention.head_count", U32, nh),
        ("llama.attention.head_count_kv", U32, 1),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("tokenizer.ggml.model", STRING, "gpt2"),
        ("tokenizer.ggml.bos_token_id", U32, 1),
        ("tokenizer.ggml.eos_token_id", U32, 2),
    ]
    body = b"".join(gstr(k) + struct.pack("<I", t) + gvalue(t, val) for k, t, val in meta)
    body += gstr("tokenizer.ggml.tokens") + struct.pack("<I", ARRAY) + garray(STRING, tokens)
    body += gstr("tokenizer.ggml.merges") + struct.pack("<I", ARRAY) + garray(STRING, merges)
    dh = d // nh
    shapes = {
        "token_embd.weight": [v, d], "output_norm.weight": [d],
        "blk.0.attn_norm.weight": [d], "blk.0.ffn_norm.weight": [d],
        "blk.0.attn_q.weight": [d, d], "blk.0.attn_k.weight": [dh, d], "blk.0.attn_v.weight": [dh, d],
        "blk.0.attn_output.weight": [d, d], "blk.0.ffn_gate.weight": [ff, d],
        "blk.0.ffn_up.weight": [ff, d], "blk.0.ffn_down.weight": [d, ff],
    }
    infos, data = b"", b""
    for name, shape in shapes.items():
        n = 1
        for x in shape:
            n *= x
        values = [1.0] * n if len(shape) == 1 else [rng.gauss(0, 0.1) for _ in range(n)]
        ggml_type = 0 if len(shape) == 1 or name == "token_embd.weight" else 1
        blob = struct.pack(f"<{n}f" if ggml_type == 0 else f"<{n}e", *values)
        data += b"\0" * (-len(data) % 32)
        infos += gstr(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", x) for x in reversed(shape))
        infos += struct.pack("<IQ", ggml_type, len(data))
        data += blob
    head = b"GGUF" + struct.pack("<IQQ", 3, len(shapes), len(meta) + 2) + body + infos
    head += b"\0" * (-len(head) % 32)
    return head + data


def main() -> None:
    tensors = stories_tensors()
    write("safetensors", "stories260K", need(STORIES / "model.safetensors").read_bytes())
    small = {k: v for k, v in tensors.items() if "norm" in k and "layers.0." in k or k == "model.norm.weight"}
    write("safetensors", "norms", safetensors_bytes(small))
    write("safetensors", "empty-header", safetensors_bytes({}))

    names = sorted(tensors)
    n = len(names)
    index = {"metadata": {"total_size": sum(len(r) for _, _, r in tensors.values())},
             "weight_map": {name: f"model-{k + 1:05}-of-{n:05}.safetensors" for k, name in enumerate(names)}}
    write("safetensors_index", "one-tensor-per-shard", json.dumps(index, indent=2).encode())
    first = dict(list(index["weight_map"].items())[:3])
    write("safetensors_index", "three", json.dumps({"weight_map": first}).encode())

    for kind in ("f32", "f16", "q8_0"):
        write("gguf", f"stories260K-{kind}", stories_gguf(kind))
    write("gguf", "tiny-one-layer", tiny_gguf())
    smol = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if smol.exists():
        with smol.open("rb") as f:
            write("gguf", "smollm2-header-start", f.read(64 << 10))

    write("config", "stories260K", need(STORIES / "config.json").read_bytes())
    for cfg in sorted((REPO / "crates/core/tests/oracle/models").glob("*/config.json")):
        write("config", cfg.parent.name, cfg.read_bytes())

    for rel in ("data/text/wikitext2_raw_test.txt", "data/text/ptb_test.txt", "data/text/wikitext2_valid_tokenized.txt"):
        text = need(SHARED / rel).read_bytes()
        for k, start in enumerate((0, len(text) // 2)):
            write("text", f"{Path(rel).stem}-{k}", text[start : start + 4096])
        lines = [l for l in text.decode("utf8", "replace").splitlines() if l.strip()][:20]
        write("text", f"{Path(rel).stem}.jsonl", "".join(json.dumps({"text": l}) + "\n" for l in lines).encode())
    write("text", "piqa-rows", b"".join(need(SHARED / "data/eval/piqa.jsonl").read_bytes().splitlines(True)[:5]))
    for d in sorted(OUT.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")


if __name__ == "__main__":
    main()
