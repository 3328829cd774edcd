"""The exceptions a command reports as one line: mistakes a user can fix, and a stop by a signal."""

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
