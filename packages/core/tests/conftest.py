"""Fixtures for core tests: installed-looking plugin distributions made on the fly."""
import sys
import textwrap

import pytest

import mfcore


@pytest.fixture
def make_distribution(tmp_path, monkeypatch):
    """Create a distribution (dist-info with entry points + its modules) on sys.path.

    importlib.metadata finds it exactly like a pip-installed one, so plugin discovery is tested
    through real entry points, not by calling hook functions directly.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created_modules = []

    def make(name, version="1.0", entry_points=None, modules=None):
        dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = ["[mfcore]"] + [f"{ep} = {target}" for ep, target in (entry_points or {}).items()]
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for module, source in (modules or {}).items():
            path = site / (module.replace(".", "/") + ".py")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
            created_modules.append(module)
        mfcore.reset_plugins()
        return dist_info

    yield make
    for module in created_modules:
        sys.modules.pop(module, None)
    mfcore.reset_plugins()


@pytest.fixture(autouse=True)
def fresh_plugins():
    mfcore.reset_plugins()
    yield
    mfcore.reset_plugins()
