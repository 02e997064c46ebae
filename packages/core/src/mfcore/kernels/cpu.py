"""Compiled CPU kernels run by MindSpore as AOT `Custom` ops: fused float32 decode kernels, and linear
layers on weights kept in bfloat16, float16 or int8.

Why: at one token per row a decode step is ~160 small kernels, and MindSpore 2.10's CPU MatMul on
one-row shapes takes about twice as long as torch's (benchmarks/RESULTS.md, "Generate"). csrc/
decode_kernels.cc has three plain loops (AVX2 dot products), compiled with the system's C++ compiler
once per machine:
- `gemv(x, W)`: x . W^T, each weight read once at close to memory speed;
- `rms_norm(x, weight, eps)`: Llama's RMSNorm in one kernel instead of five;
- `swiglu(x, W1, W3)`: silu(x . W1^T) * (x . W3^T), the MLP's gate and up projections, one kernel
  instead of five.

csrc/attention_kernels.cc has the prompt attention (`attention(q, k, v, bias)`): it skips the columns the
bias masks, so a prompt chunk pays for the cache slots it sees, not for the whole cache; and one decode
step's attention with its cache write (`decode_attention`): one kernel instead of five, and two cache-sized
buffers per step instead of ~6 (MindSpore's CPU runtime keeps every buffer of a compiled graph); and the same
for a prompt or prompt chunk (`cache_attention`: ~10 cache-sized buffers per layer fewer).

csrc/weight_kernels.cc serves models whose weights stay in their storage dtype (any row count: decode
streams each weight once, prompts run register tiles): `linear_bf16`, `linear_f16`, `linear_int8` (per
output channel scales) and `embed_bf16`; and for generation `linear_qkv_bf16` (q, k and v in one call),
`linear_pair_bf16` (the MLP's gate and up) and `swiglu_bf16` (the same with the activation in the same pass). A server packs its
bfloat16 weights once (`pack_bf16_blocks`, the `*_packed` kernels): blocks of 6 rows interleaved, as the tiles
read them. Without them MindSpore's CPU backend would upcast every 16-bit
weight to float32 on each call (it has no bfloat16 matmul), which at 8B does not fit in memory. Decode
rows keep float32 activations; prompts on CPUs with AVX512_BF16 round them to bfloat16 for vdpbf16ps
(bfloat16 and int8 weights, as llama.cpp and transformers' bfloat16 do), unless
MFCORE_FLOAT32_ACTIVATIONS=1.

The fused float32 kernels are used only where that is safe: MindSpore on CPU, float32, the decode path (models call them for
2-D single-row inputs, decided at trace time; training and prompts keep MindSpore's ops), forward only,
and only if the library compiled. Without a compiler, on other devices, or with MFCORE_CPU_KERNELS=0,
`decode_kernels()` returns None and models use MindSpore's ops; `status()` says why. The library goes to
$MFCORE_HOME/kernels/<hash of source, compiler and CPU>/ (written atomically), so a changed source,
compiler or CPU builds a new one.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from mfcore.utils.paths import mfcore_home

SOURCES = tuple(Path(__file__).with_name("csrc") / name
                for name in ("decode_kernels.cc", "weight_kernels.cc", "attention_kernels.cc"))
HEADERS = (Path(__file__).with_name("csrc") / "vector_exp.h",)  # part of the cache key, not compiled alone
# -march=native: the vector path (AVX-512, AVX2, or plain C++) is chosen for the CPU the library is built on;
# the cache key below holds the CPU's flags, so another CPU builds its own. OpenMP splits the weight kernels
# over the cores (passive waiting, see mfcore/__init__.py).
FLAGS = ("-O3", "-march=native", "-std=c++11", "-shared", "-fPIC", "-fopenmp")

_lock = threading.Lock()
_state = {"kernels": None, "done": False, "status": "not built yet", "native": None}


def status() -> str:
    """Why the kernels are or are not in use (for logs and bug reports)."""
    return _state["status"]


class DecodeKernels(NamedTuple):
    gemv: object      # (x (rows, K), W (N, K)) -> (rows, N)
    rms_norm: object  # (x (rows, H), weight (H,), eps (1,)) -> (rows, H)
    swiglu: object    # (x (rows, K), W1 (N, K), W3 (N, K)) -> (rows, N)
    silu_mul: object  # (gate (..., N), up (..., N)) -> silu(gate) * up
    # Weights in their storage dtype, float32 activations and sums (csrc/weight_kernels.cc), any row count:
    linear_bf16: object  # (x (rows, K) f32, W (N, K) bfloat16) -> (rows, N) f32
    linear_f16: object   # (x (rows, K) f32, W (N, K) float16) -> (rows, N) f32
    linear_int8: object  # (x (rows, K) f32, Wq (N, K) int8, scale (N,) f32) -> (rows, N) f32
    embed_bf16: object   # (ids (...) int32/int64, table (V, H) bfloat16) -> (..., H) f32
    # Several bfloat16 projections of one x in one call (one parallel region, x rounded once):
    linear_qkv_bf16: object  # (x (rows, K) f32, Wq (Nq, K), Wk (Nk, K), Wv (Nv, K)) -> (q, k, v) f32
    linear_pair_bf16: object  # (x (rows, K) f32, W1 (N1, K), W3 (N3, K)) -> (x W1^T, x W3^T) f32
    swiglu_bf16: object      # (x (rows, K) f32, W1 (N, K), W3 (N, K)) -> silu(x W1^T) * (x W3^T) (rows, N) f32
    # linear_bf16, linear_qkv_bf16 and linear_pair_bf16 on weights stored by pack_bf16_blocks (K a multiple of 32):
    linear_bf16_packed: object
    linear_qkv_bf16_packed: object
    linear_pair_bf16_packed: object
    has_bf16_dot: bool  # the library takes vdpbf16ps (AVX512_BF16): where packed weights pay off
    # Prompt attention skipping masked columns (csrc/attention_kernels.cc), float32:
    attention: object    # (q (B, G, R, S, D) scaled, k, v (B, G, T, D), bias (B|1, 1, 1, S, T)) -> like q
    # One decode step's attention with the cache write: (q (B, G, R, D) scaled, k, v (B, G, D), k_cache,
    # v_cache (B, G, T, D), bias (B, 1, 1, T), cache_slot (1, 1, T, 1) bool) -> (out like q, k_cache', v_cache')
    decode_attention: object
    # The same writing k and v into the given caches themselves -> out only (a server's caches, no copy a step)
    decode_attention_in_place: object
    # A prompt or prompt chunk written into the cache and attended: (q (B, G, R, S, D) scaled, k, v (B, G, S, D),
    # k_cache, v_cache (B, G, T, D), bias (B|1, 1, 1, S, Tb <= T), index (T,) int32: the token each slot takes,
    # S for none) -> (out like q, k_cache', v_cache')
    cache_attention: object
    # The same writing k and v into the given caches themselves -> out only (a server's packed prefill)
    cache_attention_in_place: object
    # Packed prompts into a server's slots: (packed (1, G, P, D), cache (B, G, T, D), columns (B, T) int32,
    # rows (B,) bool) -> the cache with row b's column j = packed column columns[b, j] where rows[b]
    cache_insert: object
    # The same writing the chosen rows of `cache` itself -> rows (B,) bool (a server's slot caches)
    cache_insert_in_place: object


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

    native = ctypes.CDLL(str(library))  # the library's plain C functions (pack_bf16_blocks)
    native.MfcorePackBf16Blocks.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    native.MfcorePackBf16Blocks.restype = None
    _state["native"] = native

    def custom(symbol, out_shape, out_dtype=lambda x, *weights: x):  # forward only: never differentiated
        return ops.Custom(f"{library}:{symbol}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot")

    def float32(*dtypes):
        return mindspore.float32

    def projection(x, w, *scale):
        return x[:-1] + [w[0]]

    def two_projections(x, w0, w1):
        return x[:-1] + [w0[0]], x[:-1] + [w1[0]]

    def three_projections(x, w0, w1, w2):
        return x[:-1] + [w0[0]], x[:-1] + [w1[0]], x[:-1] + [w2[0]]

    def two_float32(*dtypes):
        return mindspore.float32, mindspore.float32

    def three_float32(*dtypes):
        return mindspore.float32, mindspore.float32, mindspore.float32

    kernels = DecodeKernels(gemv=custom("MfcoreGemv", projection),
                            rms_norm=custom("MfcoreRmsNorm", lambda x, w, eps: x),
                            swiglu=custom("MfcoreSwiglu", lambda x, w1, w3: x[:-1] + [w1[0]]),
                            silu_mul=custom("MfcoreSiluMul", lambda gate, up: gate),
                            linear_bf16=custom("MfcoreLinearBf16", projection),
                            linear_f16=custom("MfcoreLinearF16", projection),
                            linear_int8=custom("MfcoreLinearInt8", projection),
                            embed_bf16=custom("MfcoreEmbedBf16", lambda ids, table: ids + [table[1]], float32),
                            linear_qkv_bf16=custom("MfcoreLinearsBf16", three_projections, three_float32),
                            linear_pair_bf16=custom("MfcoreLinearsBf16", two_projections, two_float32),
                            swiglu_bf16=custom("MfcoreSwigluBf16", lambda x, w1, w3: x[:-1] + [w1[0]], float32),
                            linear_bf16_packed=custom("MfcoreLinearBf16Packed", projection),
                            linear_qkv_bf16_packed=custom("MfcoreLinearsBf16Packed", three_projections,
                                                          three_float32),
                            linear_pair_bf16_packed=custom("MfcoreLinearsBf16Packed", two_projections, two_float32),
                            has_bf16_dot=bool(native.MfcoreHasBf16Dot()),
                            attention=custom("MfcoreAttention", lambda q, k, v, bias: q),
                            decode_attention=custom("MfcoreDecodeAttention",
                                                    lambda q, k, v, kc, vc, bias, slot: (q, kc, vc),
                                                    lambda q, k, v, kc, vc, bias, slot: (q, kc, vc)),
                            decode_attention_in_place=custom("MfcoreDecodeAttentionInPlace",
                                                             lambda q, k, v, kc, vc, bias, slot: q),
                            cache_attention=custom("MfcoreCacheAttention",
                                                   lambda q, k, v, kc, vc, bias, index: (q, kc, vc),
                                                   lambda q, k, v, kc, vc, bias, index: (q, kc, vc)),
                            cache_attention_in_place=custom("MfcoreCacheAttentionInPlace",
                                                            lambda q, k, v, kc, vc, bias, index: q),
                            cache_insert=custom("MfcoreCacheInsert", lambda packed, cache, columns, rows: cache),
                            cache_insert_in_place=custom("MfcoreCacheInsertInPlace",
                                                         lambda packed, cache, columns, rows: rows,
                                                         lambda packed, cache, columns, rows: rows))
    return kernels, f"on: {library}"


PACKED_ROWS = 6  # rows per block of a packed weight: the vdpbf16ps tile's weight rows (csrc/weight_kernels.cc)


def pack_bf16_blocks(bits: np.ndarray, native_ok: bool = True) -> np.ndarray:
    """A bfloat16 weight (N, K) as its uint16 bits -> the same shape with each whole block of PACKED_ROWS rows
    stored interleaved, the rows taking turns 32 values at a time (a last, partial block stays as it is): the
    layout the prompt tiles otherwise copy each block into, so that no tile copies and a decode step's tiles
    read one run of memory per block (MfcoreLinearBf16Packed). K must be a multiple of 32. The compiled
    library does the copy where it is loaded (native_ok=False: numpy's, the reference the tests hold it to)."""
    rows, k = bits.shape
    if k % 32:
        raise ValueError(f"a packed weight needs K a multiple of 32, got {bits.shape}")
    bits = np.ascontiguousarray(bits, dtype=np.uint16)
    packed = np.empty_like(bits)
    native = _state["native"] if native_ok else None
    if native is not None:  # the same copy in C, on every core
        native.MfcorePackBf16Blocks(bits.ctypes.data, packed.ctypes.data, rows, k)
        return packed
    whole = rows // PACKED_ROWS * PACKED_ROWS
    packed[whole:] = bits[whole:]
    packed[:whole] = (bits[:whole].reshape(whole // PACKED_ROWS, PACKED_ROWS, k // 32, 32)
                      .transpose(0, 2, 1, 3).reshape(whole, k))
    return packed


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
    source = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
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
            result = subprocess.run([compiler, *FLAGS, *map(str, SOURCES), "-o", temporary], capture_output=True,
                                    text=True, timeout=120)
            if result.returncode != 0:
                return None, f"off: compiling {', '.join(p.name for p in SOURCES)} failed: {result.stderr.strip()[-500:]}"
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
