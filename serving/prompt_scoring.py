"""Log-probabilities of prompt tokens (OpenAI `echo` + `logprobs`), batched on CPU.

Why: a closed label set can be scored instead of asked. The channel labeller
(`agent.judging.channel`) reads log P(text | "a request about <category>") for every category;
SmolLM2-135M picks the right harm category that way far more often than when it is
asked to name one (BENCHMARKS §6). A scoring request is K prompts that differ in a
category prefix and share the text, and a batch holds many such requests, so:

* rows are grouped by the prefix they share with their neighbours in sorted order (the
  category descriptions); each group's prefix runs once and is kept (`ScoredPrefixes`),
  with its own tokens' log-probabilities, so a row costs only its own tokens;
* a lone request's K prompts (too few per category to group) are cut where their shared
  text begins (`context_cuts`), so their category contexts are cached too, and one forward
  scores the text behind K prefixes of different lengths;
* the head runs only on the positions whose log-probabilities are asked for;
* the linears run on oneDNN-prepacked weights (`scope_core.fast_linear`), 1.2–1.5× faster
  (NOTES §31), labels unchanged.

Right padding needs no mask: a causal model's real tokens never attend to later ones.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from scope_core.api import PreallocatedCache, prepacked_linears

from .batch_engine import common_prefix_length


def scoring_groups(rows: list[list[int]], min_rows: int = 8, min_shared: int = 2) -> list[tuple[int, list[int]]]:
    """Rows (indices) grouped with the length of the prefix each group shares.

    In sorted order, rows that share more than their whole range does form runs (for a
    channel batch: one run per category prefix). A range splits into its runs when at least
    half its rows land in runs of `min_rows` or more (so a few texts that happen to start
    alike do not fragment a category's forward); smaller runs stay together at the range's
    prefix. Each group's prefix runs once (`ScoredPrefixes`); shorter than `min_shared`
    tokens it is not worth a cache entry."""
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    groups: list[tuple[int, list[int]]] = []

    def emit(members: list[int], p: int) -> None:
        p = min(p, min(len(rows[i]) for i in members) - 1)  # every row keeps one token of its own
        groups.append((p if p >= min_shared else 0, members))

    def split(members: list[int], depth: int) -> None:
        p = common_prefix_length([rows[i] for i in members]) if len(members) > 1 else depth
        runs: list[list[int]] = [[members[0]]]
        for prev, i in zip(members, members[1:]):
            if common_prefix_length([rows[prev], rows[i]]) > p:
                runs[-1].append(i)
            else:
                runs.append([i])
        big = [r for r in runs if len(r) >= min_rows and len(r) < len(members)]
        if 2 * sum(len(r) for r in big) < len(members):
            emit(members, p)
            return
        rest = [i for r in runs if not (len(r) >= min_rows and len(r) < len(members)) for i in r]
        if rest:
            emit(rest, p)
        for r in big:
            split(r, p)

    if rows:
        split(order, 0)
    return groups


def common_suffix_length(rows: list[list[int]]) -> int:
    """Length of the longest suffix every row shares."""
    return common_prefix_length([r[::-1] for r in rows])


def context_cuts(rows: list[list[int]], p: int, min_suffix: int = 4) -> list[int] | None:
    """Where each row's own context ends, for rows that are one text under several contexts
    (one channel-scoring request: the same text behind each class's description), or None.

    Such rows share a prefix of `p` tokens and a common suffix (the text, and the contexts'
    shared ending such as ".\nRequest:"), and differ in a middle. Cut before the suffix, each
    row's context is a prefix that recurs in every request (the class descriptions), so it
    is computed once and cached, and a request costs its text under each context — as in a
    batch, where a class's rows form their own group — instead of its text and every
    description again. Rows that end alike in fewer than `min_suffix` tokens (different
    texts: at most a shared full stop) are left as they are."""
    if len(rows) < 2:
        return None
    s = min(common_suffix_length(rows), min(len(r) for r in rows) - p - 1)  # every middle keeps a token
    if s < min_suffix:
        return None
    return [len(r) - s for r in rows]


class ScoredPrefixes:
    """A few prompt prefixes with their KV (one row), their tokens' log-probabilities and
    the log-distribution after their last token; least recently used leave first."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._entries: OrderedDict[tuple[int, ...], tuple[list[tuple[torch.Tensor, torch.Tensor]], list[float | None], torch.Tensor]] = OrderedDict()

    def get(self, ids: list[int]):
        key = tuple(ids)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        return None

    def put(self, ids: list[int], entry) -> None:
        self._entries[tuple(ids)] = entry
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


class PromptScorer:
    """Token log-probabilities of whole prompts through `engine`'s model (see module doc)."""

    def __init__(self, engine: Any, rows_per_forward: int = 16, prefix_capacity: int = 64, min_rows: int = 8):
        self.engine, self.min_rows = engine, min_rows
        self.rows_per_forward = rows_per_forward
        self.prefixes = ScoredPrefixes(prefix_capacity)

    def _head_logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        """log-softmax of the head on hidden [N, d] -> [N, V] (float)."""
        logits = self.engine.model.get_output_embeddings()(hidden).float().cpu()  # scores are read on the CPU
        cap = getattr(self.engine.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.log_softmax(logits, dim=-1)

    @torch.no_grad()
    def _prefix(self, ids: list[int]):
        hit = self.prefixes.get(ids)
        if hit is not None:
            return hit
        cache = PreallocatedCache(self.engine.n_layers, len(ids))
        hidden = self.engine.model.base_model(input_ids=torch.tensor([ids], device=self.engine.device), past_key_values=cache,
                                              use_cache=True).last_hidden_state[0]
        lp = self._head_logprobs(hidden)
        token_lp: list[float | None] = [None] + lp[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
        entry = ([(layer.keys, layer.values) for layer in cache.layers], token_lp, lp[-1])
        self.prefixes.put(ids, entry)
        return entry

    @torch.no_grad()
    def score(self, prompts: list[list[int]], with_next: bool = False) -> list[tuple[list[float | None], tuple[int, float] | None]]:
        """For each prompt: the log-probability of every token given the ones before it (None
        for the first), and with `with_next` the greedy next token and its log-probability."""
        if any(not p for p in prompts):
            raise ValueError("empty prompt")
        with prepacked_linears(self.engine.model):
            return self._score(prompts, with_next)

    def _score(self, prompts: list[list[int]], with_next: bool) -> list[tuple[list[float | None], tuple[int, float] | None]]:
        out: list[tuple[list[float | None], tuple[int, float] | None] | None] = [None] * len(prompts)
        for p, members in scoring_groups(prompts, self.min_rows):
            cuts = context_cuts([prompts[i] for i in members], p) or [p] * len(members)
            entries = [self._prefix(prompts[i][:c]) if c else None for i, c in zip(members, cuts)]
            order = sorted(range(len(members)), key=lambda j: len(prompts[members[j]]) - cuts[j])  # a forward pads to its longest
            for a in range(0, len(order), self.rows_per_forward):
                chunk = order[a: a + self.rows_per_forward]
                scored = self._score_rows([prompts[members[j]] for j in chunk], [cuts[j] for j in chunk],
                                          [entries[j] for j in chunk], with_next)
                for j, res in zip(chunk, scored):
                    out[members[j]] = res
        return [o for o in out if o is not None]

    def _score_rows(self, rows: list[list[int]], cuts: list[int], entries: list, with_next: bool
                    ) -> list[tuple[list[float | None], tuple[int, float] | None]]:
        """Score rows whose first `cuts[j]` tokens are a cached prefix (`entries[j]`). Prefixes
        of different lengths are right-aligned at the longest, P, with the gap masked, so
        every row's own tokens start at P and right padding needs no mask."""
        own = [r[c:] for r, c in zip(rows, cuts)]
        R, L, P = len(rows), max(len(o) for o in own), max(cuts)
        ids = torch.full((R, L), self.engine.pad_id, dtype=torch.long)
        for j, o in enumerate(own):
            ids[j, : len(o)] = torch.tensor(o)
        forward: dict[str, Any] = {"input_ids": ids, "use_cache": True,
                                   "position_ids": torch.stack([torch.arange(c, c + L) for c in cuts])}
        buffers = self.engine.kv_buffers(R, P + L)
        shared = all(e is entries[0] for e in entries)
        for li, (k, v) in enumerate(buffers):
            if shared and entries[0] is not None:
                k[:, :, :P], v[:, :, :P] = entries[0][0][li]
                continue
            k[:, :, :P].zero_()  # gaps are masked, but must hold numbers
            v[:, :, :P].zero_()
            for j, (c, e) in enumerate(zip(cuts, entries)):
                if e is not None:
                    k[j, :, P - c: P], v[j, :, P - c: P] = e[0][li][0][0], e[0][li][1][0]
        if not shared:
            mask = torch.zeros((R, P + L), dtype=torch.long)
            for j, c in enumerate(cuts):
                mask[j, P - c:] = 1
            forward["attention_mask"] = mask
        forward = {k: v.to(self.engine.device) if isinstance(v, torch.Tensor) else v for k, v in forward.items()}  # no-op on the CPU
        forward["past_key_values"] = PreallocatedCache.over(buffers, filled=P)
        hidden = self.engine.model.base_model(**forward).last_hidden_state  # [R, L, d]
        # position t of row j predicts own token t + 1; the last real position predicts the next token
        want = [(j, t) for j, o in enumerate(own) for t in range(len(o) - (0 if with_next else 1))]
        lp = self._head_logprobs(hidden[[j for j, _ in want], [t for _, t in want]]) if want else None
        results: list[tuple[list[float | None], tuple[int, float] | None]] = []
        n = 0
        for o, e in zip(own, entries):
            n_pred = len(o) - (0 if with_next else 1)
            rows_lp = lp[n: n + n_pred] if lp is not None else None
            n += n_pred
            token_lp: list[float | None] = [None]
            if e is not None:
                _, pre_lp, pre_last = e
                token_lp = list(pre_lp) + [float(pre_last[o[0]])]
            if len(o) > 1:
                assert rows_lp is not None
                token_lp += rows_lp[: len(o) - 1].gather(1, torch.tensor(o[1:])[:, None])[:, 0].tolist()
            nxt = None
            if with_next:
                assert rows_lp is not None
                last = rows_lp[len(o) - 1]
                tok = int(last.argmax())
                nxt = (tok, float(last[tok]))
            results.append((token_lp, nxt))
        return results
