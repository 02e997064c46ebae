"""`--options a.b=value` keys that nothing reads: a typo (trainer.max_stepz) must not start a default run.

The task is validated once more on a copy whose mappings record every key mfcore asks for, present or
not (and which sections are read whole). An --options key that was not in the YAML and that mfcore never
asked for is refused when a key it does ask for is a close match ("did you mean trainer.max_steps?"),
and reported as ignored otherwise (MindFormers keys that only matter on Ascend are legitimate).
"""
from __future__ import annotations

import copy
import difflib
import sys
import warnings
from typing import Dict, Optional, Sequence, Set

from mfcore.errors import ConfigError


class _Recording(dict):
    """A dict that notes which keys are asked for (by [], get, in) and whether it was read whole."""

    def __init__(self, data: dict, path: str, asked: Dict[str, Set[str]], whole: Set[str]):
        super().__init__(data)
        self._path, self._asked, self._whole = path, asked, whole
        asked.setdefault(path, set())

    def _note(self, key):
        self._asked[self._path].add(str(key))

    def _wrap(self, key, value):
        if isinstance(value, dict) and not isinstance(value, _Recording):
            value = _Recording(value, f"{self._path}.{key}" if self._path else str(key), self._asked, self._whole)
            dict.__setitem__(self, key, value)
        return value

    def __getitem__(self, key):
        self._note(key)
        return self._wrap(key, dict.__getitem__(self, key))

    def get(self, key, default=None):
        self._note(key)
        return self._wrap(key, dict.__getitem__(self, key)) if dict.__contains__(self, key) else default

    def __contains__(self, key):
        self._note(key)
        return dict.__contains__(self, key)

    def _read_whole(self):
        self._whole.add(self._path)

    def __iter__(self):
        self._read_whole()
        return dict.__iter__(self)

    def items(self):
        self._read_whole()
        return dict.items(self)

    def keys(self):
        self._read_whole()
        return dict.keys(self)

    def values(self):
        self._read_whole()
        return dict.values(self)

    def copy(self):
        self._read_whole()
        return dict(self)


def _exists(task: dict, path: str) -> bool:
    node = task
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_options(task_before: dict, task: dict, options: Optional[Sequence[str]], validate) -> None:
    """Refuse --options keys that look like a misspelling of a key mfcore reads; note ones nothing reads.

    task_before: the task as the YAML gave it (before --options); task: with options and flags applied;
    validate(task_copy): the task validation to observe (its own errors are left to the real run)."""
    new_paths = []
    for option in options or ():
        path = option.partition("=")[0].strip()
        if path and not _exists(task_before, path):
            new_paths.append(path)
    if not new_paths:
        return
    asked: Dict[str, Set[str]] = {}
    whole: Set[str] = set()
    recording = _Recording(copy.deepcopy(task), "", asked, whole)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            validate(recording)
    except Exception:  # the real validation reports it
        return
    for path in new_paths:
        parent, _, leaf = path.rpartition(".")
        if leaf in asked.get(parent, ()) or any(path == w or path.startswith(w + ".") for w in whole if w):
            continue
        known = asked.get(parent, set()) | set(_section(task_before, parent))
        close = difflib.get_close_matches(leaf, sorted(known), n=1, cutoff=0.75)
        if close:
            suggestion = f"{parent}.{close[0]}" if parent else close[0]
            raise ConfigError(f"--options {path}", f"no such key; did you mean {suggestion}?")
        print(f"note: --options {path}: mfcore does not read this key; it changes nothing here", file=sys.stderr)


def _section(task: dict, path: str) -> dict:
    node = task
    for part in path.split(".") if path else ():
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}
