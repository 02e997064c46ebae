"""Fused float32 kernels for the decode step on CPU, run by MindSpore as AOT `Custom` ops.

Why: at one token per row a decode step is ~160 small kernels, and MindSpore 2.10's CPU MatMul on
one-row shapes takes about twice as long as torch's (benchmarks/RESULTS.md, "Generate"). csrc/
decode_kernels.cc has three plain loops (AVX2 dot products), compiled with the system's C++ compiler
once per machine:
- `gemv(x, W)`: x . W^T, each weight read once at close to memory speed;
- `rms_norm(x, weight, eps)`: Llama's RMSNorm in one kernel instead of five;
- `swiglu(x, W1, W3)`: silu(x . W1^T) * (x . W3^T), the MLP's gate and up projections, one kernel
  instead of five.

They are used only where that is safe: MindSpore on CPU, float32, the decode path (models call them for
2-D single-row inputs, decided at trace time; training and prompts keep MindSpore's ops), forward only,
and only if the library compiled. Without a compiler, on other devices, or with MFCORE_CPU_KERNELS=0,
`decode_kernels()` returns None and models use MindSpore's ops; `status()` says why. The library goes to
$MFCORE_HOME/kernels/<hash of source, compiler and CPU>/ (written atomically), so a changed source,
compiler or CPU builds a new one.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple, Optional

from mfcore.utils.paths import mfcore_home

SOURCE = Path(__file__).with_name("csrc") / "decode_kernels.cc"
FLAGS = ("-O3", "-march=native", "-std=c++11", "-shared", "-fPIC")

_lock = threading.Lock()
_state = {"kernels": None, "done": False, "status": "not built yet"}


def status() -> str:
    """Why the kernels are or are not in use (for logs and bug reports)."""
    return _state["status"]


class DecodeKernels(NamedTuple):
    gemv: object      # (x (rows, K), W (N, K)) -> (rows, N)
    rms_norm: object  # (x (rows, H), weight (H,), eps (1,)) -> (rows, H)
    swiglu: object    # (x (rows, K), W1 (N, K), W3 (N, K)) -> (rows, N)


def decode_kernels() -> Optional[DecodeKernels]:
    """The Custom ops (built once per process), or None where they cannot be used."""
    with _lock:
        if not _state["done"]:
            try:
                _state["kernels"], _state["status"] = _build()
            except Exception as exc:  # noqa: BLE001 - an optional speed-up must never stop a run
                _state["kernels"], _state["status"] = None, f"off: {type(exc).__name__}: {exc}"
            _state["done"] = True
        return _state["kernels"]


def _build():
    import mindspore
    from mindspore import ops

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

    def custom(symbol, out_shape):  # forward only: the decode path is never differentiated
        return ops.Custom(f"{library}:{symbol}", out_shape=out_shape, out_dtype=lambda x, *weights: x,
                          func_type="aot")

    kernels = DecodeKernels(gemv=custom("MfcoreGemv", lambda x, w: x[:-1] + [w[0]]),
                            rms_norm=custom("MfcoreRmsNorm", lambda x, w, eps: x),
                            swiglu=custom("MfcoreSwiglu", lambda x, w1, w3: x[:-1] + [w1[0]]))
    return kernels, f"on: {library}"


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
    folder = mfcore_home() / "kernels" / key
    library = folder / "mfcore_decode_kernels.so"
    if library.is_file():
        return library, "cached"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Compile next to the target and rename: a concurrent or interrupted build never leaves half a file.
        handle, temporary = tempfile.mkstemp(prefix=".mfcore_decode_kernels-", suffix=".so", dir=folder)
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
