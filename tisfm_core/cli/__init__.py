"""Command line: ``tisfm <command> ...`` (also ``python -m tisfm_core``).

Argument parsing lives here and only here: each command builds the spec of its task from its
flags and calls one library function. Problems with the input are printed as one line on stderr
with exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import TisfmError
from . import analyze, attribution, demo, finetune, path, scan, train
from .common import UsageError

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3
#: Command modules, in the order of ``tisfm --help``; each has ``add_parsers(sub)``.
COMMANDS = (train, finetune, path, attribution, scan, analyze, demo)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tisfm", description="tiSFM: train, inspect and explain interpretable "
                                  "sequence-to-function models")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parsers(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    # a warning (e.g. counts normalised) is one line, not a source excerpt
    warnings.showwarning = lambda msg, cat, *rest, **kw: print(f"warning: {msg}", file=sys.stderr)
    try:
        args.func(args)
    except UsageError as exc:
        parser.exit(EXIT_USER_ERROR, f"tisfm {args.command}: error: {exc}\n")
    except TisfmError as exc:
        if args.debug:
            raise
        print(f"tisfm {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"tisfm {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"tisfm {args.command}: error: out of memory (try a smaller --batch-size)", file=sys.stderr)
        return EXIT_INTERNAL
    except RecursionError:
        print(f"tisfm {args.command}: error: the input is nested too deeply to read", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if args.debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"tisfm {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # an internal bug: still one line, with the way to see more
        if args.debug:
            raise
        print(f"tisfm {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    return 0


def _one_line(exc):
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
