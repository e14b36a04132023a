"""`autoscope report`: render report.md and report.html from an explore run directory
alone (config.json, hypotheses.jsonl, other_sites.jsonl, timing.jsonl), and keep
`runs/index.html` — every explore run and FCR study, with a side-by-side comparison —
current, so a reviewer can move between hypotheses, sites and runs in one browser tab."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jinja2
from rich.table import Table

from scope_core.api import AutoscopeError

from .hypotheses import Score, ScoredHypothesis, SearchNull, is_confirmed, kappa_text, ranked, verdict
from .prompts import prompts_dir, render
from .runlog import RunLog


def saved_null(log, hs: list[ScoredHypothesis]) -> SearchNull | None:
    """The run's search null, or None where it is missing or does not cover every scored
    hypothesis (saved before a resumed run scored more, then stopped again): a finding is
    confirmed only against the null of the whole search."""
    saved = log.read_json("search_null.json")
    null = SearchNull.model_validate(saved) if saved else None
    if null is not None and null.n_hypotheses is not None and null.n_hypotheses < sum(1 for h in hs if h.status == "scored"):
        return None
    return null


def _load(root: Path):
    log = RunLog(root)
    cfg = log.read_json("config.json")
    if cfg is None:
        raise AutoscopeError(f"{root} is not an explore run (no config.json)")
    latest: dict[int, ScoredHypothesis] = {}
    for r in log.read("hypotheses"):
        h = ScoredHypothesis.model_validate(r["hypothesis"])
        latest[h.id] = h
    for r in log.read("other_sites"):
        if r["id"] in latest:
            latest[r["id"]].other_sites = {k: Score.model_validate(v) for k, v in r["scores"].items()}
    timing = (log.read("timing") or [{}])[-1]
    timing = {k: v for k, v in timing.items() if k != "t"}
    result = log.read_json("result.json") or {}
    return log, cfg, list(latest.values()), timing, result


def _plot(root: Path, ranking: list[ScoredHypothesis], site: str) -> str | None:
    multi = [h for h in ranking if h.other_sites and h.score and h.score.fcr is not None]
    if not multi:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for h in multi:
        pts = {site: h.score, **h.other_sites}
        order = sorted(pts, key=lambda s: int("".join(c for c in s[1:] if c.isdigit()) or 0))
        a1.plot(order, [pts[s].fcr for s in order], marker="o", label=h.hypothesis.name)
        a2.plot(order, [pts[s].kappa if pts[s].kappa is not None else float("nan") for s in order], marker="o", label=h.hypothesis.name)
    a1.set_ylabel("FCR")
    a2.set_ylabel("κ")
    for a in (a1, a2):
        a.legend(fontsize=7)
        a.set_xlabel("site")
    fig.tight_layout()
    fig.savefig(root / "fcr_by_site.png", dpi=110)
    plt.close(fig)
    return "fcr_by_site.png"


def explore_root(explore_id: str, run: str, runs_dir: str) -> Path:
    """An explore run's folder: `explore_id` as a path, or RUNS_DIR/RUN/explore/ID."""
    root = Path(explore_id) if Path(explore_id).exists() else Path(runs_dir) / run / "explore" / explore_id
    if not root.exists():
        raise AutoscopeError(f"no explore run {explore_id!r} (looked in {root})")
    return root


def ranking_table(ranking: list[ScoredHypothesis], null: SearchNull | None, site: str, stopped: str) -> Table:
    """The hypotheses as ranked, with their explore κ, confirmation and verdict, under the
    search null's κ (what the best of the search scores by chance)."""
    def kappa_ci(s: Score | None) -> str:
        return "—" if s is None else kappa_text(s.kappa, s.kappa_ci_low, s.kappa_ci_high, s.degenerate)

    top = null.max_kappa if null else None
    perm = null.p_threshold if null else None
    t = Table(title=f"hypotheses at {site} ({stopped}); search null κ {top if top is None else f'{top:.3f}'}"
                    + (f", permutation p threshold {perm:.4f}" if perm is not None else ""))
    for col in ("#", "hypothesis", "from", "explore κ", "confirm FCR [95% CI]", "confirm κ [95% CI]", "empirical κ", "verdict"):
        t.add_column(col)
    for i, h in enumerate(ranking, 1):
        s, c = h.score, h.confirmation
        t.add_row(str(i), h.hypothesis.name, h.source, kappa_ci(s),
                  f"{c.fcr:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]" if c and c.fcr is not None else "—", kappa_ci(c),
                  f"{c.empirical_kappa:.3f}" if c and c.empirical_kappa is not None else "—",
                  "confirmed" if is_confirmed(h, null) else ("not confirmed" if h.status == "scored" else h.status))
    return t


def write_report(root: str | Path) -> tuple[Path, Path]:
    """Render report.md and report.html for one explore run, then refresh the runs index."""
    root = Path(root)
    log, cfg, hs, timing, result = _load(root)
    null = saved_null(log, hs)
    ranking = ranked(hs, null)
    samples = log.read_json(f"samples_{cfg['site']}.json") or {}
    eps = samples.get("eps", {})
    common = dict(cfg=_Obj(cfg), xid=root.name, ranking=ranking, timing=timing, stopped=result.get("stopped", "unfinished"),
                  verdict=verdict(cfg["site"], ranking, null), null=null, confirmed={h.id for h in ranking if is_confirmed(h, null)},
                  eps_line=_eps_line(eps, samples.get("temperature")), n_queries=len(samples.get("queries", [])),
                  judge_model=cfg.get("judge", {}).get("model", "?"), plot=_plot(root, ranking, cfg["site"]))
    (root / "report.md").write_text(render("report.md", **common) + "\n")
    other = sorted({s for h in ranking for s in h.other_sites}, key=_site_order)
    html = _html_env().get_template("report.html.j2").render(
        run=cfg.get("run", root.parents[1].name), site=cfg["site"], sites=[cfg["site"], *[s for s in other if s != cfg["site"]]],
        index_href="../../../index.html", **common)
    (root / "report.html").write_text(html)
    if root.parent.name == "explore":  # the usual RUNS/RUN/explore/ID layout: keep the index current
        write_index(root.parents[2])
    return root / "report.md", root / "report.html"


def _eps_line(eps: dict, temperature: float | None = None) -> str:
    """ε as the report prints it, with the sampling temperature where it was not 1 (a run on
    loose ε-balls samples at 0.75 unless told, `Scope.sampling_temperature`)."""
    line = f"ε={eps.get('eps', float('nan')):.4g} {eps.get('metric', '')}"
    line += f" (pairwise q={eps['quantile']:.3g})" if eps.get("quantile") else ""
    return line + (f", temperature {temperature:g}" if temperature is not None and temperature != 1 else "")


def _site_order(site: str) -> tuple[int, str]:
    digits = "".join(c for c in site[1:] if c.isdigit())
    return (int(digits) if digits else 0, site)


def _fmt_num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _fmt_fcr(s: Score | dict | None) -> str:
    s = Score.model_validate(s) if isinstance(s, dict) else s
    if s is None or s.fcr is None:
        return "—"
    return f"{s.fcr:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}]"


def _fmt_kappa(s: Score | dict | None) -> str:
    s = Score.model_validate(s) if isinstance(s, dict) else s
    return "—" if s is None else kappa_text(s.kappa, s.kappa_ci_low, s.kappa_ci_high, s.degenerate)


@lru_cache(maxsize=1)
def _html_env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(prompts_dir())), undefined=jinja2.StrictUndefined,
                             autoescape=True)
    env.globals.update(fmt_num=_fmt_num, fmt_fcr=_fmt_fcr, fmt_kappa=_fmt_kappa)
    return env


def _run_summary(runs_dir: Path, root: Path) -> dict | None:
    try:
        log, cfg, hs, _timing, result = _load(root)
    except (AutoscopeError, ValueError, KeyError):
        return None  # a run killed before its config was written: nothing to show
    ranking = ranked(hs, saved_null(log, hs))
    samples = log.read_json(f"samples_{cfg['site']}.json") or {}
    best = next((h for h in ranking if h.score and h.score.kappa is not None), None)
    run = root.parents[1].name
    return {
        "key": f"{run}/{root.name}", "run": run, "xid": root.name, "site": cfg["site"],
        "href": (root / "report.html").relative_to(runs_dir).as_posix(),
        "eps": _eps_line(samples.get("eps", {}), samples.get("temperature")), "judge": cfg.get("judge", {}).get("model", "?"),
        "stopped": result.get("stopped", "unfinished"),
        "best": f"{best.hypothesis.name} ({best.score.kappa:.3f})" if best else "—",  # type: ignore[union-attr]
        "hypotheses": [{"name": h.hypothesis.name, "kind": h.hypothesis.kind, "fcr": _fmt_fcr(h.score),
                        "p0": _fmt_num(h.score.p0 if h.score else None), "kappa": _fmt_kappa(h.score), "status": h.status}
                       for h in ranking],
    }


def _study_summary(runs_dir: Path, path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    rows = []
    for r in data.get("reports", []):
        g, e, eps = r.get("generator", {}), r.get("empirical") or {}, r.get("eps", {})
        rows.append({"feature": r.get("feature"), "site": r.get("site"), "eps": _eps_line(eps, r.get("temperature")), "fcr": _fmt_fcr(g) if g else "—",
                     "p0": _fmt_num(g.get("p0")), "kappa": _fmt_kappa(g) if g else "—", "empirical": _fmt_num(e.get("fcr"))})
    png = path.with_suffix(".png")
    run = path.parents[1].name
    return {"run": run, "name": path.stem, "anchor": f"study-{run}-{path.stem}", "rows": rows,
            "png": png.relative_to(runs_dir).as_posix() if png.exists() else None, "only": data.get("only")}


def write_index(runs_dir: str | Path) -> Path:
    """`runs/index.html`: every explore run and FCR study under `runs_dir`, newest first,
    with a side-by-side comparison of any two explore runs."""
    runs_dir = Path(runs_dir)
    roots = sorted(runs_dir.glob("*/explore/*/config.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    runs = [r for r in (_run_summary(runs_dir, p.parent) for p in roots) if r]
    studies = [s for s in (_study_summary(runs_dir, p) for p in sorted(runs_dir.glob("*/results/fcr_*.json"))) if s]
    runs_json = json.dumps(runs).replace("</", "<\\/")
    html = _html_env().get_template("index.html.j2").render(runs=runs, studies=studies, runs_json=runs_json)
    out = runs_dir / "index.html"
    out.write_text(html)
    return out


class _Obj(dict):
    """Attribute access for a config dict in templates."""

    def __getattr__(self, k):
        return self.get(k)
