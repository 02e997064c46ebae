"""The plugin contract: every hook a model family (or any plugin) can implement.

Each hook receives a `register` callback and calls it once per thing it provides. Hooks are called
by name, so a plugin implements only the ones it needs. Anything registered may be a class/object or
an import string "package.module:Name" resolved on first use (keeps discovery free of MindSpore).
"""
import pluggy

hookspec = pluggy.HookspecMarker("mfcore")
hookimpl = pluggy.HookimplMarker("mfcore")


@hookspec
def register_configs(register):
    """Register config classes: register(model_type, config_cls)."""


@hookspec
def register_models(register):
    """Register causal LM classes: register(model_type, model_cls)."""


@hookspec
def register_tokenizers(register):
    """Register tokenizer classes: register(name, tokenizer_cls), name usually the class name."""


@hookspec
def register_presets(register):
    """Register named models: register(Preset(name=..., model_type=..., config={...}))."""


@hookspec
def register_converters(register):
    """Register weight name maps for conversion: register(WeightMap(model_type, source, ...))."""


@hookspec
def register_datasets(register):
    """Register dataset formats and prompt templates: register(name, format_or_template)."""


@hookspec
def register_commands(cli):
    """Add subcommands to the `mfcore` CLI: cli.add_parser(name, help=...) then set_defaults(func=...)."""
