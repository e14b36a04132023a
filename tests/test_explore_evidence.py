"""`explore --judge none`: hypotheses from the evidence, scored on exploration queries and
confirmed on queries nothing in the loop saw, against a search null.

The samples are planted: each query's accepted samples are prior prompts that open with the
query's first word and are otherwise random (what an inverter that encodes "how the request
opens" would return). The loop must find that, confirm it, and never confirm a content-free
feature. The run is the tiny random-weight run; its sample run is written where the loop
keeps its sampled D, so the loop, sandbox, FCR and report code are the real ones."""

from __future__ import annotations

import random
import re
from collections import defaultdict

import pytest

from agent.confirm import hash_feature, search_null, split_queries
from agent.hypotheses import is_confirmed
from agent.loop import ExploreConfig, Explorer
from agent.runlog import RunLog
from scope_core.eps import EpsChoice
from scope_core.sample import QueryResult, Sample, SampleRun


def first_word(text: str) -> str:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return words[0] if words else ""


def planted_run(scope, n_queries: int = 40, n: int = 8, seed: int = 0, keep: float = 0.9) -> SampleRun:
    """Accepted samples share the query's first word with probability `keep`, else random."""
    rng = random.Random(seed)
    data = scope.data
    pool = [data.examples[i].text for i in data.train]
    by_first = defaultdict(list)
    for t in pool:
        by_first[first_word(t)].append(t)
    held = [data.examples[i].text for i in data.heldout]
    queries = [q for q in held if len(by_first[first_word(q)]) >= 3][:n_queries]
    out = []
    for qi, q in enumerate(queries):
        samples = []
        for _ in range(n):
            text = rng.choice(by_first[first_word(q)]) if rng.random() < keep else rng.choice(pool)
            samples.append(Sample(text=text, distance=0.01, weight=1.0, accepted=True, is_copy=False))
        out.append(QueryResult(query=q, index=None, samples=samples))
    eps = EpsChoice(site="L2", metric="cosine", eps=0.1, source="absolute")
    return SampleRun(site="L2", eps=eps, metric="cosine", kernel="hard", temperature=1.0, queries=out, timing={})


@pytest.fixture()
def planted(tiny_scope, tmp_path):
    log = RunLog(tmp_path / "x")
    run = planted_run(tiny_scope)
    log.write_json("samples_L2.json", run.model_dump())
    cfg = ExploreConfig(run="s", runs_dir=str(tiny_scope.run_dir.parent), site="L2", budget=8, per_round=3, proposer="evidence",
                        queries=len(run.queries), samples=8, prior_for_p0=300)
    return Explorer(cfg, None, log, scope=tiny_scope), run


def test_the_split_is_disjoint_and_seeded(planted):
    ex, run = planted
    a, b = ex.part("explore"), ex.part("confirm")
    qa, qb = [q.query for q in a.queries], [q.query for q in b.queries]
    assert not set(qa) & set(qb) and len(qa) + len(qb) == len(run.queries)
    again = split_queries(run, ex.cfg.seed)
    assert [q.query for q in again[1].queries] == qb
    assert [q.query for q in split_queries(run, ex.cfg.seed + 1)[1].queries] != qb


def test_explore_without_a_judge_finds_and_confirms_the_planted_feature(planted):
    ex, _ = planted
    stopped = ex.run()
    null = ex.confirm()
    assert stopped in ("budget", "every evidence candidate above chance and every improving refinement was tested")
    assert null.n_features == sum(h.status == "scored" for h in ex.scored) and null.max_kappa is not None
    ranking = ex.ranking()
    best = ranking[0]
    assert best.source == "evidence" and is_confirmed(best, null), [(h.hypothesis.name, h.confirmation) for h in ranking]
    assert best.hypothesis.name in ("first_1_words", "first_2_words", "request_frame")
    assert best.confirmation.kappa_ci_low > max(0.0, null.max_kappa)
    # proposals saw exploration queries only: the evidence was mined there and says so
    explore_queries = {q.query for q in ex.part("explore").queries}
    assert all(ex_q.query in explore_queries for h in ex.scored for ex_q in h.examples)


def test_the_time_budget_ends_the_loop_and_keeps_what_was_scored(planted):
    """`--minutes`: past the budget no further hypothesis is scored and no new round starts,
    once one is scored; what was scored is kept (the rest of the round is logged as not
    tested, with why), so confirmation still has a hypothesis to rank."""
    ex, _ = planted
    ex.cfg = ex.cfg.model_copy(update={"minutes": 1e-6, "budget": 20})
    stopped = ex.run()
    assert stopped.startswith("time budget"), stopped
    assert len(ex.scored) == 1 and ex.scored[0].round == 0
    skipped = [e for e in ex.log.read("events") if "not_tested" in e]
    assert skipped and all("time budget" in e["why"] for e in skipped)
    ex.confirm()
    assert ex.ranking()[0].confirmation is not None


def test_a_content_free_feature_is_never_confirmed(planted):
    """Hash features scored like hypotheses on the confirmation queries: none clears the
    search null of as many other hash features, over many salts."""
    ex, _ = planted
    confirm = ex.part("confirm")
    prior = ex.prior_texts(300)
    null = search_null(confirm, prior, [4] * 10, seed=99)
    from scope_core.fcr import fcr

    for salt in range(20):
        fn = hash_feature(4, salt=10_000 + salt)
        q_lab = [fn(q.query) for q in confirm.queries]
        s_lab = [[fn(s.text) for s in q.samples] for q in confirm.queries]
        res = fcr(q_lab, s_lab, [[1.0] * len(q.samples) for q in confirm.queries], [fn(t) for t in prior], seed=salt)
        assert not (res.kappa_ci_low is not None and res.kappa_ci_low > max(0.0, null.max_kappa or 0.0)), (salt, res.line())


def test_the_cli_explores_without_a_judge_and_writes_the_verdict(tiny_scope, tmp_path):
    """`autoscope explore --judge none`: no judge process, a verdict in the output and at the
    top of the report, confirmed findings ranked first."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    runs = tiny_scope.run_dir.parent
    log = RunLog(runs / "s" / "explore" / "cli-none")
    run = planted_run(tiny_scope)
    log.write_json("samples_L2.json", run.model_dump())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCOPE_JUDGE_")}
    r = subprocess.run([sys.executable, "-m", "agent.cli", "explore", "--judge", "none", "--run", "s", "--runs-dir", str(runs),
                        "--site", "L2", "--budget", "6", "--queries", str(len(run.queries)), "--resume", "cli-none"],
                       env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "L2 encodes" in r.stdout and "confirmed" in r.stdout
    assert not (log.root / "judge_server.log").exists() and not log.read("judge")
    md = (log.root / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Ranking") and "**confirmed**" in md
    result = json.loads((log.root / "result.json").read_text())
    assert result["null"]["n_features"] >= 1 and result["timing"]["judge_calls"] == 0


def test_refinement_merges_the_values_the_samples_mix(tiny_scope, tmp_path):
    """Planted: the site keeps a *group* of opening words (the samples of a query that opens
    with "write" open with "write" or "create" alike). `first_1_words` is too fine, so its
    samples break it; the revision that merges the mixed values beats it on the exploration
    queries, is scored, and records its parent."""
    rng = random.Random(1)
    data = tiny_scope.data
    pool = [data.examples[i].text for i in data.train]
    by_first = defaultdict(list)
    for t in pool:
        by_first[first_word(t)].append(t)
    common = [w for w, ts in sorted(by_first.items(), key=lambda kv: -len(kv[1])) if len(ts) >= 5][:6]
    assert len(common) >= 4
    group = {w: tuple(common[2 * (i // 2): 2 * (i // 2) + 2]) for i, w in enumerate(common)}  # pairs of opening words
    held = [data.examples[i].text for i in data.heldout]
    queries = [q for q in held if first_word(q) in group][:40]
    out = [QueryResult(query=q, samples=[Sample(text=rng.choice(by_first[rng.choice(group[first_word(q)])]), distance=0.01, weight=1.0,
                                                accepted=True, is_copy=False) for _ in range(8)]) for q in queries]
    run = SampleRun(site="L2", eps=EpsChoice(site="L2", metric="cosine", eps=0.1, source="absolute"), metric="cosine", kernel="hard",
                    temperature=1.0, queries=out, timing={})
    log = RunLog(tmp_path / "refine")
    log.write_json("samples_L2.json", run.model_dump())
    cfg = ExploreConfig(run="s", runs_dir=str(tiny_scope.run_dir.parent), site="L2", budget=20, per_round=3, proposer="evidence",
                        queries=len(queries), samples=8, prior_for_p0=300)
    ex = Explorer(cfg, None, log, scope=tiny_scope)
    ex.run()
    refined = [h for h in ex.scored if h.source == "refined"]
    assert refined, [e for e in log.read("events") if "refinement" in e]
    by_name = {h.hypothesis.name: h for h in ex.scored}
    for h in refined:
        assert h.hypothesis.parents and all(p in by_name for p in h.hypothesis.parents)
        assert h.score.kappa > max(by_name[p].score.kappa for p in h.hypothesis.parents)
    merged = by_name.get("first_1_words_merged")
    assert merged is not None and merged.score.kappa > by_name["first_1_words"].score.kappa + 0.2


def test_with_a_judge_evidence_comes_first_and_the_judge_reads_its_table(tiny_scope, tmp_path):
    """`--judge auto`: the evidence is proposed first; the judge's prompt then carries the
    counted evidence (a compact table) and only exploration queries."""
    from flaky_server import FlakyServer

    from agent.judging.judge import JudgeClient, JudgeConfig

    def rules(body: dict) -> dict:
        props = ((body.get("response_format") or {}).get("json_schema", {}).get("schema") or {}).get("properties", {})
        if "hypotheses" in props:
            return {"hypotheses": [{"name": "ends_with_period", "statement": "whether the prompt ends with a period", "kind": "python",
                                    "code": "def feature(text):\n    return 'yes' if text.strip().endswith('.') else 'no'"}], "done": True}
        return {"code": "def feature(text):\n    return 'x'"}

    log = RunLog(tmp_path / "auto")
    run = planted_run(tiny_scope)
    log.write_json("samples_L2.json", run.model_dump())
    with FlakyServer([], default=rules) as srv:
        cfg = ExploreConfig(run="s", runs_dir=str(tiny_scope.run_dir.parent), site="L2", budget=30, per_round=3, proposer="auto",
                            queries=len(run.queries), samples=8, prior_for_p0=300,
                            judge=JudgeConfig(base_url=srv.url, model="rules", engine="openai", cache_path=str(tmp_path / "c.sqlite")))
        ex = Explorer(cfg, JudgeClient(cfg.judge), log, scope=tiny_scope)
        stopped = ex.run()
        prompts = [r["messages"][-1]["content"] for r in srv.requests if "Propose up to" in r["messages"][-1]["content"]]
    sources = [h.source for h in ex.scored]
    assert sources[0] == "evidence" and "judge" in sources and sources.index("judge") > sources.index("evidence")
    assert stopped == "the judge said it is done"
    assert prompts and "What the accepted samples keep" in prompts[0] and "first_1_words" in prompts[0]
    confirm_queries = {q.query for q in ex.part("confirm").queries}
    assert not any(q in prompts[0] for q in confirm_queries), "a confirmation query reached the judge"


def test_confirmation_scores_carry_the_empirical_reference(tiny_scope, tmp_path):
    """On a really sampled D (queries are prior prompts), each confirmation score comes with
    the generator-free reference on the same queries."""
    cfg = ExploreConfig(run="s", runs_dir=str(tiny_scope.run_dir.parent), site="L2", budget=2, queries=12, samples=4, eps=2.0,
                        proposer="evidence", prior_for_p0=200)
    ex = Explorer(cfg, None, RunLog(tmp_path / "emp"), scope=tiny_scope)
    from agent.evidence import first_words

    h = first_words(1).hypothesis()
    fn = ex._labeller(h)
    conf, _, _ = ex.score(h, fn, "L2", judge_labelled=False, part="confirm")
    explo, _, _ = ex.score(h, fn, "L2", judge_labelled=False, part="explore")
    assert conf.empirical_fcr is not None and 0.0 <= conf.empirical_fcr <= 1.0 and conf.empirical_kappa is not None
    assert explo.empirical_fcr is None  # the reference is for the scores that are reported


def test_a_negative_time_budget_is_refused_with_the_option_named():
    from typer.testing import CliRunner

    from agent.cli import app

    r = CliRunner().invoke(app, ["explore", "--minutes", "-1", "--judge", "none"])
    assert r.exit_code == 2 and "--minutes" in r.output


def test_a_negative_temperature_is_refused_with_the_option_named():
    from typer.testing import CliRunner

    from agent.cli import app

    r = CliRunner().invoke(app, ["explore", "--temperature", "-1", "--judge", "none"])
    assert r.exit_code == 2 and "--temperature must be ≥ 0" in r.output


def test_explore_samples_at_the_temperature_asked_else_the_runs_own(tiny_scope, tmp_path):
    """`explore --temperature` reaches the sampler and is kept with the samples (the report
    prints it); without it each site samples at the temperature training recorded."""
    runs_dir = str(tiny_scope.run_dir.parent)
    own = tiny_scope.sampling_temperature(tiny_scope.site("L2"))
    for asked, want in ((0.5, 0.5), (None, own)):
        cfg = ExploreConfig(run="s", runs_dir=runs_dir, site="L2", budget=1, proposer="evidence", queries=2, samples=2, temperature=asked)
        ex = Explorer(cfg, None, RunLog(tmp_path / f"x{asked}"), scope=tiny_scope)
        run = ex.sample_run("L2")
        assert run.temperature == want
        assert RunLog(tmp_path / f"x{asked}").read_json("samples_L2.json")["temperature"] == want


def test_a_revision_too_long_to_carry_whole_is_not_proposed(planted):
    """A hypothesis carries at most CODE_CHARS of code; a merge of many values would be cut
    mid-line after screening and score another feature (or crash without a judge), so it is
    left out, and the short one stays."""
    from agent import evidence
    from agent.hypotheses import CODE_CHARS

    ex, run = planted
    best = evidence.first_words(1)
    many = [[f"value{i}", f"other{i}"] for i in range(60)]
    assert len(evidence.merged(best, many).code) > CODE_CHARS

    def run_code(code, texts):  # every sample breaks its query's value
        return [f"value{i % 60}" if i % 2 else f"other{(i + 7) % 60}" for i, _ in enumerate(texts)]

    long_revisions = evidence.refinements([best], run, run_code)
    assert all(len(c.code) <= CODE_CHARS for c in long_revisions)
    short = evidence.refinements([best], run, lambda code, texts: [first_word(t) for t in texts])
    assert short and all(len(c.hypothesis().code) == len(c.code) for c in short)


def test_without_a_judge_broken_code_fails_to_compile_and_the_loop_goes_on(planted):
    from agent.hypotheses import Hypothesis

    ex, _ = planted
    h = Hypothesis(name="broken", statement="the first word", kind="python", code="def feature(text)\n    return 1\n", rationale="")
    out = ex.evaluate(h, 0, 0, source="refined")
    assert out.status == "compile_failed" and out.error


def test_a_confirmation_failure_keeps_the_exploration_score_and_stays_out_of_the_prompt(planted):
    """Code that raises only on a confirmation query: its exploration score stands, the failure
    is kept apart (its message quotes the confirmation text), and the proposer's view of the
    scored hypotheses never holds it."""
    from agent.hypotheses import Hypothesis
    from agent.prompts import render

    ex, run = planted
    secret = ex.part("confirm").queries[0].query
    code = ("import re\n\nSECRET = " + repr(secret) + "\n\ndef feature(text):\n"
            "    if text == SECRET:\n        raise KeyError(text)\n"
            "    words = re.findall(r\"[a-z0-9']+\", text.lower())\n    return words[0] if words else None\n")
    out = ex.evaluate(Hypothesis(name="fw", statement="the first word", kind="python", code=code, rationale=""), 0, 0)
    assert out.status == "scored" and out.score.kappa is not None
    assert out.confirmation is None and "KeyError" in out.confirmation_error and out.error is None
    shown = render("propose", site="L2", site_description="x", eps=0.1, queries=[], scored=[out], n_hypotheses=3,
                   evidence=[], also_tested=[], repeats=[])
    assert secret not in shown


def test_a_failure_at_another_site_is_logged_and_the_run_keeps_its_result(planted, monkeypatch):
    from agent.hypotheses import Hypothesis

    ex, _ = planted
    h = Hypothesis(name="fw", statement="the first word", kind="python",
                   code="import re\n\ndef feature(text):\n    w = re.findall(r\"[a-z]+\", text.lower())\n    return w[0] if w else None\n", rationale="")
    ex.scored.append(ex.evaluate(h, 0, 0))
    ex.cfg = ex.cfg.model_copy(update={"sites": "L1,L2"})

    def broken(*a, **k):
        raise ValueError("the sandbox refused the code at L1")

    monkeypatch.setattr(ex, "score", broken)
    ex.other_sites()  # does not raise
    assert any("other_sites_failed" in e for e in ex.log.read("events"))


def test_the_permutation_min_p_holds_the_whole_search_at_five_percent():
    """Twenty content-free features with each query's samples labelled at random: some one of
    them reaches the search's min-P threshold in about 5% of searches (twenty separate 95%
    intervals let through ~40%); a moderate real feature still clears it beside nulls whose
    common value makes their κ swing widely; the same seed gives the same permutations."""
    import numpy as np

    from agent.confirm import permutation_pvalues, permuted_kappas
    from agent.hypotheses import Hypothesis, Score, ScoredHypothesis
    from scope_core.fcr import fcr

    def scored(hid, q, s, prior, seed):
        w = [[1.0] * len(x) for x in s]
        res = fcr(q, s, w, prior, n_boot=200)
        sc = Score(**res.model_dump(include=set(Score.model_fields)), permuted_kappas=permuted_kappas(q, s, w, prior, n_perm=400, seed=seed))
        return ScoredHypothesis(id=hid, round=0, site="L2", hypothesis=Hypothesis(name=f"h{hid}", statement="h", kind="python"),
                                status="scored", score=sc, confirmation=sc)

    rng = np.random.default_rng(0)

    def null_feature(hid, seed, common=None):
        k = int(rng.integers(2, 6))
        probs = None if common is None else [common] + [(1 - common) / (k - 1)] * (k - 1)
        draw = lambda n: [f"v{x}" for x in rng.choice(k, n, p=probs)]  # noqa: E731
        return scored(hid, draw(24), [draw(8) for _ in range(24)], draw(300), seed)

    searches, luck = 60, 0
    for t in range(searches):
        hs = [null_feature(i, t) for i in range(20)]
        pvals, threshold = permutation_pvalues(hs)
        luck += min(pvals.values()) <= threshold
    assert luck / searches <= 0.12
    q = [f"v{x}" for x in rng.integers(0, 4, 24)]
    moderate = scored(99, q, [[lab if rng.random() < 0.35 else f"v{rng.integers(0, 4)}" for _ in range(8)] for lab in q],
                      [f"v{x}" for x in rng.integers(0, 4, 300)], 0)
    hs = [moderate] + [null_feature(i, 0, common=0.85) for i in range(10)]
    pvals, threshold = permutation_pvalues(hs)
    assert pvals[99] <= threshold
    a = permuted_kappas(q, [[lab] * 8 for lab in q], [[1.0] * 8] * 24, q, seed=3)
    assert a == permuted_kappas(q, [[lab] * 8 for lab in q], [[1.0] * 8] * 24, q, seed=3) and len(a) == 1000


def test_a_resume_with_a_larger_budget_goes_on_where_the_run_stopped(tiny_scope):
    """`explore --resume ID --budget 6` after a run that stopped at its budget of 3 scores more
    hypotheses, keeps the first ones as they were, and saves the raised budget; resumed again
    without options it asks nothing more (a resume raises budgets, never lowers them)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    runs = tiny_scope.run_dir.parent
    log = RunLog(runs / "s" / "explore" / "cli-extend")
    run = planted_run(tiny_scope)
    log.write_json("samples_L2.json", run.model_dump())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCOPE_JUDGE_")}

    def explore(*extra: str) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "agent.cli", "explore", "--judge", "none", "--run", "s", "--runs-dir", str(runs),
                            "--site", "L2", "--queries", str(len(run.queries)), "--resume", "cli-extend", *extra],
                           env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    def scored() -> list[dict]:
        return [h for h in json.loads((log.root / "result.json").read_text())["ranking"] if h["status"] == "scored"]

    explore("--budget", "3")
    first = {h["hypothesis"]["name"]: h["score"]["kappa"] for h in scored()}
    assert len(first) == 3 and json.loads((log.root / "state.json").read_text())["stopped"] == "budget"
    r = explore("--budget", "6")
    assert "going on to --budget 6" in r.stderr.replace("\n", " ")
    after = {h["hypothesis"]["name"]: h["score"]["kappa"] for h in scored()}
    assert len(after) > 3 and all(after[k] == v for k, v in first.items())
    assert json.loads((log.root / "config.json").read_text())["budget"] == 6
    again = explore()
    assert "finished before" in again.stderr.replace("\n", " ") and len(scored()) == len(after)


def test_a_resumed_run_keeps_its_scores_at_other_sites(planted, tiny_scope, monkeypatch):
    """Scores at `--sites` are logged as they come; a resumed run reads them back instead of
    sampling and labelling those sites again (with a judge, each is a labelling pass)."""
    from agent.hypotheses import Hypothesis

    ex, _ = planted
    h = Hypothesis(name="fw", statement="the first word", kind="python",
                   code="import re\n\ndef feature(text):\n    w = re.findall(r\"[a-z]+\", text.lower())\n    return w[0] if w else None\n", rationale="")
    out = ex.evaluate(h, 0, 0)
    ex.scored.append(out)
    ex.log.append("hypotheses", {"hypothesis": out.model_dump()})
    calls: list[str] = []

    def fake_score(hyp, labeller, site, judge_labelled=False):  # the scoring itself is tested elsewhere
        calls.append(site)
        return out.score, None, None

    monkeypatch.setattr(Explorer, "score", lambda self, *a, **k: fake_score(*a, **k))
    ex.cfg = ex.cfg.model_copy(update={"sites": "L1,L2"})
    ex.other_sites()
    assert calls == ["L1"]
    again = Explorer(ex.cfg, None, ex.log, scope=tiny_scope)
    assert again.scored[0].other_sites["L1"] == out.score
    again.other_sites()
    assert calls == ["L1"]  # nothing scored twice


def test_a_run_resumed_from_before_anchor_shares_keeps_one_anchoring(planted, tiny_scope, monkeypatch):
    """An explore whose explored site was sampled on the query under the old `auto` (a
    generator trained with ball neighbours) samples its other sites by that rule too; one
    sampled under today's `auto` lets every site share in the ball."""
    ex, run = planted
    monkeypatch.setattr(tiny_scope, "neighbour_mix", lambda site: 0.7)
    assert ex.anchors_at("L2") == "auto"  # the explored site itself is read from its kept samples
    assert ex.anchors_at("L1") == "query"  # kept samples on the query, share unrecorded: the old rule
    ex.log.write_json("samples_L2.json", run.model_copy(update={"anchors": "ball", "anchor_share": 0.3}).model_dump())
    assert ex.anchors_at("L1") == "auto"
    ex.log.write_json("samples_L2.json", run.model_copy(update={"anchors": "ball"}).model_dump())
    monkeypatch.setattr(tiny_scope, "neighbour_mix", lambda site: 0.0)  # both rules anchor all on the ball
    assert ex.anchors_at("L1") == "auto"
    ex.cfg = ex.cfg.model_copy(update={"anchors": "query"})
    assert ex.anchors_at("L1") == "query"
