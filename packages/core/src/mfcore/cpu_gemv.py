"""A matrix-vector product for the decode step on CPU: x (rows, K) . W (N, K)^T for a few rows.

Why: MindSpore 2.10's CPU MatMul on decode shapes (one or a few rows against a weight matrix) takes about
twice as long as torch's (benchmarks/RESULTS.md, "Generate"), and those products are most of a decode
step. A plain AVX2 dot-product loop (csrc/gemv.cc), compiled with the system's C++ compiler once per
machine and run by MindSpore as an AOT `Custom` op, reads each weight once at close to memory speed.

It is used only where it is safe: MindSpore on CPU, float32, 2-D inputs (the decode path; training and
prompts are 3-D and keep MatMul), and only if it compiled. Without a compiler, on other devices, or with
MFCORE_CPU_KERNELS=0, `gemv_op()` returns None and models use MatMul; `status()` says why. The library
goes to $MFCORE_HOME/kernels/<hash of source, compiler and CPU>/ (written atomically), so a changed
source, compiler or CPU builds a new one.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

SOURCE = Path(__file__).with_name("csrc") / "gemv.cc"
SYMBOL = "MfcoreGemv"
FLAGS = ("-O3", "-march=native", "-std=c++11", "-shared", "-fPIC")

_lock = threading.Lock()
_state = {"op": None, "done": False, "status": "not built yet"}


def status() -> str:
    """Why the kernel is or is not in use (for logs and bug reports)."""
    return _state["status"]


def gemv_op():
    """The MindSpore Custom op computing x . W^T for 2-D float32 x, or None where it cannot be used."""
    with _lock:
        if not _state["done"]:
            _state["op"], _state["status"] = _build_op()
            _state["done"] = True
        return _state["op"]


def _build_op():
    import mindspore
    from mindspore import mint, ops

    if os.environ.get("MFCORE_CPU_KERNELS", "1") == "0":
        return None, "off: MFCORE_CPU_KERNELS=0"
    if mindspore.get_context("device_target") != "CPU":
        return None, "off: not running on CPU"
    library, reason = _compiled_library()
    if library is None:
        return None, reason
    allowed = os.environ.get("MS_CUSTOM_AOT_WHITE_LIST")
    if allowed and not any(_is_under(library, Path(p)) for p in allowed.split(":") if p):
        return None, f"off: {library} is outside MS_CUSTOM_AOT_WHITE_LIST ({allowed})"

    def bprop(x, weight, out, dout):  # for completeness: the decode path never differentiates
        return mint.matmul(dout, weight), mint.matmul(dout.T, x)

    op = ops.Custom(f"{library}:{SYMBOL}", out_shape=lambda x, weight: x[:-1] + [weight[0]],
                    out_dtype=lambda x, weight: x, func_type="aot", bprop=bprop)
    return op, f"on: {library}"


def _is_under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.expanduser().resolve())
        return True
    except ValueError:
        return False


def _compiled_library():
    """(path of the shared library, status), compiling it once; (None, reason) when that is impossible."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        return None, "off: no C++ compiler (g++ or $CXX) on PATH"
    source = SOURCE.read_bytes()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"off: {compiler} --version failed ({exc})"
    key = hashlib.sha256(source + version.encode() + " ".join(FLAGS).encode() + _cpu_flags().encode()).hexdigest()[:16]
    folder = Path(os.environ.get("MFCORE_HOME", "~/.mfcore")).expanduser() / "kernels" / key
    library = folder / "mfcore_gemv.so"
    if library.is_file():
        return library, "cached"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Compile next to the target and rename: a concurrent or interrupted build never leaves half a file.
        handle, temporary = tempfile.mkstemp(prefix=".mfcore_gemv-", suffix=".so", dir=folder)
        os.close(handle)
        try:
            result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", temporary], capture_output=True,
                                    text=True, timeout=120)
            if result.returncode != 0:
                return None, f"off: compiling {SOURCE} failed: {result.stderr.strip()[-500:]}"
            os.replace(temporary, library)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"off: cannot build {library} ({exc})"
    return library, "built"


def _cpu_flags() -> str:
    """The CPU's feature flags (-march=native depends on them); empty where /proc/cpuinfo is absent."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""
