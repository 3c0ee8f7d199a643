#!/usr/bin/env python3
"""The zero-shot oracle: lm-evaluation-harness itself (PyPI `lm_eval`, HF transformers backend, CPU,
float32, batch size 1) on the seven task files in ../shared/data/eval, with task configs of its own
that read those files as they are (METHODS.md 4.2). Writes `eval-<model>.json` beside this file:
for each task, the harness's metrics (acc, acc_norm and their stderr) and, per example in file order,
the log-likelihood of every choice and whether it was the greedy continuation.

Usage (in the oracle venv: `pip install torch transformers gguf accelerate lm_eval`):

    python crates/core/tests/oracle/make_eval_fixtures.py                       # stories260K
    node dist/cli.js convert ~/.cache/layerfold/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/smol-hf
    python crates/core/tests/oracle/make_eval_fixtures.py --folder /tmp/smol-hf --name smollm2

The model's tokenizer is its folder's tokenizer.json exactly as written (as layerfold reads it):
transformers 5's AutoTokenizer rebuilds some pipelines from the model type (make_fixtures.py).
HellaSwag's bz2 text (6 lines per example) is converted to jsonl in a temporary folder first.
"""

import argparse
import bz2
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import lm_eval
import torch
import transformers
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
SHARED = Path(os.environ.get("LAYERFOLD_SHARED", REPO.parent / "shared"))
EVAL = SHARED / "data" / "eval"

# name: (file, kind) with kind "choices" ({query, choices, gold}) or "contexts" (WinoGrande:
# {context_options, continuation, gold}, scored by partial evaluation).
TASKS = {
    "boolq": ("boolq.jsonl", "choices"),
    "piqa": ("piqa.jsonl", "choices"),
    "hellaswag": ("hellaswag.jsonl", "choices"),
    "winogrande": ("winogrande.jsonl", "contexts"),
    "arc_easy": ("arc_easy.jsonl", "choices"),
    "arc_challenge": ("arc_challenge.jsonl", "choices"),
    "openbookqa": ("openbook_qa.jsonl", "choices"),
}

UTILS = '''
def contexts_text(doc):
    return doc["gold"]


def contexts_target(doc):
    return doc["continuation"]


def contexts_choice(doc):
    return doc["context_options"]
'''


def hellaswag_jsonl(out: Path) -> Path:
    lines = bz2.open(EVAL / "hellaswag_val.txt.bz2", "rt", encoding="utf-8").read().split("\n")
    rows = []
    for i in range(0, len(lines) - 5, 6):
        rows.append({"query": lines[i], "gold": int(lines[i + 1]), "choices": lines[i + 2 : i + 6]})
    path = out / "hellaswag.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def task_configs(out: Path) -> None:
    (out / "layerfold_utils.py").write_text(UTILS)
    for name, (file, kind) in TASKS.items():
        data = out / file if name == "hellaswag" else EVAL / file
        cfg = [
            f"task: lf_{name}",
            "dataset_path: json",
            f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}",
            "output_type: multiple_choice",
            "test_split: test",
        ]
        if kind == "choices":
            cfg += ['doc_to_text: "{{query}}"', 'doc_to_choice: "{{choices}}"', "doc_to_target: gold"]
        else:
            cfg += [
                "doc_to_text: !function layerfold_utils.contexts_text",
                "doc_to_target: !function layerfold_utils.contexts_target",
                "doc_to_choice: !function layerfold_utils.contexts_choice",
            ]
        cfg += [
            "metric_list:",
            "  - metric: acc\n    aggregation: mean\n    higher_is_better: true",
            "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true",
        ]
        (out / f"lf_{name}.yaml").write_text("\n".join(cfg) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", type=Path, default=SHARED / "models" / "stories260K")
    ap.add_argument("--name", default="stories260K")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.float32, attn_implementation="eager").eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=str(args.folder / "tokenizer.json"))
    # The special tokens the model's config names (lm_eval's prefix token for empty contexts).
    cfg = json.loads((args.folder / "config.json").read_text())
    for attr in ("bos", "eos"):
        tid = cfg.get(f"{attr}_token_id")
        tid = tid[0] if isinstance(tid, list) else tid
        if tid is not None:
            setattr(tok, f"{attr}_token", tok.convert_ids_to_tokens(tid))
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1, device="cpu")
    names = args.tasks.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hellaswag_jsonl(tmp)
        task_configs(tmp)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[f"lf_{n}" for n in names],
            num_fewshot=0,
            limit=args.limit,
            log_samples=True,
            task_manager=TaskManager(include_path=str(tmp)),
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
        )
    out = {
        "generator": " ".join(sys.argv),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "0.4.13",
        },
        "model": args.name,
        "limit": args.limit,
        "max_length": lm.max_length,
        "tasks": {},
    }
    for n in names:
        r = results["results"][f"lf_{n}"]
        samples = sorted(results["samples"][f"lf_{n}"], key=lambda s: s["doc_id"])
        out["tasks"][n] = {
            "metrics": {k.split(",")[0]: v for k, v in r.items() if k.split(",")[0] in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr")},
            "n": len(samples),
            "samples": [
                {
                    "doc": s["doc_id"],
                    "ll": [float(resp[0][0]) for resp in s["resps"]],
                    "greedy": [bool(resp[0][1]) for resp in s["resps"]],
                }
                for s in samples
            ],
        }
        print(n, out["tasks"][n]["metrics"])
    path = HERE / f"eval-{args.name}.json"
    path.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
