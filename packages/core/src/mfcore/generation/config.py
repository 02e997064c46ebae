"""GenerationConfig: the settings of `generate` (transformers' names), saved as generation_config.json."""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

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
    # keys of a loaded file that we do not use, kept so that saving does not drop them
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        from mfcore.errors import ConfigError

        if self.max_new_tokens is not None and (not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0):
            raise ConfigError("max_new_tokens", f"must be a non-negative integer, got {self.max_new_tokens!r}")
        if self.temperature is None or self.temperature <= 0:
            raise ConfigError("temperature", f"must be > 0, got {self.temperature!r} (use do_sample=False for greedy)")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 0):
            raise ConfigError("top_k", f"must be a non-negative integer or None, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p!r}")
        if self.repetition_penalty is None or self.repetition_penalty <= 0:
            raise ConfigError("repetition_penalty", f"must be > 0, got {self.repetition_penalty!r}")

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
