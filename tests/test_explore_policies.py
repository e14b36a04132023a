"""The explore loop spends judge labels where they can pay off: a judge-labelled
hypothesis no better than chance on a small screen is not labelled on all of D, and a
hypothesis the judge repeats is not scored again.

The judge here is a real HTTP server answering by fixed rules (tests/flaky_server.py), so
the count of labelling requests is exact; the loop against the real embedded judge is
tested in test_agent_loop.py."""

from __future__ import annotations

import pytest
from flaky_server import FlakyServer

from agent.judging.judge import JudgeClient, JudgeConfig
from agent.loop import ExploreConfig, Explorer
from agent.runlog import RunLog


@pytest.fixture()
def scope(tiny_scope):
    return tiny_scope


def _rule_judge(body: dict) -> dict:
    """Proposes one LLM hypothesis; labels every input 'yes' (a constant: chance level)."""
    rf = body.get("response_format", {})
    props = (rf.get("json_schema", {}).get("schema") or rf.get("schema") or {}).get("properties", {})
    if "hypotheses" in props:
        return {"hypotheses": [{"name": "always_yes", "statement": "everything is a yes", "kind": "llm",
                                "question": "Is this a yes?", "labels": ["yes", "no"], "rationale": "test"}], "done": True}
    if "labels" in props:
        return {"labels": ["yes"] * props["labels"]["minItems"]}
    return {"label": "yes"}


@pytest.mark.parametrize("screen", [4, 0])
def test_chance_level_llm_hypothesis_is_screened_not_scored_on_all_queries(scope, tmp_path, screen):
    with FlakyServer([], default=_rule_judge) as srv:
        cfg = ExploreConfig(run="s", runs_dir=str(scope.run_dir.parent), site="L2", budget=1, queries=12, samples=4, eps=2.0,
                            screen_queries=screen, screen_samples=2, prior_for_p0_llm=8, label_batch=1,
                            proposer="judge", judge=JudgeConfig(base_url=srv.url, model="rules", engine="openai", cache_path=str(tmp_path / "c.sqlite")))
        log = RunLog(tmp_path / f"x{screen}")
        ex = Explorer(cfg, JudgeClient(cfg.judge), log, scope=scope)
        ex.run()
        label_inputs = [r for r in srv.requests if "Is this a yes?" in r["messages"][-1]["content"]]
    (h,) = ex.scored
    run = ex.sample_run("L2")
    if screen:
        assert h.score.degenerate  # a constant feature: p0 = 1, it cannot clear chance
        assert "screened out" in h.note and h.screened_out and ex.best_kappa() == float("-inf")
        from agent.prompts import render

        shown = render("propose", site="L2", site_description="x", eps=0.1, queries=[], scored=[h], n_hypotheses=3,
                       evidence=[], also_tested=[], repeats=[])
        assert "screened out on 4 queries" in shown
        most = 4 + 4 * 2 + 4  # screened queries + their first samples + half the p0 draw
        assert len(label_inputs) <= most
    else:
        assert h.note is None and not h.screened_out
        distinct = {q.query for q in run.queries} | {s.text for q in run.queries for s in q.samples if s.weight > 0}
        assert len(label_inputs) >= min(len(distinct), 12 + 1)


def test_repeated_hypotheses_are_skipped_and_the_loop_stops_when_nothing_new_comes(scope, tmp_path):
    from agent.loop import MAX_IDLE_ROUNDS

    with FlakyServer([], default=_rule_judge) as srv:
        cfg = ExploreConfig(run="s", runs_dir=str(scope.run_dir.parent), site="L2", budget=5, queries=6, samples=2, eps=2.0,
                            screen_queries=0, prior_for_p0_llm=4, label_batch=1, stop_when_done=False, patience=100,
                            proposer="judge", judge=JudgeConfig(base_url=srv.url, model="rules", engine="openai", cache_path=str(tmp_path / "c.sqlite")))
        log = RunLog(tmp_path / "dup")
        ex = Explorer(cfg, JudgeClient(cfg.judge), log, scope=scope)
        stopped = ex.run()
        proposals = [r for r in srv.requests if "Propose up to" in r["messages"][-1]["content"]]
    assert len(ex.scored) == 1 and stopped == "no new hypotheses"
    # after a round of repeats the judge is told what it repeated and sampled warmer
    # (round 0 brings the idea, round 1 repeats it; from round 2 on the loop reacts)
    temps = [r.get("temperature", 0.0) for r in proposals]
    assert temps[:2] == [0.0, 0.0] and all(b > a or b == 1.0 for a, b in zip(temps[1:], temps[2:]))
    assert all("only repeated ideas" not in r["messages"][-1]["content"] for r in proposals[:2])
    assert all("always_yes: everything is a yes" in r["messages"][-1]["content"] for r in proposals[2:])
    assert len(log.read("rounds")) == 1 + MAX_IDLE_ROUNDS  # (a repeated prompt is answered from the cache)
    assert [e["duplicate"] for e in log.read("events")] == ["always_yes"] * MAX_IDLE_ROUNDS


def test_the_proposal_prompt_stays_bounded_as_hypotheses_pile_up():
    """All tested hypotheses in full outgrew the embedded judge's context after ~18; the
    prompt shows the best and the latest in full and names the rest."""
    from agent.hypotheses import Counterexample, Hypothesis, Score, ScoredHypothesis
    from agent.judging.proposer import HISTORY_BEST, HISTORY_RECENT, history_for_prompt
    from agent.prompts import render

    def hyp(i: int) -> ScoredHypothesis:
        h = Hypothesis(name=f"h{i}", statement="a long statement " * 40, kind="python", code="def feature(text): return 'a'")
        c = Counterexample(query="q", query_label="a", sample="s", sample_label="b", distance=0.01)
        return ScoredHypothesis(id=i, round=i, site="L18", hypothesis=h, status="scored",
                                score=Score(fcr=0.5, ci_low=0.4, ci_high=0.6, p0=0.5, kappa=i % 7 / 10, degenerate=False, n_queries=8), counterexamples=[c] * 2)

    scored = [hyp(i) for i in range(60)]
    shown, names, with_counter = history_for_prompt(scored)
    assert len(shown) <= HISTORY_BEST + HISTORY_RECENT and len(shown) + len(names) == 60
    assert {h.hypothesis.name for h in scored[-HISTORY_RECENT:]} <= {h.hypothesis.name for h in shown}
    assert max(h.score.kappa for h in scored) == max(h.score.kappa for h in shown) and len(with_counter) == 3
    text = render("propose", site="L18", site_description="attention output", eps="0.1", queries=[], scored=shown, also_tested=names,
                  n_hypotheses=3, repeats=[])
    few = render("propose", site="L18", site_description="attention output", eps="0.1", queries=[], scored=scored[:10], also_tested=[],
                 n_hypotheses=3, repeats=[])
    assert "h0," in text and "Also tested" in text and len(text) < 1.3 * len(few)


def test_the_loop_stops_when_the_judge_keeps_failing(scope, tmp_path):
    with FlakyServer([], default="wrong") as srv:  # every answer of the wrong shape
        cfg = ExploreConfig(run="s", runs_dir=str(scope.run_dir.parent), site="L2", budget=5, queries=6, samples=2, eps=2.0,
                            stop_when_done=False, patience=100,
                            proposer="judge", judge=JudgeConfig(base_url=srv.url, model="rules", engine="openai", cache_path=str(tmp_path / "c.sqlite")))
        ex = Explorer(cfg, JudgeClient(cfg.judge), RunLog(tmp_path / "fail"), scope=scope)
        assert ex.run() == "judge failed repeatedly"
    from agent.loop import MAX_JUDGE_FAILURES

    assert len([e for e in ex.log.read("events") if "error" in e]) == MAX_JUDGE_FAILURES


def test_a_resumed_explore_keeps_its_saved_settings_and_anchoring():
    """Saved settings win on resume, except the judge's address; an explore saved before
    `anchors` existed resumes anchored on the query, as it sampled, not on today's `auto`."""
    from agent.loop import resumed_config

    asked = ExploreConfig(run="r", budget=40, judge=JudgeConfig(base_url="http://localhost:9999/v1"))
    old = ExploreConfig(run="r", budget=12).model_dump()
    old.pop("anchors")
    cfg = resumed_config(old, asked, "x1")
    assert cfg.anchors == "query" and cfg.judge.base_url == "http://localhost:9999/v1" and cfg.explore_id == "x1"
    assert cfg.budget == 40  # asked for: a resume may raise a budget ...
    assert resumed_config(old, ExploreConfig(run="r", budget=5), "x1").budget == 12  # ... never lower it
    assert resumed_config(old, ExploreConfig(run="r"), "x1").budget == 12  # and a default is not a request
    assert resumed_config(old, ExploreConfig(run="r", minutes=None), "x1").minutes is None  # --minutes 0: no limit
    assert resumed_config(old, ExploreConfig(run="r", minutes=2.0), "x1").minutes == 2.0  # minutes are this session's
    new = ExploreConfig(run="r", budget=12, anchors="ball").model_dump()
    assert resumed_config(new, asked, "x1").anchors == "ball"


def test_only_a_budget_or_time_stop_is_extended_and_only_by_what_was_asked():
    from agent.loop import extends

    more, same = ExploreConfig(run="r", budget=40), ExploreConfig(run="r", budget=20)
    assert extends("budget", more, 20, {"budget"}) and not extends("budget", same, 20, {"budget"})
    assert extends("time budget (6 min) spent", same, 9, {"minutes"})  # new minutes for this session
    assert extends("time budget (6 min) spent", more, 9, {"budget"})
    assert not extends("time budget (6 min) spent", same, 9, set())  # a plain resume asks for nothing
    for reason in ("the judge said it is done", "κ stopped improving", "too many failed hypotheses", "judge unavailable"):
        assert not extends(reason, more, 5, {"budget", "minutes"})


def _scored(name: str, explore_kappa: float, confirm_kappa: float, low: float):
    from agent.hypotheses import Hypothesis, Score, ScoredHypothesis

    def score(k, lo):
        return Score(fcr=0.5, ci_low=0.4, ci_high=0.6, p0=0.25, kappa=k, degenerate=False, n_queries=20,
                     kappa_ci_low=lo, kappa_ci_high=min(1.0, k + 0.2), n_values=4, n_query_values=4)

    return ScoredHypothesis(id=hash(name) % 1000, round=0, site="L2", hypothesis=Hypothesis(name=name, statement=name, kind="python"),
                            status="scored", score=score(explore_kappa, explore_kappa - 0.2), confirmation=score(confirm_kappa, low))


def test_the_headline_is_chosen_on_exploration_and_nothing_is_confirmed_without_a_null():
    """Of two confirmed hypotheses the verdict names the one that led on the exploration
    queries, not the one whose confirmation κ happened to be larger (that choice would be made
    on the confirmation set itself); a run stopped before its search null confirms nothing."""
    from agent.hypotheses import SearchNull, is_confirmed, verdict

    led, lucky = _scored("led_on_exploration", 0.8, 0.5, 0.3), _scored("lucky_on_confirmation", 0.4, 0.7, 0.5)
    null = SearchNull(max_kappa=0.05, n_features=2, n_hypotheses=2)
    assert is_confirmed(led, null) and is_confirmed(lucky, null)
    text = verdict("L2", [lucky, led], null)
    assert text.index("led_on_exploration") < text.index("lucky_on_confirmation")
    assert not is_confirmed(led, None) and not is_confirmed(led, SearchNull(max_kappa=None))
    assert "nothing is confirmed until it is resumed" in verdict("L2", [lucky, led], None)


def test_a_search_null_that_does_not_cover_every_hypothesis_is_not_used(tmp_path):
    from agent.hypotheses import SearchNull
    from agent.report import saved_null

    log = RunLog(tmp_path / "x")
    hs = [_scored("a", 0.5, 0.5, 0.3), _scored("b", 0.5, 0.5, 0.3), _scored("c", 0.5, 0.5, 0.3)]
    log.write_json("search_null.json", SearchNull(max_kappa=0.05, n_features=2, n_hypotheses=2).model_dump())
    assert saved_null(log, hs) is None  # drawn for two; three were scored
    log.write_json("search_null.json", SearchNull(max_kappa=0.05, n_features=3, n_hypotheses=3).model_dump())
    assert saved_null(log, hs).max_kappa == 0.05
