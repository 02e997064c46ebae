"""The OpenAI API's requests and responses, without the web framework: checks that turn a JSON body into
engine sequences (every problem a `BadRequest`, answered 400 in OpenAI's error shape), and the bodies
of completions, chat completions and their stream chunks.

Supported: see README ("Serving"). Refused with a 400 naming the field: presence / frequency penalties,
logit_bias, best_of other than n, suffix, tools / functions, response formats other than text.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from .engine import TOP_LOGPROBS, SamplingParams

MAX_N = 16
MAX_STOPS = 4
MAX_CHAT_TOP_LOGPROBS = 20


class BadRequest(Exception):
    """A request we answer with 400 (or `status`): OpenAI's {"error": {message, type, param, code}}."""

    def __init__(self, message: str, param: Optional[str] = None, code: Optional[str] = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status

    def body(self) -> Dict[str, Any]:
        return error_body(self.message, "invalid_request_error", self.param, self.code)


def error_body(message: str, kind: str, param: Optional[str] = None, code: Optional[str] = None):
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass
class ServedModel:
    """What the checks need to know about the model being served."""

    names: List[str]
    tokenizer: Any
    vocab_size: int
    max_model_len: int
    stop_token_ids: List[int]


@dataclass
class Plan:
    """A checked request: one prompt (ids) per choice, the settings, and how to answer."""

    prompts: List[List[int]]  # one entry per prompt of the request
    n: int
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    model: str = ""
    chat: bool = False
    prompt_texts: Optional[List[str]] = None  # the prompts as given, when strings (echo returns them)


# -- field checks --------------------------------------------------------------------------------

def _number(body, name, default, low=None, high=None, integer=False):
    value = body.get(name, default)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise BadRequest(f"{name} must be {kind}, got {value!r}", name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequest(f"{name} must be between {low} and {high}, got {value!r}", name)
    return value


def flag(body, name, default=False) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, got {value!r}", name)
    return value


def _refuse_unsupported(body) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name):
            raise BadRequest(f"{name} is not supported by mfcore serve; use repetition_penalty", name)
    if body.get("logit_bias"):
        raise BadRequest("logit_bias is not supported by mfcore serve", "logit_bias")
    if body.get("suffix"):
        raise BadRequest("suffix (insertion) is not supported by mfcore serve", "suffix")
    for name in ("tools", "functions", "tool_choice", "function_call"):
        if body.get(name):
            raise BadRequest(f"{name} (tool calling) is not supported by mfcore serve", name)
    response_format = body.get("response_format")
    if response_format and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
        raise BadRequest("response_format other than {'type': 'text'} is not supported by mfcore serve",
                         "response_format")


def _model_name(body, served: ServedModel) -> str:
    name = body.get("model")
    if name is None:
        return served.names[0]
    if not isinstance(name, str) or name not in served.names:
        raise BadRequest(f"model {name!r} is not served here; this server serves {served.names[0]!r} "
                         f"(GET /v1/models)", "model", "model_not_found")
    return name


def _stops(body) -> List[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise BadRequest("stop must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOPS:
        raise BadRequest(f"stop takes at most {MAX_STOPS} strings, got {len(stops)}", "stop")
    return [s for s in stops if s]


def _sampling(body, served: ServedModel, max_tokens: int) -> SamplingParams:
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_k = _number(body, "top_k", 0, -1, None, integer=True)
    seed = _number(body, "seed", None, integer=True)
    if seed is not None and not 0 <= seed < 2 ** 63:
        raise BadRequest(f"seed must be a non-negative 64-bit integer, got {seed}", "seed")
    ignore_eos = flag(body, "ignore_eos")
    return SamplingParams(
        max_tokens=max_tokens, temperature=float(temperature),
        top_p=float(_number(body, "top_p", 1.0, 0.0, 1.0)) or 1e-9,
        top_k=max(0, top_k), repetition_penalty=float(_number(body, "repetition_penalty", 1.0, 0.01, 10.0)),
        seed=seed, stop=_stops(body), stop_token_ids=[] if ignore_eos else list(served.stop_token_ids))


def check_ids(ids: Sequence[int], served: ServedModel, param: str) -> List[int]:
    if not ids:
        raise BadRequest("the prompt is empty", param)
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < served.vocab_size:
            raise BadRequest(f"token id {token!r} is out of range: the vocabulary has {served.vocab_size} ids "
                             f"(0..{served.vocab_size - 1})", param)
    return list(ids)


def _prompts(body, served: ServedModel):
    """A string, a list of strings, a list of token ids or a list of lists of token ids -> (ids per prompt,
    the strings given or None)."""
    prompt = body.get("prompt")
    tokenizer = served.tokenizer
    if isinstance(prompt, str):
        prompt = [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return [check_ids(tokenizer.encode(p), served, "prompt") for p in prompt], prompt
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return [check_ids(prompt, served, "prompt")], None
        if all(isinstance(p, list) for p in prompt):
            return [check_ids(p, served, "prompt") for p in prompt], None
    raise BadRequest("prompt must be a string, a list of strings, a list of token ids or a list of lists of "
                     "token ids", "prompt")


def _check_length(prompts: List[List[int]], max_tokens: int, served: ServedModel) -> None:
    for ids in prompts:
        if len(ids) + max_tokens > served.max_model_len:
            raise BadRequest(f"this model's context is {served.max_model_len} tokens; the prompt has {len(ids)} "
                             f"and max_tokens asks {max_tokens} more ({len(ids) + max_tokens}). Shorten the prompt "
                             f"or lower max_tokens", "max_tokens" if max_tokens else "prompt",
                             "context_length_exceeded")


def _streaming(body):
    stream = flag(body, "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object", "stream_options")
    return stream, bool(options.get("include_usage")) and stream


def parse_completion(body: Any, served: ServedModel) -> Plan:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    _refuse_unsupported(body)
    model = _model_name(body, served)
    prompts, texts = _prompts(body, served)
    max_tokens = _number(body, "max_tokens", 16, 0, None, integer=True)
    n = _number(body, "n", 1, 1, MAX_N, integer=True)
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise BadRequest("best_of other than n is not supported by mfcore serve", "best_of")
    echo = flag(body, "echo")
    logprobs = _number(body, "logprobs", None, 0, TOP_LOGPROBS, integer=True)
    stream, include_usage = _streaming(body)
    if max_tokens == 0 and not echo:
        raise BadRequest("max_tokens 0 returns nothing; with echo: true it scores the prompt", "max_tokens")
    if stream and echo:
        raise BadRequest("echo is not supported with stream: true", "echo")
    _check_length(prompts, max_tokens, served)
    params = _sampling(body, served, max_tokens)
    params.logprobs = logprobs
    params.prompt_logprobs = echo and logprobs is not None
    return Plan(prompts, n, params, stream, include_usage, echo, model, prompt_texts=texts)


def _message_text(message, index: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(f"messages[{index}].content: only text parts are supported", "messages")
            parts.append(part["text"])
        return "".join(parts)
    raise BadRequest(f"messages[{index}].content must be a string or a list of text parts", "messages")


def chat_prompt(messages: Any, served: ServedModel) -> List[int]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {role, content}", "messages")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "developer"):
            raise BadRequest(f"messages[{index}] must be an object with role system, user or assistant",
                             "messages")
        role = "system" if message["role"] == "developer" else message["role"]
        turns.append({"role": role, "content": _message_text(message, index)})
    try:
        return list(served.tokenizer.apply_chat_template(turns, add_generation_prompt=True))
    except ValueError as exc:  # no template, or one that refuses this conversation
        raise BadRequest(f"the chat template cannot lay this conversation out: {exc}", "messages") from exc


def parse_chat(body: Any, served: ServedModel) -> Plan:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    _refuse_unsupported(body)
    model = _model_name(body, served)
    prompt = check_ids(chat_prompt(body.get("messages"), served), served, "messages")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _number({name: limit}, name, None, 1, None, integer=True)
    if max_tokens is None:
        max_tokens = max(1, served.max_model_len - len(prompt))
    n = _number(body, "n", 1, 1, MAX_N, integer=True)
    logprobs = flag(body, "logprobs")
    top = _number(body, "top_logprobs", None, 0, MAX_CHAT_TOP_LOGPROBS, integer=True)
    if top is not None and not logprobs:
        raise BadRequest("top_logprobs needs logprobs: true", "top_logprobs")
    stream, include_usage = _streaming(body)
    _check_length([prompt], max_tokens, served)
    params = _sampling(body, served, max_tokens)
    params.logprobs = (top or 0) if logprobs else None
    return Plan([prompt], n, params, stream, include_usage, False, model, chat=True)


# -- responses -----------------------------------------------------------------------------------

def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> Dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def token_text(tokenizer, token: int) -> str:
    return tokenizer.decode([token])


def completion_logprobs(tokenizer, entries) -> Dict[str, Any]:
    """OpenAI's completions logprobs from [(token id, logprob or None, [(id, logprob)] or None)]."""
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    offset = 0
    for token, logprob, top in entries:
        text = token_text(tokenizer, token)
        tokens.append(text)
        token_logprobs.append(logprob)
        top_logprobs.append(None if top is None else {token_text(tokenizer, i): lp for i, lp in top})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs,
            "text_offset": offsets}


def chat_logprobs(tokenizer, entries) -> Dict[str, Any]:
    content = []
    for token, logprob, top in entries:
        text = token_text(tokenizer, token)
        content.append({"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8")),
                        "top_logprobs": [{"token": token_text(tokenizer, i), "logprob": lp,
                                          "bytes": list(token_text(tokenizer, i).encode("utf-8"))}
                                         for i, lp in (top or [])]})
    return {"content": content}


def envelope(kind: str, ident: str, model: str, choices: List[dict], created: Optional[int] = None, **extra):
    body = {"id": ident, "object": kind, "created": created or int(time.time()), "model": model,
            "choices": choices}
    body.update(extra)
    return body
