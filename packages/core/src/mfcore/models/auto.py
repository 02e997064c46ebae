"""AutoConfig, AutoModelForCausalLM, AutoTokenizer: a preset name or a directory -> the right class.

Dispatch is on `model_type` through the registries the plugins filled. A directory may be one of ours
(config.json), a Hugging Face one (config.json with HF keys), or a MindFormers YAML file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

from .configuration import CONFIG_NAME, PretrainedConfig, load_config_dict, preset_or_none
from mfcore.errors import ConfigError, UnknownNameError
from mfcore.plugins.manager import get_plugins
from mfcore.utils.paths import mfcore_home

PathOrName = Union[str, os.PathLike]


def models_home() -> Path:
    """Where converted weights of presets live: $MFCORE_HOME/models (default ~/.mfcore/models)."""
    return mfcore_home() / "models"


def installed_weights(name: PathOrName) -> Optional[Path]:
    """$MFCORE_HOME/models/<preset> when `name` is a preset (not a path) whose weights were put there.

    `mfcore convert <hf_dir> ~/.mfcore/models/llama3-8b` once, then `--model llama3-8b` finds them.
    """
    if Path(name).exists():
        return None
    preset = preset_or_none(str(name))
    if preset is None:
        return None
    directory = models_home() / preset.name
    return directory if (directory / CONFIG_NAME).exists() else None


def config_class_for(data: Dict[str, Any], source: str):
    """The registered config class for a config dict (by `model_type`, or MindFormers' `type`)."""
    plugins = get_plugins()
    model_type = data.get("model_type")
    if model_type:
        return plugins.configs.get(model_type)
    class_name = data.get("type")
    if class_name:
        entry = plugins.configs.find_by_class_name(class_name)
        if entry is None:
            raise UnknownNameError(f"{source}: config type {class_name!r} is not registered by any plugin; "
                                   f"install the plugin that provides it or use auto_register")
        return entry.load()
    raise ConfigError(f"{source}: model_type", "missing; the config must say which model it is for")


class AutoConfig:
    """`AutoConfig.from_pretrained("llama3-8b" | dir | file, **overrides)`."""

    @staticmethod
    def from_pretrained(name_or_path: PathOrName, **overrides) -> PretrainedConfig:
        path = Path(name_or_path)
        if path.exists():
            data = load_config_dict(path)
            return config_class_for(data, str(path)).from_dict(data, **overrides)
        preset = get_plugins().preset(str(name_or_path))
        config_cls = get_plugins().configs.get(preset.model_type)
        return config_cls.from_dict(dict(preset.config), **overrides)

    @staticmethod
    def for_model(model_type: str, **kwargs) -> PretrainedConfig:
        return get_plugins().configs.get(model_type).from_dict(kwargs)


class AutoModelForCausalLM:
    """`AutoModelForCausalLM.from_pretrained("llama3-tiny" | dir, dtype=...)` / `.from_config(config)`."""

    @staticmethod
    def model_class(model_type: str):
        return get_plugins().models.get(model_type)

    @classmethod
    def from_config(cls, config: PretrainedConfig, **kwargs):
        model_cls = cls.model_class(config.model_type)
        # PreTrainedModel.from_config also settles dtypes (dtype=, bfloat16 on CPU); plain classes are called.
        build = getattr(model_cls, "from_config", None)
        return build(config, **kwargs) if build is not None else model_cls(config, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: PathOrName, config: Optional[PretrainedConfig] = None, **kwargs):
        name_or_path = installed_weights(name_or_path) or name_or_path
        if config is None:
            config = AutoConfig.from_pretrained(name_or_path)
        return cls.model_class(config.model_type).from_pretrained(name_or_path, config=config, **kwargs)


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(preset | dir | model file, use_fast=None, **kwargs)`.

    A directory names its class in tokenizer_config.json (`tokenizer_class`, as save_pretrained and
    Hugging Face write it). A preset names a class but ships no vocabulary: pass the model file
    (`vocab_file=".../tokenizer.model"`, or `tokenizer_file=".../tokenizer.json"` for a Fast one).
    use_fast: None keeps the named class; True / False pick its Fast / slow twin when registered.
    """

    @staticmethod
    def tokenizer_class(name: str, use_fast: Optional[bool] = None):
        # Hugging Face directories of tokenizer.json-only models (transformers 5 names the class TokenizersBackend)
        if name in ("PreTrainedTokenizerFast", "TokenizersBackend"):
            from mfcore.tokenization.fast import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast
        tokenizers = get_plugins().tokenizers
        if use_fast and not name.endswith("Fast") and f"{name}Fast" in tokenizers:
            name = f"{name}Fast"
        elif use_fast is False and name.endswith("Fast") and name[:-4] in tokenizers:
            name = name[:-4]
        return tokenizers.get(name)

    @classmethod
    def from_pretrained(cls, name_or_path: PathOrName, use_fast: Optional[bool] = None, **kwargs):
        installed = installed_weights(name_or_path)
        if installed is not None and (installed / "tokenizer_config.json").exists():
            name_or_path = installed
        path = Path(name_or_path)
        if path.is_file() and not (path.parent / "tokenizer_config.json").exists():
            return _tokenizer_for_bare_file(path, **kwargs)
        if path.exists():
            directory = path if path.is_dir() else path.parent
            name = _tokenizer_class_in_directory(directory)
            tokenizer_cls = cls.tokenizer_class(name, use_fast)
            if use_fast is None and not name.endswith("Fast") and not _has_files(tokenizer_cls, directory):
                # e.g. a Hugging Face directory with tokenizer.json but no tokenizer.model
                fast_cls = cls.tokenizer_class(name, use_fast=True)
                if _has_files(fast_cls, directory):
                    tokenizer_cls = fast_cls
            return tokenizer_cls.from_pretrained(path, **kwargs)
        preset = get_plugins().preset(str(name_or_path))
        if preset.tokenizer is None:
            raise ConfigError(f"preset {preset.name}", "has no tokenizer; pass a directory holding tokenizer files")
        spec = {"type": preset.tokenizer} if isinstance(preset.tokenizer, str) else dict(preset.tokenizer)
        tokenizer_cls = cls.tokenizer_class(spec.pop("type"), use_fast)
        for key in list(spec):
            if callable(spec[key]) and key not in kwargs:  # a file the preset builds on first use
                spec[key] = spec[key]()
        spec.update(kwargs)
        files = getattr(tokenizer_cls, "vocab_files_names", {})
        if files and not any(spec.get(attr) for attr in files):
            options = " or ".join(f"{attr}='/path/to/{file}'" for attr, file in files.items())
            raise ConfigError(
                f"preset {preset.name}: tokenizer",
                f"{tokenizer_cls.__name__} needs the model's {' / '.join(files.values())}, which mfcore does not "
                f"ship: pass {options} (AutoTokenizer.from_pretrained({preset.name!r}, {next(iter(files))}=...)), "
                f"or put {next(iter(files.values()))} in a directory and load that directory (a Hugging Face "
                f"model directory works; save_pretrained writes one)")
        return tokenizer_cls(**spec)


def _tokenizer_for_bare_file(path: Path, **kwargs):
    """A model file alone (--tokenizer tokenizer.model): the registered slow tokenizer classes that read a
    file of this name are tried in turn (SentencePiece and tiktoken files cannot be mistaken for each
    other: each refuses the other's); the first that loads it wins."""
    from mfcore.errors import MfcoreError

    tried = []
    for entry in get_plugins().tokenizers.entries():
        if entry.name.endswith("Fast"):
            continue
        try:
            tokenizer_cls = entry.load()
        except MfcoreError:
            continue
        for attr, file_name in getattr(tokenizer_cls, "vocab_files_names", {}).items():
            if file_name == path.name or path.suffix == Path(file_name).suffix:
                tried.append(entry.name)
                try:
                    return tokenizer_cls(**{attr: str(path)}, **kwargs)
                except Exception:  # not this family's file: try the next class
                    break
    raise ConfigError(str(path), f"no installed tokenizer reads this file (tried: {', '.join(tried) or 'none'}); "
                                 "pass a directory holding tokenizer_config.json (tokenizer.save_pretrained writes one)")


def _has_files(tokenizer_cls, directory: Path) -> bool:
    return any((directory / name).exists() for name in getattr(tokenizer_cls, "vocab_files_names", {}).values())


def _tokenizer_class_in_directory(directory: Path) -> str:
    tokenizer_config = directory / "tokenizer_config.json"
    if tokenizer_config.exists():
        try:
            data = json.loads(tokenizer_config.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(str(tokenizer_config), f"is not valid JSON: {exc}") from exc
        name = data.get("tokenizer_class") if isinstance(data, dict) else None
        if name:
            return name
    raise ConfigError(str(tokenizer_config), "missing or without 'tokenizer_class'; cannot tell which tokenizer to "
                                             "load (write one with tokenizer.save_pretrained(dir), or load the "
                                             "tokenizer class directly: LlamaTokenizer.from_pretrained(dir))")
