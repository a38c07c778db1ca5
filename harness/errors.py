"""Errors a user can fix. They print as one message, never as a traceback."""


class UserError(Exception):
    """A problem in the user's input (config, data, command line) with a message that names the fix."""


class DataError(UserError):
    """A dataset is missing, corrupt or in the wrong format."""


class ConfigError(UserError):
    """A configuration that cannot run (unknown name, bad value, bad combination)."""
