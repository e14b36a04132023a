"""`autoscope sample`: verified preimages of query activations, shown with their distances.

The job is one `SampleJobConfig` and `run_sample`: open the run, check the choices, sample the
queries (free texts, or held-out prompts that pass `--only`), show one table per query and the
sampler's figures, and save the samples under the run's results/."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from agent.loop import check_kernel, check_temperature, heldout_queries
from scope_core.api import AutoscopeError, QueryResult, SampleRun, Scope, describe_density


class SampleJobConfig(BaseModel):
    """One `autoscope sample` job, as the command's options give it (defaults are the command's)."""

    site: str
    prompts: list[str] = []  # free query texts; none: held-out prompts of the run
    run: str = "default"
    runs_dir: str = "runs"
    queries: int = 3  # held-out queries when no prompt is given
    only: str | None = None
    n: int = 16
    temperature: float | None = None  # None: the run's own for the site (Scope.sampling_temperature)
    guidance: float = 1.0  # classifier-free guidance w (scope_core.decoding.guided)
    anchors: Literal["auto", "query", "ball"] = "query"  # preimages of ẑ itself unless asked (Scope.anchors_for)
    metric: str | None = None
    kernel: str = "hard"
    eps: float | None = None
    eps_quantile: float | None = None
    seed: int = 0
    verify: str = "auto"
    device: str | None = None  # None: the run's (scope_core.devices)
    dtype: str | None = None


def check_choices(cfg: SampleJobConfig) -> None:
    """Refuse an unknown kernel or verification mode with the choices named."""
    check_kernel(cfg.kernel)
    check_temperature(cfg.temperature)
    if cfg.guidance <= 0:
        raise AutoscopeError(f"--guidance must be > 0 (1 is plain sampling), not {cfg.guidance}")
    if cfg.verify not in ("auto", "full"):
        raise AutoscopeError(f"unknown --verify {cfg.verify!r}: use auto or full")


def query_table(q: QueryResult, eps: float | None = None) -> Table:
    """One query's samples, nearest first: distance, accepted (within ε), copy of a training prompt.
    With ε and the query's nearest training prompts, the title says how many of those lie within
    ε and how near the nearest is: a query with none is seldom accepted, whatever the recipe (BENCHMARKS §34)."""
    title = f"query: {q.query}"
    if eps is not None and q.prior_nearest:
        inside = sum(d < eps for d in q.prior_nearest)
        more = "+" if inside == len(q.prior_nearest) else ""
        title += f"\n[dim]training prompts within ε: {inside}{more} (nearest at {q.prior_nearest[0]:.4f})[/dim]"
    t = Table(title=title, show_lines=False)
    t.add_column("d", justify="right")
    t.add_column("ok")
    t.add_column("copy")
    t.add_column("sample")
    for smp in sorted(q.samples, key=lambda x: x.distance):
        t.add_row(f"{smp.distance:.4f}", "✓" if smp.accepted else "·", "copy" if smp.is_copy else "", smp.text)
    return t


def run_sample(cfg: SampleJobConfig, console: Console) -> SampleRun:
    """Sample, show and save (results/sample_SITE.json)."""
    check_choices(cfg)  # before the target loads
    scope = Scope(Path(cfg.runs_dir) / cfg.run, device=cfg.device, dtype=cfg.dtype)
    site = scope.site(cfg.site)
    ec = scope.eps(site, cfg.metric, cfg.eps_quantile, cfg.eps)
    common = dict(n=cfg.n, temperature=cfg.temperature, guidance=cfg.guidance, kernel=cfg.kernel, eps=ec, seed=cfg.seed, progress=True, verify_mode=cfg.verify,
                  anchors=cfg.anchors)
    if cfg.prompts:
        res = scope.sample(site, texts=cfg.prompts, **common)  # type: ignore[arg-type]
    else:
        res = scope.sample(site, indices=heldout_queries(scope, cfg.only, cfg.queries), **common)  # type: ignore[arg-type]
    told = "" if cfg.temperature is not None else " (the run's for this site)"
    shaped = "".join(f", {k} {v:g}{why}" for k, v, why in (("temperature", res.temperature, told), ("guidance", cfg.guidance, "")) if v != 1)
    console.print(f"[bold]{ec.describe()}[/bold], kernel {cfg.kernel}{shaped}")
    for q in res.queries:
        console.print(query_table(q, res.eps.eps))
    summary = scope.sampler_summary(res)
    console.print(" ".join(f"{k}={v:.3f}" for k, v in summary.items() if "_ball_" not in k))  # the strata are said below
    if said := describe_density(summary, len(res.queries), cfg.n):
        console.print(said)
    scope.save_json(f"sample_{site.name}.json", res)
    return res
