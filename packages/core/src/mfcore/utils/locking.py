"""A lock file on an output directory: two runs must not write the same checkpoints and metrics.

`output_lock(dir)` creates `dir/.mfcore-<name>.lock` exclusively, holding the owner's pid, host and
command. A second run finds the file, sees that the pid is alive and refuses with the owner named. A
lock whose process is gone (killed, machine rebooted) is stale: it is taken over, with a note, and the
stale temporary files of the dead run (see mfcore.utils.atomic) are removed.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from mfcore.errors import ConfigError

from .atomic import pid_alive, remove_stale_temporaries


def _read(lock: Path) -> Optional[dict]:
    try:
        return json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _stale(owner: Optional[dict]) -> bool:
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return True  # unreadable or half-written: nobody can be holding it meaningfully
    if owner.get("host") not in (None, socket.gethostname()):
        return False  # another machine on a shared disk: we cannot tell, so respect it
    return not pid_alive(owner["pid"])


@contextmanager
def output_lock(directory: os.PathLike, name: str = "run", field: str = "output_dir") -> Iterator[Path]:
    """Hold `directory/.mfcore-<name>.lock` for the duration of the block; ConfigError if another live run has it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / f".mfcore-{name}.lock"
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                         "command": " ".join(sys.argv)[:500]})
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read(lock)
            if not _stale(owner):
                started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
                raise ConfigError(field, f"{directory} is in use by another run (pid {owner['pid']} on "
                                         f"{owner.get('host')}, started {started}: {owner.get('command', '?')}); "
                                         f"wait for it to finish or choose another {field}. If that process no "
                                         f"longer exists, delete {lock}") from None
            print(f"note: removing the stale lock of a run that no longer exists ({lock}, "
                  f"pid {owner.get('pid') if isinstance(owner, dict) else '?'})", file=sys.stderr)
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(record)
        break
    else:
        raise ConfigError(field, f"could not take the lock {lock}; another run took it first")
    try:
        removed = remove_stale_temporaries(directory, recursive=True)
        if removed:
            print(f"note: removed {len(removed)} temporary file(s) left by an interrupted run in {directory}",
                  file=sys.stderr)
        yield lock
    finally:
        if (_read(lock) or {}).get("pid") == os.getpid():
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
