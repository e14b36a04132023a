"""The Feature Consistency Rate and what must be reported with it.

FCR(f) = mean over queries (x̂, ẑ) ∈ D of  Σ_j w_j 1{f(x_j) = f(x̂)} / Σ_j w_j.

Which weights: the generator's samples already follow P(x; ẑ) ∝ P(x)·k(d) (it was trained
on inputs drawn that way), so they are NOT weighted by k again — that would estimate
P(x)·k² (`generator_weights`: 1 for a verified sample inside the hard kernel's ball, 1 for
every verified sample under the gaussian kernel). Only the empirical reference, which draws
its neighbours from P(x) itself, is weighted by k(d). Queries with f(x̂) undefined are skipped; queries whose samples
all have zero weight are counted and skipped (they say nothing). A sample whose feature
is undefined does not share the query's label.

With it, always: a bootstrap 95% CI over queries, the chance level
p0 = mean_q P_{x~P(X)}(f(x) = f(x̂_q)) and κ = (FCR − p0)/(1 − p0). A feature that is
constant on the prior has p0 = 1: it is reported as degenerate, never as κ = 1.

Where the bootstrap reaches 0 or 1 it cannot show the uncertainty on that side: with every
query at FCR 1, every resample is 1 and the CI collapses to [1, 1] (a feature that keeps the
majority label on 16 queries then reads "κ 1.00 [1.00, 1.00]"). There the interval is widened
to the Wilson interval over the counted queries (each query's rate lies in [0, 1], so a
proportion over as many queries is the conservative case), and κ's with it.

κ's CI comes from one bootstrap that resamples the queries *and* the prior pool that p0 is
estimated from: p0 from 48 judge-labelled prompts is itself uncertain, and a CI that treated
it as exact would call chance-level features "above chance" too often.

Every bootstrap here (the FCR over queries; κ over queries and the p0 pool together; the
generator-minus-empirical gap) is read as BCa moved from Hesterberg's expanded levels
(`AUTO_INTERVAL`, `_read_interval`). The expanded levels fix the percentile interval's
narrowness on few queries (it inherits the bootstrap's variance, which divides by n, and the
normal quantile); BCa's bias correction and acceleration fix its lean where κ's bootstrap
distribution is skewed. Simulated with known κ (`bench/kappa_ci_coverage.py`, NOTES §51), the
two together miss the truth in 4.9–6.7% of 1,000 draws at 10–120 queries, their two tails
more even than the expanded interval's alone; plain BCa missed up to 9.8% at 10 queries.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from .distances import Kernel, Metric, kernel_weight, prepare, prepared_distance
from .errors import AutoscopeError
from .fcr_figures import FCRFigures

Label = Hashable | None


class FCRResult(FCRFigures):
    """An FCR as `fcr` computes it: its figures (`FCRFigures`), the per-query rates and what was
    skipped."""

    n_undefined: int  # skipped: f(x̂) undefined
    n_no_weight: int  # skipped: no sample had weight
    mean_weight: float | None = None  # mean Σw per counted query (accepted samples for the hard kernel)
    per_query: list[float] = []
    counted: list[int] = []  # positions, in the query list, of the queries per_query holds (pairs two rows' queries)
    ci_widened: bool = False  # the bootstrap CI touched 0 or 1 and was widened to Wilson's (`boundary_widened`)

    def line(self) -> str:
        if self.fcr is None:
            return f"FCR undefined ({self.n_undefined} undefined, {self.n_no_weight} without accepted samples)"
        k = "degenerate (p0 = 1)" if self.degenerate else f"κ={self.kappa:.3f}" + (
            f" [{self.kappa_ci_low:.3f}, {self.kappa_ci_high:.3f}]" if self.kappa_ci_low is not None else "")
        return f"FCR={self.fcr:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] p0={self.p0:.3f} {k} (n={self.n_queries})"


def generator_weights(samples: Sequence, kernel: str) -> list[float]:
    """Weights of verified generator samples: unweighted, since the generator samples
    P(x)·k(d) already. The hard kernel is the acceptance test (d < ε); under the gaussian
    kernel every verified sample (finite distance) counts once."""
    if kernel == "hard":
        return [1.0 if s.accepted else 0.0 for s in samples]
    return [1.0 if np.isfinite(s.distance) and s.distance < 1e8 else 0.0 for s in samples]


def sampled_fcr(run: Any, labels: Mapping[str, Label], prior_labels: Sequence[Label], n_boot: int = 2000, seed: int = 0) -> FCRResult:
    """FCR of a sampled run (a `SampleRun`) whose queries and samples are labelled in
    `labels`, with the generator's weights — the one way every caller scores a run."""
    q_lab = [labels.get(q.query) for q in run.queries]
    s_lab = [[labels.get(s.text) for s in q.samples] for q in run.queries]
    w = [generator_weights(q.samples, run.kernel) for q in run.queries]
    return fcr(q_lab, s_lab, w, prior_labels, n_boot, seed)


def chance_levels(query_labels: Sequence[Label], prior_labels: Sequence[Label]) -> list[float]:
    """P_{x~P(X)}(f(x) = label) for each query label, from the prior's labels."""
    counts = Counter(lab for lab in prior_labels if lab is not None)
    n = max(len(prior_labels), 1)
    return [counts.get(lab, 0) / n for lab in query_labels]


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n: sensible at 0 and n, unlike k/n ± z·se."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def boundary_widened(lo: float, hi: float, value: float, n: int) -> tuple[float, float]:
    """The bootstrap CI, widened to the Wilson interval of `value` over `n` units where it
    touches 0 or 1 (see the module docstring); unchanged elsewhere."""
    if n <= 0 or not (lo <= 1e-12 or hi >= 1 - 1e-12):
        return lo, hi
    w_lo, w_hi = wilson(value * n, n)  # a mean of rates: k need not be whole
    return min(lo, w_lo), max(hi, w_hi)


def expanded_tails(n: int, level: float = 0.95) -> tuple[float, float]:
    """The bootstrap quantile levels of Hesterberg's expanded percentile interval over n
    units: Φ(∓√(n/(n−1))·t_{n−1, 1−α/2}) instead of α/2 and 1 − α/2. Why: the percentile
    interval inherits the bootstrap's variance, which divides by n, and the normal quantile;
    both make it too narrow for small n (see the module docstring). n < 2: the plain levels."""
    a = (1 - level) / 2
    if n < 2:
        return a, 1 - a
    from scipy.stats import norm, t

    tail = float(norm.cdf(-math.sqrt(n / (n - 1)) * t.ppf(1 - a, n - 1)))
    return tail, 1 - tail


Interval = Literal["auto", "percentile", "expanded", "bca", "bca_expanded"]
AUTO_INTERVAL: Interval = "bca_expanded"  # what `auto` reads (NOTES §51, bench/kappa_ci_coverage.py)


def bca_tails(replicates: np.ndarray, estimate: float, acceleration: float,
              base: tuple[float, float] = (0.025, 0.975)) -> tuple[float, float] | None:
    """The quantile levels of Efron's BCa interval: the `base` levels (the percentile
    interval's, or the expanded ones) moved by the bias correction z0 (the share of replicates
    under the estimate, on the normal scale) and the acceleration a (how the statistic's spread
    changes with its value, from the jackknife). Why: κ is a ratio bounded by 1 whose bootstrap
    distribution is skewed and off-centre near the boundary; the percentile interval reads it
    as if it were neither. None where z0 is not finite (every replicate on one side) or the
    adjusted levels leave (0, 1)."""
    from scipy.stats import norm

    if not 0.0 < base[0] < base[1] < 1.0:  # two units: the expanded levels reach 0 and 1, nothing to move
        return None
    below = float(np.mean(replicates < estimate) + 0.5 * np.mean(replicates == estimate))
    if not 0.0 < below < 1.0:
        return None
    z0 = float(norm.ppf(below))
    levels = []
    for z in (norm.ppf(base[0]), norm.ppf(base[1])):
        den = 1 - acceleration * (z0 + z)
        if den <= 0:
            return None
        levels.append(float(norm.cdf(z0 + (z0 + z) / den)))
    lo, hi = levels
    return (lo, hi) if 0.0 < lo < hi < 1.0 else None


def jackknife_acceleration(groups: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> float:
    """BCa's acceleration from delete-one jackknife values of several independently resampled
    samples (Efron & Tibshirani §14.3, summed over samples): each group is (values, how many
    units share each value, the sample's size n). 0 where the jackknife shows no spread."""
    num = den = 0.0
    for values, counts, n in groups:
        if n < 2:
            continue
        mean = float((values * counts).sum() / counts.sum())
        u = (n - 1) * (mean - values)
        num += float((counts * u ** 3).sum()) / n ** 3
        den += float((counts * u ** 2).sum()) / n ** 2
    return 0.0 if den <= 0 else num / (6 * den ** 1.5)


def _read_interval(replicates: np.ndarray, estimate: float, n: int, interval: Interval, level: float,
                   acceleration: Callable[[], float]) -> tuple[float, float]:
    """Quantiles of `replicates` at the levels `interval` names (`auto`: AUTO_INTERVAL). The
    BCa readings fall back to their base levels where BCa has none (`bca_tails`)."""
    if interval == "auto":
        interval = AUTO_INTERVAL
    plain = ((1 - level) / 2, (1 + level) / 2)
    base = plain if interval in ("percentile", "bca") else expanded_tails(n, level)
    tails = bca_tails(replicates, estimate, acceleration(), base) if interval.startswith("bca") else None
    lo, hi = tails or base
    return float(np.quantile(replicates, lo)), float(np.quantile(replicates, hi))


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                 interval: Interval = "auto") -> tuple[float, float]:
    """CI of the mean of `values` (one per query): BCa or expanded percentile (`_read_interval`)."""
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    n = len(values)
    # the mean's delete-one values are (sum − x_i)/(n − 1)
    jack = lambda: jackknife_acceleration([((values.sum() - values) / (n - 1), np.ones(n), n)]) if n > 1 else 0.0  # noqa: E731
    return _read_interval(means, float(values.mean()), n, interval, level, jack)


BOOT_DRAWS_AT_ONCE = 25_000_000  # resampled pool entries drawn literally (2000 resamples of 12,500 prompts)


def resampled_frequencies(p_ids: np.ndarray, n_labels: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Frequency [B, K] of each label id 0..K-1 in `n_boot` resamples, with replacement, of the
    prior pool's label ids (-1: undefined). Up to BOOT_DRAWS_AT_ONCE draws the pool is resampled
    literally, as it always was; beyond, each resample's label counts are drawn from the
    multinomial they follow — the same distribution in B·K memory instead of B·N (at 200k
    prompts the literal draw is 3.2 GB, and counting it label by label takes minutes)."""
    if n_boot * len(p_ids) <= BOOT_DRAWS_AT_ONCE:
        drawn = p_ids[rng.integers(0, len(p_ids), (n_boot, len(p_ids)))]  # [B, N]
        return np.stack([(drawn == k).mean(1) for k in range(n_labels)], 1) if n_labels else np.zeros((n_boot, 0))
    share = np.bincount(p_ids + 1, minlength=n_labels + 1) / len(p_ids)  # slot 0: undefined
    return rng.multinomial(len(p_ids), share, size=n_boot)[:, 1:] / len(p_ids)


def kappa_bootstrap(rates: np.ndarray, query_labels: Sequence[Label], prior_labels: Sequence[Label],
                    n_boot: int = 2000, seed: int = 0, level: float = 0.95, interval: Interval = "auto") -> tuple[float | None, float | None]:
    """CI of κ = (mean rate − mean p0) / (1 − mean p0), resampling the counted queries and the
    prior pool together, read as BCa or at the expanded percentile levels (`_read_interval`).
    Replicates where p0 = 1 (the resampled pool holds only the query's labels) have no κ and
    are left out."""
    if len(rates) == 0 or not prior_labels:
        return None, None
    ids: dict[Label, int] = {}
    q_ids = np.array([ids.setdefault(lab, len(ids)) for lab in query_labels])
    p_ids = np.array([ids.setdefault(lab, len(ids)) if lab is not None else -1 for lab in prior_labels])
    rng = np.random.default_rng(seed + 1)
    qi = rng.integers(0, len(rates), (n_boot, len(rates)))
    freq = resampled_frequencies(p_ids, len(ids), n_boot, rng)  # [B, K]
    p0 = np.take_along_axis(freq, q_ids[qi], 1).mean(1)  # [B]
    fc = rates[qi].mean(1)
    ok = p0 < 1 - 1e-9
    if not ok.any():
        return None, None
    kappas = (fc[ok] - p0[ok]) / (1 - p0[ok])
    counts = np.bincount(p_ids + 1, minlength=len(ids) + 1)  # slot 0: undefined
    share = counts[1:] / len(p_ids)
    p0_hat = float(share[q_ids].mean())
    if p0_hat >= 1 - 1e-9:
        return None, None
    estimate = (float(rates.mean()) - p0_hat) / (1 - p0_hat)
    acceleration = lambda: _kappa_acceleration(rates, q_ids, counts)  # noqa: E731
    return _read_interval(kappas, estimate, len(rates), interval, level, acceleration)


def _kappa_acceleration(rates: np.ndarray, q_ids: np.ndarray, counts: np.ndarray) -> float:
    """BCa's acceleration for κ from the jackknife of both samples: leaving out one query, and
    leaving out one pool prompt (every prompt of one label leaves the same κ, so the pool's
    jackknife has one value per label, counted as often as the label is). NaN-free: a
    leave-one-out whose p0 reaches 1 makes the acceleration 0 (no BCa adjustment for skew)."""
    n, size = len(rates), int(counts.sum())
    share = counts[1:] / size
    p0_q = share[q_ids]
    groups = []
    if n > 1:
        fc_i = (rates.sum() - rates) / (n - 1)
        p0_i = (p0_q.sum() - p0_q) / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):  # p0 = 1 leaving one out: not finite, handled below
            groups.append(((fc_i - p0_i) / (1 - p0_i), np.ones(n), n))
    if size > 1:
        present = np.nonzero(counts)[0]  # slot 0 (undefined) included: leaving one out changes every share
        fc = float(rates.mean())
        vals = []
        for g in present:
            c = counts.astype(float)
            c[g] -= 1
            p0_g = float((c[1:] / (size - 1))[q_ids].mean())
            vals.append((fc - p0_g) / (1 - p0_g) if p0_g < 1 - 1e-9 else np.nan)
        groups.append((np.array(vals), counts[present].astype(float), size))
    if any(not np.isfinite(v).all() for v, _, _ in groups):
        return 0.0
    return jackknife_acceleration(groups)


def fcr(
    query_labels: Sequence[Label],
    sample_labels: Sequence[Sequence[Label]],
    weights: Sequence[Sequence[float]],
    prior_labels: Sequence[Label],
    n_boot: int = 2000,
    seed: int = 0,
) -> FCRResult:
    """FCR with CI, p0 and κ from labels and kernel weights (one list per query)."""
    rates, wsum, positions = [], [], []
    undefined = no_weight = 0
    for pos, (ql, sl, w) in enumerate(zip(query_labels, sample_labels, weights)):
        if ql is None:
            undefined += 1
            continue
        w_arr = np.asarray(w, dtype=float)
        tot = w_arr.sum()
        if tot <= 0:
            no_weight += 1
            continue
        match = np.array([s is not None and s == ql for s in sl], dtype=float)
        rates.append(float((w_arr * match).sum() / tot))
        positions.append(pos)
        wsum.append(tot)
    if not rates:
        return FCRResult(fcr=None, ci_low=None, ci_high=None, p0=None, kappa=None, degenerate=False,
                         n_queries=0, n_undefined=undefined, n_no_weight=no_weight)
    r = np.array(rates)
    value = float(r.mean())
    boot_lo, boot_hi = bootstrap_ci(r, n_boot, seed)
    lo, hi = boundary_widened(boot_lo, boot_hi, value, len(r))
    if len(r) < 2:  # one query: no spread to resample, so its interval is Wilson's over one unit
        lo, hi = wilson(value, 1)
    result = FCRResult(fcr=value, ci_low=lo, ci_high=hi, p0=None, kappa=None, degenerate=False, n_queries=len(rates),
                       n_undefined=undefined, n_no_weight=no_weight, mean_weight=float(np.mean(wsum)),
                       per_query=[float(x) for x in r], counted=positions, ci_widened=(lo, hi) != (boot_lo, boot_hi))
    return against_chance(result, query_labels, prior_labels, n_boot, seed)


def against_chance(result: FCRResult, query_labels: Sequence[Label], prior_labels: Sequence[Label],
                   n_boot: int = 2000, seed: int = 0) -> FCRResult:
    """`result` with p0, κ and κ's CI taken against `prior_labels`: how one FCR is read against
    another chance population (the conditional one of `--only` and gated features) without
    scoring its samples again. `query_labels` are all queries' labels, as `fcr` was given them.
    No prior prompt: no p0 and no κ (not p0 = 0)."""
    if result.fcr is None or not prior_labels:
        return result.model_copy(update={"p0": None, "kappa": None, "degenerate": False, "kappa_ci_low": None, "kappa_ci_high": None})
    if not result.counted or len(result.counted) != len(result.per_query):
        raise AutoscopeError("this FCR was saved without its per-query rates and the queries they belong to (scored before "
                             "they were kept): score the run again to read it against another chance level")
    counted = [query_labels[pos] for pos in result.counted]
    r = np.array(result.per_query)
    p0 = float(np.mean(chance_levels(counted, prior_labels)))
    degenerate = p0 >= 1 - 1e-9
    kappa = None if degenerate else (result.fcr - p0) / (1 - p0)
    k_lo, k_hi = (None, None) if degenerate else kappa_bootstrap(r, counted, prior_labels, n_boot, seed)
    if not degenerate and result.ci_widened and k_lo is not None and k_hi is not None:
        k_lo, k_hi = min(k_lo, (result.ci_low - p0) / (1 - p0)), max(k_hi, (result.ci_high - p0) / (1 - p0))
    return result.model_copy(update={"p0": p0, "kappa": kappa, "degenerate": degenerate, "kappa_ci_low": k_lo, "kappa_ci_high": k_hi})


def gap_ci(gen: FCRResult, emp: FCRResult, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float | None, float | None]:
    """CI of generator FCR minus the empirical reference over the same queries, read as every
    CI here is (`_read_interval`).

    Why paired: both rows score the same queries, and a query whose ball is consistent tends
    to have consistent samples too, so the two FCRs move together from query to query; two
    separate CIs would call a gap unresolved that the pairing resolves. Each resample draws
    query positions from those either row counted and takes each row's mean over the drawn
    positions it counted — the reported gap's own statistic, paired wherever both counted.

    Where a row's own CI had to be widened at 0 or 1 (its rates there have no bootstrap
    variance: every query at 1, say), the gap's interval is widened to the difference of the
    two rows' intervals, so an FCR of 1 against 1 is not a gap of exactly 0 [0, 0].
    None when fewer than two queries were counted (no spread to resample), or either row
    counted none (or rows of runs scored before `counted` existed)."""
    if gen.fcr is None or emp.fcr is None or not gen.counted or not emp.counted:
        return None, None
    union = np.array(sorted(set(gen.counted) | set(emp.counted)))
    if len(union) < 2:
        return None, None
    g_rate, e_rate = np.full(union.max() + 1, np.nan), np.full(union.max() + 1, np.nan)
    g_rate[gen.counted], e_rate[emp.counted] = gen.per_query, emp.per_query
    rng = np.random.default_rng(seed + 2)
    drawn = union[rng.integers(0, len(union), (n_boot, len(union)))]  # [B, U]
    g_drawn, e_drawn = g_rate[drawn], e_rate[drawn]
    # a resample that drew none of one row's queries has no gap: left out below
    gaps = _row_means(g_drawn) - _row_means(e_drawn)
    gaps = gaps[np.isfinite(gaps)]
    if len(gaps) == 0:
        return None, None
    g_u, e_u = g_rate[union], e_rate[union]
    estimate = float(np.nanmean(g_u) - np.nanmean(e_u))

    def acceleration() -> float:  # leave one of the union's queries out, as the resamples draw them
        keep = ~np.eye(len(union), dtype=bool)
        jack = _row_means(np.where(keep, g_u, np.nan)) - _row_means(np.where(keep, e_u, np.nan))
        return jackknife_acceleration([(jack, np.ones(len(union)), len(union))]) if np.isfinite(jack).all() else 0.0

    lo, hi = _read_interval(gaps, estimate, len(union), "auto", level, acceleration)
    if gen.ci_widened or emp.ci_widened:
        lo, hi = min(lo, gen.ci_low - emp.ci_high), max(hi, gen.ci_high - emp.ci_low)
    return lo, hi


def _row_means(x: np.ndarray) -> np.ndarray:
    """Mean of each row over its finite entries; NaN for a row with none (without numpy's
    empty-slice warning)."""
    ok = np.isfinite(x)
    n = ok.sum(1)
    total = np.where(ok, x, 0.0).sum(1)
    return np.divide(total, n, out=np.full(len(x), np.nan), where=n > 0)


def neighbour_lists(
    zq: torch.Tensor,
    pool: torch.Tensor,
    eps: float,
    metric: Metric,
    kernel: Kernel,
    mean: torch.Tensor | None = None,
    exclude: Sequence[int | None] | None = None,
    chunk: int = 256,
    budget: int = 1 << 25,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, the pool prompts with kernel weight above 1e-12 (the query itself excluded)
    and their weights, in pool order.

    Exact at every size: the reference asks Q queries against N prompts, not all pairs, so it
    needs no index (1,000 queries at 200k prompts are 2·10⁸ distances, seconds). What must
    not grow with N × Q is memory: the weights are kept sparse, and a block of distances holds
    at most `budget` entries (128 MB) — 256 queries a block up to 131k prompts, as always."""
    chunk = max(1, min(chunk, budget // max(len(pool), 1)))
    xp = prepare(pool, metric, mean)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(0, len(zq), chunk):
        w = kernel_weight(prepared_distance(prepare(zq[i: i + chunk], metric, mean), xp, metric), eps, kernel)
        for q in range(i, min(i + chunk, len(zq))):
            if exclude is not None and exclude[q] is not None:
                w[q - i, exclude[q]] = 0.0
        rows, cols = (w > 1e-12).nonzero(as_tuple=True)  # row-major: each query's neighbours in pool order
        vals = w[rows, cols].numpy()
        split = np.cumsum(np.bincount(rows.numpy(), minlength=len(w)))[:-1]
        out.extend(zip(np.split(cols.numpy(), split), np.split(vals, split)))
    return out


def empirical_fcr(
    query_labels: Sequence[Label],
    zq: torch.Tensor,
    pool: torch.Tensor,
    pool_labels: Sequence[Label],
    eps: float,
    metric: Metric,
    kernel: Kernel,
    mean: torch.Tensor | None = None,
    exclude: Sequence[int | None] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    prior_labels: Sequence[Label] | None = None,
) -> FCRResult:
    """Generator-free reference: the same FCR over the prior's own prompts within ε of ẑ,
    weighted by k(d). `prior_labels` is the population p0 is taken over (default: the pool);
    pass the generator's, so both κ in a row share one chance level."""
    labels_arr = list(pool_labels)
    sample_labels, weights = [], []
    for idx, w in neighbour_lists(zq, pool, eps, metric, kernel, mean, exclude):
        sample_labels.append([labels_arr[j] for j in idx.tolist()])
        weights.append(w.tolist())
    return fcr(query_labels, sample_labels, weights, pool_labels if prior_labels is None else prior_labels, n_boot, seed)
