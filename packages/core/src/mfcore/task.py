"""`mfcore run`: a task YAML (MindFormers layout) or a preset, executed in one run mode."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from .auto_register import apply_auto_register
from .errors import ConfigError


def load_task_yaml(path: str) -> dict:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(str(file), f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(str(file), "a task YAML must be a mapping at the top level")
    return data


def run_task(args) -> int:
    task = load_task_yaml(args.config) if args.config else {}
    for line in apply_auto_register(task, args.register_path):
        print(f"auto_register {line}", file=sys.stderr)
    run_mode = args.run_mode or task.get("run_mode")
    if not run_mode and args.model:
        run_mode = "predict"
    if run_mode not in ("train", "finetune", "eval", "predict"):
        raise ConfigError("run_mode", f"must be one of train, finetune, eval, predict (got {run_mode!r})")
    raise ConfigError("run_mode", f"{run_mode!r} is not built yet in this version of mfcore")
