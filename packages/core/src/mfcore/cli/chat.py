"""`mfcore chat --model PRESET | --load_checkpoint DIR`: a multi-turn conversation in the terminal.

Each turn is laid out with the tokenizer's chat template (Llama 3: header ids and <|eot_id|>), the
answer is streamed as it is generated and generation stops on the tokenizer's stop tokens. Lines come
from standard input, so `printf 'Hi\\nAnd then?\\n' | mfcore chat ...` works without a terminal.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from mfcore.errors import ConfigError

EXIT_WORDS = {"exit", "quit", "/exit", "/quit"}


def add_command(subparsers) -> None:
    parser = subparsers.add_parser("chat", help="chat with a model (multi-turn, with its chat template)")
    parser.add_argument("--model", help="a preset (weights from $MFCORE_HOME/models/<preset>)")
    parser.add_argument("--config", help="task YAML (model and tokenizer sections are used)")
    parser.add_argument("--load_checkpoint", "--load-checkpoint", help="model directory")
    parser.add_argument("--tokenizer", help="tokenizer preset or directory (default: next to the weights)")
    parser.add_argument("--register_path", "--register-path", help="directory for auto_register classes")
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=256)
    add_sampling_arguments(parser)
    parser.set_defaults(func=run_chat)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Generation flags shared by `run` (predict) and `chat`; unset ones keep the model's defaults."""
    parser.add_argument("--do_sample", "--do-sample", type=lambda v: str(v).lower() in ("1", "true", "yes"))
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top_k", "--top-k", type=int)
    parser.add_argument("--top_p", "--top-p", type=float)
    parser.add_argument("--repetition_penalty", "--repetition-penalty", type=float)
    parser.add_argument("--seed", type=int)


def sampling_kwargs(args) -> dict:
    names = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "seed")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def stop_ids(tokenizer) -> List[int]:
    ids = getattr(tokenizer, "stop_token_ids", None) or [tokenizer.eos_token_id]
    return [int(i) for i in ids if i is not None]


def read_turns(stream) -> Optional[str]:
    """The next user message, or None at end of input / an exit word."""
    if stream.isatty():
        sys.stdout.write("\n> ")
        sys.stdout.flush()
    line = stream.readline()
    if not line or line.strip().lower() in EXIT_WORDS:
        return None
    return line.rstrip("\n")


def run_chat(args, stdin=None) -> int:
    from mfcore.utils import runtime
    from mfcore.tasks.spec import read_task
    from mfcore.generation.streamers import TextStreamer
    from mfcore.tasks.runner import load_model, load_tokenizer

    if not (args.model or args.config or args.load_checkpoint):
        raise ConfigError("--model", "give a preset (--model NAME) or weights (--load_checkpoint DIR)")
    run_args = argparse.Namespace(config=args.config, model=args.model, load_checkpoint=args.load_checkpoint,
                                  tokenizer=args.tokenizer, register_path=args.register_path, run_mode="predict",
                                  predict_data=["(chat)"])
    spec = read_task(run_args)
    runtime.setup(device_target=spec.context.get("device_target"), mode=spec.context.get("mode"))
    model, source = load_model(spec, allow_random=False)
    tokenizer = load_tokenizer(spec, required=True)
    stream = stdin or sys.stdin
    print(f"model: {source}. Type a message; an empty input, 'exit' or Ctrl-D ends.", file=sys.stderr)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    options = dict(max_new_tokens=args.max_new_tokens, eos_token_id=stop_ids(tokenizer), **sampling_kwargs(args))
    while True:
        text = read_turns(stream)
        if text is None or not text.strip():
            return 0
        messages.append({"role": "user", "content": text})
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        out = model.generate([list(prompt)], streamer=TextStreamer(tokenizer), **options)
        new = [int(t) for t in out[0][len(prompt):]]
        while new and new[-1] in options["eos_token_id"] + [model.generation_config.pad_token_id]:
            new.pop()  # the stop token (and padding after it) is not part of the answer
        messages.append({"role": "assistant", "content": tokenizer.decode(new, skip_special_tokens=True)})
