"""``medinr info``: print the metadata of a checkpoint without loading or running anything from it.

The header is validated first (a damaged one gives one error line), and every string from the file is
printed terminal-safe: control characters appear as escapes (``\\x1b``), never as codes the terminal runs.
"""

from __future__ import annotations

import argparse

from medinr.checkpoint import read_metadata
from medinr.textsafe import dumps_strict, terminal_safe

HELP = "print the metadata (model, output meaning, geometry) of a .inr checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .inr file")
    parser.add_argument("--json", action="store_true", help="print the raw JSON metadata")


def _js(value: object, limit: int = 2000) -> str:
    """Compact JSON of a header value; ASCII-escaped, so nothing in it can reach the terminal as a control code."""
    return terminal_safe(dumps_strict(value, ensure_ascii=True), limit=limit)


def run(args: argparse.Namespace) -> int:
    meta = read_metadata(args.checkpoint)  # every field checked before anything is printed
    if args.json:
        print(dumps_strict(meta, indent=2, ensure_ascii=True))
        return 0
    model = meta["model"]
    version = terminal_safe(meta.get("medinr_version", "?"), 40)
    lines = [
        f"file:      {terminal_safe(args.checkpoint)}",
        f"format:    {meta['format']} v{meta['format_version']} (medinr {version})",
        f"model:     {model['family']}  {_js(model['config'])}",
        f"output:    {_js(meta['output'])}",
        f"frame:     {meta['frame']}",
    ]
    geo = meta["geometry"]
    if geo:
        sp = ", ".join(f"{s:.4g}" for s in geo.get("spacing_mm", []))
        lines.append(f"geometry:  shape {tuple(geo['shape'])}, spacing ({sp}) mm")
        lines += ["           " + "  ".join(f"{v:9.4f}" for v in row) for row in geo["affine"]]
    if meta["world_box"]:
        lines.append(f"world box: {_js(meta['world_box'])}")
    if meta["extra"]:
        lines.append(f"extra:     {_js(meta['extra'])}")
    print("\n".join(lines))  # composed first: a report is printed whole or not at all
    return 0
