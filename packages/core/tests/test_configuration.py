"""PretrainedConfig: aliases, unknown keys, validation naming the field, save/load round trip."""
import json
import warnings

import pytest

from mfcore import ConfigError, PretrainedConfig


class WidgetConfig(PretrainedConfig):
    model_type = "widget"
    attribute_map = {"n_layer": "num_layers", "num_hidden_layers": "num_layers"}

    def __init__(self, hidden_size=32, num_layers=2, **kwargs):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        super().__init__(**kwargs)

    def validate(self):
        super().validate()
        self.check_positive_int("hidden_size", self.hidden_size)


def test_aliases_read_and_write_the_canonical_field():
    config = WidgetConfig.from_dict({"num_hidden_layers": 7})
    assert config.num_layers == 7 and config.n_layer == 7
    config.n_layer = 3
    assert config.num_layers == 3
    assert "n_layer" not in config.to_dict() and config.to_dict()["num_layers"] == 3


def test_alias_and_canonical_disagreeing_is_an_error_naming_both():
    with pytest.raises(ConfigError, match="num_layers.*given twice.*n_layer=4"):
        WidgetConfig.from_dict({"num_layers": 3, "n_layer": 4})


def test_unknown_keys_are_kept_and_warned_about(tmp_path):
    with pytest.warns(UserWarning, match="unknown key.*fancy_option"):
        config = WidgetConfig.from_dict({"fancy_option": [1, 2]})
    assert config.fancy_option == [1, 2]
    config.save_pretrained(tmp_path)
    with pytest.warns(UserWarning):
        again = WidgetConfig.from_pretrained(tmp_path)
    assert again.fancy_option == [1, 2]


def test_bookkeeping_keys_of_other_tools_are_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WidgetConfig.from_dict({"architectures": ["X"], "transformers_version": "5.0", "model_type": "widget"})


def test_validation_names_the_field():
    with pytest.raises(ConfigError, match="^hidden_size: must be a positive integer"):
        WidgetConfig(hidden_size=0)
    with pytest.raises(ConfigError, match="^eos_token_id:"):
        WidgetConfig(eos_token_id=-3)


def test_wrong_model_type_in_file_is_rejected():
    with pytest.raises(ConfigError, match="model_type.*AutoConfig"):
        WidgetConfig.from_dict({"model_type": "other"})


def test_save_and_load_round_trip(tmp_path):
    config = WidgetConfig(hidden_size=48, num_layers=5, eos_token_id=[1, 2])
    path = config.save_pretrained(tmp_path / "out")
    data = json.loads(path.read_text())
    assert data["model_type"] == "widget" and data["hidden_size"] == 48
    assert WidgetConfig.from_pretrained(tmp_path / "out") == config
    assert WidgetConfig.from_pretrained(path, hidden_size=16).hidden_size == 16
    assert not list((tmp_path / "out").glob("*.tmp"))  # atomic write left nothing behind


def test_accelerator_missing_from_this_build_falls_back_to_cpu_with_a_warning():
    import subprocess
    import sys

    code = ("import warnings, mindspore\nfrom mfcore.utils import runtime\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    info = runtime.setup(device_target='Ascend')\n"
            "print(info.device_target, any('running on CPU instead' in str(w.message) for w in caught))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if "Ascend" in result.stdout.split()[:1]:
        pytest.skip("this MindSpore build has Ascend")
    assert result.stdout.split() == ["CPU", "True"], result.stderr[-2000:]
