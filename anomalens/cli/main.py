"""``anomalens`` command line: a thin shell over ``anomalens.api`` and ``anomalens.evaluation``.

Each sub-command lives in its own module of ``anomalens.cli`` with ``add_parser(subparsers)``; this module only
builds the parser from them and runs the chosen one. Every failure the user can cause (missing path, unreadable
model, bad option) ends as one line on stderr and exit status 2, never a traceback; ``ANOMALENS_DEBUG=1`` shows
the traceback for bug reports.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from anomalens.cli import (
    chat,
    classify,
    demo,
    evaluate,
    fit,
    fit_many,
    learn,
    models,
    predict,
    report,
    serve,
    simulate,
)
from anomalens.cli.arguments import add_stop_on_error_option

COMMANDS = (
    fit,
    predict,
    evaluate,
    simulate,
    chat,
    classify,
    serve,
    report,
    fit_many,
    models,
    learn,
    demo,
)  # order of --help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomalens", description="Visual inspection from normal images.")
    add_stop_on_error_option(parser)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("anomalens: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line for users; the traceback on request
        if os.environ.get("ANOMALENS_DEBUG"):
            raise
        print(f"anomalens: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
