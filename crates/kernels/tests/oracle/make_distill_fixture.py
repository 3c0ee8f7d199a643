#!/usr/bin/env python3
"""The PyTorch oracle for the distillation loss ops (crates/kernels/src/distill_loss.rs,
METHODS.md §3.5). Writes distill_loss.json beside this file:

- `kl`: student and teacher logits [n, V] (float32, seeded normal × 3); for each temperature τ, the
  per-row `τ² · Σ_v kl_div(log_softmax(z_S/τ), log_softmax(z_T/τ), log_target=True)` and the gradient
  of `Σ_r w_r · loss_r` (w_r = 0.5 + r) with respect to z_S;
- `mse`: student and teacher states [n, d]; per-row `‖s − t‖² / ‖t‖²` and the gradient of the same
  weighted sum with respect to s.

Computed in float64 from the float32 inputs, so the fixture is the exact value the f32 ops approximate.

Usage (in the oracle venv, `pip install torch`): python crates/kernels/tests/oracle/make_distill_fixture.py
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent


def weights(n):
    return torch.tensor([0.5 + r for r in range(n)], dtype=torch.float64)


def kl_case(student, teacher, tau):
    s = student.double().requires_grad_(True)
    t = teacher.double()
    log_p_s = F.log_softmax(s / tau, dim=-1)
    log_p_t = F.log_softmax(t / tau, dim=-1)
    rows = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1) * tau * tau
    (rows * weights(rows.shape[0])).sum().backward()
    return {"tau": tau, "rows": rows.tolist(), "grad": s.grad.flatten().tolist()}


def mse_case(student, teacher):
    s = student.double().requires_grad_(True)
    t = teacher.double()
    rows = ((s - t) ** 2).sum(-1) / (t**2).sum(-1)
    (rows * weights(rows.shape[0])).sum().backward()
    return {"rows": rows.tolist(), "grad": s.grad.flatten().tolist()}


def main():
    g = torch.Generator().manual_seed(0)
    n, vocab = 4, 257
    zs = torch.randn(n, vocab, generator=g) * 3
    zt = torch.randn(n, vocab, generator=g) * 3
    hn, d = 5, 64
    hs = torch.randn(hn, d, generator=g)
    ht = torch.randn(hn, d, generator=g) * 2
    fixture = {
        "generator": f"make_distill_fixture.py, torch {torch.__version__}",
        "kl": {
            "shape": [n, vocab],
            "student": zs.flatten().tolist(),
            "teacher": zt.flatten().tolist(),
            "cases": [kl_case(zs, zt, tau) for tau in (1.0, 2.0, 0.5)],
        },
        "mse": {
            "shape": [hn, d],
            "student": hs.flatten().tolist(),
            "teacher": ht.flatten().tolist(),
            **mse_case(hs, ht),
        },
    }
    (HERE / "distill_loss.json").write_text(json.dumps(fixture) + "\n")


if __name__ == "__main__":
    main()
