"""Every configuration problem of a task at once, before MindSpore is imported (well under a second).

`mfcore run` used to import MindSpore (10-15 s) and then stop at the first problem: a YAML with a bad
num_heads and no dataset reported only the dataset, and a missing tokenizer vocab_file surfaced after
training. `preflight(args)` reads the task (mfcore.tasks.spec), builds the model config, and checks the
files the task names (datasets, vocab_file, checkpoint) without loading them; all problems found are
raised together as one ConfigError.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional

from mfcore.errors import ConfigError, MfcoreError

from .spec import TaskSpec, apply_flags, apply_options, get_path, load_task_yaml, read_task


def preflight(args) -> TaskSpec:
    problems: List[MfcoreError] = []
    spec: Optional[TaskSpec] = None
    try:
        spec = read_task(args)
    except MfcoreError as exc:
        problems.append(exc)
    model_config, preset, checkpoint, vocab_file, datasets = _what_to_check(spec, args)
    try:
        _check_model_config(model_config, preset, checkpoint)
    except MfcoreError as exc:
        if not any(str(exc) == str(p) for p in problems):
            problems.append(exc)
    if vocab_file and not Path(str(vocab_file)).is_file():
        problems.append(ConfigError("processor.tokenizer.vocab_file", f"{vocab_file}: no such file"))
    for field, path in datasets:
        from mfcore.data.mindrecord import mindrecord_files  # pure path checks; MindSpore loads when reading

        try:
            for file in mindrecord_files(path):
                if not Path(f"{file}.db").is_file():
                    raise ConfigError(field, f"{file}: its index {file.name}.db is missing beside it")
        except ConfigError as exc:
            problems.append(ConfigError(field, str(exc).split(": ", 1)[-1]) if str(exc.field) == "dataset_dir"
                            else exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigError("task", f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
    return spec


def _what_to_check(spec: Optional[TaskSpec], args):
    """(model_config, preset, checkpoint dir, vocab_file, [(field, dataset path)]), from the spec when it
    validated, else from the raw task (so that its problems are found too)."""
    if spec is not None:
        datasets = [(f, p) for f, p in (("train_dataset.data_loader.dataset_dir", spec.train_data),
                                        ("eval_dataset.data_loader.dataset_dir", spec.eval_data)) if p]
        if spec.run_mode not in ("train", "finetune"):
            datasets = [(f, p) for f, p in datasets if f.startswith("eval")]
        return (spec.model_config, spec.preset, spec.load_checkpoint,
                (spec.tokenizer_spec or {}).get("vocab_file"), datasets)
    try:
        task = load_task_yaml(args.config) if getattr(args, "config", None) else {}
        apply_options(task, getattr(args, "options", None))
        apply_flags(task, args)
    except MfcoreError:
        return None, None, None, None, []
    model_config = get_path(task, "model.model_config", None)
    tokenizer = get_path(task, "processor.tokenizer", None)
    vocab_file = tokenizer.get("vocab_file") if isinstance(tokenizer, dict) else None
    datasets = []
    for field in ("train_dataset.data_loader.dataset_dir", "eval_dataset.data_loader.dataset_dir"):
        value = get_path(task, field, None)
        if isinstance(value, str) and value:
            datasets.append((field, value))
    return (model_config if isinstance(model_config, dict) else None, getattr(args, "model", None),
            task.get("load_checkpoint") if isinstance(task.get("load_checkpoint"), str) else None,
            vocab_file, datasets)


def _check_model_config(model_config, preset, checkpoint) -> None:
    """Build the config the run would build (runner.build_config), which validates every field."""
    from .runner import build_config

    if not model_config and not preset and not checkpoint:
        return
    base_dir = Path(checkpoint) if checkpoint and Path(checkpoint).is_dir() else None
    if base_dir is not None and not (base_dir / "config.json").exists() and (base_dir / "adapter_config.json").exists():
        # an adapter (LoRA, prefix) directory: its config is the base model's, which the run loads from there
        try:
            base = json.loads((base_dir / "adapter_config.json").read_text(encoding="utf-8")).get("base_model")
        except (OSError, ValueError, AttributeError):
            base = None
        base_dir = Path(base) if isinstance(base, str) and Path(base).is_dir() else None
        if base_dir is None:
            return  # the run itself reports an adapter whose base cannot be found
    if base_dir is None and not preset and not model_config:
        return
    if base_dir is None and not preset and "model_type" not in model_config and "type" not in model_config:
        return  # nothing that names a config class: the task check reports it
    build_config(argparse.Namespace(model_config=model_config or {}, preset=preset), base_dir)
