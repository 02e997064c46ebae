"""mf-convert's plugin module: adds the `convert` subcommand to `mfcore`."""
from mfcore import hookimpl

FORMATS = ("hf", "meta", "mindformers")


@hookimpl
def register_commands(cli):
    parser = cli.add_parser(
        "convert", help="convert checkpoints between Hugging Face, Meta and MindFormers formats",
        description="Convert a checkpoint tensor by tensor (peak memory near the largest tensor), writing "
                    "DST atomically: it appears complete or not at all. Formats and model type are "
                    "detected when not given.")
    parser.add_argument("src", help="source checkpoint: a directory, or one weight file")
    parser.add_argument("dst", help="destination directory (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--from", dest="source_format", choices=FORMATS, help="source format (default: detected)")
    parser.add_argument("--to", dest="target_format", choices=FORMATS, default="mindformers",
                        help="target format (default: mindformers, mfcore's native MindSpore format)")
    parser.add_argument("--model-type", "--model_type", dest="model_type", help="e.g. llama (default: from the config)")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16", "float32", "float16", "bfloat16"],
                        help="cast floating point tensors (default: keep the source dtype)")
    parser.add_argument("--shard-size", "--shard_size", dest="shard_size", default="5GB",
                        help="largest safetensors file before splitting into shards (default 5GB)")
    parser.add_argument("--ms-format", "--ms_format", dest="ms_format", choices=["safetensors", "ckpt"],
                        default="safetensors", help="file type for --to mindformers (default safetensors)")
    parser.add_argument("--config", help="config.json or MindFormers YAML, when none lies beside the weights")
    parser.add_argument("--quantize", choices=["int8"], help="write linear weights as round-to-nearest int8 with "
                        "per-channel scales (native format), loaded as they are by from_pretrained")
    parser.add_argument("--qkv-concat", "--qkv_concat", dest="qkv_concat", nargs="?", const=True, default=None,
                        type=_true_false, metavar="true|false",
                        help="write MindFormers' fused w_qkv / w_gate_hidden (qkv_concat: True checkpoints; "
                             "--to mindformers) or, with false, the separate wq/wk/wv, w1/w3 (default: the "
                             "source's layout where the target has both; hf and meta are always separate)")
    parser.add_argument("--verify", action="store_true", help="re-read the output and compare every tensor")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=_run)


def _run(args):
    from .engine import convert

    result = convert(args.src, args.dst, source_format=args.source_format, target_format=args.target_format,
                     model_type=args.model_type, dtype=args.dtype, shard_size=args.shard_size, verify=args.verify,
                     config=args.config, ms_format=args.ms_format, overwrite=args.overwrite, progress=args.progress,
                     quantize=args.quantize, qkv_concat=args.qkv_concat)
    extra = f", tokenizer files: {', '.join(result.tokenizer_files)}" if result.tokenizer_files else ""
    print(f"{result.model_type} {result.source_format} -> {result.target_format}: {result.tensors} tensors, "
          f"{result.bytes_written / 1e6:.1f} MB in {result.seconds:.1f} s ({result.mb_per_s:.0f} MB/s)"
          f"{', verified' if result.verified else ''}; wrote {result.dst} ({', '.join(result.files)}{extra})")
    return 0


def _true_false(text: str) -> bool:
    """MindFormers' convert_weight.py spelling: --qkv_concat True / False."""
    value = {"true": True, "false": False}.get(text.lower())
    if value is None:
        import argparse

        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value
