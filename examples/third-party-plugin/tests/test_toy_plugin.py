"""The plugin's own tests: mfcore's conformance kit does the work."""
from mfcore import testing


def test_plugin_is_discovered_and_registers_cleanly():
    info = testing.check_plugin("toy")
    assert info.registered == {"configs": ["toy"], "presets": ["toy-7m"]}


def test_presets_build_valid_configs_that_round_trip(tmp_path):
    assert testing.check_presets("toy", tmp_path) == ["toy-7m"]
