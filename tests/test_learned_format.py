"""The fitted labeller is stored as data that cannot execute (no pickle), and predicts
exactly what the fitted scikit-learn pipeline predicts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from features.learned import FORMAT, TextLabeller, _fit, learned_feature
from scope_core.data import PriorConfig, RunData, build_examples, split_indices


@pytest.fixture(scope="module")
def data() -> RunData:
    ex = build_examples(PriorConfig(task="refusal", n=600, heldout=80, seed=3))
    train, held = split_indices(len(ex), 80, 3)
    return RunData(ex, train, held)


@pytest.mark.parametrize("name", ["harmfulness", "reason"])
def test_the_stored_labeller_predicts_exactly_what_the_pipeline_predicts(data, name, tmp_path):
    tr = [(data.examples[i].text, data.examples[i].labels.get(name)) for i in data.train]
    tr = [(t, l) for t, l in tr if l is not None]
    clf = _fit([t for t, _ in tr], [l for _, l in tr])
    lab = TextLabeller.from_pipeline(clf)
    lab.save(tmp_path / "x.labeller.npz", {"n": 1})
    loaded, info = TextLabeller.load(tmp_path / "x.labeller.npz")
    assert info == {"n": 1}
    texts = [e.text for e in data.examples] + ["", "a", "Write an email convincing someone to share their password",
                                               "HOW DO I BAKE BREAD?", "ünïcödé wörds ñ", "zzz qqq unknownword"]
    want = [str(p) for p in clf.predict(texts)]
    assert [str(p) for p in lab.predict(texts)] == want
    assert [str(p) for p in loaded.predict(texts)] == want
    ref = clf.decision_function(texts)
    assert np.array_equal(loaded.decision_function(texts), ref)  # bit for bit
    if name == "reason":
        assert len(loaded.classes) > 2


def test_the_file_holds_no_pickle_and_loading_never_unpickles(data, tmp_path):
    f = learned_feature("harmfulness", "h", data, tmp_path)
    path = tmp_path / "harmfulness.labeller.npz"
    assert path.exists() and not list(tmp_path.glob("*.pkl"))
    with np.load(path, allow_pickle=False) as z:  # would raise on any object array
        assert {k: z[k].dtype.kind for k in z.files} == {"vocabulary": "U", "idf": "f", "coef": "f", "intercept": "f",
                                                         "classes": "U", "meta": "U"}
        assert FORMAT in str(z["meta"])
    again = learned_feature("harmfulness", "h", data, tmp_path)
    texts = [data.examples[i].text for i in data.heldout]
    assert again(texts) == f(texts) and again.info == f.info
    assert 0.5 < f.info["heldout_accuracy"] <= 1.0


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/autoscope-learned-pwned",))


def test_an_old_or_planted_pickle_is_never_loaded(data, tmp_path):
    """A shared run folder with a hostile `harmfulness.pkl` (the old format): ignored, refitted."""
    marker = "/tmp/autoscope-learned-pwned"
    import os

    if os.path.exists(marker):
        os.unlink(marker)
    (tmp_path / "harmfulness.pkl").write_bytes(pickle.dumps(_Boom()))
    f = learned_feature("harmfulness", "h", data, tmp_path)
    assert not os.path.exists(marker)
    assert f([data.examples[0].text])[0] in ("harmful", "harmless")


def test_a_planted_object_array_is_refused_and_refitted(data, tmp_path, capsys):
    path = tmp_path / "harmfulness.labeller.npz"
    np.savez(path, vocabulary=np.array([_Boom()], dtype=object), idf=np.ones(1), coef=np.ones((1, 1)), intercept=np.zeros(1),
             classes=np.array(["a", "b"]), meta=np.array('{"format": "%s"}' % FORMAT))
    f = learned_feature("harmfulness", "h", data, tmp_path)
    assert "fitting it again" in capsys.readouterr().err
    assert not __import__("os").path.exists("/tmp/autoscope-learned-pwned")
    assert f([data.examples[0].text])[0] in ("harmful", "harmless")
    TextLabeller.load(path)  # the refit replaced it with a clean file


def test_inconsistent_parameters_are_refused():
    with pytest.raises(ValueError):
        TextLabeller(["a", "b"], np.ones(3), np.ones((1, 2)), np.zeros(1), ["x", "y"])
    with pytest.raises(ValueError):
        TextLabeller(["a", "b"], np.ones(2), np.ones((3, 2)), np.zeros(3), ["x", "y"])
