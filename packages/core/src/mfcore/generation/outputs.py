"""What `generate` returns beyond the ids, in transformers' names: `num_return_sequences`,
`return_dict_in_generate=True` (a GenerateOutput with `.sequences`) and `output_scores=True` (`.scores`: one
(batch, vocab) float32 array per new token, the logits the token was chosen from, as transformers' `scores`
are for greedy search without logits processors; plus `.token_logprobs`, the log-softmax of each chosen
token, transformers' `compute_transition_scores(..., normalize_logits=True)`).

The decode graph returns only the chosen ids (see decoding.py), so the scores come from one more pass:
the finished sequences scored by a compiled full forward (the prompt-and-answer logits equal the ones the
tokens were chosen from, the cache being exact). Kept apart from the decoding loop on purpose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from .scoring import score_length_bucket


@dataclass
class GenerateOutput:
    """transformers' GenerateDecoderOnlyOutput, the fields mfcore fills."""

    sequences: np.ndarray                           # (batch * num_return_sequences, prompt + new) int64
    scores: Optional[Tuple[np.ndarray, ...]] = None  # one (batch, vocab) float32 per new token
    token_logprobs: Optional[np.ndarray] = None     # (batch, new) float32 (pad tokens after EOS scored too)

    def __getitem__(self, key):  # transformers' outputs index by name too
        return getattr(self, key)


def _logits_function(model, use_jit: bool) -> Callable:
    functions = model.__dict__.setdefault("_mfcore_logits_functions", {})
    if use_jit not in functions:
        import mindspore

        def forward(input_ids):
            return model(input_ids)

        functions[use_jit] = mindspore.jit(forward) if use_jit else forward
    return functions[use_jit]


def repeat_rows(input_ids, attention_mask, times: int):
    """Each prompt row `times` times in a row (transformers' expansion for num_return_sequences)."""
    if times == 1:
        return input_ids, attention_mask
    if isinstance(input_ids, (list, tuple)) and input_ids and isinstance(input_ids[0], (list, tuple, np.ndarray)):
        input_ids = [list(row) for row in input_ids for _ in range(times)]
    else:
        if hasattr(input_ids, "asnumpy"):
            input_ids = input_ids.asnumpy()
        input_ids = np.repeat(np.atleast_2d(np.asarray(input_ids)), times, axis=0)
    if attention_mask is not None:
        mask = attention_mask.asnumpy() if hasattr(attention_mask, "asnumpy") else np.asarray(attention_mask)
        attention_mask = np.repeat(np.atleast_2d(mask), times, axis=0)
    return input_ids, attention_mask


def generation_scores(model, sequences: np.ndarray, prompt_width: int, real_prompt: np.ndarray, pad: int,
                      use_jit: bool = True):
    """(scores per new token, token log-probs) of generated rows. sequences (B, W + N): left-padded prompts of
    width W (real_prompt[b] real tokens each) then N new tokens; a row that finished has pad after its EOS."""
    from mindspore import Tensor

    batch, total = sequences.shape
    new = total - prompt_width
    vocab = model.config.vocab_size
    scores = np.zeros((new, batch, vocab), dtype=np.float32)
    logprobs = np.zeros((batch, new), dtype=np.float32)
    forward = _logits_function(model, use_jit)
    for b in range(batch):
        row = sequences[b, prompt_width - int(real_prompt[b]):]
        width = score_length_bucket(len(row) - 1)
        ids = np.full((1, width), pad, dtype=np.int32)
        ids[0, :len(row) - 1] = row[:-1]
        logits = forward(Tensor(ids)).asnumpy()[0, int(real_prompt[b]) - 1:len(row) - 1]  # (new, vocab)
        scores[:, b] = logits
        shifted = logits - logits.max(-1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted.astype(np.float64)).sum(-1, keepdims=True))
        logprobs[b] = log_softmax[np.arange(new), row[real_prompt[b]:]]
    return tuple(scores), logprobs


def generate_with_outputs(model, input_ids, generation_config=None, num_return_sequences: int = 1,
                          return_dict_in_generate: bool = False, output_scores: bool = False, **kwargs):
    """PreTrainedModel.generate: decoding.generate, or beam_search when num_beams > 1, plus the options above."""
    from .config import GenerationConfig
    from .decoding import generate

    if not isinstance(num_return_sequences, int) or num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be a positive integer, got {num_return_sequences!r}")
    beams = {k: kwargs.pop(k) for k in ("num_beams", "length_penalty", "early_stopping") if k in kwargs}
    if beams.get("num_beams", 1) > 1:
        from .beam_search import beam_search

        if output_scores:
            raise ValueError("output_scores is not available with beam search (num_beams > 1) yet")
        sequences = beam_search(model, input_ids, generation_config, num_return_sequences=num_return_sequences,
                                **beams, **kwargs)
        return GenerateOutput(sequences=sequences) if return_dict_in_generate else sequences
    input_ids, mask = repeat_rows(input_ids, kwargs.pop("attention_mask", None), num_return_sequences)
    sequences = generate(model, input_ids, generation_config=generation_config, attention_mask=mask, **kwargs)
    if not return_dict_in_generate:
        return sequences
    if not output_scores:
        return GenerateOutput(sequences=sequences)
    config = (generation_config or model.generation_config).update(
        **{k: v for k, v in kwargs.items() if k in GenerationConfig.field_names()})
    eos = config.eos_token_id if isinstance(config.eos_token_id, (list, tuple)) else [config.eos_token_id]
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos[0] is not None else 0)
    if isinstance(input_ids, list):  # ragged rows: generate left-padded them to the longest
        real = np.array([len(r) for r in input_ids])
        width = int(real.max())
    else:
        rows = input_ids.asnumpy() if hasattr(input_ids, "asnumpy") else np.atleast_2d(np.asarray(input_ids))
        width = rows.shape[1]
        if mask is None and config.pad_token_id is not None and config.pad_token_id not in eos:
            mask = np.cumsum(rows != config.pad_token_id, axis=1) > 0  # generate's rule for left padding
        real = np.asarray(mask).sum(axis=1) if mask is not None else np.full(len(rows), width)
    scores, logprobs = generation_scores(model, sequences, width, real, pad, use_jit=kwargs.get("use_jit", True))
    return GenerateOutput(sequences=sequences, scores=scores, token_logprobs=logprobs)
