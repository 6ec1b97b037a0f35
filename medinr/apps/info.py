"""``medinr info`` as a library call: what a file holds, as terminal-safe text, nothing run from it.

A checkpoint's header is validated first (a damaged one gives one error line) and printed without loading the
network. An image or k-space file is read by the same readers as ``fit``, ``register`` and ``reconstruct`` (so
``info`` refuses exactly what they refuse), and described: its grid in the world, and its values or sampling.
Every string from a file is made terminal-safe: control characters appear as escapes (``\\x1b``), never as codes
the terminal runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medinr.apps.requests import InfoRequest
from medinr.apps.result import AppResult
from medinr.geometry import Geometry
from medinr.schema import starts_as_safetensors
from medinr.textsafe import dumps_strict, terminal_safe

CHECKPOINT, IMAGE, KSPACE = "checkpoint", "image", "k-space"


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


def _weights_line(path: str, counted: tuple[int, int] | None) -> list[str]:
    """Parameters and tensors the file declares (its header; no weight is read), and its size."""
    if counted is None:
        return []
    size = Path(path).stat().st_size / 2**20
    return [f"weights:   {counted[0]:,} parameters in {counted[1]} tensors ({size:.2f} MiB file)"]


def input_kind(path: str) -> str:
    """What ``medinr info`` reads ``path`` as: :data:`CHECKPOINT` (a ``.inr`` name or a safetensors file),
    :data:`KSPACE` (what ``reconstruct`` reads as k-space: :func:`~medinr.mri.kspace_io.is_kspace_file`), else
    :data:`IMAGE`."""
    from medinr.mri.kspace_io import is_kspace_file

    p = Path(path)
    if p.suffix.lower() == ".inr" or (p.is_file() and starts_as_safetensors(p)):
        return CHECKPOINT
    return KSPACE if is_kspace_file(p) else IMAGE


def geometry_record(geometry: Geometry) -> dict[str, Any]:
    """Shape, voxel size (mm), field of view (mm), orientation codes (RAS+ world) and affine of a grid."""
    from nibabel.orientations import aff2axcodes

    nd = geometry.ndim
    codes = "".join(c or "?" for c in aff2axcodes(geometry.affine))[:nd]
    spacing = [float(v) for v in geometry.spacing]
    return {"shape": list(geometry.shape), "spacing_mm": spacing,
            "fov_mm": [float(n * s) for n, s in zip(geometry.shape, spacing)], "orientation": codes,
            "affine": geometry.affine.tolist()}


def _geometry_lines(record: dict) -> list[str]:
    sp = ", ".join(f"{s:.4g}" for s in record["spacing_mm"])
    fov = " x ".join(f"{v:.4g}" for v in record["fov_mm"])
    lines = [f"geometry:  shape {tuple(record['shape'])}, spacing ({sp}) mm, field of view {fov} mm, "
             f"axes towards {record['orientation']}"]
    return lines + ["           " + "  ".join(f"{v:9.4f}" for v in row) for row in record["affine"]]


def image_record(array: np.ndarray, geometry: Geometry) -> dict[str, Any]:
    """An image's grid and values (of the magnitude, for complex data)."""
    values = np.abs(array) if np.iscomplexobj(array) else array
    lo, hi = np.percentile(values, [0.5, 99.5])
    return {"kind": IMAGE, "dtype": "complex" if np.iscomplexobj(array) else "real",
            "geometry": geometry_record(geometry),
            "values": {"min": float(values.min()), "max": float(values.max()), "percentile_0.5": float(lo),
                       "percentile_99.5": float(hi), "zero_fraction": float(np.mean(values == 0))}}


def kspace_record(measured: Any) -> dict[str, Any]:
    """Coils, grid and sampling of measured k-space (Cartesian or not), as ``reconstruct`` would read it."""
    from medinr.mri.measured import MeasuredKspace, acquired_box

    record: dict[str, Any] = {"kind": KSPACE, "geometry": geometry_record(measured.geometry),
                              "noise_scan": None if measured.noise is None else int(measured.noise.shape[-1]),
                              "meta": measured.meta}
    if isinstance(measured, MeasuredKspace):
        acquired = measured.acquired()
        box = acquired_box(acquired)
        record.update(trajectory="cartesian", coils=int(measured.kspace.shape[0]),
                      mask="stored" if measured.mask is not None else "inferred from the non-zero samples",
                      acquired=int(acquired.sum()), grid_samples=int(acquired.size),
                      acceleration=float(acquired.size / max(int(acquired.sum()), 1)),
                      fully_sampled_box=None if box is None else [[s.start, s.stop] for s in box])
    else:
        record.update(trajectory=str(measured.meta.get("trajectory", "non-Cartesian")),
                      coils=int(measured.samples.shape[0]), readouts=int(measured.samples.shape[1]),
                      samples_per_readout=int(measured.samples.shape[2]), trajectory_units=measured.units)
    return record


def _file_lines(record: dict, path: str) -> list[str]:
    lines = [f"file:      {terminal_safe(path)}"]
    if record["kind"] == IMAGE:
        v = record["values"]
        lines.append(f"kind:      {record['dtype']} image")
        lines += _geometry_lines(record["geometry"])
        what = "magnitude" if record["dtype"] == "complex" else "values"
        lines.append(f"{what + ':':<11}min {v['min']:.4g}, max {v['max']:.4g}, 0.5-99.5 % {v['percentile_0.5']:.4g}"
                     f"..{v['percentile_99.5']:.4g}, {100 * v['zero_fraction']:.1f} % zero")
        return lines
    lines.append(f"kind:      {record['trajectory']} k-space, {record['coils']} coil"
                 f"{'s' if record['coils'] != 1 else ''}")
    lines += _geometry_lines(record["geometry"])
    if record["trajectory"] == "cartesian":
        box = record["fully_sampled_box"]
        sampling = (f"{record['acquired']} of {record['grid_samples']} grid samples ({record['acceleration']:.2f}x; "
                    f"mask {record['mask']})")
        lines.append(f"sampling:  {sampling}")
        lines.append("           " + ("fully sampled inside " + " x ".join(f"{a}:{b}" for a, b in box)
                                      if box is not None else "undersampled (reconstruct keeps this sampling)"))
    else:
        lines.append(f"sampling:  {record['readouts']} readouts x {record['samples_per_readout']} samples "
                     f"(trajectory stored in {terminal_safe(str(record['trajectory_units']))} units)")
    if record["noise_scan"]:
        lines.append(f"noise:     a noise scan of {record['noise_scan']} samples per coil")
    if record["meta"]:
        lines.append(f"extra:     {_js(record['meta'])}")
    return lines


def run(request: InfoRequest) -> AppResult:
    """The report (or the raw JSON), composed whole: it is printed whole or not at all."""
    kind = input_kind(request.path)
    if kind == CHECKPOINT:
        from medinr.checkpoint import read_metadata_and_count  # (torch: the header names a family of the zoo)

        meta, counted = read_metadata_and_count(request.path)  # every field checked before anything is composed
        lines = describe(meta, request.path) + _weights_line(request.path, counted)
    elif kind == KSPACE:
        from medinr.mri.kspace_io import load_kspace

        meta = kspace_record(load_kspace(request.path, matrix=request.matrix, fov_mm=request.fov_mm))
        lines = _file_lines(meta, request.path)
    else:
        from medinr.io import load_image

        meta = image_record(*load_image(request.path))
        lines = _file_lines(meta, request.path)
    text = dumps_strict(meta, indent=2, ensure_ascii=True) if request.raw else "\n".join(lines)
    return AppResult(record=meta, summary=text)
