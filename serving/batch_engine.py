"""Batched, grammar-constrained generation for the embedded judge on CPU.

Why: labelling is many short, independent questions. llama-cpp-python's server answers
them one at a time, so concurrency only overlaps HTTP (BENCHMARKS §5). On this class of
CPU a decoding step of the 135M judge costs about as much for 16 rows as for 1 (it is
bound by reading the weights), and a prefill of many rows runs several times faster per
token than one row's. So this engine takes every request that is waiting, and:

* reuses the KV cache of the longest prompt prefix it has seen (the label question and
  its instructions are the same for every row; only the text at the end differs), so
  each row costs only its own tokens;
* prefills the rows' own tokens in one forward (left-padded behind the shared prefix);
* decodes all rows together, each under its own JSON-schema grammar (llguidance masks),
  and lets a row leave the batch the moment its grammar is complete — no wasted steps
  for an end-of-sequence token the grammar already forces.

The answers are the model's own greedy (or sampled) choices within the grammar; batching
changes only the order of floating-point sums, so a label can differ from the
one-at-a-time label only where two choices are within rounding of each other
(BENCHMARKS §5 counts how often).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from scope_core.api import PreallocatedCache, drop_rows, module_device, prepacked_linears


@dataclass
class GenRequest:
    """One completion: prompt token ids, a token budget, and an optional grammar."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    grammar: str | None = None  # an llguidance grammar (e.g. from a JSON schema); None: free text
    seed: int | None = None
    # Set when the client has gone (closed its connection, timed out): the row leaves the
    # batch at the next step instead of decoding an answer nobody will read.
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class GenResult:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (grammar complete or end of turn), "length", or "cancelled" (the client left)
    error: str | None = None


@dataclass
class BatchStats:
    """What one `generate` call did; the server logs it, the benchmark reads it."""

    rows: int = 0
    reused_prefix: int = 0
    prefix_computed: int = 0
    prefill_tokens: int = 0
    decode_steps: int = 0
    seconds: float = 0.0


def common_prefix_length(rows: list[list[int]]) -> int:
    """Length of the longest prefix every row shares."""
    if not rows:
        return 0
    n = min(len(r) for r in rows)
    first = rows[0]
    for i in range(n):
        t = first[i]
        if any(r[i] != t for r in rows[1:]):
            return i
    return n


class PrefixStore:
    """KV caches (one row) of recently seen prompt prefixes; a new batch reuses the one that
    shares the most tokens with it. Keys and values are sliced, never copied: a causal
    model's KV for a prefix does not depend on what follows it."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self._entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()

    def longest(self, ids: list[int]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        best, best_kv, best_key = 0, None, None
        for key, kv in self._entries.items():
            n = common_prefix_length([list(key), ids])
            if n > best:
                best, best_kv, best_key = n, kv, key
        if best_key is not None:
            self._entries.move_to_end(best_key)
        if best_kv is None:
            return 0, None
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in best_kv]

    def put(self, ids: list[int], kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if not ids:
            return
        self._entries[tuple(ids)] = kv
        self._entries.move_to_end(tuple(ids))
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def allowed_tokens(bitmask_row: torch.Tensor, vocab: int) -> np.ndarray:
    """llguidance's packed mask (int32 words, bit i = token i allowed) as a bool array."""
    bits = np.unpackbits(bitmask_row.numpy().view(np.uint8), bitorder="little")
    return bits[:vocab].astype(bool)


class BatchEngine:
    """A causal LM and its tokenizer, generating many requests at once (see module doc)."""

    def __init__(self, model: Any, tokenizer: Any, prefix_capacity: int = 4, prefill_rows: int = 8):
        import llguidance
        import llguidance.hf
        import llguidance.torch  # noqa: F401  (bitmask helpers)

        self.model, self.tokenizer = model, tokenizer
        self.device = module_device(model)  # inputs go there; logits come back to the CPU, where grammars mask them
        self.vocab = int(model.get_output_embeddings().weight.shape[0])
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(e) for e in eos_ids + [tokenizer.eos_token_id] if e is not None}
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids)))
        self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=self.vocab, eos_token=tokenizer.eos_token_id)
        self._llg = llguidance
        self.prefixes = PrefixStore(prefix_capacity)
        self.prefill_rows = prefill_rows
        self.n_layers = int(model.config.num_hidden_layers)
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self.last = BatchStats()

    # -- grammars -----------------------------------------------------------------
    def grammar_error(self, grammar: str) -> str | None:
        """Why a grammar cannot be used (None if it can): checked before a request is queued."""
        err = self._llg.LLMatcher.validate_grammar(grammar, self.ll_tokenizer)
        return err or None

    def _matcher(self, grammar: str) -> Any:
        return self._llg.LLMatcher(self.ll_tokenizer, grammar, log_level=0)

    # -- the forward passes ---------------------------------------------------------
    def _shared_prefix(self, rows: list[list[int]], stats: BatchStats) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """How many leading tokens the rows' prefill can skip, and their KV (one row).

        A batch skips what all its rows share (computed once, then kept); a single request
        skips what it shares with a prompt seen before, as llama.cpp's server does. Each row
        keeps at least one token of its own: its last position gives the first logits."""
        if len(rows) == 1:
            n, kv = self.prefixes.longest(rows[0][:-1])
            stats.reused_prefix = n
            return n, kv
        p = min(common_prefix_length(rows), min(len(r) for r in rows) - 1)
        return p, self._prefix_kv(rows[0][:p], stats)

    @torch.no_grad()
    def _prefill(self, own: list[list[int]], p: int, prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None,
                 budget: int) -> tuple[PreallocatedCache, torch.Tensor, torch.Tensor, list[int]]:
        """Run each row's own tokens behind the shared prefix. Returns the decoding cache, whose
        row r holds request `order[r]` with its tokens right-aligned at p + L (L the longest
        row), the last logits [B, V] and the attention mask [B, p + L + budget] (ones on the
        prefix and on each row's tokens), both in that row order, and `order`.

        Rows are prefilled in groups of similar length (one left-padded forward over rows of
        10 and 40 tokens spends most of its time on padding), longest first, so each group is
        a contiguous block of the decoding cache's rows and writes its keys and values there
        directly: the prefix is copied into each row once, and nothing is merged afterwards
        (assembling the cache from per-group caches was 18% of a 32-row batch, profiled)."""
        B, L = len(own), max(len(o) for o in own)
        order = sorted(range(B), key=lambda i: -len(own[i]))
        lengths = [len(own[i]) for i in order]
        buffers = self.kv_buffers(B, p + L + budget)
        for li, (k, v) in enumerate(buffers):
            if prefix_kv:
                k[:, :, :p], v[:, :, :p] = prefix_kv[li][0], prefix_kv[li][1]
            k[:, :, p: p + L].zero_()  # gaps and padding are masked, but must hold numbers
            v[:, :, p: p + L].zero_()
        mask = torch.zeros((B, p + L + budget), dtype=torch.long, device=self.device)
        mask[:, :p] = 1
        for r, n in enumerate(lengths):
            mask[r, p + L - n: p + L] = 1
        logits = torch.empty((B, self.vocab))
        for a in range(0, B, self.prefill_rows):
            b = min(B, a + self.prefill_rows)
            Lg = lengths[a]
            ids = torch.full((b - a, Lg), self.pad_id, dtype=torch.long)
            position = torch.full((b - a, Lg), p, dtype=torch.long)
            for j in range(b - a):
                n = lengths[a + j]
                ids[j, Lg - n:] = torch.tensor(own[order[a + j]])
                position[j, Lg - n:] = torch.arange(p, p + n)
            # the group's tokens land at p + L - Lg .. p + L; what lies between is masked
            view = PreallocatedCache.over([(k[a:b], v[a:b]) for k, v in buffers], filled=p + L - Lg)
            gapped = Lg < L or lengths[b - 1] < Lg
            logits[a:b] = self._last_logits(input_ids=ids.to(self.device), attention_mask=mask[a:b, : p + L] if gapped else None,
                                            position_ids=position.to(self.device), past_key_values=view)
        return PreallocatedCache.over(buffers, filled=p + L), logits, mask, order

    def kv_buffers(self, rows: int, capacity: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Empty per-layer key and value buffers [rows, kv heads, capacity, head dim]."""
        cfg = self.model.config
        heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        dtype = next(self.model.parameters()).dtype
        dev = self.device
        return [(torch.empty((rows, heads, capacity, dim), dtype=dtype, device=dev), torch.empty((rows, heads, capacity, dim), dtype=dtype, device=dev))
                for _ in range(self.n_layers)]

    def _last_logits(self, **forward: Any) -> torch.Tensor:
        """Float logits at every row's last position, [B, V].

        The head runs on a contiguous [B, d] slice. With `logits_to_keep=1` transformers hands
        it a strided [B, 1, d] view, which torch multiplies as a batched matmul over B copies of
        the [V, d] head: 9% of a float32 batch's time and 60% of a bfloat16 one's (profiled)."""
        hidden = self.model.base_model(use_cache=True, **forward).last_hidden_state[:, -1, :].contiguous()
        logits = self.model.get_output_embeddings()(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits.float().cpu()

    @torch.no_grad()
    def _prefix_kv(self, ids: list[int], stats: BatchStats) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """KV (one row) of `ids`, from the store where it can, computing only the rest."""
        if not ids:
            return None
        n, kv = self.prefixes.longest(ids)
        stats.reused_prefix = n
        if n < len(ids):
            cache = PreallocatedCache(self.n_layers, len(ids), kv)
            self.model.base_model(input_ids=torch.tensor([ids[n:]], device=self.device), position_ids=torch.arange(n, len(ids), device=self.device)[None],
                                  past_key_values=cache, use_cache=True)
            kv = [(layer.keys, layer.values) for layer in cache.layers]
            stats.prefix_computed = len(ids) - n
            self.prefixes.put(ids, kv)
        return kv

    @torch.no_grad()
    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Generate every request; results in request order.

        The linears run on oneDNN-prepacked weights (`scope_core.fast_linear`): 1.1–1.3×
        faster for a batch and 1.2–1.6× for one request (NOTES §31), answers unchanged.

        Tokens a row's grammar forces (`{"label": "` before any choice, `"}` after the last
        letter of an enum value) are never chosen by the model: the ones at the start join
        the prompt's prefill, later ones are fed without reading their logits, and a row
        whose grammar is complete leaves without feeding them at all."""
        if not requests:
            return []
        if any(not r.prompt_ids for r in requests):
            raise ValueError("empty prompt")
        with prepacked_linears(self.model):
            return self._generate(requests)

    def _generate(self, requests: list[GenRequest]) -> list[GenResult]:
        t0 = time.perf_counter()
        stats = BatchStats(rows=len(requests))
        B = len(requests)
        matchers = [self._matcher(r.grammar) if r.grammar else None for r in requests]
        generated: list[list[int]] = [[] for _ in requests]
        results: list[GenResult | None] = [None] * B
        for i, m in enumerate(matchers):
            if m is not None:
                generated[i] = self._forced(m)
        rows = [list(r.prompt_ids) + g for r, g in zip(requests, generated)]

        p, prefix_kv = self._shared_prefix(rows, stats)
        own = [r[p:] for r in rows]
        L = max(len(o) for o in own)
        budget = max(r.max_tokens for r in requests)
        cache, logits, mask, live = self._prefill(own, p, prefix_kv, budget)
        stats.prefill_tokens = sum(len(o) for o in own)
        if B == 1:  # remember this prompt: the next one-at-a-time request shares its template
            self.prefixes.put(rows[0], [(layer.keys, layer.values) for layer in cache.layers])
        padded = any(len(o) != L for o in own)
        next_pos = torch.tensor([p + len(own[i]) for i in live], device=self.device)
        length = p + L

        generators = [torch.Generator().manual_seed(r.seed if r.seed is not None else int(time.time_ns() % (1 << 31)))
                      if r.temperature > 0 else None for r in requests]
        pending: list[list[int]] = [[] for _ in requests]  # forced tokens still to feed
        bitmask = self._llg.torch.allocate_token_bitmask(B, self.vocab) if any(matchers) else None

        def finish(i: int, reason: str, error: str | None = None) -> None:
            ids = [t for t in generated[i] if t not in self.eos_ids]
            results[i] = GenResult(generated[i], self.tokenizer.decode(ids, skip_special_tokens=True), reason, error)

        while live:
            feed = torch.empty(len(live), dtype=torch.long)
            done = torch.zeros(len(live), dtype=torch.bool)
            for row, i in enumerate(live):
                if requests[i].cancelled.is_set():
                    finish(i, "cancelled")
                    done[row] = True
                    continue
                if pending[i]:
                    feed[row] = pending[i].pop(0)
                    continue
                m = matchers[i]
                row_logits = logits[row]
                if m is not None:
                    assert bitmask is not None
                    self._llg.torch.fill_next_token_bitmask(m, bitmask, row)
                    row_logits = row_logits.masked_fill(~torch.from_numpy(allowed_tokens(bitmask[row], self.vocab)), float("-inf"))
                if generators[i] is not None:
                    probs = torch.softmax(row_logits / requests[i].temperature, dim=-1)
                    tok = int(torch.multinomial(probs, 1, generator=generators[i])[0])
                else:
                    tok = int(row_logits.argmax())
                feed[row] = tok
                generated[i].append(tok)
                if m is None:
                    if tok in self.eos_ids:
                        finish(i, "stop")
                else:
                    m.consume_token(tok)
                    forced = [] if m.is_error() or m.is_stopped() or tok in self.eos_ids else self._forced(m)
                    generated[i].extend(forced)
                    pending[i] = forced
                    if m.is_error():
                        finish(i, "stop", f"grammar error: {m.get_error()}")
                    elif m.is_stopped() or tok in self.eos_ids or self._only_eos(m, bitmask, row):
                        finish(i, "stop")
                if results[i] is None and len(generated[i]) >= requests[i].max_tokens:
                    finish(i, "length")
                done[row] = results[i] is not None
            if bool(done.all()):
                break
            if bool(done.any()):
                order = drop_rows(cache, done)
                live = [live[j] for j in order.tolist()]
                feed, next_pos, mask = feed[order], next_pos[order.to(self.device)], mask[order.to(self.device)]
            mask[:, length] = 1
            length += 1
            out = self.model(input_ids=feed[:, None].to(self.device), attention_mask=mask[:, :length] if padded else None,
                             position_ids=next_pos[:, None], past_key_values=cache, use_cache=True)
            next_pos = next_pos + 1
            logits = out.logits[:, -1, :].float().cpu()
            stats.decode_steps += 1
        stats.seconds = time.perf_counter() - t0
        self.last = stats
        return [r for r in results if r is not None]

    def _forced(self, matcher: Any) -> list[int]:
        """The tokens the grammar allows no alternative to from here, consumed."""
        ff = list(matcher.compute_ff_tokens())
        if ff:
            matcher.consume_tokens(ff)
        return ff

    def _only_eos(self, matcher: Any, bitmask: torch.Tensor | None, row: int) -> bool:
        """True when the grammar is complete and allows nothing but end-of-sequence: the row
        can leave now instead of spending a forward on that token."""
        if bitmask is None or not matcher.is_accepting():
            return False
        self._llg.torch.fill_next_token_bitmask(matcher, bitmask, row)
        allowed = allowed_tokens(bitmask[row], self.vocab)
        return int(allowed.sum()) == 1 and bool(allowed[[e for e in self.eos_ids if e < self.vocab]].any())
