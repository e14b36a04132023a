"""`autoscope` command line: a thin layer that builds one config per command and calls
one function. Bad input ends with one red line and exit code 2; Ctrl-C says where the
saved progress is."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer
from rich.console import Console
from rich.markup import escape

from agent.judging.judge import JudgeUnavailable
from agent.log_console import stdout_console
from scope_core.api import AutoscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Read what an LLM activation encodes, and test it with numbers.")
console = stdout_console()  # piped, tables keep whole cells (agent/log_console.py)
err = Console(stderr=True, soft_wrap=True)


def friendly(fn):
    """Turn user errors into one clear line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutoscopeError as e:
            err.print(f"[bold red]error:[/bold red] {escape(str(e))}")  # a message's own brackets are text ('autoscope[vllm]')
            raise typer.Exit(2) from None
        except JudgeUnavailable as e:
            err.print(f"[bold red]error:[/bold red] {escape(str(e.reason))}. Work already done is saved (labels in the judge cache, rows in "
                      "the output file): rerun the same command to continue")
            raise typer.Exit(3) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]: finished work is saved under runs/; rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


ANCHORS = ("auto", "query", "ball")
ANCHORS_HELP = ("what each sample is conditioned on: query (ẑ itself), ball (an activation drawn from ẑ's ε-ball in the prior, so "
                "samples spread over the ball as P(x | z ∈ B) does) or auto (a share 1 − m of samples on the ball, m the neighbour mix the site's generator was trained with: all of them after noise alone)")

TEMPERATURE_HELP = ("sampling temperature (default: the run's for the site — 0.75 where training found loose ε-balls and trained "
                    "without neighbours, else 1; `train` prints it); lower is sharper: fewer refusals, more copies, FCR pushed above the reference")


def _anchors(value: str) -> str:
    if value not in ANCHORS:
        raise AutoscopeError(f"--anchors {value!r} is not one of {', '.join(ANCHORS)}")
    return value


@contextlib.contextmanager
def _bad_options(command: str) -> Iterator[None]:
    """A config the options do not validate (pydantic, bad integers) as one line naming the command's --help."""
    try:
        yield
    except ValueError as e:
        raise AutoscopeError(f"bad option: {' '.join(str(e).split())[:300]} — see `autoscope {command} --help`") from None


def _quiet_libraries() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


@app.command()
@friendly
def train(
    run: str = typer.Option("default", help="run name: outputs go to RUNS_DIR/RUN"),
    runs_dir: str = typer.Option("runs", help="folder that holds runs"),
    target: str = typer.Option("embedded", help="'embedded', a hub id, a local path or a .gguf file"),
    system_prompt: str = typer.Option("You are a helpful assistant.", help="system prompt of chat targets"),
    task: str | None = typer.Option("refusal", help="built-in prior: refusal, ioi, icl; 'none' with --data alone"),
    data: list[str] | None = typer.Option(None, help="prompt file(s): JSON, JSONL or CSV; FILE:harmful or FILE:harmless sets the label"),
    n: int = typer.Option(10000, help="prompts drawn from the built-in task"),
    heldout: int = typer.Option(500, help="prompts kept out of training"),
    sites: str = typer.Option("L18", help="sites the generator is trained on, e.g. L18 or L6,L12,L18,L24"),
    backbone: str = typer.Option("embedded", help="'embedded' (frozen SmolLM2), 'scratch', a hub id or a path"),
    arch: str = typer.Option("inversescope", help="inversescope or inversionview (baseline)"),
    sft: str = typer.Option("none", help="fine-tune the backbone first: none, full, lora, or lora-upper (LoRA only above the first control block: "
                            "keeps the trunk shortcut and fused verification)"),
    control_layers: str | None = typer.Option(None, help="backbone blocks that carry control layers, e.g. 19,23,27 "
                                              "(default: six spread from the block above the deepest site to the top)"),
    upper_blocks: int | None = typer.Option(None, min=0, help="shallow generator: above the deepest site, copies of only the target's last N "
                                            "blocks, fine-tuned with the control layers (faster sampling; NOTES §27). Default and 0: the whole "
                                            "frozen backbone (NOTES §38)"),
    batch_size: int = typer.Option(32, help="training batch size"),
    restrict_vocab: bool = typer.Option(True, help="generator outputs only tokens seen in the training prompts (faster; see NOTES.md)"),
    minutes: float = typer.Option(8.0, help="control-layer training budget (wall clock)"),
    lr_schedule: str = typer.Option("cosine", help="learning rate after warm-up: cosine (decays to a tenth over the budget) or constant"),
    weight_average: float = typer.Option(0.99, min=0.0, max=0.999999, help="evaluate and save a moving average of the trained "
                                         "weights with this decay instead of the last step's (NOTES §50, §52); 0: the last step's"),
    max_steps: int | None = typer.Option(None, min=1, help="also stop after this many optimiser steps: a budget that does not depend "
                                         "on the machine's load (set --minutes and --total-minutes high enough for it)"),
    total_minutes: float = typer.Option(14.5, help="budget of the whole command, caching included: training gets what is left, "
                                        "at most --minutes (0: no limit)"),
    min_steps: int = typer.Option(0, min=0, help="train at least this many optimiser steps, past --minutes and --total-minutes if "
                                  "the clock runs out first: FCR's agreement with the empirical reference depends on steps, not minutes "
                                  "(BENCHMARKS §25; the quickstart uses 600); 0: the clock alone"),
    metric: str = typer.Option("cosine", help="cosine, centred_cosine, euclidean or norm_euclidean"),
    eps_quantile: float = typer.Option(0.05, help="default ε per site = this quantile of pairwise distances"),
    eps: float | None = typer.Option(None, help="absolute ε at every site (overrides --eps-quantile)"),
    noise_mode: str = typer.Option("kernel", help="kernel (a shell at --noise-distance), range, or none"),
    noise_distance: float | None = typer.Option(None, help="noise shell distance (default: the prior's median nearest-neighbour "
                                                "distance at the site, at most its ε)"),
    neighbour_mix: float | None = typer.Option(None, help="share of examples conditioned on a clean ε-ball neighbour's activation "
                                               "instead of their own plus noise (0-1; 0 = the paper's noise only; see NOTES.md §24). "
                                               "Default: from the data — 0.7 where ε-balls are dense with close variants, else 0 (§38)"),
    init_from: str | None = typer.Option(None, help="a trained run's directory whose control layers start this one: pre-train on "
                                         "more prompts of the kind you study (a run with --data MORE.json), then fit to this prior "
                                         "(BENCHMARKS §15)"),
    encoder_hidden: int | None = typer.Option(None, min=0, help="hidden width of an MLP site encoder; 0: the paper's linear map. "
                                              "Default: read from the data with the neighbour mix, an MLP of twice the target's "
                                              "width where every site trains without neighbours (held-out loss 0.06–0.08 nats "
                                              "lower on real prompts, BENCHMARKS §31), else linear (§32)"),
    check: bool = typer.Option(True, help="end with a quick sample of held-out queries at each site's ε and a verdict on whether "
                               "the inverter conditions enough for FCR to mean much"),
    device: str = typer.Option("auto", help="where the target and generator run: auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N"),
    dtype: str = typer.Option("auto", help="weights' dtype: auto (bfloat16 on a GPU, float32 on the CPU), float32, bfloat16 or float16"),
    max_prompt_tokens: int = typer.Option(60, min=1, help="prompts longer than this many tokens (their own text) are dropped from the prior"),
    processes: int = typer.Option(1, min=1, help="data-parallel processes for caching and training (one per GPU; on the CPU they "
                                  "split its cores); the same run, checkpoints and result as one process"),
    seed: int = 0,
):
    """Build the prior, cache activations and train an inverter (resumes if interrupted)."""
    _quiet_libraries()
    from agent.train_check import train_and_check
    from scope_core.api import PriorConfig, TargetConfig, TrainConfig

    with _bad_options("train"):
        cfg = TrainConfig(
            run=run, runs_dir=runs_dir, target=TargetConfig(model=target, system_prompt=system_prompt, device=device, dtype=dtype,
                                                                  max_prompt_tokens=max_prompt_tokens),
            prior=PriorConfig(task=None if task in (None, "none") else task, data=data or [], n=n, heldout=heldout, seed=seed),
            sites=sites, backbone=backbone, arch=arch, sft=sft, upper_blocks=upper_blocks, minutes=minutes, max_steps=max_steps, min_steps=min_steps or None,
            batch_size=batch_size,
            lr_schedule=lr_schedule, weight_average=weight_average or None,
            restrict_vocab=restrict_vocab, total_minutes=total_minutes or None,
            control_layers=[int(x) for x in control_layers.split(",")] if control_layers else None, metric=metric,
            eps_quantile=eps_quantile, eps=eps, noise_mode=noise_mode, noise_distance=noise_distance, neighbour_mix=neighbour_mix, seed=seed,
            processes=processes, init_from=init_from, encoder_hidden=encoder_hidden,
        )
    train_and_check(cfg, console, check=check)


@app.command()
@friendly
def sample(
    site: str = typer.Option(..., help="site to invert, e.g. L18"),
    prompt: list[str] | None = typer.Option(None, help="query prompt(s); default: held-out prompts of the run"),
    run: str = typer.Option("default"),
    runs_dir: str = typer.Option("runs"),
    queries: int = typer.Option(3, help="held-out queries when no --prompt is given"),
    only: str | None = typer.Option(None, help="filter held-out queries by a label, e.g. harmful or reason=cybercrime"),
    n: int = typer.Option(16, help="samples per query"),
    temperature: float | None = typer.Option(None, help=TEMPERATURE_HELP),
    guidance: float = typer.Option(1.0, help="classifier-free guidance w against the unconditioned backbone: > 1 sharpens the query's "
                                   "likelihood (fewer refusals, FCR above the reference; BENCHMARKS §15); 1: plain sampling"),
    metric: str | None = typer.Option(None, help="distance (default: the run's)"),
    kernel: str = typer.Option("hard", help="hard or gaussian"),
    eps: float | None = typer.Option(None, help="absolute ε"),
    eps_quantile: float | None = typer.Option(None, help="ε as a quantile of the site's pairwise distances"),
    anchors: str = typer.Option("query", help=ANCHORS_HELP),
    seed: int = 0,
    verify: str = typer.Option("auto", help="auto: finish the target's forward from the decoder's cache where that is exact; "
                               "full: re-run the target on every sample"),
    device: str | None = typer.Option(None, help="where sampling and verification run: auto, cpu, cuda or cuda:N (default: the run's)"),
    dtype: str | None = typer.Option(None, help="float32, bfloat16 or float16 (default: the run's, whose cache was read in it)"),
):
    """Sample verified preimages of query activations and show them with distances."""
    _quiet_libraries()
    from agent.sample_report import SampleJobConfig, run_sample

    cfg = SampleJobConfig(site=site, prompts=prompt or [], run=run, runs_dir=runs_dir, queries=queries, only=only, n=n, temperature=temperature,
                          guidance=guidance, metric=metric, kernel=kernel, eps=eps, eps_quantile=eps_quantile, seed=seed, verify=verify,
                          device=device, dtype=dtype, anchors=_anchors(anchors))
    run_sample(cfg, console)


@app.command()
@friendly
def fcr(
    feature: str = typer.Option(..., "--feature", "--features", help="feature name(s), comma-separated, e.g. harmfulness,reason,method"),
    sites: str = typer.Option("L18", help="sites, e.g. L18 or L0-L29 (trained in the run, or trained now with --task)"),
    run: str | None = typer.Option(None, help="trained run (default: 'default', or TASK-TARGET-SITES with --task)"),
    runs_dir: str = typer.Option("runs"),
    task: str | None = typer.Option(None, help="refusal, ioi or icl: use (and train first, if missing) a run for this task and --sites"),
    target: str = typer.Option("embedded", help="with --task: the model under study ('embedded', a hub id or a path)"),
    minutes: float = typer.Option(8.0, help="with --task: training budget when the run must be trained first"),
    backbone: str = typer.Option("embedded", help="with --task: generator backbone when the run must be trained first"),
    prior_n: int = typer.Option(10000, help="with --task: prompts drawn from the task prior when the run must be trained first"),
    labeller: str = typer.Option("learned", help="learned (classifier fitted on the prior's labels) or llm (the judge labels every input)"),
    pool: int = typer.Option(240, help="with --labeller llm: prior prompts labelled for p0 and the empirical reference"),
    only: str | None = typer.Option(None, help="restrict queries D, e.g. harmful or reason=cybercrime"),
    queries: int = typer.Option(40, help="held-out queries"),
    n: int = typer.Option(16, help="samples per query"),
    kernel: str = typer.Option("hard", help="hard or gaussian"),
    metric: str | None = None,
    eps: float | None = typer.Option(None, help="absolute ε at every site"),
    eps_quantile: float | None = typer.Option(None, help="ε per site as a pairwise-distance quantile"),
    anchors: str = typer.Option("auto", help=ANCHORS_HELP),
    temperature: float | None = typer.Option(None, help=TEMPERATURE_HELP),
    empirical: bool = typer.Option(True, help="also compute the generator-free empirical-neighbour FCR"),
    judge_url: str | None = typer.Option(None, help="with --labeller llm: OpenAI-compatible judge (default: embedded)"),
    judge_model: str | None = None,
    judge_engine: str | None = None,
    judge_wait: float = typer.Option(300.0, help="with --labeller llm: seconds to wait for an unreachable judge before stopping; "
                                     "labels already given are cached"),
    json_out: str | None = typer.Option(None, "--json", help="also write the table's rows to this JSON file"),
    csv_out: str | None = typer.Option(None, "--csv", help="also write the table's rows to this CSV file"),
    audit_set: str | None = typer.Option(None, help="people's labels of generated samples (JSON lines, as --audit-sheet writes them, "
                                         "filled in): each labeller's accuracy on generated samples, where the prior has no grammar"),
    audit_sheet: str | None = typer.Option(None, help="write a random draw of accepted samples to this file, for people to label"),
    audit_sheet_size: int = typer.Option(100, min=1, help="samples on the --audit-sheet"),
    device: str | None = typer.Option(None, help="where training (with --task) and sampling run: auto, cpu, cuda or cuda:N (default: "
                                      "the run's; auto for a run trained now)"),
    dtype: str | None = typer.Option(None, help="float32, bfloat16 or float16 (default: the run's; auto for a run trained now)"),
    seed: int = 0,
):
    """Feature consistency rate per site, with CI, chance level p0, κ and the empirical reference.

    The refusal study in one command: `autoscope fcr --task refusal --features harmfulness,reason,method --sites L0-L29 --only harmful`.
    """
    _quiet_libraries()
    from agent.fcr_report import FCRJobConfig, run_fcr
    from agent.judging.judge import JudgeConfig

    judge = JudgeConfig.from_env(base_url=judge_url, model=judge_model, engine=judge_engine, outage_s=judge_wait) if labeller == "llm" else None
    cfg = FCRJobConfig(features=feature, sites=sites, run=run, runs_dir=runs_dir, task=task, target=target, minutes=minutes, backbone=backbone,
                       prior_n=prior_n, labeller=labeller, pool=pool, only=only, queries=queries, n=n, kernel=kernel, metric=metric, eps=eps,
                       eps_quantile=eps_quantile, empirical=empirical, judge=judge, json_out=json_out, csv_out=csv_out, seed=seed,
                       audit_set=audit_set, audit_sheet=audit_sheet, audit_sheet_size=audit_sheet_size,
                       device=device, dtype=dtype, anchors=_anchors(anchors), temperature=temperature)
    run_fcr(cfg, console, err)


@app.command()
@friendly
def explore(
    site: str = typer.Option("L18", help="site to explain"),
    budget: int | None = typer.Option(None, help="hypotheses to score (default 20); with --resume, raises the saved budget"),
    run: str = typer.Option("default", help="trained run to explore"),
    runs_dir: str = typer.Option("runs"),
    sites: str | None = typer.Option(None, help="also score the top hypotheses at these sites, e.g. L6,L12,L24"),
    only: str | None = typer.Option(None, help="restrict queries, e.g. harmful"),
    queries: int = typer.Option(48, help="held-out queries in D: half explore, half confirm (never shown to a proposer)"),
    samples: int = typer.Option(8, help="samples per query"),
    per_round: int = typer.Option(3, help="hypotheses asked for per round"),
    judge_mode: str = typer.Option("auto", "--judge", help="auto (evidence first, then the configured or embedded judge), none "
                                   "(hypotheses mined from the samples only: offline, no LLM) or only (the judge alone)"),
    p0_prompts: int = typer.Option(48, help="prior prompts the judge labels to estimate the chance level of an LLM feature"),
    screen_queries: int = typer.Option(8, help="judge-labelled hypotheses are scored on this many queries first; "
                                       "only those above chance get all of D (0: off)"),
    label_batch: int | None = typer.Option(None, help="inputs per judge labelling request (default: 8 for the embedded CPU judge, else 1)"),
    until_budget: bool = typer.Option(False, help="ignore the judge's 'done' and spend the whole budget"),
    minutes: float | None = typer.Option(None, min=0, help="wall-clock budget of the proposing loop (default 6); no hypothesis is "
                                         "scored past it, confirmation still runs (0: no limit); per session: with --resume, this session's"),
    eps: float | None = None,
    eps_quantile: float | None = None,
    anchors: str = typer.Option("auto", help=ANCHORS_HELP),
    temperature: float | None = typer.Option(None, help=TEMPERATURE_HELP),
    judge_url: str | None = typer.Option(None, help="OpenAI-compatible judge (default: $AUTOSCOPE_JUDGE_URL, else the embedded judge)"),
    judge_model: str | None = typer.Option(None, help="judge model name ($AUTOSCOPE_JUDGE_MODEL)"),
    judge_engine: str | None = typer.Option(None, help="vllm, openai, llamacpp or batched ($AUTOSCOPE_JUDGE_ENGINE)"),
    judge_wait: float = typer.Option(300.0, help="seconds to wait for an unreachable judge (down or restarting) before stopping; work done is kept"),
    resume: str | None = typer.Option(None, help="explore id to continue"),
    unsafe_weak_sandbox: bool = typer.Option(False, help="run judge-written code even where the host lacks an isolation layer "
                                             "(network namespace, empty root, seccomp): the code could then reach files or the network"),
    seed: int = 0,
):
    """Run the hypothesis loop: the judge proposes, autoscope compiles and scores by FCR."""
    _quiet_libraries()
    from agent.judging.judge import JudgeConfig
    from agent.loop import ExploreConfig, present_result, proposer_for
    from agent.loop import explore as run_explore

    if unsafe_weak_sandbox:
        os.environ["AUTOSCOPE_UNSAFE_WEAK_SANDBOX"] = "1"
    from agent.sandbox import isolation_summary

    err.print(isolation_summary())
    proposer = proposer_for(judge_mode)
    judge = JudgeConfig.from_env(base_url=judge_url, model=judge_model, engine=judge_engine, outage_s=judge_wait)
    given = {"budget": budget} if budget is not None else {}  # only what was asked: a resume raises the saved budgets to it
    if minutes is not None:
        given["minutes"] = minutes or None  # 0: no limit
    cfg = ExploreConfig(proposer=proposer,  # type: ignore[arg-type]
                        run=run, runs_dir=runs_dir, site=site, sites=sites, per_round=per_round, queries=queries,
                        samples=samples, only=only, eps=eps, eps_quantile=eps_quantile, explore_id=resume, judge=judge, seed=seed,
                        prior_for_p0_llm=p0_prompts, screen_queries=screen_queries, label_batch=label_batch,
                        stop_when_done=not until_budget, anchors=_anchors(anchors), temperature=temperature,
                        **given)  # type: ignore[arg-type]
    res = run_explore(cfg, console=err)
    present_result(res, site, console)
    if res.failure:
        err.print(f"[bold red]error:[/bold red] {res.failure}")
        raise typer.Exit(1)


@app.command()
@friendly
def report(
    explore_id: str = typer.Argument(..., help="explore id (runs/RUN/explore/ID) or a path to it"),
    run: str = typer.Option("default"),
    runs_dir: str = typer.Option("runs"),
):
    """Regenerate report.md and report.html of an explore run from its log."""
    from agent.report import explore_root, write_report

    md, html = write_report(explore_root(explore_id, run, runs_dir))
    console.print(f"wrote {md} and {html}")


@app.command()
@friendly
def label(
    feature: str = typer.Option(..., help="harmfulness, reason, method or task"),
    input: str = typer.Option(..., "--input", help="JSONL, CSV or JSON file"),
    output: str = typer.Option(..., "--output", help="JSONL written (appended; rerun to resume)"),
    field: str | None = typer.Option(None, help="text column (default: instruction/text/prompt/goal/Behavior/forbidden_prompt)"),
    labels: str | None = typer.Option(None, help="comma-separated label set overriding the built-in one"),
    batch: int = typer.Option(1, help="inputs per judge request (asking only)"),
    method: str = typer.Option("auto", help="ask (the judge answers the question), channel (the judge scores each label's "
                               "description; reason only) or auto (channel where the feature and the judge allow it)"),
    concurrency: int | None = typer.Option(None, help="judge requests in flight (default: 32 for the embedded judge, else 4)"),
    judge_url: str | None = None,
    judge_model: str | None = None,
    judge_engine: str | None = typer.Option(None, help="vllm, openai, llamacpp or batched ($AUTOSCOPE_JUDGE_ENGINE)"),
    embedded_engine: str = typer.Option("batched", help="without a judge URL: the embedded judge's engine, batched or llamacpp"),
    judge_wait: float = typer.Option(300.0, help="seconds to wait for an unreachable judge (down or restarting) before stopping; work done is kept"),
):
    """Label every row of a file with an LLM feature (concurrent, cached, resumable)."""
    from agent.judging.judge import JudgeConfig
    from agent.label import LabelConfig, check_method, label_with_judge, nothing_labelled, stats_line

    jc = JudgeConfig.from_env(base_url=judge_url, model=judge_model, engine=judge_engine, concurrency=concurrency, outage_s=judge_wait)
    cfg = LabelConfig(feature=feature, input=input, output=output, field=field, batch=batch, method=check_method(method),  # type: ignore[arg-type]
                      labels=[x.strip() for x in labels.split(",")] if labels else None, judge=jc)
    stats = label_with_judge(cfg, embedded_engine)
    console.print(stats_line(stats))
    failure = nothing_labelled(stats, output)
    if failure:
        err.print(f"[bold red]error:[/bold red] {failure}")
        raise typer.Exit(1)


@app.command()
@friendly
def plan(
    target: str = typer.Option("embedded", help="'embedded', a hub id, a model directory, a config.json or a .gguf file "
                               "(only its config is read)"),
    sites: str = typer.Option("L18", help="sites the generator is trained on, e.g. L12,L18,L24"),
    prompts: int = typer.Option(10000, help="prompts in the prior (all are cached)"),
    prompt_tokens: float = typer.Option(14.0, help="mean tokens of a prompt's text (the generated refusal prior: 13.9)"),
    gpus: int = typer.Option(0, min=0, help="GPUs (0: this machine's CPU)"),
    gpu_memory: str | None = typer.Option(None, help="memory per GPU, e.g. 80GB (default: the kind's)"),
    gpu_kind: str | None = typer.Option(None, help="h100, h200, a100, l4, cpu, or a peak dense TFLOP/s figure (default: h100 "
                                        "with --gpus, else cpu)"),
    dtype: str | None = typer.Option(None, help="float32, bfloat16 or float16 (default: float32 on the CPU, bfloat16 on GPUs)"),
    processes: int | None = typer.Option(None, min=1, help="data-parallel processes (default: one per GPU, or one)"),
    minutes: float = typer.Option(8.0, help="control-layer training budget"),
    queries: int = typer.Option(40, help="queries sampled per site"),
    samples: int = typer.Option(16, help="samples per query"),
    ram: str | None = typer.Option(None, help="host RAM, e.g. 512GB (default: this machine's on the CPU; unchecked with GPUs)"),
    runs_dir: str = typer.Option("runs", help="where the activation cache would go (its free disk is checked on the CPU)"),
    json_out: bool = typer.Option(False, "--json", help="print the plan as JSON"),
):
    """Memory per process, activation cache on disk, and time for caching, training and sampling —
    from the target's config alone (no weights). Figures are estimates; the assumptions are printed."""
    _quiet_libraries()
    from agent.plan_report import plan_hardware, show_plan
    from scope_core.api import PlanConfig, parse_memory

    gpus, kind, disk = plan_hardware(gpus, gpu_kind, runs_dir)
    with _bad_options("plan"):
        cfg = PlanConfig(target=target, sites=sites, prompts=prompts, text_tokens=prompt_tokens, gpus=gpus,
                         gpu_kind=kind, gpu_memory_gib=parse_memory(gpu_memory) if gpu_memory else None,
                         dtype=dtype, processes=processes, minutes=minutes, queries=queries, samples=samples,
                         ram_gib=parse_memory(ram) if ram else None, disk_free_gib=disk)
    show_plan(cfg, console, as_json=json_out)


judge_app = typer.Typer(help="The judge LLM server.")
app.add_typer(judge_app, name="judge")


@judge_app.command("serve")
@friendly
def judge_serve(
    engine: str = typer.Option("embedded", help="embedded or llamacpp (SmolLM2 on CPU via llama-cpp-python), "
                               "batched (SmolLM2 on CPU in torch, batching concurrent requests) or vllm"),
    model: str = typer.Option("Qwen/Qwen2-7B-Instruct", help="model for vllm"),
    host: str = "127.0.0.1",
    port: int = 8765,
    device: str = typer.Option("auto", help="batched engine: auto (the GPU when torch sees one), cpu, cuda or cuda:N"),
    dtype: str = typer.Option("auto", help="batched engine: auto (bfloat16 on a GPU, float32 on the CPU), float32, bfloat16 or float16; "
                              "vllm: auto (the model's own), bfloat16, float16 or float32"),
    tensor_parallel_size: int = typer.Option(1, min=1, help="vllm: GPUs to split the judge over"),
    gpu_memory_utilization: float = typer.Option(0.9, min=0.01, max=1.0,
                                                 help="vllm: share of each GPU's memory it may take (leave room for a target)"),
):
    """Serve an OpenAI-compatible judge; point AUTOSCOPE_JUDGE_URL at it."""
    import subprocess

    from serving.launch import VllmOptions, serve_command

    vllm = VllmOptions(tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
                       dtype=dtype if engine == "vllm" else "auto")
    cmd, eng = serve_command(engine, model, host, port, device, dtype, vllm=vllm)
    console.print(f"serving on http://{host}:{port}/v1 — export AUTOSCOPE_JUDGE_URL=http://{host}:{port}/v1 AUTOSCOPE_JUDGE_ENGINE={eng}")
    raise typer.Exit(subprocess.call(cmd))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
