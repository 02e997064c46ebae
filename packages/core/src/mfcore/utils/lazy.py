"""Lazy package attributes (PEP 562): heavy names are imported on first access, not at `import pkg`.

Keeps `import mfcore` (and a plugin's package) free of MindSpore:

    __getattr__ = lazy_exports(__name__, globals(), {"PreTrainedModel": "mfcore.models.modeling"})
"""
from importlib import import_module
from typing import Callable, Dict


def lazy_exports(package: str, namespace: dict, names: Dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` that imports `names[name]` (a module path) and caches the attribute."""

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
