"""Task YAML: MindFormers layout read into a TaskSpec; bad values fail naming the key path; the command
line overrides the YAML."""
import argparse
from pathlib import Path

import pytest
import yaml

from mfcore.cli import build_parser, main
from mfcore.errors import ConfigError
from mfcore.tasks.spec import apply_flags, apply_options, read_task, validate_task

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

TRAIN = {
    "run_mode": "train", "output_dir": "out", "seed": 3,
    "runner_config": {"epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 2},
    "optimizer": {"type": "AdamW", "beta1": 0.9, "beta2": 0.98, "eps": 1e-6, "weight_decay": 0.1},
    "lr_schedule": {"type": "CosineWithWarmUpLR", "learning_rate": "3.e-4", "warmup_ratio": 0.1, "lr_end": 1e-5},
    "train_dataset": {"data_loader": {"type": "MindDataset", "dataset_dir": "train.mindrecord", "shuffle": False}},
    "callbacks": [{"type": "MFLossMonitor", "per_print_times": 5},
                  {"type": "CheckpointMonitor", "save_checkpoint_steps": 100, "keep_checkpoint_max": 4}],
    "runner_wrapper": {"type": "MFTrainOneStepCell", "use_clip_grad": True, "max_grad_norm": 0.5,
                       "scale_sense": {"type": "DynamicLossScaleUpdateCell", "loss_scale_value": 4096}},
    "model": {"model_config": {"type": "LlamaConfig", "num_layers": 2, "compute_dtype": "fp16"}},
}


def task(**changes):
    data = yaml.safe_load(yaml.safe_dump(TRAIN))
    for path, value in changes.items():
        node = data
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        if value is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return data


def test_mindformers_keys_become_training_arguments():
    spec = validate_task(task())
    args = spec.training
    assert spec.run_mode == "train" and spec.train_data == "train.mindrecord"
    assert (args.epochs, args.batch_size, args.gradient_accumulation_steps) == (2, 4, 2)
    assert (args.beta2, args.eps, args.weight_decay) == (0.98, 1e-6, 0.1)
    assert args.learning_rate == 3e-4 and args.warmup_ratio == 0.1 and args.lr_end == 1e-5
    assert (args.logging_steps, args.save_steps, args.keep_checkpoint_max) == (5, 100, 4)
    assert args.max_grad_norm == 0.5 and args.loss_scale == 4096 and args.compute_dtype == "float16"
    assert args.shuffle is False and args.seed == 3 and args.output_dir == "out"


@pytest.mark.parametrize("changes,key,message", [
    ({"run_mode": "serve"}, "run_mode", "must be one of train, finetune, eval, predict"),
    ({"run_mode": KeyError}, "run_mode", "missing"),
    ({"runner_config__batch_size": "four"}, "runner_config.batch_size", "must be an integer, got 'four'"),
    ({"runner_config__epochs": 0}, "runner_config.epochs", "must be >= 1"),
    ({"train_dataset__data_loader__dataset_dir": KeyError}, "train_dataset.data_loader.dataset_dir",
     "missing; it is required for run_mode train"),
    ({"model": KeyError}, "model.model_config", "missing"),
    ({"model__model_config__type": KeyError}, "model.model_config.type", "missing"),
    ({"lr_schedule__learning_rate": "fast"}, "lr_schedule.learning_rate", "must be a number"),
    ({"lr_schedule__type": "Wobble"}, "lr_schedule.type", "not supported"),
    ({"optimizer__type": "SGD"}, "optimizer.type", "not supported"),
    ({"seed": 1.5}, "seed", "must be an integer"),
    ({"do_eval": "yes"}, "do_eval", "must be true or false"),
    ({"callbacks": [{"type": "CheckpointMonitor", "save_checkpoint_steps": "often"}]},
     "callbacks[0].save_checkpoint_steps", "must be an integer"),
    ({"parallel_config": {"data_parallel": "2"}}, "parallel_config.data_parallel", "must be an integer"),
    ({"runner_config": [1, 2]}, "runner_config", "must be a mapping"),
])
def test_bad_values_name_the_key_path(changes, key, message):
    with pytest.raises(ConfigError) as info:
        validate_task(task(**changes))
    assert info.value.field == key
    assert message in str(info.value)


def test_eval_needs_data_and_finetune_needs_weights():
    with pytest.raises(ConfigError, match="eval_dataset.data_loader.dataset_dir: missing"):
        validate_task(task(run_mode="eval", load_checkpoint="w"))
    with pytest.raises(ConfigError, match="load_checkpoint: missing; run_mode finetune"):
        validate_task(task(run_mode="finetune"))
    with pytest.raises(ConfigError, match="predict_data: missing"):
        validate_task(task(run_mode="predict", load_checkpoint="w"))
    # LoRA in run_mode train is allowed (MindFormers' lora_llama2_13b.yaml says train); a prefix is not
    validate_task(task(model__model_config__pet_config={"lora_rank": 4}))
    with pytest.raises(ConfigError, match="pet_config.*finetune"):
        validate_task(task(model__model_config__pet_config={"pet_type": "prefixtuning"}))


def _args(argv):
    return build_parser().parse_args(["run", *argv])


def test_command_line_overrides_yaml(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task()))
    spec = read_task(_args(["--config", str(path), "--batch_size", "8", "--seed", "9", "--output-dir", "o2",
                            "--train_dataset_dir", "other.mindrecord", "--options", "optimizer.weight_decay=0.5",
                            "trainer.max_steps=7", "--epochs", "3"]))
    args = spec.training
    assert (args.batch_size, args.seed, args.output_dir, args.weight_decay, args.max_steps, args.epochs) == \
        (8, 9, "o2", 0.5, 7, 3)
    assert spec.train_data == "other.mindrecord"
    spec = read_task(_args(["--config", str(path), "--run_mode", "predict", "--load_checkpoint", "ckpt",
                            "--predict_data", "a", "b"]))
    assert spec.run_mode == "predict" and spec.predict_data == ["a", "b"] and spec.load_checkpoint == "ckpt"


def test_bad_option_syntax_and_unknown_run_mode_flag(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--options"):
        apply_options({}, ["no_equals_sign"])
    with pytest.raises(SystemExit):
        main(["run", "--run_mode", "serve"])
    assert "invalid choice: 'serve'" in capsys.readouterr().err


def test_cli_reports_the_key_path(tmp_path, capsys):
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task(runner_config__batch_size="four")))
    assert main(["run", "--config", str(path)]) == 2
    assert "runner_config.batch_size: must be an integer, got 'four' (str)" in capsys.readouterr().err


def test_a_preset_alone_is_a_predict_task():
    spec = validate_task(apply_and_return({}, ["--predict_data", "hi"]), preset="llama2-tiny")
    assert spec.run_mode == "predict" and spec.predict_data == ["hi"] and spec.model_config is None


def apply_and_return(data, argv):
    apply_flags(data, _args(argv))
    return data


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("llama*-tiny/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_tasks_validate(path):
    data = yaml.safe_load(path.read_text())
    if data["run_mode"] == "predict":
        data.setdefault("predict_data", "hi")
    spec = validate_task(data)
    assert spec.run_mode in ("train", "finetune", "predict")
    if spec.run_mode == "finetune":
        assert spec.pet_config and spec.load_checkpoint


def test_examples_exist():
    names = {f"{p.parent.name}/{p.name}" for p in EXAMPLES.glob("llama*-tiny/*.yaml")}
    assert {"llama2-tiny/pretrain.yaml", "llama2-tiny/finetune_alpaca.yaml", "llama2-tiny/predict.yaml",
            "llama3-tiny/pretrain.yaml", "llama3-tiny/finetune_alpaca.yaml", "llama3-tiny/predict.yaml"} <= names


def test_context_runtime_num_threads_sets_the_trainer_cpu_threads(tmp_path):
    from mfcore.tasks.spec import validate_task

    task = {"run_mode": "train", "context": {"runtime_num_threads": 1},
            "model": {"model_config": {"type": "LlamaConfig", "hidden_size": 64, "num_layers": 1, "num_heads": 4,
                                       "vocab_size": 128, "seq_length": 16}},
            "train_dataset": {"data_loader": {"dataset_dir": str(tmp_path / "x.mindrecord")}}}
    assert validate_task(task).training.cpu_threads == 1
    task["context"]["runtime_num_threads"] = -2
    with pytest.raises(ConfigError, match="^context.runtime_num_threads"):
        validate_task(task)
