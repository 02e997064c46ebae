"""mfcore.utils.runtime: settings that would silently break a run are named before anything runs."""
import pytest

from mfcore.utils import runtime


def test_compile_cache_is_warned_about(monkeypatch):
    monkeypatch.setattr(runtime, "_warned_compile_cache", False)
    monkeypatch.setenv("MS_COMPILER_CACHE_ENABLE", "1")
    with pytest.warns(UserWarning, match="MS_COMPILER_CACHE_ENABLE"):
        runtime.warn_about_compile_cache()
    monkeypatch.setattr(runtime, "_warned_compile_cache", False)
    monkeypatch.setenv("MS_COMPILER_CACHE_ENABLE", "0")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runtime.warn_about_compile_cache()  # off: no warning
