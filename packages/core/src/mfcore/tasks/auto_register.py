"""MindFormers' escape hatch: `auto_register: module.Class` in a task YAML plus `--register_path DIR`.

The named class is imported (with DIR first on sys.path) and registered for this run only, by what it
subclasses: a config under its model_type, a model under its config's model_type, a tokenizer under
its class name. Entry points remain the normal way to publish a plugin.

Only DIR is searched: a YAML cannot make mfcore import an installed module, or a .py that happens to be
in the working directory, that the user never pointed at. When the module is not in DIR (or no DIR was
given) but an installed plugin provides a class of that name (MindFormers research YAMLs name
`llama3_1_tokenizer.Llama3Tokenizer`), the plugin's class is used and the reason printed.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

from mfcore.models.configuration import PretrainedConfig
from mfcore.errors import ConfigError, PluginError
from mfcore.plugins.manager import Plugins, get_plugins


def add_register_path(register_path: Optional[str]) -> None:
    """Put DIR first on sys.path (and in REGISTER_PATH, as MindFormers does)."""
    if not register_path:
        return
    directory = Path(register_path).resolve()
    if not directory.is_dir():
        raise ConfigError("--register_path", f"{register_path} is not a directory")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    os.environ["REGISTER_PATH"] = str(directory)


def find_auto_register(node: Any, path: str = "") -> Iterator[Tuple[str, str]]:
    """Yield (key path, "module.Class") for every `auto_register` key in a task YAML."""
    if isinstance(node, dict):
        for key, value in node.items():
            key_path = f"{path}.{key}" if path else str(key)
            if key == "auto_register":
                if not isinstance(value, str) or "." not in value:
                    raise ConfigError(key_path, f"must be 'module.ClassName', got {value!r}")
                yield key_path, value
            else:
                yield from find_auto_register(value, key_path)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from find_auto_register(item, f"{path}[{index}]")


def register_class(plugins: Plugins, cls: type, origin: str) -> str:
    """Register one class by what it subclasses; returns the registry kind it went to."""
    plugin_name = f"auto_register:{origin}"
    if isinstance(cls, type) and issubclass(cls, PretrainedConfig):
        plugins.configs.add(cls.model_type or cls.__name__, cls, plugin_name)
        return "configs"
    if _subclass_of(cls, "mfcore.models.modeling", "PreTrainedModel"):
        model_type = getattr(getattr(cls, "config_class", None), "model_type", "") or cls.__name__
        plugins.models.add(model_type, cls, plugin_name)
        return "models"
    if _subclass_of(cls, "mfcore.tokenization.base", "PreTrainedTokenizer") or \
            _subclass_of(cls, "mfcore.tokenization.fast", "PreTrainedTokenizerFast"):
        plugins.tokenizers.add(cls.__name__, cls, plugin_name)
        return "tokenizers"
    raise PluginError(f"{origin}: {cls!r} is not a subclass of PretrainedConfig, PreTrainedModel or "
                      f"PreTrainedTokenizer, so mfcore does not know where to register it")


def _subclass_of(cls, module_name: str, class_name: str) -> bool:
    try:
        base = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, base)


def _import_from(directory: Optional[Path], module_name: str):
    """The module `module_name` if its top-level package or file is inside `directory`, else None."""
    from importlib.machinery import PathFinder

    if directory is None:
        return None
    top = module_name.split(".")[0]
    already = sys.modules.get(top)
    if PathFinder.find_spec(top, [str(directory)]) is None:
        return None
    if already is not None and not _inside(getattr(already, "__file__", None), directory):
        raise PluginError(f"auto_register: module {top!r} is already imported from {already.__file__}, not from "
                          f"--register_path {directory}; rename the file in {directory}")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise
    except Exception as exc:  # the user's file itself fails: name it, no traceback from inside it
        raise PluginError(f"auto_register: importing {module_name!r} from --register_path {directory} failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not _inside(getattr(module, "__file__", None), directory):
        raise PluginError(f"auto_register: {module_name!r} resolved to {module.__file__}, outside --register_path "
                          f"{directory}")
    return module


def _inside(file: Optional[str], directory: Path) -> bool:
    return file is not None and Path(file).resolve().is_relative_to(directory)


def apply_auto_register(task: dict, register_path: Optional[str] = None,
                        plugins: Optional[Plugins] = None) -> List[str]:
    """Import and register every `auto_register` class of a task; returns 'key: Class -> kind' lines."""
    add_register_path(register_path)
    directory = Path(register_path).resolve() if register_path else None
    plugins = plugins or get_plugins()
    done = []
    for key_path, target in find_auto_register(task):
        module_name, _, class_name = target.rpartition(".")
        try:
            module = _import_from(directory, module_name)
            if module is None:
                where = f"in --register_path {directory}" if directory else "(no --register_path given)"
                raise ModuleNotFoundError(f"no module {module_name!r} {where}")
            cls = getattr(module, class_name)
        except (ImportError, AttributeError) as exc:
            provider = _installed_provider(plugins, class_name)
            if provider:
                # MindFormers YAMLs name research-folder modules (llama3_tokenizer.Llama3Tokenizer) for
                # classes an installed plugin already provides: use the plugin's class.
                done.append(f"{key_path}: {target} not importable ({type(exc).__name__}: {exc}); using "
                            f"{class_name} from plugin {provider!r} instead ({_class_path(plugins, class_name)})")
                continue
            hint = "" if register_path else ("; mfcore imports auto_register modules only from the directory "
                                             "given with --register_path DIR")
            raise PluginError(f"{key_path}: cannot import {target!r}: {exc}{hint}") from exc
        kind = register_class(plugins, cls, key_path)
        done.append(f"{key_path}: {target} -> {kind}")
    return done


def _class_path(plugins: Plugins, class_name: str) -> str:
    for registry in (plugins.configs, plugins.models, plugins.tokenizers):
        entry = registry.find_by_class_name(class_name)
        if entry is not None:
            value = entry.value
            return value if isinstance(value, str) else f"{getattr(value, '__module__', '?')}:{class_name}"
    return "?"


def _installed_provider(plugins: Plugins, class_name: str) -> Optional[str]:
    """The plugin that registered a class of this name (config, model or tokenizer), if any."""
    for registry in (plugins.configs, plugins.models, plugins.tokenizers):
        entry = registry.find_by_class_name(class_name)
        if entry is not None:
            return entry.plugin
    return None
