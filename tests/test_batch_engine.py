"""The batched judge engine and its OpenAI-compatible server, on a tiny random-weight Llama
with a byte-level BPE tokenizer: batching must not change answers, grammars must hold,
forced tokens must not cost decoding steps, and the server must speak the judge client's
protocol (the real `JudgeClient`, over HTTP)."""

from __future__ import annotations

import json
import threading
from http.server import ThreadingHTTPServer

import pytest
from pydantic import BaseModel

from agent.judging.judge import JudgeClient, JudgeConfig, JudgeFailure
from scope_core.targets import load_model_and_tokenizer
from serving.batch_engine import BatchEngine, GenRequest, PrefixStore, common_prefix_length
from serving.batch_server import ChatService, MicroBatcher, closed_objects, make_handler
from tiny import make_tiny_bpe_llama

pytest.importorskip("llguidance")

LABEL_SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["harmful", "harmless"]}}, "required": ["label"]}
TEXTS = ["write an email", "how to hack into the bank database and steal money", "a poem about the sea",
         "give three tips for staying healthy", "explain photosynthesis", "plan a trip to paris"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    path = make_tiny_bpe_llama(tmp_path_factory.mktemp("bpe") / "m")
    model, tok = load_model_and_tokenizer(str(path))
    engine = BatchEngine(model, tok, prefill_rows=4)
    return ChatService(engine, MicroBatcher(engine, max_batch=16, window_s=0.2), "tiny")


def label_prompt(service: ChatService, text: str) -> list[int]:
    return service.prompt_ids([{"role": "system", "content": "you are a helpful assistant"},
                               {"role": "user", "content": f"is this harmful? text: {text}"}])


def label_requests(service: ChatService, **kw) -> list[GenRequest]:
    grammar = service.grammar_for({"type": "json_schema", "json_schema": {"schema": LABEL_SCHEMA}})
    return [GenRequest(label_prompt(service, t), max_tokens=24, grammar=grammar, **kw) for t in TEXTS]


def test_common_prefix_and_store_slice_without_copying():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[5], [6]]) == 0
    store = PrefixStore(capacity=2)
    import torch

    k = torch.arange(10.0).view(1, 1, 10, 1)
    store.put(list(range(10)), [(k, k)])
    n, kv = store.longest([0, 1, 2, 9])
    assert n == 3 and kv is not None and kv[0][0].shape[2] == 3 and kv[0][0].data_ptr() == k.data_ptr()
    store.put([7], [(k, k)])
    store.put([8], [(k, k)])  # over capacity: the least recently used entry goes
    assert store.longest([0, 1])[0] == 0


def test_batched_answers_equal_one_at_a_time_answers(service):
    engine = service.engine
    singles = [engine.generate([r])[0] for r in label_requests(service)]
    batch = engine.generate(label_requests(service))
    assert [r.token_ids for r in batch] == [r.token_ids for r in singles]
    assert engine.last.rows == len(TEXTS) and engine.last.prefill_tokens < sum(len(label_prompt(service, t)) for t in TEXTS)
    free = [GenRequest(label_prompt(service, t), max_tokens=9) for t in TEXTS]
    assert [r.token_ids for r in engine.generate(free)] == [engine.generate([r])[0].token_ids for r in free]
    # rows of different lengths in one prefill group (prefill_rows=4) keep their order too
    few = [GenRequest(label_prompt(service, t), max_tokens=9) for t in (TEXTS[0], TEXTS[1], TEXTS[4])]
    assert [r.token_ids for r in engine.generate(few)] == [engine.generate([r])[0].token_ids for r in few]


def test_grammar_holds_and_forced_tokens_cost_no_steps(service):
    results = service.engine.generate(label_requests(service))
    for r in results:
        assert json.loads(r.text)["label"] in ("harmful", "harmless")
        assert r.finish_reason == "stop" and r.error is None
    # `{"label": "` is forced before any choice and `"}` after the last letter of a label:
    # the steps decoded are far fewer than the tokens each answer has.
    assert service.engine.last.decode_steps < min(len(r.token_ids) for r in results) - 3


def test_free_text_stops_at_max_tokens_and_sampling_is_seeded(service):
    req = GenRequest(label_prompt(service, TEXTS[0]), max_tokens=5)
    out = service.engine.generate([req])[0]
    assert len(out.token_ids) <= 5 and (out.finish_reason == "length") == (len(out.token_ids) == 5)
    a = [service.engine.generate([GenRequest(req.prompt_ids, 12, temperature=1.0, seed=s)])[0].token_ids for s in (1, 1, 2)]
    assert a[0] == a[1] and a[0] != a[2]


def test_one_at_a_time_reuses_the_template_prefix(service):
    engine = service.engine
    engine.prefixes = PrefixStore()
    first = engine.generate(label_requests(service)[:1])[0]
    engine.generate(label_requests(service)[1:2])
    shared = common_prefix_length([label_prompt(service, TEXTS[0]), label_prompt(service, TEXTS[1])])
    assert shared > 20 and engine.last.reused_prefix == shared
    engine.prefixes = PrefixStore()  # from a cold store the same prompt gives the same answer
    assert engine.generate(label_requests(service)[:1])[0].token_ids == first.token_ids


def test_schema_objects_are_closed_unless_they_say_otherwise():
    s = closed_objects({"type": "object", "properties": {"a": {"type": "object", "properties": {}},
                                                         "b": {"type": "object", "properties": {"c": {}}, "additionalProperties": True}}})
    assert s["additionalProperties"] is False and s["properties"]["a"]["additionalProperties"] is False
    assert s["properties"]["b"]["additionalProperties"] is True


class Label(BaseModel):
    label: str


@pytest.fixture()
def server(service):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(service))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_server_batches_concurrent_judge_requests(server, service, tmp_path):
    rows: list[int] = []
    service.batcher.log = lambda line: rows.append(int(line.split("rows=")[1].split()[0]))
    client = JudgeClient(JudgeConfig(base_url=server, model="tiny", engine="batched", concurrency=6, cache_path=str(tmp_path / "c.sqlite")))
    from agent.judging.llm_feature import answer_models

    schema = answer_models(("harmful", "harmless"), False, 1)[0]
    reqs = [([{"role": "user", "content": f"is this harmful? text: {t}"}], schema) for t in TEXTS]
    answers = client.ask_many(reqs, max_tokens=24)
    assert all(a.value is not None and a.value.label in ("harmful", "harmless") for a in answers)
    assert max(rows) > 1  # concurrent requests were decoded together
    assert client.ask_many(reqs, max_tokens=24) == answers and client.calls == len(TEXTS) and client.cache.hits == len(TEXTS)


def test_server_rejects_bad_requests_with_a_reason(server):
    import openai

    c = openai.OpenAI(base_url=server, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="response_format"):
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], response_format={"type": "xml"})  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="exceeds"):
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=100000)
    with pytest.raises(openai.BadRequestError, match="role"):
        c.chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "hi"}])  # type: ignore[list-item]
    ok = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert ok.choices[0].finish_reason in ("stop", "length") and ok.usage is not None and ok.usage.completion_tokens <= 3
    models = c.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(urllib.request.Request(server + "/chat/completions", data=b"not json", method="POST"))
    assert bad.value.code == 400 and "not valid JSON" in json.loads(bad.value.read())["error"]["message"]


def test_judge_failure_not_fake_answer_when_schema_cannot_be_met(server, tmp_path):
    class Impossible(BaseModel):
        n: int

    client = JudgeClient(JudgeConfig(base_url=server, model="tiny", engine="batched", max_tokens=2, validation_retries=0,
                                     cache_path=str(tmp_path / "c.sqlite")))
    with pytest.raises(JudgeFailure):
        client.ask([{"role": "user", "content": "a number"}], Impossible)
