"""Plugin discovery through entry points: isolation of broken plugins, MFCORE_PLUGINS, duplicates."""
import json
import subprocess
import sys

import pytest

import mfcore
import mfcore.cli
from mfcore.errors import DuplicateNameError, UnknownNameError
from mfcore.plugins.hookspecs import hookspec
from mfcore.plugins import hookspecs

GOOD_PLUGIN = """
from mfcore import PretrainedConfig, Preset, hookimpl

class GoodConfig(PretrainedConfig):
    model_type = "good"
    def __init__(self, width=8, **kwargs):
        self.width = width
        super().__init__(**kwargs)

@hookimpl
def register_configs(register):
    register("good", GoodConfig)

@hookimpl
def register_presets(register):
    register(Preset(name="good-small", model_type="good", config={"width": 4}, aliases=("gs",)))
"""


def test_every_hookspec_has_a_register_argument():
    specs = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert set(specs) == {"register_configs", "register_models", "register_tokenizers", "register_presets",
                          "register_converters", "register_datasets", "register_commands"}


def test_entry_point_plugin_is_discovered(make_distribution):
    make_distribution("mf-good", "2.3", {"good": "mf_good_plugin"}, {"mf_good_plugin": GOOD_PLUGIN})
    plugins = mfcore.get_plugins()
    info = plugins.info["good"]
    assert (info.distribution, info.version, info.ok) == ("mf-good", "2.3", True)
    assert info.registered == {"configs": ["good"], "presets": ["good-small", "gs"]}
    config = mfcore.AutoConfig.from_pretrained("good-small")
    assert type(config).__name__ == "GoodConfig" and config.width == 4
    assert mfcore.AutoConfig.from_pretrained("gs").width == 4


def test_import_error_is_recorded_and_others_still_load(make_distribution):
    make_distribution("mf-good", "1.0", {"good": "mf_good_plugin"}, {"mf_good_plugin": GOOD_PLUGIN})
    make_distribution("mf-broken", "0.1", {"broken": "mf_broken_plugin"},
                      {"mf_broken_plugin": "import not_a_module_anywhere_12345\n"})
    plugins = mfcore.get_plugins()
    broken = plugins.info["broken"]
    assert not broken.ok and broken.distribution == "mf-broken" and broken.version == "0.1"
    assert "ModuleNotFoundError" in broken.errors[0] and "not_a_module_anywhere_12345" in broken.errors[0]
    assert plugins.info["good"].ok
    assert "good-small" in plugins.presets


def test_hook_that_raises_is_recorded_and_its_partial_work_discarded(make_distribution):
    source = GOOD_PLUGIN.replace('register("good", GoodConfig)',
                                 'register("good", GoodConfig)\n    raise RuntimeError("boom in configs")')
    make_distribution("mf-half", "1.0", {"half": "mf_half_plugin"}, {"mf_half_plugin": source})
    plugins = mfcore.get_plugins()
    info = plugins.info["half"]
    assert any("register_configs raised RuntimeError: boom in configs" in e for e in info.errors)
    assert "good" not in plugins.configs          # nothing half-registered
    assert "good-small" in plugins.presets        # the plugin's other hooks still ran


def test_plugin_calling_sys_exit_does_not_stop_discovery(make_distribution):
    make_distribution("mf-exit", "1.0", {"exiter": "mf_exit_plugin"}, {"mf_exit_plugin": "raise SystemExit(3)\n"})
    make_distribution("mf-good", "1.0", {"good": "mf_good_plugin"}, {"mf_good_plugin": GOOD_PLUGIN})
    plugins = mfcore.get_plugins()
    assert "SystemExit" in plugins.info["exiter"].errors[0]
    assert plugins.info["good"].ok


def test_a_duplicate_name_keeps_the_first_registration_and_is_reported(make_distribution, capsys):
    """A second plugin registering 'good' / 'good-small' cannot take them over or disable them (issue 16)."""
    make_distribution("mf-good", "1.0", {"good": "mf_good_plugin"}, {"mf_good_plugin": GOOD_PLUGIN})
    make_distribution("mf-twin", "1.0", {"twin": "mf_twin_plugin"},
                      {"mf_twin_plugin": GOOD_PLUGIN.replace("GoodConfig", "TwinConfig")})
    plugins = mfcore.get_plugins()
    errors = plugins.info["twin"].errors
    assert any("'good'" in e and "'twin'" in e and "ignored" in e for e in errors)
    assert type(mfcore.AutoConfig.from_pretrained("good-small")).__name__ == "GoodConfig"  # the first one
    assert "plugin(s) 'twin' also registered it and were ignored" in capsys.readouterr().err
    assert mfcore.cli.main(["models"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("good-small"))
    assert "good" in line and "[also registered by twin: ignored]" in line
    mfcore.cli.main(["plugins"])
    assert "preset 'good-small' is already registered by plugin 'good'" in capsys.readouterr().out


def test_first_party_names_win_over_a_plugin_sorted_before_them(make_distribution, capsys):
    """An intruder named 'aaa' loads before 'llama2' alphabetically; the first-party plugins load first."""
    make_distribution("mf-aaa", "1.0", {"aaa": "mf_aaa_plugin"}, {"mf_aaa_plugin": """
from mfcore import PretrainedConfig, Preset, hookimpl
class IntruderConfig(PretrainedConfig):
    model_type = "llama"
@hookimpl
def register_configs(register):
    register("llama", IntruderConfig)
@hookimpl
def register_presets(register):
    register(Preset(name="llama2-tiny", model_type="llama", config={}))
"""})
    plugins = mfcore.get_plugins()
    if "llama2" not in plugins.info:
        pytest.skip("mf-llama2 is not installed")
    assert plugins.presets.entry("llama2-tiny").plugin == "llama2"
    assert plugins.configs.entry("llama").plugin == "llama2"
    assert plugins.converters.names()  # convert still has its weight maps
    assert "'aaa'" in capsys.readouterr().err


def test_mfcore_plugins_env_restricts_loading(make_distribution, monkeypatch):
    make_distribution("mf-good", "1.0", {"good": "mf_good_plugin"}, {"mf_good_plugin": GOOD_PLUGIN})
    make_distribution("mf-broken", "0.1", {"broken": "mf_broken_plugin"}, {"mf_broken_plugin": "1/0\n"})
    monkeypatch.setenv("MFCORE_PLUGINS", "good")
    mfcore.reset_plugins()
    assert set(mfcore.get_plugins().info) == {"mfcore", "good"}
    monkeypatch.setenv("MFCORE_PLUGINS", "")
    mfcore.reset_plugins()
    assert set(mfcore.get_plugins().info) == {"mfcore"}


def test_invalid_registrations_are_reported(make_distribution):
    source = """
from mfcore import hookimpl
@hookimpl
def register_presets(register):
    register({"name": "not-a-preset"})
@hookimpl
def register_configs(register):
    register("x", "no_colon_here")
"""
    make_distribution("mf-bad", "1.0", {"bad": "mf_bad_plugin"}, {"mf_bad_plugin": source})
    errors = mfcore.get_plugins().info["bad"].errors
    assert any("expects mfcore.Preset" in e for e in errors)
    assert any("'package.module:Name'" in e for e in errors)


def test_unknown_hook_name_is_reported_not_fatal(make_distribution):
    source = """
from mfcore import hookimpl
@hookimpl
def register_widgets(register):
    pass
"""
    make_distribution("mf-typo", "1.0", {"typo": "mf_typo_plugin"}, {"mf_typo_plugin": source})
    make_distribution("mf-good", "1.0", {"good": "mf_good_plugin"}, {"mf_good_plugin": GOOD_PLUGIN})
    plugins = mfcore.get_plugins()
    assert "register_widgets" in plugins.info["typo"].errors[0]
    assert plugins.info["good"].ok


def test_lazy_import_string_resolved_on_first_use(make_distribution):
    make_distribution("mf-lazy", "1.0", {"lazy": "mf_lazy_plugin"}, {
        "mf_lazy_plugin": "from mfcore import hookimpl\n@hookimpl\ndef register_configs(register):\n"
                          "    register('lazy', 'mf_lazy_impl:LazyConfig')\n",
        "mf_lazy_impl": "import mfcore\nclass LazyConfig(mfcore.PretrainedConfig):\n    model_type = 'lazy'\n",
    })
    plugins = mfcore.get_plugins()
    assert "mf_lazy_impl" not in sys.modules
    assert plugins.configs.get("lazy").__name__ == "LazyConfig"
    assert plugins.configs.find_by_class_name("LazyConfig").name == "lazy"


def test_unknown_preset_lists_close_matches_and_install_hint(make_distribution):
    make_distribution("mf-good", "1.0", {"good": "mf_good_plugin"}, {"mf_good_plugin": GOOD_PLUGIN})
    with pytest.raises(UnknownNameError) as excinfo:
        mfcore.AutoConfig.from_pretrained("good-smal")
    assert "Did you mean: good-small" in str(excinfo.value)
    with pytest.raises(UnknownNameError) as excinfo:
        mfcore.AutoConfig.from_pretrained("llama3-405b-nope")
    assert "pip install mf-llama3" in str(excinfo.value)


def _run_cli(*args, env=None):
    code = ("import sys, runpy; sys.argv = ['mfcore'] + sys.argv[1:]\n"
            "from mfcore.cli import main\nrc = main(sys.argv[1:])\n"
            "assert 'mindspore' not in sys.modules, 'mindspore was imported'\nsys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--json"], ["models"], ["models", "--json"]])
def test_cli_listing_commands_do_not_import_mindspore(args):
    result = _run_cli(*args)
    assert result.returncode == 0, result.stderr
    if "--json" in args:
        json.loads(result.stdout)


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "mfcore", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "plugins" in result.stdout
