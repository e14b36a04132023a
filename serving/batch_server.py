"""`python -m serving.batch_server`: an OpenAI-compatible chat server over `BatchEngine`.

The embedded judge's batching engine (`autoscope judge serve --engine batched`). Requests
that arrive while the model is busy wait and then run together as one batch
(`MicroBatcher`), so a client that keeps N requests in flight — `JudgeClient.ask_many`
with concurrency N — gets N answers per batch. Only the standard library serves HTTP;
the endpoints are the three the judge client uses: `GET /v1/models`,
`POST /v1/chat/completions` (messages, max_tokens, temperature, seed, and
`response_format` as `json_schema`, `json_object` with or without a `schema`, or text) and
`POST /v1/completions` for scoring only: `echo: true` with `logprobs` and `max_tokens` 0 or
1 returns every prompt token's log-probability (OpenAI's legacy format, as vLLM answers it;
the channel labeller reads it, `agent.judging.channel`).
"""

from __future__ import annotations

import argparse
import json
import queue
import select
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .batch_engine import BatchEngine, GenRequest, GenResult
from .prompt_scoring import PromptScorer

# Whitespace the JSON grammar allows between tokens: none or one space (what chat models
# write in compact JSON); an unbounded pattern lets a small model pad answers forever.
JSON_OPTIONS = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}


def closed_objects(node: Any) -> Any:
    """Objects with listed properties admit no others unless the schema says so (OpenAI's
    strict mode does the same): JSON schema's open default lets a small model append keys
    nobody asked for, token after token, until max_tokens."""
    if isinstance(node, list):
        return [closed_objects(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: closed_objects(v) for k, v in node.items()}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@dataclass
class ScoreRequest:
    """Prompts (token ids) whose tokens' log-probabilities are asked for; `with_next`: also
    the greedy next token (an OpenAI echo request with max_tokens 1)."""

    prompts: list[list[int]]
    with_next: bool = False


class BadRequest(ValueError):
    """The request cannot be served as asked; the message says why (HTTP 400)."""


class MicroBatcher:
    """One worker thread owns the model. A request waits in a queue; the worker takes the
    first waiting request, then waits up to `window_s` until as many are there as were in
    flight when the previous batch ended (clients that keep N in flight resubmit within
    milliseconds of their answers), and takes whatever else is already queued, up to
    `max_batch`."""

    def __init__(self, engine: BatchEngine, max_batch: int = 32, window_s: float = 0.25, log: Any = None):
        self.engine, self.max_batch, self.window_s, self.log = engine, max_batch, window_s, log
        self.scorer = PromptScorer(engine)
        self._queue: queue.Queue[tuple[GenRequest | ScoreRequest, Future]] = queue.Queue()
        self._expected = max_batch  # the first batch waits one window for company
        self._worker = threading.Thread(target=self._run, daemon=True, name="batcher")
        self._worker.start()

    def submit(self, request: GenRequest | ScoreRequest, gone: Callable[[], bool] | None = None) -> Any:
        """The request's result. `gone()` says whether its client has left; a generation
        whose client left is cancelled (it leaves the batch at the next step) rather than
        decoded to its token limit for nobody."""
        fut: Future = Future()
        self._queue.put((request, fut))
        while True:
            try:
                return fut.result(timeout=0.25)
            except FuturesTimeout:
                if gone is not None and isinstance(request, GenRequest) and not request.cancelled.is_set() and gone():
                    request.cancelled.set()

    def _take(self) -> list[tuple[GenRequest | ScoreRequest, Future]]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.window_s
        while len(batch) < min(self._expected, self.max_batch):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            try:
                results = self._serve([r for r, _ in batch])
            except Exception as e:  # the model failed: every waiting client hears why
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            # Clients in flight: the ones answered now resubmit within milliseconds, and the
            # ones that queued meanwhile are waiting. Expecting only the last batch's size
            # instead locks a full load into alternating batches of 1 and 31.
            self._expected = len(batch) + self._queue.qsize()
            for (_, fut), res in zip(batch, results):
                fut.set_result(res)
            if self.log is not None and any(isinstance(r, GenRequest) for r, _ in batch):
                s = self.engine.last
                self.log(f"batch rows={s.rows} reused_prefix={s.reused_prefix} computed_prefix={s.prefix_computed} "
                         f"prefill_tokens={s.prefill_tokens} decode_steps={s.decode_steps} seconds={s.seconds:.3f}")


    def _serve(self, requests: list[GenRequest | ScoreRequest]) -> list[Any]:
        """Generation requests decode together; scoring requests are scored together (all
        their prompts in one call, so prompts that share a category prefix share its
        forward); results in request order."""
        out: list[Any] = [None] * len(requests)
        gen = [i for i, r in enumerate(requests) if isinstance(r, GenRequest)]
        for i in [i for i in gen if requests[i].cancelled.is_set()]:  # type: ignore[union-attr]
            out[i] = GenResult([], "", "cancelled")  # its client left while it queued
        gen = [i for i in gen if out[i] is None]
        if gen:
            for i, res in zip(gen, self.engine.generate([requests[i] for i in gen])):  # type: ignore[misc]
                out[i] = res
        score = [i for i, r in enumerate(requests) if isinstance(r, ScoreRequest)]
        if score:
            t0 = time.perf_counter()
            flat = [(i, p) for i in score for p in requests[i].prompts]  # type: ignore[union-attr]
            with_next = any(requests[i].with_next for i in score)  # type: ignore[union-attr]
            scored = self.scorer.score([p for _, p in flat], with_next=with_next)
            for i in score:
                out[i] = []
            for (i, _), res in zip(flat, scored):
                out[i].append(res)
            if self.log is not None:
                self.log(f"score requests={len(score)} prompts={len(flat)} tokens={sum(len(p) for _, p in flat)} "
                         f"seconds={time.perf_counter() - t0:.3f}")
        return out


class ChatService:
    """Turns an OpenAI chat request into a `GenRequest` and the result into a response."""

    def __init__(self, engine: BatchEngine, batcher: MicroBatcher, model_name: str, max_tokens_cap: int = 4096):
        self.engine, self.batcher, self.model_name, self.max_tokens_cap = engine, batcher, model_name, max_tokens_cap
        self._grammar = lru_cache(maxsize=128)(self._compile)

    def _compile(self, schema_json: str | None) -> str:
        import llguidance

        schema = closed_objects(json.loads(schema_json)) if schema_json else {"type": "object"}
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)  # type: ignore[arg-type]
        except ValueError as e:
            raise BadRequest(f"response_format schema is not valid JSON schema: {e}") from None
        err = self.engine.grammar_error(grammar)
        if err:
            raise BadRequest(f"response_format schema cannot be compiled to a grammar: {err[:300]}")
        return grammar

    def grammar_for(self, response_format: Any) -> str | None:
        if response_format is None:
            return None
        if not isinstance(response_format, dict) or "type" not in response_format:
            raise BadRequest("response_format must be an object with a 'type'")
        kind = response_format["type"]
        if kind == "text":
            return None
        if kind == "json_object":
            schema = response_format.get("schema")
        elif kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema")
            if schema is None:
                raise BadRequest("response_format json_schema needs json_schema.schema")
        else:
            raise BadRequest(f"unknown response_format type {kind!r}: use text, json_object or json_schema")
        return self._grammar(json.dumps(schema, sort_keys=True) if schema is not None else None)

    def prompt_ids(self, messages: Any) -> list[int]:
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list of {role, content}")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ("system", "user", "assistant"):
                raise BadRequest("each message needs a role (system, user or assistant) and a string content")
        tok = self.engine.tokenizer
        if not getattr(tok, "chat_template", None):
            raise BadRequest("the served model has no chat template: serve an instruct (chat) model")
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False).input_ids

    def complete(self, body: dict, gone: Callable[[], bool] | None = None) -> dict:
        if body.get("n", 1) != 1:
            raise BadRequest("n > 1 is not supported: send n requests")
        if body.get("stream"):
            raise BadRequest("stream is not supported")
        ids = self.prompt_ids(body.get("messages"))
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or min(512, self.engine.max_positions - len(ids))
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest("max_tokens must be a positive integer")
        max_tokens = min(max_tokens, self.max_tokens_cap)
        if len(ids) + max_tokens > self.engine.max_positions:
            raise BadRequest(f"prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceeds the model's "
                             f"{self.engine.max_positions} positions: shorten the prompt or lower max_tokens")
        temperature = float(body.get("temperature") or 0.0)
        seed = body.get("seed")
        req = GenRequest(ids, max_tokens, temperature, self.grammar_for(body.get("response_format")),
                         int(seed) if seed is not None else None)
        res = self.batcher.submit(req, gone)
        if res.error:
            raise BadRequest(res.error)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": res.text}, "finish_reason": res.finish_reason}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(res.token_ids),
                      "total_tokens": len(ids) + len(res.token_ids)},
        }

    def score(self, body: dict) -> dict:
        """`/v1/completions` with `echo: true`: the log-probability of every prompt token (the
        first gets null), the tokens, their character offsets, and with max_tokens 1 the greedy
        next token. Nothing else is served here: generation goes through chat completions."""
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise BadRequest("prompt must be a non-empty string or a non-empty list of non-empty strings")
        max_tokens = body.get("max_tokens", 16)
        if not body.get("echo") or body.get("logprobs") is None or max_tokens not in (0, 1):
            raise BadRequest("this server's /v1/completions scores prompts only: send echo=true, logprobs=0 and max_tokens "
                             "0 or 1; generate through /v1/chat/completions")
        if body.get("stream"):
            raise BadRequest("stream is not supported")
        tok = self.engine.tokenizer
        encs = [tok(p, add_special_tokens=False, return_offsets_mapping=True) for p in prompts]
        for p, e in zip(prompts, encs):
            if len(e.input_ids) + 1 > self.engine.max_positions:
                raise BadRequest(f"a prompt of {len(e.input_ids)} tokens exceeds the model's {self.engine.max_positions} positions")
        results = self.batcher.submit(ScoreRequest([list(e.input_ids) for e in encs], with_next=max_tokens == 1))
        choices = []
        for i, (p, e, (token_lp, nxt)) in enumerate(zip(prompts, encs, results)):
            tokens = [p[a:b] for a, b in e.offset_mapping]
            offsets = [a for a, _ in e.offset_mapping]
            text = p
            if nxt is not None and max_tokens == 1:
                piece = tok.decode([nxt[0]])
                tokens, offsets, token_lp, text = tokens + [piece], offsets + [len(p)], token_lp + [nxt[1]], p + piece
            choices.append({"index": i, "text": text, "finish_reason": "length",
                            "logprobs": {"tokens": tokens, "token_logprobs": token_lp, "text_offset": offsets, "top_logprobs": None}})
        n_prompt = sum(len(e.input_ids) for e in encs)
        return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": self.model_name, "choices": choices,
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(prompts) * max_tokens,
                          "total_tokens": n_prompt + len(prompts) * max_tokens}}

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "autoscope"}]}


def make_handler(service: ChatService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections
        # TCP_NODELAY. On a kept-alive connection the body, sent after the headers, otherwise
        # waits for the client's delayed ACK of the headers: 47 ms a request on localhost
        # against 0.7 ms without (NOTES §32), a fifth of a label asked one at a time.
        disable_nagle_algorithm = True

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str, kind: str) -> None:
            self._send(code, {"error": {"message": message, "type": kind, "code": code}})

        def _client_gone(self) -> bool:
            """The client closed its connection (it timed out or was killed): while it waits
            for an answer it sends nothing, so a readable socket with no data means closed."""
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def do_GET(self) -> None:  # noqa: N802
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, service.models())
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            route = self.path.rstrip("/")
            if route not in ("/v1/chat/completions", "/chat/completions", "/v1/completions", "/completions"):
                self._error(404, f"no route {self.path}", "not_found")
                return
            try:
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError as e:
                    raise BadRequest(f"the request body is not valid JSON ({e}): send a chat completion request object") from None
                if not isinstance(body, dict):
                    raise BadRequest("the body must be a JSON object")
                self._send(200, service.complete(body, self._client_gone) if route.endswith("chat/completions") else service.score(body))
            except BadRequest as e:
                self._error(400, str(e), "invalid_request_error")
            except Exception as e:  # a model failure: the client retries 5xx
                self._error(500, f"{e.__class__.__name__}: {e}", "server_error")

        def log_message(self, format: str, *args: Any) -> None:  # requests are logged per batch instead
            pass

    return Handler


def build_service(model: str, alias: str, threads: int | None, max_batch: int, window_s: float, log: Any = None,
                  device: str = "cpu", dtype: str = "float32") -> ChatService:
    """The engine, its micro-batcher and the HTTP-facing service. `device`/`dtype`: where and in
    what the judge runs (`auto`: the GPU in bfloat16 where there is one); the defaults are the CPU
    judge every measurement of BENCHMARKS §5 used."""
    import torch

    from scope_core.api import load_model_and_tokenizer

    if threads:
        torch.set_num_threads(threads)
    m, tok = load_model_and_tokenizer(model, dtype, device)
    engine = BatchEngine(m, tok)
    return ChatService(engine, MicroBatcher(engine, max_batch, window_s, log), alias)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="OpenAI-compatible judge server that batches concurrent requests (CPU).")
    ap.add_argument("--model", default="embedded", help="'embedded', a .gguf file, a local directory or a hub id")
    ap.add_argument("--alias", default="smollm2-135m-instruct", help="model name the server reports and accepts")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (auto: the GPU when torch sees one)")
    ap.add_argument("--dtype", default="float32", help="auto, float32, bfloat16 or float16 (auto: bfloat16 on a GPU, float32 on the CPU)")
    ap.add_argument("--max-batch", type=int, default=32, help="requests decoded together at most")
    ap.add_argument("--window-ms", type=float, default=250.0,
                    help="how long a batch waits for requests that are on their way (32 client threads on 2 busy cores "
                         "resubmit over ~100-300 ms; 50 ms gave batches of 11-24 instead of 32)")
    args = ap.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    service = build_service(args.model, args.alias, args.threads, args.max_batch, args.window_ms / 1000, log, args.device, args.dtype)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(service))
    server.daemon_threads = True
    log(f"serving {args.model} as {args.alias} on http://{args.host}:{args.port}/v1")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
