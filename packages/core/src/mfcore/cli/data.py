"""`mfcore data`: text / jsonl / wikitext / alpaca / chat files -> packed MindRecord sequences."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from mfcore.errors import ConfigError


def add_command(subparsers) -> None:
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
    p.set_defaults(func=run_data)


def load_tokenizer(name_or_path: str, tokenizer_type: Optional[str] = None):
    """A preset or tokenizer directory (AutoTokenizer), or a model file with its registered class name."""
    from mfcore.models.auto import AutoTokenizer

    if tokenizer_type:
        return AutoTokenizer.tokenizer_class(tokenizer_type).from_pretrained(name_or_path)
    if Path(name_or_path).is_file():
        raise ConfigError("--tokenizer", f"{name_or_path} is a file: say which tokenizer reads it with "
                                         "--tokenizer-type (e.g. LlamaTokenizer, Llama3Tokenizer), or pass a "
                                         "directory holding tokenizer_config.json")
    return AutoTokenizer.from_pretrained(name_or_path)


def run_data(args) -> int:
    """The `mfcore data` command (numpy and MindSpore load only when it runs)."""
    from mfcore.data.formats import list_datasets, resolve_format
    from mfcore.data.mindrecord import write_mindrecord
    from mfcore.data.packing import expand_inputs, pack_files

    if args.list:
        for name, kind, plugin, description in list_datasets():
            print(f"{name:<14} {kind:<9} {plugin:<10} {description}")
        return 0
    for flag in ("format", "input", "tokenizer", "seq_length", "output"):
        if not getattr(args, flag):
            raise ConfigError(f"--{flag.replace('_', '-')}", "is required (see `mfcore data --help`)")
    if Path(args.output).is_dir():
        raise ConfigError("--output", f"{args.output} is a directory; give a file name such as "
                                      f"{Path(args.output) / 'train.mindrecord'}")
    fmt = resolve_format(args.format, args.template)
    files = expand_inputs(args.input)
    tokenizer = load_tokenizer(args.tokenizer, args.tokenizer_type)
    sequences, stats = pack_files(fmt, files, tokenizer, args.seq_length, progress=not args.quiet)
    written = write_mindrecord(args.output, sequences, args.seq_length)
    print(f"wrote {args.output}: {written} sequences of {args.seq_length} tokens from {len(files)} file(s)")
    print(stats.summary())
    if args.stats_json:
        print(_json(dict(dataclasses.asdict(stats), files=len(files), output=str(args.output), seq_length=args.seq_length)))
    return 0


def _json(data) -> str:
    import json

    return json.dumps(data, sort_keys=True)
