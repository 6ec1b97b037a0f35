"""``medinr info``: print the metadata of a checkpoint without loading or running anything from it.

Thin: :mod:`medinr.apps.info` validates the header and makes every string from the file terminal-safe.
"""

from __future__ import annotations

import argparse

from medinr.apps import run as run_app
from medinr.apps.requests import InfoRequest

HELP = "print the metadata (model, output meaning, geometry) of a .inr checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .inr file")
    parser.add_argument("--json", action="store_true", help="print the raw JSON metadata")


def run(args: argparse.Namespace) -> int:
    print(run_app(InfoRequest(checkpoint=args.checkpoint, raw=args.json)).summary)
    return 0
