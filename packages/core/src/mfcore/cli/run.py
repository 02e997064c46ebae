"""`mfcore run`: a task in MindFormers' YAML layout, with run_mindformer.py's flags (also --kebab-case)."""
from __future__ import annotations

import argparse

from .arguments import bool_or_path, both_spellings, parse_bool


def add_command(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a task: train, finetune, eval or predict (MindFormers flags)")
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from mfcore.tasks.preflight import preflight

    spec = preflight(args)  # every configuration problem at once, before MindSpore is imported
    from mfcore.tasks.runner import run_task  # imported here: it brings MindSpore in

    return run_task(args, spec)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of MindFormers' run_mindformer.py (plus --model for a preset)."""
    add = parser.add_argument
    add("--model", help="a preset name (see `mfcore models`); a preset alone is a complete task")
    add(*both_spellings("--config"), help="task YAML in MindFormers' layout")
    add(*both_spellings("--run_mode"), choices=["train", "finetune", "eval", "predict"])
    add(*both_spellings("--mode"), help="0 / graph or 1 / pynative")
    add(*both_spellings("--device_target"), choices=["CPU", "Ascend", "GPU"])
    add(*both_spellings("--device_id"), type=int)
    add(*both_spellings("--load_checkpoint"), help="checkpoint file or directory")
    add(*both_spellings("--register_path"), help="directory put on sys.path for auto_register classes")
    add(*both_spellings("--predict_data"), nargs="+", help="prompt(s) for run_mode predict")
    add(*both_spellings("--predict_batch_size"), type=int)
    add(*both_spellings("--train_dataset_dir"))
    add(*both_spellings("--eval_dataset_dir"))
    add(*both_spellings("--do_eval"), type=parse_bool)
    add(*both_spellings("--output_dir"))
    add(*both_spellings("--seed"), type=int)
    add(*both_spellings("--resume_training"), "--resume", dest="resume_training", nargs="?", const=True,
        type=bool_or_path, help="continue from the newest checkpoint in output_dir (or from the one given)")
    add(*both_spellings("--use_parallel"), type=parse_bool)
    add(*both_spellings("--epochs"), type=int)
    add(*both_spellings("--batch_size"), type=int)
    add(*both_spellings("--gradient_accumulation_steps"), type=int)
    add(*both_spellings("--num_samples"), type=int)
    add(*both_spellings("--sink_mode"), type=parse_bool)
    add(*both_spellings("--do_sample"), type=parse_bool)
    add(*both_spellings("--max_new_tokens"), type=int)
    add("--temperature", type=float, help="sampling temperature (with --do_sample true)")
    add(*both_spellings("--top_k"), type=int)
    add(*both_spellings("--top_p"), type=float)
    add(*both_spellings("--repetition_penalty"), type=float)
    add(*both_spellings("--tokenizer"), help="tokenizer preset or directory")
    add(*both_spellings("--options"), nargs="+", help="override YAML keys: a.b.c=value")
    # run_mindformer.py's flags for Ascend clusters: read, and refused with the reason when switched on
    # (mfcore.tasks.spec.REFUSED_WHEN_SET / REFUSED_FLAGS); --trust_remote_code is explained.
    for flag, kind in (("--src_strategy_path_or_dir", str), ("--auto_trans_ckpt", parse_bool),
                       ("--transform_process_num", int), ("--only_save_strategy", parse_bool),
                       ("--strategy_load_checkpoint", str), ("--profile", parse_bool), ("--adapter_id", str),
                       ("--trust_remote_code", parse_bool)):
        add(*both_spellings(flag), type=kind, help=argparse.SUPPRESS)
