"""The plugin module named by the `mfcore` entry point: a config class and a preset."""
from mfcore import PretrainedConfig, Preset, hookimpl


class ToyConfig(PretrainedConfig):
    model_type = "toy"

    def __init__(self, hidden_size=64, num_layers=2, vocab_size=256, **kwargs):
        self.hidden_size, self.num_layers, self.vocab_size = hidden_size, num_layers, vocab_size
        super().__init__(**kwargs)


@hookimpl
def register_configs(register):
    register("toy", ToyConfig)


@hookimpl
def register_presets(register):
    register(Preset(name="toy-7m", model_type="toy", config={"hidden_size": 96, "num_layers": 4}))
