"""The exceptions a command reports as one line (mistakes a user can fix, a stop by a signal), how
their messages list many items and name the pip command of a missing extra."""

import signal

# The name pip installs unet3d by (``unet3d`` on PyPI is another project); the import package is ``unet3d``.
DISTRIBUTION = "unet3d-toolkit"


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


def install_hint(extra):
    """The pip command that installs an optional part of unet3d (an extra in setup.cfg)."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


MAX_LISTED = 5


def listing(items):
    """The first few ``items`` joined, and how many more there are, for a one-line message."""
    shown = ", ".join(str(i) for i in items[:MAX_LISTED])
    more = f" (and {len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return shown + more
