"""``medinr info``: print what a file holds: a checkpoint's metadata (nothing loaded or run from it), an image's
grid and values, or k-space's coils, grid and sampling.

Thin: :mod:`medinr.apps.info` validates and reads the file and makes every string from it terminal-safe.
"""

from __future__ import annotations

import argparse

from medinr.apps import run as run_app
from medinr.apps.requests import InfoRequest
from pipelines.common import fov_size, matrix_size

HELP = ("print what a file holds: a .inr checkpoint's metadata (model, output meaning, geometry), an "
        "image's grid and values, or k-space's coils, grid and sampling")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a .inr checkpoint, an image (NIfTI, DICOM folder, ...) or k-space (.npy, "
                        ".h5, .npz) as the other commands read them")
    parser.add_argument("--json", action="store_true", help="print the description as JSON (a checkpoint: "
                        "its metadata as stored)")
    parser.add_argument("--matrix", type=matrix_size, default=None,
                        help="image matrix of a .npz trajectory file that does not store one, as for reconstruct")
    parser.add_argument("--fov", type=fov_size, default=None,
                        help="field of view (mm) of a .npz trajectory file that does not store one")


def run(args: argparse.Namespace) -> int:
    print(run_app(InfoRequest(path=args.file, raw=args.json, matrix=args.matrix, fov_mm=args.fov)).summary)
    return 0
