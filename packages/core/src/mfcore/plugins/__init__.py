"""The plugin contract and its discovery.

`hookspecs` declares the hooks (pluggy, project "mfcore"); `types` the plain data a plugin registers
(`Preset`, `WeightMap`); `manager` loads every entry point of the group `mfcore` in its own try/except
and keeps the registries; `builtin` is core's own plugin (the dataset formats), loaded like any other.
"""
from .hookspecs import hookimpl
from .manager import ENTRY_POINT_GROUP, PluginInfo, Plugins, Registry, get_plugins, reset_plugins
from .types import Preset, WeightMap

__all__ = ["hookimpl", "ENTRY_POINT_GROUP", "PluginInfo", "Plugins", "Registry", "get_plugins", "reset_plugins",
           "Preset", "WeightMap"]
