"""Stopping training cleanly on SIGTERM (cluster pre-emption) and SIGINT (Ctrl-C)."""

import signal
import threading
from contextlib import contextmanager

from unet3d.errors import Interrupted

_received = []  # signals received while stop_on_signals() is active


@contextmanager
def stop_on_signals(signums=(signal.SIGTERM, signal.SIGINT)):
    """While active, a first SIGTERM or SIGINT asks the loop to stop (see ``raise_if_stopped``); a second stops at once.

    An error after a signal (loader workers that the same signal ended, ...) is reported as the interruption.
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def handler(signum, frame):
        _received.append(signum)
        if len(_received) > 1:
            raise Interrupted(signum)

    _received.clear()
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    except Exception as error:
        if _received and not isinstance(error, Interrupted):
            raise Interrupted(_received[0]) from error
        raise
    finally:
        for signum, old_handler in previous.items():
            signal.signal(signum, old_handler)
        _received.clear()


def raise_if_stopped():
    """Raise ``Interrupted`` when a signal asked training to stop; called between batches."""
    if _received:
        raise Interrupted(_received[0])
