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


def assert_written_in_place(kernel, before, caches, after, out, written):
    """An in-place kernel given copies of `caches` (between the arrays `before` and `after`) returns `out` and
    leaves `written` in them: the graph runs on the given tensors' memory."""
    given = [Tensor(c.copy()) for c in caches]
    got = compiled(kernel)(*(Tensor(a) for a in before), *given, *(Tensor(a) for a in after)).asnumpy()
    np.testing.assert_array_equal(got, out)
    for tensor, expected in zip(given, written):
        np.testing.assert_array_equal(tensor.asnumpy(), expected)


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


def test_silu_mul_matches_numpy(kernels):
    rng = np.random.default_rng(4)
    gate, up = (rng.standard_normal((3, 5, 77)).astype(np.float32) * 4 for _ in range(2))
    # the ends of float32's exp range and beyond, in the vectorised part and in the scalar rest
    extremes = np.array([-300, -104, -89, -87.5, -30, -1e-20, 0, 1e-20, 30, 87.5, 88.5, 89, 104, 300], np.float32)
    gate[0, 0, :14] = extremes
    gate[2, 4, -7:] = extremes[::2]  # the last 3 of 1155 values take the scalar path
    got = compiled(kernels.silu_mul)(Tensor(gate), Tensor(up)).asnumpy()
    gate64 = gate.astype(np.float64)
    np.testing.assert_allclose(got, gate64 / (1 + np.exp(-gate64)) * up, rtol=1e-6, atol=1e-6)


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


def attention_reference(q, k, v, bias):
    """softmax(q k^T + bias) v in float64 per (row, kv group); q (B, G, R, S, D), k, v (B, G, T, D),
    bias (B|1, 1, 1, S, T). Rows that see no column are zeros (what the kernels define)."""
    q, k, v, bias = (a.astype(np.float64) for a in (q, k, v, bias))
    scores = np.einsum("bgrsd,bgtd->bgrst", q, k) + bias[:, 0, 0][:, None, None]
    seen = np.broadcast_to(bias[:, 0, 0][:, None, None] > -1e8, scores.shape)
    scores = np.where(seen, scores, -np.inf)
    top = np.max(np.where(seen, scores, -1e300), axis=-1, keepdims=True)
    weights = np.where(seen, np.exp(scores - top), 0.0)
    weights = weights / np.maximum(weights.sum(-1, keepdims=True), 1e-300)
    return np.einsum("bgrst,bgtd->bgrsd", weights, v)


def masked_bias(rng, batch, length, keys, past):
    """Causal over the cache from `past`, left padding per row, one row fully masked."""
    allowed = np.arange(keys)[None, :] <= (past + np.arange(length))[:, None]
    allowed = np.broadcast_to(allowed, (batch, length, keys)).copy()
    allowed[0, :, :3] = False  # row 0 left-padded by three slots
    allowed[-1, 0] = False  # a query that sees nothing
    return np.where(allowed, 0.0, -1e9).astype(np.float32)[:, None, None]


@pytest.mark.parametrize("dim", [64, 24])  # the vector loop, and its scalar tail
def test_prompt_attention_matches_numpy(kernels, dim):
    call = compiled(kernels.attention)
    rng = np.random.default_rng(1)
    batch, groups, reps, length, keys, past = 2, 2, 3, 5, 16, 4
    q = rng.standard_normal((batch, groups, reps, length, dim)).astype(np.float32)
    k, v = (rng.standard_normal((batch, groups, keys, dim)).astype(np.float32) for _ in range(2))
    bias = masked_bias(rng, batch, length, keys, past)
    got = call(Tensor(q), Tensor(k), Tensor(v), Tensor(bias)).asnumpy()
    expected = attention_reference(q, k, v, bias)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (got[-1, :, :, 0] == 0).all()  # the query that sees nothing
    # one bias for every row broadcasts
    shared = bias[1:]
    np.testing.assert_allclose(call(Tensor(q), Tensor(k), Tensor(v), Tensor(shared)).asnumpy(),
                               attention_reference(q, k, v, np.broadcast_to(shared, bias.shape)), rtol=1e-5, atol=1e-5)


def test_decode_attention_writes_the_slot_and_attends(kernels):
    call = compiled(kernels.decode_attention)
    rng = np.random.default_rng(2)
    batch, groups, reps, keys, dim, at = 3, 2, 4, 16, 64, 9
    q = rng.standard_normal((batch, groups, reps, dim)).astype(np.float32)
    k, v = (rng.standard_normal((batch, groups, dim)).astype(np.float32) for _ in range(2))
    k_cache, v_cache = (rng.standard_normal((batch, groups, keys, dim)).astype(np.float32) for _ in range(2))
    before = k_cache.copy()
    slot = np.zeros((1, 1, keys, 1), dtype=bool)
    slot[0, 0, at, 0] = True
    bias = masked_bias(rng, batch, 1, keys, at)[:, :, 0]  # (B, 1, 1, T)
    out, k_new, v_new = (t.asnumpy() for t in call(Tensor(q), Tensor(k), Tensor(v), Tensor(k_cache),
                                                    Tensor(v_cache), Tensor(bias), Tensor(slot)))
    expected_k, expected_v = k_cache.copy(), v_cache.copy()
    expected_k[:, :, at], expected_v[:, :, at] = k, v
    np.testing.assert_array_equal(k_new, expected_k)
    np.testing.assert_array_equal(v_new, expected_v)
    expected = attention_reference(q[:, :, :, None], expected_k, expected_v, bias[:, :, :, None])[:, :, :, 0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert (out[-1] == 0).all()  # the last row sees nothing
    # each row its own slot (continuous batching: rows at different positions)
    rows_slot = np.zeros((batch, 1, keys, 1), dtype=bool)
    rows_slot[np.arange(batch), 0, [2, 9, 15], 0] = True
    _, k_rows, _ = (t.asnumpy() for t in call(Tensor(q), Tensor(k), Tensor(v), Tensor(k_cache), Tensor(v_cache),
                                               Tensor(bias), Tensor(rows_slot)))
    expected_k = k_cache.copy()
    expected_k[np.arange(batch), :, [2, 9, 15]] = k
    np.testing.assert_array_equal(k_rows, expected_k)
    np.testing.assert_array_equal(k_cache, before)  # the input cache is not written in place
    # the first rows of a larger cache (a server's row bucket): those rows decode, the others are kept
    wide_k, wide_v = (np.concatenate((c, rng.standard_normal((2,) + c.shape[1:]).astype(np.float32))) for c in
                      (k_cache, v_cache))
    out_wide, k_wide, v_wide = (t.asnumpy() for t in call(Tensor(q), Tensor(k), Tensor(v), Tensor(wide_k),
                                                           Tensor(wide_v), Tensor(bias), Tensor(rows_slot)))
    np.testing.assert_array_equal(k_wide[:batch], expected_k)
    np.testing.assert_array_equal(k_wide[batch:], wide_k[batch:])
    np.testing.assert_array_equal(v_wide[batch:], wide_v[batch:])
    _, _, v_rows = (t.asnumpy() for t in call(Tensor(q), Tensor(k), Tensor(v), Tensor(k_cache), Tensor(v_cache),
                                               Tensor(bias), Tensor(rows_slot)))
    np.testing.assert_array_equal(v_wide[:batch], v_rows)
    out_rows = call(Tensor(q), Tensor(k), Tensor(v), Tensor(k_cache), Tensor(v_cache), Tensor(bias),
                    Tensor(rows_slot))[0].asnumpy()
    np.testing.assert_array_equal(out_wide, out_rows)
    assert_written_in_place(kernels.decode_attention_in_place, (q, k, v), (wide_k, wide_v), (bias, rows_slot),
                            out_rows, (k_wide, v_wide))


def test_cache_insert_copies_packed_columns_into_the_chosen_slots(kernels):
    rng = np.random.default_rng(5)
    packed = rng.standard_normal((1, 2, 24, 8)).astype(np.float32)
    cache = rng.standard_normal((4, 2, 10, 8)).astype(np.float32)
    columns = rng.integers(0, 24, (4, 10)).astype(np.int32)
    rows = np.array([False, True, False, True])
    got = compiled(kernels.cache_insert)(Tensor(packed), Tensor(cache), Tensor(columns), Tensor(rows)).asnumpy()
    expected = cache.copy()
    for b in np.flatnonzero(rows):
        expected[b] = packed[0][:, columns[b]]
    np.testing.assert_array_equal(got, expected)
    # in place: the given cache is written; rows come back (a graph needs an output)
    assert_written_in_place(kernels.cache_insert_in_place, (packed,), (cache,), (columns, rows), rows, (expected,))


@pytest.mark.parametrize("past,seen_keys", [(5, 16), (0, 4)])  # a chunk over the whole cache; a prompt
def test_cache_attention_writes_the_chunk_and_attends(kernels, past, seen_keys):
    call = compiled(kernels.cache_attention)
    rng = np.random.default_rng(3)
    batch, groups, reps, length, keys, dim = 2, 2, 2, 4, 16, 32
    q = rng.standard_normal((batch, groups, reps, length, dim)).astype(np.float32)
    k, v = (rng.standard_normal((batch, groups, length, dim)).astype(np.float32) for _ in range(2))
    k_cache, v_cache = (rng.standard_normal((batch, groups, keys, dim)).astype(np.float32) for _ in range(2))
    before = k_cache.copy()
    index = np.full(keys, length, dtype=np.int32)
    index[past:past + length] = np.arange(length)
    bias = masked_bias(rng, batch, length, seen_keys, past)
    out, k_new, v_new = (t.asnumpy() for t in call(Tensor(q), Tensor(k), Tensor(v), Tensor(k_cache),
                                                    Tensor(v_cache), Tensor(bias), Tensor(index)))
    expected_k, expected_v = k_cache.copy(), v_cache.copy()
    expected_k[:, :, past:past + length], expected_v[:, :, past:past + length] = k, v
    np.testing.assert_array_equal(k_new, expected_k)
    np.testing.assert_array_equal(v_new, expected_v)
    expected = attention_reference(q, expected_k[:, :, :seen_keys], expected_v[:, :, :seen_keys], bias)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert (out[-1, :, :, 0] == 0).all()  # the query that sees nothing
    np.testing.assert_array_equal(k_cache, before)
    assert_written_in_place(kernels.cache_attention_in_place, (q, k, v), (k_cache, v_cache), (bias, index), out,
                            (expected_k, expected_v))


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
