"""The ``medinr`` console script: one subcommand per pipeline, one clear error line for bad input."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from medinr import __version__
from medinr.errors import MedinrError

# subcommand -> module in ``pipelines`` exposing HELP, add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "fit": "pipelines.fit_image",
    "reconstruct": "pipelines.reconstruct",
    "register": "pipelines.register",
    "render": "pipelines.render",
    "info": "pipelines.info",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the whole usage block
        self.exit(2, f"medinr: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medinr", description="Implicit neural representations for medical images.")
    parser.add_argument("--version", action="version", version=f"medinr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a pipeline not shipped in this build
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or bool(os.environ.get("MEDINR_DEBUG"))
    try:
        return int(args._run(args) or 0)
    except MedinrError as exc:
        if debug:
            raise
        print(f"medinr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medinr: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if debug:
            raise
        print(f"medinr: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
