"""``medinr info``: print the metadata of a checkpoint without loading or running anything from it."""

from __future__ import annotations

import argparse
import json

from medinr.checkpoint import read_metadata

HELP = "print the metadata (model, output meaning, geometry) of a .inr checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a .inr file")
    parser.add_argument("--json", action="store_true", help="print the raw JSON metadata")


def run(args: argparse.Namespace) -> int:
    meta = read_metadata(args.checkpoint)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    model = meta["model"]
    cfg = {k: v for k, v in model["config"].items()}
    print(f"file:      {args.checkpoint}")
    print(f"format:    {meta['format']} v{meta['format_version']} (medinr {meta.get('medinr_version', '?')})")
    print(f"model:     {model['family']}  {json.dumps(cfg)}")
    out = meta.get("output") or {}
    print(f"output:    {json.dumps(out)}")
    print(f"coords:    {meta.get('coords')}")
    geo = meta.get("geometry")
    if geo:
        sp = ", ".join(f"{s:.4g}" for s in geo.get("spacing_mm", []))
        print(f"geometry:  shape {tuple(geo['shape'])}, spacing ({sp}) mm")
        for row in geo["affine"]:
            print("           " + "  ".join(f"{v:9.4f}" for v in row))
    if meta.get("world_box"):
        print(f"world box: {json.dumps(meta['world_box'])}")
    extra = meta.get("extra") or {}
    if extra:
        print(f"extra:     {json.dumps(extra)[:2000]}")
    return 0
