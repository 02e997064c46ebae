"""The lm-evaluation-harness backend "mfcore": `MfcoreLM`, a TemplateLM over an mfcore model.

Importing this module registers the name with lm-eval's model registry (lm-eval >= 0.4.9; install with
`pip install 'mfcore[eval]'`). lm-eval finds models only through its own table and the `@register_model`
decorator (it reads no entry points), so the `lm_eval` command cannot see "mfcore" by itself: run
`mfcore eval --model_args pretrained=DIR --tasks ...` (mfcore.cli.eval imports this module, then runs
lm-eval's own command line), or `import mfcore.evaluation.lm_eval_backend` before calling
`lm_eval.simple_evaluate(model="mfcore", ...)`.

Scores are computed as lm-eval's `hf` backend computes them (same tokenization of context/continuation
pairs, same truncation, same rolling windows, greedy generation cut at the stop strings), so the two
backends give the same numbers on the same checkpoint; the model work goes through
mfcore.generation.scoring (compiled, bucketed) and mfcore.generation.generate.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Tuple

import lm_eval.models  # noqa: F401  lm-eval's own table first: it is loaded only while the registry is empty
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from mfcore.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8


def _batch_size(value) -> int:
    """lm-eval passes --batch_size as given ("8", "auto", "auto:4"); mfcore buckets batches itself."""
    if value is None:
        return DEFAULT_BATCH_SIZE
    text = str(value)
    if text.startswith("auto"):
        logger.info("mfcore: batch_size=%s taken as %d (batches are bucketed, not probed)", text,
                    DEFAULT_BATCH_SIZE)
        return DEFAULT_BATCH_SIZE
    try:
        size = int(text)
    except ValueError as exc:
        raise ConfigError("batch_size", f"must be an integer or 'auto', got {value!r}") from exc
    if size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {size}")
    return size


def _flag(value) -> Optional[bool]:
    if value is None or isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes")


@register_model("mfcore")
class MfcoreLM(TemplateLM):
    """lm-eval model over an mfcore causal LM.

    model_args: pretrained (a preset name, one of our directories or a Hugging Face directory; or an
    already built model object), tokenizer (defaults to pretrained), dtype, max_length (default: the
    model's seq_length), max_gen_toks (256), add_bos_token (None: the tokenizer's own setting, as hf),
    prefix_token_id, use_jit (True). batch_size comes from --batch_size.
    """

    backend = "causal"

    def __init__(self, pretrained=None, tokenizer=None, batch_size=None, max_batch_size=None, device=None,
                 dtype=None, max_length=None, max_gen_toks: int = 256, add_bos_token=None, prefix_token_id=None,
                 use_jit=True, **kwargs):
        super().__init__()
        if kwargs:
            raise ConfigError("model_args", f"unknown for the mfcore backend: {', '.join(sorted(kwargs))}; known: "
                                            "pretrained, tokenizer, dtype, max_length, max_gen_toks, "
                                            "add_bos_token, prefix_token_id, use_jit")
        if pretrained is None:
            raise ConfigError("model_args", "pretrained= is required (a preset name or a model directory)")
        from mfcore.models.auto import AutoModelForCausalLM, AutoTokenizer

        if device not in (None, "cpu"):
            logger.info("mfcore: device=%s ignored; MindSpore's device comes from the mfcore runtime", device)
        if isinstance(pretrained, str):
            self.model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=dtype)
        else:
            self.model = pretrained
        if tokenizer is None and not isinstance(pretrained, str):
            raise ConfigError("model_args", "tokenizer= is required when pretrained is a model object")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or pretrained) if isinstance(
            tokenizer or pretrained, str) else tokenizer
        self._batch_size = _batch_size(batch_size)
        self._max_length = int(max_length) if max_length else None
        self._max_gen_toks = int(max_gen_toks)
        self.add_bos_token = _flag(add_bos_token)
        self.custom_prefix_token_id = int(prefix_token_id) if prefix_token_id is not None else None
        self.use_jit = bool(_flag(use_jit))
        self._rank, self._world_size, self._device = 0, 1, "cpu"
        self.pretrained = pretrained if isinstance(pretrained, str) else type(pretrained).__name__

    # -- what lm-eval reads ------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        from mfcore.generation.scoring import prefix_token_id

        return self.custom_prefix_token_id if self.custom_prefix_token_id is not None else \
            prefix_token_id(self.tokenizer)

    @property
    def max_length(self) -> int:
        from mfcore.generation.scoring import _max_length

        return _max_length(self.model, self._max_length)

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", type(self.tokenizer).__name__)).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, left_truncate_len=None,
                   **kwargs) -> List[int]:
        """As hf: add_special_tokens None uses add_bos_token when set, else the tokenizer's default; a text
        that already starts with the BOS text gets none added."""
        if add_special_tokens is None:
            add = self.add_bos_token if self.add_bos_token is not None else True
            bos = self.tokenizer.decode([self.prefix_token_id])
            if bos and string.startswith(bos):
                add = False
        else:
            add = add_special_tokens
        ids = list(self.tokenizer.encode(string, add_special_tokens=add))
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # -- scoring -----------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> List[Tuple[float, bool]]:
        from mfcore.generation.scoring import loglikelihood_tokens

        with tqdm(total=len(requests), disable=disable_tqdm, desc="Running loglikelihood requests") as bar:
            results = loglikelihood_tokens(self.model, [(context, continuation) for _, context, continuation in requests],
                                           batch_size=self.batch_size, max_length=self.max_length,
                                           use_jit=self.use_jit, progress=bar.update)
        for (key, _, _), result in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> List[float]:
        from mfcore.generation.scoring import loglikelihood_rolling

        texts = [self.tok_encode(string) for (string,) in (req.args for req in requests)]
        with tqdm(disable=disable_tqdm, desc="Running loglikelihood_rolling windows") as bar:
            totals = loglikelihood_rolling(self.model, texts, max_length=self.max_length,
                                           prefix_token=self.prefix_token_id, batch_size=self.batch_size,
                                           use_jit=self.use_jit, progress=bar.update)
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # -- generation --------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        results: List[Optional[str]] = [None] * len(requests)
        groups = {}  # requests with the same generation settings run batched together
        for index, req in enumerate(requests):
            context, gen_kwargs = req.args
            groups.setdefault(repr(sorted(gen_kwargs.items())), []).append(index)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running generate_until requests")
        for indices in groups.values():
            gen_kwargs = requests[indices[0]].args[1]
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = int(kwargs.pop("max_gen_toks"))
            settings = self._generation_settings(kwargs)
            room = self.max_length - max_new
            if room <= 0:
                raise ConfigError("max_gen_toks", f"{max_new} leaves no room for the context in max_length "
                                                  f"{self.max_length}")
            encoded = [(i, self.tok_encode(requests[i].args[0], left_truncate_len=room)) for i in indices]
            encoded.sort(key=lambda item: -len(item[1]))  # longest first, as hf, so batches are even
            for begin in range(0, len(encoded), self.batch_size):
                chunk = encoded[begin:begin + self.batch_size]
                rows = [ids for _, ids in chunk]
                out = self.model.generate(rows, max_new_tokens=max_new, stop_strings=[s for s in until if s],
                                          tokenizer=self.tokenizer, use_jit=self.use_jit, **settings)
                width = max(len(r) for r in rows)
                for (i, _), row in zip(chunk, out):
                    text = self.tok_decode(row[width:].tolist())
                    results[i] = postprocess_generated_text(text, until, None)
                    self.cache_hook.add_partial("generate_until", requests[i].args, results[i])
                bar.update(len(chunk))
        bar.close()
        return results

    @staticmethod
    def _generation_settings(kwargs) -> dict:
        """lm-eval's generation kwargs -> mfcore generate's (greedy unless do_sample)."""
        settings = {"do_sample": bool(kwargs.pop("do_sample", False))}
        temperature = kwargs.pop("temperature", 0.0)
        if settings["do_sample"]:
            settings["temperature"] = float(temperature) if temperature else 1.0
            for name in ("top_k", "top_p", "seed"):
                if name in kwargs:
                    settings[name] = kwargs.pop(name)
        for name in ("repetition_penalty",):
            if name in kwargs:
                settings[name] = float(kwargs.pop(name))
        kwargs.pop("max_length", None)
        if kwargs:
            logger.warning("mfcore: generation kwargs not supported and ignored: %s", ", ".join(sorted(kwargs)))
        return settings

    def get_model_info(self) -> dict:
        return {"model": "mfcore", "pretrained": self.pretrained, "model_type": getattr(self.model.config,
                                                                                          "model_type", None)}
