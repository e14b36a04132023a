"""The agent loop goes on around hostile judge code: a judge (a real HTTP server answering
by rule) proposes snippets of the hostile corpus as Python hypotheses, and the explore loop
compiles, probes and scores them in the sandbox. Nothing may happen — no file, connection
or process — and every hypothesis ends with a status and a message the judge can act on."""

from __future__ import annotations

import pytest
from flaky_server import FlakyServer
from hostile_corpus import HOSTILE_CORPUS, cleanup, make_context, open_listeners, render, violations

from agent import sandbox as S
from agent.judging.judge import JudgeClient, JudgeConfig
from agent.loop import ExploreConfig, Explorer
from agent.runlog import RunLog

# past the static check (so the OS layers are what holds) and rejected by it, without the
# ones that only burn the wall clock (cpu, hang): each costs seconds and proves nothing new here
PICKED = [n for n, h in HOSTILE_CORPUS.items() if not {"cpu", "hang", "memory"} & set(h.attempts)]
PICKED = [n for n in PICKED if HOSTILE_CORPUS[n].expect != "rejected"][:9] + [n for n in PICKED if HOSTILE_CORPUS[n].expect == "rejected"][:3]


def test_the_loop_completes_around_hostile_judge_code(tiny_scope, tmp_path, monkeypatch):
    if not S.isolation_report()["complete"] and not S._weak_allowed(None):
        pytest.skip("isolation layers missing here: judge code is refused by design (" + S.isolation_summary() + ")")
    tcp, udp = open_listeners()
    ctx = make_context(tmp_path, tcp.getsockname()[1])
    monkeypatch.chdir(ctx.cwd)
    codes = [render(HOSTILE_CORPUS[n], ctx) for n in PICKED]
    asked: list[int] = []

    def judge(body: dict) -> dict:
        props = ((body.get("response_format") or {}).get("json_schema", {}).get("schema") or {}).get("properties", {})
        if "hypotheses" in props:
            k = len(asked)
            asked.append(k)
            batch = list(enumerate(codes))[3 * k: 3 * k + 3]
            return {"hypotheses": [{"name": f"hostile_{i}", "statement": f"hostile snippet {PICKED[i]}", "kind": "python",
                                    "code": code} for i, code in batch], "done": 3 * k + 3 >= len(codes)}
        if "code" in props:  # asked to fix failing code: the same again
            return {"code": codes[0]}
        return {"label": "no"}

    try:
        with FlakyServer([], default=judge) as srv:
            cfg = ExploreConfig(run="s", runs_dir=str(tiny_scope.run_dir.parent), site="L2", budget=len(codes), per_round=3, queries=8,
                                samples=2, eps=2.0, proposer="judge", screen_queries=0, prior_for_p0=40, prior_for_p0_llm=8, patience=100,
                                judge=JudgeConfig(base_url=srv.url, model="rules", engine="openai", cache_path=str(tmp_path / "c.sqlite")))
            ex = Explorer(cfg, JudgeClient(cfg.judge), RunLog(ctx.run_dir / "explore"), scope=tiny_scope)
            stopped = ex.run()
        assert stopped in ("the judge said it is done", "budget"), stopped
        assert len(ex.scored) == len(codes)
        for h in ex.scored:
            assert h.status in ("scored", "compile_failed", "label_failed", "undefined")
            if h.status != "scored":
                assert h.error and len(h.error) < 3000
        assert any(h.status == "compile_failed" or (h.note and "code failed" in h.note) for h in ex.scored)
        assert violations(ctx, tcp, udp) == []
    finally:
        cleanup(ctx)
        tcp.close()
        udp.close()
