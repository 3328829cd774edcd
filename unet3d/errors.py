"""The one exception type for mistakes a user can fix (config, data, command line)."""


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback.

    The message names the offending file or config key and what was expected.
    """
