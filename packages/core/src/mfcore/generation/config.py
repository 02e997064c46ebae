"""GenerationConfig: the settings of `generate` (transformers' names), saved as generation_config.json."""
from __future__ import annotations

import copy
import json
import math
import numbers
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

GENERATION_CONFIG_NAME = "generation_config.json"


@dataclass
class GenerationConfig:
    """Generation settings; the field names and defaults are transformers' (so its files load as is)."""

    max_new_tokens: Optional[int] = 20
    max_length: Optional[int] = None  # prompt + new tokens; used only when max_new_tokens is None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: Optional[int] = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    eos_token_id: Optional[Union[int, List[int]]] = None
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    seed: Optional[int] = None
    use_cache: bool = True  # read from transformers' files; mfcore always decodes with its KV cache
    # Stop a row once the text it generated contains one of these (needs generate(..., tokenizer=)).
    stop_strings: Optional[List[str]] = None
    # Prompt tokens per call for models that support chunked prefill (None: mfcore's default, 0: the whole
    # prompt in one call); rounded down to a power of two.
    prefill_chunk_size: Optional[int] = None
    # keys of a loaded file that we do not use, kept so that saving does not drop them
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        from mfcore.errors import ConfigError

        def integer(value) -> bool:  # True and 5.0 are not token counts
            return isinstance(value, numbers.Integral) and not isinstance(value, bool)

        def real(value) -> bool:  # a finite number (NaN and inf pass every < / > test unnoticed)
            return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

        for name in ("max_new_tokens", "max_length"):
            value = getattr(self, name)
            if value is not None and (not integer(value) or value < 0):
                raise ConfigError(name, f"must be a non-negative integer, got {value!r}")
        if not real(self.temperature) or self.temperature <= 0:
            raise ConfigError("temperature", f"must be a finite number > 0, got {self.temperature!r} "
                                             "(use do_sample=False for greedy)")
        if self.top_k is not None and (not integer(self.top_k) or self.top_k < 0):
            raise ConfigError("top_k", f"must be a non-negative integer or None, got {self.top_k!r}")
        if not real(self.top_p) or not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if not real(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise ConfigError("repetition_penalty", f"must be a finite number > 0, got {self.repetition_penalty!r}")
        if self.prefill_chunk_size is not None and (not integer(self.prefill_chunk_size) or self.prefill_chunk_size < 0):
            raise ConfigError("prefill_chunk_size", f"must be a non-negative integer or None, "
                                                    f"got {self.prefill_chunk_size!r}")
        if not isinstance(self.do_sample, (bool, np.bool_)):
            raise ConfigError("do_sample", f"must be true or false, got {self.do_sample!r}")
        if self.seed is not None and not integer(self.seed):
            raise ConfigError("seed", f"must be an integer, got {self.seed!r}")
        for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
            value = getattr(self, name)
            for item in (value if isinstance(value, (list, tuple)) else [value]):
                if item is not None and not integer(item):
                    raise ConfigError(name, f"must be an integer token id (or a list of them), got {value!r}")

    @classmethod
    def field_names(cls):
        return [f.name for f in fields(cls) if f.name != "extra"]

    def update(self, **kwargs) -> "GenerationConfig":
        """A copy with some fields changed; an unknown name is an error (a typo must not pass silently)."""
        unknown = [k for k in kwargs if k not in self.field_names()]
        if unknown:
            raise TypeError(f"generate: unknown argument(s) {', '.join(unknown)}; "
                            f"known: {', '.join(self.field_names())}")
        new = copy.deepcopy(self)
        for key, value in kwargs.items():
            setattr(new, key, value)
        if kwargs.get("max_length") is not None and "max_new_tokens" not in kwargs:
            new.max_new_tokens = None  # generate(max_length=12): the total the caller asked for (transformers)
        new.validate()
        return new

    @classmethod
    def from_model_config(cls, config) -> "GenerationConfig":
        """Token ids from the model config, plus the sampling keys MindFormers keeps there."""
        values = {name: getattr(config, name, None) for name in ("eos_token_id", "pad_token_id", "bos_token_id")}
        settings = vars(config) if hasattr(config, "__dict__") else {}
        for name in ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty", "max_new_tokens"):
            if settings.get(name) is not None:
                values[name] = settings[name]
        if settings.get("max_decode_length") and "max_new_tokens" not in settings:
            values.update(max_length=settings["max_decode_length"], max_new_tokens=None)  # MindFormers: total length
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        data = dict(self.extra)
        data.update({name: copy.deepcopy(getattr(self, name)) for name in self.field_names()})
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "GenerationConfig":
        known = {k: v for k, v in data.items() if k in cls.field_names()}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**known, extra=extra)

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> Path:
        from mfcore.utils.atomic import atomic_write_text

        path = Path(directory) / GENERATION_CONFIG_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike]) -> "GenerationConfig":
        from mfcore.errors import ConfigError

        path = Path(directory)
        path = path / GENERATION_CONFIG_NAME if path.is_dir() else path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(str(path), f"cannot be read: {exc}") from exc
        return cls.from_dict(data)
