"""TrainingArguments: the settings of a training run, a plain dataclass.

Kept apart from the trainer (which imports MindSpore) so that a task can be read and validated, and
every configuration problem reported, in well under a second and before MindSpore is imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from mfcore.errors import ConfigError


@dataclass
class TrainingArguments:
    output_dir: str = "./output"
    seed: int = 0
    epochs: int = 1
    max_steps: int = 0                   # optimizer steps; 0: epochs x steps per epoch
    batch_size: int = 1                  # sequences per micro-batch, per data-parallel rank
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    lr_schedule: str = "cosine"          # cosine | linear | constant (MindFormers type names accepted)
    warmup_steps: Optional[int] = None
    warmup_ratio: float = 0.0
    lr_end: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0           # 0: no clipping
    compute_dtype: str = "float32"       # float32 | float16 (dynamic loss scaling) | bfloat16 (Ascend)
    loss_scale: float = 2.0 ** 16        # initial fp16 loss scale
    loss_scale_window: int = 1000        # steps without overflow before the scale grows
    loss_scale_factor: float = 2.0       # the scale is divided / multiplied by this (DynamicLossScaleUpdateCell)
    dynamic_loss_scale: bool = True      # False: a fixed scale (MindFormers' scale_sense given as a number)
    save_steps: int = 0                  # checkpoint every N steps (0: only at the end)
    keep_checkpoint_max: int = 3
    eval_steps: int = 0                  # evaluate every N steps (0: only at the end)
    eval_batch_size: Optional[int] = None
    logging_steps: int = 1
    shuffle: bool = True
    resume: Union[bool, str] = False     # True: newest checkpoint in output_dir; or a checkpoint path
    jit: bool = True
    progress: bool = True
    stop_at_step: int = 0                # stop after this step without a final save (tests of resume)
    cpu_threads: int = 0                 # MindSpore CPU kernel threads, per process (0: MindSpore's default)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "logging_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        for name in ("max_steps", "save_steps", "eval_steps", "keep_checkpoint_max", "stop_at_step", "cpu_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(name, f"must be an integer >= 0, got {value!r}")
        if self.compute_dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError("compute_dtype", f"must be float32, float16 or bfloat16, got {self.compute_dtype!r}")
        if self.max_grad_norm < 0:
            raise ConfigError("max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
