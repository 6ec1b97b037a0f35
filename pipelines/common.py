"""Argument helpers the pipelines share (seed, device, output folder, model choice)."""

from __future__ import annotations

import argparse
import json

import torch

from medinr.errors import MedinrError


def add_common_arguments(parser: argparse.ArgumentParser, out: bool = True) -> None:
    if out:
        parser.add_argument("--out", required=True, help="output folder")
        parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda if available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise MedinrError(f"unknown device '{name}' (cpu, cuda, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MedinrError("--device cuda was asked for but no CUDA device is available")
    return dev


def parse_model_options(text: str | None) -> dict:
    """``--model-options '{"hidden": 128}'``: a JSON object of extra model options."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MedinrError(f"--model-options is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise MedinrError("--model-options must be a JSON object, e.g. '{\"hidden\": 128}'")
    return value


def write_json(path, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=float)
        f.write("\n")
