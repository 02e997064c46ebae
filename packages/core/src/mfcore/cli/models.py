"""`mfcore models [--json]`: model presets with their model type and plugin."""
from __future__ import annotations

import json

from mfcore.plugins.manager import get_plugins


def add_command(subparsers) -> None:
    p = subparsers.add_parser("models", help="list model presets with their model type and plugin")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    plugins = get_plugins()
    rows = []
    for entry in plugins.presets.entries():
        preset = entry.value
        if entry.name != preset.name:
            continue  # an alias; shown next to its preset
        rows.append({"name": preset.name, "model_type": preset.model_type, "plugin": entry.plugin,
                     "aliases": list(preset.aliases), "description": preset.description,
                     "ignored_duplicates": plugins.presets.ignored(preset.name)})
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
        ignored = r["ignored_duplicates"]
        also = f"  [also registered by {', '.join(ignored)}: ignored]" if ignored else ""
        print(f"{r['name']:<{width}}  {r['model_type']:<{type_width}}  {r['plugin']}{aliases}{also}")
    return 0
