"""The `mfcore` command line (also `python -m mfcore`): one parser, built from the command modules.

Each command lives in its own module of mfcore.cli with `add_command(subparsers)`; plugins add theirs
through the `register_commands(cli)` hook, where `cli` is argparse's subparsers object:
`cli.add_parser("convert", help=...).set_defaults(func=run_convert)`. Building the parser imports
neither MindSpore nor numpy, so `mfcore --help`, `mfcore plugins` and `mfcore models` stay fast; a
command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import List, Optional

from mfcore.errors import MfcoreError
from mfcore.plugins.manager import get_plugins

from . import chat, data, demo, evaluate, models, plugins, run, serve

# In the order `mfcore --help` lists them; plugin commands follow.
COMMANDS = (plugins, models, run, evaluate, data, demo, chat, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfcore", description="Build, convert, train and serve LLMs on MindSpore. Model families "
                                   "are plugins: `pip install mf-llama3`, then `mfcore models`.")
    parser.add_argument("--version", action="version", version=f"mfcore {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_command(sub)
    get_plugins().add_commands(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mfcore")
    except PackageNotFoundError:
        return "unknown"


# Commands that first-party plugins add: without the plugin, say what to install (not "invalid choice").
PLUGIN_COMMANDS = {"convert": "mf-convert"}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if not w.startswith("-")), None)
    if command in PLUGIN_COMMANDS and command not in _subcommands(parser):
        print(f"mfcore: error: `mfcore {command}` comes from the plugin {PLUGIN_COMMANDS[command]}, which is not "
              f"installed: `pip install {PLUGIN_COMMANDS[command]}`", file=sys.stderr)
        return 2
    return run_command(parser, argv)


def _subcommands(parser: argparse.ArgumentParser) -> set:
    return {name for action in parser._subparsers._group_actions for name in action.choices} \
        if parser._subparsers else set()


def run_command(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> int:
    """Parse `argv` with `parser` and run the command; errors of ours print one line, not a traceback
    (exit status 2), unless MFCORE_DEBUG=1 asks for the traceback."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    # A command that runs other commands (the demo) gets this dispatcher instead of importing it.
    args.run_command = functools.partial(run_command, parser)
    try:
        return int(args.func(args) or 0)
    except (MfcoreError, OSError) as exc:  # bad input, missing / unwritable files, disk full: one line
        if os.environ.get("MFCORE_DEBUG"):
            raise  # MFCORE_DEBUG=1 shows the traceback
        print(f"mfcore: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mfcore: interrupted", file=sys.stderr)
        return 130
