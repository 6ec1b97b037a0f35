"""``medinr info`` as a library call: the metadata of a checkpoint as terminal-safe text, nothing run from it.

The header is validated first (a damaged one gives one error line), and every string from the file is made
terminal-safe: control characters appear as escapes (``\\x1b``), never as codes the terminal runs.
"""

from __future__ import annotations

from medinr.apps.requests import InfoRequest
from medinr.apps.result import AppResult
from medinr.checkpoint import read_metadata
from medinr.textsafe import dumps_strict, terminal_safe


def _js(value: object, limit: int = 2000) -> str:
    """Compact JSON of a header value; ASCII-escaped, so nothing in it can reach the terminal as a control code."""
    return terminal_safe(dumps_strict(value, ensure_ascii=True), limit=limit)


def describe(meta: dict, checkpoint: str) -> list[str]:
    """The report's lines."""
    model = meta["model"]
    version = terminal_safe(meta.get("medinr_version", "?"), 40)
    lines = [f"file:      {terminal_safe(checkpoint)}",
             f"format:    {meta['format']} v{meta['format_version']} (medinr {version})",
             f"model:     {model['family']}  {_js(model['config'])}",
             f"output:    {_js(meta['output'])}",
             f"frame:     {meta['frame']}"]
    geo = meta["geometry"]
    if geo:
        sp = ", ".join(f"{s:.4g}" for s in geo.get("spacing_mm", []))
        lines.append(f"geometry:  shape {tuple(geo['shape'])}, spacing ({sp}) mm")
        lines += ["           " + "  ".join(f"{v:9.4f}" for v in row) for row in geo["affine"]]
    if meta["world_box"]:
        lines.append(f"world box: {_js(meta['world_box'])}")
    if meta["extra"]:
        lines.append(f"extra:     {_js(meta['extra'])}")
    return lines


def run(request: InfoRequest) -> AppResult:
    """The report (or the raw JSON), composed whole: it is printed whole or not at all."""
    meta = read_metadata(request.checkpoint)  # every field checked before anything is composed
    text = dumps_strict(meta, indent=2, ensure_ascii=True) if request.raw else "\n".join(
        describe(meta, request.checkpoint))
    return AppResult(record=meta, summary=text)
