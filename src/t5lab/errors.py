"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class T5LabError(Exception):
    """An error caused by the user's input (config, path, prompt, ...), with a one-line message."""


class ConfigError(T5LabError, ValueError):
    """A config key, type or combination that cannot work."""
