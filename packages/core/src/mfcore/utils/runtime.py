"""One place that sets MindSpore up: device target, execution mode, seed.

Everything in mfcore that runs MindSpore calls `ensure_runtime()` first; a task YAML's `context` or the
CLI flags call `setup(...)` with explicit values before that. Calling `setup` again with the same values
is a no-op; MindSpore cannot change its device once chosen, so asking for another device is an error.

On CPU in PyNative mode MindSpore launches kernels asynchronously, and on a few cores that is 10x
slower than running them one after the other (see MINDSPORE-CPU.md), so we switch launch blocking on.
Compiled graphs on CPU run host-blocking (`MS_DEV_HOST_BLOCKING_RUN=1`, unless the environment already
sets it): otherwise MindSpore's actor thread spins beside the kernel threads and, on a few cores, a
training step takes 1.5-3x longer and varies 2x from step to step (benchmarks/RESULTS.md, "Train").
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Optional

from mfcore.errors import ConfigError

DEVICE_TARGETS = ("CPU", "Ascend", "GPU")
MODES = ("pynative", "graph")


@dataclass(frozen=True)
class RuntimeInfo:
    device_target: str
    mode: str
    device_id: Optional[int]
    launch_blocking: bool


_info: Optional[RuntimeInfo] = None
_lock = threading.Lock()


def _normalize_device(value) -> str:
    for name in DEVICE_TARGETS:
        if str(value).lower() == name.lower():
            return name
    raise ConfigError("context.device_target", f"unknown device {value!r}; use one of {', '.join(DEVICE_TARGETS)}")


def _normalize_mode(value) -> str:
    # MindFormers YAML writes mode as 0 (GRAPH_MODE) or 1 (PYNATIVE_MODE).
    aliases = {"0": "graph", "graph": "graph", "graph_mode": "graph",
               "1": "pynative", "pynative": "pynative", "pynative_mode": "pynative"}
    name = aliases.get(str(value).lower())
    if name is None:
        raise ConfigError("context.mode", f"unknown mode {value!r}; use 'pynative' (1) or 'graph' (0)")
    return name


def setup(device_target: Optional[str] = None, mode: Optional[str] = None, device_id: Optional[int] = None,
          seed: Optional[int] = None) -> RuntimeInfo:
    """Configure MindSpore once. Defaults: $MFCORE_DEVICE or CPU, PyNative (hot paths use `jit`)."""
    global _info
    import mindspore

    device = _normalize_device(device_target or os.environ.get("MFCORE_DEVICE", "CPU"))
    with _lock:
        if _info is not None and device != _info.device_target:
            raise ConfigError("context.device_target",
                              f"MindSpore already runs on {_info.device_target}; it cannot switch to {device} "
                              "in the same process (start a new process)")
        mode_name = _normalize_mode(mode) if mode is not None else (_info.mode if _info else "pynative")
        if _info is None or device_id not in (None, _info.device_id):
            device = _set_device(mindspore, device, device_id)
        if _info is None or mode_name != _info.mode:
            mindspore.set_context(mode=mindspore.GRAPH_MODE if mode_name == "graph" else mindspore.PYNATIVE_MODE)
        if device == "CPU":
            run_graphs_host_blocking()
            warn_about_compile_cache()
        blocking = bool(_info and _info.launch_blocking)
        if device == "CPU" and mode_name == "pynative" and not blocking:
            import mindspore.runtime

            mindspore.runtime.launch_blocking()
            blocking = True
        if seed is not None:
            mindspore.set_seed(int(seed))
        quiet_mindspore_noise()
        _info = RuntimeInfo(device, mode_name, device_id if device_id is not None else
                            (_info.device_id if _info else None), blocking)
        return _info


# MindSpore messages that tell a user nothing they can act on (mfcore compiles each graph once per
# shape bucket on purpose; deprecations are MindSpore's own internals): hidden unless MFCORE_DEBUG=1.
MINDSPORE_NOISE = ("has been compiled again", "is deprecated", "will be deprecated", "will be removed")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in MINDSPORE_NOISE)


def quiet_mindspore_noise() -> None:
    """Filter MINDSPORE_NOISE from MindSpore's Python logger and its deprecation warnings (idempotent)."""
    if os.environ.get("MFCORE_DEBUG"):
        return
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mindspore(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"mindspore(\.|$)")
    try:
        from mindspore import log as ms_log

        logger = ms_log._get_logger()  # private, but the one logger MindSpore's Python side writes to
    except Exception:  # another MindSpore version: nothing to filter
        return
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
        logger.addFilter(_DropNoise())


def run_graphs_host_blocking() -> None:
    """Compiled graphs run on the calling thread (CPU; see the module docstring). MindSpore reads the
    variable when it compiles a graph, so this must come before the first jit call; a value already in
    the environment (e.g. MS_DEV_HOST_BLOCKING_RUN=0) wins."""
    os.environ.setdefault("MS_DEV_HOST_BLOCKING_RUN", "1")


def warn_about_compile_cache() -> None:
    """MindSpore 2.10's compile cache (MS_COMPILER_CACHE_ENABLE=1) reloads a graph in a later process without
    binding the model's parameters to it: on CPU a tiny Llama then generated only id 0, silently
    (benchmarks/RESULTS.md, "Real size"). Say so before anything runs."""
    if os.environ.get("MS_COMPILER_CACHE_ENABLE", "0") not in ("", "0") and not _warned_compile_cache:
        globals()["_warned_compile_cache"] = True
        warnings.warn("MS_COMPILER_CACHE_ENABLE is set: with MindSpore 2.10 on CPU a graph reloaded from the "
                      "compile cache runs without the model's weights (mfcore measured all-zero generations); "
                      "unset it", UserWarning, stacklevel=3)


_warned_compile_cache = False


def _set_device(mindspore, device: str, device_id: Optional[int]) -> str:
    """Select the device; an accelerator this MindSpore build cannot load falls back to CPU, loudly.

    MindFormers task YAMLs say `device_target: Ascend`; running one unchanged on a CPU machine should
    work (slowly) rather than fail, as long as the user is told.
    """
    try:
        if device_id is None:
            mindspore.set_device(device)
        else:
            mindspore.set_device(device, device_id)
        return device
    except RuntimeError as exc:
        if device == "CPU" or "Unsupported device target" not in str(exc):
            raise
        warnings.warn(f"context.device_target: {device} is not available in this MindSpore installation "
                      f"({str(exc).splitlines()[0]}); running on CPU instead. Install MindSpore for {device} "
                      f"or set device_target: CPU to silence this.", UserWarning, stacklevel=3)
        mindspore.set_device("CPU")
        return "CPU"


def ensure_runtime() -> RuntimeInfo:
    """The current runtime, set up with defaults on first use."""
    return _info if _info is not None else setup()


def device_target() -> str:
    return ensure_runtime().device_target


def is_graph_mode() -> bool:
    return ensure_runtime().mode == "graph"


def supports_compute_dtype(dtype: str) -> bool:
    """bfloat16 kernels (MatMul, ...) do not exist on MindSpore's CPU backend; everything else does."""
    return not (dtype == "bfloat16" and device_target() == "CPU")
