"""`mfcore run`: a task YAML (MindFormers layout) or a preset, executed in one run mode.

Reading a task: the YAML (if any), then `--options a.b=value`, then the run_mindformer.py flags
(command line wins), then validation with errors naming the key path
(`runner_config.batch_size: must be a positive integer, got 'four' (str)`). The validated values
become a `TaskSpec`; `run_task` sets MindSpore up and dispatches to train / finetune / eval / predict.
"""
from __future__ import annotations

import copy
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from .auto_register import apply_auto_register
from .options_check import check_options
from mfcore.errors import ConfigError

RUN_MODES = ("train", "finetune", "eval", "predict")
# Top-level keys of MindFormers task YAMLs: accepted (most only matter on Ascend clusters).
KNOWN_TOP_LEVEL = {
    "seed", "output_dir", "load_checkpoint", "src_strategy_path_or_dir", "auto_trans_ckpt", "only_save_strategy",
    "resume_training", "run_mode", "trainer", "runner_config", "optimizer", "lr_schedule", "train_dataset",
    "train_dataset_task", "eval_dataset", "eval_dataset_task", "do_eval", "eval_step_interval",
    "eval_epoch_interval", "use_parallel", "parallel", "parallel_config", "micro_batch_interleave_num",
    "recompute_config", "callbacks", "context", "model", "processor", "metric", "runner_wrapper", "profile",
    "profile_start_step", "profile_stop_step", "init_start_profile", "profile_communication",
    "profile_memory", "auto_tune", "filepath_prefix", "autotune_per_step", "layer_scale", "layer_decay",
    "lr_scale", "lr_scale_factor", "moe_config", "wrapper", "ignore_data_skip", "data_skip_steps",
    "transform_process_num", "remote_save_url", "swap_config", "load_ckpt_format", "use_legacy",
    "merge_lora", "predict_data", "max_new_tokens", "do_sample", "tokenizer", "load_ckpt_async",
    "predict_batch_size", "temperature", "top_k", "top_p", "repetition_penalty",
    "print_separate_loss", "monitor_config", "tensorboard", "eval_callbacks",
    "lm_eval",  # mfcore: lm-evaluation-harness tasks for run_mode eval (tasks, include_path, num_fewshot, ...)
}

# Top-level keys that change how MindFormers runs and are refused here when set to anything but their
# off value, with the reason (the rest of KNOWN_TOP_LEVEL: see INERT_TOP_LEVEL in validate_task).
REFUSED_WHEN_SET = {
    "auto_trans_ckpt": "automatic re-slicing of distributed checkpoints is not implemented; load a whole "
                       "checkpoint (`mfcore convert` merges MindFormers / Hugging Face / Meta shards) and set "
                       "auto_trans_ckpt: False",
    "src_strategy_path_or_dir": "sharding strategy files are for auto_trans_ckpt, which is not implemented; "
                                "leave it empty and load a whole checkpoint",
    "only_save_strategy": "there are no sharding strategy files to save here (no model parallel); set it False",
    "profile": "MindSpore's profiler is not wired into `mfcore run`; set profile: False",
    "auto_tune": "MindFormers' auto tuning is not implemented; set auto_tune: False",
    "layer_scale": "layer-wise learning-rate scaling is not implemented; set layer_scale: False",
    "lr_scale": "learning-rate scaling by batch size is not implemented; set lr_scale: False",
    "moe_config": "mixture-of-experts is not part of the Llama network",
    "swap_config": "activation swapping (Ascend memory offload) is not implemented; remove swap_config",
    "ignore_data_skip": "a resumed run continues the data where its checkpoint's step left it (MindFormers' "
                        "default, ignore_data_skip: False); restarting the data from the top is not implemented",
    "data_skip_steps": "skipping a given number of batches on resume is not implemented (a resumed run "
                       "already continues after the checkpoint's step); remove data_skip_steps",
}
# Top-level keys accepted without a warning that are not read above: why each changes nothing here.
ACCEPTED_TOP_LEVEL = {
    "train_dataset_task": "the dataset wrapper type (CausalLanguageModelDataset); train_dataset is read itself",
    "eval_dataset_task": "the dataset wrapper type (CausalLanguageModelDataset); eval_dataset is read itself",
    "parallel": "how MindSpore distributes a step (parallel_mode, full_batch, enable_parallel_optimizer...): "
                "data parallel here averages gradients over msrun workers, which gives the same update",
    "micro_batch_interleave_num": "splits a batch to overlap communication on Ascend: the same gradients",
    "recompute_config": "recomputing activations trades memory for time: the same gradients",
    "metric": "run_mode eval reports the loss and perplexity (MindFormers' PerplexityMetric)",
    "wrapper": "MindFormers' legacy name of runner_wrapper's cell type (MFTrainOneStepCell's step is built in)",
    "remote_save_url": "the OBS bucket of ObsMonitor (AICC platform); nothing is uploaded here",
    "load_ckpt_format": "the checkpoint format (ckpt / safetensors) is read from the files themselves",
    "load_ckpt_async": "loading weights in the background: the same weights",
    "print_separate_loss": "logging: which loss terms are printed",
    "monitor_config": "logging: MindFormers' training monitors (norms, overflow); metrics.jsonl holds the "
                      "loss, gradient norm and loss scale",
    "tensorboard": "logging: no TensorBoard event files are written; output_dir/metrics.jsonl has the metrics",
    "eval_epoch_interval": "epoch-end evaluation under do_eval; do_eval: True with it is refused",
    "use_legacy": "MindFormers' legacy LlamaForCausalLM network is the one run here; use_legacy: False is refused",
}
# The settings that only matter with one of the features above switched on (they change nothing here).
INERT_TOP_LEVEL = {
    "transform_process_num": "auto_trans_ckpt", "profile_start_step": "profile", "profile_stop_step": "profile",
    "init_start_profile": "profile", "profile_communication": "profile", "profile_memory": "profile",
    "filepath_prefix": "auto_tune", "autotune_per_step": "auto_tune", "layer_decay": "layer_scale",
    "lr_scale_factor": "lr_scale",
}
# Callback types of MindFormers' YAMLs: what they do here.
CALLBACKS = {
    "MFLossMonitor": "loss / learning rate logging (per_print_times)",
    "CheckpointMonitor": "checkpoints every save_checkpoint_steps, keep_checkpoint_max kept",
    "ObsMonitor": "uploads output_dir to Huawei OBS on the AICC platform; no OBS here, so nothing to upload "
                  "(checkpoints stay in output_dir)",
}


# Sections that must be mappings when present.
MAPPING_SECTIONS = ("trainer", "runner_config", "optimizer", "lr_schedule", "train_dataset", "train_dataset.data_loader",
                    "eval_dataset", "eval_dataset.data_loader", "parallel_config", "context", "model",
                    "model.model_config", "processor", "runner_wrapper")


# -- loading and overriding ------------------------------------------------------------------------

def load_task_yaml(path: str) -> dict:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(str(file), "a task YAML must be a mapping at the top level")
    return data


def set_path(task: dict, key_path: str, value: Any) -> None:
    """task["a"]["b"]["c"] = value for "a.b.c", creating mappings on the way."""
    node = task
    parts = key_path.split(".")
    for index, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[:index + 1]), f"is a {type(child).__name__}, cannot set {key_path} in it")
        node = child
    node[parts[-1]] = value


def get_path(task: dict, key_path: str, default: Any = None) -> Any:
    node: Any = task
    for part in key_path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def apply_options(task: dict, options: Optional[Sequence[str]]) -> None:
    """--options a.b.c=value (value read as YAML: 3 -> int, true -> bool, [1, 2] -> list)."""
    for option in options or ():
        key, sep, text = option.partition("=")
        if not sep or not key:
            raise ConfigError("--options", f"{option!r}: write it as key.path=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        set_path(task, key.strip(), value)


# flag -> key path in the task YAML (MindFormers' run_mindformer.py does the same mapping)
FLAG_PATHS = {
    "seed": "seed", "output_dir": "output_dir", "load_checkpoint": "load_checkpoint", "run_mode": "run_mode",
    "resume_training": "resume_training", "use_parallel": "use_parallel", "do_eval": "do_eval",
    "train_dataset_dir": "train_dataset.data_loader.dataset_dir",
    "eval_dataset_dir": "eval_dataset.data_loader.dataset_dir",
    "epochs": "runner_config.epochs", "batch_size": "runner_config.batch_size",
    "gradient_accumulation_steps": "runner_config.gradient_accumulation_steps",
    "sink_mode": "runner_config.sink_mode", "mode": "context.mode", "device_target": "context.device_target",
    "device_id": "context.device_id", "predict_data": "predict_data", "max_new_tokens": "max_new_tokens",
    "do_sample": "do_sample", "tokenizer": "tokenizer", "num_samples": "train_dataset.num_samples",
    "predict_batch_size": "predict_batch_size", "temperature": "temperature", "top_k": "top_k", "top_p": "top_p",
    "repetition_penalty": "repetition_penalty",
    # refused by validate_task when switched on (REFUSED_WHEN_SET), as the same YAML keys are
    "auto_trans_ckpt": "auto_trans_ckpt", "src_strategy_path_or_dir": "src_strategy_path_or_dir",
    "only_save_strategy": "only_save_strategy", "profile": "profile",
    "transform_process_num": "transform_process_num",
}
# run_mindformer.py flags with no YAML key: what they need that is not here.
REFUSED_FLAGS = {
    "strategy_load_checkpoint": "loading a sharding strategy is for distributed checkpoints re-sliced by "
                                "auto_trans_ckpt, which is not implemented",
    "adapter_id": "choosing one of many LoRA adapters per request is SLoRA (pet_type slora), which is not "
                  "implemented; pass the adapter directory as --load_checkpoint",
}


def apply_flags(task: dict, args) -> None:
    """Command-line values override the YAML."""
    for flag, why in REFUSED_FLAGS.items():
        if getattr(args, flag, None) not in (None, ""):
            raise ConfigError(f"--{flag}", why)
    if getattr(args, "trust_remote_code", None):
        print("--trust_remote_code: mfcore never runs code found beside a checkpoint; model classes come from "
              "installed plugins (or auto_register + --register_path), so this flag changes nothing",
              file=sys.stderr)
    for flag, key_path in FLAG_PATHS.items():
        value = getattr(args, flag, None)
        if value is not None:
            set_path(task, key_path, value)


# -- typed reading with key-path errors --------------------------------------------------------------

_MISSING = object()


def _type_name(value) -> str:
    return type(value).__name__


class TaskReader:
    """Typed getters on a task dict; every error names the key path."""

    def __init__(self, task: dict):
        self.task = task

    def raw(self, path: str, default=_MISSING, required_for: str = ""):
        value = get_path(self.task, path, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                why = f" for {required_for}" if required_for else ""
                raise ConfigError(path, f"missing; it is required{why}")
            return default
        return value

    def section(self, path: str, required_for: str = "") -> dict:
        value = self.raw(path, default=None if not required_for else _MISSING, required_for=required_for)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping of keys, got {value!r} ({_type_name(value)})")
        return value

    def int(self, path: str, default=_MISSING, minimum: Optional[int] = None, required_for: str = ""):
        value = self.raw(path, default, required_for)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(path, f"must be an integer, got {value!r} ({_type_name(value)})")
        if minimum is not None and value < minimum:
            raise ConfigError(path, f"must be >= {minimum}, got {value}")
        return value

    def number(self, path: str, default=_MISSING, minimum: Optional[float] = None, positive: bool = False):
        value = self.raw(path, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(path, f"must be a number, got {value!r} ({_type_name(value)})")
        if positive and value <= 0:
            raise ConfigError(path, f"must be > 0, got {value}")
        if minimum is not None and value < minimum:
            raise ConfigError(path, f"must be >= {minimum}, got {value}")
        return float(value)

    def bool(self, path: str, default=_MISSING):
        value = self.raw(path, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {value!r} ({_type_name(value)})")
        return value

    def str(self, path: str, default=_MISSING, choices: Optional[Sequence[str]] = None, required_for: str = ""):
        value = self.raw(path, default, required_for)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {value!r} ({_type_name(value)})")
        if choices is not None and value not in choices:
            raise ConfigError(path, f"must be one of {', '.join(choices)}, got {value!r}")
        return value


# -- the validated task ------------------------------------------------------------------------------

@dataclass
class ParallelSpec:
    use_parallel: bool = False
    data_parallel: int = 1
    model_parallel: int = 1
    pipeline_stage: int = 1


@dataclass
class TaskSpec:
    run_mode: str
    task: dict
    preset: Optional[str] = None
    model_config: Optional[dict] = None       # model.model_config without type / pet_config
    pet_config: Optional[dict] = None
    load_checkpoint: Optional[str] = None
    output_dir: str = "./output"
    seed: int = 0
    train_data: Optional[str] = None
    eval_data: Optional[str] = None
    do_eval: bool = False
    tokenizer: Optional[str] = None
    tokenizer_spec: Optional[dict] = None
    predict_data: List[str] = field(default_factory=list)
    predict_batch_size: int = 1
    max_new_tokens: int = 32
    do_sample: bool = False
    generation: Dict[str, Any] = field(default_factory=dict)   # temperature, top_k, top_p, repetition_penalty
    merge_lora: bool = False
    context: Dict[str, Any] = field(default_factory=dict)
    arch: Optional[str] = None                # model.arch.type (checked against the config's model class)
    parallel: ParallelSpec = field(default_factory=ParallelSpec)
    training: Any = None                      # trainer.TrainingArguments (train / finetune / eval)
    lm_eval: Optional[dict] = None            # run_mode eval: lm-eval tasks (see LM_EVAL_KEYS)


# `lm_eval:` in a task YAML (run_mode eval): lm-evaluation-harness tasks scored on the task's model.
LM_EVAL_KEYS = ("tasks", "include_path", "num_fewshot", "limit", "batch_size", "max_length", "max_gen_toks",
                "log_samples")


def _lm_eval_section(r: "TaskReader") -> Optional[dict]:
    section = dict(r.section("lm_eval"))
    if not section:
        return None
    unknown = sorted(set(section) - set(LM_EVAL_KEYS))
    if unknown:
        raise ConfigError(f"lm_eval.{unknown[0]}", f"unknown key; known: {', '.join(LM_EVAL_KEYS)}")
    tasks = section.get("tasks")
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not tasks or not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ConfigError("lm_eval.tasks", f"must name lm-eval tasks (a list or 'a,b'), got {section.get('tasks')!r}")
    section["tasks"] = tasks
    include = section.get("include_path")
    if include is not None:
        section["include_path"] = [include] if isinstance(include, str) else list(include)
    for key in ("num_fewshot", "batch_size", "max_length", "max_gen_toks"):
        if section.get(key) is not None:
            r.int(f"lm_eval.{key}", minimum=0 if key == "num_fewshot" else 1)
    return section


def validate_task(task: dict, preset: Optional[str] = None) -> TaskSpec:
    """Check a task dict (YAML + overrides) and turn it into a TaskSpec."""
    r = TaskReader(task)
    for key in task:
        if key not in KNOWN_TOP_LEVEL:
            warnings.warn(f"task YAML: unknown top-level key {key!r} ignored (check the spelling)", UserWarning,
                          stacklevel=2)
    for section in MAPPING_SECTIONS:
        r.section(section)
    for key, why in REFUSED_WHEN_SET.items():
        if task.get(key) not in (None, False, "", "False", "false", {}, 0):
            raise ConfigError(key, f"{task[key]!r}: {why}")
    if task.get("use_legacy") is False:
        raise ConfigError("use_legacy", "False selects MindFormers' Megatron-core model (other parameter names "
                                        "and layout); mfcore runs the legacy LlamaForCausalLM network: set "
                                        "use_legacy: True or remove it")
    if task.get("do_eval") is True and task.get("eval_epoch_interval") not in (None, -1, 0):
        raise ConfigError("eval_epoch_interval", f"{task['eval_epoch_interval']!r}: evaluation at epoch ends is "
                                                 "not implemented; use eval_step_interval (steps) with do_eval")
    _check_callbacks(r, "callbacks")
    _check_callbacks(r, "eval_callbacks")
    run_mode = task.get("run_mode")
    if run_mode is None:
        if not preset:
            raise ConfigError("run_mode", "missing; give it in the YAML or as --run_mode "
                                          "(train, finetune, eval or predict)")
        run_mode = "predict"
    if run_mode not in RUN_MODES:
        raise ConfigError("run_mode", f"must be one of {', '.join(RUN_MODES)}, got {run_mode!r}")
    spec = TaskSpec(run_mode=run_mode, task=task, preset=preset)
    arch = r.raw("model.arch.type", None)
    if arch is not None and not isinstance(arch, str):
        raise ConfigError("model.arch.type", f"must be a model class name, got {arch!r}")
    spec.arch = arch
    spec.seed = r.int("seed", 0, minimum=0)
    spec.output_dir = r.str("output_dir", "./output")
    checkpoint = r.raw("load_checkpoint", None)
    if checkpoint not in (None, "", False):
        if not isinstance(checkpoint, str):
            raise ConfigError("load_checkpoint", f"must be a path, got {checkpoint!r} ({_type_name(checkpoint)})")
        spec.load_checkpoint = checkpoint
    spec.merge_lora = r.bool("merge_lora", False)

    if preset or (spec.load_checkpoint and run_mode != "train"):
        # the preset or the checkpoint's config.json describes the model; model_config may override it
        config = r.section("model.model_config") if r.section("model") else None
    else:
        config = r.section("model.model_config", required_for=f"run_mode {run_mode} without --model PRESET "
                                                             "or a load_checkpoint directory")
    if config is not None:
        config = dict(config)
        pet = config.pop("pet_config", None)
        if pet is not None:
            if not isinstance(pet, dict):
                raise ConfigError("model.model_config.pet_config", f"must be a mapping, got {pet!r}")
            spec.pet_config = pet
        spec.model_config = config
        if not preset and not spec.load_checkpoint and not (config.get("type") or config.get("model_type")):
            raise ConfigError("model.model_config.type", "missing; name the config class (e.g. LlamaConfig) "
                                                         "or give model_type")
    if spec.pet_config is not None:
        pet_type = str(spec.pet_config.get("pet_type", "lora")).lower()
        if pet_type == "slora":
            raise ConfigError("model.model_config.pet_config.pet_type",
                              "slora (serving many LoRA adapters in one batch, chosen by --adapter_id) is not "
                              "implemented; use pet_type lora with load_checkpoint the adapter directory a "
                              "LoRA finetune wrote (output_dir/adapter)")
        if pet_type not in ("lora", "prefixtuning", "ptuning2"):
            raise ConfigError("model.model_config.pet_config.pet_type",
                              f"{pet_type!r} is not supported; use lora, prefixtuning or ptuning2")
        # MindFormers' LoRA files say run_mode train (its trainer adds the adapters all the same)
        if run_mode == "train" and pet_type != "lora":
            raise ConfigError("model.model_config.pet_config", f"{pet_type} is for run_mode finetune, not train")
    if spec.model_config is not None and spec.model_config.get("quantization_config") is not None:
        spec.model_config["quantization_config"] = _quantization(spec.model_config["quantization_config"])

    tokenizer = task.get("tokenizer")
    if tokenizer is not None:
        spec.tokenizer = r.str("tokenizer")
    spec.tokenizer_spec = r.section("processor.tokenizer") or None

    spec.context = dict(r.section("context"))
    spec.parallel = ParallelSpec(
        use_parallel=_use_parallel(r),
        data_parallel=r.int("parallel_config.data_parallel", 1, minimum=1),
        model_parallel=r.int("parallel_config.model_parallel", 1, minimum=1),
        pipeline_stage=r.int("parallel_config.pipeline_stage", 1, minimum=1))

    if run_mode in ("train", "finetune"):
        spec.train_data = r.str("train_dataset.data_loader.dataset_dir", required_for=f"run_mode {run_mode} "
                                "(a MindRecord file or directory made by `mfcore data`; or --train_dataset_dir)")
        if run_mode == "finetune" and spec.load_checkpoint is None and not _random_init_ok(preset):
            raise ConfigError("load_checkpoint", "missing; run_mode finetune starts from trained weights "
                                                 "(a directory from `mfcore convert` or an earlier run)")
    spec.do_eval = r.bool("do_eval", False)
    spec.lm_eval = _lm_eval_section(r) if run_mode == "eval" else None
    # run_mode eval scores perplexity on eval_dataset, the lm_eval tasks, or both; lm-eval tasks alone need no data
    perplexity_data = r.raw("eval_dataset.data_loader.dataset_dir", None) is not None
    if spec.do_eval or run_mode == "eval" and (perplexity_data or not spec.lm_eval):
        what = "run_mode eval" if run_mode == "eval" else "do_eval"
        spec.eval_data = r.str("eval_dataset.data_loader.dataset_dir",
                               required_for=f"{what} (a MindRecord file or directory; or --eval_dataset_dir; "
                                            f"or lm-eval tasks under lm_eval.tasks)")
    if run_mode == "predict":
        data = task.get("predict_data")
        if data is None:
            raise ConfigError("predict_data", "missing; give the prompt(s) with --predict_data TEXT [TEXT ...]")
        spec.predict_data = [data] if isinstance(data, str) else list(data)
        if not all(isinstance(p, str) for p in spec.predict_data):
            raise ConfigError("predict_data", "must be a string or a list of strings")
        spec.max_new_tokens = r.int("max_new_tokens", 32, minimum=1)
        # several prompts run as one left-padded batch (up to 8 at a time) unless told otherwise
        spec.predict_batch_size = r.int("predict_batch_size", min(len(spec.predict_data), 8), minimum=1)
        spec.do_sample = r.bool("do_sample", False)
        for key in ("temperature", "top_k", "top_p", "repetition_penalty"):
            if task.get(key) is not None:
                spec.generation[key] = task[key]
    spec.training = training_arguments(r, spec)
    return spec


def _use_parallel(r: TaskReader) -> bool:
    value = r.raw("use_parallel", False)
    if not isinstance(value, bool):
        # MindFormers tests `if use_parallel:`, so a string such as 'Flase' would switch parallel on there
        raise ConfigError("use_parallel", f"must be true or false, got {value!r} ({_type_name(value)}); "
                                          "MindFormers would read any non-empty string as true")
    return value


def _check_callbacks(r: TaskReader, path: str) -> None:
    callbacks = r.raw(path, [])
    if not isinstance(callbacks, list):
        raise ConfigError(path, f"must be a list, got {_type_name(callbacks)}")
    for index, callback in enumerate(callbacks):
        kind = callback.get("type") if isinstance(callback, dict) else None
        if kind not in CALLBACKS:
            raise ConfigError(f"{path}[{index}].type", f"{kind!r} is not a callback mfcore runs; known: "
                                                      f"{', '.join(sorted(CALLBACKS))}")
        if kind == "ObsMonitor":
            warnings.warn(f"{path}[{index}]: ObsMonitor {CALLBACKS[kind]}", UserWarning, stacklevel=3)


def _quantization(value):
    """model_config.quantization_config as MindFormers' golden-stick YAMLs write it -> what
    mfcore.models.quantization reads: RTN int8 weight-only runs; PTQ and SmoothQuant are refused."""
    where = "model.model_config.quantization_config"
    if not isinstance(value, dict):
        return value
    value = dict(value)
    method = str(value.get("quant_method", "")).lower()
    if method in ("ptq", "smooth_quant", "smoothquant"):
        raise ConfigError(f"{where}.quant_method", f"{method!r} quantizes activations (int8 weights and "
                          "activations, calibrated on data with MindSpore golden-stick on Ascend), which is not "
                          "implemented; use quant_method: rtn with weight_dtype: int8 (weight-only round-to-"
                          "nearest, activation_dtype None) instead")
    args = value.pop("algorithm_args", None)
    if args:  # RTN has no algorithm arguments in MindFormers either; anything here would be for PTQ / SQ
        raise ConfigError(f"{where}.algorithm_args", f"{args!r}: quant_method rtn takes no algorithm arguments")
    if value.get("outliers_suppression") not in (None, "None", "none"):
        raise ConfigError(f"{where}.outliers_suppression", "outlier suppression (smooth) is for SmoothQuant, "
                                                           "which is not implemented; set it None")
    value.pop("outliers_suppression", None)
    return value


def _random_init_ok(preset: Optional[str]) -> bool:
    if not preset:
        return False
    from mfcore.plugins.manager import get_plugins

    return bool(get_plugins().preset(preset).random_init_ok)


def training_arguments(r: TaskReader, spec: TaskSpec):
    """MindFormers' runner_config / optimizer / lr_schedule / callbacks / runner_wrapper -> TrainingArguments."""
    from mfcore.training.arguments import TrainingArguments  # a dataclass: no MindSpore
    from mfcore.training.schedules import SCHEDULE_ALIASES

    epochs = r.int("runner_config.epochs", 1, minimum=1)
    batch_size = r.int("runner_config.batch_size", None, minimum=1)
    if batch_size is None:
        batch_size = r.int("train_dataset.batch_size", 1, minimum=1)
    accumulation = r.int("runner_config.gradient_accumulation_steps", None, minimum=1)
    if accumulation is None:
        accumulation = r.int("trainer.gradient_accumulation_steps", 1, minimum=1)
    optimizer_type = r.str("optimizer.type", "AdamW")
    if optimizer_type not in ("AdamW", "AdamWeightDecay", "FP32StateAdamWeightDecay", "adamw"):
        raise ConfigError("optimizer.type", f"{optimizer_type!r} is not supported; use AdamW "
                                            "(MindFormers' AdamWeightDecay / FP32StateAdamWeightDecay map to it)")
    schedule = r.str("lr_schedule.type", "CosineWithWarmUpLR")
    if schedule.lower() not in SCHEDULE_ALIASES:
        raise ConfigError("lr_schedule.type", f"{schedule!r} is not supported; use CosineWithWarmUpLR, "
                                              "LinearWithWarmUpLR or ConstantWarmUpLR")
    learning_rate = r.number("lr_schedule.learning_rate", None, positive=True)
    if learning_rate is None:
        learning_rate = r.number("optimizer.learning_rate", 1e-4, positive=True)
    total_steps = r.int("lr_schedule.total_steps", -1)
    max_steps = r.int("trainer.max_steps", 0, minimum=0)
    if max_steps == 0 and total_steps > 0:
        max_steps = total_steps
    warmup_steps = r.int("lr_schedule.warmup_steps", None, minimum=0)
    save_steps, keep = 0, 3
    callbacks = r.raw("callbacks", [])
    if not isinstance(callbacks, list):
        raise ConfigError("callbacks", f"must be a list, got {_type_name(callbacks)}")
    logging_steps = r.int("trainer.logging_steps", 1, minimum=1)
    for index, callback in enumerate(callbacks):
        if not isinstance(callback, dict):
            raise ConfigError(f"callbacks[{index}]", "must be a mapping with a 'type'")
        if callback.get("type") == "CheckpointMonitor":
            save_steps = _int_in(callback, "save_checkpoint_steps", f"callbacks[{index}]", 0)
            keep = _int_in(callback, "keep_checkpoint_max", f"callbacks[{index}]", 3)
        if callback.get("type") == "MFLossMonitor":
            logging_steps = _int_in(callback, "per_print_times", f"callbacks[{index}]", logging_steps) or 1
    save_steps = r.int("trainer.save_steps", save_steps, minimum=0)
    keep = r.int("trainer.keep_checkpoint_max", keep, minimum=0)
    max_grad_norm = r.number("trainer.max_grad_norm", None, minimum=0.0)
    if max_grad_norm is None:
        use_clip = r.bool("runner_wrapper.use_clip_grad", True)
        max_grad_norm = r.number("runner_wrapper.max_grad_norm", 1.0, minimum=0.0) if use_clip else 0.0
    compute_dtype = "float32"
    if spec.model_config and spec.model_config.get("compute_dtype") is not None:
        from mfcore.models.configuration import normalize_dtype

        compute_dtype = normalize_dtype(spec.model_config["compute_dtype"], "model.model_config.compute_dtype")
    resume = r.raw("resume_training", False)
    if not isinstance(resume, (bool, str)):
        raise ConfigError("resume_training", f"must be true/false or a checkpoint path, got {resume!r}")
    scale = r.raw("runner_wrapper.scale_sense", None)
    loss_scale, window, factor, dynamic = 2.0 ** 16, 1000, 2.0, True
    if isinstance(scale, dict):
        kind = scale.get("type", "DynamicLossScaleUpdateCell")
        if kind not in ("DynamicLossScaleUpdateCell", "FixedLossScaleUpdateCell"):
            raise ConfigError("runner_wrapper.scale_sense.type", f"{kind!r}; use DynamicLossScaleUpdateCell or "
                                                                 "FixedLossScaleUpdateCell")
        loss_scale = r.number("runner_wrapper.scale_sense.loss_scale_value", loss_scale, positive=True)
        dynamic = kind == "DynamicLossScaleUpdateCell"
        window = r.int("runner_wrapper.scale_sense.scale_window", window, minimum=1)
        factor = r.number("runner_wrapper.scale_sense.scale_factor", factor, positive=True)
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
        loss_scale, dynamic = float(scale), False  # a number: MindFormers' fixed loss scale
    return TrainingArguments(
        output_dir=spec.output_dir, seed=spec.seed, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        gradient_accumulation_steps=accumulation, learning_rate=learning_rate, lr_schedule=schedule,
        warmup_steps=warmup_steps, warmup_ratio=r.number("lr_schedule.warmup_ratio", 0.0, minimum=0.0),
        lr_end=r.number("lr_schedule.lr_end", 0.0, minimum=0.0),
        beta1=r.number("optimizer.beta1", 0.9, minimum=0.0), beta2=r.number("optimizer.beta2", 0.95, minimum=0.0),
        eps=r.number("optimizer.eps", 1e-8, positive=True),
        weight_decay=r.number("optimizer.weight_decay", 0.0, minimum=0.0), max_grad_norm=max_grad_norm,
        compute_dtype=compute_dtype, loss_scale=loss_scale, loss_scale_window=window, loss_scale_factor=factor,
        dynamic_loss_scale=dynamic, save_steps=save_steps, keep_checkpoint_max=keep,
        eval_steps=r.int("eval_step_interval", 0, minimum=0) if spec.do_eval else 0,
        eval_batch_size=r.int("eval_dataset.batch_size", None, minimum=1),
        logging_steps=logging_steps, shuffle=r.bool("train_dataset.data_loader.shuffle", True), resume=resume,
        jit=r.bool("trainer.jit", True), progress=r.bool("trainer.progress", True),
        stop_at_step=r.int("trainer.stop_at_step", 0, minimum=0),
        # MindFormers' context.runtime_num_threads: MindSpore's CPU kernel threads (0: its default)
        cpu_threads=r.int("context.runtime_num_threads", 0, minimum=0))


def _int_in(mapping: dict, key: str, where: str, default):
    value = mapping.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}.{key}", f"must be an integer >= 0, got {value!r} ({_type_name(value)})")
    return value


# -- running -------------------------------------------------------------------------------------

def read_task(args) -> TaskSpec:
    """YAML + --options + flags -> validated TaskSpec (no MindSpore imported)."""
    task = load_task_yaml(args.config) if getattr(args, "config", None) else {}
    for line in apply_auto_register(task, getattr(args, "register_path", None)):
        print(f"auto_register {line}", file=sys.stderr)
    as_given = copy.deepcopy(task)
    apply_options(task, getattr(args, "options", None))
    apply_flags(task, args)
    preset = getattr(args, "model", None)
    if not task and not preset:
        raise ConfigError("--config", "give a task YAML (--config task.yaml) or a preset (--model NAME)")
    spec = validate_task(task, preset)
    check_options(as_given, task, getattr(args, "options", None), lambda copy_: validate_task(copy_, preset))
    return spec
