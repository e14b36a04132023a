"""Several processes, one result: the process group behind `train --processes N`.

Why plain `torch.distributed`: caching and control-layer training need only four collectives —
gather a chunk's batches to the writer, all-reduce gradients and token counts, agree on the
clock, wait at a barrier — and the same code then serves three launchers: `--processes N`
(this module spawns N workers on this machine), `torchrun` and `accelerate launch` (both set
RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, which `init_from_env` reads). The backend is gloo on
the CPU and NCCL on GPUs, one GPU per process (its LOCAL_RANK).

Rank 0 is the only writer (manifest, chunks, statistics, logs, checkpoints, summaries) and the
only one with a progress bar; every rank computes, and the others wait at barriers where it
writes. With one process every function here is a no-op, so the single-process path is the
code that always ran.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, the writer (true in a single process)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() and os.environ.get("AUTOSCOPE_DIST_BACKEND", "") != "gloo" else "gloo"


def init_from_env() -> bool:
    """Join the process group a launcher (torchrun, accelerate launch, `launch`) described in the
    environment; returns whether there is more than one process. On GPUs each process takes the
    GPU of its LOCAL_RANK, so `--device auto` and `cuda` resolve to it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = _backend()
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))))
        dist.init_process_group(backend)
    return active()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, n: int, port: int, threads: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(n),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if threads:
        torch.set_num_threads(threads)
    init_from_env()
    try:
        fn(*args)
        barrier()  # leave together: no rank tears its side of the group down while another still writes or talks
    except BaseException:
        # spawn reports the first process to exit, which may be a healthy rank whose barrier lost this one:
        # the real error reaches stderr whichever it is
        traceback.print_exc()
        sys.stderr.flush()
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    _exit_now()


def _exit_now() -> None:
    """End a worker whose work is done and written, skipping the interpreter's teardown.

    Why: at teardown gloo's C++ threads are destroyed in no fixed order, and now and then one
    is still joinable, which aborts the process (SIGABRT, "terminate called without an active
    exception"; seen once in CI). `mp.spawn` would then report a run as failed whose every file
    was written. A worker that raised never gets here: it prints its traceback and exits non-zero."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed by the test runner's capture: nothing left to lose
            pass
    os._exit(0)


def launch(fn: Callable[..., Any], processes: int, *args: Any) -> None:
    """Run `fn(*args)` in `processes` fresh processes on this machine, joined in one group
    (`fn` must be importable: a module-level function). On the CPU the cores are split between
    them (each gets cores // processes torch threads), so N processes do not fight over them."""
    import torch.multiprocessing as mp

    threads = 0 if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // processes)
    mp.spawn(_worker, args=(processes, free_port(), threads, fn, args), nprocs=processes, join=True)


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
    if not active():
        return [obj]
    out: list[Any] | None = [None] * world() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (what it decided: chunks to compute, a held-out loss)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums over ranks (token counts, loss sums), in float64."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.tolist()


def all_max(value: float) -> float:
    """The largest value over ranks: one clock for every rank's time budget, so all stop together."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0])


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over ranks, in one flat buffer. A parameter without a
    gradient on a rank contributes zeros; one without a gradient on every rank (a site no row of
    the global batch used) keeps none, so the optimiser skips it as one process would."""
    if not active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has = torch.tensor([float(p.grad is not None) for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [has])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n
    for p, used in zip(params, flat[offset:].tolist()):
        if not used:
            p.grad = None
