"""Text generation for every causal LM of mfcore: greedy, sampling, repetition penalty, EOS, streaming.

The model side is a small protocol (see PreTrainedModel): `kv_cache_shapes`, `forward_with_cache` and
`prepare_inputs_for_generation`. The loop here is model-agnostic and keeps the token logic in numpy
(pure functions below, each matching the transformers logits processor of the same name).

Speed on MindSpore: the model runs under `mindspore.jit` by default. The KV cache has a static shape
(batch, kv heads, cache length, head dim), written at the current slot, with an additive mask; prompt and
cache lengths are rounded up to buckets. One generate call runs two compiled graphs: the prompt graph
(the model's `forward_with_cache`, logits read back once) and the decode graph (`_decode_function`):
TOKENS_PER_CALL greedy steps of forward -> argmax -> next step's inputs, so the host reads only the chosen
ids (tokens_per_call of them per row) and the decode state (ids, positions, bias, slot, caches) stays in
device tensors between calls. Both graphs are kept on the model and reused by later calls of the same
bucket, which compile nothing. Cache tensors travel as separate arguments (a tuple argument would
recompile every step).

Sampling with temperature and top-k runs in the decode graph too: the host draws the uniform numbers
from numpy's `default_rng(seed)` (the same draws, in the same order, as the host path) and passes them
in, the graph takes the inverse CDF of the softmax at them. So `seed=` reproduces a sampled generation,
and the graph's choice is the host reference's computed in float32 (a test compares the two). Top-p and
repetition penalties choose on the host, one compiled step a token, from the logits: top-p sorts the
vocabulary (a sort and scatter in the graph on every token, not verified on CPU, where kernels such as
Roll and StackExt are missing), a penalty needs every token so far; their host functions are tested
against transformers' own.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union

import numpy as np

from .config import GenerationConfig
from .sampling import next_tokens
from .validation import check_generation_inputs


# -- prompts, buckets -------------------------------------------------------------------------------

DEFAULT_PREFILL_CHUNK = 128  # prompt tokens per call; see prefill_chunk

def bucket_length(n: int, minimum: int = 16) -> int:
    """Round a length up so that few distinct shapes compile: powers of two up to 512, then steps of 512."""
    if n <= minimum:
        return minimum
    if n <= 512:
        return 1 << (n - 1).bit_length()
    return -(-n // 512) * 512


def left_pad(rows: Sequence[Sequence[int]], pad_token_id: int):
    """Ragged prompts -> (ids, attention_mask) left-padded to the longest."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row):
            ids[i, width - len(row):] = row
            mask[i, width - len(row):] = 1
    return ids, mask


def _as_ids(input_ids) -> Union[np.ndarray, List[List[int]]]:
    if hasattr(input_ids, "asnumpy"):
        input_ids = input_ids.asnumpy()
    elif hasattr(input_ids, "numpy") and not isinstance(input_ids, np.ndarray):
        input_ids = input_ids.numpy()
    if isinstance(input_ids, (list, tuple)):
        if input_ids and isinstance(input_ids[0], (list, tuple, np.ndarray)):
            lengths = {len(r) for r in input_ids}
            if len(lengths) > 1:
                return [list(map(int, r)) for r in input_ids]
        input_ids = np.asarray(input_ids)
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be integer token ids of shape (batch, length), got {ids.dtype} {ids.shape}")
    return ids.astype(np.int64)


def _eos_list(eos) -> List[int]:
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def _check_left_padded(mask: np.ndarray) -> None:
    if (mask.sum(axis=1) == 0).any():
        raise ValueError("a prompt row has no real token (attention_mask all 0)")
    if (np.diff(mask, axis=1) < 0).any():
        raise ValueError("prompts must be left-padded (attention_mask 0...0 1...1 per row); this one has padding "
                         "after a real token. Re-tokenize with padding_side='left'")


# -- the loop ---------------------------------------------------------------------------------------

def _step_function(model, use_jit: bool) -> Callable:
    """The model's cache step (returns logits), compiled once per model and reused by later generate calls.
    generate uses it for the prompt and, when the next-token choice needs the host, for every token."""
    steps = model.__dict__.setdefault("_mfcore_generation_steps", {})
    if use_jit not in steps:
        def step(input_ids, position_ids, attention_bias, cache_slot, *caches):
            return model.forward_with_cache(input_ids, position_ids, attention_bias, cache_slot, *caches)

        if use_jit:
            import mindspore

            step = mindspore.jit(step)
        steps[use_jit] = step
    return steps[use_jit]


def _decode_function(model, use_jit: bool, tokens_per_call: int, sampling: Optional[tuple] = None) -> Callable:
    """`tokens_per_call` decode steps in one graph: forward, the next-token choice, the next step's inputs.

    Takes and returns the decoder-only inputs of PreTrainedModel.prepare_inputs_for_generation for one
    token per row: input_ids (B, 1) int32, position_ids (B, 1), attention_bias (B, 1, 1, T) and
    cache_slot (1, 1, T, 1), then the caches. Returns (chosen ids (tokens_per_call, B) int32, the next
    call's input_ids, position_ids, attention_bias, cache_slot, *caches): the state stays on the device
    and the host reads only the chosen ids. Advancing one step: the position grows by one, the slot moves
    one to the right and becomes visible in the bias (the column of a new token is always real).

    sampling=None chooses by argmax. sampling=(top_k,) samples instead, as `next_tokens` does without
    top-p: scores / temperature, top-k filter (ties with the k-th kept), then the inverse CDF of the
    softmax at a uniform draw. After cache_slot come two more arguments: temperature (1, 1) float32 (an
    argument, so a new temperature compiles nothing) and the draws (tokens_per_call, B, 1) float32, which
    the host takes from its seeded numpy generator: `seed=` reproduces a generation, with the same draws
    in the same order as the host path (the choice computed here in float32, not float64).
    """
    functions = model.__dict__.setdefault("_mfcore_decode_functions", {})
    key = (use_jit, tokens_per_call, sampling)
    if key not in functions:
        import mindspore
        from mindspore import mint, ops

        def choose(logits, temperature, draw):
            if sampling is None:
                return ops.cast(ops.argmax(logits, -1), mindspore.int32)
            (top_k,) = sampling
            scores = logits / temperature
            vocab = scores.shape[-1]
            if top_k and top_k < vocab:
                kth = ops.topk(scores, top_k)[0][:, -1:]
                scores = mint.where(scores < kth, float("-inf"), scores)
            cumulative = ops.cumsum(mint.softmax(scores, -1), -1)
            below = ops.cast(cumulative <= draw * cumulative[:, -1:], mindspore.int32)
            return ops.minimum(below.sum(-1), vocab - 1)

        def advance(input_ids, position_ids, attention_bias, cache_slot, temperature, draws, caches):
            chosen = ()
            for step in range(tokens_per_call):
                logits, *caches = model.forward_with_cache(input_ids, position_ids, attention_bias, cache_slot,
                                                           *caches)
                ids = choose(logits, temperature, None if draws is None else draws[step])
                chosen = chosen + (ids,)
                input_ids = ids.reshape(-1, 1)
                position_ids = position_ids + 1
                cache_slot = mint.cat((cache_slot[:, :, -1:], cache_slot[:, :, :-1]), dim=2)  # no Roll on CPU
                attention_bias = mint.where(cache_slot.reshape(1, 1, 1, -1), 0.0, attention_bias)
            return (ops.stack(chosen), input_ids, position_ids, attention_bias, cache_slot) + tuple(caches)

        if sampling is None:
            def decode(input_ids, position_ids, attention_bias, cache_slot, *caches):
                return advance(input_ids, position_ids, attention_bias, cache_slot, None, None, caches)
        else:
            def decode(input_ids, position_ids, attention_bias, cache_slot, temperature, draws, *caches):
                return advance(input_ids, position_ids, attention_bias, cache_slot, temperature, draws, caches)

        functions[key] = mindspore.jit(decode) if use_jit else decode
    return functions[key]


def prefill_chunk(model, config: GenerationConfig, padded_length: int) -> int:
    """Tokens per prompt call: the whole (bucketed) prompt, or prefill_chunk_size (default
    DEFAULT_PREFILL_CHUNK) for a model that supports chunked prefill. MindSpore's CPU runtime keeps every
    intermediate buffer of a compiled graph for the process's life, so a 512-token prompt graph holds ~7 GB
    at 8B; chunks bound that to one chunk's worth whatever the prompt length."""
    size = config.prefill_chunk_size
    if size is None:
        size = DEFAULT_PREFILL_CHUNK if getattr(model, "supports_chunked_prefill", False) else 0
    elif size and not getattr(model, "supports_chunked_prefill", False):
        raise ValueError(f"prefill_chunk_size={size}: {type(model).__name__} does not support chunked prefill; "
                         "leave it unset or 0")
    if not size or padded_length <= size:
        return padded_length
    # Buckets are powers of two up to 512, then multiples of 512: a power-of-two chunk divides them.
    size = 1 << (int(size).bit_length() - 1)
    return size if padded_length % size == 0 else padded_length


def _zeros(shape, dtype):
    """A zero cache tensor: from numpy for float32/16 (~20x cheaper than an op launch per cache tensor)."""
    import mindspore
    from mindspore import Tensor

    numpy_type = {mindspore.float32: np.float32, mindspore.float16: np.float16}.get(dtype)
    if numpy_type is None:
        return mindspore.ops.zeros(shape, dtype)
    return Tensor.from_numpy(np.zeros(shape, numpy_type))


TOKENS_PER_CALL = 4  # decode steps per compiled call (see benchmarks/RESULTS.md, Generate)


def generate(model, input_ids, generation_config: Optional[GenerationConfig] = None, attention_mask=None,
             streamer=None, use_jit: bool = True, tokenizer=None, tokens_per_call: Optional[int] = None,
             choice_in_graph: bool = True, **kwargs) -> np.ndarray:
    """Prompt + new tokens as a numpy int64 array (batch, length), as transformers' generate returns.

    input_ids: (B, P) array / Tensor, or a list of token lists of different lengths (left-padded here).
    attention_mask: (B, P), 1 for real tokens; left padding only. Without it, a leading run of
    pad_token_id is taken as padding. Rows that produced EOS continue with pad_token_id; generation
    stops when every row has finished or after max_new_tokens.
    stop_strings (with tokenizer=, anything with decode(ids)): a row also stops once its new text contains
    one of them; the token that completed it is kept, as in transformers.
    streamer: an object with put(ids) / end() (transformers' TextStreamer works) or a callable that
    receives each step's new tokens (B,); with the choice in the graph they arrive tokens_per_call at a time.
    use_jit=False runs the steps op by op (PyNative).
    tokens_per_call: decode steps per compiled call (default TOKENS_PER_CALL); the host reads only the
    chosen ids. Greedy and sampling (temperature, top-k) choose inside the graph; top-p < 1 and repetition
    penalties choose on the host from each step's logits, as does choice_in_graph=False.
    """
    import mindspore
    from mindspore import Tensor

    config = (generation_config or model.generation_config).update(**kwargs)
    eos = _eos_list(config.eos_token_id)
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
    ids = _as_ids(input_ids)
    if isinstance(ids, list):
        if attention_mask is not None:
            raise ValueError("give either ragged token lists or input_ids + attention_mask, not both")
        ids, mask = left_pad(ids, pad)
    elif attention_mask is not None:
        mask = _as_ids(attention_mask)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {mask.shape} differs from input_ids shape {ids.shape}")
    elif config.pad_token_id is not None and config.pad_token_id not in eos and (ids[:, 0] == config.pad_token_id).any():
        # Left padding is the leading run of pad tokens (a pad id inside a prompt stays a token).
        mask = (np.cumsum(ids != config.pad_token_id, axis=1) > 0).astype(np.int64)
    else:
        mask = np.ones_like(ids)
    _check_left_padded(mask)
    check_generation_inputs(model, ids, mask, config, pad)  # before any graph runs: a bad id breaks them
    stop_strings = [config.stop_strings] if isinstance(config.stop_strings, str) else config.stop_strings
    if stop_strings and tokenizer is None:
        raise ValueError("stop_strings need the tokenizer to read the generated text: pass tokenizer=")
    batch, prompt_length = ids.shape
    max_new = config.max_new_tokens
    if max_new is None:
        max_new = max(0, (config.max_length or prompt_length + 20) - prompt_length)
    out = ids.copy()
    if streamer is not None and hasattr(streamer, "put"):
        streamer.put(ids)
    if max_new == 0:
        if streamer is not None and hasattr(streamer, "end"):
            streamer.end()
        return out

    # The choice runs inside the compiled graph, several tokens a call, unless it needs the host (a repetition
    # penalty looks at every token so far; top-p sorts the vocabulary) or the caller asks for the host.
    in_graph = choice_in_graph and config.repetition_penalty == 1.0 and (not config.do_sample or config.top_p >= 1.0)
    per_call = max(1, int(tokens_per_call or TOKENS_PER_CALL)) if in_graph else 1
    sampling = (int(config.top_k or 0),) if config.do_sample else None

    # Left-pad the prompt to its bucket: extra columns are masked, so results do not change.
    padded_length = bucket_length(prompt_length)
    # Room for every slot written: a call may run up to per_call - 1 steps past the last token kept.
    cache_length = bucket_length(padded_length + max_new + per_call - 1, minimum=32)
    extra = padded_length - prompt_length
    run_ids = np.concatenate([np.full((batch, extra), pad, dtype=np.int64), ids], axis=1)
    run_mask = np.concatenate([np.zeros((batch, extra), dtype=np.int64), mask], axis=1)

    step = _step_function(model, use_jit)
    caches = [_zeros(shape, dtype) for shape, dtype in model.kv_cache_shapes(batch, cache_length)]
    rng = np.random.default_rng(config.seed)
    unfinished = np.ones(batch, dtype=bool)
    new_columns = []

    def accept(new) -> bool:
        """Record one step's tokens (pad for finished rows); False once every row has finished."""
        nonlocal unfinished
        new = np.where(unfinished, new, pad).astype(np.int64)
        new_columns.append(new)
        if streamer is not None:
            streamer.put(new) if hasattr(streamer, "put") else streamer(new)
        if eos:
            unfinished &= ~np.isin(new, eos)
        if stop_strings:
            for row in np.flatnonzero(unfinished):
                text = tokenizer.decode([int(t) for t in np.stack(new_columns, axis=1)[row]])
                if any(stop in text for stop in stop_strings):
                    unfinished[row] = False
        return bool(unfinished.any()) and len(new_columns) < max_new

    # The prompt: one call, or chunks of prefill_chunk_size tokens through the cache; logits read back once.
    chunk = prefill_chunk(model, config, padded_length)
    for start in range(0, padded_length, chunk):
        inputs = model.prepare_inputs_for_generation(run_ids[:, start:start + chunk], run_mask, cache_length, start)
        logits, *caches = step(*(Tensor(inputs[k]) for k in ("input_ids", "position_ids", "attention_bias",
                                                              "cache_slot")), *caches)
    past = padded_length
    going = accept(next_tokens(logits.asnumpy().astype(np.float32), out, config, rng))
    if going:
        run_mask = np.concatenate([run_mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        inputs = model.prepare_inputs_for_generation(new_columns[-1][:, None], run_mask, cache_length, past)
        state = [Tensor(inputs[k]) for k in ("input_ids", "position_ids", "attention_bias", "cache_slot")]
    if going and in_graph:
        decode = _decode_function(model, use_jit, per_call, sampling)
        while going:
            # Sampling: the uniform draws of the next per_call steps, from the seeded generator, in the order
            # the host path draws them (rng.random(batch) a step).
            draws = [Tensor(np.full((1, 1), config.temperature, dtype=np.float32)),
                     Tensor(rng.random((per_call, batch, 1)).astype(np.float32))] if sampling else []
            chosen, *state_and_caches = decode(*state, *draws, *caches)
            state, caches = state_and_caches[:4], state_and_caches[4:]
            for new in chosen.asnumpy():
                going = accept(new)
                if not going:
                    break
    while going:  # top-p or a repetition penalty: the logits come to the host every token
        logits, *caches = step(*state, *caches)
        past += 1
        seen = np.concatenate([out] + [c[:, None] for c in new_columns], axis=1)
        going = accept(next_tokens(logits.asnumpy().astype(np.float32), seen, config, rng))
        if going:
            run_mask = np.concatenate([run_mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
            inputs = model.prepare_inputs_for_generation(new_columns[-1][:, None], run_mask, cache_length, past)
            state = [Tensor(inputs[k]) for k in ("input_ids", "position_ids", "attention_bias", "cache_slot")]
    out = np.concatenate([out] + [c[:, None] for c in new_columns], axis=1)
    if streamer is not None and hasattr(streamer, "end"):
        streamer.end()
    return out
