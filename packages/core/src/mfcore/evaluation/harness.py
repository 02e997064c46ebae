"""Running lm-evaluation-harness tasks on mfcore models: one function for `mfcore eval` and for
`mfcore run --run_mode eval` with `lm_eval_tasks` in the task YAML.

Tasks are lm-eval's own (its built-in catalogue, or YAML files in --include_path directories, e.g. a
`dataset_path: json` task over local files, which runs offline). Results are lm-eval's results dict;
`write_results` saves it as JSON atomically.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from mfcore.errors import ConfigError


def require_lm_eval():
    """lm_eval, or an ImportError that says how to install it."""
    try:
        import lm_eval
    except ImportError as exc:
        raise ImportError("evaluation on lm-eval tasks needs lm-evaluation-harness: pip install 'mfcore[eval]' "
                          f"(lm-eval >= 0.4.9); the import failed with: {exc}") from exc
    return lm_eval


def task_list(tasks: Union[str, Sequence[str]]) -> List[str]:
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names = [str(n).strip() for n in names if str(n).strip()]
    if not names:
        raise ConfigError("tasks", "name at least one lm-eval task (e.g. --tasks hellaswag,wikitext)")
    return names


def evaluate_tasks(tasks: Union[str, Sequence[str]], model: str = "mfcore", model_args: Union[str, Dict, None] = None,
                   lm=None, include_path: Optional[Union[str, Sequence[str]]] = None,
                   num_fewshot: Optional[int] = None, limit: Optional[float] = None,
                   batch_size: Union[int, str, None] = None, log_samples: bool = False,
                   gen_kwargs: Optional[str] = None, seed: Optional[int] = None) -> Dict[str, Any]:
    """lm-eval's simple_evaluate on the named tasks. `lm` (an MfcoreLM or any lm-eval LM object) is used as it
    is; otherwise `model` names an lm-eval backend ("mfcore", or "hf" for the reference) built from
    model_args ("pretrained=DIR,max_length=..." or a dict)."""
    lm_eval = require_lm_eval()

    from . import lm_eval_backend  # noqa: F401  (registers "mfcore" with lm-eval)

    names = task_list(tasks)
    paths = [include_path] if isinstance(include_path, (str, Path)) else list(include_path or [])
    for path in paths:
        if not Path(path).exists():
            raise ConfigError("include_path", f"{path} does not exist (a directory of lm-eval task YAML files)")
    manager = task_manager(names, [str(p) for p in paths])
    unknown = [n for n in names if n not in set(manager.all_tasks)]
    if unknown:
        raise ConfigError("tasks", f"unknown lm-eval task(s) {', '.join(unknown)}; put their YAML in a directory "
                                   f"given as include_path, or see `lm_eval ls tasks`")
    options = {} if seed is None else {name: seed for name in ("random_seed", "numpy_random_seed", "torch_random_seed",
                                                                "fewshot_random_seed")}
    results = lm_eval.simple_evaluate(
        model=lm if lm is not None else model, model_args=None if lm is not None else (model_args or ""),
        tasks=names, task_manager=manager, num_fewshot=num_fewshot, limit=limit,
        batch_size=batch_size if lm is None else None, device="cpu", log_samples=log_samples,
        gen_kwargs=gen_kwargs, **options)
    if results is None:
        raise RuntimeError("lm-eval returned no results")
    return results


def task_manager(names: Sequence[str], include_path: Sequence[str]):
    """lm-eval's TaskManager: the include_path directories alone when they hold every named task (indexing
    lm-eval's ~15,000 built-in tasks takes ~10 s), else with the built-in catalogue."""
    from lm_eval.tasks import TaskManager

    if include_path:
        local = TaskManager(include_path=list(include_path), include_defaults=False)
        if set(names) <= set(local.all_tasks):
            return local
    return TaskManager(include_path=list(include_path) or None)


def write_results(results: Dict[str, Any], path: Union[str, Path]) -> Path:
    """lm-eval's results as JSON: `path` itself when it ends in .json, else `path`/lm_eval_results.json;
    with log_samples, the per-document records go beside it (samples_<task>.jsonl)."""
    from mfcore.utils.atomic import atomic_write_text

    path = Path(path)
    target = path if path.suffix == ".json" else path / "lm_eval_results.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    samples = results.get("samples") or {}
    summary = {k: v for k, v in results.items() if k != "samples"}
    atomic_write_text(target, json.dumps(summary, indent=2, default=str, sort_keys=True) + "\n")
    for task, records in samples.items():
        atomic_write_text(target.parent / f"samples_{task}.jsonl",
                          "".join(json.dumps(r, default=str) + "\n" for r in records))
    return target


def results_table(results: Dict[str, Any]) -> str:
    from lm_eval.utils import make_table

    return make_table(results)
