"""An outside author's plugin, built into a wheel and installed into a fresh venv beside mfcore.

Also proves the design promise that discovery needs no MindSpore: the fresh venv has mfcore without
its heavy dependencies, and `mfcore plugins` / `mfcore models` still work there.
"""
import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

BROKEN_PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "mf-broken-example"
version = "0.0.1"
dependencies = ["mfcore"]

[project.entry-points.mfcore]
broken = "mf_broken.plugin"

[tool.hatch.build.targets.wheel]
packages = ["src/mf_broken"]
"""


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _build_wheel(source: Path, out: Path) -> Path:
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)])
    name = _project_name(source).replace("-", "_")
    return next(out.glob(f"{name}-*.whl"))


def _project_name(source: Path) -> str:
    import tomllib

    return tomllib.loads((source / "pyproject.toml").read_text())["project"]["name"]


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    pytest.importorskip("hatchling", reason="building wheels without isolation needs hatchling")
    root = tmp_path_factory.mktemp("thirdparty")
    wheels = root / "wheels"
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    core = _build_wheel(REPO_ROOT / "packages" / "core", wheels)
    toy = _build_wheel(REPO_ROOT / "examples" / "third-party-plugin", wheels)
    # mfcore without MindSpore (and its other heavy dependencies): discovery must not need them.
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(core), str(toy)])
    _run([str(python), "-m", "pip", "install", "-q", "pluggy", "pyyaml", "numpy<2", "pytest"])
    return root, python


def _mfcore(python, *args):
    env = {k: v for k, v in os.environ.items() if k != "MFCORE_PLUGINS"}
    return _run([str(python), "-m", "mfcore", *args], env=env)


def test_published_plugin_appears_in_plugins_and_models(fresh_venv):
    _, python = fresh_venv
    plugins = {p["name"]: p for p in json.loads(_mfcore(python, "plugins", "--json").stdout)}
    assert plugins["toy"]["distribution"] == "mf-example-toy" and plugins["toy"]["version"] == "0.1.0"
    assert plugins["toy"]["registered"] == {"configs": ["toy"], "presets": ["toy-7m"]}
    assert plugins["toy"]["ok"]
    models = _mfcore(python, "models").stdout
    assert "toy-7m" in models and "toy" in models.split()
    loaded = _run([str(python), "-c", "import mfcore, sys; c = mfcore.AutoConfig.from_pretrained('toy-7m'); "
                                      "print(type(c).__name__, c.hidden_size, c.num_layers, 'mindspore' in sys.modules)"])
    assert loaded.stdout.split() == ["ToyConfig", "96", "4", "False"]


def test_plugin_own_suite_passes_with_the_conformance_kit(fresh_venv):
    _, python = fresh_venv
    result = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   str(REPO_ROOT / "examples" / "third-party-plugin" / "tests")])
    assert "2 passed" in result.stdout


def test_broken_plugin_beside_it_is_reported_and_the_good_one_still_works(fresh_venv):
    root, python = fresh_venv
    source = root / "broken-src"
    (source / "src" / "mf_broken").mkdir(parents=True)
    (source / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (source / "src" / "mf_broken" / "__init__.py").write_text("")
    (source / "src" / "mf_broken" / "plugin.py").write_text(textwrap.dedent("""
        from mfcore import hookimpl
        import a_dependency_that_was_never_installed  # the bug this plugin ships with
    """))
    wheel = _build_wheel(source, root / "wheels")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)])

    plugins = {p["name"]: p for p in json.loads(_mfcore(python, "plugins", "--json").stdout)}
    assert plugins["toy"]["ok"]
    broken = plugins["broken"]
    assert not broken["ok"] and broken["distribution"] == "mf-broken-example" and broken["version"] == "0.0.1"
    assert "a_dependency_that_was_never_installed" in broken["errors"][0]
    text = _mfcore(python, "plugins").stdout
    assert "broken (mf-broken-example 0.0.1)  [BROKEN]" in text
    assert "toy-7m" in _mfcore(python, "models").stdout
