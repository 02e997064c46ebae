"""Training: `trainer` (Trainer, TrainingArguments: accumulation, clipping, loss scaling, checkpoints,
exact resume, metrics), `optim` (AdamW and gradient utilities), `schedules` (warmup + decay),
`checkpointing` (checkpoint folders written atomically), `lora` (LoRA adapters), `parallel` (MindSpore's
parallel context from parallel_config). MindSpore loads on first access."""
from mfcore.utils.lazy import lazy_exports

_LAZY = {
    **{name: "mfcore.training.trainer" for name in ("Trainer", "TrainingArguments", "read_metrics")},
    "AdamW": "mfcore.training.optim",
    "LRSchedule": "mfcore.training.schedules",
    **{name: "mfcore.training.lora" for name in ("LoraConfig", "inject_lora", "merge_lora", "save_adapter",
                                                 "load_adapter")},
    "setup_parallel": "mfcore.training.parallel",
}

__getattr__ = lazy_exports(__name__, globals(), _LAZY)
__all__ = list(_LAZY)
