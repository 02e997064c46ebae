"""What each run mode does with a validated TaskSpec: build the model and data, train, evaluate, generate.

train      model from model_config (random init, the seed decides) or load_checkpoint; full training.
finetune   model from load_checkpoint (or a tiny preset); LoRA when model_config has pet_config.
eval       loss and perplexity of load_checkpoint on eval_dataset.
predict    generate from --predict_data prompts, streaming the text as it comes.

After training, the final weights go to output_dir/model (or output_dir/adapter for LoRA, plus the
merged model in output_dir/model with `merge_lora: true`), with the tokenizer when one is known, so
`mfcore run --run_mode predict --load_checkpoint output_dir/model` picks them up.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Mapping, Optional

from mfcore.utils.atomic import atomic_directory, atomic_write_text
from mfcore.utils.locking import output_lock
from mfcore.errors import CheckpointError, ConfigError, MfcoreError
from mfcore.generation.streamers import TextStreamer
from .spec import TaskSpec, read_task


def run_task(args, spec: Optional[TaskSpec] = None) -> int:
    """`mfcore run`: read and validate the task (unless given: see mfcore.tasks.preflight), set MindSpore up
    once, run the mode it names."""
    spec = spec or read_task(args)
    from mfcore.utils import runtime

    context = spec.context
    runtime.setup(device_target=context.get("device_target"), mode=context.get("mode"),
                  device_id=context.get("device_id"), seed=spec.seed)
    return run(spec)


def run(spec: TaskSpec) -> int:
    from mfcore.training.parallel import setup_parallel

    parallel = setup_parallel(spec.parallel)
    if spec.run_mode in ("train", "finetune"):
        # One training per output_dir (per rank): two would replace each other's checkpoints and metrics.
        with output_lock(spec.output_dir, name=f"train.rank_{parallel.rank}"):
            return run_train(spec, parallel)
    if spec.run_mode == "eval":
        return run_eval(spec)
    return run_predict(spec)


# -- config, model, tokenizer ----------------------------------------------------------------------

def _prefixed(exc: ConfigError, prefix: str) -> ConfigError:
    message = str(exc)
    field = str(exc.field)
    if message.startswith(f"{field}: "):
        message = message[len(field) + 2:]
    return ConfigError(f"{prefix}.{field}", message)


def build_config(spec: TaskSpec, base_dir: Optional[Path] = None):
    """The model config: YAML model_config on top of a preset / checkpoint config.json, if any."""
    from mfcore.models.auto import AutoConfig, config_class_for, load_config_dict

    overrides = dict(spec.model_config or {})
    overrides.pop("type", None)
    try:
        if base_dir is not None and (base_dir / "config.json").exists():
            data = load_config_dict(base_dir)
            return config_class_for(data, str(base_dir)).from_dict(data, **overrides)
        if spec.preset:
            return AutoConfig.from_pretrained(spec.preset, **overrides)
        data = dict(spec.model_config)
        return config_class_for(data, "model.model_config").from_dict(data)
    except ConfigError as exc:
        if str(exc.field).startswith(("model.", "/", ".")) or "/" in str(exc.field):
            raise
        raise _prefixed(exc, "model.model_config") from exc


def _checkpoint_path(spec: TaskSpec) -> Optional[Path]:
    named = (spec.model_config or {}).get("checkpoint_name_or_path")
    if not spec.load_checkpoint and named and spec.run_mode != "train":
        # MindFormers loads model_config.checkpoint_name_or_path when load_checkpoint is empty: a path, or a
        # model name (here: a preset whose weights were converted into $MFCORE_HOME/models)
        from mfcore.models.auto import installed_weights
        from mfcore.plugins.manager import get_plugins

        if Path(named).exists():
            return Path(named)
        try:
            preset = get_plugins().preset(str(named)).name
        except MfcoreError as exc:
            raise ConfigError("model.model_config.checkpoint_name_or_path", f"{named!r}: not a path, and {exc}") \
                from exc
        weights = installed_weights(preset)
        if weights is None:
            raise ConfigError("model.model_config.checkpoint_name_or_path",
                              f"{named!r} names preset {preset!r}, whose weights are not installed; convert them "
                              f"with `mfcore convert SRC $MFCORE_HOME/models/{preset}` or set load_checkpoint")
        return weights
    if not spec.load_checkpoint:
        # a preset's weights converted into $MFCORE_HOME/models/<preset> (see mfcore.auto.installed_weights)
        from mfcore.models.auto import installed_weights

        return installed_weights(spec.preset) if spec.preset else None
    path = Path(spec.load_checkpoint)
    if not path.exists():
        raise ConfigError("load_checkpoint", f"{path}: no such file or directory")
    return path


def check_arch(spec: TaskSpec, model) -> None:
    """model.arch.type (MindFormers' network class) must name the class that was built."""
    if spec.arch and spec.arch != type(model).__name__:
        raise ConfigError("model.arch.type", f"{spec.arch!r}, but the config builds {type(model).__name__} "
                                             f"(model_type {getattr(model.config, 'model_type', '?')!r}); name that "
                                             "class, or register a plugin that provides this one")


def load_model(spec: TaskSpec, allow_random: bool):
    """(model, where its weights came from), checked against model.arch.type."""
    model, source = _load_model(spec, allow_random)
    check_arch(spec, model)
    return model, source


def _load_model(spec: TaskSpec, allow_random: bool):
    from mfcore.models.auto import AutoModelForCausalLM
    from mfcore.training.lora import LoraConfig, inject_lora, is_adapter_dir, load_adapter, read_adapter_config
    from mfcore.training.prefix import (PET_TYPES as PREFIX_TYPES, inject_prefix, load_prefix_adapter,
                                        prefix_config_from_adapter)

    path = _checkpoint_path(spec)
    if spec.pet_config is not None and spec.run_mode in ("predict", "eval") and \
            not (path is not None and path.is_dir() and is_adapter_dir(path)):
        raise ConfigError("model.model_config.pet_config",
                          f"{spec.pet_config.get('pet_type', 'lora')}: run_mode {spec.run_mode} with a pet_config "
                          f"needs the trained adapter; set load_checkpoint to the adapter directory the finetune "
                          f"wrote (output_dir/adapter), not {path}")
    if path is not None and path.is_dir() and is_adapter_dir(path):
        info = read_adapter_config(path)
        base = info.get("base_model")
        if not base:
            raise CheckpointError(f"{path}: adapter_config.json names no base_model; pass the base weights")
        base_spec = TaskSpec(run_mode=spec.run_mode, task=spec.task, preset=None if Path(base).exists() else base,
                             model_config=spec.model_config, load_checkpoint=base if Path(base).exists() else None)
        model, _ = load_model(base_spec, allow_random=True)
        pet_type = info.get("pet_type", "lora")
        if pet_type in PREFIX_TYPES:
            inject_prefix(model, prefix_config_from_adapter(info))
            load_prefix_adapter(model, path)
            return model, f"{base} + {pet_type} adapter {path}"
        fields = {k: info[k] for k in ("rank", "alpha", "dropout", "target_modules") if k in info}
        inject_lora(model, LoraConfig(**fields))
        load_adapter(model, path)
        return model, f"{base} + LoRA adapter {path}"
    if path is not None:
        directory = path if path.is_dir() else path.parent
        config = build_config(spec, directory) if (spec.model_config or spec.preset or
                                                   not (directory / "config.json").exists()) else None
        return AutoModelForCausalLM.from_pretrained(path, config=config), str(path)
    if spec.preset:
        config = build_config(spec)
        return AutoModelForCausalLM.from_pretrained(spec.preset, config=config), f"preset {spec.preset}"
    if not allow_random:
        raise ConfigError("load_checkpoint", f"missing; run_mode {spec.run_mode} needs trained weights: pass "
                                             "--load_checkpoint DIR (output_dir/model of a training run, or a "
                                             "directory made from Hugging Face / Meta weights with `mfcore convert`)")
    config = build_config(spec)
    return AutoModelForCausalLM.from_config(config), "random initialisation (seed %d)" % spec.seed


# processor.tokenizer keys that set how a tokenizer encodes (its files come from vocab_file or the weights)
TOKENIZER_SETTINGS = ("add_bos_token", "add_eos_token", "bos_token", "eos_token", "unk_token", "pad_token",
                      "model_max_length", "additional_special_tokens")


def _with_preset_chat_template(tokenizer, preset_name):
    """Hugging Face tokenizer files of a base model (Meta-Llama-3-8B's among them) load as a plain
    PreTrainedTokenizerFast with no chat template; the preset's tokenizer class knows the family's layout
    (Llama 3: header ids and <|eot_id|>), so chat takes that one instead of failing."""
    if getattr(tokenizer, "chat_template", None) or getattr(tokenizer, "default_chat_template", None) or not preset_name:
        return tokenizer
    from mfcore.models.configuration import preset_or_none
    from mfcore.plugins.manager import get_plugins

    preset = preset_or_none(preset_name)
    name = preset.tokenizer.get("type") if preset is not None and isinstance(preset.tokenizer, Mapping) else None
    entry = get_plugins().tokenizers.find_by_class_name(name) if name else None
    template = getattr(entry.load(), "default_chat_template", None) if entry is not None else None
    if template is not None:
        tokenizer.default_chat_template = template
    return tokenizer


def load_tokenizer(spec: TaskSpec, required: bool):
    """--tokenizer, else tokenizer files next to the weights, else processor.tokenizer, else the preset's."""
    from mfcore.models.auto import AutoTokenizer
    from mfcore.plugins.manager import get_plugins

    candidates = []
    if spec.tokenizer:
        return AutoTokenizer.from_pretrained(spec.tokenizer)
    path = _checkpoint_path(spec)
    if path is not None:
        directory = path if path.is_dir() else path.parent
        candidates.append(directory)
        adapter = directory / "adapter_config.json"
        if adapter.exists():
            base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model")
            if base and Path(base).is_dir():
                candidates.append(Path(base))
    # The YAML's processor.tokenizer settings (add_bos_token, pad_token, ...) apply to tokenizer files found
    # beside the weights too, as MindFormers builds its tokenizer from the YAML.
    settings = {key: value for key, value in (spec.tokenizer_spec or {}).items() if key in TOKENIZER_SETTINGS}
    for directory in candidates:
        if (directory / "tokenizer_config.json").exists():
            try:
                return _with_preset_chat_template(AutoTokenizer.from_pretrained(directory, **settings), spec.preset)
            except ConfigError as exc:
                raise _prefixed(exc, "processor.tokenizer") from exc
    if spec.tokenizer_spec:
        tokenizer_spec = dict(spec.tokenizer_spec)
        name = tokenizer_spec.pop("type", None)
        tokenizer_spec.pop("auto_register", None)
        if not name:
            raise ConfigError("processor.tokenizer.type", "missing; name the tokenizer class (e.g. LlamaTokenizer)")
        entry = get_plugins().tokenizers.find_by_class_name(name)
        if entry is None:
            raise ConfigError("processor.tokenizer.type", f"{name!r} is not a registered tokenizer")
        try:
            return entry.load()(**tokenizer_spec)
        except ConfigError as exc:
            raise _prefixed(exc, "processor.tokenizer") from exc
    if spec.preset:
        try:
            return AutoTokenizer.from_pretrained(spec.preset)
        except MfcoreError as exc:
            if required:
                raise ConfigError("--tokenizer", f"the preset's tokenizer cannot be loaded ({exc}); pass "
                                                 "--tokenizer DIR (a directory with the tokenizer files)") from exc
            return None
    if required:
        raise ConfigError("processor.tokenizer", "missing; predict needs a tokenizer: pass --tokenizer DIR, or "
                                                 "put tokenizer files next to the weights")
    return None


# -- train / finetune ----------------------------------------------------------------------------

def run_train(spec: TaskSpec, parallel) -> int:
    from mfcore.data.mindrecord import check_data_fits_model, read_mindrecord
    from mfcore.training.lora import LoraConfig, inject_lora, merge_lora, save_adapter
    from mfcore.training.prefix import PET_TYPES as PREFIX_TYPES, PrefixConfig, inject_prefix, save_prefix_adapter
    from mfcore.training.trainer import Trainer, check_compute_dtype

    check_compute_dtype(spec.training.compute_dtype)
    train_data = read_mindrecord(spec.train_data)
    eval_data = read_mindrecord(spec.eval_data) if spec.eval_data else None
    model, source = load_model(spec, allow_random=spec.run_mode == "train" or spec.preset is not None)
    check_data_fits_model(train_data, f"train_dataset {spec.train_data}", model.config)
    if eval_data is not None:
        check_data_fits_model(eval_data, f"eval_dataset {spec.eval_data}", model.config)
    if parallel.rank == 0:
        print(f"model: {source}; {len(train_data['input_ids'])} training sequences of "
              f"{train_data['input_ids'].shape[1]} tokens", file=sys.stderr)
    lora = prefix = None
    pet_type = str((spec.pet_config or {}).get("pet_type", "lora")).lower()
    if spec.pet_config is not None and pet_type in PREFIX_TYPES:
        prefix = PrefixConfig.from_dict(spec.pet_config)
        prefix.seed = spec.seed
        inject_prefix(model, prefix)
        if parallel.rank == 0:
            print(f"{prefix.pet_type}: {prefix.length} prefix tokens on {model.config.num_layers} layers",
                  file=sys.stderr)
    elif spec.pet_config is not None:
        lora = LoraConfig.from_dict(spec.pet_config)
        lora.seed = spec.seed
        wrapped = inject_lora(model, lora)
        if parallel.rank == 0:
            print(f"LoRA rank {lora.rank} alpha {lora.alpha} on {len(wrapped)} layers", file=sys.stderr)
    trainer = Trainer(model, spec.training, train_data, eval_data, parallel=parallel)
    result = trainer.train()
    stopped = spec.training.stop_at_step and trainer.step >= spec.training.stop_at_step and \
        trainer.step < trainer.total_steps()
    if parallel.rank == 0 and not stopped:
        out = Path(spec.output_dir)
        tokenizer = load_tokenizer(spec, required=False)
        base = str(Path(spec.load_checkpoint).resolve()) if spec.load_checkpoint else spec.preset
        if lora is not None:
            with atomic_directory(out / "adapter", overwrite=True) as tmp:
                save_adapter(model, tmp, base_model=base)
            result["adapter"] = str(out / "adapter")
            if spec.merge_lora:
                merge_lora(model)
        if prefix is not None:  # a prefix is not foldable into the weights: only the adapter is written
            if spec.merge_lora:
                raise ConfigError("merge_lora", f"a {prefix.pet_type} prefix cannot be merged into the weights")
            with atomic_directory(out / "adapter", overwrite=True) as tmp:
                save_prefix_adapter(model, tmp, base_model=base)
            result["adapter"] = str(out / "adapter")
        elif lora is None or spec.merge_lora:
            with atomic_directory(out / "model", overwrite=True) as tmp:
                model.save_pretrained(tmp)
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp)
            result["model"] = str(out / "model")
    print(json.dumps({"result": result, "rank": parallel.rank}, sort_keys=True))
    return 0


# -- eval ----------------------------------------------------------------------------------------

def run_eval(spec: TaskSpec) -> int:
    """Perplexity on eval_dataset (MindFormers' PerplexityMetric: loss and PPL), and/or the lm-eval tasks
    named under `lm_eval:`; eval_results.json (and lm_eval_results.json) in output_dir."""
    model, source = load_model(spec, allow_random=False)
    result = {"model": source}
    if spec.eval_data:
        from mfcore.data.mindrecord import read_mindrecord
        from mfcore.training.trainer import Trainer

        data = read_mindrecord(spec.eval_data)
        result.update(Trainer(model, spec.training, eval_data=data).evaluate())
        # MindFormers prints and returns its metric under the metric's class name
        result["PerplexityMetric"] = {"loss": result["eval_loss"], "PPL": result["eval_perplexity"]}
    if spec.lm_eval:
        result["lm_eval"] = _run_lm_eval(spec, model)
    atomic_write_text(Path(spec.output_dir) / "eval_results.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, sort_keys=True))
    return 0


def _run_lm_eval(spec: TaskSpec, model) -> dict:
    """The `lm_eval:` tasks on the task's model through the "mfcore" lm-eval backend; lm-eval's full results
    go to output_dir/lm_eval_results.json, the per-task metrics are returned."""
    from mfcore.evaluation.harness import evaluate_tasks, results_table, write_results
    from mfcore.evaluation.lm_eval_backend import MfcoreLM

    options = spec.lm_eval
    lm = MfcoreLM(pretrained=model, tokenizer=load_tokenizer(spec, required=True),
                  batch_size=options.get("batch_size"), max_length=options.get("max_length"),
                  max_gen_toks=options.get("max_gen_toks") or 256)
    results = evaluate_tasks(options["tasks"], lm=lm, include_path=options.get("include_path"),
                             num_fewshot=options.get("num_fewshot"), limit=options.get("limit"),
                             log_samples=bool(options.get("log_samples")), seed=spec.seed)
    print(results_table(results), file=sys.stderr)
    write_results(results, Path(spec.output_dir) / "lm_eval_results.json")
    return results["results"]


# -- predict -------------------------------------------------------------------------------------

def _new_tokens(row, prompt_width: int, model) -> list:
    """The generated ids of one output row: after the (left-padded) prompt width, up to the first EOS
    (a finished row is filled with padding while the others go on)."""
    new = [int(t) for t in row[prompt_width:]]
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
    for index, token in enumerate(new):
        if token in eos:
            return new[:index + 1]
    return new


def run_predict(spec: TaskSpec) -> int:
    model, source = load_model(spec, allow_random=False)
    tokenizer = load_tokenizer(spec, required=True)
    print(f"model: {source}", file=sys.stderr)
    results = []
    size = spec.predict_batch_size
    for begin in range(0, len(spec.predict_data), size):
        prompts = spec.predict_data[begin:begin + size]
        rows = [tokenizer.encode(prompt) for prompt in prompts]
        streamer = None
        if len(prompts) == 1:  # one prompt: stream its text as it is generated
            sys.stdout.write(prompts[0])
            sys.stdout.flush()
            streamer = TextStreamer(tokenizer)
        out = model.generate(rows, max_new_tokens=spec.max_new_tokens, do_sample=spec.do_sample,
                             streamer=streamer, seed=spec.seed, **spec.generation)
        width = max(len(ids) for ids in rows)  # generate left-pads prompts to the longest
        for prompt, row in zip(prompts, out):
            new = _new_tokens(row, width, model)
            text = tokenizer.decode(new, skip_special_tokens=True)
            if streamer is None:
                print(prompt + text)
            results.append({"prompt": prompt, "output_ids": new, "text": text})
    atomic_write_text(Path(spec.output_dir) / "predict_results.jsonl",
                      "".join(json.dumps(r) + "\n" for r in results))
    return 0
