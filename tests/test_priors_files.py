import json

import pytest
from conftest import REFUSAL_DATA

from scope_core.data import PriorConfig, build_examples, split_indices
from scope_core.errors import AutoscopeError
from scope_core.priors.files import HUMAN_TO_REASON, load_file

needs_shared = pytest.mark.skipif(not REFUSAL_DATA.exists(), reason="../shared/data/refusal not present")


@needs_shared
@pytest.mark.parametrize(
    "name, harm, reason_field",
    [
        ("harmful_train.json", "harmful", False),
        ("harmless_val.json", "harmless", False),
        ("advbench_harmful_behaviors.csv", "harmful", False),
        ("harmbench_behaviors_text_all.csv", "harmful", True),
        ("strongreject_dataset.csv", "harmful", True),
    ],
)
def test_real_formats_load_with_labels(name, harm, reason_field):
    ex = load_file(REFUSAL_DATA / name)
    assert len(ex) > 30
    assert all(e.text and e.labels["harmfulness"] == harm for e in ex)
    if reason_field:
        assert all(e.labels["reason_human"] in HUMAN_TO_REASON for e in ex)
        assert all(e.labels["reason"] is not None for e in ex)


@needs_shared
def test_harmbench_contextual_rows_are_skipped():
    ex = load_file(REFUSAL_DATA / "harmbench_behaviors_text_all.csv")
    assert 250 <= len(ex) < 400


def test_alpaca_json_with_input_and_label_override(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps([{"instruction": "Summarise this", "input": "A long text", "output": "x"}, {"instruction": "Say hi", "input": "", "output": "hi"}]))
    ex = load_file(p)
    assert ex[0].text == "Summarise this\nA long text" and ex[0].labels["harmfulness"] == "harmless"
    assert load_file(p, "harmful")[1].labels["harmfulness"] == "harmful"


@pytest.mark.parametrize(
    "content, suffix, fragment",
    [
        ("a,b\n1,2\n", ".csv", "unknown CSV columns"),
        ("Behavior,Tags\nx,y\n", ".csv", "lacks column"),
        ("forbidden_prompt\nx\n", ".csv", "lacks column"),
        ("[]", ".json", "holds no prompts"),
        ("{not json", ".json", "not valid JSON"),
        ('[{"foo": 1}]', ".json", "none of the fields"),
        ('{"text": "ok"}\nnot json\n', ".jsonl", "line 2"),
        ("hello", ".txt", "unsupported extension"),
    ],
)
def test_malformed_files_get_clear_errors(tmp_path, content, suffix, fragment):
    p = tmp_path / f"data{suffix}"
    p.write_text(content)
    with pytest.raises(AutoscopeError, match=fragment):
        load_file(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(AutoscopeError, match="does not exist"):
        load_file(tmp_path / "nope.json")
    with pytest.raises(AutoscopeError, match="directory"):
        load_file(tmp_path)


def test_prior_mixes_task_and_files_dedupes_and_splits(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "Write a poem about the sea", "harmfulness": "harmless"}\n{"text": "Write a poem about the sea"}\n')
    ex = build_examples(PriorConfig(task="ioi", data=[str(p)], n=50, seed=3))
    assert len(ex) == 51 and len({e.text for e in ex}) == 51
    assert ex == build_examples(PriorConfig(task="ioi", data=[str(p)], n=50, seed=3))
    tr, he = split_indices(len(ex), 10, 3)
    assert len(he) == 10 and not set(tr) & set(he) and len(tr) + len(he) == 51
    with pytest.raises(AutoscopeError, match="empty"):
        build_examples(PriorConfig(task=None, data=[]))
