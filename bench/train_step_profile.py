"""Where a control-layer training step's time goes (issue 20, item 5; BENCHMARKS §26).

The quickstart's clock gives 366–600 steps depending on the host, and FCR's agreement with the
empirical reference depends on steps. Before buying steps with time, this measures what a
faster step could buy: a short training on the generated prior under cProfile (forward, backward,
the rest of the step) and the share of each batch's positions that is padding.

    python -m bench.train_step_profile --steps 40 --seed 2

Trains in `runs/profile_step` (sharing the generated prior's cache with bench/real_data_bench.py),
prints the figures and writes bench/results/train_step_profile.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
from pathlib import Path

import numpy as np

from bench.real_data_bench import prior_for, share_data
from scope_core.api import Scope, TrainConfig, load_target, train

FORWARD = "_batch_loss"  # the teacher-forced forward (scope_core/train.py), also called by evaluations
BACKWARD = "run_backward"
STEP = "optimiser_step"


def cumulative(stats: pstats.Stats, name: str) -> tuple[int, float]:
    """(calls, cumulative seconds) of the function called `name`."""
    for (_, _, fn), (_, calls, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        if fn == name or f"'{name}'" in fn:  # a Python function, or a C method ("<method 'run_backward' of ...>")
            return calls, cum
    raise SystemExit(f"{name} was not called: the profile does not describe a training step any more")


def called_from(stats: pstats.Stats, name: str, caller: str) -> tuple[int, float]:
    """(calls, cumulative seconds) of `name` when called by `caller` only: the training step's
    forward without the evaluations' no-grad ones."""
    for (_, _, fn), entry in stats.stats.items():  # type: ignore[attr-defined]
        if fn == name:
            for (_, _, by), (_, calls, _, cum) in entry[4].items():
                if by == caller:
                    return calls, cum
    raise SystemExit(f"{name} was not called by {caller}: the profile does not describe a training step any more")


def padding_share(lengths: np.ndarray, batch: int, draws: int, seed: int) -> tuple[float, float]:
    """(share of a random batch's positions that is padding, cost of two length-sorted half
    batches against one padded batch)."""
    rng = np.random.default_rng(seed)
    pad, halves = [], []
    for _ in range(draws):
        b = np.sort(rng.choice(lengths, batch))
        pad.append(1 - b.sum() / (batch * b[-1]))
        halves.append((batch // 2 * b[batch // 2 - 1] + (batch - batch // 2) * b[-1]) / (batch * b[-1]))
    return float(np.mean(pad)), float(np.mean(halves))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--out", default="bench/results/train_step_profile.json")
    args = ap.parse_args()

    runs = Path(args.runs_dir)
    run = "profile_step"
    shutil.rmtree(runs / run / "inverter", ignore_errors=True)  # a fresh training each time, on the shared cache
    share_data(runs, "generated_data", run)
    target = load_target()
    cfg = TrainConfig(run=run, runs_dir=str(runs), prior=prior_for("generated"), sites="L18", max_steps=args.steps, minutes=30,
                      total_minutes=None, eval_every=10 * args.steps, seed=args.seed)
    prof = cProfile.Profile()
    prof.enable()
    res = train(cfg, target=target, progress=False)
    prof.disable()
    stats = pstats.Stats(prof)
    n_step, step_s = cumulative(stats, STEP)
    n_fwd, fwd_s = called_from(stats, FORWARD, STEP)
    _, bwd_s = cumulative(stats, BACKWARD)
    fwd_per_step = fwd_s / n_fwd
    scope = Scope(runs / run, target=target)
    lengths = np.array([len(target.tokenizer(scope.data.examples[i].text)["input_ids"]) + 1 for i in scope.data.train])
    pad, halves = padding_share(lengths, cfg.batch_size, 2000, args.seed)
    out = {"steps": n_step, "step_s": step_s / n_step, "forward_s": fwd_per_step, "backward_s": bwd_s / n_step,
           "rest_s": step_s / n_step - fwd_per_step - bwd_s / n_step, "tokens_per_step": res.train_tokens / res.steps,
           "padding_share": pad, "two_length_sorted_halves_cost": halves, "text_tokens_median": float(np.median(lengths)),
           "command": f"python -m bench.train_step_profile --steps {args.steps} --seed {args.seed}"}
    print(f"{n_step} steps: {out['step_s']:.2f} s a step = forward {out['forward_s']:.2f} + backward {out['backward_s']:.2f} "
          f"+ the rest {out['rest_s']:.2f}; {out['tokens_per_step']:.0f} text tokens a step")
    print(f"padding: {100 * pad:.0f}% of a batch's positions; two length-sorted halves cost {100 * halves:.0f}% of one padded batch")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
