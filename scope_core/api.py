"""The one door into `scope_core` for everything above it — `agent/`, `features/`,
`serving/` and `bench/` import `scope_core.api` and no other module of this package
(`tests/test_import_graph.py` keeps it so).

What it opens: a trained run (`Scope`: sample verified preimages of a query, score a
feature by FCR at a site), and the few pieces the layers above build on, grouped below by
what they are for.

The names in the first groups need no torch and are imported at once; the rest load on
first use (`__getattr__`), so a command or a feature module that only needs an error type
or a prior's labels starts without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# -- errors a user can act on ----------------------------------------------------------
from .errors import AutoscopeError

# -- sites, priors and run data (no torch) ---------------------------------------------
from .data import PriorConfig, RunData, build_examples
from .eps import EpsChoice, choose_eps
from .priors.icl import DIRECTIONS, input_of, task_label, task_of
from .priors.ioi import object_of, subject_of
from .priors.refusal import REASON_CATEGORIES, draw_refusal, generate_refusal
from .priors.refusal_parse import act_harmfulness, parse_refusal
from .sites import Site, parse_site, parse_sites

# -- the figures an FCR is reported with (no torch: the agent's run log keeps them) -----
from .fcr_figures import FCRFigures

if TYPE_CHECKING:  # the names below, loaded on first use
    from .audit import AUDIT_SET_FORMAT, LabellerAudit, audit_on_set, grammar_for, load_audit_set
    from .ball_sample import SIZE_ESTIMATED, SIZE_EXACT, SIZE_FOUND
    from .cache import ActivationCache
    from .devices import free_memory, memory_budget, module_device, resolve_device, resolve_dtype
    from .distributed import is_main
    from .distances import Kernel, distance, kernel_weight, pairwise_distance
    from .extract import forward_suffixes, length_buckets, pad_right
    from .fast_linear import prepacked_linears
    from .fcr import (AUTO_INTERVAL, FCRResult, against_chance, empirical_fcr, fcr, gap_ci, generator_weights, kappa_bootstrap, neighbour_lists,
                      sampled_fcr, wilson)
    from .kv_cache import PreallocatedCache, drop_rows
    from .neighbours import BallLists, neighbour_balls
    from .plan import Plan, PlanConfig, fmt_seconds, parse_memory, plan
    from .prior_density import STRATA, density_summary, describe_density, nearest_prior
    from .sample import QueryResult, Sample, SampleRun, VerifyMode, assemble, generate, summarise, verify, with_eps
    from .scope import FCRReport, LabelFn, Scope
    from .targets import Target, TargetConfig, autoscope_cache_dir, embedded_gguf_path, load_model_and_tokenizer, load_target
    from .train import TrainConfig, TrainResult, train

_LAZY: dict[str, str] = {
    # -- a trained run: open it, sample preimages, score a feature ------------------------
    **dict.fromkeys(["Scope", "FCRReport", "LabelFn"], "scope"),
    # -- targets and training -------------------------------------------------------------
    **dict.fromkeys(["Target", "TargetConfig", "load_target", "load_model_and_tokenizer", "embedded_gguf_path",
                     "autoscope_cache_dir"], "targets"),
    **dict.fromkeys(["TrainConfig", "TrainResult", "train"], "train"),
    # -- where models run: --device / --dtype, and the memory free there ------------------
    **dict.fromkeys(["resolve_device", "resolve_dtype", "module_device", "free_memory", "memory_budget"], "devices"),
    **dict.fromkeys(["is_main"], "distributed"),
    # -- what a run will need, from the target's config alone (`autoscope plan`) ------------
    **dict.fromkeys(["PlanConfig", "Plan", "plan", "parse_memory", "fmt_seconds"], "plan"),
    # -- samples, distances and FCR over them ---------------------------------------------
    **dict.fromkeys(["SampleRun", "QueryResult", "Sample", "VerifyMode", "assemble", "generate", "summarise", "verify", "with_eps"], "sample"),
    **dict.fromkeys(["FCRResult", "fcr", "gap_ci", "generator_weights", "sampled_fcr", "kappa_bootstrap", "wilson", "against_chance",
                     "AUTO_INTERVAL"], "fcr"),
    **dict.fromkeys(["Kernel", "distance", "kernel_weight", "pairwise_distance"], "distances"),
    # -- how densely the prior fills each query's ε-ball, and the lookup it gives ------------
    **dict.fromkeys(["nearest_prior", "density_summary", "describe_density", "STRATA"], "prior_density"),
    **dict.fromkeys(["NearCopyIndex"], "copies"),
    # -- a built-in prior's grammar, which reads the labels of a generated sample back -------
    **dict.fromkeys(["grammar_for", "load_audit_set", "audit_on_set", "LabellerAudit", "AUDIT_SET_FORMAT"], "audit"),
    # -- the activation cache and neighbour search at scale (bench/neighbour_scale_bench.py) --
    **dict.fromkeys(["ActivationCache"], "cache"),
    **dict.fromkeys(["BallLists", "neighbour_balls"], "neighbours"),
    **dict.fromkeys(["SIZE_EXACT", "SIZE_ESTIMATED", "SIZE_FOUND"], "ball_sample"),
    **dict.fromkeys(["empirical_fcr", "neighbour_lists"], "fcr"),
    # -- CPU speed-ups the embedded judge's engine and the benches reuse ------------------
    **dict.fromkeys(["prepacked_linears"], "fast_linear"),
    **dict.fromkeys(["PreallocatedCache", "drop_rows"], "kv_cache"),
    **dict.fromkeys(["forward_suffixes", "length_buckets", "pad_right"], "extract"),
}

__all__ = [
    "AutoscopeError",
    "PriorConfig", "RunData", "build_examples", "EpsChoice", "choose_eps", "Site", "parse_site", "parse_sites",
    "DIRECTIONS", "input_of", "task_label", "task_of", "object_of", "subject_of", "REASON_CATEGORIES", "generate_refusal", "act_harmfulness", "parse_refusal",
    "draw_refusal", "FCRFigures",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __package__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
