"""Argument helpers shared by the commands: MindFormers' flag spellings and boolean values."""
from __future__ import annotations

import argparse
from typing import List


def both_spellings(flag: str) -> List[str]:
    """MindFormers spells flags with underscores; accept --kebab-case too."""
    names = [flag]
    if "_" in flag:
        names.append(flag.replace("_", "-"))
    return names


def parse_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def bool_or_path(text):
    try:
        return parse_bool(text)
    except argparse.ArgumentTypeError:
        return text
