"""Does the inverter condition enough for FCR to mean something? A short check after `train`.

Held-out loss alone hides a weak inverter: on the real refusal prompts recipe 1 gained
0.23 nats over the unconditional backbone and still sampled 0.9 refusals at its own ε.
So `train` ends with a quick sample of a few held-out queries at each site's ε and
a verdict from three figures — the loss gained, the refusal rate, the accepted-novel rate —
saying plainly when the run is weak and what to try.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scope_core.api import Scope, TrainConfig, TrainResult, is_main, summarise, train

# Below these the FCR of a site is mostly chance: a generator that gains under half a nat
# over the backbone, or whose samples mostly fall outside ε, is not inverting the site.
MIN_GAIN_NATS = 0.5
MAX_REFUSAL = 0.7
MIN_ACCEPTED_NOVEL = 20.0
# A site refused more than MAX_REFUSAL is put down to ε, not to the inverter, only where copying
# each query's nearest training prompts is refused as often, to within this margin.
SPACING_MARGIN = 0.05
# On the generated prior the harmfulness FCR held within 0.05 of the empirical reference for
# three training seeds at 600 steps, and missed for one of them at 430 (BENCHMARKS §22, §25).
FCR_STABLE_STEPS = 600
# A run its budget stopped is still fitting its prior, not learning the prompts by heart, while its
# final weights' loss on training prompts is within this of their held-out loss (clean conditions
# both, `final_fit`). Measured (BENCHMARKS §39): 23.7k real prompts at 393 steps −0.04, where twice
# the steps helped; the real sets' 6.4k training prompts at 350–393 steps 0.40–0.62, where 600 steps
# changed nothing on recipe 2 (§26). 23.7k at 786 steps (0.20, 0.14) and 18.1k Alpaca at 393 (0.26) lie
# between, unmeasured.
STILL_FITTING_GAP_NATS = 0.1


@dataclass
class SiteCheck:
    site: str
    eps: str
    refusal_rate: float
    accepted_novel_per_100: float
    exact_copy_rate: float
    queries_with_accepted: float
    # the same figure for copying each query's n nearest training prompts (`prior_density`): what
    # the prior's own spacing allows at this ε, so a high refusal can be told from a weak inverter
    lookup_refusal_rate: float | None = None
    n: int = 8

    def figures(self) -> str:
        lookup = f" (copying the {self.n} nearest training prompts: {self.lookup_refusal_rate:.2f})" if self.lookup_refusal_rate is not None else ""
        return (f"{self.site} at {self.eps}: refusal {self.refusal_rate:.2f}{lookup}, accepted-novel {self.accepted_novel_per_100:.0f}/100, "
                f"copies {100 * self.exact_copy_rate:.0f}%")


@dataclass
class TrainCheck:
    gain_nats: float | None
    sites: list[SiteCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # sites refused mostly, but no more than copying the prior's nearest prompts would be: ε is
    # tighter there than the prior's own spacing, which no inverter fixes (`prior_density`)
    spacing: list[str] = field(default_factory=list)

    @property
    def weak(self) -> bool:
        return bool(self.problems)

    @property
    def tight(self) -> bool:
        return bool(self.spacing) and not self.problems

    def verdict(self) -> str:
        figures = "; ".join(s.figures() for s in self.sites)
        gain = f"held-out loss {self.gain_nats:.2f} nats under the unconditional backbone" if self.gain_nats is not None else "no held-out loss"
        if self.tight:
            return (f"ε IS TIGHTER THAN THIS PRIOR'S SPACING — {'; '.join(self.spacing)} ({gain}; {figures}). The inverter does about "
                    "as well as copying the prior there; FCR at this ε rests on the few queries with an accepted sample. Widen ε "
                    "(--eps-quantile 0.1), or add prompts to the prior near the queries you study (BENCHMARKS §34).")
        if not self.problems:
            return f"the inverter conditions: {gain}; {figures}."
        return (f"WEAK INVERTER — FCR from this run will be close to chance: {'; '.join(self.problems)} ({gain}; {figures}). "
                "Try: more distinct prompts — or pre-train on more prompts of the same kind and start from that run "
                "(train --init-from RUN: on 6.6k real prompts, 18.8k more of the kind cut refusal at ε 0.1 from 0.34 to 0.30 and "
                "raised accepted-novel from 66 to 69.9 per 100, BENCHMARKS §33; "
                "a longer budget helps only when training stopped on time, not early), no neighbour mix where the prompts are unrelated "
                "requests (--neighbour-mix 0; BENCHMARKS §12), sampling cooler than the run's temperature (1 unless the table above prints another; sample --temperature: "
                "fewer refusals, FCR a little above the reference), or a wider ε (--eps-quantile 0.1).")


def check_run(run_dir: str | Path, heldout_loss: float | None, unconditional: float | None, queries: int = 12, n: int = 8,
              seed: int = 0, progress: bool = False) -> TrainCheck:
    """Sample `queries` held-out prompts × `n` at each trained site's default ε and judge."""
    scope = Scope(Path(run_dir))
    gain = unconditional - heldout_loss if heldout_loss is not None and unconditional is not None else None
    check = TrainCheck(gain_nats=gain)
    if gain is not None and gain < MIN_GAIN_NATS:
        check.problems.append(f"held-out loss is only {gain:.2f} nats under the unconditional backbone (want ≥ {MIN_GAIN_NATS})")
    idx = scope.heldout_indices(None, queries)
    for site in scope.sites:
        run = scope.sample(site, indices=idx, n=n, eps=scope.eps(site), seed=seed, progress=progress)
        s = summarise(run)
        at = f"ε={run.eps.eps:.3g}" + (f", temperature {run.temperature:g}" if run.temperature != 1 else "")
        lookup = s.get("lookup_refusal_rate")
        check.sites.append(SiteCheck(site.name, at, s["refusal_rate"], s["accepted_novel_per_100"],
                                     s["exact_copy_rate"], s["queries_with_accepted"], lookup, n))
        if s["refusal_rate"] > MAX_REFUSAL and lookup is not None and lookup > MAX_REFUSAL and s["refusal_rate"] <= lookup + SPACING_MARGIN:
            check.spacing.append(f"{site.name}: {100 * s['refusal_rate']:.0f}% of samples fall outside ε, and so do {100 * lookup:.0f}% of "
                                 f"the {n} training prompts nearest each query")
        elif s["refusal_rate"] > MAX_REFUSAL:
            check.problems.append(f"{site.name}: {100 * s['refusal_rate']:.0f}% of samples fall outside ε")
        elif s["accepted_novel_per_100"] < MIN_ACCEPTED_NOVEL:
            check.problems.append(f"{site.name}: only {s['accepted_novel_per_100']:.0f} accepted novel samples per 100")
    return check


def training_table(res: TrainResult) -> Table:
    """What `autoscope train` did, one row a figure: phases' timings, the split, what the
    conditions were read as, steps, held-out loss against the unconditional backbone, the
    output vocabulary, the generator, why training stopped and each site's ε."""
    t = Table(title=f"trained {res.run_dir}")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in res.phases.items():
        t.add_row(k, f"{v:.1f}")
    t.add_row("prompts train / held-out / dropped (too long)", f"{res.n_train} / {res.n_heldout} / {res.dropped_long}")
    if res.neighbour_mix is not None:
        ratio = f" (nearest-neighbour / ε = {res.density_ratio:.2f})" if res.density_ratio is not None else ""
        if len(set(res.neighbour_mix_per_site.values())) > 1:  # the density rule chose differently per site
            ratio = " (" + ", ".join(f"{k} {v:g} at ratio {res.density_ratio_per_site.get(k, float('nan')):.2f}"
                                     for k, v in res.neighbour_mix_per_site.items()) + ")"
        t.add_row("neighbour mix / noise shell", f"{res.neighbour_mix:g}{ratio} / "
                  + ", ".join(f"{k} {v:.4f}" for k, v in res.noise_distance.items()))
    temps = res.sampling_temperature_per_site
    if temps:
        t.add_row("sampling temperature of sample, fcr and explore (each takes --temperature)",
                  f"{next(iter(temps.values())):g}" if len(set(temps.values())) == 1 else ", ".join(f"{k} {v:g}" for k, v in temps.items()))
    t.add_row("steps / training tokens", f"{res.steps} / {res.train_tokens}")
    if res.tokens_per_s_per_process is not None:
        t.add_row("processes / training tokens per second per process", f"{res.processes} / {res.tokens_per_s_per_process:,.0f}")
    if res.heldout_loss is not None:
        t.add_row("held-out loss (validation split): conditional vs unconditional", f"{res.heldout_loss:.3f} vs {res.heldout_loss_unconditional:.3f}")
    if res.final_heldout_loss is not None and res.final_train_loss is not None:
        t.add_row("final weights' loss: held-out vs training prompts (far apart: learned by heart)",
                  f"{res.final_heldout_loss:.3f} vs {res.final_train_loss:.3f}")
    if res.out_vocab_size:
        t.add_row("generator output vocabulary / held-out tokens outside it", f"{res.out_vocab_size} / {100 * res.heldout_oov_rate:.2f}%")
    if res.generator:
        t.add_row("generator", res.generator)
    if res.weight_average is not None:
        t.add_row("weights evaluated and saved", f"moving average, decay {res.weight_average:g}")
    t.add_row("stopped by", res.stopped)
    for e in res.eps:
        t.add_row("ε", e.describe())
    return t


def few_steps_note(res: TrainResult, cfg: TrainConfig) -> str | None:
    """A warning for a run that the clock (or a low `--min-steps`) ended before FCR_STABLE_STEPS:
    how close its FCR sits to the reference depends on the training seed more than a longer run's
    does. A run that had already finished before this call's floor is not extended by it (its
    schedule has decayed), which is said instead of a silent no-op.

    Only where a site trained with a neighbour mix: that is where the steps were measured to
    matter (the generated prior, mix 0.7). Where every site trained on noise alone (loose
    ε-balls, as on real prompt sets) `fcr` anchors every sample on the ball, and on the real
    refusal sets 600 steps gave the same held-out loss and FCR as 393 (BENCHMARKS §26, recipe 2;
    740 overfitted, NOTES §46; recipe 3 gave the same held-out loss at 350 and 393 steps,
    BENCHMARKS §35, §37), so the advice would cost a second run for nothing. A summary without
    per-site mixes (runs saved before them) still gets it."""
    loose = bool(res.neighbour_mix_per_site) and not any(res.neighbour_mix_per_site.values())
    if res.stopped.startswith(("early stop", "step budget")) or res.steps >= FCR_STABLE_STEPS:
        return None
    if cfg.min_steps is not None and res.steps < cfg.min_steps:
        said = (f"This run had already finished at {res.steps} steps ({res.stopped}) before --min-steps {cfg.min_steps} was given: "
                f"a finished run's learning rate has decayed, so the floor does not extend it")
        if loose:
            return (said + ". Every site of this run trained without a neighbour mix, and on such prompts 600 steps changed neither "
                    "the held-out loss nor FCR (BENCHMARKS §26): it needs no longer run.")
        return said + f"; pass a new --run to train {cfg.min_steps} steps."
    if loose:
        return None
    return (f"Training stopped at {res.steps} steps ({res.stopped}). On the generated prior, FCR held within 0.05 of the "
            f"generator-free reference for all three training seeds at {FCR_STABLE_STEPS} steps and not at 430 (BENCHMARKS §25; "
            f"on the real refusal sets a longer schedule changed nothing, §26): before comparing FCR across runs, train a new run "
            f"with --min-steps {FCR_STABLE_STEPS}.")


def still_fitting_note(res: TrainResult, cfg: TrainConfig) -> str | None:
    """Advice to train a new run for longer, where the budget (not early stopping) ended a fit
    that was still fitting: on a loose prior (every site trained without a neighbour mix, as on
    real prompt sets), final weights about as good on new prompts as on training ones. Why only
    there: on real prompts twice the steps helped where the prior held more prompts than the
    budget could fit (BENCHMARKS §39), and 600 steps changed nothing where the fit had already
    learned its 6.4k training prompts by heart (BENCHMARKS §26); on a prior trained with neighbours, longer runs
    pushed the FCR away from the reference (NOTES §45), which `few_steps_note` weighs instead."""
    loose = bool(res.neighbour_mix_per_site) and not any(res.neighbour_mix_per_site.values())
    if not loose or res.stopped.startswith("early stop") or res.final_heldout_loss is None or res.final_train_loss is None:
        return None
    if res.final_heldout_loss - res.final_train_loss > STILL_FITTING_GAP_NATS:
        return None
    passes = res.steps * cfg.batch_size / max(res.n_train, 1)
    return (f"Training ended on its budget ({res.stopped}, {res.steps} steps) while still fitting this prior: its final weights do "
            f"about as well on new prompts as on training ones (loss {res.final_heldout_loss:.3f} held-out, {res.final_train_loss:.3f} "
            f"training), after {passes:.1f} passes over its {res.n_train:,} training prompts. A new run with about twice the steps should "
            f"fit it better (--run NEW --max-steps {2 * res.steps} --minutes 60 --total-minutes 0): on the real refusal sets with "
            "18.8k more Alpaca prompts in the prior, 786 steps instead of 393 lowered the held-out loss from 1.620 to 1.519 "
            "and refusal at ε 0.1 from 0.355 to 0.288 (BENCHMARKS §39).")


def train_and_check(cfg: TrainConfig, console: Console, check: bool = True) -> TrainResult:
    """`autoscope train`: train (or resume) the run, show what was done, and end with the
    verdict on whether the inverter conditions enough for FCR to mean much."""
    res = train(cfg)
    if not is_main():  # launched by torchrun or accelerate: rank 0 reports and checks, once
        return res
    console.print(training_table(res))
    for note in (few_steps_note(res, cfg), still_fitting_note(res, cfg)):
        if note:
            console.print(f"[yellow]{note}[/yellow]")
    if check:
        verdict = check_run(res.run_dir, res.heldout_loss, res.heldout_loss_unconditional, seed=cfg.seed)
        style = "bold red" if verdict.weak else "bold yellow" if verdict.tight else "green"
        console.print(f"[{style}]" + verdict.verdict() + f"[/{style}]")
    return res
