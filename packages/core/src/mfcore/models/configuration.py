"""PretrainedConfig: a model's hyper-parameters, readable from our, Hugging Face and MindFormers files.

A subclass sets its own fields and then calls `super().__init__(**kwargs)`:

    class ToyConfig(PretrainedConfig):
        model_type = "toy"
        def __init__(self, hidden_size=64, **kwargs):
            self.hidden_size = hidden_size
            super().__init__(**kwargs)

Keys that are other names of a field (Hugging Face's `num_hidden_layers`, MindFormers' `num_layers`)
are listed in `attribute_map` (alias -> canonical name). Keys nobody knows are kept (and saved again)
with a warning, never dropped silently. `validate()` raises ConfigError naming the field at fault.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

import yaml

from mfcore.errors import ConfigError
from mfcore.plugins.manager import get_plugins
from mfcore.plugins.types import Preset
from mfcore.utils.atomic import atomic_write_text

from .quantization import QuantizationConfig

CONFIG_NAME = "config.json"

# Keys written by other tools that carry no information for us: accepted silently.
BOOKKEEPING_KEYS = frozenset({
    "architectures", "transformers_version", "_name_or_path", "model_type", "type", "auto_map",
    "_commit_hash", "use_cache", "return_dict", "output_attentions", "output_hidden_states",
    "torchscript", "is_encoder_decoder", "auto_register", "_attn_implementation_autoset",
})

# MindFormers keeps sampling settings in model_config; GenerationConfig.from_model_config honours them.
GENERATION_KEYS = frozenset({"do_sample", "top_k", "top_p", "temperature", "repetition_penalty",
                             "max_decode_length", "max_new_tokens"})

DTYPE_ALIASES = {"fp32": "float32", "float32": "float32", "float": "float32",
                 "fp16": "float16", "float16": "float16", "half": "float16",
                 "bf16": "bfloat16", "bfloat16": "bfloat16"}


def normalize_dtype(value, field="dtype") -> str:
    """'fp16' / 'float16' / mindspore.float16 / torch.float16 -> 'float16'."""
    name = str(value).lower().replace("mindspore.", "").replace("torch.", "").replace("ms.", "")
    if name not in DTYPE_ALIASES:
        raise ConfigError(field, f"unknown dtype {value!r}; use one of float32, float16, bfloat16")
    return DTYPE_ALIASES[name]


class PretrainedConfig:
    """Base of every model config. Canonical field names are MindFormers' where it has one."""

    model_type: str = ""
    # alias -> canonical field name (Hugging Face and MindFormers spellings of the same thing)
    attribute_map: Dict[str, str] = {}
    # keys other tools write that are understood but change nothing here -> why (kept, warned once)
    inert_keys: Dict[str, str] = {}

    def __init__(self, bos_token_id=None, eos_token_id=None, pad_token_id=None,
                 tie_word_embeddings=False, quantization_config=None, **kwargs):
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.tie_word_embeddings = tie_word_embeddings
        # weight-only int8 (mfcore.models.quantization), kept as the plain mapping config.json holds
        quantization = QuantizationConfig.from_value(quantization_config)
        self.quantization_config = quantization.to_dict() if quantization is not None else None
        unknown, inert = [], []
        for key, value in kwargs.items():
            if key in self.attribute_map:
                setattr(self, self.attribute_map[key], value)
            elif key in BOOKKEEPING_KEYS:
                continue
            else:
                object.__setattr__(self, key, value)
                if key in self.inert_keys:
                    inert.append(f"{key} ({self.inert_keys[key]})")
                elif key not in GENERATION_KEYS:
                    unknown.append(key)
        if unknown:
            warnings.warn(
                f"{type(self).__name__}: unknown key(s) {', '.join(sorted(unknown))} kept in the config "
                f"but not used by the model (check the spelling)", UserWarning, stacklevel=3)
        if inert:
            warnings.warn(f"{type(self).__name__}: accepted without effect here: {'; '.join(sorted(inert))}",
                          UserWarning, stacklevel=3)
        self._unknown_keys = tuple(sorted(unknown))
        self.validate()

    # -- aliases ---------------------------------------------------------------------------------
    def __getattr__(self, name):
        # Only called when normal lookup fails: resolve aliases like `num_hidden_layers`.
        canonical = type(self).attribute_map.get(name)
        if canonical is not None:
            return getattr(self, canonical)
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def __setattr__(self, name, value):
        object.__setattr__(self, type(self).attribute_map.get(name, name), value)

    # -- validation ------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check field values; subclasses extend it (and may derive fields here)."""
        for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, field)
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                    raise ConfigError(field, f"must be a non-negative integer (or a list of them), got {value!r}")

    @staticmethod
    def check_positive_int(field: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(field, f"must be a positive integer, got {value!r}")

    @staticmethod
    def check_positive_number(field: str, value: Any) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(field, f"must be a positive number, got {value!r}")

    # -- dict / file round trip --------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        data = {k: copy.deepcopy(v) for k, v in vars(self).items() if not k.startswith("_")}
        data["model_type"] = self.model_type
        return data

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def normalize_keys(cls, data: Dict[str, Any]) -> Dict[str, Any]:
        """Turn foreign spellings into canonical keys; raise when two spellings disagree.

        Subclasses override it for structured foreign keys (e.g. Hugging Face's rope_parameters).
        """
        out: Dict[str, Any] = {}
        origin: Dict[str, str] = {}
        for key, value in data.items():
            canonical = cls.attribute_map.get(key, key)
            if canonical in out and out[canonical] != value:
                raise ConfigError(canonical, f"given twice with different values: {origin[canonical]}="
                                             f"{out[canonical]!r} and {key}={value!r}")
            out[canonical] = value
            origin[canonical] = key
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any], **overrides) -> "PretrainedConfig":
        data = dict(data)
        model_type = data.get("model_type")
        if model_type and cls.model_type and model_type != cls.model_type:
            raise ConfigError("model_type", f"{cls.__name__} is for model_type {cls.model_type!r}, "
                                            f"the file says {model_type!r}; use AutoConfig to dispatch")
        merged = cls.normalize_keys(data)
        merged.update(cls.normalize_keys(overrides))
        return cls(**merged)

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> Path:
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CONFIG_NAME
        atomic_write_text(path, self.to_json_string())
        return path

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, os.PathLike], **overrides) -> "PretrainedConfig":
        """Load from a directory (config.json), a .json / .yaml file, or a preset name."""
        path = Path(name_or_path)
        if path.exists():
            return cls.from_dict(load_config_dict(path), **overrides)
        preset = preset_or_none(str(name_or_path))
        if preset is None:
            get_plugins().preset(str(name_or_path))  # raises the unknown-name error listing the presets
        return cls.from_dict(dict(preset.config), **overrides)

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__} {self.to_json_string()}"


def preset_or_none(name: str) -> Optional[Preset]:
    presets = get_plugins().presets
    return presets.get(name) if name in presets else None


def load_config_dict(path: Path) -> Dict[str, Any]:
    """Read a config from a directory (config.json), a JSON file or a MindFormers YAML file."""
    if path.is_dir():
        file = path / CONFIG_NAME
        if not file.exists():
            raise FileNotFoundError(f"{path}: no {CONFIG_NAME} in this directory; is it a model directory?")
    else:
        file = path
    try:
        text = file.read_text(encoding="utf-8")
        if file.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
            # A MindFormers task YAML keeps the config under model.model_config.
            if isinstance(data, dict) and isinstance(data.get("model"), dict) and "model_config" in data["model"]:
                data = data["model"]["model_config"]
        else:
            data = json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), f"cannot be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(str(file), "must hold a mapping of config keys")
    return data
