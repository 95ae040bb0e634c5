"""Exceptions that carry a message a user can act on (file, expectation, fix)."""


class DataError(ValueError):
    """A dataset copy, file or split that is missing, malformed or inconsistent."""


class ConfigError(ValueError):
    """An unknown option, a bad value, or a missing upstream artefact (e.g. a checkpoint)."""
