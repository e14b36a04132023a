"""`autoscope plan`: the plan (`scope_core.plan`) for this host or the named GPUs, as a table
with its memory formulas, what will not fit, notes and assumptions, or as JSON."""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scope_core.api import Plan, PlanConfig, fmt_seconds, plan


def plan_hardware(gpus: int, gpu_kind: str | None, runs_dir: str) -> tuple[int, str, float | None]:
    """(GPUs, kind, free disk in GiB) as `plan`'s options mean them: the kind defaults to h100
    with --gpus and to the CPU without; a GPU kind alone means one GPU; on the CPU the free
    disk where the activation cache would go is checked (None with GPUs: not this host)."""
    kind = (gpu_kind or ("h100" if gpus else "cpu")).lower()
    if kind != "cpu" and not gpus:
        gpus = 1
    if gpus:
        return gpus, kind, None
    where = Path(runs_dir).resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    return gpus, kind, shutil.disk_usage(where).free / (1 << 30)


def plan_table(p: Plan) -> Table:
    """One row a phase: memory per process, host RAM, time and the work it does."""
    t = Table(title=f"plan: {p.target} ({p.model_type}, {p.params / 1e9:.3g}B parameters) at {', '.join(p.sites)}, {p.dtype}, "
                    f"on {p.hardware}")
    for col, just in (("", "left"), ("memory per process", "right"), ("host RAM per process", "right"), ("time (estimate)", "right"),
                      ("work", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for ph in p.phases:
        t.add_row(ph.phase, f"{ph.memory_gib:.2f} GiB", f"{ph.host_gib:.2f} GiB", fmt_seconds(ph.seconds), ph.work)
    return t


def present_plan(p: Plan, console: Console) -> None:
    """The table, then the totals, the memory formulas, what will not fit, notes and the
    assumptions (the figures are estimates)."""
    console.print(plan_table(p))
    console.print(f"weights {p.weights_gib:.2f} GiB · inverter {p.trainable_params / 1e6:,.1f}M trainable parameters · activation "
                  f"cache on disk [bold]{p.cache_gib:.2f} GiB[/bold] ({p.cache_sites_gib:.2f} site activations + "
                  f"{p.cache_trunk_gib:.2f} trunk residual) · {p.processes} process{'es' if p.processes > 1 else ''} on "
                  f"{p.devices} device{'s' if p.devices > 1 else ''} · total ≈ {fmt_seconds(sum(ph.seconds for ph in p.phases))}")
    console.print("[bold]memory formulas[/bold]")
    for ph in p.phases:
        console.print(f"  {ph.phase}: {ph.memory_formula}", highlight=False)
    if p.problems:
        console.print("[bold red]will not fit:[/bold red]")
        for line in p.problems:
            console.print(f"  [red]✗[/red] {line}", highlight=False)
    else:
        console.print("[green]fits[/green] on " + p.hardware)
    for line in p.notes:
        console.print(f"  [yellow]note:[/yellow] {line}", highlight=False)
    console.print("[bold]assumptions[/bold] (the figures are estimates)")
    for line in p.assumptions:
        console.print(f"  - {line}", highlight=False)


def show_plan(cfg: PlanConfig, console: Console, as_json: bool = False) -> Plan:
    """Plan, then print it: the JSON of the `Plan` on stdout, or the table and its notes."""
    p = plan(cfg)
    if as_json:
        print(p.model_dump_json(indent=1))
    else:
        present_plan(p, console)
    return p
