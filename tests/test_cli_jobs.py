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


def test_judge_serve_passes_vllms_gpu_options_and_refuses_them_elsewhere(monkeypatch) -> None:
    import importlib.util

    from serving.launch import VllmOptions

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    cmd, eng = serve_command("vllm", "meta-llama/Llama-3.1-70B-Instruct", "0.0.0.0", 8000,
                             vllm=VllmOptions(tensor_parallel_size=4, gpu_memory_utilization=0.6, dtype="bfloat16"))
    assert eng == "vllm" and cmd[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"]
    flags = dict(zip(cmd[3::2], cmd[4::2]))
    assert flags["--tensor-parallel-size"] == "4" and flags["--gpu-memory-utilization"] == "0.6" and flags["--dtype"] == "bfloat16"
    assert "--dtype" not in serve_command("vllm", "m", "h", 1)[0]  # auto: vLLM reads the model's own
    with pytest.raises(AutoscopeError, match="use them with --engine vllm"):
        serve_command("batched", "m", "h", 1, vllm=VllmOptions(tensor_parallel_size=2))
    with pytest.raises(ValueError):
        VllmOptions(gpu_memory_utilization=1.5)


def test_an_error_message_keeps_its_brackets(capsys) -> None:
    """`pip install 'autoscope[vllm]'` must reach the user whole, not as rich markup."""
    import typer

    from agent.cli import friendly

    @friendly
    def fails() -> None:
        raise AutoscopeError("vllm is not installed: pip install 'autoscope[vllm]' or 'llama-cpp-python[server]'")

    with pytest.raises(typer.Exit):
        fails()
    assert "pip install 'autoscope[vllm]' or 'llama-cpp-python[server]'" in capsys.readouterr().err


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
