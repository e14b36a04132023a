"""Reports render from the explore log alone."""

from agent.hypotheses import (
    Counterexample,
    ExampleQuery,
    Hypothesis,
    LabelledSample,
    Score,
    ScoredHypothesis,
)
from agent.report import write_report
from agent.runlog import RunLog


def _h(i, name, kappa, status="scored"):
    score = Score(fcr=0.5 + kappa / 2, ci_low=0.4, ci_high=0.9, p0=0.5, kappa=kappa, degenerate=False, n_queries=10) if status == "scored" else None
    return ScoredHypothesis(
        id=i, round=0, site="L18", status=status, score=score, error=None if score else "syntax error at line 1",
        hypothesis=Hypothesis(name=name, statement=f"{name} is encoded", kind="python", code="def feature(text):\n    return text[:1]"),
        counterexamples=[Counterexample(query="q", query_label="a", sample="s | pipe", sample_label="b", distance=0.01)],
        examples=[ExampleQuery(query="Write an email", label="w", samples=[LabelledSample(text="Write | a poem", distance=0.05, accepted=True, label="w")])],
    )


def test_report_ranks_by_kappa_and_shows_code_examples_and_other_sites(tmp_path):
    log = RunLog(tmp_path / "x1")
    log.write_json("config.json", {"run": "r", "site": "L18", "kernel": "hard", "samples": 8, "only": None, "judge": {"model": "m"}})
    log.write_json("samples_L18.json", {"eps": {"eps": 0.08, "metric": "cosine", "quantile": 0.05}, "queries": [{}] * 10})
    for h in (_h(1, "weak", 0.1), _h(2, "strong", 0.7), _h(3, "broken", 0.0, status="compile_failed")):
        log.append("hypotheses", {"hypothesis": h.model_dump()})
    other = Score(fcr=0.6, ci_low=0.5, ci_high=0.7, p0=0.5, kappa=0.2, degenerate=False, n_queries=10)
    cooler = other.model_copy(update={"temperature": 0.75})  # a site whose samples the run decodes cooler
    log.append("other_sites", {"id": 2, "scores": {"L6": other.model_dump(), "L24": cooler.model_dump()}})
    log.append("timing", {"sampling_s": 1.0, "judge_s": 2.0})
    md_path, html_path = write_report(log.root)
    md = md_path.read_text()
    assert md.index("| 1 | strong") < md.index("| 2 | weak") < md.index("| 3 | broken")
    assert "ε=0.08 cosine (pairwise q=0.05)" in md and "judge_s 2.0" in md
    assert "def feature(text)" in md and "syntax error" in md and "Write \\| a poem" in md
    assert "Other sites: L6 FCR 0.600" in md and "L24 (temperature 0.75) FCR 0.600" in md
    assert (log.root / "fcr_by_site.png").stat().st_size > 3000
    html = html_path.read_text()
    assert html.count("<table") >= 3 and "<img" in html and "<pre><code" in html
    assert "Write | a poem" in html and 'data-site="L6"' in html and 'href="#h2"' in html


# A Score as run logs written before `FCRFigures` hold it: Score's own field order (κ's CI after
# the empirical reference), and, older still, only the seven figures every log has.
OLD_SCORE = {"fcr": 0.8, "ci_low": 0.7, "ci_high": 0.9, "p0": 0.5, "kappa": 0.6, "degenerate": False, "n_queries": 12,
             "empirical_fcr": 0.75, "empirical_kappa": 0.5, "empirical_kappa_ci_low": 0.2, "empirical_kappa_ci_high": 0.7,
             "kappa_ci_low": 0.3, "kappa_ci_high": 0.8, "n_values": 3, "n_query_values": 2}
OLDEST_SCORE = {k: OLD_SCORE[k] for k in ("fcr", "ci_low", "ci_high", "p0", "kappa", "degenerate", "n_queries")}


def test_scores_logged_in_the_old_shape_still_load(tmp_path):
    from scope_core.api import FCRFigures

    for old in (OLD_SCORE, OLDEST_SCORE):
        s = Score.model_validate(old)
        assert isinstance(s, FCRFigures)
        dumped = s.model_dump()
        assert {k: dumped[k] for k in old} == old
        assert all(dumped[k] is None for k in set(dumped) - set(old))  # what the log lacked
    # through the paths that read a log back: the loop's resume and the report
    h = _h(1, "strong", 0.7).model_dump()
    h["score"], h["confirmation"] = OLDEST_SCORE, OLD_SCORE
    assert ScoredHypothesis.model_validate(h).confirmation == Score.model_validate(OLD_SCORE)
    log = RunLog(tmp_path / "x2")
    log.write_json("config.json", {"run": "r", "site": "L18", "kernel": "hard", "samples": 8, "only": None, "judge": {"model": "m"}})
    log.write_json("samples_L18.json", {"eps": {"eps": 0.08, "metric": "cosine", "quantile": 0.05}, "queries": [{}] * 12})
    log.append("hypotheses", {"hypothesis": h})
    log.append("other_sites", {"id": 1, "scores": {"L6": OLDEST_SCORE}})
    md = write_report(log.root)[0].read_text()
    assert "| 1 | strong" in md and "Other sites: L6 FCR 0.800" in md


def test_the_report_names_the_sampling_temperature_where_it_was_not_one():
    from agent.report import _eps_line

    eps = {"eps": 0.156, "metric": "cosine", "quantile": 0.05}
    assert _eps_line(eps, 0.8) == "ε=0.156 cosine (pairwise q=0.05), temperature 0.8"
    assert _eps_line(eps, 1.0) == _eps_line(eps) == "ε=0.156 cosine (pairwise q=0.05)"
