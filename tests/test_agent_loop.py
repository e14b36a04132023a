"""The explore loop end to end against the real embedded judge server (llama-cpp-python
serving SmolLM2 over HTTP), on a small inverter trained in the test session."""

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.judging.judge import JudgeConfig
from agent.loop import ExploreConfig, explore
from agent.runlog import RunLog

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python[server] not installed"),
]


@pytest.fixture(scope="session")
def judge_server():
    from agent.judging.embedded_judge import EmbeddedJudge

    with EmbeddedJudge() as srv:
        yield srv


def _cfg(scope, srv, tmp_path, xid, budget=2):
    return ExploreConfig(run=scope.run_dir.name, runs_dir=str(scope.run_dir.parent), site="L18", budget=budget, per_round=2,
                         queries=4, samples=4, show_queries=2, show_samples=4, patience=3, explore_id=xid, eps=0.3, prior_for_p0_llm=8, proposer="judge",
                         judge=JudgeConfig(base_url=srv.url, model=srv.model, engine="llamacpp", cache_path=str(tmp_path / "judge.sqlite"), max_tokens=400))


def test_explore_end_to_end_with_the_embedded_judge(trained_embedded, judge_server, tmp_path):
    _, scope = trained_embedded
    res = explore(_cfg(scope, judge_server, tmp_path, "e2e"))
    root = Path(res.explore_dir)
    log = RunLog(root)
    assert log.read("judge"), "every judge request and answer is logged"
    assert len(res.ranking) >= 1
    assert any(h.status == "scored" and h.score.fcr is not None for h in res.ranking), [(h.hypothesis, h.error) for h in res.ranking]
    assert {"sampling_s", "judge_s", "labelling_s", "scoring_s"} <= set(res.timing)
    md = (root / "report.md").read_text()
    assert "## Ranking" in md and res.ranking[0].hypothesis.name in md
    assert (root / "report.html").read_text().count("<table") >= 1


def test_killed_explore_resumes_without_rescoring(trained_embedded, judge_server, tmp_path):
    """Kill the CLI mid-run, resume it: the hypotheses equal an uninterrupted run's, none twice."""
    _, scope = trained_embedded
    env = {**os.environ, "AUTOSCOPE_JUDGE_URL": judge_server.url, "AUTOSCOPE_JUDGE_ENGINE": "llamacpp", "AUTOSCOPE_JUDGE_MODEL": judge_server.model}
    common = ["--run", scope.run_dir.name, "--runs-dir", str(scope.run_dir.parent), "--site", "L18", "--budget", "3", "--per-round", "2",
              "--queries", "4", "--samples", "4", "--eps", "0.3", "--p0-prompts", "8", "--judge", "only"]
    # uninterrupted reference (same judge cache, so the same proposals)
    ref = subprocess.run([sys.executable, "-m", "agent.cli", "explore", *common, "--resume", "ref"], env=env, capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_h = RunLog(scope.run_dir / "explore" / "ref").read("hypotheses")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "explore", *common, "--resume", "killed"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = RunLog(scope.run_dir / "explore" / "killed")
    deadline = time.time() + 600
    while time.time() < deadline and not log.read("hypotheses") and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(log.read("hypotheses"))
    again = subprocess.run([sys.executable, "-m", "agent.cli", "explore", *common, "--resume", "killed"], env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    hs = log.read("hypotheses")
    ids = [h["hypothesis"]["id"] for h in hs]
    assert len(ids) == len(set(ids)), "no hypothesis scored twice"
    assert len(hs) == len(ref_h) and len(hs) >= n_before


def test_embedded_explore_proposes_on_llamacpp_and_labels_on_the_batched_engine(tmp_path):
    """Without a judge URL, explore starts llama.cpp for the long answers and the batched
    engine for the labels; both answer."""
    from agent.loop import judge_for

    cfg = ExploreConfig(run="r", judge=JudgeConfig(cache_path=str(tmp_path / "c.sqlite")))
    env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AUTOSCOPE_JUDGE_")}
    try:
        with judge_for(cfg, RunLog(tmp_path / "x")) as (judge, labeller):
            assert judge.config.engine == "llamacpp" and labeller.config.engine == "batched"
            assert labeller.config.concurrency > judge.config.concurrency
            from agent.judging.llm_feature import label_many

            out = label_many(labeller, "harmfulness", "Is this request harmful?", ["harmful", "harmless"], ["Explain photosynthesis"], allow_null=False)
            assert out["Explain photosynthesis"].label in ("harmful", "harmless")
    finally:
        os.environ.update(env)
    assert (tmp_path / "x" / "labeller_server.log").exists()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_no_judge_outlives_an_explore_killed_with_sigkill(trained_embedded, tmp_path):
    _, scope = trained_embedded
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSCOPE_JUDGE_")}
    env["AUTOSCOPE_CACHE_DIR"] = os.environ.get("AUTOSCOPE_CACHE_DIR", str(Path.home() / ".cache" / "autoscope"))
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "explore", "--run", scope.run_dir.name, "--runs-dir", str(scope.run_dir.parent),
                             "--site", "L18", "--budget", "2", "--queries", "4", "--samples", "4", "--eps", "0.3", "--resume", "orphans"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    servers: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        servers = _children(proc.pid)
        if len(servers) >= 2:  # the llama.cpp judge and the batched labeller
            break
        time.sleep(0.5)
    assert servers, "explore started no judge server"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(p) for p in servers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in servers), "a judge server outlived its explore"


def test_a_judge_killed_and_restarted_mid_run_costs_nothing(trained_embedded, tmp_path):
    """An external judge dies after the first hypothesis and comes back 8 s later on the same
    port: explore waits, goes on, and ends with every hypothesis scored once. Resuming the
    finished run asks the judge nothing."""
    from serving.launch import embedded_command, free_port, start_server, wait_ready

    _, scope = trained_embedded
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    procs = [start_server(embedded_command("127.0.0.1", port), tmp_path / "judge.log")]
    wait_ready(url, procs[0])
    cfg = _cfg(scope, type("S", (), {"url": url, "model": "smollm2-135m-instruct"})(), tmp_path, "outage", budget=3)
    cfg = cfg.model_copy(update={"stop_when_done": False})
    log = RunLog(scope.run_dir / "explore" / "outage")
    restarted = threading.Event()

    def outage():
        deadline = time.time() + 600
        while time.time() < deadline and not log.read("hypotheses"):
            time.sleep(0.2)
        procs[0].kill()
        procs[0].wait()
        time.sleep(8)
        procs.append(start_server(embedded_command("127.0.0.1", port), tmp_path / "judge.log"))
        restarted.set()

    t = threading.Thread(target=outage, daemon=True)
    t.start()
    try:
        res = explore(cfg)
        t.join(timeout=60)
        assert restarted.is_set(), "the judge was never killed: the run ended before its first hypothesis"
        assert not res.stopped.startswith("judge"), res.stopped
        ids = [h["hypothesis"]["id"] for h in log.read("hypotheses")]
        assert len(ids) == len(set(ids)) and len(ids) >= 2
        rounds_before = len(log.read("rounds"))
        again = explore(cfg)
        assert [h.id for h in again.ranking] == [h.id for h in res.ranking]
        assert len(log.read("rounds")) == rounds_before, "a finished run asked the judge again"
    finally:
        for p in procs:
            p.kill()
            p.wait()
