"""Fixtures of mf-convert's tests; the helpers they use live in convert_helpers.py."""
import pytest


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
    """{variant name: (directory, transformers model)} for every variant in VARIANTS."""
    from convert_helpers import VARIANTS, make_hf_model  # skips when torch / transformers are absent

    root = tmp_path_factory.mktemp("hf")
    models = {}
    for i, (name, kv_heads, tied, shard) in enumerate(VARIANTS):
        models[name] = (root / name, make_hf_model(root / name, kv_heads, tied, shard, seed=i))
    return models


@pytest.fixture(scope="session")
def mindspore():
    """MindSpore, set up the way mfcore does it (the device must be chosen before any kernel runs)."""
    ms = pytest.importorskip("mindspore")
    from mfcore.utils.runtime import ensure_runtime

    ensure_runtime()
    return ms
