"""What every unet3d command shares: logging, --debug, and user errors as one line."""

import argparse
import logging
import sys
import warnings

from unet3d.errors import UserError
from unet3d.train.signals import Interrupted


def parser(prog, description):
    """An ArgumentParser with the flags every command has."""
    result = argparse.ArgumentParser(prog=prog, description=description)
    result.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    return result


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
