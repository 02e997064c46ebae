"""Atomic file output: write to a temporary name beside the target, then rename into place.

Temporary names are `.<target name>.<pid>.<random>.tmp[suffix]`: hidden, never taken for output, and
carrying the writer's pid, so that the next write of the same target removes what a killed run left
(`remove_stale_temporaries`: only names of this pattern, only of dead processes).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Union

PathLike = Union[str, os.PathLike]

_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp(\..*)?$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory: PathLike, target: Optional[str] = None,
                             recursive: bool = False) -> List[Path]:
    """Delete temporary files / directories of dead writers in `directory` (of `target` only, if given)."""
    directory = Path(directory)
    removed: List[Path] = []
    folders = [directory]
    while folders:
        folder = folders.pop()
        try:
            children = list(folder.iterdir())
        except OSError:
            continue
        for child in children:
            match = _TEMPORARY.match(child.name)
            if match and (target is None or match["target"] == target) and int(match["pid"]) != os.getpid() \
                    and not pid_alive(int(match["pid"])):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    _remove_quietly(child)
                removed.append(child)
            elif recursive and child.is_dir() and not child.is_symlink():
                folders.append(child)
    return removed


def _prefix(path: Path) -> str:
    """The temporary-name prefix for `path`; also clears stale temporaries of the same target."""
    remove_stale_temporaries(path.parent, target=path.name)
    return f".{path.name}.{os.getpid()}."


def temporary_directory(path: PathLike) -> Path:
    """An empty hidden directory beside `path`, named so that a later run can clean it up if this one dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, quota, read-only: say which file
        _remove_quietly(tmp)
        if exc.filename is None:
            raise OSError(exc.errno, f"{exc.strerror or exc} while writing", str(path)) from exc
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it is renamed to `path`, else removed.

    For writers that insist on a file name (mindspore.save_checkpoint, MindRecord, safetensors);
    `suffix` is appended for writers that also insist on the file's extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextmanager
def atomic_directory(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; on success it replaces `path` as a whole.

    On failure (or Ctrl-C) the temporary directory is removed and `path` is left untouched.
    """
    path = Path(path)
    if path.exists() and not overwrite and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty; remove it or pass overwrite")
    tmp = temporary_directory(path)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old.tmp")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
