"""`mfcore chat --model PRESET | --load_checkpoint DIR`: a multi-turn conversation in the terminal.

Each turn is laid out with the tokenizer's chat template (Llama 3: header ids and <|eot_id|>), the
answer is streamed as it is generated and generation stops on the tokenizer's stop tokens. Lines come
from standard input, so `printf 'Hi\\nAnd then?\\n' | mfcore chat ...` works without a terminal. Lines
starting with / are commands (/reset, /help, /exit), never sent to the model; the conversation is kept
within the model's context (oldest exchanges dropped first), and a turn that fails is reported, not fatal.
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


COMMANDS = {"/reset": "forget the conversation (the system prompt stays)", "/help": "this list",
            "/exit": "end the chat (also /quit, exit, quit, an empty line or Ctrl-D)"}


def read_line(stream) -> Optional[str]:
    """The next input line without its newline, or None at end of input."""
    if stream.isatty():
        sys.stdout.write("\n> ")
        sys.stdout.flush()
    line = stream.readline()
    return None if not line else line.rstrip("\n")


def run_chat(args, stdin=None) -> int:
    from mfcore.utils import runtime
    from mfcore.tasks.spec import read_task
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
    try:  # a tokenizer without a chat template fails here, before the user types anything
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    except ValueError as exc:
        raise ConfigError("--tokenizer", f"{exc}. Chat needs a tokenizer with a chat template (chat_template in "
                                         "tokenizer_config.json, or a tokenizer plugin that has one); for plain "
                                         "completion use `mfcore run --predict_data TEXT`") from exc
    print(f"model: {source}. Type a message; /help lists the commands, an empty line or Ctrl-D ends.",
          file=sys.stderr)
    options = dict(max_new_tokens=args.max_new_tokens, eos_token_id=stop_ids(tokenizer), **sampling_kwargs(args))
    return chat_loop(model, tokenizer, stdin or sys.stdin, args.system, options)


def chat_loop(model, tokenizer, stream, system: Optional[str], options: dict) -> int:
    """Turns until end of input. Lines starting with / are commands, never sent to the model; a turn that
    fails (too long for the context, a bad setting) is reported and the chat goes on."""
    from mfcore.errors import MfcoreError
    from mfcore.generation.streamers import TextStreamer
    from mfcore.generation.validation import context_length

    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    context = context_length(getattr(model, "config", None))
    while True:
        text = read_line(stream)
        if text is None or not text.strip() or text.strip().lower() in EXIT_WORDS:
            return 0
        command = text.strip().lower()
        if command.startswith("/"):
            if command == "/reset":
                messages = list(start)
                print("(conversation cleared)", file=sys.stderr)
            elif command == "/help":
                print("\n".join(f"{name:<7} {what}" for name, what in COMMANDS.items()), file=sys.stderr)
            else:
                print(f"unknown command {text.strip()!r}; /help lists the commands", file=sys.stderr)
            continue
        trial = messages + [{"role": "user", "content": text}]  # becomes the conversation if the turn works
        prompt = list(tokenizer.apply_chat_template(trial, add_generation_prompt=True))
        # Keep within the context: drop the oldest exchanges first, then shorten the answer.
        while context and len(prompt) >= context and len(trial) > len(start) + 1:
            del trial[len(start):len(start) + 2]
            prompt = list(tokenizer.apply_chat_template(trial, add_generation_prompt=True))
        turn = dict(options)
        if context:
            turn["max_new_tokens"] = max(0, min(turn["max_new_tokens"], context - len(prompt)))
        try:
            if context and turn["max_new_tokens"] == 0:
                raise ConfigError("message", f"{len(prompt)} tokens do not leave room for an answer in this "
                                             f"model's context of {context} tokens; write a shorter message")
            out = model.generate([prompt], streamer=TextStreamer(tokenizer), **turn)
        except MfcoreError as exc:  # this turn did not happen; the conversation is as it was
            print(f"error: {exc}", file=sys.stderr)
            continue
        new = [int(t) for t in out[0][len(prompt):]]
        while new and new[-1] in options["eos_token_id"] + [model.generation_config.pad_token_id]:
            new.pop()  # the stop token (and padding after it) is not part of the answer
        messages = trial + [{"role": "assistant", "content": tokenizer.decode(new, skip_special_tokens=True)}]
