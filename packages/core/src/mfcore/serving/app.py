"""The HTTP side of `mfcore serve`: FastAPI routes over one Engine.

Each route checks its body (mfcore.serving.api), submits one engine sequence per choice and waits for
their events on the event loop (the engine thread hands them over with call_soon_threadsafe). A client
that goes away cancels its sequences; the engine frees their slots before its next step.
"""
from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, List, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import api
from .api import BadRequest, Plan, ServedModel
from .engine import Sequence_
from .metrics import Metrics

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class ServerState:
    """Filled in once the model has loaded (the server answers /health with 503 until then)."""

    engine: Optional[Any] = None
    served: Optional[ServedModel] = None
    error: Optional[str] = None
    metrics: Metrics = field(default_factory=Metrics)
    created: int = field(default_factory=lambda: int(time.time()))


class ClientGone(Exception):
    pass


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="mfcore serve", docs_url=None, redoc_url=None)

    routes = {"/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/tokenize",
              "/detokenize"}

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        path = request.url.path
        state.metrics.count(path if path in routes else "other", response.status_code)  # bounded label values
        return response

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(api.error_body(f"invalid request: {exc.errors()}", "invalid_request_error"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(api.error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        return JSONResponse(api.error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"), 500)

    def ready() -> ServedModel:
        if state.engine is None:
            raise BadRequest("the model is still loading" if state.error is None else
                             f"the model failed to load: {state.error}", status=503, code="model_not_ready")
        return state.served

    async def body_of(request: Request) -> Any:
        try:
            return json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from exc

    # -- status ----------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        if state.error is not None:
            return JSONResponse({"status": "error", "message": state.error}, status_code=503)
        if state.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        served = ready()
        return {"object": "list", "data": [{"id": name, "object": "model", "created": state.created,
                                            "owned_by": "mfcore", "max_model_len": served.max_model_len}
                                           for name in served.names]}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(state.metrics.render(state.engine),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- tokenizer -------------------------------------------------------------------------------
    @app.post("/tokenize")
    async def tokenize(request: Request):
        served, body = ready(), await body_of(request)
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if "messages" in body:
            ids = api.chat_prompt(body["messages"], served)
        elif isinstance(body.get("prompt"), str):
            ids = served.tokenizer.encode(body["prompt"], add_special_tokens=api.flag(body, "add_special_tokens",
                                                                                       True))
        else:
            raise BadRequest("give prompt (a string) or messages", "prompt")
        return {"tokens": [int(i) for i in ids], "count": len(ids), "max_model_len": served.max_model_len}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        served, body = ready(), await body_of(request)
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list):
            raise BadRequest("tokens must be a list of token ids", "tokens")
        if tokens:
            api.check_ids(tokens, served, "tokens")
        return {"prompt": served.tokenizer.decode(tokens)}

    # -- generation ------------------------------------------------------------------------------
    async def events(plan: Plan, request: Request, sequences: List[Sequence_]) -> AsyncIterator[tuple]:
        """(choice index, kind, payload) as the engine produces them; cancels what is left on exit."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        for prompt_index, prompt in enumerate(plan.prompts):
            for j in range(plan.n):
                index = prompt_index * plan.n + j
                params = copy.deepcopy(plan.params)
                if params.seed is not None:
                    params.seed += j  # choice j of a seeded request: its own, reproducible stream
                sequences.append(Sequence_(prompt, params, lambda kind, payload, index=index:
                                           loop.call_soon_threadsafe(queue.put_nowait, (index, kind, payload))))
        for sequence in sequences:
            state.engine.submit(sequence)
        remaining = len(sequences)
        try:
            while remaining:
                try:
                    item = await asyncio.wait_for(queue.get(), 0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        raise ClientGone()
                    continue
                if item[1] in ("done", "error"):
                    remaining -= 1
                yield item
        finally:
            for sequence in sequences:
                sequence.cancel()  # a no-op for those that finished

    def usage_of(plan: Plan, sequences: List[Sequence_]):
        return api.usage(sum(len(p) for p in plan.prompts), sum(s.tokens_out for s in sequences))

    async def collect(plan: Plan, request: Request):
        """Run a request to the end: per choice its text, token entries, prompt entries, finish reason."""
        sequences: List[Sequence_] = []
        count = len(plan.prompts) * plan.n
        texts, tokens, prompt_scores, reasons = [""] * count, [[] for _ in range(count)], [None] * count, [None] * count
        try:
            async for index, kind, payload in events(plan, request, sequences):
                if kind == "token":
                    texts[index] += payload.text
                    if payload.token_id >= 0:
                        tokens[index].append((payload.token_id, payload.logprob, payload.top))
                elif kind == "prompt":
                    prompt_scores[index] = payload
                elif kind == "done":
                    reasons[index] = payload
                elif kind == "error":
                    raise BadRequest(payload, status=500, code="generation_failed")
        except ClientGone:
            return None
        return sequences, texts, tokens, prompt_scores, reasons

    async def answer(request: Request, parse, stream):
        """(served, plan, result of collect) of a request; or a response to return as it is (a stream, or 499
        when the client went away)."""
        served = ready()
        plan = parse(await body_of(request), served)
        if plan.stream:
            return served, plan, StreamingResponse(stream(plan, request, served), media_type="text/event-stream",
                                                   headers=STREAM_HEADERS)
        result = await collect(plan, request)
        return served, plan, JSONResponse({}, status_code=499) if result is None else result

    @app.post("/v1/completions")
    async def completions(request: Request):
        served, plan, result = await answer(request, api.parse_completion, stream_completion)
        if not isinstance(result, tuple):
            return result
        sequences, texts, tokens, prompt_scores, reasons = result
        tokenizer, k = served.tokenizer, plan.params.logprobs
        choices = []
        for index, text in enumerate(texts):
            prompt = plan.prompts[index // plan.n]
            entries = tokens[index]
            prefix = ""
            if plan.echo:
                prefix = plan.prompt_texts[index // plan.n] if plan.prompt_texts else tokenizer.decode(prompt)
                if k is not None:
                    scores = prompt_scores[index] or []
                    entries = [(prompt[0], None, None)] + [
                        (token, lp, top[:k] if k else None) for token, (lp, top) in zip(prompt[1:], scores)] + entries
            choices.append({"index": index, "text": prefix + text, "finish_reason": reasons[index],
                            "logprobs": None if k is None else api.completion_logprobs(tokenizer, entries)})
        return api.envelope("text_completion", api.new_id("cmpl"), plan.model, choices,
                            usage=usage_of(plan, sequences))

    async def stream_completion(plan: Plan, request: Request, served: ServedModel):
        ident, created, sequences = api.new_id("cmpl"), int(time.time()), []
        extra = {"usage": None} if plan.include_usage else {}

        def chunk(choices, **more):
            return _sse(api.envelope("text_completion", ident, plan.model, choices, created, **{**extra, **more}))

        try:
            async for index, kind, payload in events(plan, request, sequences):
                if kind == "token" and (payload.text or plan.params.logprobs is not None):
                    entries = [(payload.token_id, payload.logprob, payload.top)] if payload.token_id >= 0 else []
                    logprobs = None if plan.params.logprobs is None else \
                        api.completion_logprobs(served.tokenizer, entries)
                    yield chunk([{"index": index, "text": payload.text, "logprobs": logprobs, "finish_reason": None}])
                elif kind == "done":
                    yield chunk([{"index": index, "text": "", "logprobs": None, "finish_reason": payload}])
                elif kind == "error":
                    yield _sse(api.error_body(payload, "server_error", code="generation_failed"))
            if plan.include_usage:
                yield chunk([], usage=usage_of(plan, sequences))
            yield "data: [DONE]\n\n"
        except ClientGone:
            return

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        served, plan, result = await answer(request, api.parse_chat, stream_chat)
        if not isinstance(result, tuple):
            return result
        sequences, texts, tokens, _, reasons = result
        choices = [{"index": index, "message": {"role": "assistant", "content": text},
                    "logprobs": None if plan.params.logprobs is None else
                    api.chat_logprobs(served.tokenizer, tokens[index]),
                    "finish_reason": reasons[index]} for index, text in enumerate(texts)]
        return api.envelope("chat.completion", api.new_id("chatcmpl"), plan.model, choices,
                            usage=usage_of(plan, sequences))

    async def stream_chat(plan: Plan, request: Request, served: ServedModel):
        ident, created, sequences = api.new_id("chatcmpl"), int(time.time()), []
        extra = {"usage": None} if plan.include_usage else {}

        def chunk(choices, **more):
            return _sse(api.envelope("chat.completion.chunk", ident, plan.model, choices, created,
                                     **{**extra, **more}))

        try:
            for index in range(plan.n):
                yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None}])
            async for index, kind, payload in events(plan, request, sequences):
                if kind == "token" and (payload.text or plan.params.logprobs is not None):
                    entries = [(payload.token_id, payload.logprob, payload.top)] if payload.token_id >= 0 else []
                    logprobs = None if plan.params.logprobs is None else api.chat_logprobs(served.tokenizer, entries)
                    yield chunk([{"index": index, "delta": {"content": payload.text}, "logprobs": logprobs,
                                  "finish_reason": None}])
                elif kind == "done":
                    yield chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": payload}])
                elif kind == "error":
                    yield _sse(api.error_body(payload, "server_error", code="generation_failed"))
            if plan.include_usage:
                yield chunk([], usage=usage_of(plan, sequences))
            yield "data: [DONE]\n\n"
        except ClientGone:
            return

    return app


def _sse(body) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def attach(state: ServerState, model, tokenizer, names: List[str], **engine_options):
    """Start the engine for a loaded model (Engine's options) and make the server ready (called from the
    loading thread)."""
    from .engine import Engine

    engine = Engine(model, tokenizer, **engine_options)
    stops = getattr(tokenizer, "stop_token_ids", None) or [tokenizer.eos_token_id]
    state.served = ServedModel(names=list(names), tokenizer=tokenizer, vocab_size=engine.vocab_size,
                               max_model_len=engine.max_model_len, stop_token_ids=[int(i) for i in stops if i is not None])
    state.engine = engine
    return engine
