"""User-facing errors: one line that says what is wrong, where, and what to do."""


class MMSearchError(ValueError):
    """Bad input or configuration. The CLI prints the message alone, without a traceback."""


class ConfigError(MMSearchError):
    """An unknown or mistyped configuration key or value."""


class DataError(MMSearchError):
    """A table that cannot be used as given (missing label, bad image paths, ...)."""


class DataWarning(UserWarning):
    """A table that trains, but not as given (e.g. inf treated as missing): the message names the
    column and rows. The CLI prints it as one line."""
