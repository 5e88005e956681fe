"""Forward+backward time of ceusflow's Cox loss vs torchsurv's Efron loss (one run, ratios).

Run: ``.venv/bin/python benchmarks/cox_loss.py`` (needs ``torchsurv``; bench/test only).
Durations are integer months (many ties, as in clinical follow-up); float32 log-hazards.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from ceusflow.model.loss import cox_nll

SIZES = (256, 4_096, 65_536)


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    lp = torch.tensor(rng.normal(size=n), dtype=torch.float32)
    duration = torch.tensor(rng.integers(1, 120, n).astype(np.float32))
    event = torch.tensor(rng.random(n) < 0.6)
    return lp, duration, event


def _time(fn, lp: torch.Tensor, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        x = lp.clone().requires_grad_(True)
        start = time.perf_counter()
        fn(x).backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    from torchsurv.loss.cox import neg_partial_log_likelihood

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # torchsurv warns about ties on every call
    print(f"{'n':>7} {'ceusflow ms':>12} {'torchsurv ms':>13} {'ratio ts/ours':>14}")
    for n in SIZES:
        lp, duration, event = _data(n)
        ours = _time(lambda x, d=duration, e=event: cox_nll(x, d, e, ties="efron"), lp, 7)
        theirs = _time(lambda x, d=duration, e=event: neg_partial_log_likelihood(
            x, e, d, ties_method="efron"), lp, 7 if n < 65_536 else 3)
        print(f"{n:>7} {ours * 1e3:>12.2f} {theirs * 1e3:>13.2f} {theirs / ours:>14.1f}")


if __name__ == "__main__":
    main()
