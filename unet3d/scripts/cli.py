"""What every unet3d command shares: logging, --debug, the flags of one vocabulary, and every error as one line."""

import argparse
import logging
import sys
import warnings

from unet3d.atomic import DISK_ERRORS, disk_error
from unet3d.errors import Interrupted, UserError


def parser(prog, description):
    """An ArgumentParser with the flags every command has."""
    # No abbreviations: a mistyped or unknown flag such as --set must not be taken for --setup_crossval_only.
    result = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    result.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    result.add_argument("--version", action=VersionAction, nargs=0,
                        help="print the versions of unet3d, torch, MONAI and Python, and those unet3d was tested with, and exit")
    return result


class VersionAction(argparse.Action):
    """``--version``: the versions are looked up only when asked for (importing torch takes seconds)."""

    def __call__(self, arg_parser, namespace, values, option_string=None):
        print(version_text(arg_parser.prog))
        arg_parser.exit()


def version_text(prog):
    """``unet3d-train 0.1.0 (torch 2.15.0, MONAI 1.6.1, Python 3.11.7; tested with torch 2.13.0, MONAI 1.6.1)``."""
    import platform

    import monai
    import torch

    from unet3d import TESTED_WITH, __version__

    tested = ", ".join(f"{name} {' and '.join(versions)}" for name, versions in TESTED_WITH.items())
    return (f"{prog} {__version__} (torch {torch.__version__}, MONAI {monai.__version__}, "
            f"Python {platform.python_version()}; tested with {tested})")


def add_config_flags(arg_parser, example):
    """``--set``, ``--plugin`` and ``--allow_unknown_keys``, shared by the commands that read a config; ``example``
    is a ``--set`` value that fits the command (``prediction.overlap=0.75`` for unet3d-predict)."""
    arg_parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                            help=f"change one config value, e.g. --set {example} (a JSON value; null removes the "
                                 "key); repeat for several")
    arg_parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                            help="import MODULE (on PYTHONPATH) first; the models, losses, transforms, ... it "
                                 "defines can then be named in the config. Repeat for several")
    arg_parser.add_argument("--allow_unknown_keys", action="store_true",
                            help="warn about config keys the schema does not know instead of stopping")


def add_nthreads_flag(arg_parser, help, default=0):
    """``--nthreads``, the worker processes that read the cases, in every command that reads them;
    ``--workers`` is taken too (an older spelling of unet3d-plan's), not shown."""
    arg_parser.add_argument("--nthreads", type=int, default=default, help=help)
    arg_parser.add_argument("--workers", type=int, dest="nthreads", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_output_dir_flag(arg_parser, help, required=False):
    """``--output_dir``, the folder a command writes; ``--output_directory`` is taken too (an older spelling), not
    shown."""
    # A required group of the two: either spelling satisfies it, and its message names the shown one.
    group = arg_parser.add_mutually_exclusive_group(required=True) if required else arg_parser
    group.add_argument("--output_dir", help=help)
    group.add_argument("--output_directory", dest="output_dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_device_flag(arg_parser, help="auto (default: CUDA when available), cpu, cuda, cuda:1, ..."):
    """``--device``, the torch device a command computes on."""
    arg_parser.add_argument("--device", default="auto", help=help)


def processes_and_device(ngpus, device, flag="--ngpus"):
    """``(processes, device name)`` of ``--ngpus`` and ``--device``: 0 GPUs is one process on the CPU, as
    3DUnetCNN's ``n_gpus: 0`` meant."""
    if ngpus is not None and ngpus < 0:
        raise UserError(f"{flag} must be 0 or more, got {ngpus}")
    if ngpus != 0:
        return ngpus, device
    if device not in (None, "auto", "cpu"):
        raise UserError(f"{flag} 0 runs on the CPU but --device is {device}; drop one of them")
    return 1, "cpu"


def require_at_least(*checks):
    """Raise a UserError for the first ``(flag, value, least)`` whose value is given and below ``least``."""
    for flag, value, least in checks:
        if value is not None and value < least:
            raise UserError(f"{flag} must be {least} or more, got {value}")


def refuse_together(args, conflicts):
    """Raise a UserError for the first pair of flags in ``conflicts`` that are both given.

    ``conflicts`` maps ``(flag, flag)`` to the reason they contradict each other.
    """
    for (first, second), reason in conflicts.items():
        if given(args, first) and given(args, second):
            raise UserError(f"{first} and {second} cannot be used together: {reason}")


def given(args, flag):
    """Whether ``flag`` was set on the command line (not left at None or false)."""
    value = getattr(args, flag.lstrip("-"))
    return value is not None and value is not False


def run(prog, arg_parser, main, argv=None):
    """Parse ``argv`` and call ``main(args)``; whatever stops it is one line (``--debug``: the traceback instead),
    with exit status 2 for the user's to fix (``UserError``, a full disk, ...) and 1 for an internal error."""
    args = arg_parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # numexpr (Blosc2's, which pandas then imports too) announces its thread count at INFO on import.
    logging.getLogger("numexpr.utils").setLevel(logging.WARNING)
    if not args.debug:
        warnings.simplefilter("once")
    try:
        main(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Interrupted as stop:
        if args.debug:
            raise
        print(f"{prog}: {stop}", file=sys.stderr)
        sys.exit(stop.exit_status)
    except Exception as error:  # the last resort: no traceback without --debug, anywhere
        if args.debug:
            raise
        message, status = error_line(error)
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(status)


# An internal error's message is cut to its first line and this many characters.
REASON_LENGTH = 300


def error_line(error):
    """The one line for an exception that stopped a command, and the exit status: 2 for the user's to fix, 1 for
    an internal error (which says to rerun with --debug)."""
    if isinstance(error, UserError):
        return " ".join(str(error).split()), 2
    if isinstance(error, OSError) and error.filename:
        return disk_error(error) or f"{error.filename}: {error.strerror}", 2
    if isinstance(error, OSError) and error.errno in DISK_ERRORS:
        return f"{DISK_ERRORS[error.errno]} (make room or make the folder writable, then rerun)", 2
    if isinstance(error, RecursionError):
        return ("the input is nested too deeply to process (Python's recursion limit was reached); rerun with "
                "--debug for the traceback"), 2
    reason = (str(error).strip().splitlines() or [""])[0][:REASON_LENGTH]
    return f"internal error: {type(error).__name__}: {reason} (rerun with --debug for the traceback)", 1
