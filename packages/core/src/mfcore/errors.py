"""Exceptions of mfcore. Each message says what went wrong, where (file / key / plugin) and what to do."""


class MfcoreError(Exception):
    """Base of every error mfcore raises on purpose."""


class ConfigError(MfcoreError, ValueError):
    """A configuration value is missing or invalid; the message names the field (or key path)."""

    def __init__(self, field, message):
        self.field = field
        super().__init__(f"{field}: {message}")


class PluginError(MfcoreError):
    """A plugin could not be loaded or registered something invalid."""


class DuplicateNameError(PluginError):
    """Two plugins registered the same name in the same registry."""


class UnknownNameError(MfcoreError, KeyError):
    """A preset, model type, tokenizer or other registered name does not exist."""

    def __str__(self):  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class CheckpointError(MfcoreError):
    """A checkpoint is missing, corrupt, or does not fit the model; names the file and parameter."""
