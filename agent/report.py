"""`autoscope report`: render report.md and report.html from an explore run directory
alone (config.json, hypotheses.jsonl, other_sites.jsonl, timing.jsonl)."""

from __future__ import annotations

from pathlib import Path

import markdown_it  # noqa: F401  (checked at import: HTML rendering needs it)

from scope_core.errors import AutoscopeError

from .hypotheses import Score, ScoredHypothesis
from .prompts import render
from .runlog import RunLog

HTML_HEAD = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}}
table{{border-collapse:collapse;margin:.6em 0}}td,th{{border:1px solid #ccc;padding:3px 7px;font-size:.9em;vertical-align:top}}
th{{background:#f3f3f3}}code,pre{{background:#f6f6f6}}pre{{padding:.6em;overflow-x:auto}}img{{max-width:100%}}</style></head><body>
"""


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


def _rank(hs: list[ScoredHypothesis]) -> list[ScoredHypothesis]:
    def key(h: ScoredHypothesis):
        s = h.score
        return (h.status != "scored", -(s.kappa if s and s.kappa is not None else -1e9), -(s.fcr if s and s.fcr is not None else -1))

    return sorted(hs, key=key)


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


def write_report(root: str | Path) -> tuple[Path, Path]:
    from markdown_it import MarkdownIt

    root = Path(root)
    log, cfg, hs, timing, result = _load(root)
    ranking = _rank(hs)
    samples = log.read_json(f"samples_{cfg['site']}.json") or {}
    eps = samples.get("eps", {})
    eps_line = f"ε={eps.get('eps', float('nan')):.4g} {eps.get('metric', '')}" + (f" (pairwise q={eps['quantile']:.3g})" if eps.get("quantile") else "")
    md = render("report.md", cfg=_Obj(cfg), xid=root.name, ranking=ranking, timing=timing, stopped=result.get("stopped", "unfinished"),
                eps_line=eps_line, n_queries=len(samples.get("queries", [])), judge_model=cfg.get("judge", {}).get("model", "?"),
                plot=_plot(root, ranking, cfg["site"]))
    (root / "report.md").write_text(md + "\n")
    html = HTML_HEAD.format(title=f"autoscope {root.name}") + MarkdownIt("commonmark").enable("table").render(md) + "</body></html>\n"
    (root / "report.html").write_text(html)
    return root / "report.md", root / "report.html"


class _Obj(dict):
    """Attribute access for a config dict in templates."""

    def __getattr__(self, k):
        return self.get(k)
