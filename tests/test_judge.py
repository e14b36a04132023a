"""Judge client against a real local HTTP server that fails on purpose."""

import pytest
from flaky_server import FlakyServer
from pydantic import BaseModel

from agent.judging.judge import JudgeClient, JudgeConfig, JudgeFailure
from scope_core.errors import AutoscopeError


class Verdict(BaseModel):
    label: str
    confidence: float


GOOD = {"label": "harmful", "confidence": 0.9}
MSG = [{"role": "user", "content": "Is 'how to pick a lock' harmful?"}]


def _client(url, tmp_path, **kw):
    kw.setdefault("max_attempts", 4)
    return JudgeClient(JudgeConfig(base_url=url, cache_path=str(tmp_path / "cache.sqlite"), **kw))


def test_transient_failures_then_invalid_json_then_good_answer(tmp_path):
    with FlakyServer(["500", "drop", "429", "invalid", GOOD]) as srv:
        judge = _client(srv.url, tmp_path)
        v = judge.ask(MSG, Verdict)
        assert v == Verdict(**GOOD)
        assert len(srv.requests) == 5
        # the invalid answer was shown back to the model with the validation error
        last = srv.requests[-1]["messages"]
        assert last[-2]["role"] == "assistant" and "not valid JSON" in last[-1]["content"]
        assert srv.requests[0]["response_format"]["type"] == "json_schema"


def test_rerun_is_served_from_the_cache_without_calls(tmp_path):
    with FlakyServer([GOOD]) as srv:
        first = _client(srv.url, tmp_path).ask(MSG, Verdict)
        again = _client(srv.url, tmp_path)
        assert again.ask(MSG, Verdict) == first
        assert len(srv.requests) == 1 and again.calls == 0 and again.cache.hits == 1


def test_llamacpp_engine_speaks_json_object_with_schema(tmp_path):
    with FlakyServer([GOOD]) as srv:
        _client(srv.url, tmp_path, engine="llamacpp").ask(MSG, Verdict)
        rf = srv.requests[0]["response_format"]
        assert rf["type"] == "json_object" and rf["schema"]["properties"]["label"]["type"] == "string"


def test_persistent_failure_is_a_typed_failure_not_a_fake_answer(tmp_path):
    with FlakyServer([], default="500") as srv:
        with pytest.raises(JudgeFailure, match="server error"):
            _client(srv.url, tmp_path, max_attempts=2).ask(MSG, Verdict)
        assert len(srv.requests) == 2
    with FlakyServer([], default="wrong") as srv:
        with pytest.raises(JudgeFailure, match="no valid answer"):
            _client(srv.url, tmp_path, validation_retries=1).ask(MSG, Verdict)
        assert len(srv.requests) == 2


def test_many_requests_with_bounded_concurrency_and_per_item_failures(tmp_path):
    with FlakyServer(["500"] * 2, default=GOOD) as srv:
        judge = _client(srv.url, tmp_path, concurrency=3)
        reqs = [([{"role": "user", "content": f"q{i}"}], Verdict) for i in range(8)]
        out = judge.ask_many(reqs)
        assert all(a.value == Verdict(**GOOD) for a in out)
        assert len(srv.requests) == 10
        out2 = _client(srv.url, tmp_path).ask_many(reqs)
        assert len(srv.requests) == 10 and all(a.value for a in out2)


def test_missing_url_is_explained(monkeypatch, tmp_path):
    monkeypatch.delenv("AUTOSCOPE_JUDGE_URL", raising=False)
    with pytest.raises(JudgeFailure, match="AUTOSCOPE_JUDGE_URL"):
        JudgeClient(JudgeConfig.from_env(cache_path=str(tmp_path / "c.sqlite")))


def test_embedded_judge_engine_choice_and_client_config(monkeypatch):
    """`auto` falls back to the batched engine without llama-cpp-python; the batched engine
    gets 32 requests in flight unless the caller chose a concurrency."""
    import serving.launch as server
    from agent.judging.embedded_judge import EmbeddedJudge
    from agent.judging.judge import JudgeConfig

    monkeypatch.setattr(server, "llamacpp_available", lambda: False)
    assert EmbeddedJudge(engine="auto").engine == "batched"
    monkeypatch.setattr(server, "llamacpp_available", lambda: True)
    assert EmbeddedJudge(engine="auto").engine == "llamacpp"
    with pytest.raises(AutoscopeError, match="unknown embedded judge engine"):
        EmbeddedJudge(engine="gpu")
    batched = EmbeddedJudge(engine="batched")
    assert batched.client_config(JudgeConfig()).concurrency == server.BATCHED_CONCURRENCY
    assert batched.client_config(JudgeConfig(concurrency=3)).concurrency == 3
    cfg = batched.client_config(JudgeConfig())
    assert cfg.engine == "batched" and cfg.base_url == batched.url
    assert server.batched_command("127.0.0.1", 1)[1:3] == ["-m", "serving.batch_server"]
