"""`autoscope fcr` as a job of phases (agent/fcr_report.py), each run alone: the config the
command builds, its checks, train-if-missing, labellers, queries, sampling, scoring,
presenting and saving."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from agent.fcr_report import (
    FCRJobConfig,
    check_job,
    labellers,
    present,
    sample_site,
    save_results,
    score_site,
    train_if_missing,
)
from agent.judging.judge import JudgeConfig
from agent.loop import heldout_queries
from scope_core.api import AutoscopeError, Scope


def test_the_config_reads_the_command_lines_forms(tmp_path) -> None:
    cfg = FCRJobConfig(features="harmfulness, reason,,", runs_dir=str(tmp_path))
    assert cfg.features == ["harmfulness", "reason"]
    assert cfg.run_dir == tmp_path / "default" and cfg.pool_limit is None
    study = FCRJobConfig(features=["first_word"], task="refusal", target="gpt2", sites="L1,L2", runs_dir="r", labeller="llm")
    assert study.run_dir == Path("r/refusal-gpt2-L1+L2") and study.pool_limit == 240
    assert study.model_copy(update={"run": "mine"}).run_dir == Path("r/mine")


@pytest.mark.parametrize("update, fragment", [({"labeller": "oracle"}, "unknown labeller"), ({"kernel": "box"}, "unknown kernel")])
def test_unknown_choices_are_refused_before_any_work(update, fragment) -> None:
    with pytest.raises(AutoscopeError, match=fragment):
        check_job(FCRJobConfig(features=["first_word"], **update))


def test_a_trained_run_is_reused_not_retrained(tiny_scope) -> None:
    run_dir = tiny_scope.run_dir
    cfg = FCRJobConfig(features=["first_word"], task="refusal", run=run_dir.name, runs_dir=str(run_dir.parent))
    console = Console(record=True)
    assert train_if_missing(cfg, console) == run_dir
    assert "training" not in console.export_text()


def test_each_phase_alone_on_a_tiny_run(tiny_scope, tmp_path) -> None:
    run_dir = Path(shutil.copytree(tiny_scope.run_dir, tmp_path / "s"))  # the session's run stays as it was
    scope = Scope(run_dir)
    cfg = FCRJobConfig(features="first_word,length_bucket", sites="L2", run="s", runs_dir=str(tmp_path), queries=3, n=2)
    site = scope.site("L2")
    with contextlib.ExitStack() as stack:
        feats = labellers(cfg, scope, stack)
    assert [f.name for f in feats] == ["first_word", "length_bucket"]
    llm = cfg.model_copy(update={"labeller": "llm", "judge": JudgeConfig(base_url="http://127.0.0.1:9/v1")})
    with contextlib.ExitStack() as stack:  # python features need no judge: none is asked or started
        assert [f.name for f in labellers(llm, scope, stack)] == ["first_word", "length_bucket"]
    idx = heldout_queries(scope, cfg.only, cfg.queries)
    assert len(idx) == 3
    res = sample_site(cfg, scope, site, idx)
    assert len(res.queries) == 3 and (run_dir / "results" / "sample_L2.json").exists()
    reports = score_site(cfg, scope, site, res, feats, None)
    assert [(r.feature, r.site) for r in reports] == [("first_word", "L2"), ("length_bucket", "L2")]
    console = Console(record=True, width=240)
    present(cfg, reports, feats, len(idx), console)
    assert "FCR on 3 held-out queries, 2 samples each, kernel hard" in console.export_text()
    save_results(cfg, scope, reports, idx, 1, console)
    saved = json.loads((run_dir / "results" / "fcr_first_word_length_bucket_L2.json").read_text())
    assert saved["queries"] == idx and len(saved["reports"]) == 2
    # a study at another ε is another result: it gets its own file and leaves this one as it was
    before = (run_dir / "results" / "fcr_first_word_length_bucket_L2.json").read_text()
    save_results(cfg.model_copy(update={"eps": 0.3, "temperature": 0.75}), scope, reports[:1], idx, 1, console)
    assert len(json.loads((run_dir / "results" / "fcr_first_word_length_bucket_L2_eps0.3_T0.75.json").read_text())["reports"]) == 1
    assert (run_dir / "results" / "fcr_first_word_length_bucket_L2.json").read_text() == before
    sample_site(cfg.model_copy(update={"eps": 0.3}), scope, site, idx[:1])
    assert len(json.loads((run_dir / "results" / "sample_L2_eps0.3.json").read_text())["queries"]) == 1
    assert len(json.loads((run_dir / "results" / "sample_L2.json").read_text())["queries"]) == 3  # the default study's samples kept
    with pytest.raises(AutoscopeError, match="no held-out prompt matches --only reason=nope"):
        heldout_queries(scope, "reason=nope", 3)


def test_the_eps_cell_says_how_much_of_a_row_was_ball_anchored() -> None:
    """A row all on the ball (or saved before shares were recorded) reads "ball-anchored"; a
    share of it says so; a query-anchored row says nothing."""
    from agent.fcr_report import _cell

    row = {"eps": 0.0818, "metric": "cosine", "eps_quantile": 0.05}
    assert _cell({**row, "anchors": "ball", "anchor_share": 0.3}, "ε") == "0.0818 (cosine, q=0.05, 30% ball-anchored)"
    assert _cell({**row, "anchors": "ball", "anchor_share": 1.0}, "ε") == "0.0818 (cosine, q=0.05, ball-anchored)"
    assert _cell({**row, "anchors": "ball"}, "ε") == "0.0818 (cosine, q=0.05, ball-anchored)"
    assert _cell({**row, "anchors": "query", "anchor_share": None}, "ε") == "0.0818 (cosine, q=0.05)"
