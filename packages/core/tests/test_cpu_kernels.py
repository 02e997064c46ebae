"""mfcore.kernels.cpu: the decode step's fused CPU kernels against numpy in float64, and their fallbacks."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

from mfcore.kernels import cpu as cpu_kernels
from mfcore.utils import runtime


@pytest.fixture
def fresh_state(monkeypatch):
    """Build the kernels again in this test (the module keeps one set per process)."""
    monkeypatch.setattr(cpu_kernels, "_state", {"kernels": None, "done": False, "status": "not built yet"})


@pytest.fixture
def kernels(fresh_state, tmp_path, monkeypatch):
    monkeypatch.setenv("MFCORE_HOME", str(tmp_path))
    runtime.ensure_runtime()
    built = cpu_kernels.decode_kernels()
    if built is None:
        pytest.skip(f"kernels unavailable here: {cpu_kernels.status()}")
    assert cpu_kernels.status().startswith("on: ") and str(tmp_path) in cpu_kernels.status()
    return built


# K a multiple of 32, of 8 only, and neither (the vector loop, its tail, the scalar tail); 1 and 3 rows
SHAPES = [(1, 256, 688), (1, 72, 5), (3, 67, 61), (1, 1, 1)]


def compiled(op):
    @ms.jit
    def call(*args):  # as models call them: inside a compiled graph
        return op(*args)
    return call


def test_gemv_matches_numpy(kernels):
    call = compiled(kernels.gemv)
    rng = np.random.default_rng(0)
    for rows, k, n in SHAPES:
        x = rng.standard_normal((rows, k)).astype(np.float32)
        w = rng.standard_normal((n, k)).astype(np.float32)
        got = call(Tensor(x), Tensor(w)).asnumpy()
        assert got.shape == (rows, n) and got.dtype == np.float32
        np.testing.assert_allclose(got, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_swiglu_matches_numpy(kernels):
    call = compiled(kernels.swiglu)
    rng = np.random.default_rng(1)
    for rows, k, n in SHAPES:
        x = rng.standard_normal((rows, k)).astype(np.float32)
        w1, w3 = (rng.standard_normal((n, k)).astype(np.float32) for _ in range(2))
        gate, up = (x.astype(np.float64) @ w.T.astype(np.float64) for w in (w1, w3))
        got = call(Tensor(x), Tensor(w1), Tensor(w3)).asnumpy()
        assert got.shape == (rows, n)
        np.testing.assert_allclose(got, gate / (1 + np.exp(-gate)) * up, rtol=1e-4, atol=1e-4)


def test_rms_norm_matches_numpy(kernels):
    call = compiled(kernels.rms_norm)
    rng = np.random.default_rng(2)
    for rows, hidden, eps in [(1, 256, 1e-5), (3, 67, 1e-6), (1, 1, 1e-5)]:
        x = (rng.standard_normal((rows, hidden)) * 3).astype(np.float32)
        weight = rng.standard_normal(hidden).astype(np.float32)
        got = call(Tensor(x), Tensor(weight), Tensor([eps], ms.float32)).asnumpy()
        x64 = x.astype(np.float64)
        expected = weight * (x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + eps))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_switched_off_by_environment(fresh_state, monkeypatch):
    monkeypatch.setenv("MFCORE_CPU_KERNELS", "0")
    assert cpu_kernels.decode_kernels() is None
    assert "MFCORE_CPU_KERNELS=0" in cpu_kernels.status()


def test_no_compiler_means_mindspore_ops(fresh_state, tmp_path, monkeypatch):
    monkeypatch.setenv("MFCORE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    runtime.ensure_runtime()
    assert cpu_kernels.decode_kernels() is None
    assert "no C++ compiler" in cpu_kernels.status()
    assert not list(tmp_path.rglob("*.so"))


def test_a_failed_compile_leaves_no_library(fresh_state, tmp_path, monkeypatch):
    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++\n")
    monkeypatch.setenv("MFCORE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "SOURCES", (broken,))
    runtime.ensure_runtime()
    if cpu_kernels.shutil.which("g++") is None:
        pytest.skip("no g++ here")
    assert cpu_kernels.decode_kernels() is None
    assert "compiling" in cpu_kernels.status() and "failed" in cpu_kernels.status()
    assert not list((tmp_path / "kernels").rglob("*.so"))


def test_a_missing_source_never_stops_a_run(fresh_state, tmp_path, monkeypatch):
    monkeypatch.setenv("MFCORE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "SOURCES", (tmp_path / "gone.cc",))
    runtime.ensure_runtime()
    if cpu_kernels.shutil.which("g++") is None:
        pytest.skip("no g++ here")
    assert cpu_kernels.decode_kernels() is None
    assert cpu_kernels.status().startswith("off: ") and "gone.cc" in cpu_kernels.status()
