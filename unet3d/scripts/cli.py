"""What every unet3d command shares: logging, --debug, and user errors as one line."""

import argparse
import logging
import sys
import warnings

from unet3d.errors import Interrupted, UserError


def parser(prog, description):
    """An ArgumentParser with the flags every command has."""
    # No abbreviations: a mistyped or unknown flag such as --set must not be taken for --setup_crossval_only.
    result = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    result.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    return result


def add_config_flags(arg_parser):
    """``--plugin`` and ``--allow_unknown_keys``, shared by the commands that read a config."""
    arg_parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                            help="import MODULE (on PYTHONPATH) first; the models, losses, transforms, ... it "
                                 "defines can then be named in the config. Repeat for several")
    arg_parser.add_argument("--allow_unknown_keys", action="store_true",
                            help="warn about config keys the schema does not know instead of stopping")


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
    """Parse ``argv``, call ``main(args)`` and turn user errors into one line and exit status 2."""
    args = arg_parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not args.debug:
        warnings.simplefilter("once")
    try:
        main(args)
    except UserError as error:
        if args.debug:
            raise
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        if args.debug or not error.filename:
            raise
        print(f"{prog}: error: {error.filename}: {error.strerror}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:
        if args.debug:
            raise
        print(f"{prog}: {stop}", file=sys.stderr)
        sys.exit(stop.exit_status)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
