"""Core's own plugin: what mfcore itself provides goes through the same registries as any plugin."""
from .hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    # Import strings: resolving them imports only mfcore.data.formats (no MindSpore).
    for name, obj in (("text", "TextFormat"), ("jsonl", "JsonlFormat"), ("wikitext", "WikitextFormat"),
                      ("alpaca", "AlpacaFormat"), ("chat", "ChatFormat"), ("chatml", "ChatMLTemplate")):
        register(name, f"mfcore.data.formats:{obj}")
