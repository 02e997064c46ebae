"""The trainer: causal-LM training and evaluation on MindSpore.

One optimizer step is one function, `mindspore.jit`-compiled: forward and loss for each of the
gradient-accumulation micro-batches (`value_and_grad`), averaging, the data-parallel all-reduce,
the fp16 overflow check, global-norm clipping and the AdamW update. The learning rate and loss scale
are scalar tensor arguments, so the graph compiles once.

The data order is a pure function of (seed, epoch), and the batch of step N is found from N alone, so
a checkpoint (weights, optimizer moments, step, loss-scale state) resumes a run exactly.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from . import checkpointing as ckpt
from mfcore.errors import CheckpointError, ConfigError
from .arguments import TrainingArguments  # noqa: F401 - re-exported: mfcore.training.trainer.TrainingArguments
from .optim import AdamW, all_finite, clip_by_global_norm, global_norm
from mfcore.utils.runtime import run_graphs_host_blocking
from .schedules import LRSchedule

IGNORE_INDEX = -100
METRICS_NAME = "metrics.jsonl"


@dataclass
class ParallelInfo:
    """Who this process is in a data-parallel group (world 1: no communication)."""

    rank: int = 0
    world: int = 1


def check_compute_dtype(dtype: str) -> None:
    # Ask MindSpore itself: the model may have been built before (or without) mfcore.runtime.setup.
    if dtype == "bfloat16" and ms.get_context("device_target") == "CPU":
        raise ConfigError("model.model_config.compute_dtype",
                          "bfloat16 computation is not available on MindSpore's CPU backend (its MatMul has no "
                          "bfloat16 kernel); train in float32 or float16 on CPU, or run on Ascend for bfloat16. "
                          "bfloat16 checkpoints still load: weights are upcast.")


def tune_cpu_runtime(threads: int) -> None:
    """On CPU: host-blocking graph runs (steadier and 1.5-3x faster steps on a few cores) and MindSpore's
    CPU kernel thread count (process-wide, settable once; 0 keeps MindSpore's default).
    See benchmarks/RESULTS.md, "Train"."""
    if ms.get_context("device_target") != "CPU":
        return
    run_graphs_host_blocking()  # the model may have been built without mfcore.runtime.setup
    if not threads:
        return
    try:
        ms.device_context.cpu.op_tuning.threads_num(threads)
    except RuntimeError:
        pass  # already set in this process (an earlier Trainer): MindSpore keeps the first value


class Trainer:
    """`Trainer(model, args, train_data, eval_data).train()`; data are {"input_ids", "labels"} arrays."""

    def __init__(self, model: nn.Cell, args: TrainingArguments, train_data: Optional[Dict[str, np.ndarray]] = None,
                 eval_data: Optional[Dict[str, np.ndarray]] = None, parallel: Optional[ParallelInfo] = None,
                 save_model: Optional[Callable[[nn.Cell, Path], None]] = None):
        args.validate()
        if train_data is not None and hasattr(model, "prepare_for_training"):
            model.prepare_for_training()  # e.g. forward-only weight kernels -> differentiable ops
        check_compute_dtype(args.compute_dtype)
        tune_cpu_runtime(args.cpu_threads)
        self.model = model
        self.args = args
        self.train_data = train_data
        self.eval_data = eval_data
        self.parallel = parallel or ParallelInfo()
        self.output_dir = Path(args.output_dir)
        self.save_model = save_model or save_model_weights
        self.use_loss_scale = args.compute_dtype == "float16"
        self.loss_scale = float(args.loss_scale) if self.use_loss_scale else 1.0
        self.good_steps = 0
        self.step = 0
        self._optimizer = None
        self._train_step = None
        self._eval_step = None
        self._perm_cache = (None, None)

    # -- data order -----------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        return self.args.batch_size * self.args.gradient_accumulation_steps * self.parallel.world

    def steps_per_epoch(self) -> int:
        rows = len(self.train_data["input_ids"])
        steps = rows // self.global_batch
        if steps == 0:
            raise ConfigError("runner_config.batch_size",
                              f"the training data has {rows} sequences, fewer than one global batch of "
                              f"{self.global_batch} (batch_size x gradient_accumulation_steps x data parallel); "
                              "lower the batch size or add data")
        return steps

    def total_steps(self) -> int:
        return self.args.max_steps or self.args.epochs * self.steps_per_epoch()

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm_cache[0] != epoch:
            n = len(self.train_data["input_ids"])
            perm = (np.random.default_rng([self.args.seed, epoch]).permutation(n) if self.args.shuffle
                    else np.arange(n))
            self._perm_cache = (epoch, perm)
        return self._perm_cache[1]

    def batch_rows(self, step: int) -> np.ndarray:
        """Row indices [accumulation, batch_size] this rank trains on at (0-based) step `step`."""
        spe = self.steps_per_epoch()
        epoch, within = divmod(step, spe)
        rows = self._permutation(epoch)[within * self.global_batch:(within + 1) * self.global_batch]
        rows = rows.reshape(self.args.gradient_accumulation_steps, self.parallel.world, self.args.batch_size)
        return rows[:, self.parallel.rank]

    # -- compiled functions ---------------------------------------------------------------------
    @property
    def trainable_params(self):
        params = [p for p in self.model.trainable_params()]
        if not params:
            raise ConfigError("model", "has no trainable parameters")
        return params

    @property
    def optimizer(self) -> AdamW:
        if self._optimizer is None:
            a = self.args
            self._optimizer = AdamW(self.trainable_params, a.beta1, a.beta2, a.eps, a.weight_decay)
        return self._optimizer

    def _build_train_step(self):
        model, optimizer = self.model, self.optimizer
        accum = self.args.gradient_accumulation_steps
        max_norm = float(self.args.max_grad_norm)
        use_scale = self.use_loss_scale
        reducer = None
        if self.parallel.world > 1:
            reducer = nn.DistributedGradReducer(optimizer.params, mean=True, degree=self.parallel.world)

        def forward(input_ids, labels, scale):
            loss = model(input_ids, labels=labels).astype(ms.float32)
            return loss * scale, loss

        grad_fn = ms.value_and_grad(forward, None, optimizer.params, has_aux=True)

        def train_step(input_ids, labels, lr, scale):
            (_, loss), grads = grad_fn(input_ids[0], labels[0], scale)
            total = loss
            for i in range(1, accum):
                (_, loss_i), grads_i = grad_fn(input_ids[i], labels[i], scale)
                total = total + loss_i
                grads = tuple(g + h for g, h in zip(grads, grads_i))
            if use_scale or accum > 1:  # (skipped at trace time: a pass over every gradient for nothing)
                grads = tuple(g / (scale * accum).astype(g.dtype) for g in grads)
            if reducer is not None:
                grads = reducer(grads)
            finite = all_finite(grads) if use_scale else None
            if max_norm > 0:
                grads, norm = clip_by_global_norm(grads, max_norm)
            else:
                norm = global_norm(grads)
            optimizer(grads, lr, finite)
            if finite is None:
                return total / accum, norm
            return total / accum, norm, finite

        self.model.set_train(True)
        return ms.jit(train_step) if self.args.jit else train_step

    def _build_eval_step(self):
        model = self.model

        def eval_step(input_ids, labels):
            return model(input_ids, labels=labels).astype(ms.float32)

        return ms.jit(eval_step) if self.args.jit else eval_step

    # -- training -------------------------------------------------------------------------------
    def train(self) -> dict:
        if self.train_data is None:
            raise ConfigError("train_dataset", "no training data given")
        args = self.args
        total = self.total_steps()
        schedule = LRSchedule.create(args.lr_schedule, args.learning_rate, total, args.warmup_steps,
                                     args.warmup_ratio, args.lr_end)
        start = self._maybe_resume()
        if start >= total:
            print(f"nothing to do: the checkpoint is at step {start}, the run has {total} steps")
            return {"step": start}
        self._train_step = self._train_step or self._build_train_step()
        metrics = MetricsLog(self.output_dir / METRICS_NAME, enabled=self.parallel.rank == 0, keep_until=start)
        seq = self.train_data["input_ids"].shape[1]
        tokens_per_step = self.global_batch * seq
        bar = _progress(start, total, self.args.progress and self.parallel.rank == 0)
        last = {}
        self.model.set_train(True)
        for step in range(start, total):
            lr = schedule(step)
            rows = self.batch_rows(step)
            ids = Tensor(self.train_data["input_ids"][rows])
            labels = Tensor(self.train_data["labels"][rows])
            began = time.perf_counter()
            out = self._train_step(ids, labels, Tensor(lr, ms.float32), Tensor(self.loss_scale, ms.float32))
            loss, norm = float(out[0].asnumpy()), float(out[1].asnumpy())
            elapsed = time.perf_counter() - began
            self.step = step + 1
            record = {"step": self.step, "epoch": step // self.steps_per_epoch(), "loss": loss, "lr": lr,
                      "grad_norm": norm, "tokens_per_s": tokens_per_step / elapsed, "step_time_s": elapsed}
            if self.use_loss_scale:
                record.update(self._update_loss_scale(bool(out[2].asnumpy())))
            last = record
            if self.step % args.logging_steps == 0 or self.step == total:
                metrics.write(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
            if args.stop_at_step and self.step >= args.stop_at_step:
                break  # as if the run were killed here: no final checkpoint
            if args.save_steps and self.step % args.save_steps == 0:
                self.save_checkpoint()
            if self.eval_data is not None and args.eval_steps and self.step % args.eval_steps == 0:
                metrics.write(self.evaluate())
                self.model.set_train(True)
        else:
            if not (args.save_steps and self.step % args.save_steps == 0):
                self.save_checkpoint()
            if self.eval_data is not None and not (args.eval_steps and self.step % args.eval_steps == 0):
                last = dict(last, **self.evaluate())
                metrics.write({k: v for k, v in last.items() if k.startswith("eval") or k == "step"})
        if bar is not None:
            bar.close()
        return last

    def _update_loss_scale(self, finite: bool) -> dict:
        """Dynamic loss scaling: divide by the factor on overflow (the step was skipped), multiply after a
        clean window (MindFormers' DynamicLossScaleUpdateCell); a fixed scale only skips overflowing steps."""
        used = self.loss_scale
        if not self.args.dynamic_loss_scale:
            return {"loss_scale": used, "skipped": not finite}
        factor = float(self.args.loss_scale_factor)
        if finite:
            self.good_steps += 1
            if self.good_steps >= self.args.loss_scale_window:
                self.loss_scale *= factor
                self.good_steps = 0
        else:
            self.loss_scale = max(self.loss_scale / factor, 1.0)
            self.good_steps = 0
        return {"loss_scale": used, "skipped": not finite}

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, data: Optional[Dict[str, np.ndarray]] = None) -> dict:
        """Token-weighted mean loss over the data, and perplexity = exp(loss)."""
        data = data if data is not None else self.eval_data
        if data is None:
            raise ConfigError("eval_dataset", "no evaluation data given")
        self._eval_step = self._eval_step or self._build_eval_step()
        self.model.set_train(False)
        size = self.args.eval_batch_size or self.args.batch_size
        ids_all, labels_all = data["input_ids"], data["labels"]
        total_loss, total_tokens = 0.0, 0
        bar = _progress(0, -(-len(ids_all) // size), self.args.progress and self.parallel.rank == 0, "eval", "batch")
        for begin in range(0, len(ids_all), size):  # a shorter last batch costs one more compile
            if bar is not None:
                bar.update(1)
            ids, labels = ids_all[begin:begin + size], labels_all[begin:begin + size]
            tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
            if tokens == 0:
                continue
            loss = float(self._eval_step(Tensor(ids), Tensor(labels)).asnumpy())
            total_loss += loss * tokens
            total_tokens += tokens
        if bar is not None:
            bar.close()
        if total_tokens == 0:
            raise ConfigError("eval_dataset", f"no batch of {size} sequences with labels to evaluate on")
        mean = total_loss / total_tokens
        return {"step": self.step, "eval_loss": mean, "eval_perplexity": math.exp(min(mean, 700.0)),
                "eval_tokens": total_tokens}

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self) -> dict:
        spe = self.steps_per_epoch()
        return {"step": self.step, "epoch": self.step // spe, "batch_in_epoch": self.step % spe,
                "samples_seen": self.step * self.global_batch, "seed": self.args.seed,
                "loss_scale": self.loss_scale, "good_steps": self.good_steps,
                "global_batch": self.global_batch, "world": self.parallel.world, "rank": self.parallel.rank,
                "lora": hasattr(self.model, "lora_config"), "args": _jsonable(asdict(self.args))}

    def _optimizer_params(self):
        opt = self.optimizer
        return list(opt.exp_avg) + list(opt.exp_avg_sq) + [opt.step]

    def save_checkpoint(self) -> Path:
        def write_model(directory: Path):
            if hasattr(self.model, "lora_config"):
                from .lora import save_adapter

                save_adapter(self.model, directory)
            else:
                self.save_model(self.model, directory)

        return ckpt.save_checkpoint(self.output_dir, self.parallel.rank, self.step, model_writer=write_model,
                                    optimizer_params=self._optimizer_params(), state=self._state(),
                                    keep=self.args.keep_checkpoint_max)

    def _maybe_resume(self) -> int:
        path = ckpt.find_resume_checkpoint(self.args.resume, self.output_dir, self.parallel.rank)
        if path is None:
            if self.args.resume and self.parallel.rank == 0:
                print(f"resume: no checkpoint in {ckpt.rank_dir(self.output_dir, self.parallel.rank)} yet; "
                      "starting at step 0")
            return 0
        state = ckpt.read_state(path)
        if state.get("global_batch") != self.global_batch:
            raise CheckpointError(f"{path}: written with a global batch of {state.get('global_batch')} sequences, "
                                  f"this run uses {self.global_batch}; an exact resume needs the same batch "
                                  "size, gradient accumulation and data-parallel degree")
        if hasattr(self.model, "lora_config"):
            from .lora import load_adapter

            load_adapter(self.model, path)
        else:
            load_model_weights(self.model, path)
        opt_params = self._optimizer_params()
        ckpt.assign_tensors(opt_params, ckpt.load_tensors(path / ckpt.OPTIMIZER_NAME), path / ckpt.OPTIMIZER_NAME)
        self.step = int(state["step"])
        self.loss_scale = float(state.get("loss_scale", self.loss_scale))
        self.good_steps = int(state.get("good_steps", 0))
        if self.parallel.rank == 0:
            print(f"resumed from {path} at step {self.step}")
        return self.step


def save_model_weights(model: nn.Cell, directory: Path) -> None:
    """The model's own save_pretrained (config.json + safetensors) when it has one, else raw tensors."""
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
        return
    params = list(model.get_parameters())
    ckpt.save_tensors(params, Path(directory) / ckpt.MODEL_NAME)


def load_model_weights(model: nn.Cell, directory: Path) -> None:
    """Load every parameter of `model` from a checkpoint directory (strict: all names, all shapes)."""
    directory = Path(directory)
    if hasattr(model, "load_checkpoint"):
        model.load_checkpoint(directory)
        return
    loaded = {}
    for file in sorted(directory.glob("*.safetensors")):
        if file.name in (ckpt.OPTIMIZER_NAME, "adapter_model.safetensors"):
            continue
        loaded.update(ckpt.load_tensors(file))
    if not loaded:
        raise CheckpointError(f"{directory}: no model weights (*.safetensors)")
    params = list(model.get_parameters())
    ckpt.assign_tensors(params, loaded, directory)


class MetricsLog:
    """metrics.jsonl in output_dir, one JSON object per line; on resume, lines after the checkpoint's
    step are dropped so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, enabled: bool = True, keep_until: int = 0):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep_until and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= keep_until:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
        from mfcore.utils.atomic import atomic_write_text

        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")


def read_metrics(path: Path) -> List[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _progress(start: int, total: int, enabled: bool, desc: str = "training", unit: str = "step"):
    if not enabled:
        return None
    from mfcore.utils.progress import progress_bar

    return progress_bar(total=total, initial=start, desc=desc, unit=unit)


def _jsonable(data):
    return json.loads(json.dumps(data, default=str))
