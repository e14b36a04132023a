"""The CLI end to end on a tiny model: it works, and bad input gets one clear line,
a non-zero exit, and leaves the run untouched."""

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app

runner = CliRunner()


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tiny_llama_path, tmp_path_factory):
    runs = tmp_path_factory.mktemp("cli_runs")
    res = runner.invoke(app, ["train", "--run", "c", "--runs-dir", str(runs), "--target", str(tiny_llama_path),
                              "--backbone", str(tiny_llama_path), "--task", "refusal", "--n", "300", "--heldout", "40",
                              "--sites", "L1,L2", "--minutes", "0.05"])
    assert res.exit_code == 0, res.output
    assert "held-out loss" in res.output and "ε" in res.output and "sampling temperature" in res.output
    # a few seconds of training on a random model: the run must say it is weak, and what to try
    assert "WEAK INVERTER" in res.output and "(--neighbour-mix 0;" in " ".join(res.output.split())
    return runs


def _run(args, runs):
    return runner.invoke(app, args + ["--run", "c", "--runs-dir", str(runs)])


def test_sample_and_fcr_commands(run_dir):
    res = _run(["sample", "--site", "L2", "--prompt", "write an email", "--n", "3", "--eps", "0.9"], run_dir)
    assert res.exit_code == 0, res.output
    assert "ε=0.9" in res.output and "refusal_rate=" in res.output
    out = " ".join(res.output.split())
    assert "training prompts within ε:" in out and "The prior near this query:" in out and "lookup_refusal_rate=" in out
    assert "refusal_ball_" not in out  # the strata are said in the sentence, not in the k=v line
    res = _run(["fcr", "--feature", "first_word,length_bucket", "--sites", "L1-L2", "--queries", "4", "--n", "2"], run_dir)
    assert res.exit_code == 0, res.output
    assert "FCR" in res.output and "κ" in res.output
    res = _run(["fcr", "--feature", "first_word", "--sites", "L2", "--queries", "4", "--n", "2", "--anchors", "ball", "--eps", "1.5"], run_dir)
    assert res.exit_code == 0, res.output
    assert "ball-anchored" in res.output
    res = _run(["fcr", "--feature", "first_word", "--sites", "L2", "--queries", "3", "--n", "2", "--temperature", "0.5", "--json",
                str(run_dir / "t.json")], run_dir)
    assert res.exit_code == 0, res.output
    assert "temperature 0.5" in " ".join(res.output.split())
    assert json.loads((run_dir / "t.json").read_text())[0]["temperature"] == 0.5
    png = list((run_dir / "c" / "results").glob("fcr_*.png"))
    assert png and png[0].stat().st_size > 5000


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["sample", "--site", "L7"], "layers 0-3"),
        (["sample", "--site", "Q1"], "unknown site"),
        (["sample", "--site", "L3"], "was not trained"),
        (["sample", "--site", "L2", "--prompt", "word " * 80], "over the limit"),
        (["sample", "--site", "L2", "--kernel", "box"], "unknown kernel"),
        (["sample", "--site", "L2", "--eps", "-1"], "positive"),
        (["fcr", "--feature", "nonsense", "--sites", "L2"], "unknown feature"),
        (["fcr", "--feature", "tests_feature_raises:boom", "--sites", "L2", "--queries", "2", "--n", "1"], "boom raised ZeroDivisionError"),
        (["fcr", "--feature", "first_word", "--sites", "L2", "--only", "reason=nope"], "no held-out prompt matches"),
        (["fcr", "--feature", "first_word", "--sites", "L2", "--anchors", "centre"], "not one of auto, query, ball"),
        (["sample", "--site", "L2", "--temperature", "-0.5"], "--temperature must be ≥ 0"),
        (["fcr", "--feature", "first_word", "--sites", "L2", "--temperature", "-1"], "--temperature must be ≥ 0"),
    ],
)
def test_bad_input_gives_one_clear_line_and_keeps_the_run(run_dir, args, fragment, tmp_path, monkeypatch):
    (tmp_path / "tests_feature_raises.py").write_text("def boom(text):\n    return 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = _digest(run_dir / "c" / "inverter")
    res = _run(args, run_dir)
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and fragment in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert _digest(run_dir / "c" / "inverter") == before


def test_train_bad_data_is_refused_before_anything_is_written(tmp_path, tiny_llama_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    for data, fragment in [(str(tmp_path / "missing.json"), "does not exist"), (str(bad), "unknown CSV columns")]:
        res = runner.invoke(app, ["train", "--run", "x", "--runs-dir", str(tmp_path / "runs"), "--target", str(tiny_llama_path),
                                  "--task", "none", "--data", data])
        assert res.exit_code == 2 and fragment in " ".join(res.output.split())
    assert not (tmp_path / "runs" / "x" / "data").exists()


def test_train_refuses_a_step_floor_above_its_step_budget(tmp_path, tiny_llama_path):
    res = runner.invoke(app, ["train", "--run", "x", "--runs-dir", str(tmp_path / "runs"), "--target", str(tiny_llama_path),
                              "--min-steps", "900", "--max-steps", "800"])
    assert res.exit_code == 2 and "lower --min-steps or raise --max-steps" in " ".join(res.output.split())
    assert not (tmp_path / "runs" / "x").exists()


def test_missing_run_is_explained(tmp_path):
    res = runner.invoke(app, ["sample", "--site", "L1", "--run", "nothing", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and "autoscope train" in res.output


def test_fcr_task_trains_its_run_once_then_reuses_it(tiny_llama_path, tmp_path):
    runs = tmp_path / "runs"
    args = ["fcr", "--task", "refusal", "--target", str(tiny_llama_path), "--backbone", str(tiny_llama_path), "--prior-n", "300",
            "--features", "first_word,length_bucket", "--sites", "L1-L2", "--minutes", "0.05", "--queries", "3", "--n", "2",
            "--only", "harmful", "--runs-dir", str(runs)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    from agent.fcr_report import study_run_name

    run_dir = runs / study_run_name("refusal", str(tiny_llama_path), "L1-L2")
    assert run_dir.name == f"refusal-{tiny_llama_path.name.lower().replace('_', '-')}-L1-L2"
    assert (run_dir / "inverter" / "inverter.safetensors").exists()
    assert (run_dir / "results" / "fcr_first_word_length_bucket_L1-L2_harmful.png").stat().st_size > 5000
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "training" in res.output and "training" not in again.output


def test_fcr_rejects_an_unknown_labeller(run_dir):
    res = _run(["fcr", "--features", "first_word", "--labeller", "oracle"], run_dir)
    assert res.exit_code == 2 and "unknown labeller" in res.output


def test_fcr_table_is_readable_in_a_log_and_written_for_scripts(run_dir, tmp_path):
    """Piped (not a terminal), the table keeps whole cells; --json and --csv write its rows."""
    import csv
    import json

    out_json, out_csv = tmp_path / "rows.json", tmp_path / "rows.csv"
    res = _run(["fcr", "--feature", "first_word,length_bucket", "--sites", "L2", "--queries", "4", "--n", "2",
                "--json", str(out_json), "--csv", str(out_csv)], run_dir)
    assert res.exit_code == 0, res.output
    assert "length_bucket" in res.output and "empirical κ [95% CI]" in res.output and "FCR − empirical [95% CI]" in res.output
    assert "…" not in res.output and "early-stopping split" not in res.output
    assert "conditional empirical κ [95% CI]" in res.output
    rows = json.loads(out_json.read_text())
    assert [r["feature"] for r in rows] == ["first_word", "length_bucket"]
    assert {"kappa", "kappa_ci_low", "kappa_ci_high", "empirical_kappa", "p0"} <= set(rows[0])
    for r in rows:  # the gap carries its paired CI wherever both rows scored queries
        if r["generator_minus_empirical"] is not None and r["generator_minus_empirical_ci_low"] is not None:
            assert r["generator_minus_empirical_ci_low"] <= r["generator_minus_empirical"] + 1e-9
            assert r["generator_minus_empirical"] <= r["generator_minus_empirical_ci_high"] + 1e-9
    with out_csv.open() as f:
        assert [r["feature"] for r in csv.DictReader(f)] == ["first_word", "length_bucket"]


def test_fcr_warns_when_a_run_early_stopped_on_its_fcr_queries(run_dir, tmp_path):
    """A run saved before the separate early-stopping split chose its checkpoint on the held-out
    prompts that FCR queries come from: `fcr` still scores it, and says so."""
    import json
    import shutil

    old = tmp_path / "runs"
    shutil.copytree(run_dir, old, symlinks=True)
    split_path = old / "c" / "data" / "split.json"
    split = json.loads(split_path.read_text())
    split.pop("valid")
    split_path.write_text(json.dumps(split))
    res = _run(["fcr", "--feature", "length_bucket", "--sites", "L2", "--queries", "3", "--n", "2"], old)
    assert res.exit_code == 0, res.output
    assert "early-stopping split" in " ".join(res.output.split()) and "length_bucket" in res.output


def test_fcr_audit_sheet_then_audit_set_gives_the_labellers_accuracy_on_generated_samples(run_dir, tmp_path):
    """The round trip a user without a grammar makes: `--audit-sheet` writes accepted samples with
    empty labels, a person fills them in, `--audit-set` reads them back as the labeller's accuracy."""
    import json

    sheet = tmp_path / "sheet.jsonl"
    args = ["fcr", "--feature", "length_bucket", "--sites", "L2", "--queries", "4", "--n", "3", "--eps", "0.9"]
    res = _run(args + ["--audit-sheet", str(sheet), "--audit-sheet-size", "5"], run_dir)
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in sheet.read_text().splitlines()]
    assert 1 <= len(lines) <= 5 and all(x["labels"] == {"length_bucket": ""} and x["site"] == "L2" for x in lines)
    assert len({x["text"] for x in lines}) == len(lines)
    from features.registry import get_feature

    truth = get_feature("length_bucket")([x["text"] for x in lines])
    for x, label in zip(lines, truth):
        x["labels"]["length_bucket"] = label
    lines[0]["labels"]["length_bucket"] = "a label no text has"  # one wrong on purpose
    sheet.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out_json = tmp_path / "rows.json"
    res = _run(args + ["--audit-set", str(sheet), "--json", str(out_json)], run_dir)
    assert res.exit_code == 0, res.output
    row = json.loads(out_json.read_text())[0]
    assert row["labeller_audited_samples"] == len(lines)
    assert row["labeller_accuracy_on_samples"] == pytest.approx((len(lines) - 1) / len(lines))
    assert "labelled by people" in " ".join(res.output.split())


def test_fcr_refuses_an_audit_set_it_cannot_read_before_sampling(run_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello", "labels": {"length_bucket": "short"}}\nnot json\n')
    res = _run(["fcr", "--feature", "length_bucket", "--sites", "L2", "--audit-set", str(bad)], run_dir)
    assert res.exit_code != 0 and "bad.jsonl line 2: not valid JSON" in " ".join(res.output.split())
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "hello", "labels": {"harmfulness": "harmless"}}\n')
    res = _run(["fcr", "--feature", "length_bucket", "--sites", "L2", "--audit-set", str(other)], run_dir)
    assert res.exit_code != 0 and "none of length_bucket" in " ".join(res.output.split())


def test_fcr_does_not_write_a_sheet_over_labels_people_gave(run_dir, tmp_path):
    import json

    sheet = tmp_path / "filled.jsonl"
    sheet.write_text(json.dumps({"text": "hello", "labels": {"length_bucket": "short"}}) + "\n")
    res = _run(["fcr", "--feature", "length_bucket", "--sites", "L2", "--audit-sheet", str(sheet)], run_dir)
    assert res.exit_code != 0 and "already holds 1 labels" in " ".join(res.output.split())
    assert json.loads(sheet.read_text())["labels"]["length_bucket"] == "short"
