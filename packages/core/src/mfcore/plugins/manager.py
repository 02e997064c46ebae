"""Plugin discovery and the registries the plugins fill.

Plugins are distributions with an entry point in the group `mfcore`. Each entry point is loaded on
its own and each of its hooks is called on its own: a plugin that fails to import, or whose hook
raises, is recorded (name, distribution, version, error) and never stops the others. Nothing here
imports MindSpore.
"""
from __future__ import annotations

import difflib
import importlib
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Dict, List, Optional

import pluggy

from . import hookspecs
from mfcore.errors import DuplicateNameError, PluginError, UnknownNameError
from .types import Preset, WeightMap

ENTRY_POINT_GROUP = "mfcore"
# Registries filled through a `register` callback, in the order hooks are called.
KINDS = ("configs", "models", "tokenizers", "presets", "converters", "datasets")
# First-party distributions, used to tell the user what to install for a missing name.
KNOWN_DISTRIBUTIONS = {"llama2": "mf-llama2", "llama": "mf-llama2", "llama3": "mf-llama3",
                       "llama3.1": "mf-llama3", "convert": "mf-convert"}
BUILTIN_PLUGIN = "mfcore"


@dataclass
class PluginInfo:
    """What `mfcore plugins` reports for one plugin."""

    name: str
    distribution: Optional[str] = None
    version: Optional[str] = None
    module: Optional[str] = None
    registered: Dict[str, List[str]] = field(default_factory=dict)
    errors: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "module": self.module, "registered": self.registered, "errors": self.errors,
                "ok": self.ok}


@dataclass
class Entry:
    """One registered thing: a name, what it resolves to (object or "module:Name"), who registered it."""

    name: str
    value: Any
    plugin: str

    def load(self):
        """The registered object, importing it on first use when it was given as a string."""
        if isinstance(self.value, str):
            module_name, _, attr = self.value.partition(":")
            try:
                obj = importlib.import_module(module_name)
                for part in attr.split(".") if attr else ():
                    obj = getattr(obj, part)
            except Exception as exc:
                raise PluginError(
                    f"plugin {self.plugin!r}: cannot import {self.value!r} registered as {self.name!r}: "
                    f"{type(exc).__name__}: {exc}") from exc
            self.value = obj
        return self.value

    @property
    def class_name(self) -> str:
        """The class name, known without importing anything when the value is an import string."""
        if isinstance(self.value, str):
            return self.value.rpartition(":")[2].rpartition(".")[2]
        return getattr(self.value, "__name__", type(self.value).__name__)


class Registry:
    """Names of one kind (configs, models, ...) -> entries. Knows which plugin registered what."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Entry] = {}
        self._conflicts: Dict[str, List[str]] = {}  # name -> plugins whose duplicate was refused
        self._warned: set = set()

    def add(self, name: str, value: Any, plugin: str) -> None:
        """Register `name`; a name another plugin registered first stays theirs (a plugin cannot take
        over `llama` or `llama2-tiny`): the duplicate is refused, kept for reporting, and raises."""
        existing = self._entries.get(name)
        if existing is not None and existing.plugin != plugin:
            self._conflicts.setdefault(name, []).append(plugin)
            raise DuplicateNameError(
                f"{self.kind[:-1]} {name!r} is already registered by plugin {existing.plugin!r}; plugin "
                f"{plugin!r}'s {name!r} is ignored (uninstall one of them or restrict loading with MFCORE_PLUGINS)")
        self._entries[name] = Entry(name, value, plugin)

    def ignored(self, name: str) -> List[str]:
        """Plugins whose registration of `name` was refused because another plugin had it first."""
        return list(self._conflicts.get(name, []))

    def remove_plugin(self, plugin: str) -> None:
        for name in [n for n, e in self._entries.items() if e.plugin == plugin]:
            del self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> List[str]:
        return sorted(self._entries)

    def entries(self) -> List[Entry]:
        return [self._entries[n] for n in self.names()]

    def entry(self, name: str) -> Entry:
        if not isinstance(name, str):  # e.g. "model_type": 1.5 in a config.json
            raise UnknownNameError(f"{self.kind[:-1]} name must be a string, got {name!r} ({type(name).__name__})")
        try:
            entry = self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(unknown_name_message(self.kind[:-1], name, self.names())) from None
        if name in self._conflicts and name not in self._warned:  # every command using the name says so
            self._warned.add(name)
            print(f"warning: {self.kind[:-1]} {name!r} comes from plugin {entry.plugin!r}; plugin(s) "
                  f"{', '.join(repr(p) for p in self._conflicts[name])} also registered it and were ignored",
                  file=sys.stderr)
        return entry

    def get(self, name: str):
        """The registered object for `name` (imported on first use)."""
        return self.entry(name).load()

    def find_by_class_name(self, class_name: str) -> Optional[Entry]:
        """The entry whose class is called `class_name` (MindFormers YAML refers to classes by name)."""
        for entry in self._entries.values():
            if entry.class_name == class_name or entry.name == class_name:
                return entry
        return None


def install_hint(name: str) -> str:
    family = name.split("-")[0].lower()
    dist = KNOWN_DISTRIBUTIONS.get(family)
    if dist:
        return f"`pip install {dist}` provides it"
    return f"install the plugin that provides it (`pip install mf-{family}` if one is published)"


def unknown_name_message(what: str, name: str, known: List[str]) -> str:
    if "/" in name or "\\" in name:  # meant as a path, not a name
        return f"{name}: no such file or directory (and no {what} has that name)"
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    message = f"unknown {what} {name!r}."
    if close:
        message += f" Did you mean: {', '.join(close)}?"
    message += f" If it comes from a plugin that is not installed, {install_hint(name)}."
    message += " Run `mfcore models` / `mfcore plugins` to see what is installed."
    return message


class Plugins:
    """All loaded plugins and the registries they filled. Build one with `load_plugins()`."""

    def __init__(self):
        self.manager = pluggy.PluginManager("mfcore")
        self.manager.add_hookspecs(hookspecs)
        self.info: Dict[str, PluginInfo] = {}
        self.registries: Dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}

    # -- registries -----------------------------------------------------------------------------
    @property
    def configs(self) -> Registry:
        return self.registries["configs"]

    @property
    def models(self) -> Registry:
        return self.registries["models"]

    @property
    def tokenizers(self) -> Registry:
        return self.registries["tokenizers"]

    @property
    def presets(self) -> Registry:
        return self.registries["presets"]

    @property
    def converters(self) -> Registry:
        return self.registries["converters"]

    @property
    def datasets(self) -> Registry:
        return self.registries["datasets"]

    def preset(self, name: str) -> Preset:
        return self.presets.get(name)

    def converter(self, model_type: str, source: str) -> WeightMap:
        return self.converters.get(f"{model_type}:{source}")

    # -- loading --------------------------------------------------------------------------------
    def add_plugin(self, module, name: str, distribution=None, version=None) -> PluginInfo:
        """Register a plugin module and call its registration hooks, isolating every failure."""
        info = self.info.get(name)
        if info is not None:
            other = PluginInfo(name, distribution, version, getattr(module, "__name__", None))
            other.errors.append(
                f"plugin name {name!r} is already used by distribution {info.distribution!r}; "
                f"entry point of {distribution!r} skipped (uninstall one of them)")
            self.info[f"{name} ({distribution})"] = other
            return other
        info = PluginInfo(name, distribution, version, getattr(module, "__name__", None))
        self.info[name] = info
        try:
            self.manager.register(module, name=name)
        except Exception as exc:  # e.g. a hookimpl whose name or arguments match no hookspec
            info.errors.append(f"invalid plugin: {type(exc).__name__}: {exc}")
            return info
        unknown = [caller.name for caller in self.manager.get_hookcallers(module) or [] if caller.spec is None]
        if unknown:  # usually a typo in a hook name: the plugin would silently do nothing
            info.errors.append(f"unknown hook(s) {', '.join(unknown)}; mfcore's hooks are "
                               f"{', '.join('register_' + k for k in KINDS)}, register_commands")
        for kind in KINDS:
            self._call_register_hook(name, info, kind)
        return info

    def add_broken(self, name, distribution, version, module, error: str) -> None:
        info = PluginInfo(name, distribution, version, module)
        info.errors.append(error)
        self.info.setdefault(name, info)

    def _call_register_hook(self, plugin: str, info: PluginInfo, kind: str) -> None:
        hook_name = f"register_{kind}"
        impls = [i for i in getattr(self.manager.hook, hook_name).get_hookimpls() if i.plugin_name == plugin]
        for impl in impls:
            pending: List[tuple] = []
            try:
                impl.function(**{arg: _collector(kind, pending) for arg in impl.argnames})
            except Exception as exc:
                info.errors.append(f"{hook_name} raised {type(exc).__name__}: {exc}")
                continue
            for key, value in pending:
                try:
                    self.registries[kind].add(key, value, plugin)
                    info.registered.setdefault(kind, []).append(key)
                except Exception as exc:
                    info.errors.append(f"{hook_name}: {exc}")

    def add_commands(self, subparsers) -> None:
        """Let every plugin add its subcommands; a plugin whose hook raises is recorded, not fatal."""
        for impl in self.manager.hook.register_commands.get_hookimpls():
            try:
                impl.function(**{arg: subparsers for arg in impl.argnames})
            except Exception as exc:
                self.info[impl.plugin_name].errors.append(
                    f"register_commands raised {type(exc).__name__}: {exc}")


def _collector(kind: str, pending: List[tuple]) -> Callable:
    """The `register` callback handed to a hook: validates and queues what the hook registers."""

    def register(*args, **kwargs):
        if kind == "presets":
            (preset,) = args or (kwargs.get("preset"),)
            if not isinstance(preset, Preset):
                raise TypeError(f"register_presets expects mfcore.Preset, got {type(preset).__name__}")
            for name in (preset.name, *preset.aliases):
                pending.append((name, preset))
        elif kind == "converters":
            (weight_map,) = args or (kwargs.get("weight_map"),)
            if not isinstance(weight_map, WeightMap):
                raise TypeError(f"register_converters expects mfcore.WeightMap, got {type(weight_map).__name__}")
            pending.append((f"{weight_map.model_type}:{weight_map.source}", weight_map))
        else:
            if len(args) + len(kwargs) != 2:
                raise TypeError(f"register_{kind} expects register(name, value)")
            name, value = (list(args) + list(kwargs.values()))[:2]
            if not isinstance(name, str) or not name:
                raise TypeError(f"register_{kind}: name must be a non-empty string, got {name!r}")
            if isinstance(value, str) and ":" not in value:
                raise TypeError(f"register_{kind}: import string {value!r} must look like 'package.module:Name'")
            pending.append((name, value))

    return register


def allowed_plugin_names() -> Optional[set]:
    """MFCORE_PLUGINS=a,b loads only those plugins; an empty value loads none; unset loads all."""
    value = os.environ.get("MFCORE_PLUGINS")
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def load_plugins() -> Plugins:
    """Discover and load every `mfcore` entry point (and core's built-in plugin) into a fresh Plugins."""
    plugins = Plugins()
    from . import builtin

    plugins.add_plugin(builtin, BUILTIN_PLUGIN, "mfcore", _version("mfcore"))
    allowed = allowed_plugin_names()
    # First-party plugins load first: the first registration of a name wins, so theirs stay theirs.
    first_party = set(KNOWN_DISTRIBUTIONS.values())

    def order(ep):
        dist = getattr(ep, "dist", None)
        return (dist is None or dist.metadata["Name"] not in first_party, ep.name)

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=order):
        if allowed is not None and ep.name not in allowed:
            continue
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        dist_version = dist.version if dist is not None else None
        try:
            module = ep.load()
        except BaseException as exc:  # noqa: B902 - a plugin calling sys.exit must not stop us either
            if isinstance(exc, KeyboardInterrupt):
                raise
            last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
            where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
            plugins.add_broken(ep.name, dist_name, dist_version, ep.value,
                               f"failed to import {ep.value!r}: {type(exc).__name__}: {exc}{where}")
            continue
        plugins.add_plugin(module, ep.name, dist_name, dist_version)
    return plugins


def _version(dist: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


_plugins: Optional[Plugins] = None
_lock = threading.Lock()


def get_plugins() -> Plugins:
    """The process-wide plugins, loaded on first use."""
    global _plugins
    with _lock:
        if _plugins is None:
            _plugins = load_plugins()
        return _plugins


def reset_plugins() -> None:
    """Forget loaded plugins (tests; after installing a plugin in a running process)."""
    global _plugins
    with _lock:
        _plugins = None
