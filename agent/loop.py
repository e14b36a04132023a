"""`autoscope explore`: the automated hypothesis loop.

Per round: show the judge a few queries with their verified samples and every scored
hypothesis so far (FCR ± CI, p0, κ, counterexamples); take its new hypotheses; compile
each (python in the sandbox, or an LLM-labelled question); label queries and accepted
samples; score FCR at the site over a fixed query set D; append the result to the run
log. Stops when `budget` hypotheses are scored, when the judge says it is done, or when
the best κ has not improved for `patience` rounds. A killed run resumes: finished
hypotheses are read back from the log, and the judge cache answers the repeated prompts.

Who proposes lives beside the loop: `agent.evidence` mines hypotheses from the samples (no
LLM), `agent.judging.proposer` asks the judge; `Explorer` only decides which to ask when.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime
from collections.abc import Callable
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, Field
from rich.console import Console
from rich.markup import escape

from scope_core.api import AutoscopeError, SampleRun, Scope, fcr, generator_weights, parse_site, parse_sites

from . import evidence
from .confirm import permutation_pvalues, permuted_kappas, search_null, split_queries
from .hypotheses import (
    CompiledCode,
    Counterexample,
    ExampleQuery,
    Hypothesis,
    LabelledSample,
    Proposal,
    Score,
    ScoredHypothesis,
    SearchNull,
    kappa_text,
    ranked,
    verdict,
)
from .judging.judge import JudgeClient, JudgeConfig, JudgeFailure, JudgeUnavailable
from .judging.llm_feature import default_label_batch, llm_feature
from .judging.proposer import SYSTEM, JudgeProposer
from .prompts import messages
from .runlog import RunLog
from .sandbox import SandboxLimits, run_feature

MAX_IDLE_ROUNDS = 4  # consecutive rounds without a new (not yet tested) hypothesis before the loop stops
MAX_JUDGE_FAILURES = 3  # consecutive rounds without a usable proposal before the loop stops


def idea_key(h: Hypothesis) -> tuple:
    """What makes two hypotheses the same idea: for a judge-labelled question, the question
    and its label set (that is what gets measured); otherwise the statement. Names and
    code drafts vary between proposals of one idea."""

    def norm(x: str | None) -> str:
        return " ".join((x or "").lower().split())

    if h.kind == "llm" and h.question:
        return ("llm", norm(h.question), tuple(sorted(norm(lab) for lab in h.labels or [])))
    return (h.kind, norm(h.statement))


class ExploreConfig(BaseModel):
    run: str = "default"
    runs_dir: str = "runs"
    site: str = "L18"
    sites: str | None = Field(None, description="also score the top hypotheses at these sites")
    budget: int = 20
    per_round: int = 3
    show_queries: int = 3
    show_samples: int = 6
    queries: int = Field(48, description="held-out queries in D, split into exploration and confirmation halves")
    samples: int = 8
    confirm_share: float = Field(0.5, gt=0, lt=1, description="share of D kept for confirmation, never shown to a proposer")
    proposer: Literal["auto", "judge", "evidence"] = Field(
        "auto", description="evidence: hypotheses mined from the samples, no LLM; judge: the judge proposes; auto: evidence first, then the judge")
    only: str | None = None
    eps: float | None = None
    eps_quantile: float | None = None
    kernel: str = "hard"
    anchors: Literal["auto", "query", "ball"] = Field(
        "auto", description="what samples are conditioned on: the query's activation, draws from its ε-ball, or auto "
        "(a share 1 − m of samples on the ball, m the site's neighbour mix; Scope.ball_share)")
    temperature: float | None = Field(
        None, description="sampling temperature at every site explored; None: each site's own from training "
        "(Scope.sampling_temperature: 0.75 on loose ε-balls, else 1)")
    patience: int = 3
    top_k_other_sites: int = 3
    prior_for_p0: int = 400
    prior_for_p0_llm: int = 48
    screen_queries: int = Field(8, description="judge-labelled hypotheses are screened on this many queries first; "
                                "only those significantly above chance are scored on all of D (0: no screening)")
    screen_samples: int = Field(4, description="samples per query in the screen")
    stop_when_done: bool = Field(True, description="stop when the judge says no hypothesis is left (off: spend the whole budget)")
    minutes: float | None = Field(6.0, ge=0, description="wall-clock budget of the proposing loop in this process: past it no new "
                                  "round starts and no further hypothesis is scored once something is scored (confirmation still runs); "
                                  "None or 0: no limit. A weak "
                                  "judge that never says it is done must not hold a 2-core machine for a quarter of an hour")
    label_batch: int | None = Field(None, description="inputs per judge labelling request "
                                    "(default: 8 for the CPU llama.cpp judge, 1 for servers that batch requests themselves)")
    seed: int = 0
    explore_id: str | None = None
    judge: JudgeConfig = JudgeConfig()


class ExploreResult(BaseModel):
    explore_dir: str
    ranking: list[ScoredHypothesis]
    timing: dict[str, float]
    stopped: str
    site: str = ""
    null: SearchNull | None = None

    @property
    def verdict(self) -> str:
        return verdict(self.site, self.ranking, self.null)

    @property
    def failure(self) -> str | None:
        """Why this run did not do its job (None when it scored at least one hypothesis and
        the judge did not leave mid-run); the CLI exits non-zero with it."""
        if self.stopped.startswith("judge unavailable"):
            return f"{self.stopped}. Everything scored so far is saved: rerun with --resume {Path(self.explore_dir).name}"
        if not any(h.status == "scored" for h in self.ranking):
            return f"no hypothesis was scored ({self.stopped}); the run log is in {self.explore_dir}"
        return None


def only_filter(only: str | None):
    """`harmful` or `key=value` -> a predicate on a prompt's labels (None: no filter)."""
    if not only:
        return None
    key, _, value = only.partition("=")
    if not value:
        key, value = "harmfulness", key
    return lambda labels: labels.get(key) == value


PROPOSERS = {"auto": "auto", "none": "evidence", "only": "judge"}  # `explore --judge` -> ExploreConfig.proposer


def proposer_for(judge_mode: str) -> str:
    """`--judge auto|none|only` as the loop's proposer (auto: evidence first, then the judge;
    none: mined from the samples, no LLM; only: the judge alone)."""
    if judge_mode not in PROPOSERS:
        raise AutoscopeError(f"unknown --judge {judge_mode!r}: use auto, none (no LLM) or only (the judge alone proposes)")
    return PROPOSERS[judge_mode]


def present_result(res: ExploreResult, site: str, console: Console) -> None:
    """The ranking as a table, the verdict, the time per phase and where the report is."""
    from .report import ranking_table

    console.print(ranking_table(res.ranking, res.null, site, res.stopped))
    console.print(res.verdict)
    console.print("time per phase: " + ", ".join(f"{k} {v:.1f}" for k, v in res.timing.items()))
    console.print(f"report: {res.explore_dir}/report.md and report.html (id {Path(res.explore_dir).name}; --resume it to continue)")


def check_kernel(kernel: str) -> None:
    """Refuse an unknown FCR kernel with the choices named (sample and fcr share it)."""
    if kernel not in ("hard", "gaussian"):
        raise AutoscopeError(f"unknown kernel {kernel!r}: use hard or gaussian")


def check_temperature(temperature: float | None) -> None:
    """Refuse a negative sampling temperature with the option named (sample, fcr and explore
    share it); None is the run's own."""
    if temperature is not None and temperature < 0:
        raise AutoscopeError(f"--temperature must be ≥ 0 (0 is greedy, 1 the generator's own distribution), not {temperature}")


def heldout_queries(scope: Scope, only: str | None, limit: int) -> list[int]:
    """The query set D: the first `limit` held-out prompts that pass `--only` (an error, with the
    filter named, when none does)."""
    idx = scope.heldout_indices(only_filter(only), limit)
    if not idx:
        raise AutoscopeError(f"no held-out prompt matches --only {only}")
    return idx


class Explorer:
    def __init__(self, cfg: ExploreConfig, judge: JudgeClient | None, log: RunLog, console: Console | None = None, scope: Scope | None = None,
                 labeller: JudgeClient | None = None):
        self.cfg, self.judge, self.log = cfg, judge, log
        self.labeller = labeller or judge  # answers the LLM-labelled features; the judge proposes and compiles (None: no LLM)
        self._evidence: list[evidence.Candidate] | None = None
        self._refining_done = False
        self.null: SearchNull | None = None
        self.console = console or Console(stderr=True)
        self.scope = scope or Scope(Path(cfg.runs_dir) / cfg.run)
        self.timing: dict[str, float] = {"sampling_s": 0.0, "judge_s": 0.0, "labelling_s": 0.0, "scoring_s": 0.0}
        self.scored: list[ScoredHypothesis] = [ScoredHypothesis.model_validate(r["hypothesis"]) for r in log.read("hypotheses")]
        # scores at other sites from an earlier session, so a resumed run does not label them again
        earlier = {r["id"]: r["scores"] for r in log.read("other_sites")}
        for h in self.scored:
            h.other_sites = {site: Score.model_validate(v) for site, v in earlier.get(h.id, {}).items()} | h.other_sites
        self._sample_runs: dict[str, SampleRun] = {}

    # -- the query set D and its preimages, sampled once per site and kept ----------
    def sample_run(self, site_name: str) -> SampleRun:
        if site_name in self._sample_runs:
            return self._sample_runs[site_name]
        cached = self.log.read_json(f"samples_{site_name}.json")
        if cached is not None:
            run = SampleRun.model_validate(cached)
        else:
            t = time.perf_counter()
            site = self.scope.site(site_name)
            idx = heldout_queries(self.scope, self.cfg.only, self.cfg.queries)
            eps = self.scope.eps(site, None, self.cfg.eps_quantile, self.cfg.eps)
            run = self.scope.sample(site, indices=idx, n=self.cfg.samples, kernel=self.cfg.kernel,  # type: ignore[arg-type]
                                    eps=eps, seed=self.cfg.seed, progress=True, anchors=self.anchors_at(site_name),
                                    temperature=self.cfg.temperature)
            self.log.write_json(f"samples_{site_name}.json", run.model_dump())
            self.timing["sampling_s"] += time.perf_counter() - t
        self._sample_runs[site_name] = run
        return run

    def anchors_at(self, site_name: str) -> str:
        """What a site sampled now is anchored on: the run's `anchors`, except in a run resumed
        from before `auto` drew a share of its samples from the ball (NOTES §49). There the
        explored site's kept samples are all on the query although `auto` would now put some on
        the ball, and the other sites follow the rule those samples were drawn under (the
        ball where the generator saw noise alone, else the query), so that a finding is never
        half one anchoring and half another."""
        if self.cfg.anchors != "auto" or site_name == self.cfg.site:
            return self.cfg.anchors
        kept = self.log.read_json(f"samples_{self.cfg.site}.json")
        before_shares = (kept is not None and kept.get("anchors", "query") == "query" and kept.get("anchor_share") is None
                         and self.scope.ball_share(self.scope.site(self.cfg.site), "auto") > 0)
        if not before_shares:
            return "auto"
        return "ball" if self.scope.neighbour_mix(parse_site(site_name)) == 0 else "query"

    def part(self, which: str) -> SampleRun:
        """The exploration or confirmation half of D at the explored site (disjoint, seeded)."""
        explore_run, confirm_run = split_queries(self.sample_run(self.cfg.site), self.cfg.seed, self.cfg.confirm_share)
        return explore_run if which == "explore" else confirm_run

    def prior_indices(self, n: int) -> list[int]:
        """The prior prompts p0 is taken over: one seeded draw from the training split, the
        same for every hypothesis (a smaller n is a prefix of a larger one's draw order)."""
        import random

        data = self.scope.data
        return random.Random(self.cfg.seed).sample(data.train, min(n, len(data.train)))

    def prior_texts(self, n: int) -> list[str]:
        return [self.scope.data.examples[i].text for i in self.prior_indices(n)]

    # -- evidence -----------------------------------------------------------------
    def evidence(self) -> list[evidence.Candidate]:
        """Candidates mined from the exploration queries, screened by their κ there (kept in
        the log, so a resume proposes the same)."""
        if self._evidence is None:
            saved = self.log.read_json("evidence.json")
            if saved is not None:
                self._evidence = [evidence.Candidate(**c) for c in saved]
            else:
                run, prior = self.part("explore"), self.prior_texts(self.cfg.prior_for_p0)
                self._evidence = evidence.screen(evidence.candidates(run, prior), run, prior, self._run_code, seed=self.cfg.seed)
                self.log.write_json("evidence.json", [c.__dict__ for c in self._evidence])
        return self._evidence

    def _run_code(self, code: str, texts: list[str]) -> list:
        """Feature code run in the sandbox (evidence templates and judge code alike)."""
        res = run_feature(code, texts, limits=SandboxLimits(cpu_seconds=30, wall_seconds=60))
        if not res.ok:
            raise ValueError(res.error)
        return res.labels

    def refined_proposal(self, seen: set) -> Proposal | None:
        """Revisions of the two best Python hypotheses so far (merge the values their samples
        mix; read the two together), kept only where they beat their parents on the
        exploration queries; None when no revision does."""
        if self._refining_done:
            return None
        pool = sorted((h for h in self.scored if h.status == "scored" and h.hypothesis.kind == "python" and h.hypothesis.code
                       and h.score and h.score.kappa is not None), key=lambda h: -(h.score.kappa or 0.0))  # type: ignore[union-attr]
        parents = [evidence.Candidate(h.hypothesis.name, h.hypothesis.statement, h.hypothesis.code or "", "tested",
                                      kappa=h.score.kappa)  # type: ignore[union-attr]
                   for h in pool[:2]]
        run, prior = self.part("explore"), self.prior_texts(self.cfg.prior_for_p0)
        tried = [r for r in evidence.refinements(parents, run, self._run_code) if idea_key(r.hypothesis()) not in seen]
        screened = evidence.screen(tried, run, prior, self._run_code, seed=self.cfg.seed) if tried else []
        kept = evidence.kept_refinements(screened, {c.name: c for c in parents})
        for r in tried:
            self.log.append("events", {"refinement": r.name, "parents": list(r.parents), "kappa": r.kappa, "kept": r in kept})
        if not kept:
            self._refining_done = True
            return None
        return Proposal(hypotheses=[c.hypothesis() for c in kept[: self.cfg.per_round]], done=False)

    def evidence_proposal(self, seen: set) -> Proposal | None:
        """The next `per_round` evidence candidates not yet tested, above chance on the
        exploration queries; None when none is left."""
        left = [c for c in self.evidence() if (c.kappa or 0.0) > 0.0 and idea_key(c.hypothesis()) not in seen]
        if not left:
            return None
        return Proposal(hypotheses=[c.hypothesis() for c in left[: self.cfg.per_round]], done=False)

    # -- compile ------------------------------------------------------------------
    @property
    def label_batch(self) -> int:
        if self.cfg.label_batch is not None:
            return self.cfg.label_batch
        return default_label_batch(self.labeller.config.engine)

    def _statement_feature(self, h: Hypothesis):
        """Test the hypothesis's statement itself: the judge answers yes/no per input."""
        if self.labeller is None:
            raise ValueError("no judge is configured to label the statement")
        return llm_feature(self.labeller, h.name, f"Does this statement hold for the text? Statement: {h.statement}", ["yes", "no"],
                           allow_null=False, batch=self.label_batch)

    def _labeller(self, h: Hypothesis):
        """A function texts -> labels for the hypothesis, or raise with the reason."""
        if h.kind == "llm":
            if self.labeller is None:
                raise ValueError("an llm hypothesis needs a judge to label it, and none is configured")
            if h.question:
                return llm_feature(self.labeller, h.name, h.question, h.labels, batch=self.label_batch)
            if not h.statement.strip():
                raise ValueError("an llm hypothesis needs a question or a statement")
            return self._statement_feature(h)
        code = h.code
        error = None
        for attempt in range(2):
            if (not code or error) and self.judge is None:
                raise ValueError(f"the code failed and no judge is configured to rewrite it: {error or 'no code'}")
            if not code or error:
                t = time.perf_counter()
                examples = [q.query for q in self.part("explore").queries[:4]]
                try:
                    code = self.judge.ask(messages("compile", system=SYSTEM, hypothesis=h, error=error, examples=examples), CompiledCode,
                                          max_tokens=600, purpose="compile").code
                except JudgeUnavailable:
                    self.timing["judge_s"] += time.perf_counter() - t
                    raise
                except JudgeFailure as e:
                    self.timing["judge_s"] += time.perf_counter() - t
                    raise ValueError(f"could not compile: {e.reason}") from None
                self.timing["judge_s"] += time.perf_counter() - t
                h.code = code
            probe = run_feature(code, [q.query for q in self.part("explore").queries[:4]], workdir=self.log.root,
                                limits=SandboxLimits(cpu_seconds=5, wall_seconds=20))
            if probe.ok:
                final = code

                def fn(texts: list[str]) -> list[str | None]:
                    res = run_feature(final, texts, workdir=self.log.root, limits=SandboxLimits(cpu_seconds=30, wall_seconds=60))
                    if not res.ok:
                        raise ValueError(res.error)
                    return res.labels

                return fn
            error = probe.error
        raise ValueError(f"compiled code failed: {error}")

    # -- score --------------------------------------------------------------------
    def score(self, h: Hypothesis, labeller, site_name: str, n_queries: int | None = None, n_samples: int | None = None,
              judge_labelled: bool | None = None, prior_share: float = 1.0, part: str = "explore") -> tuple[Score, list[Counterexample], list[ExampleQuery]]:
        """FCR, κ (with its CI) and counterexamples on one part of D at `site_name`: the
        exploration or confirmation queries at the explored site, all of D elsewhere."""
        run = self.part(part) if site_name == self.cfg.site and part in ("explore", "confirm") else self.sample_run(site_name)
        if n_queries is not None or n_samples is not None:
            run = run.model_copy(update={"queries": [q.model_copy(update={"samples": q.samples[:n_samples]}) for q in run.queries[:n_queries]]})
        data = self.scope.data
        judge_labelled = h.kind == "llm" if judge_labelled is None else judge_labelled
        n_prior = self.cfg.prior_for_p0_llm if judge_labelled else self.cfg.prior_for_p0
        prior_idx = self.prior_indices(n_prior)
        prior_idx = prior_idx[: max(1, round(prior_share * len(prior_idx)))]  # a screen uses the first part of the same draw
        prior_texts = [data.examples[i].text for i in prior_idx]
        texts = {q.query for q in run.queries} | {s.text for q in run.queries for s in q.samples if s.weight > 0} | set(prior_texts)
        t = time.perf_counter()
        uniq = sorted(texts)
        labels = dict(zip(uniq, labeller(uniq)))
        self.timing["labelling_s"] += time.perf_counter() - t
        t = time.perf_counter()
        q_lab = [labels[q.query] for q in run.queries]
        s_lab = [[labels.get(s.text) if s.weight > 0 else None for s in q.samples] for q in run.queries]
        w = [generator_weights(q.samples, run.kernel) for q in run.queries]
        res = fcr(q_lab, s_lab, w, [labels[t] for t in prior_texts], seed=self.cfg.seed)
        emp = None
        if part == "confirm" and run.queries and all(q.index is not None for q in run.queries):
            # the generator-free reference on the same queries: prior prompts within ε of each
            # query's activation (all of the prior for a Python feature; the p0 draw for a judge's)
            pool_idx = list(range(len(data.examples))) if not judge_labelled else sorted(prior_idx)
            pool_texts = [data.examples[i].text for i in pool_idx]
            missing = sorted(set(pool_texts) - labels.keys())
            if missing:
                t2 = time.perf_counter()
                labels.update(zip(missing, labeller(missing)))
                self.timing["labelling_s"] += time.perf_counter() - t2
            emp = self.scope.empirical(q_lab, run, self.scope.site(site_name), pool_idx, [labels[t] for t in pool_texts],
                                       [labels[t] for t in prior_texts], seed=self.cfg.seed)
        counter = []
        for q, ql, sl in zip(run.queries, q_lab, s_lab):
            if ql is None:
                continue
            for s, lab in zip(q.samples, sl):
                if s.weight > 0 and lab != ql:
                    counter.append(Counterexample(query=q.query, query_label=ql, sample=s.text, sample_label=lab, distance=s.distance))
        counter.sort(key=lambda c: c.distance)
        examples = [
            ExampleQuery(query=q.query, label=ql, samples=[
                LabelledSample(text=s.text, distance=s.distance, accepted=s.accepted, label=lab)
                for s, lab in sorted(zip(q.samples, sl), key=lambda x: x[0].distance)[:6]
            ])
            for q, ql, sl in list(zip(run.queries, q_lab, s_lab))[:3]
        ]
        self.timing["scoring_s"] += time.perf_counter() - t
        permuted = (permuted_kappas(q_lab, s_lab, w, [labels[t] for t in prior_texts], seed=self.cfg.seed)
                    if part == "confirm" and res.fcr is not None else None)
        score = Score(**res.model_dump(include=set(Score.model_fields)),  # the FCR figures a Score keeps
                      permuted_kappas=permuted, temperature=run.temperature,
                      n_values=len({labels[t] for t in prior_texts if labels[t] is not None}),
                      n_query_values=len({lab for lab in q_lab if lab is not None}),
                      empirical_fcr=emp.fcr if emp else None, empirical_kappa=emp.kappa if emp else None,
                      empirical_kappa_ci_low=emp.kappa_ci_low if emp else None, empirical_kappa_ci_high=emp.kappa_ci_high if emp else None)
        return score, counter[:5], examples

    def evaluate(self, h: Hypothesis, hid: int, round_: int, source: str = "judge") -> ScoredHypothesis:
        note = None
        try:
            labeller = self._labeller(h)
        except ValueError as e:
            if h.kind != "python" or not h.statement.strip() or self.labeller is None:  # no judge to label the statement instead
                return ScoredHypothesis(id=hid, round=round_, site=self.cfg.site, hypothesis=h, status="compile_failed", error=str(e), source=source)
            # the idea may be sound even if its code is not: test the statement with the judge
            note = f"code failed ({str(e)[:200]}); the statement was labelled by the judge instead"
            labeller = self._statement_feature(h)
        try:
            screen = self.cfg.screen_queries
            by_judge = h.kind == "llm" or note is not None  # the statement fallback is judge-labelled too
            if by_judge and 0 < screen < len(self.part("explore").queries):
                # Judge labels are the loop's dearest resource: a hypothesis no better than
                # chance on a few queries is not worth labelling all of D. Labels are cached,
                # so a promoted hypothesis pays only for the queries it has not seen.
                score, counter, examples = self.score(h, labeller, self.cfg.site, n_queries=screen, n_samples=self.cfg.screen_samples,
                                                      judge_labelled=True, prior_share=0.5)
                if score.fcr is not None and score.p0 is not None and not score.ci_low > score.p0:  # type: ignore[operator]
                    note = (note + "; " if note else "") + (
                        f"screened out: on the first {screen} queries × {self.cfg.screen_samples} samples its FCR CI "
                        f"[{score.ci_low:.3f}, {score.ci_high:.3f}] did not clear chance (p0 {score.p0:.3f}), so it was not scored on all of D")
                    return ScoredHypothesis(id=hid, round=round_, site=self.cfg.site, hypothesis=h, status="scored", score=score,
                                            counterexamples=counter, examples=examples, note=note, source=source, screened_out=True)
            score, counter, examples = self.score(h, labeller, self.cfg.site, judge_labelled=by_judge)
        except JudgeUnavailable:
            raise  # says nothing about the hypothesis: the run stops and a resume scores it
        except (ValueError, JudgeFailure) as e:
            return ScoredHypothesis(id=hid, round=round_, site=self.cfg.site, hypothesis=h, status="label_failed", error=str(e), source=source)
        confirmation, confirmation_error = self.confirm_score(h, labeller, by_judge) if score.fcr is not None else (None, None)
        status = "scored" if score.fcr is not None else "undefined"
        return ScoredHypothesis(id=hid, round=round_, site=self.cfg.site, hypothesis=h, status=status, score=score, counterexamples=counter,
                                examples=examples, note=note,
                                error=None if status == "scored" else "the feature was undefined on every query or no query had an accepted sample",
                                confirmation=confirmation, confirmation_error=confirmation_error, source=source)

    def confirm_score(self, h: Hypothesis, labeller: Callable[[list[str]], list], by_judge: bool) -> tuple[Score | None, str | None]:
        """The hypothesis scored on the confirmation queries, apart from its exploration score:
        a failure there (a label the judge would not give, code that raises on a confirmation
        text) leaves the exploration score standing and is kept where no prompt shows it — its
        message can quote a confirmation text, which the proposer must never see."""
        try:
            confirmation, _, _ = self.score(h, labeller, self.cfg.site, judge_labelled=by_judge, part="confirm")
        except JudgeUnavailable:
            raise
        except (ValueError, JudgeFailure) as e:
            return None, f"{type(e).__name__}: {e}"
        return confirmation, None

    # -- the loop -------------------------------------------------------------------
    def propose(self, round_: int, idle: int = 0, repeats: list[str] | None = None) -> Proposal:
        """The judge's proposal for this round (`agent.judging.proposer`), logged. After rounds
        that brought nothing new (`idle`), the judge is told which of its ideas were repeats
        and sampled warmer."""
        if self.judge is None:
            raise JudgeFailure("no judge is configured to propose")
        proposer = JudgeProposer(self.judge, self.cfg.per_round, self.cfg.show_queries, self.cfg.show_samples)
        run = self.part("explore")  # a proposer never sees confirmation queries
        site = self.scope.site(self.cfg.site)
        prop = proposer.propose(round_, run, site, self.scored, evidence.evidence_table(self.evidence(), limit=6),
                                idle=idle, repeats=repeats, timing=self.timing)
        self.log.append("rounds", {"round": round_, "proposal": prop.model_dump(), "source": "judge"})
        return prop

    def n_scored(self) -> int:
        return sum(h.status == "scored" for h in self.scored)

    def best_kappa(self, upto_round: int | None = None) -> float:
        ks = [h.score.kappa for h in self.scored  # a screened-out κ is from a few queries: no progress to count
              if h.score and h.score.kappa is not None and not h.screened_out and (upto_round is None or h.round <= upto_round)]
        return max(ks) if ks else float("-inf")

    def _save_state(self, **state: object) -> None:
        """The loop's own state after each round, so a resume asks the judge exactly what an
        uninterrupted run would have asked (its repeats, idle rounds and temperature)."""
        self.log.write_json("state.json", state)

    def _resume_point(self) -> dict:
        state = self.log.read_json("state.json")
        if state is not None:
            return state
        # a log from before state.json: the last logged round is redone from its logged proposal
        rounds = self.log.read("rounds")
        last = max([h.round for h in self.scored] + [r["round"] for r in rounds], default=0)
        return {"round": last}

    def run(self) -> str:
        cfg = self.cfg
        state = self._resume_point()
        if state.get("stopped"):
            return str(state["stopped"])  # a finished run: nothing is asked again
        round_ = int(state.get("round", 0))  # type: ignore[call-overload]
        stale, idle, duplicates, failures = (int(state.get(k, 0)) for k in ("stale", "idle", "duplicates", "failures"))  # type: ignore[call-overload]
        repeats: list[str] = list(state.get("repeats", []))  # type: ignore[call-overload]  # the last round's repeated ideas
        logged = {r["round"]: r for r in self.log.read("rounds")}
        done_keys = {(h.round, h.id) for h in self.scored}
        attempts_cap = 2 * cfg.budget + 4
        seen = {idea_key(h.hypothesis) for h in self.scored}

        def save(stopped: str | None = None) -> None:
            self._save_state(round=round_, stale=stale, idle=idle, duplicates=duplicates, failures=failures, repeats=repeats, stopped=stopped)

        stopped = "budget"
        t_start = time.perf_counter()

        def out_of_time() -> bool:
            """Past `--minutes`, once something is scored (a budget never leaves nothing to rank)."""
            return bool(cfg.minutes and self.n_scored() and time.perf_counter() - t_start >= cfg.minutes * 60)

        while self.n_scored() < cfg.budget:
            if out_of_time():
                stopped = f"time budget ({cfg.minutes:g} min) spent"
                break
            if len(self.scored) + duplicates >= attempts_cap:
                stopped = "too many failed hypotheses"
                break
            prop: Proposal | None = None
            source = "judge"
            if round_ in logged:
                # a killed run's last round: its proposal is in the log, so it is finished, not re-asked
                prop = Proposal.model_validate(logged[round_]["proposal"])
                source = logged[round_].get("source", "judge")
                self.log.append("events", {"round": round_, "resumed": f"round {round_} continued from its logged proposal"})
            elif cfg.proposer in ("auto", "evidence"):
                prop, source = self.evidence_proposal(seen), "evidence"
                if prop is None:
                    prop, source = self.refined_proposal(seen), "refined"
                if prop is not None:
                    self.log.append("rounds", {"round": round_, "proposal": prop.model_dump(), "source": source})
                elif cfg.proposer == "evidence" or self.judge is None:
                    stopped = "every evidence candidate above chance and every improving refinement was tested"
                    break
            if prop is None:
                source = "judge"
                try:
                    prop = self.propose(round_, idle, repeats)
                except JudgeUnavailable as e:
                    self.log.append("events", {"round": round_, "error": e.reason})
                    stopped = f"judge unavailable: {e.reason}"
                    save()
                    return stopped
                except JudgeFailure as e:
                    self.log.append("events", {"round": round_, "error": e.reason})
                    self.console.print(f"[yellow]round {round_}: the judge gave no valid proposal ({escape(str(e.reason))})[/yellow]")
                    stale += 1
                    failures += 1
                    if stale >= cfg.patience or failures >= MAX_JUDGE_FAILURES:
                        stopped = "judge failed repeatedly"
                        break
                    round_ += 1
                    save()
                    continue
            failures = 0
            if source == "judge":
                for h in prop.hypotheses:
                    h.parents = []  # lineage is autoscope's to record, not the judge's
            before = self.best_kappa(upto_round=round_ - 1)
            new = 0
            repeats = []
            for j, h in enumerate(prop.hypotheses):
                hid = round_ * 100 + j
                if (round_, hid) in done_keys:
                    new += 1  # scored before the kill; counts for this round as it did then
                    continue
                late = out_of_time()
                if j >= cfg.per_round or self.n_scored() >= cfg.budget or late:
                    why = (f"beyond the {cfg.per_round} asked for per round" if j >= cfg.per_round
                           else f"the time budget ({cfg.minutes:g} min) was spent" if late else "the budget was spent")
                    self.log.append("events", {"round": round_, "not_tested": h.name, "statement": h.statement, "why": why})
                    continue
                if idea_key(h) in seen:
                    # a weak judge repeats itself; a repeat costs no labels and no budget
                    duplicates += 1
                    repeats.append(f"{h.name}: {h.statement}")
                    self.log.append("events", {"round": round_, "duplicate": h.name, "statement": h.statement})
                    self.console.print(f"[dim]#{hid} {h.name}: already tested, skipped[/dim]")
                    continue
                try:
                    res = self.evaluate(h, hid, round_, source=source)
                except JudgeUnavailable as e:
                    self.log.append("events", {"round": round_, "error": e.reason, "interrupted": h.name})
                    stopped = f"judge unavailable: {e.reason}"
                    save()
                    return stopped
                seen.add(idea_key(h))
                self.scored.append(res)
                done_keys.add((round_, hid))
                new += 1
                self.log.append("hypotheses", {"hypothesis": res.model_dump()})
                s = res.score
                line = f"{res.status}" + (f": {res.error}" if res.error else "")
                if s and s.fcr is not None:
                    c = res.confirmation
                    line = (f"exploration FCR {s.fcr:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}] p0 {s.p0:.3f} "
                            f"κ {kappa_text(s.kappa, s.kappa_ci_low, s.kappa_ci_high, s.degenerate)}"
                            + (f"; confirmation κ {kappa_text(c.kappa, c.kappa_ci_low, c.kappa_ci_high, c.degenerate)}" if c else ""))
                self.console.print(f"[bold]#{hid}[/bold] {h.name} ({h.kind}): {line}")
            round_ += 1
            if prop.done and cfg.stop_when_done and source == "judge":
                stopped = "the judge said it is done"
                break
            if source in ("evidence", "refined"):  # strongest first, refinements only when they improve: only the judge's rounds count towards patience
                save()
                continue
            stale = stale + 1 if self.best_kappa() <= before else 0
            idle = idle + 1 if new == 0 else 0
            if idle >= MAX_IDLE_ROUNDS or stale >= cfg.patience:
                stopped = "no new hypotheses" if idle >= MAX_IDLE_ROUNDS else "κ stopped improving"
                if self.n_scored() >= cfg.budget:
                    stopped = "budget"
                break
            save()
        save(stopped)
        return stopped

    def other_sites(self) -> None:
        if not self.cfg.sites:
            return
        sites = [s.name for s in parse_sites(self.cfg.sites, self.scope.target.n_layers, self.scope.target.n_heads) if s.name != self.cfg.site]
        top = [h for h in self.ranking() if h.status == "scored"][: self.cfg.top_k_other_sites]
        for h in top:
            try:
                try:
                    labeller, by_judge = self._labeller(h.hypothesis), h.hypothesis.kind == "llm"
                except ValueError:  # its code failed at the site too: it was scored through its statement
                    labeller, by_judge = self._statement_feature(h.hypothesis), True
                for site in sites:
                    if site in h.other_sites:
                        continue
                    score, _, _ = self.score(h.hypothesis, labeller, site, judge_labelled=by_judge)
                    h.other_sites[site] = score
            except (ValueError, JudgeFailure, JudgeUnavailable) as e:
                # the other sites are an extra: a failure there must not lose the run's result and report
                self.log.append("events", {"other_sites_failed": h.id, "error": f"{type(e).__name__}: {e}"[:300]})
            self.log.append("other_sites", {"id": h.id, "scores": {k: v.model_dump() for k, v in h.other_sites.items()}})

    def confirm(self) -> SearchNull:
        """The search null for every hypothesis scored so far (saved with the run)."""
        cards = [h.score.n_values or 2 for h in self.scored if h.status == "scored" and h.score]
        self.null = search_null(self.part("confirm"), self.prior_texts(self.cfg.prior_for_p0), cards, seed=self.cfg.seed)
        self.null.permutation_p, self.null.p_threshold = permutation_pvalues(self.scored)
        self.log.write_json("search_null.json", self.null.model_dump())
        return self.null

    def ranking(self) -> list[ScoredHypothesis]:
        return ranked(self.scored, self.null)


@contextlib.contextmanager
def judge_for(cfg: ExploreConfig, log: RunLog):
    """(judge, labeller): the configured judge (config, then $AUTOSCOPE_JUDGE_URL) for both,
    or embedded ones started for this run and stopped after it — llama.cpp to propose and
    compile (long single answers) when it is installed, and the batched engine to label
    (many short answers at once, BENCHMARKS §5)."""
    import os

    if cfg.proposer == "evidence":
        yield None, None  # `--judge none`: evidence proposes, Python features label; no LLM at all
        return
    jc = cfg.judge
    if not jc.base_url and os.environ.get("AUTOSCOPE_JUDGE_URL"):
        jc = JudgeConfig.from_env(**{k: v for k, v in jc.model_dump().items() if k not in ("base_url", "model", "engine", "api_key")})
    record = lambda r: log.append("judge", r)  # noqa: E731
    if jc.base_url:
        client = JudgeClient(jc, log=record)
        yield client, client
        return
    from .judging.embedded_judge import EmbeddedJudge

    with contextlib.ExitStack() as stack:
        try:
            srv = stack.enter_context(EmbeddedJudge(log_path=log.root / "judge_server.log"))
        except AutoscopeError as e:
            # no embedded judge answers here: explore from the evidence alone, and say so
            log.append("events", {"judge_fallback": f"{e}; exploring from the evidence alone (--judge none)"})
            Console(stderr=True).print(f"[yellow]{escape(str(e))}; exploring from the evidence alone, as with --judge none[/yellow]")
            yield None, None
            return
        if srv.fallback_reason:
            log.append("events", {"judge_fallback": srv.fallback_reason})
        judge = srv.client(jc, log=record)
        labeller = judge
        if srv.engine != "batched":
            lab = stack.enter_context(EmbeddedJudge(engine="batched", log_path=log.root / "labeller_server.log"))
            labeller = lab.client(jc, log=record)
        yield judge, labeller


def resumed_config(saved: dict, asked: ExploreConfig, xid: str) -> ExploreConfig:
    """The settings of a resumed explore: the saved ones win, so a finding is never half one
    setting and half another, except how to reach the judge (a new server, a new port) and the
    budgets. The hypothesis budget counts over the whole run, so a resume may raise it but not
    lower it (`--budget 40` goes on past a run that stopped at 20); `--minutes` is the time of
    this session's proposing loop, so a resume that gives it uses it (0: no limit). A default
    is not a request. An explore saved before `anchors` existed sampled every site on its
    query, and goes on so."""
    saved = {"anchors": "query", **saved}
    old = ExploreConfig.model_validate(saved)
    update: dict = {"judge": asked.judge, "explore_id": xid}
    if "budget" in asked.model_fields_set:
        update["budget"] = max(old.budget, asked.budget)
    if "minutes" in asked.model_fields_set:
        update["minutes"] = asked.minutes or None
    return old.model_copy(update=update)


def extends(stopped: str, after: ExploreConfig, n_scored: int, asked: set[str]) -> bool:
    """Whether a resumed explore that had stopped on a budget has more of it now: a budget
    above what it has scored, or — after a time stop — `--minutes` or `--budget` given again
    (the time is per session, so a resume that asks for more gets this session's minutes)."""
    if stopped == "budget":
        return after.budget > n_scored
    if stopped.startswith("time budget"):
        return bool(asked & {"minutes", "budget"}) and after.budget > n_scored
    return False


def explore(cfg: ExploreConfig, console: Console | None = None) -> ExploreResult:
    console = console or Console(stderr=True)
    run_dir = Path(cfg.runs_dir) / cfg.run
    check_temperature(cfg.temperature)
    if not (run_dir / "train_config.json").exists():
        raise AutoscopeError(f"no trained run {run_dir}: run `autoscope train --run {cfg.run}` first")
    xid = cfg.explore_id or datetime.now().strftime("x%Y%m%d-%H%M%S")
    log = RunLog(run_dir / "explore" / xid)
    asked_fields = cfg.model_fields_set
    saved = log.read_json("config.json")
    if saved is not None:
        cfg = resumed_config(saved, cfg, xid)
    else:
        cfg = cfg.model_copy(update={"explore_id": xid})
        log.write_json("config.json", cfg.model_dump())
    state, finished = log.read_json("state.json"), log.read_json("result.json")
    if saved is not None and state and state.get("stopped"):
        # scored hypotheses from the log, not result.json: a run killed between its stop and its
        # result (confirmation, other sites) extends as well
        n_scored = sum(1 for r in log.read("hypotheses") if r["hypothesis"].get("status") == "scored")
        if extends(str(state["stopped"]), cfg, n_scored, set(asked_fields)):
            console.print(f"explore {xid} stopped on its {state['stopped']}; going on to --budget {cfg.budget}"
                          + (f", --minutes {cfg.minutes:g}" if cfg.minutes else ", no time limit")
                          + " (patience counted afresh)")
            log.append("events", {"extended": state["stopped"], "budget": cfg.budget, "minutes": cfg.minutes})
            state = {**state, "stopped": None, "stale": 0, "idle": 0}
            log.write_json("state.json", state)
            finished = None
    if saved is not None and not (state and state.get("stopped")):
        log.write_json("config.json", cfg.model_dump())  # the run goes on: a later resume starts from these budgets
    if state and state.get("stopped") and finished is not None:
        console.print(f"explore {xid} finished before ({state['stopped']}); nothing is asked again — the report is rewritten")
        from .report import write_report

        write_report(log.root)
        return ExploreResult.model_validate(finished)
    t0 = time.perf_counter()
    with judge_for(cfg, log) as (judge, labeller):
        ex = Explorer(cfg, judge, log, console, labeller=labeller)
        stopped = ex.run()
        ex.confirm()
        if not stopped.startswith("judge unavailable"):
            ex.other_sites()
    ex.timing["total_s"] = time.perf_counter() - t0
    ex.timing["judge_calls"] = float(judge.calls) if judge is not None else 0.0
    if labeller is not judge and labeller is not None:
        ex.timing["labeller_calls"] = float(labeller.calls)
    log.append("timing", ex.timing)
    result = ExploreResult(explore_dir=str(log.root), ranking=ex.ranking(), timing=ex.timing, stopped=stopped, site=cfg.site, null=ex.null)
    log.write_json("result.json", result.model_dump())
    from .report import write_report

    write_report(log.root)
    return result
