"""What the thin CLI hands to the modules: each piece of a command's logic, alone and without a
model (the commands end to end are tests/test_cli.py's)."""

from __future__ import annotations

import pytest
from rich.console import Console

from agent.label import check_method, nothing_labelled, stats_line
from agent.loop import proposer_for
from agent.plan_report import plan_hardware
from agent.report import explore_root, ranking_table
from scope_core.api import AutoscopeError
from serving.launch import serve_command


def test_judge_serve_engines_and_their_client_names() -> None:
    assert serve_command("embedded", "m", "127.0.0.1", 1)[1] == "llamacpp"
    assert serve_command("llamacpp", "m", "127.0.0.1", 1)[1] == "llamacpp"
    assert serve_command("batched", "m", "127.0.0.1", 1)[1] == "batched"
    with pytest.raises(AutoscopeError, match="unknown engine 'tgi'"):
        serve_command("tgi", "m", "h", 1)


def test_explore_judge_modes_name_a_proposer() -> None:
    assert [proposer_for(m) for m in ("auto", "none", "only")] == ["auto", "evidence", "judge"]
    with pytest.raises(AutoscopeError, match="unknown --judge 'all'"):
        proposer_for("all")


def test_an_explore_run_is_found_by_path_or_by_id(tmp_path) -> None:
    root = tmp_path / "runs" / "r" / "explore" / "x1"
    root.mkdir(parents=True)
    assert explore_root(str(root), "other", "nowhere") == root
    assert explore_root("x1", "r", str(tmp_path / "runs")) == root
    with pytest.raises(AutoscopeError, match="no explore run 'x2'"):
        explore_root("x2", "r", str(tmp_path / "runs"))


def test_an_empty_ranking_still_prints_its_title() -> None:
    console = Console(record=True, width=200)
    console.print(ranking_table([], None, "L18", "budget spent"))
    assert "hypotheses at L18 (budget spent); search null κ None" in console.export_text()


def test_plan_hardware_defaults(tmp_path) -> None:
    gpus, kind, disk = plan_hardware(0, None, str(tmp_path / "not" / "yet"))
    assert (gpus, kind) == (0, "cpu") and disk is not None and disk > 0  # the free disk of the nearest existing folder
    assert plan_hardware(8, None, "runs") == (8, "h100", None)
    assert plan_hardware(0, "A100", "runs") == (1, "a100", None)  # a GPU kind alone means one GPU


def test_label_method_and_outcome_lines() -> None:
    assert check_method("channel") == "channel"
    with pytest.raises(AutoscopeError, match="unknown --method 'vote'"):
        check_method("vote")
    stats = {"rows": 3, "labelled_now": 2, "failed": 2, "seconds": 1.5, "first_error": "timeout"}
    assert stats_line(stats) == "rows=3 labelled_now=2 failed=2 seconds=1.50"
    assert "every one of the 2 rows failed (first: timeout); see the error field of out.jsonl" in (nothing_labelled(stats, "out.jsonl") or "")
    assert nothing_labelled({**stats, "failed": 1}, "out.jsonl") is None
