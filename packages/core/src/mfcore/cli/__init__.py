"""The `mfcore` command line: `app` builds the parser from the command modules beside it, one module
per command (plugins, models, run, data, demo, chat, serve); plugins add theirs through `register_commands`."""
from .app import build_parser, main

__all__ = ["build_parser", "main"]
