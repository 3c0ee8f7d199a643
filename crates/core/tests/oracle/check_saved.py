#!/usr/bin/env python3
"""Loads folders that layerfold saved (pruned or not) in transformers and prints, per folder, the
perplexity on the first windows of WikiText-2 (METHODS.md 4.1) beside layerfold's own, which it
gets by running the CLI (`layerfold ppl --json`) on the same folder. A one-off check, not a test:

    python crates/core/tests/oracle/check_saved.py out/drop-bi out/slm ... [--seq-len 512 --windows 2]
"""

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
sys.path.insert(0, str(HERE))
from make_fixtures import WIKITEXT, documents  # noqa: E402


def transformers_ppl(folder: Path, seq_len: int, windows: int) -> float:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(folder)
    bos = model.config.bos_token_id
    ids = ([bos] if bos is not None else []) + tok("\n\n".join(documents(WIKITEXT)), add_special_tokens=False).input_ids
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in range(windows):
            x = torch.tensor([ids[w * seq_len : (w + 1) * seq_len]])
            logits = model(x).logits[0, :-1].double()
            nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            count += seq_len - 1
    return math.exp(nll / count)


def layerfold_ppl(folder: Path, seq_len: int, windows: int) -> float:
    out = subprocess.run(
        ["node", str(REPO / "dist" / "cli.js"), "ppl", str(folder), "--seq-len", str(seq_len), "--max-windows", str(windows), "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)["ppl"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--windows", type=int, default=2)
    a = p.parse_args()
    print("| folder | layers | transformers ppl | layerfold ppl | relative difference |")
    print("| --- | --- | --- | --- | --- |")
    for folder in a.folders:
        layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
        t = transformers_ppl(folder, a.seq_len, a.windows)
        l = layerfold_ppl(folder, a.seq_len, a.windows)
        print(f"| {folder.name} | {layers} | {t:.6f} | {l:.6f} | {abs(t - l) / t:.2e} |", flush=True)


if __name__ == "__main__":
    main()
