"""MindFormers' escape hatch: auto_register in a task YAML + --register_path, for one run only."""
import sys

import pytest

import mfcore
from mfcore.tasks.auto_register import apply_auto_register, find_auto_register
from mfcore.errors import ConfigError, PluginError

OUT_OF_TREE = """
from mfcore import PretrainedConfig

class ResearchConfig(PretrainedConfig):
    model_type = "research"
    def __init__(self, depth=3, **kwargs):
        self.depth = depth
        super().__init__(**kwargs)

class NotAModelPiece:
    pass
"""


@pytest.fixture
def research_dir(tmp_path):
    (tmp_path / "research_model.py").write_text(OUT_OF_TREE)
    yield tmp_path
    sys.modules.pop("research_model", None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_finds_every_auto_register_key_with_its_path():
    task = {"model": {"model_config": {"auto_register": "a.B"}},
            "processor": {"tokenizer": {"auto_register": "c.D"}}, "callbacks": [{"auto_register": "e.F"}]}
    assert list(find_auto_register(task)) == [("model.model_config.auto_register", "a.B"),
                                              ("processor.tokenizer.auto_register", "c.D"),
                                              ("callbacks[0].auto_register", "e.F")]
    with pytest.raises(ConfigError, match="model.auto_register: must be 'module.ClassName'"):
        list(find_auto_register({"model": {"auto_register": "nodot"}}))


def test_registers_a_config_by_its_base_class_for_this_run_only(research_dir):
    task = {"model": {"model_config": {"type": "ResearchConfig", "auto_register": "research_model.ResearchConfig"}}}
    lines = apply_auto_register(task, register_path=str(research_dir))
    assert lines == ["model.model_config.auto_register: research_model.ResearchConfig -> configs"]
    config = mfcore.AutoConfig.for_model("research", depth=9)
    assert type(config).__name__ == "ResearchConfig" and config.depth == 9
    mfcore.reset_plugins()  # a new run: entry points only, the out-of-tree class is gone
    assert "research" not in mfcore.get_plugins().configs


def test_missing_register_path_is_explained(research_dir):
    with pytest.raises(PluginError, match="cannot import 'research_model_missing.X'.*--register_path"):
        apply_auto_register({"model": {"auto_register": "research_model_missing.X"}})


def test_class_of_unknown_kind_is_refused(research_dir):
    with pytest.raises(PluginError, match="not a subclass of PretrainedConfig"):
        apply_auto_register({"model": {"auto_register": "research_model.NotAModelPiece"}},
                            register_path=str(research_dir))


def test_register_path_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="--register_path"):
        apply_auto_register({}, register_path=str(tmp_path / "nope"))


def test_research_module_of_an_installed_class_falls_back_to_the_plugin(make_distribution):
    make_distribution("mf-good", "1.0", {"good": "mf_good_plugin2"}, {"mf_good_plugin2": """
from mfcore import PretrainedConfig, hookimpl
class GoodConfig(PretrainedConfig):
    model_type = "good"
@hookimpl
def register_configs(register):
    register("good", GoodConfig)
"""})
    lines = apply_auto_register({"model": {"model_config": {"auto_register": "good_research.GoodConfig"}}})
    # the original import error and the substitute are both shown
    assert lines == ["model.model_config.auto_register: good_research.GoodConfig not importable "
                     "(ModuleNotFoundError: no module 'good_research' (no --register_path given)); using GoodConfig from plugin "
                     "'good' instead (mf_good_plugin2:GoodConfig)"]


MARKER = """
import os
open(os.environ["MARKER_FILE"], "w").write("imported")
class Evil:
    pass
"""


@pytest.mark.parametrize("where", ["installed", "working directory", "outside register_path"])
def test_modules_outside_register_path_are_never_imported(tmp_path, monkeypatch, where):
    """A YAML cannot make mfcore run an installed module or a stray .py of the working directory (issue 16)."""
    monkeypatch.setenv("MARKER_FILE", str(tmp_path / "marker"))
    site, register = tmp_path / "site", tmp_path / "register"
    site.mkdir(), register.mkdir()
    (site / "evil_module.py").write_text(MARKER)
    if where == "working directory":
        monkeypatch.chdir(site)
        monkeypatch.syspath_prepend("")
    else:
        monkeypatch.syspath_prepend(str(site))  # importable, as an installed module is
    register_path = str(register) if where == "outside register_path" else None
    try:
        with pytest.raises(PluginError, match="cannot import 'evil_module.Evil'.*evil_module"):
            apply_auto_register({"model": {"auto_register": "evil_module.Evil"}}, register_path=register_path)
    finally:
        sys.modules.pop("evil_module", None)
        if register_path:
            sys.path.remove(str(register))
    assert not (tmp_path / "marker").exists()


def test_a_failing_register_path_module_is_named(tmp_path):
    (tmp_path / "broken_research.py").write_text("raise RuntimeError('boom')\n")
    try:
        with pytest.raises(PluginError, match="importing 'broken_research' from --register_path .* RuntimeError: boom"):
            apply_auto_register({"model": {"auto_register": "broken_research.X"}}, register_path=str(tmp_path))
    finally:
        sys.modules.pop("broken_research", None)
        sys.path.remove(str(tmp_path))
