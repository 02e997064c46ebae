"""Core's own plugin: what mfcore itself provides goes through the same registries as any plugin."""
from .hookspecs import hookimpl  # noqa: F401  (hooks are added here as core grows built-in providers)
