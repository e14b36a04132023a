"""The judge path a newcomer depends on: a judge proves it answers before it is used (and a
broken one is replaced by the engine that works), a judge that dies mid-run is restarted
once, an outage is waited out, answers cannot run away, abandoned requests stop decoding,
and servers autoscope starts die with it. Real servers over HTTP on tiny random-weight
models; the broken llama.cpp build is played by a server that answers `/models` and dies
with SIGILL on its first real request, as the native AMX build did."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from agent.judging.embedded_judge import EmbeddedJudge
from agent.hypotheses import BatchLabels, CompiledCode, LabelAnswer, Proposal
from agent.judging.judge import JudgeClient, JudgeConfig, JudgeUnavailable, bounded, unbounded_paths
from agent.judging.llm_feature import answer_models
from scope_core.targets import load_model_and_tokenizer
from serving.batch_engine import BatchEngine, GenRequest
from serving.launch import batched_command, describe_exit, free_port, start_server, wait_ready
from tiny import make_tiny_bpe_llama

pytest.importorskip("llguidance")

ROOT = Path(__file__).resolve().parents[1]

# answers GET /models, then dies with SIGILL on the first POST: the native llama.cpp build
# on a VM that advertises AMX but refuses it
SIGILL_SERVER = textwrap.dedent('''
    import json, os, signal, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        def do_POST(self):
            os.kill(os.getpid(), signal.SIGILL)
    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
''')


class Verdict(BaseModel):
    label: str = Field(max_length=8)


@pytest.fixture(scope="module")
def tiny_judge_model(tmp_path_factory) -> Path:
    return make_tiny_bpe_llama(tmp_path_factory.mktemp("judge") / "m")


def tiny_batched(model: Path):
    return lambda host, port: batched_command(host, port, threads=1, model=str(model), alias="smollm2-135m-instruct")


def sigill(host: str, port: int) -> list[str]:
    return [sys.executable, "-c", SIGILL_SERVER, str(port)]


def ask(client: JudgeClient, text: str) -> Verdict:
    return client.ask([{"role": "user", "content": f"is this harmful? {text}"}], Verdict, max_tokens=48)


# -- answers cannot run away ---------------------------------------------------------

def test_every_answer_schema_the_agent_sends_is_bounded():
    models = [Proposal, CompiledCode, LabelAnswer, BatchLabels, *answer_models(("a", "b"), True, 4), *answer_models(None, True, 4)]
    for m in models:
        assert unbounded_paths(m.model_json_schema()) == [], m.__name__
    loose = {"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "array", "items": {"type": "string"}},
                                               "z": {"type": "string", "enum": ["a"]}}}
    assert unbounded_paths(loose) == [".x", ".y", ".y.items"]
    assert unbounded_paths(bounded(loose)) == []


def test_a_bounded_schema_makes_the_engine_close_its_answer(tiny_judge_model):
    """A random model sampled warm writes on forever inside a string; the bounds make the
    grammar close the string and the list, so the answer ends well before max_tokens."""
    import llguidance

    from serving.batch_server import JSON_OPTIONS, closed_objects

    model, tok = load_model_and_tokenizer(str(tiny_judge_model))
    engine = BatchEngine(model, tok)
    schema = {"type": "object", "properties": {"labels": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2}},
              "required": ["labels"]}
    grammar = llguidance.LLMatcher.grammar_from_json_schema(closed_objects(schema), defaults=JSON_OPTIONS)
    prompt = tok("list some labels:").input_ids
    res = engine.generate([GenRequest(prompt, 300, temperature=1.0, grammar=grammar, seed=s) for s in range(4)])
    for r in res:
        assert r.finish_reason == "stop" and len(r.token_ids) < 300
        labels = json.loads(r.text)["labels"]
        assert len(labels) <= 2 and all(len(x) <= 6 for x in labels)


def test_a_request_whose_client_left_stops_decoding(tmp_path):
    """The client times out after 1 s; the server cancels the row instead of decoding the
    remaining tokens for nobody."""
    from tiny import make_bpe_tokenizer, make_tiny_llama

    slow = make_tiny_llama(tmp_path / "slow", n_layers=8, d=256, tokenizer=make_bpe_tokenizer, initializer_range=0.3, max_positions=2048)
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server(batched_command("127.0.0.1", port, threads=1, model=str(slow), alias="tiny"), log)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1", proc)
        import openai

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", timeout=1.0, max_retries=0)
        with pytest.raises(openai.APITimeoutError):
            # a schema that demands a long string: 1,900 tokens take many seconds
            long = {"type": "object", "properties": {"story": {"type": "string", "minLength": 1800, "maxLength": 1900}}, "required": ["story"]}
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "write a long story"}],
                                           max_tokens=1900, temperature=1.0, seed=1,
                                           response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": long}})
        deadline = time.time() + 30
        while time.time() < deadline and "decode_steps" not in log.read_text():
            time.sleep(0.2)
        steps = [int(w.split("=")[1]) for w in log.read_text().split() if w.startswith("decode_steps=")]
        assert steps and steps[-1] < 1500, log.read_text()[-500:]
    finally:
        proc.kill()
        proc.wait()


# -- a judge proves it answers; a broken one is replaced ------------------------------

def test_describe_exit_names_the_signal():
    assert describe_exit(-4) == "died with signal 4 (illegal instruction)"
    assert describe_exit(3) == "exited with code 3"


def test_a_judge_that_dies_on_its_first_request_falls_back_to_the_batched_engine(tiny_judge_model, tmp_path):
    notes: list[str] = []
    with EmbeddedJudge(engine="auto", commands={"llamacpp": sigill, "batched": tiny_batched(tiny_judge_model)},
                       notify=notes.append, log_path=tmp_path / "s.log") as srv:
        assert srv.engine == "batched"
        assert "died with signal 4 (illegal instruction) on its first request" in srv.fallback_reason
        assert any("using the batched engine instead" in n for n in notes)
        client = srv.client(JudgeConfig(cache_path=str(tmp_path / "c.sqlite")))
        assert isinstance(ask(client, "hello").label, str)


def test_an_explicitly_chosen_broken_judge_is_an_error_not_a_silent_switch(tmp_path):
    from scope_core.errors import AutoscopeError

    with pytest.raises(AutoscopeError, match=r"signal 4 \(illegal instruction\) on its first request"):
        with EmbeddedJudge(engine="llamacpp", commands={"llamacpp": sigill}, notify=lambda m: None):
            pass


def test_a_judge_that_dies_mid_run_is_restarted_once(tiny_judge_model, tmp_path):
    notes: list[str] = []
    cfg = JudgeConfig(cache_path=str(tmp_path / "c.sqlite"), outage_s=60)
    with EmbeddedJudge(engine="batched", commands={"batched": tiny_batched(tiny_judge_model)}, notify=notes.append) as srv:
        client = srv.client(cfg)
        ask(client, "one")
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        ask(client, "two")  # revived on the same port
        assert srv.restarts == 1
        assert any("died with signal 9 (killed) mid-run; restarting it once" in n for n in notes), notes
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        with pytest.raises(JudgeUnavailable, match="again after 1 restart"):
            ask(client, "three")


# -- an outage is ridden out ----------------------------------------------------------

def test_an_outage_is_waited_out_and_the_answer_arrives(tiny_judge_model, tmp_path):
    port = free_port()
    cmd = batched_command("127.0.0.1", port, threads=1, model=str(tiny_judge_model), alias="tiny")
    url = f"http://127.0.0.1:{port}/v1"
    notes: list[str] = []
    client = JudgeClient(JudgeConfig(base_url=url, model="tiny", engine="batched", cache_path=str(tmp_path / "c.sqlite"), outage_s=120),
                         notify=notes.append)
    procs: list[subprocess.Popen] = []

    def come_back():
        time.sleep(4)
        procs.append(start_server(cmd, None))

    t = threading.Thread(target=come_back)
    t.start()
    try:
        t0 = time.time()
        ask(client, "while the judge was down")
        assert time.time() - t0 >= 4
        assert any("waiting for the judge" in n and "giving up after 120 s" in n for n in notes), notes
    finally:
        t.join()
        for p in procs:
            p.kill()
            p.wait()


def test_an_outage_longer_than_the_limit_is_reported_as_such(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = JudgeClient(JudgeConfig(base_url=url, model="m", cache_path=str(tmp_path / "c.sqlite"), outage_s=2), notify=lambda m: None)
    t0 = time.time()
    with pytest.raises(JudgeUnavailable, match="unreachable for 2 s"):
        ask(client, "x")
    assert time.time() - t0 < 30


# -- servers die with autoscope -------------------------------------------------------

def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_a_server_dies_when_autoscope_is_killed_with_sigkill():
    script = ("import sys, time; from serving.launch import start_server; "
              "p = start_server(['sleep', '300'], None); print(p.pid, flush=True); time.sleep(300)")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = int(parent.stdout.readline())
    assert not _dead(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and not _dead(child):
        time.sleep(0.1)
    assert _dead(child), "the judge server outlived autoscope"


# -- a command that did not do its job says so in its exit status -----------------------

def test_label_that_labelled_no_row_exits_non_zero(tmp_path):
    from flaky_server import FlakyServer

    rows = tmp_path / "in.jsonl"
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["write a poem", "plan a trip", "bake bread"]))
    with FlakyServer([], default="invalid") as srv:  # a judge whose every answer is broken
        env = {**os.environ, "AUTOSCOPE_JUDGE_URL": srv.url, "AUTOSCOPE_JUDGE_ENGINE": "openai", "AUTOSCOPE_CACHE_DIR": str(tmp_path)}
        r = subprocess.run([sys.executable, "-m", "agent.cli", "label", "--feature", "harmfulness", "--method", "ask", "--input", str(rows),
                            "--output", str(tmp_path / "out.jsonl")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no row was labelled" in r.stderr and "3 rows failed" in r.stderr


def test_explore_that_scored_nothing_or_lost_its_judge_is_a_failure(tmp_path):
    from agent.hypotheses import Hypothesis, ScoredHypothesis
    from agent.loop import ExploreResult

    h = Hypothesis(name="x", statement="s", kind="python", code="def feature(t):\n    return 1")
    failed = ScoredHypothesis(id=0, round=0, site="L18", hypothesis=h, status="compile_failed", error="e")
    none = ExploreResult(explore_dir=str(tmp_path / "x1"), ranking=[failed], timing={}, stopped="judge failed repeatedly")
    assert "no hypothesis was scored (judge failed repeatedly)" in none.failure
    gone = ExploreResult(explore_dir=str(tmp_path / "x2"), ranking=[], timing={}, stopped="judge unavailable: down")
    assert "--resume x2" in gone.failure
