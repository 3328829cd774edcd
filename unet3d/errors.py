"""The exceptions a command reports as one line (mistakes a user can fix, a stop by a signal), and how
their messages list many items."""

import signal


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback.

    The message names the offending file or config key and what was expected.
    """


class Interrupted(Exception):
    """Training was stopped by a signal; the checkpoint of the last finished epoch is on disk."""

    def __init__(self, signum):
        self.exit_status = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; rerun the same command to resume "
                         "after the last finished epoch")


MAX_LISTED = 5


def listing(items):
    """The first few ``items`` joined, and how many more there are, for a one-line message."""
    shown = ", ".join(str(i) for i in items[:MAX_LISTED])
    more = f" (and {len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return shown + more
