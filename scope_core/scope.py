"""A trained run (`Scope`): its target, prompts, activation cache and inverter, opened
lazily; verified preimages of a query (`sample`); a feature's FCR at a site with the
empirical reference (`score`, an `FCRReport`). Reached from above through `scope_core.api`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel

from .audit import AUDITED, LabellerAudit, audit_labeller, grammar_for
from .copies import NearCopyIndex
from .cache import ActivationCache
from .data import RunData
from .distances import Kernel, prepare
from .eps import EpsChoice, choose_eps
from .errors import AutoscopeError
from .extract import extract
from .fcr import FCRResult, against_chance, empirical_fcr, fcr, gap_ci, generator_weights, neighbour_lists
from .generator import Inverter
from .prior_density import nearest_prior
from .sample import SampleRun, VerifyMode, sample_and_verify, summarise
from .sites import Site, parse_site
from .targets import Target, load_target
from .train import TrainConfig

LabelFn = Callable[[Sequence[str]], list[str | None]]


class FCRReport(BaseModel):
    feature: str
    site: str
    eps: EpsChoice
    kernel: str
    generator: FCRResult
    empirical: FCRResult | None
    sampler: dict[str, float]
    feature_info: dict = {}
    n_samples_per_query: int
    # p0 and κ within the conditional population: prior prompts that pass the query filter
    # (--only) and on which the feature is defined. A gated feature (reason, method: None on
    # harmless prompts) scored on harmful queries is compared with harmful prompts' chance.
    conditional_p0: float | None = None
    conditional_kappa: float | None = None
    conditional_kappa_ci: tuple[float | None, float | None] = (None, None)
    conditional_degenerate: bool = False  # within the conditional population every prompt has the query's label (p0 = 1)
    n_conditional: int = 0
    # the empirical reference's κ against the same conditional population (its p0 is averaged over
    # the queries its own row counted, so it can differ a little from the generator row's)
    conditional_empirical_p0: float | None = None
    conditional_empirical_kappa: float | None = None
    conditional_empirical_kappa_ci: tuple[float | None, float | None] = (None, None)
    conditional_empirical_degenerate: bool = False
    # the labeller's accuracy on this run's accepted samples, where the prior's grammar knows their labels
    labeller_audit: LabellerAudit | None = None
    # 95% CI of `gap`, over the queries either row scored, paired where both did (fcr.gap_ci)
    gap_ci: tuple[float | None, float | None] = (None, None)
    # what the samples were conditioned on: the query's activation, or draws from its ε-ball
    anchors: str = "query"
    anchor_share: float | None = None  # of ball-anchored samples, the share drawn from the ball (Scope.ball_share)
    temperature: float = 1.0  # what the samples were decoded at

    @property
    def gap(self) -> float | None:
        """Generator FCR minus the empirical reference."""
        g, e = self.generator.fcr, self.empirical.fcr if self.empirical else None
        return None if g is None or e is None else g - e


class Scope:
    """A trained run: target, prompts, activation cache and inverter."""

    def __init__(self, run_dir: str | Path, target: Target | None = None, device: str | None = None, dtype: str | None = None):
        """`device`/`dtype` (None: the run's): where and in what the target and generator run for
        sampling and verification; another dtype than the run's reads slightly other activations."""
        self.run_dir = Path(run_dir)
        cfg_path = self.run_dir / "train_config.json"
        if not cfg_path.exists():
            raise AutoscopeError(f"{self.run_dir} is not a trained run (no train_config.json): run `autoscope train` first")
        self.config = TrainConfig.load(cfg_path)
        moved = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        if moved:
            self.config = self.config.model_copy(update={"target": self.config.target.model_copy(update=moved)})
        self.data = RunData.load(self.run_dir / "data")
        self.cache = ActivationCache(self.run_dir / "acts")
        self._target = target
        self._inverter: Inverter | None = None
        self._acts: dict[str, torch.Tensor] = {}
        self._train_texts: set[str] | None = None
        self._sample_cap: int | None = None
        self._unconditional: Inverter | None = None
        self._prepared_train: dict[tuple[str, str], torch.Tensor] = {}  # the training prompts' activations, prepared per site and metric

    # -- lazily loaded parts ---------------------------------------------------
    @property
    def target(self) -> Target:
        if self._target is None:
            self._target = load_target(self.config.target)
        return self._target

    @property
    def inverter(self) -> Inverter:
        if self._inverter is None:
            inv_dir = self.run_dir / "inverter"
            from .generator import GeneratorConfig

            gpath = inv_dir / "generator.json"
            if not gpath.exists():
                raise AutoscopeError(f"run {self.run_dir} has no trained inverter yet: rerun `autoscope train` to finish it")
            gcfg = GeneratorConfig.model_validate_json(gpath.read_text())
            # the backbone is the frozen target, or fine-tuned upper blocks grafted onto it: share its modules
            on_target = gcfg.backbone == self.config.target.model and (not gcfg.backbone_weights_saved or gcfg.own_blocks_from is not None)
            inv = Inverter.load(inv_dir, tokenizer=self.target.tokenizer, target_model=self.target.model if on_target else None,
                                device=self.target.device, dtype=self.config.target.resolved().dtype)
            inv.eval()
            self._inverter = inv
        return self._inverter

    @property
    def unconditional_generator(self) -> Inverter:
        """What `sample(conditional=False)` decodes with: the run's backbone without the condition.
        A shallow generator's own blocks were only ever trained with the condition, so its
        unconditional reference is the whole target as a language model (same output vocabulary)."""
        inv = self.inverter
        if inv.config.upper_blocks is None:
            return inv
        if self._unconditional is None:
            from .generator import build_backbone, whole_target_config

            cfg = whole_target_config(inv.config)
            gen = Inverter(cfg, build_backbone(cfg, tokenizer=self.target.tokenizer, model=self.target.model))
            gen.eval()
            self._unconditional = gen
        return self._unconditional

    @property
    def sites(self) -> list[Site]:
        return self.cache.sites

    def site(self, name: str) -> Site:
        s = parse_site(name, self.target.n_layers, self.target.n_heads)
        if s not in self.sites:
            raise AutoscopeError(f"site {s.name} was not trained in run {self.run_dir.name} (trained: {', '.join(x.name for x in self.sites)}); "
                                 "train with --sites including it")
        return s

    @property
    def train_texts(self) -> set[str]:
        if self._train_texts is None:
            self._train_texts = self.data.train_texts()
        return self._train_texts

    def sampler_summary(self, run: SampleRun) -> dict[str, float]:
        """The sampler's figures (`summarise`) with near copies beside exact ones: samples within
        one word edit of a training prompt or of their own query (`scope_core.copies`)."""
        if getattr(self, "_near_copies", None) is None:
            self._near_copies = NearCopyIndex(self.train_texts)
        return summarise(run) | self._near_copies.summarise(run)

    SAMPLE_TOKEN_MARGIN = 4

    @property
    def sample_token_cap(self) -> int:
        """Most tokens a sample may take (end token included): the longest training prompt
        plus a small margin. The prior has no mass beyond its longest prompt, and the few
        rows that run on past it decode alone at the end of a batch, at several times the
        cost per token of a full batch (BENCHMARKS.md §3)."""
        if self._sample_cap is None:
            texts = sorted(self.train_texts)
            longest = max(self.target.text_token_counts(texts)) if texts else 48
            self._sample_cap = longest + 1 + self.SAMPLE_TOKEN_MARGIN
        return self._sample_cap

    def acts(self, site: Site) -> torch.Tensor:
        if site.name not in self._acts:
            self._acts[site.name] = self.cache.load(site)
        return self._acts[site.name]

    def mean(self, site: Site) -> torch.Tensor:
        return self.cache.mean_scale(site)[0]

    def eps(self, site: Site, metric: str | None = None, quantile: float | None = None, eps: float | None = None) -> EpsChoice:
        """ε at `site`: an absolute value, a quantile, or the run's training default."""
        metric = metric or self.config.metric
        if eps is None and quantile is None:
            eps, quantile = self.config.eps, (self.config.eps_quantile if self.config.eps is None else None)
        return choose_eps(self.cache.stats()[site.name], site.name, metric, quantile, eps)

    # -- queries ----------------------------------------------------------------
    def heldout_indices(self, where: Callable[[dict], bool] | None = None, limit: int | None = None) -> list[int]:
        idx = [i for i in self.data.heldout if where is None or where(self.data.examples[i].labels)]
        return idx[:limit] if limit else idx

    def query_activations(self, site: Site, texts: Sequence[str] | None = None, indices: Sequence[int] | None = None) -> torch.Tensor:
        if indices is not None:
            return self.acts(site)[torch.tensor(list(indices), dtype=torch.long)]
        assert texts is not None
        self.target.check_lengths(list(texts))
        return extract(self.target, list(texts), [site])[site]

    def sample(
        self,
        site: Site,
        texts: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
        n: int = 16,
        temperature: float | None = None,
        kernel: Kernel = "hard",
        eps: EpsChoice | None = None,
        conditional: bool = True,
        seed: int = 0,
        progress: bool = False,
        sampling_noise: float = 0.0,
        verify_mode: VerifyMode = "auto",
        continuous: bool = True,
        guidance: float = 1.0,
        anchors: Literal["auto", "query", "ball"] = "query",
    ) -> SampleRun:
        """Verified samples for each query (prior prompts by index, or free texts);
        `continuous` False decodes in fixed batches (for comparison); `guidance` ≠ 1
        sharpens the query's likelihood against the unconditioned backbone (`decoding.guided`).

        `anchors` "ball" conditions each sample on an activation drawn from ẑ's ε-ball
        instead of ẑ itself (`ball_anchors`): samples then spread over the ball as P(x | z ∈ B)
        does, where the query's own condition gives the generator's own, narrower width;
        "auto" draws a share of them from the ball per site (`ball_share`).

        `temperature` None: the run's own for the site (`sampling_temperature`); the
        unconditional backbone (`conditional` False) samples at 1, as the reference it is."""
        if (texts is None) == (indices is None):
            raise ValueError("give texts or indices")
        if indices is not None:
            texts = [self.data.examples[i].text for i in indices]
        assert texts is not None
        if temperature is None:
            temperature = self.sampling_temperature(site) if conditional else 1.0
        zq = self.query_activations(site, texts, indices)
        eps = eps or self.eps(site)
        mean = self.mean(site)
        inv = self.inverter if conditional else self.unconditional_generator
        idx = list(indices) if indices is not None else [None] * len(texts)
        share = self.ball_share(site, anchors) if conditional else 0.0
        anchor_z = self.ball_anchors(site, zq, idx, eps, n, seed, kernel, share=share) if share > 0 else None
        run = sample_and_verify(
            inv, self.target, site, zq, list(texts), idx,
            eps, self.train_texts, mean, n=n, temperature=temperature, kernel=kernel, conditional=conditional,
            seed=seed, progress=progress, sampling_noise=sampling_noise, verify_mode=verify_mode,
            max_new_tokens=self.sample_token_cap, continuous=continuous, guidance=guidance,
            anchors=anchor_z, anchor_eps=eps.eps if anchor_z is not None else None, anchor_share=share if anchor_z is not None else None,
        )
        return self.with_prior_nearest(run, site, zq, idx)

    def with_prior_nearest(self, run: SampleRun, site: Site, zq: torch.Tensor | None = None,
                           indices: Sequence[int | None] | None = None) -> SampleRun:
        """`run` with each query's nearest training prompts (`QueryResult.prior_nearest`, as many
        as it has samples) in the run's metric, so that its figures are read beside the prior's
        density at those queries (`prior_density`). A query that is a prior prompt leaves its own
        row out; a free text equal to a training prompt is in the prior and finds it at 0.

        `zq` None (a run saved before the field): queries given by index are read from the
        cache, after checking the index still names the same text (a run whose split changed
        would give other distances silently); free texts go through the target."""
        if not self.data.train or not run.queries:
            return run
        idx = list(indices) if indices is not None else [q.index for q in run.queries]
        if zq is None:
            for q, i in zip(run.queries, idx):
                if i is not None and (i >= len(self.data.examples) or self.data.examples[i].text != q.query):
                    raise AutoscopeError(f"query {q.query[:60]!r} is not prompt {i} of run {self.run_dir.name}: these samples were "
                                         "drawn on another split or run; read them with the run they came from")
            free = [j for j, i in enumerate(idx) if i is None]
            zq = self.acts(site)[torch.tensor([0 if i is None else i for i in idx], dtype=torch.long)].clone()
            if free:
                zq[torch.tensor(free)] = self.query_activations(site, [run.queries[j].query for j in free]).to(zq.dtype)
        metric = run.eps.metric
        key = (site.name, metric)
        if key not in self._prepared_train:
            train = torch.tensor(self.data.train, dtype=torch.long)
            self._prepared_train[key] = prepare(self.acts(site)[train], metric, self.mean(site))  # type: ignore[arg-type]
        position = {int(i): k for k, i in enumerate(self.data.train)}
        k = max(len(q.samples) for q in run.queries)
        near = nearest_prior(zq, self._prepared_train[key], metric, k, self.mean(site),  # type: ignore[arg-type]
                             exclude=[position.get(i) if i is not None else None for i in idx], pool_prepared=True)
        queries = [q.model_copy(update={"prior_nearest": d[: len(q.samples)]}) for q, d in zip(run.queries, near)]
        return run.model_copy(update={"queries": queries})

    def _summary(self) -> dict:
        summary = self.run_dir / "inverter" / "train_summary.json"
        return json.loads(summary.read_text()) if summary.exists() else {}

    def sampling_temperature(self, site: Site) -> float:
        """The temperature the run samples `site` at unless told: what training chose from the
        data (`train.sampling_temperature`: 0.75 where loose ε-balls met a generator trained
        without neighbours), 1 for a run saved before it chose one."""
        return float(self._summary().get("sampling_temperature_per_site", {}).get(site.name, 1.0))

    def neighbour_mix(self, site: Site) -> float | None:
        """The share of training examples conditioned on a ball neighbour at `site` (None:
        unknown, a run saved before the share was recorded)."""
        saved = self._summary()
        if saved:
            mixes = saved.get("neighbour_mix_per_site") or {}
            if site.name in mixes:
                return float(mixes[site.name])
            if saved.get("neighbour_mix") is not None:  # saved before the per-site record: one share for every site
                return float(saved["neighbour_mix"])
        return self.config.neighbour_mix

    def anchors_for(self, site: Site, anchors: Literal["auto", "query", "ball"]) -> Literal["query", "ball"]:
        """What FCR samples are conditioned on at `site`: "ball" where any of them is drawn from
        the ε-ball (`ball_share` > 0), else "query"."""
        return "ball" if self.ball_share(site, anchors) > 0 else "query"

    def ball_share(self, site: Site, anchors: Literal["auto", "query", "ball"]) -> float:
        """The share of samples conditioned on an activation drawn from ẑ's ε-ball rather than
        on ẑ itself: 1 for "ball", 0 for "query", and for "auto" one minus the site's neighbour
        mix m (0 for a run that never recorded one).

        Why 1 − m: a generator trained with a share m of ball neighbours learns, given a clean
        condition, a mixture — with weight 1 − m the prompts whose own activation it is (sharp),
        with weight m the condition's ball members (one ball's spread). Conditioned on ẑ it
        therefore spreads over the ball m times on average, too sharp for the FCR at ε (m < 1);
        conditioned on a ball member it spreads 1 + m times (the ball, then the member's own
        ball). Drawing the anchor from the ball for a share β of samples gives m + β spreads on
        average, one ball's worth at β = 1 − m: the whole ball for a generator trained on noise
        alone (the real refusal sets), 0.3 of it for the default mix 0.7 (BENCHMARKS §21). Query
        anchors alone (β = 0) left the all-query FCR gap 0.02–0.06 above the ball's and ball anchors
        alone (β = 1, one run of §17) the harmful one 0.04–0.06 below it on the generated prior. That
        argument counts spreads as if the FCR moved linearly with them; at β = 0.3 the samples are
        21% sharp, 58% one spread and 21% two, and §21 measures the result."""
        if anchors not in ("auto", "query", "ball"):
            raise AutoscopeError(f"anchors must be auto, query or ball, not {anchors!r}")
        if anchors != "auto":
            return 1.0 if anchors == "ball" else 0.0
        mix = self.neighbour_mix(site)
        return 0.0 if mix is None else min(1.0, max(0.0, 1.0 - mix))

    def ball_anchors(self, site: Site, zq: torch.Tensor, indices: Sequence[int | None], eps: EpsChoice, n: int, seed: int = 0,
                     kernel: Kernel = "hard", share: float = 1.0) -> torch.Tensor:
        """Conditions [Q, n, d] for ball-anchored sampling: for each query, n draws (with
        replacement) from ẑ itself and the activations of the training prompts within ε of it
        (the query's own prompt left out), each with probability ∝ its kernel weight k(d) — for
        the hard kernel uniform over ẑ and the ball, for the gaussian one k(0) = 1 for ẑ and
        exp(−d²/2ε²) for a prompt at d, the reference's own weights. With `share` < 1 each
        sample keeps ẑ with probability 1 − share (`ball_share`). Training prompts only: an anchor drawn from another
        held-out query would put paraphrases of it among the samples `explore` shows its
        proposer, and those queries may be the ones a finding is confirmed on.

        Why: the FCR at ε asks for samples of P(x | z(x) ∈ B(ẑ, ε)) = ∫ P(x | z(x) = a) P(a | a ∈ B) da.
        A generator conditioned on ẑ alone samples at its own width, which does not follow ε
        (on real prompts its FCR stays flat from ε 0.05 to 0.15 while the ball's falls,
        BENCHMARKS §17); the prior's prompts in the ball are draws of P(a | a ∈ B), so
        conditioning each sample on one of them gives the mixture. Where the ball holds no
        prior prompt (small ε) every anchor is ẑ, and the sampler is the plain one."""
        train = torch.tensor(self.data.train, dtype=torch.long)
        pool = self.acts(site)[train]
        position = {int(i): k for k, i in enumerate(self.data.train)}
        lists = neighbour_lists(zq, pool, eps.eps, eps.metric, kernel, self.mean(site),  # type: ignore[arg-type]
                                exclude=[position.get(i) if i is not None else None for i in indices])
        rng = np.random.default_rng(seed + 7)
        out = zq[:, None, :].repeat(1, n, 1).clone()
        for q, (members, weights) in enumerate(lists):
            if kernel == "hard":  # uniform over ẑ and the ball, drawn as before weights were read
                pick = rng.integers(-1, len(members), n)  # -1: ẑ itself
            else:
                p = np.concatenate([[1.0], weights.astype(np.float64)])
                pick = rng.choice(len(p), size=n, p=p / p.sum()) - 1
            if share < 1:  # only then a draw more, so that share 1 draws what it always drew
                pick[rng.random(n) >= share] = -1
            chosen = pick >= 0
            if chosen.any():
                out[q, torch.from_numpy(np.nonzero(chosen)[0])] = pool[torch.from_numpy(members[pick[chosen]])].to(out.dtype)
        return out

    # -- FCR --------------------------------------------------------------------
    def score(self, feature: LabelFn, feature_name: str, run: SampleRun, site: Site, empirical: bool = True, feature_info: dict | None = None,
              pool_limit: int | None = None, seed: int = 0, where: Callable[[dict], bool] | None = None) -> FCRReport:
        """FCR of `feature` over a sampled run, with the empirical-neighbour reference.

        The chance level and the empirical reference need labels for the prior's prompts.
        `pool_limit` draws that many of them at random instead of all (a judge-labelled
        feature cannot afford 10,000 calls); both estimates stay unbiased, only wider.
        """
        queries = [q.query for q in run.queries]
        samples = [[s.text for s in q.samples] for q in run.queries]
        n_all = len(self.data.examples)
        if pool_limit is not None and pool_limit < n_all:
            pool_idx = sorted(random.Random(seed).sample(range(n_all), pool_limit))
        else:
            pool_idx = list(range(n_all))
        pool_texts = [self.data.examples[i].text for i in pool_idx]
        uniq = sorted({t for ss in samples for t in ss} | set(queries) | set(pool_texts))
        labels = dict(zip(uniq, feature(uniq)))
        q_lab = [labels[t] for t in queries]
        s_lab = [[labels[t] for t in ss] for ss in samples]
        w = [generator_weights(q.samples, run.kernel) for q in run.queries]
        train = set(self.data.train)
        prior = [labels[self.data.examples[i].text] for i in pool_idx if i in train]  # the one p0 population for both rows
        gen = fcr(q_lab, s_lab, w, prior, seed=seed)
        cond_idx = [i for i in pool_idx if i in train and (where is None or where(self.data.examples[i].labels))]
        cond = [lab for lab in (labels[self.data.examples[i].text] for i in cond_idx) if lab is not None]
        conditional = against_chance(gen, q_lab, cond, seed=seed) if cond else None
        emp = emp_conditional = None
        if empirical and all(q.index is not None for q in run.queries):
            emp = self.empirical(q_lab, run, site, pool_idx, [labels[t] for t in pool_texts], prior, seed)
            emp_conditional = against_chance(emp, q_lab, cond, seed=seed) if cond else None
        audit = None
        parse = grammar_for(self.config.prior) if feature_name in AUDITED else None
        if parse is not None:
            accepted = [s.text for q, ws in zip(run.queries, w) for s, wi in zip(q.samples, ws) if wi > 0]
            audit = audit_labeller(feature_name, accepted, [labels[t] for t in accepted], parse)
        return FCRReport(feature=feature_name, site=site.name, eps=run.eps, kernel=run.kernel, generator=gen, empirical=emp, labeller_audit=audit,
                         sampler=self.sampler_summary(run), feature_info=feature_info or {},
                         n_samples_per_query=len(run.queries[0].samples) if run.queries else 0,
                         conditional_p0=conditional.p0 if conditional else None, conditional_kappa=conditional.kappa if conditional else None,
                         conditional_kappa_ci=(conditional.kappa_ci_low, conditional.kappa_ci_high) if conditional else (None, None),
                         conditional_degenerate=conditional.degenerate if conditional else False,
                         conditional_empirical_p0=emp_conditional.p0 if emp_conditional else None,
                         conditional_empirical_kappa=emp_conditional.kappa if emp_conditional else None,
                         conditional_empirical_kappa_ci=(emp_conditional.kappa_ci_low, emp_conditional.kappa_ci_high) if emp_conditional else (None, None),
                         conditional_empirical_degenerate=emp_conditional.degenerate if emp_conditional else False,
                         n_conditional=len(cond), gap_ci=gap_ci(gen, emp, seed=seed) if emp is not None else (None, None), anchors=run.anchors,
                         anchor_share=run.anchor_share, temperature=run.temperature)

    def empirical(self, query_labels: list, run: SampleRun, site: Site, pool_idx: list[int], pool_labels: list, prior_labels: list,
                  seed: int = 0) -> FCRResult:
        """The generator-free reference for `run`'s queries (prior prompts, `q.index` set): the
        FCR over the pool prompts within ε of each query's activation, weighted by k, with p0
        over `prior_labels` (the generator row's population)."""
        acts = self.acts(site)
        pool = acts if len(pool_idx) == len(self.data.examples) else acts[torch.tensor(pool_idx)]
        zq = acts[torch.tensor([q.index for q in run.queries])]
        position = {i: k for k, i in enumerate(pool_idx)}
        return empirical_fcr(query_labels, zq, pool, pool_labels, run.eps.eps, run.metric, run.kernel,  # type: ignore[arg-type]
                             self.mean(site), exclude=[position.get(q.index) for q in run.queries], prior_labels=prior_labels,  # type: ignore[arg-type]
                             seed=seed)

    def save_json(self, name: str, obj: BaseModel | dict) -> Path:
        out = self.run_dir / "results"
        out.mkdir(exist_ok=True)
        p = out / name
        tmp = p.with_suffix(".tmp")
        tmp.write_text(obj.model_dump_json(indent=1) if isinstance(obj, BaseModel) else json.dumps(obj, indent=1))
        tmp.replace(p)
        return p
