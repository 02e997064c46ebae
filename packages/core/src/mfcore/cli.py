"""The `mfcore` command line (also `python -m mfcore`).

Built on argparse so `mfcore --help`, `mfcore plugins` and `mfcore models` never import MindSpore.
Plugins add subcommands through the `register_commands(cli)` hook, where `cli` is argparse's
subparsers object: `cli.add_parser("convert", help=...).set_defaults(func=run_convert)`.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .errors import MfcoreError
from .plugins import get_plugins


def both_spellings(flag: str) -> List[str]:
    """MindFormers spells flags with underscores; accept --kebab-case too."""
    names = [flag]
    if "_" in flag:
        names.append(flag.replace("_", "-"))
    return names


def cmd_plugins(args) -> int:
    plugins = get_plugins()
    infos = list(plugins.info.values())
    if args.json:
        print(json.dumps([info.to_dict() for info in infos], indent=2))
        return 0
    for info in infos:
        version = f" {info.version}" if info.version else ""
        dist = f" ({info.distribution}{version})" if info.distribution else ""
        print(f"{info.name}{dist}{'' if info.ok else '  [BROKEN]'}")
        for kind, names in info.registered.items():
            print(f"  {kind}: {', '.join(names)}")
        for error in info.errors:
            print(f"  error: {error}")
    return 0


def cmd_models(args) -> int:
    plugins = get_plugins()
    rows = []
    for entry in plugins.presets.entries():
        preset = entry.value
        if entry.name != preset.name:
            continue  # an alias; shown next to its preset
        rows.append({"name": preset.name, "model_type": preset.model_type, "plugin": entry.plugin,
                     "aliases": list(preset.aliases), "description": preset.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no presets registered; install a model plugin, e.g. `pip install mf-llama3`")
        return 0
    width = max(len(r["name"]) for r in rows)
    type_width = max(len(r["model_type"]) for r in rows)
    for r in rows:
        aliases = f"  (aliases: {', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"{r['name']:<{width}}  {r['model_type']:<{type_width}}  {r['plugin']}{aliases}")
    return 0


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
    add(*both_spellings("--do_eval"), type=_bool)
    add(*both_spellings("--output_dir"))
    add(*both_spellings("--seed"), type=int)
    add(*both_spellings("--resume_training"), "--resume", dest="resume_training", nargs="?", const=True,
        type=_bool_or_path, help="continue from the newest checkpoint in output_dir (or from the one given)")
    add(*both_spellings("--use_parallel"), type=_bool)
    add(*both_spellings("--epochs"), type=int)
    add(*both_spellings("--batch_size"), type=int)
    add(*both_spellings("--gradient_accumulation_steps"), type=int)
    add(*both_spellings("--num_samples"), type=int)
    add(*both_spellings("--sink_mode"), type=_bool)
    add(*both_spellings("--do_sample"), type=_bool)
    add(*both_spellings("--max_new_tokens"), type=int)
    add("--temperature", type=float, help="sampling temperature (with --do_sample true)")
    add(*both_spellings("--top_k"), type=int)
    add(*both_spellings("--top_p"), type=float)
    add(*both_spellings("--repetition_penalty"), type=float)
    add(*both_spellings("--tokenizer"), help="tokenizer preset or directory")
    add(*both_spellings("--options"), nargs="+", help="override YAML keys: a.b.c=value")
    # Accepted for compatibility; they concern Ascend clusters and have no effect here.
    for flag in ("--src_strategy_path_or_dir", "--auto_trans_ckpt", "--transform_process_num",
                 "--only_save_strategy", "--strategy_load_checkpoint", "--profile", "--adapter_id",
                 "--trust_remote_code"):
        add(*both_spellings(flag), help=argparse.SUPPRESS)


def _bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _bool_or_path(text):
    try:
        return _bool(text)
    except argparse.ArgumentTypeError:
        return text


def add_data_command(subparsers) -> None:
    p = subparsers.add_parser(
        "data", help="tokenize text / jsonl / wikitext / alpaca / chat data into packed MindRecord sequences")
    p.add_argument("--format", help="dataset format (see --list): text, jsonl, wikitext, alpaca, chat, ...")
    p.add_argument("--input", nargs="+", help="input file(s) or glob pattern(s), e.g. 'data/*.jsonl'")
    p.add_argument("--tokenizer", help="tokenizer preset (llama3-8b) or directory with tokenizer files")
    p.add_argument("--tokenizer-type", "--tokenizer_type", dest="tokenizer_type",
                   help="registered tokenizer class for a --tokenizer model file (e.g. LlamaTokenizer)")
    p.add_argument("--seq-length", "--seq_length", dest="seq_length", type=int, help="tokens per sequence")
    p.add_argument("--output", help="output file, e.g. train.mindrecord (its index goes to train.mindrecord.db)")
    p.add_argument("--template", help="chat template for --format chat (default: the tokenizer's own)")
    p.add_argument("--list", action="store_true", help="list the registered formats and templates")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--stats-json", action="store_true", help="also print the counts as one JSON line")
    p.set_defaults(func=_run_data)


def _run_data(args) -> int:
    from .data import run_data  # numpy and MindSpore load only when the command runs

    return run_data(args)


def cmd_run(args) -> int:
    from .task import run_task  # imported here: it brings MindSpore in

    return run_task(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfcore", description="Build, convert, train and serve LLMs on MindSpore. Model families "
                                   "are plugins: `pip install mf-llama3`, then `mfcore models`.")
    parser.add_argument("--version", action="version", version=f"mfcore {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", help="list installed plugins, what each registered, and broken ones")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("models", help="list model presets with their model type and plugin")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("run", help="run a task: train, finetune, eval or predict (MindFormers flags)")
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)

    add_data_command(sub)
    from .demo import add_demo_command

    add_demo_command(sub)
    from .chat import add_chat_command

    add_chat_command(sub)

    get_plugins().add_commands(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MfcoreError as exc:
        print(f"mfcore: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"mfcore: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mfcore: interrupted", file=sys.stderr)
        return 130
