#!/usr/bin/env python3
"""The lm-evaluation-harness side of benches/eval.mjs: the seven tasks of METHODS.md 4.2 through
lm_eval (HF transformers backend, CPU, f32, batch size 1, its defaults) with the task configs of
tests/oracle/make_eval_fixtures.py, on a Hugging Face folder. Prints one JSON object."""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "crates/core/tests/oracle"))
import make_eval_fixtures as fx  # noqa: E402  (the oracle's own task configs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument("--limit", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(a.folder, dtype=torch.float32).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=str(a.folder / "tokenizer.json"))
    cfg = json.loads((a.folder / "config.json").read_text())
    for attr in ("bos", "eos"):
        if cfg.get(f"{attr}_token_id") is not None:
            setattr(tok, f"{attr}_token", tok.convert_ids_to_tokens(cfg[f"{attr}_token_id"]))
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        fx.hellaswag_jsonl(Path(tmp))
        fx.task_configs(Path(tmp))
        t0 = time.perf_counter()
        r = lm_eval.simple_evaluate(model=lm, tasks=[f"lf_{n}" for n in fx.TASKS], num_fewshot=0, limit=a.limit,
                                    task_manager=TaskManager(include_path=tmp))
        seconds = time.perf_counter() - t0
    examples = sum(len(v) for v in r["samples"].values())
    acc = {n: r["results"][f"lf_{n}"]["acc,none"] for n in fx.TASKS}
    print(json.dumps({"impl": f"lm_eval {lm_eval.__version__} / transformers / torch {torch.__version__}",
                      "seconds": seconds, "examples": examples, "examples_per_s": examples / seconds, "acc": acc}))


if __name__ == "__main__":
    main()
