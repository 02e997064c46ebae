"""Interrupted work leaves nothing behind that the next run keeps, and one output_dir has one run (issue 16)."""
import json
import os
import signal
import subprocess
import sys

import pytest

from mfcore.errors import ConfigError
from mfcore.utils.atomic import atomic_directory, atomic_write_text, remove_stale_temporaries
from mfcore.utils.locking import output_lock


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writer_leaves_only_hidden_temporaries_that_the_next_write_removes(tmp_path):
    # A real writer killed by SIGKILL half-way through writing a directory.
    script = (f"import time\nfrom mfcore.utils.atomic import atomic_directory\n"
              f"with atomic_directory({str(tmp_path / 'model')!r}) as tmp:\n"
              f"    (tmp / 'part.bin').write_bytes(b'x' * 1000)\n    print('writing', flush=True)\n"
              f"    time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model.") and leftovers[0].endswith(".tmp")
    assert not (tmp_path / "model").exists()  # nothing a later load could take for output
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "part.bin").write_bytes(b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    (tmp_path / f".metrics.json.{dead}.abc123.tmp").write_text("x")
    (tmp_path / f".metrics.json.{alive}.abc123.tmp").write_text("x")  # a live writer's: kept
    (tmp_path / "keep.tmp").write_text("x")                            # not our pattern: kept
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f".step_000010.{dead}.q1w2e3r4.tmp").mkdir()
    assert [p.name for p in remove_stale_temporaries(tmp_path, target="metrics.json")] == \
        [f".metrics.json.{dead}.abc123.tmp"]
    assert len(remove_stale_temporaries(tmp_path, recursive=True)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".metrics.json.{alive}.abc123.tmp", "keep.tmp", "sub"]
    atomic_write_text(tmp_path / "metrics.json", "{}")
    assert (tmp_path / "metrics.json").read_text() == "{}"


def test_an_output_dir_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    with output_lock(tmp_path, name="train"):
        # A second run in another process is refused with the owner named.
        code = (f"from mfcore.utils.locking import output_lock\n"
                f"with output_lock({str(tmp_path)!r}, name='train'):\n    pass\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert f"is in use by another run (pid {os.getpid()}" in result.stderr
    assert not (tmp_path / ".mfcore-train.lock").exists()  # released
    # A lock left by a process that no longer exists, and that run's temporaries.
    dead = _dead_pid()
    (tmp_path / ".mfcore-train.lock").write_text(json.dumps({"pid": dead, "started": 0}))
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / f".step_000030.{dead}.zzzzzzzz.tmp").mkdir()
    with output_lock(tmp_path, name="train"):
        assert json.loads((tmp_path / ".mfcore-train.lock").read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert "stale lock" in err and "removed 1 temporary" in err
    assert list((tmp_path / "checkpoint").iterdir()) == []


def test_the_training_runner_takes_the_lock():
    """run() wraps training in output_lock (a cheap check of the wiring; the lock is tested above)."""
    import inspect

    from mfcore.tasks import runner

    assert "output_lock(spec.output_dir" in inspect.getsource(runner.run)


def test_progress_is_line_based_off_a_terminal(monkeypatch):
    import io

    from mfcore.utils.progress import progress_bar

    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setenv("MFCORE_PROGRESS_INTERVAL", "0")
    bar = progress_bar(total=50, desc="training", unit="step")
    for _ in range(50):
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) >= 2 and all(line.startswith("training") for line in lines)
    assert "50/50" in lines[-1]
