"""Which format and model type a checkpoint is, and its config, when the user does not say."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mfcore import CheckpointError, ConfigError, get_plugins
from mfcore.models.auto import config_class_for, load_config_dict

from . import readers

FORMATS = ("hf", "meta", "mindformers")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json", "chat_template.jinja")


def weight_directory(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def detect_format(path: Path, model_type: Optional[str]) -> str:
    """'meta' for consolidated.*.pth + params.json, 'mindformers' for .ckpt, else by tensor names."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix in (".pth", ".pt"):
            return "meta"
        if path.suffix == ".ckpt":
            return "mindformers"
        if path.suffix == ".bin":
            return "hf"
        names = readers.SafetensorsFile(path).names()
    else:
        if (path / "params.json").exists() or list(path.glob("consolidated.*.pth")):
            return "meta"
        files = readers.weight_files(path)
        if files[0].suffix == ".ckpt":
            return "mindformers"
        if files[0].suffix == ".bin":
            return "hf"
        names = readers.SafetensorsFile(files[0]).names()
    return format_from_names(names, model_type, str(path))


def format_from_names(names: List[str], model_type: Optional[str], where: str) -> str:
    """The registered format whose name map accepts the most of these tensor names."""
    best: Tuple[int, str] = (0, "")
    for entry in get_plugins().converters.entries():
        weight_map = entry.load()
        if model_type and weight_map.model_type != model_type:
            continue
        hits = sum(1 for n in names if weight_map.to_native(n) is not None
                   or (weight_map.ignore is not None and weight_map.ignore(n)))
        best = max(best, (hits, weight_map.source))
    if not best[0]:
        raise CheckpointError(f"{where}: cannot tell the checkpoint format from its tensor names (e.g. "
                              f"{names[:2]}); pass --from and --model-type")
    return best[1]


def source_config_dict(path: Path, fmt: str, config_path: Optional[Path]) -> Tuple[Optional[dict], Optional[Path]]:
    """The config that travels with a checkpoint: --config, else config.json / params.json beside it."""
    if config_path is not None:
        return load_config_dict(config_path), config_path
    directory = weight_directory(path)
    file = directory / ("params.json" if fmt == "meta" else "config.json")
    if not file.exists():
        return None, None
    if fmt == "meta":
        return json.loads(file.read_text(encoding="utf-8")), file
    return load_config_dict(file), file


def detect_model_type(config_dict: Optional[dict], fmt: str, path: Path) -> str:
    plugins = get_plugins()
    if config_dict is not None and fmt != "meta":
        return config_class_for(config_dict, str(path)).model_type
    types = sorted({e.load().model_type for e in plugins.converters.entries() if e.load().source == fmt})
    if len(types) == 1:
        return types[0]
    if not types:
        raise ConfigError("--from", f"no installed plugin converts format {fmt!r}; install a model plugin "
                                    f"(`pip install mf-llama2`)")
    raise ConfigError("--model-type", f"{path}: cannot tell the model type; pass one of {', '.join(types)}")


def tokenizer_files(path: Path) -> Dict[str, Path]:
    """Tokenizer (and generation) files beside the weights; for Meta also one directory up."""
    directory = weight_directory(path)
    found = {}
    for folder in (directory, directory.parent):
        for name in TOKENIZER_FILES:
            if name not in found and (folder / name).is_file():
                found[name] = folder / name
        if found or not (directory / "params.json").exists():
            break
    return found
