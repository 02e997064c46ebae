"""mfcore.cpu_gemv: the decode step's matrix-vector kernel, against numpy in float64, and its fallbacks."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

from mfcore import cpu_gemv, runtime


@pytest.fixture
def fresh_state(monkeypatch):
    """Build the op again in this test (the module caches one per process)."""
    monkeypatch.setattr(cpu_gemv, "_state", {"op": None, "done": False, "status": "not built yet"})


def test_gemv_matches_numpy(fresh_state, tmp_path, monkeypatch):
    monkeypatch.setenv("MFCORE_HOME", str(tmp_path))
    runtime.ensure_runtime()
    op = cpu_gemv.gemv_op()
    if op is None:
        pytest.skip(f"kernel unavailable here: {cpu_gemv.status()}")
    assert cpu_gemv.status().startswith("on: ") and str(tmp_path) in cpu_gemv.status()

    @ms.jit
    def call(x, w):  # as models call it: inside a compiled graph
        return op(x, w)

    rng = np.random.default_rng(0)
    # K a multiple of 32, of 8 only, and neither (the vector loop, its tail, the scalar tail); 1 and 3 rows
    for rows, k, n in [(1, 256, 688), (1, 72, 5), (3, 67, 61), (1, 1, 1)]:
        x = rng.standard_normal((rows, k)).astype(np.float32)
        w = rng.standard_normal((n, k)).astype(np.float32)
        got = call(Tensor(x), Tensor(w)).asnumpy()
        assert got.shape == (rows, n) and got.dtype == np.float32
        np.testing.assert_allclose(got, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_switched_off_by_environment(fresh_state, monkeypatch):
    monkeypatch.setenv("MFCORE_CPU_KERNELS", "0")
    assert cpu_gemv.gemv_op() is None
    assert "MFCORE_CPU_KERNELS=0" in cpu_gemv.status()


def test_no_compiler_means_matmul(fresh_state, tmp_path, monkeypatch):
    monkeypatch.setenv("MFCORE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    runtime.ensure_runtime()
    assert cpu_gemv.gemv_op() is None
    assert "no C++ compiler" in cpu_gemv.status()
    assert not list(tmp_path.rglob("*.so"))


def test_a_failed_compile_leaves_no_library(fresh_state, tmp_path, monkeypatch):
    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++\n")
    monkeypatch.setenv("MFCORE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_gemv, "SOURCE", broken)
    runtime.ensure_runtime()
    if cpu_gemv.shutil.which("g++") is None:
        pytest.skip("no g++ here")
    assert cpu_gemv.gemv_op() is None
    assert "compiling" in cpu_gemv.status() and "failed" in cpu_gemv.status()
    assert not list((tmp_path / "kernels").rglob("*.so"))
