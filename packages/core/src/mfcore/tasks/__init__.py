"""Tasks: `spec` (the task YAML in MindFormers' layout, --options and flags -> a validated TaskSpec, errors
naming the key path), `runner` (what each run mode does: train, finetune, eval, predict) and
`auto_register` (MindFormers' `auto_register: module.Class` escape hatch)."""
from mfcore.utils.lazy import lazy_exports

_LAZY = {
    **{name: "mfcore.tasks.spec" for name in ("TaskSpec", "load_task_yaml", "validate_task", "read_task")},
    **{name: "mfcore.tasks.runner" for name in ("run", "run_task")},
}

__getattr__ = lazy_exports(__name__, globals(), _LAZY)
__all__ = list(_LAZY)
