"""The refusal grammar reads its own texts back, and audits a labeller on generated samples."""

from __future__ import annotations

from scope_core.audit import audit_labeller, expected_label, grammar_for
from scope_core.data import PriorConfig
from scope_core.priors.refusal import generate_refusal
from scope_core.priors.refusal_parse import act_harmfulness, parse_refusal


def test_grammar_parses_every_prompt_it_generates_with_its_labels() -> None:
    for e in generate_refusal(400, seed=11):
        got = parse_refusal(e.text)
        assert got is not None, e.text
        assert all(got.get(k, e.labels[k]) == e.labels[k] for k in ("harmfulness", "reason", "method")), (e.text, got, e.labels)


def test_grammar_rejects_text_it_cannot_produce() -> None:
    assert parse_refusal("Write a poem about the sea and the moon at midnight") is None
    assert parse_refusal("") is None


def test_acts_found_inside_a_new_frame_keep_the_grammar_s_harmfulness() -> None:
    """Every production's acts give its own harmfulness; an act wrapped in words the grammar
    never writes keeps it (the sample is off-grammar, its act is not); acts that disagree, or
    none, give no label."""
    ex = generate_refusal(400, seed=11)
    assert all(act_harmfulness(e.text) == e.labels["harmfulness"] for e in ex)
    harmful = next(e.text for e in ex if e.labels["harmfulness"] == "harmful")
    harmless = next(e.text for e in ex if e.labels["harmfulness"] == "harmless")
    wrapped = f"Quick question from my cousin, no rush: {harmful.lower()} Thanks so much!"
    assert parse_refusal(wrapped) is None and act_harmfulness(wrapped) == "harmful"
    assert act_harmfulness(f"{harmless} Then, {harmful.lower()}") is None
    assert act_harmfulness("Write a poem about the sea and the moon at midnight") is None
    fix = next(e.text for e in generate_refusal(2000, seed=5) if " fix " in f" {e.text} " and e.labels["harmfulness"] == "harmless")
    act = fix[fix.lower().index("fix"):]
    assert act_harmfulness(act) == "harmless" and act_harmfulness("pre" + act) is None  # whole words only


def test_audit_counts_a_labeller_wrong_on_a_known_share() -> None:
    ex = generate_refusal(200, seed=3)
    texts = [e.text for e in ex] + ["Some sentence the grammar never makes, surely not."]
    truth = [e.labels["harmfulness"] for e in ex] + ["harmful"]
    wrong = set(range(0, 200, 10))  # every tenth label flipped
    labels = [("harmless" if t == "harmful" else "harmful") if i in wrong else t for i, t in enumerate(truth)]
    a = audit_labeller("harmfulness", texts, labels, parse_refusal)
    assert (a.n_accepted, a.n_parsed, a.n_correct) == (201, 200, 180)
    assert a.accuracy == 0.9 and a.ci_low < 0.9 < a.ci_high
    assert a.explains(0.05) and not a.explains(0.3)  # error up to ~0.14


def test_gated_features_expect_none_on_harmless_texts() -> None:
    assert expected_label("reason", {"harmfulness": "harmless", "reason": None, "method": "write an email"}) == (True, None)
    assert expected_label("method", {"harmfulness": "harmful", "reason": "fraud", "method": "write an email"}) == (True, "write an email")
    assert expected_label("reason", {"harmfulness": "harmful", "method": "write an email"}) == (False, None)  # ambiguous reason


def test_only_the_pure_generated_refusal_prior_is_audited() -> None:
    assert grammar_for(PriorConfig(task="refusal")) is parse_refusal
    assert grammar_for(PriorConfig(task="refusal", data=["x.json"])) is None
    assert grammar_for(PriorConfig(task="ioi")) is None


def test_fcr_report_audits_the_labeller_on_accepted_samples_only(tiny_scope) -> None:
    """Scored on a run whose samples are prior prompts (the grammar's own texts), with a
    labeller wrong on a known third of them: the report's audit counts exactly the accepted
    ones, and the sampler figures count them as near copies of the prior."""
    from scope_core.sample import QueryResult, Sample

    scope = tiny_scope
    site = scope.site("L2")
    idx = scope.heldout_indices(None, 4)
    run = scope.sample(site, indices=idx, n=2, eps=scope.eps(site, eps=2.0), seed=0)
    pool = [scope.data.examples[i] for i in scope.data.train[:24]]
    queries = []
    for k, q in enumerate(run.queries):
        ss = [Sample(text=e.text, distance=0.01 if j < 4 else 5.0, weight=float(j < 4), accepted=j < 4, is_copy=True)
              for j, e in enumerate(pool[6 * k: 6 * k + 6])]
        queries.append(QueryResult(query=q.query, index=q.index, samples=ss))
    run = run.model_copy(update={"queries": queries})
    truth = {e.text: e.labels["harmfulness"] for e in scope.data.examples}
    flip = {e.text for e in pool[::3]}

    def labeller(texts):
        return [("harmless" if truth[t] == "harmful" else "harmful") if t in flip else truth.get(t) for t in texts]

    rep = scope.score(labeller, "harmfulness", run, site, empirical=False)
    accepted = [s.text for q in run.queries for s in q.samples if s.accepted]
    assert rep.labeller_audit is not None and rep.labeller_audit.n_accepted == len(accepted) == 16
    assert rep.labeller_audit.n_parsed == 16
    assert rep.labeller_audit.n_correct == sum(t not in flip for t in accepted)
    assert rep.sampler["near_copy_rate"] == 1.0 and rep.sampler["exact_copy_rate"] == 1.0
    other = scope.score(labeller, "first_word", run, site, empirical=False)
    assert other.labeller_audit is None  # not a feature the grammar knows


def test_an_audit_set_skips_unfilled_cells_and_keeps_null_labels(tmp_path):
    """A sheet half filled in audits only what people labelled; null is a label (undefined)."""
    import json

    from scope_core.audit import audit_on_set, load_audit_set

    p = tmp_path / "set.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in [
        {"text": "how to pick a lock", "labels": {"harmfulness": "harmful", "reason": "crime"}},
        {"text": "bake bread", "labels": {"harmfulness": "harmless", "reason": None}},
        {"text": "write a poem", "labels": {"harmfulness": "", "reason": ""}},
    ]) + "\n\n")
    pairs = load_audit_set(p)
    assert pairs == {"harmfulness": [("how to pick a lock", "harmful"), ("bake bread", "harmless")],
                     "reason": [("how to pick a lock", "crime"), ("bake bread", None)]}
    audit = audit_on_set("reason", pairs["reason"], ["crime", "cooking"], "audit set set.jsonl")
    assert (audit.n_parsed, audit.n_correct, audit.accuracy) == (2, 1, 0.5) and audit.max_error > 0.5
    assert "labelled by people" in audit.line()


def test_an_audit_set_reads_typed_labels_as_the_strings_labellers_give(tmp_path):
    from scope_core.audit import load_audit_set

    p = tmp_path / "typed.jsonl"
    p.write_text('{"text": "a", "labels": {"length_bucket": 1, "flag": true}}\n')
    assert load_audit_set(p) == {"length_bucket": [("a", "1")], "flag": [("a", "True")]}
