"""Prompt log-probabilities (`serving.prompt_scoring`) on a tiny random-weight Llama: grouped,
prefix-cached, right-padded scoring must equal a plain full forward of each prompt alone."""

from __future__ import annotations

import pytest
import torch

from scope_core.targets import load_model_and_tokenizer
from serving.batch_engine import BatchEngine
from serving.prompt_scoring import PromptScorer, context_cuts, scoring_groups
from tiny import make_tiny_bpe_llama

pytest.importorskip("llguidance")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = make_tiny_bpe_llama(tmp_path_factory.mktemp("bpe") / "m")
    model, tok = load_model_and_tokenizer(str(path))
    return BatchEngine(model, tok)


def reference(engine, ids):
    with torch.no_grad():
        lp = torch.log_softmax(engine.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return [None] + lp[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist(), int(lp[-1].argmax()), float(lp[-1].max())


def test_groups_follow_the_category_prefixes():
    a, b = [1, 2, 3, 4], [1, 2, 5, 6]
    rows = [a + [7, 8], b + [7, 8], a + [9], b + [9, 9, 9], [1, 3]]
    groups = {tuple(sorted(m)): p for p, m in scoring_groups(rows, min_rows=2)}
    assert groups == {(0, 2): 4, (1, 3): 4, (4,): 0}  # the lone row shares only [1] with all: too short to cache
    # runs smaller than min_rows do not fragment a range: a and b stay together at their shared [1, 2]
    assert {tuple(sorted(m)): p for p, m in scoring_groups(rows, min_rows=3)} == {(0, 1, 2, 3): 2, (4,): 0}
    assert {tuple(sorted(m)): p for p, m in scoring_groups(rows[:4], min_rows=3)} == {(0, 1, 2, 3): 2}


def test_scores_equal_a_full_forward_of_each_prompt(engine):
    tok = engine.tokenizer
    contexts = [f"the following is a request about {c}. request:" for c in ("hacking computers", "cooking food", "travel")]
    texts = [" write an email to my bank", " how do I bake bread", " plan a trip to the sea with friends", " hi"]
    prompts = [tok(c + t, add_special_tokens=False).input_ids for t in texts for c in contexts]
    scorer = PromptScorer(engine, rows_per_forward=3, min_rows=2)
    got = scorer.score(prompts, with_next=True)
    assert len(scorer.prefixes._entries) == 3  # one cached prefix per context
    for ids, (token_lp, nxt) in zip(prompts, got):
        ref, ref_tok, ref_lp = reference(engine, ids)
        assert len(token_lp) == len(ids) and token_lp[0] is None
        assert torch.allclose(torch.tensor(token_lp[1:]), torch.tensor(ref[1:]), atol=1e-4)
        assert nxt is not None and nxt[0] == ref_tok and abs(nxt[1] - ref_lp) < 1e-4
    again = scorer.score(prompts[:2])  # from the cached prefixes
    assert [a for a, _ in again] == [a for a, _ in got[:2]] or all(
        torch.allclose(torch.tensor(x[1:]), torch.tensor(y[1:]), atol=1e-5) for (x, _), (y, _) in zip(again, got[:2]))


def test_context_cuts_split_one_text_under_several_contexts():
    text = [20, 21, 22, 23, 24]
    rows = [[1, 2, 3] + text, [1, 2, 4, 5] + text, [1, 2, 6] + text]
    assert context_cuts(rows, 2) == [3, 4, 3]  # each context ends where the shared text begins
    assert context_cuts([[1, 2, 3, 9, 8], [1, 2, 4, 7, 8]], 2) is None  # different texts: a one-token suffix
    long_contexts = [[1, 2, 30, 31, 32, 33, 34, 35] + text, [1, 2, 40, 41, 42, 43, 44, 45, 46] + text]
    assert context_cuts(long_contexts, 2) == [8, 9]  # contexts longer than the text still cut
    assert context_cuts([rows[0]], 2) is None


def test_one_request_of_several_contexts_scores_like_a_full_forward_and_caches_them(engine):
    """A lone channel request (the same text under each context, fewer rows than a group
    needs) is scored behind each context's cached prefix — right-aligned prefixes of
    different lengths in one forward — and still equals a full forward of each prompt."""
    tok = engine.tokenizer
    contexts = [f"the following is a request about {c}. request:" for c in ("hacking computers", "food", "travel by sea or air")]
    scorer = PromptScorer(engine, min_rows=8)
    keys = []
    for text in (" write a long email to my bank about the loan", " plan a trip to the sea with all of my friends"):
        prompts = [tok(c + text, add_special_tokens=False).input_ids for c in contexts]
        got = scorer.score(prompts, with_next=True)
        for ids, (token_lp, nxt) in zip(prompts, got):
            ref, ref_tok, ref_lp = reference(engine, ids)
            assert len(token_lp) == len(ids) and token_lp[0] is None
            assert torch.allclose(torch.tensor(token_lp[1:]), torch.tensor(ref[1:]), atol=1e-4)
            assert nxt is not None and nxt[0] == ref_tok and abs(nxt[1] - ref_lp) < 1e-4
        keys.append(set(scorer.prefixes._entries))
    # one cached prefix per context (cut where the shared ". request:" + text begins); the
    # second request reuses them
    assert len(keys[0]) == len(contexts) and keys[1] == keys[0]


def test_a_single_prompt_and_an_empty_one(engine):
    ids = engine.tokenizer("just one prompt here", add_special_tokens=False).input_ids
    (token_lp, nxt), = PromptScorer(engine).score([ids])
    assert nxt is None
    assert torch.allclose(torch.tensor(token_lp[1:]), torch.tensor(reference(engine, ids)[0][1:]), atol=1e-4)
    with pytest.raises(ValueError, match="empty prompt"):
        PromptScorer(engine).score([ids, []])


@pytest.fixture()
def server(engine):
    import threading
    from http.server import ThreadingHTTPServer

    from serving.batch_server import ChatService, MicroBatcher, make_handler

    service = ChatService(engine, MicroBatcher(engine, max_batch=16, window_s=0.1), "tiny")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(service))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_the_server_sends_without_waiting_for_delayed_acks(engine):
    """The judge server's connections run with TCP_NODELAY: with Nagle's algorithm on, each
    response's body waited for the client's delayed ACK of its headers (tens of ms)."""
    import json
    import socket
    import threading
    import urllib.request
    from http.server import ThreadingHTTPServer

    from serving.batch_server import ChatService, MicroBatcher, make_handler

    handler = make_handler(ChatService(engine, MicroBatcher(engine, max_batch=4, window_s=0.1), "tiny"))
    seen: list[int] = []

    class Probe(handler):  # type: ignore[misc, valid-type]
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Probe)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{httpd.server_address[1]}/v1/models", timeout=10) as r:
            assert json.loads(r.read())["data"][0]["id"] == "tiny"
    finally:
        httpd.shutdown()
    assert seen and seen[0] != 0


def test_the_server_answers_echo_requests_in_openai_format(engine, server):
    import openai

    client = openai.OpenAI(base_url=server, api_key="x")
    prompt = "the following is a request about travel. request: plan a trip"
    resp = client.completions.create(model="tiny", prompt=[prompt, "hi there"], echo=True, logprobs=1, max_tokens=1)
    ids = engine.tokenizer(prompt, add_special_tokens=False).input_ids
    ref, ref_tok, _ = reference(engine, ids)
    lp = resp.choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) + 1 and lp.token_logprobs[0] is None
    assert torch.allclose(torch.tensor(lp.token_logprobs[1:-1]), torch.tensor(ref[1:]), atol=1e-4)
    assert lp.text_offset[-1] == len(prompt) and resp.choices[0].text == prompt + engine.tokenizer.decode([ref_tok])
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    with pytest.raises(openai.BadRequestError, match="scores prompts only"):
        client.completions.create(model="tiny", prompt="hi", max_tokens=5)


def test_channel_labels_through_the_judge_client_pick_the_most_likely_class(engine, server, tmp_path):
    from agent.judging.channel import channel_context, channel_label_many
    from agent.judging.judge import JudgeClient, JudgeConfig

    judge = JudgeClient(JudgeConfig(base_url=server, model="tiny", engine="batched", concurrency=3, cache_path=str(tmp_path / "c.sqlite")))
    classes = {"travel": "Trips and holidays.", "food": "Cooking and recipes.", None: "Everyday harmless topics."}
    texts = ["plan a trip to the sea", "bake bread at home", "hello"]
    out = channel_label_many(judge, "topic", classes, texts)
    for t in texts:
        o = out[t]
        ids = [engine.tokenizer(channel_context(d) + " " + t, add_special_tokens=False).input_ids for d in classes.values()]
        n_ctx = [len(engine.tokenizer(channel_context(d), add_special_tokens=False).input_ids) for d in classes.values()]
        ref = [sum(reference(engine, i)[0][n:]) for i, n in zip(ids, n_ctx)]
        assert o.error is None and o.label == list(classes)[max(range(3), key=lambda k: ref[k])]
        import json
        assert [round(v, 2) for v in json.loads(o.raw).values()] == [round(v, 2) for v in ref]
    calls = judge.calls
    assert channel_label_many(judge, "topic", classes, texts) == out and judge.calls == calls  # from the cache
    llama = JudgeClient(JudgeConfig(base_url=server, model="tiny", engine="llamacpp", cache_path=str(tmp_path / "d.sqlite")))
    assert "llama.cpp" in channel_label_many(llama, "topic", classes, texts[:1])[texts[0]].error
