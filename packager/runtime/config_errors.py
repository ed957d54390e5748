"""The one error runtime.json's readers raise."""


class ConfigError(Exception):
    """runtime.json is missing, unreadable or invalid (one line)."""
