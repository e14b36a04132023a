"""`autoscope fcr`: score features across sites; print a table, save JSON and the
FCR/κ-by-layer plot (the paper's Fig. 7) under the run's results/.

The job is one `FCRJobConfig` and `run_fcr`, which runs its phases in order, each callable
alone: `check_job`, `train_if_missing`, `labellers`, `heldout_queries` (agent.loop), then per site
`sample_site` and `score_site`, and last `present`, `save_results` and `write_rows`."""

from __future__ import annotations

import contextlib
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, field_validator
from rich.console import Console
from rich.table import Table

from agent.hypotheses import kappa_text
from agent.judging.judge import JudgeConfig
from agent.loop import check_kernel, check_temperature, heldout_queries, only_filter
from features.base import Feature
from features.registry import get_feature
from scope_core.api import AutoscopeError, FCRReport, SampleRun, Scope, Site, audit_on_set, load_audit_set, parse_sites


def plot_by_layer(reports: list[FCRReport], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = sorted({r.feature for r in reports})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for f in feats:
        rs = sorted((r for r in reports if r.feature == f and r.generator.fcr is not None), key=lambda r: r.site)
        rs = sorted(rs, key=lambda r: int("".join(ch for ch in r.site[1:] if ch.isdigit()) or 0))
        x = [r.site for r in rs]
        y = [r.generator.fcr for r in rs]
        lo = [r.generator.fcr - r.generator.ci_low for r in rs]
        hi = [r.generator.ci_high - r.generator.fcr for r in rs]
        line = ax1.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=f"{f} (generator)")
        emp = [(r.site, r.empirical.fcr) for r in rs if r.empirical and r.empirical.fcr is not None]
        if emp:
            ax1.plot([e[0] for e in emp], [e[1] for e in emp], linestyle="--", marker="x", color=line[0].get_color(), label=f"{f} (empirical neighbours)")
        ax1.plot(x, [r.generator.p0 for r in rs], linestyle=":", color=line[0].get_color(), alpha=0.6)
        ax2.plot(x, [r.generator.kappa if r.generator.kappa is not None else float("nan") for r in rs], marker="o", label=f)
    ax1.set_ylabel("FCR (dotted: chance p0)")
    ax1.set_ylim(0, 1.02)
    ax2.set_ylabel("κ = (FCR − p0)/(1 − p0)")
    ax2.axhline(0, color="grey", linewidth=0.5)
    for ax in (ax1, ax2):
        ax.set_xlabel("site")
        ax.tick_params(axis="x", rotation=60)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


TABLE_COLUMNS = ("feature", "site", "ε", "FCR [95% CI]", "p0", "κ [95% CI]", "conditional p0 / κ [95% CI]", "empirical FCR",
                 "empirical κ [95% CI]", "conditional empirical κ [95% CI]", "FCR − empirical [95% CI]", "accepted/100", "novel/100",
                 "copies")
# "copies": exact training prompts / within one word edit of one / within one word edit of the query


def report_rows(reports: list[FCRReport]) -> list[dict]:
    """One flat record per (feature, site): what the table prints, and what `--json` and
    `--csv` write for scripts. κ of the generator and of the empirical reference take p0 from
    one population (the training split's pool), each averaged over the queries its own row
    counted — `empirical_p0` beside `p0`, since the two rows need not count the same queries."""
    rows = []
    for r in reports:
        g, e = r.generator, r.empirical
        rows.append({
            "feature": r.feature, "site": r.site, "eps": r.eps.eps, "metric": r.eps.metric, "eps_quantile": r.eps.quantile,
            "kernel": r.kernel, "anchors": r.anchors, "anchor_share": r.anchor_share, "temperature": r.temperature, "fcr": g.fcr, "fcr_ci_low": g.ci_low, "fcr_ci_high": g.ci_high, "p0": g.p0,
            "kappa": g.kappa, "kappa_ci_low": g.kappa_ci_low, "kappa_ci_high": g.kappa_ci_high, "degenerate": g.degenerate,
            "n_queries": g.n_queries, "n_no_accepted": g.n_no_weight, "n_undefined": g.n_undefined,
            "conditional_p0": r.conditional_p0, "conditional_kappa": r.conditional_kappa, "conditional_degenerate": r.conditional_degenerate,
            "conditional_kappa_ci_low": r.conditional_kappa_ci[0], "conditional_kappa_ci_high": r.conditional_kappa_ci[1],
            "n_conditional_prior": r.n_conditional,
            "conditional_empirical_p0": r.conditional_empirical_p0, "conditional_empirical_kappa": r.conditional_empirical_kappa,
            "conditional_empirical_kappa_ci_low": r.conditional_empirical_kappa_ci[0],
            "conditional_empirical_kappa_ci_high": r.conditional_empirical_kappa_ci[1],
            "conditional_empirical_degenerate": r.conditional_empirical_degenerate,
            "empirical_fcr": e.fcr if e else None, "empirical_p0": e.p0 if e else None, "empirical_kappa": e.kappa if e else None,
            "empirical_degenerate": e.degenerate if e else False, "empirical_n_queries": e.n_queries if e else None,
            "empirical_kappa_ci_low": e.kappa_ci_low if e else None, "empirical_kappa_ci_high": e.kappa_ci_high if e else None,
            "accepted_per_100": 100 * (1 - r.sampler["refusal_rate"]), "accepted_novel_per_100": r.sampler["accepted_novel_per_100"],
            "exact_copy_rate": r.sampler["exact_copy_rate"],
            "near_copy_rate": r.sampler.get("near_copy_rate"), "query_copy_rate": r.sampler.get("query_copy_rate"),
            "generator_minus_empirical": r.gap,
            "generator_minus_empirical_ci_low": r.gap_ci[0], "generator_minus_empirical_ci_high": r.gap_ci[1],
            "labeller_accuracy_on_samples": r.labeller_audit.accuracy if r.labeller_audit else None,
            "labeller_accuracy_ci_low": r.labeller_audit.ci_low if r.labeller_audit else None,
            "labeller_accuracy_ci_high": r.labeller_audit.ci_high if r.labeller_audit else None,
            "labeller_audited_samples": r.labeller_audit.n_parsed if r.labeller_audit else None,
            "gap_within_label_noise": r.labeller_audit.explains(r.gap) if r.labeller_audit else None,
        })
    return rows


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    return "—" if x is None else fmt.format(x)


def _anchored(row: dict) -> str:
    share = row.get("anchor_share")
    return ", ball-anchored" if share is None or share >= 1 else f", {share:.0%} ball-anchored"


def _cell(row: dict, col: str) -> str:
    if col == "ε":
        q = row["eps_quantile"]
        t = row.get("temperature")
        return (f"{row['eps']:.4g} ({row['metric']}" + (f", q={q:.3g}" if q else "") + (_anchored(row) if row.get("anchors") == "ball" else "")
                + (f", temperature {t:g}" if t is not None and t != 1 else "") + ")")
    if col == "FCR [95% CI]":
        return (f"{row['fcr']:.3f} [{row['fcr_ci_low']:.3f}, {row['fcr_ci_high']:.3f}]" if row["fcr"] is not None
                else f"— ({row['n_no_accepted']} queries without accepted samples, {row.get('n_undefined', 0)} where the feature is undefined)")
    if col == "κ [95% CI]":
        return kappa_text(row["kappa"], row["kappa_ci_low"], row["kappa_ci_high"], row["degenerate"])
    if col == "conditional p0 / κ [95% CI]":
        if row["conditional_p0"] is None:
            return "—"
        return f"{row['conditional_p0']:.3f} / " + kappa_text(row["conditional_kappa"], row["conditional_kappa_ci_low"], row["conditional_kappa_ci_high"],
                                                              row.get("conditional_degenerate", False))
    if col == "conditional empirical κ [95% CI]":
        if row.get("conditional_empirical_p0") is None:
            return "—"
        return kappa_text(row["conditional_empirical_kappa"], row["conditional_empirical_kappa_ci_low"],
                          row["conditional_empirical_kappa_ci_high"], row.get("conditional_empirical_degenerate", False))
    if col == "empirical κ [95% CI]":
        return kappa_text(row["empirical_kappa"], row["empirical_kappa_ci_low"], row["empirical_kappa_ci_high"], row.get("empirical_degenerate", False))
    if col == "FCR − empirical [95% CI]":
        gap, lo, hi = row["generator_minus_empirical"], row["generator_minus_empirical_ci_low"], row["generator_minus_empirical_ci_high"]
        if gap is None:
            return "—"
        return f"{gap:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else "")
    if col == "empirical FCR":
        return _num(row["empirical_fcr"])
    if col == "p0":
        return _num(row["p0"])
    if col == "accepted/100":
        return f"{row['accepted_per_100']:.1f}"
    if col == "novel/100":
        return f"{row['accepted_novel_per_100']:.1f}"
    if col == "copies":
        near = "" if row.get("near_copy_rate") is None else f" / {100 * row['near_copy_rate']:.1f}% / {100 * row['query_copy_rate']:.1f}%"
        return f"{100 * row['exact_copy_rate']:.1f}%{near}"
    return str(row[col])


def write_rows(rows: list[dict], json_path: str | None, csv_path: str | None) -> None:
    """The table's rows for scripts: a JSON list, and/or CSV with one header line."""
    import csv
    import json

    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))
    if csv_path and rows:
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def study_run_name(task: str, target: str, sites: str) -> str:
    """A run name that says what it holds, e.g. refusal-embedded-L0-L29."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(target).name if Path(target).exists() else target).strip("-").lower()
    return f"{task}-{slug}-{sites.replace(',', '+')}"


def llm_features(judge_cfg: JudgeConfig, stack: contextlib.ExitStack) -> Callable[[str, Scope], Feature]:
    """Features labelled by the judge (built-in LLM specs); starts the embedded judge
    server inside `stack` when no judge URL is configured."""
    from agent.judging.judge import JudgeClient
    from agent.judging.llm_feature import default_label_batch, llm_feature
    from features.llm_specs import SPECS

    client: list[JudgeClient] = []

    def factory(name: str, scope: Scope) -> Feature:
        if name not in SPECS:
            return get_feature(name, scope.run_dir, scope.data)  # python features need no judge
        if not client:
            if judge_cfg.base_url:
                client.append(JudgeClient(judge_cfg))
            else:
                from agent.judging.embedded_judge import EmbeddedJudge

                client.append(stack.enter_context(EmbeddedJudge(engine="batched")).client(judge_cfg))
        from agent.label import labelling_classes

        spec = SPECS[name]
        return llm_feature(client[0], spec.name, spec.question, spec.labels, spec.allow_null, spec.normaliser, progress=True,
                           batch=default_label_batch(client[0].config.engine),
                           classes=labelling_classes(spec, spec.labels, "auto", client[0].config.engine))

    return factory


class FCRJobConfig(BaseModel):
    """One `autoscope fcr` job, as the command's options give it: the run (or the task whose run
    is trained first when missing), the features and sites, and how queries are drawn, sampled,
    labelled and scored. Defaults are the command's."""

    features: list[str]
    sites: str = "L18"
    run: str | None = None
    runs_dir: str = "runs"
    task: str | None = None  # refusal, ioi or icl: the run is RUNS_DIR/TASK-TARGET-SITES, trained if missing
    target: str = "embedded"
    minutes: float = 8.0
    backbone: str = "embedded"
    prior_n: int = 10000
    labeller: str = "learned"  # learned or llm
    pool: int = 240  # with the llm labeller: prior prompts labelled for p0 and the empirical reference
    only: str | None = None
    queries: int = 40
    n: int = 16
    kernel: str = "hard"
    metric: str | None = None
    eps: float | None = None
    eps_quantile: float | None = None
    anchors: Literal["auto", "query", "ball"] = "auto"  # what samples are conditioned on (Scope.anchors_for)
    temperature: float | None = None  # None: the run's own per site (Scope.sampling_temperature)
    empirical: bool = True
    judge: JudgeConfig | None = None  # with the llm labeller (default: from the environment)
    json_out: str | None = None
    csv_out: str | None = None
    audit_set: str | None = None  # people's labels of generated samples: the labellers' accuracy where no grammar can tell
    audit_sheet: str | None = None  # write a random draw of accepted samples here, for people to label (the audit set's source)
    audit_sheet_size: int = 100
    seed: int = 0
    device: str | None = None  # None: the run's (auto for a run trained now)
    dtype: str | None = None

    @field_validator("features", mode="before")
    @classmethod
    def _split_names(cls, v: object) -> object:
        """`harmfulness,reason` as the command line writes it."""
        return [f.strip() for f in v.split(",") if f.strip()] if isinstance(v, str) else v

    @property
    def run_dir(self) -> Path:
        if self.task:
            return Path(self.runs_dir) / (self.run or study_run_name(self.task, self.target, self.sites))
        return Path(self.runs_dir) / (self.run or "default")

    @property
    def pool_limit(self) -> int | None:
        """Judge labels are dear: only the llm labeller samples the prior's pool (NOTES §10)."""
        return self.pool if self.labeller == "llm" else None


def check_job(cfg: FCRJobConfig) -> None:
    """Refuse unknown choices before anything is trained, sampled or labelled."""
    check_temperature(cfg.temperature)
    if cfg.labeller not in ("learned", "llm"):
        raise AutoscopeError(f"unknown labeller {cfg.labeller!r}: use learned or llm")
    check_kernel(cfg.kernel)
    if cfg.audit_set:
        labelled = load_audit_set(cfg.audit_set)
        if not set(labelled) & set(cfg.features):
            raise AutoscopeError(f"audit set {cfg.audit_set} labels {', '.join(sorted(labelled)) or 'no feature'}, none of "
                                 f"{', '.join(cfg.features)}: fill in the 'labels' of the features this job scores")
    if cfg.audit_sheet and Path(cfg.audit_sheet).exists():
        try:
            filled = sum(len(v) for v in load_audit_set(cfg.audit_sheet).values())
        except AutoscopeError:
            raise AutoscopeError(f"--audit-sheet {cfg.audit_sheet} exists and is not an audit sheet: give the new sheet another name") from None
        if filled:
            raise AutoscopeError(f"--audit-sheet {cfg.audit_sheet} already holds {filled} labels people gave: pass it as --audit-set, "
                                 "or give the new sheet another name")


def train_if_missing(cfg: FCRJobConfig, console: Console) -> Path:
    """The job's run. With `task`, the run for (task, target, sites) is trained now if it has no
    inverter yet (training resumes where an interrupted one stopped), and reused otherwise."""
    run_dir = cfg.run_dir
    if not cfg.task or (run_dir / "inverter" / "inverter.safetensors").exists():
        return run_dir
    from scope_core.api import PriorConfig, TargetConfig, TrainConfig, train

    console.print(f"[bold]training {run_dir}[/bold] for the {cfg.task} prior on {cfg.target} at {cfg.sites} ({cfg.minutes:g} min budget)")
    prior = PriorConfig(task=cfg.task, n=cfg.prior_n, heldout=min(500, cfg.prior_n // 10), seed=cfg.seed)
    train(TrainConfig(run=run_dir.name, runs_dir=cfg.runs_dir, target=TargetConfig(model=cfg.target, device=cfg.device or "auto", dtype=cfg.dtype or "auto"),
                      prior=prior, sites=cfg.sites,
                      backbone=cfg.backbone, minutes=cfg.minutes, seed=cfg.seed))
    return run_dir


def labellers(cfg: FCRJobConfig, scope: Scope, stack: contextlib.ExitStack) -> list[Feature]:
    """One labeller per feature: learned from the prior's labels, or (llm) the judge, started
    inside `stack` on first need when no judge URL is configured."""
    if cfg.labeller == "llm":
        factory = llm_features(cfg.judge or JudgeConfig.from_env(), stack)
        return [factory(f, scope) for f in cfg.features]
    return [get_feature(f, scope.run_dir, scope.data) for f in cfg.features]


def sample_site(cfg: FCRJobConfig, scope: Scope, site: Site, idx: list[int]) -> SampleRun:
    """Verified samples for every query at one site, at the site's ε, saved with the run (named
    as the study is, `option_suffix`). Every feature is scored on these same samples."""
    ec = scope.eps(site, cfg.metric, cfg.eps_quantile, cfg.eps)
    res = scope.sample(site, indices=idx, n=cfg.n, kernel=cfg.kernel, eps=ec, seed=cfg.seed, progress=True,  # type: ignore[arg-type]
                       anchors=cfg.anchors, temperature=cfg.temperature)
    scope.save_json(f"sample_{site.name}{option_suffix(cfg)}.json", res)
    return res


def score_site(cfg: FCRJobConfig, scope: Scope, site: Site, res: SampleRun, feats: list[Feature],
               where: Callable[[dict], bool] | None) -> list[FCRReport]:
    """FCR, p0, κ and the empirical reference of every feature on one site's samples."""
    return [scope.score(f, f.name, res, site, empirical=cfg.empirical, feature_info={k: v for k, v in f.info.items() if k != "failures"},
                        pool_limit=cfg.pool_limit, seed=cfg.seed, where=where) for f in feats]


def present(cfg: FCRJobConfig, reports: list[FCRReport], feats: list[Feature], n_queries: int, console: Console) -> None:
    """The table, then what a reader needs to read it: the copy columns, the two κ, each learned
    labeller's accuracy, and where label noise can explain a generator-minus-empirical gap."""
    t = Table(title=f"FCR on {n_queries} held-out queries{f' ({cfg.only})' if cfg.only else ''}, {cfg.n} samples each, kernel {cfg.kernel}")
    for col in TABLE_COLUMNS:
        t.add_column(col)
    for row in report_rows(reports):
        t.add_row(*[_cell(row, col) for col in TABLE_COLUMNS])
    console.print(t)
    console.print("[dim]copies: exact copies of prompts the generator learned from / within one word edit of one / "
                  "within one word edit of the query.[/dim]")
    console.print("[dim]κ is against the marginal chance level (all prior prompts, an undefined label never matching); "
                  "the conditional ones (generator and empirical rows) are within the prior prompts that pass --only and on which the "
                  "feature is defined. CIs are BCa bootstrap intervals widened for few queries (κ's resamples the queries "
                  "and the chance level's prompts together).[/dim]")
    for f in feats:
        if f.info.get("heldout_accuracy") is not None:
            console.print(f"[dim]{f.name}: learned labeller, held-out accuracy {f.info['heldout_accuracy']:.3f} (on prior prompts)[/dim]")
    audited = {r.feature for r in reports if r.labeller_audit is not None and r.labeller_audit.accuracy is not None}
    for f in feats:
        if f.info.get("heldout_accuracy") is not None and f.name not in audited:
            console.print(f"[yellow]{f.name}: the labeller's accuracy on generated samples is not estimated (no grammar for this "
                          f"prior reads them back): write a sheet with --audit-sheet FILE, label it, and pass it back with "
                          f"--audit-set FILE before reading a small generator-minus-empirical gap[/yellow]")
    for r in reports:
        if r.labeller_audit is not None:
            console.print(f"[dim]{r.site} {r.labeller_audit.line()}[/dim]")
            if r.labeller_audit.explains(r.gap):
                console.print(f"[yellow]{r.site} {r.feature}: the generator-minus-empirical gap {r.gap:+.3f} is within what label noise "
                              f"on generated samples can explain (error up to {r.labeller_audit.max_error:.3f}); do not read it as a "
                              f"difference between the two[/yellow]")


def with_audit_set(reports: list[FCRReport], feats: list[Feature], path: str) -> list[FCRReport]:
    """The reports with each labeller's accuracy on the audit set's samples, where the set labels
    that feature. Given explicitly, it replaces the grammar's audit (the user's ground truth)."""
    pairs = load_audit_set(path)
    audits = {}
    for f in feats:
        if f.name in pairs:
            texts = [t for t, _ in pairs[f.name]]
            audits[f.name] = audit_on_set(f.name, pairs[f.name], f(texts), f"audit set {Path(path).name}")
    return [r.model_copy(update={"labeller_audit": audits[r.feature]}) if r.feature in audits else r for r in reports]


def write_audit_sheet(sampled: dict[str, SampleRun], feats: list[Feature], path: Path, size: int, seed: int) -> int:
    """A random draw of `size` distinct accepted samples over the sampled sites, one JSON line
    each with the site, its query and an empty label per learned feature: what people fill in to
    make the audit set. The labeller's own labels are left out so they cannot lead the reader."""
    learned = [f.name for f in feats if f.info.get("heldout_accuracy") is not None] or [f.name for f in feats]
    seen: dict[str, tuple[str, str]] = {}
    for site, run in sampled.items():
        for q in run.queries:
            for smp in q.samples:
                if smp.accepted:
                    seen.setdefault(smp.text, (site, q.query))
    texts = sorted(seen)
    chosen = random.Random(seed).sample(texts, min(size, len(texts)))
    if not chosen:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for text in chosen:
            site, query = seen[text]
            fh.write(json.dumps({"text": text, "site": site, "query": query, "labels": dict.fromkeys(learned, "")}) + "\n")
    return len(chosen)


def option_suffix(cfg: FCRJobConfig) -> str:
    """`_eps0.1_T0.75`…: every option given that changes what is measured (ε, its quantile, metric,
    kernel, anchors, temperature) or draws it anew (seed; not the samples a query, which only refine
    it). Why: a study at ε 0.05 and one at ε 0.15 on the same run are two results, and the second
    must not overwrite the first; a study at the defaults keeps the plain names it always had. An
    option given at the value the run would have used anyway still adds its part (a second file
    with the same numbers, never a lost one)."""
    suffix = ""
    defaults = FCRJobConfig.model_fields
    for field, tag in (("eps", "eps"), ("eps_quantile", "q"), ("metric", ""), ("kernel", ""), ("anchors", "anchors-"),
                       ("temperature", "T"), ("seed", "seed")):
        value = getattr(cfg, field)
        if value is not None and value != defaults[field].default:
            suffix += f"_{tag}{value:g}" if isinstance(value, float) else f"_{tag}{value}"
    return suffix


def study_name(cfg: FCRJobConfig) -> str:
    """The results file's stem: features, sites, the --only filter and the labeller, then
    `option_suffix`."""
    only = cfg.only
    return ("fcr_" + "_".join(cfg.features) + "_" + cfg.sites.replace(",", "+") + ("_" + only.replace("=", "-") if only else "")
            + ("_llm" if cfg.labeller == "llm" else "") + option_suffix(cfg))


def save_results(cfg: FCRJobConfig, scope: Scope, reports: list[FCRReport], idx: list[int], n_sites: int, console: Console) -> None:
    """The reports as JSON under the run's results/, and the FCR/κ-by-site plot when there are
    several sites."""
    only = cfg.only
    name = study_name(cfg)
    scope.save_json(name + ".json", {"reports": [r.model_dump() for r in reports], "only": only, "queries": idx})
    if n_sites > 1:
        png = plot_by_layer(reports, scope.run_dir / "results" / (name + ".png"), f"{scope.run_dir.name}: FCR by site ({only or 'all queries'})")
        console.print(f"plot: {png}")


def run_fcr(cfg: FCRJobConfig, console: Console, err: Console | None = None) -> list[FCRReport]:
    """The `fcr` job: train the run if missing, sample every site once, label and score every
    feature on the same samples, present, save, and write the rows for scripts (--json/--csv).
    Progress of a training goes to `err` (default: `console`)."""
    check_job(cfg)
    run_dir = train_if_missing(cfg, err or console)
    where = only_filter(cfg.only)
    with contextlib.ExitStack() as stack:
        scope = Scope(run_dir, device=cfg.device, dtype=cfg.dtype)
        sites = [scope.site(s.name) for s in parse_sites(cfg.sites, scope.target.n_layers, scope.target.n_heads)]
        feats = labellers(cfg, scope, stack)
        idx = heldout_queries(scope, cfg.only, cfg.queries)
        if scope.data.valid_is_heldout:
            console.print(f"[yellow]{run_dir} was trained before runs kept a separate early-stopping split: it chose its "
                          "checkpoint on the held-out prompts these FCR queries come from. Retrain it (a new --run name) "
                          "for queries no training decision has seen.[/yellow]")
        reports: list[FCRReport] = []
        sampled: dict[str, SampleRun] = {}
        for site in sites:
            sampled[site.name] = sample_site(cfg, scope, site, idx)
            reports += score_site(cfg, scope, site, sampled[site.name], feats, where)
        if cfg.audit_set:
            reports = with_audit_set(reports, feats, cfg.audit_set)
        if cfg.audit_sheet:
            n = write_audit_sheet(sampled, feats, Path(cfg.audit_sheet), cfg.audit_sheet_size, cfg.seed)
            console.print(f"audit sheet: {n} accepted samples in {cfg.audit_sheet}; fill in each 'labels' value (null where the "
                          f"feature is undefined) and pass the file back with --audit-set" if n else
                          "[yellow]no audit sheet written: no sample was accepted at this ε (try a larger --eps or more --queries)[/yellow]")
        present(cfg, reports, feats, len(idx), console)
        save_results(cfg, scope, reports, idx, len(sites), console)
    write_rows(report_rows(reports), cfg.json_out, cfg.csv_out)
    return reports
