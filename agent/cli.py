"""`autoscope` command line: a thin layer that builds one config per command and calls
one function. Bad input ends with one red line and exit code 2; Ctrl-C says where the
saved progress is."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer
from rich.console import Console

from scope_core.errors import AutoscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Read what an LLM activation encodes, and test it with numbers.")
console = Console()
err = Console(stderr=True)


def friendly(fn):
    """Turn user errors into one clear line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutoscopeError as e:
            err.print(f"[bold red]error:[/bold red] {e}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]: finished work is saved under runs/; rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


def _quiet_libraries() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


@app.command()
@friendly
def train(
    run: str = typer.Option("default", help="run name: outputs go to RUNS_DIR/RUN"),
    runs_dir: str = typer.Option("runs", help="folder that holds runs"),
    target: str = typer.Option("embedded", help="'embedded', a hub id, a local path or a .gguf file"),
    system_prompt: str = typer.Option("You are a helpful assistant.", help="system prompt of chat targets"),
    task: Optional[str] = typer.Option("refusal", help="built-in prior: refusal, ioi, icl; 'none' with --data alone"),
    data: Optional[list[str]] = typer.Option(None, help="prompt file(s): JSON, JSONL or CSV; FILE:harmful or FILE:harmless sets the label"),
    n: int = typer.Option(12000, help="prompts drawn from the built-in task"),
    heldout: int = typer.Option(500, help="prompts kept out of training"),
    sites: str = typer.Option("L18", help="sites the generator is trained on, e.g. L18 or L6,L12,L18,L24"),
    backbone: str = typer.Option("embedded", help="'embedded' (frozen SmolLM2), 'scratch', a hub id or a path"),
    arch: str = typer.Option("inversescope", help="inversescope or inversionview (baseline)"),
    sft: str = typer.Option("none", help="fine-tune the backbone first: none, full or lora"),
    minutes: float = typer.Option(8.0, help="control-layer training budget (wall clock)"),
    metric: str = typer.Option("cosine", help="cosine, centred_cosine, euclidean or norm_euclidean"),
    eps_quantile: float = typer.Option(0.02, help="default ε per site = this quantile of pairwise distances"),
    eps: Optional[float] = typer.Option(None, help="absolute ε at every site (overrides --eps-quantile)"),
    noise_mode: str = typer.Option("kernel", help="kernel (shell at the site's ε), range, or none"),
    noise_distance: Optional[float] = typer.Option(None, help="noise shell distance (default: the site's ε)"),
    seed: int = 0,
):
    """Build the prior, cache activations and train an inverter (resumes if interrupted)."""
    _quiet_libraries()
    from scope_core.data import PriorConfig
    from scope_core.targets import TargetConfig
    from scope_core.train import TrainConfig, train as run_train

    try:
        cfg = TrainConfig(
            run=run, runs_dir=runs_dir, target=TargetConfig(model=target, system_prompt=system_prompt),
            prior=PriorConfig(task=None if task in (None, "none") else task, data=data or [], n=n, heldout=heldout, seed=seed),
            sites=sites, backbone=backbone, arch=arch, sft=sft, minutes=minutes, metric=metric, eps_quantile=eps_quantile,
            eps=eps, noise_mode=noise_mode, noise_distance=noise_distance, seed=seed,
        )
    except Exception as e:  # pydantic validation
        raise AutoscopeError(f"bad option: {str(e).splitlines()[0]} — see `autoscope train --help`") from None
    res = run_train(cfg)
    from rich.table import Table

    t = Table(title=f"trained {res.run_dir}")
    t.add_column("what")
    t.add_column("value", justify="right")
    for k, v in res.phases.items():
        t.add_row(k, f"{v:.1f}")
    t.add_row("prompts train / held-out / dropped (too long)", f"{res.n_train} / {res.n_heldout} / {res.dropped_long}")
    t.add_row("steps / training tokens", f"{res.steps} / {res.train_tokens}")
    if res.heldout_loss is not None:
        t.add_row("held-out loss: conditional vs unconditional", f"{res.heldout_loss:.3f} vs {res.heldout_loss_unconditional:.3f}")
    t.add_row("stopped by", res.stopped)
    for e in res.eps:
        t.add_row("ε", e.describe())
    console.print(t)


def _only_filter(only: Optional[str]):
    if not only:
        return None
    key, _, value = only.partition("=")
    if not value:
        key, value = "harmfulness", key
    return lambda labels: labels.get(key) == value


@app.command()
@friendly
def sample(
    site: str = typer.Option(..., help="site to invert, e.g. L18"),
    prompt: Optional[list[str]] = typer.Option(None, help="query prompt(s); default: held-out prompts of the run"),
    run: str = typer.Option("default"),
    runs_dir: str = typer.Option("runs"),
    queries: int = typer.Option(3, help="held-out queries when no --prompt is given"),
    only: Optional[str] = typer.Option(None, help="filter held-out queries by a label, e.g. harmful or reason=cybercrime"),
    n: int = typer.Option(16, help="samples per query"),
    temperature: float = 1.0,
    metric: Optional[str] = typer.Option(None, help="distance (default: the run's)"),
    kernel: str = typer.Option("hard", help="hard or gaussian"),
    eps: Optional[float] = typer.Option(None, help="absolute ε"),
    eps_quantile: Optional[float] = typer.Option(None, help="ε as a quantile of the site's pairwise distances"),
    seed: int = 0,
):
    """Sample verified preimages of query activations and show them with distances."""
    _quiet_libraries()
    from rich.table import Table

    from scope_core.api import Scope
    from scope_core.sample import summarise

    scope = Scope(Path(runs_dir) / run)
    s = scope.site(site)
    if kernel not in ("hard", "gaussian"):
        raise AutoscopeError(f"unknown kernel {kernel!r}: use hard or gaussian")
    ec = scope.eps(s, metric, eps_quantile, eps)
    if prompt:
        res = scope.sample(s, texts=prompt, n=n, temperature=temperature, kernel=kernel, eps=ec, seed=seed, progress=True)
    else:
        idx = scope.heldout_indices(_only_filter(only), queries)
        if not idx:
            raise AutoscopeError(f"no held-out prompt matches --only {only}")
        res = scope.sample(s, indices=idx, n=n, temperature=temperature, kernel=kernel, eps=ec, seed=seed, progress=True)
    console.print(f"[bold]{ec.describe()}[/bold], kernel {kernel}")
    for q in res.queries:
        t = Table(title=f"query: {q.query}", show_lines=False)
        t.add_column("d", justify="right")
        t.add_column("ok")
        t.add_column("copy")
        t.add_column("sample")
        for smp in sorted(q.samples, key=lambda x: x.distance):
            t.add_row(f"{smp.distance:.4f}", "✓" if smp.accepted else "·", "copy" if smp.is_copy else "", smp.text)
        console.print(t)
    summ = summarise(res)
    console.print(" ".join(f"{k}={v:.3f}" for k, v in summ.items()))
    scope.save_json(f"sample_{s.name}.json", res)


@app.command()
@friendly
def fcr(
    feature: str = typer.Option(..., help="feature name(s), comma-separated, e.g. harmfulness or harmfulness,method"),
    sites: str = typer.Option("L18", help="sites, e.g. L18 or L0-L29 (must be trained in the run)"),
    run: str = typer.Option("default"),
    runs_dir: str = typer.Option("runs"),
    only: Optional[str] = typer.Option(None, help="restrict queries D, e.g. harmful or reason=cybercrime"),
    queries: int = typer.Option(40, help="held-out queries"),
    n: int = typer.Option(16, help="samples per query"),
    kernel: str = typer.Option("hard", help="hard or gaussian"),
    metric: Optional[str] = None,
    eps: Optional[float] = typer.Option(None, help="absolute ε at every site"),
    eps_quantile: Optional[float] = typer.Option(None, help="ε per site as a pairwise-distance quantile"),
    empirical: bool = typer.Option(True, help="also compute the generator-free empirical-neighbour FCR"),
    seed: int = 0,
):
    """Feature consistency rate per site, with CI, chance level p0, κ and the empirical reference."""
    _quiet_libraries()
    from agent.fcr_report import run_fcr

    run_fcr(Path(runs_dir) / run, [f.strip() for f in feature.split(",") if f.strip()], sites, _only_filter(only), only,
            queries, n, kernel, metric, eps, eps_quantile, empirical, seed, console)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
