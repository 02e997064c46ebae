"""`mfcore plugins [--json]`: installed plugins, what each registered, and broken ones with the error."""
from __future__ import annotations

import json

from mfcore.plugins.manager import get_plugins


def add_command(subparsers) -> None:
    p = subparsers.add_parser("plugins", help="list installed plugins, what each registered, and broken ones")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)


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
