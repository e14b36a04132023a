"""Several processes, one result (CPU, gloo): a 2-process run writes the same activation cache
as one process, byte for byte, and trains the same loss curve at the same global batch."""

import json
from pathlib import Path

import pytest
import torch

from scope_core.data import PriorConfig
from scope_core.errors import AutoscopeError
from scope_core.targets import TargetConfig
from scope_core.train import TrainConfig, train

LOSS_TOLERANCE = 1e-3  # nats: the global batch's loss summed in two parts instead of one (float rounding, over 8 Adam steps)


def _cfg(path, runs, processes, **kw):
    base = dict(run="p", runs_dir=str(runs), target=TargetConfig(model=str(path), device="cpu"),
                prior=PriorConfig(task="refusal", n=200, heldout=30), sites="L1,L2", backbone=str(path),
                max_steps=8, minutes=2, eval_every=2, eval_size=20, batch_size=16, cache_batch_size=16, processes=processes)
    base.update(kw)
    return TrainConfig(**base)


def _losses(run_dir):
    log = [json.loads(x) for x in (run_dir / "inverter" / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r["heldout_loss"], r["tokens"]) for r in log if r.get("phase") == "control"]


@pytest.fixture(scope="module")
def one_and_two(tiny_llama_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    one = train(_cfg(tiny_llama_path, root / "one", 1), progress=False)
    two = train(_cfg(tiny_llama_path, root / "two", 2), progress=False)
    return root / "one" / "p", root / "two" / "p", one, two


def test_two_processes_write_the_cache_one_process_writes(one_and_two):
    a, b, _, _ = one_and_two
    files = sorted(p.name for p in (a / "acts").iterdir())
    assert files == sorted(p.name for p in (b / "acts").iterdir()) and any(f.startswith("chunk_") for f in files)
    for name in files:
        assert (a / "acts" / name).read_bytes() == (b / "acts" / name).read_bytes(), name
    assert (a / "data" / "split.json").read_bytes() == (b / "data" / "split.json").read_bytes()


def test_two_processes_train_the_one_process_loss_curve(one_and_two):
    a, b, one, two = one_and_two
    la, lb = _losses(a), _losses(b)
    assert [x[0] for x in la] == [x[0] for x in lb] == [2, 4, 6, 8]
    assert [x[3] for x in la] == [x[3] for x in lb]  # the same global batches, token for token
    for (_, ta, ha, _), (_, tb, hb, _) in zip(la, lb):
        assert abs(ta - tb) < LOSS_TOLERANCE and abs(ha - hb) < LOSS_TOLERANCE
    assert two.processes == 2 and one.processes == 1 and two.steps == one.steps == 8
    assert two.tokens_per_s_per_process and two.tokens_per_s_per_process > 0
    assert two.phases["caching_tokens_per_s_per_process"] > 0
    print(f"\ntraining tokens/s per process: 1 process {one.tokens_per_s_per_process:.0f}, 2 processes {two.tokens_per_s_per_process:.0f}; "
          f"caching tokens/s: 1 process {one.phases['caching_tokens_per_s']:.0f}, "
          f"2 processes {two.phases['caching_tokens_per_s_per_process']:.0f} per process")
    # one writer: the checkpoint and summary exist once, as one process writes them
    assert (b / "inverter" / "state.pt").exists() and (b / "inverter" / "train_summary.json").exists()
    wa = torch.load(a / "inverter" / "state.pt", weights_only=False)["st"]
    wb = torch.load(b / "inverter" / "state.pt", weights_only=False)["st"]
    assert wa["step"] == wb["step"] and wa["tokens"] == wb["tokens"]


def test_a_two_process_run_resumes_where_it_stopped(tiny_llama_path, tmp_path):
    # a constant rate: with the cosine schedule a 4-step budget is another schedule than an 8-step one
    # (tests/test_train.py resumes a killed cosine run)
    a = tmp_path / "ref" / "p"
    train(_cfg(tiny_llama_path, tmp_path / "ref", 1, lr_schedule="constant"), progress=False)
    train(_cfg(tiny_llama_path, tmp_path, 2, max_steps=4, lr_schedule="constant"), progress=False)
    state_path = tmp_path / "p" / "inverter" / "state.pt"
    st = torch.load(state_path, weights_only=False)
    st["st"]["stopped"] = ""  # as if the processes had been killed after step 4
    torch.save(st, state_path)
    res = train(_cfg(tiny_llama_path, tmp_path, 1, max_steps=8, lr_schedule="constant"), progress=False)  # resumed by one process
    steps = [x[0] for x in _losses(tmp_path / "p")]
    assert res.steps == 8 and steps == [2, 4, 6, 8]
    for (_, ta, _, _), (_, tb, _, _) in zip(_losses(a), _losses(tmp_path / "p")):
        assert abs(ta - tb) < LOSS_TOLERANCE


def test_what_cannot_run_data_parallel_is_refused_before_starting(tiny_llama_path, tmp_path):
    with pytest.raises(AutoscopeError, match="--sft is not data-parallel"):
        train(_cfg(tiny_llama_path, tmp_path, 2, sft="lora"), progress=False)
    with pytest.raises(AutoscopeError, match="cannot be split over 4 processes"):
        train(_cfg(tiny_llama_path, tmp_path, 4, batch_size=2), progress=False)


def _write_rank(out: str) -> None:
    import scope_core.distributed as dd
    (Path(out) / f"rank{dd.rank()}").write_text(str(dd.all_sum([1.0])[0]))


def _fail_on_rank_one() -> None:
    import scope_core.distributed as dd
    if dd.rank() == 1:
        raise ValueError("rank one failed on purpose")
    dd.barrier()


def test_launched_workers_finish_together_or_report_the_one_that_raised(tmp_path, capfd):
    import scope_core.distributed as dd
    dd.launch(_write_rank, 2, str(tmp_path))  # returns only if both exited 0
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["2.0", "2.0"]
    # a failure raises, never hangs: spawn names the first process to exit, the one that raised or
    # the one whose barrier lost its peer
    with pytest.raises(Exception, match="rank one failed on purpose|remote worker"):
        dd.launch(_fail_on_rank_one, 2)
    assert "ValueError: rank one failed on purpose" in capfd.readouterr().err  # the real error, whichever rank spawn names
