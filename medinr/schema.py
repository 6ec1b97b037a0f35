"""The one header schema: what a ``.inr`` checkpoint and a ``.inr.lattice`` cache say about a continuous image, and
the rules that hold between the parts of a :class:`~medinr.continuous.ContinuousImage`.

Everything that can be wrong with these files or objects is decided here, once:

- :class:`OutputMeaning`: what the output channels mean (kind, scaling back to the input's units, the affine part of
  a displacement) and how many channels each kind needs (:func:`kind_channels`);
- :func:`check_layout`: frame, geometry or world box, coordinate dimensions and channels agree (used by
  ``ContinuousImage`` itself, by :class:`CheckpointHeader` and by :class:`LatticeHeader`);
- :class:`CheckpointHeader`: the JSON header of a checkpoint, typed; :meth:`CheckpointHeader.parse` reads one;
- :class:`LatticeHeader`: the JSON header of a lattice cache, typed, with its tensor;
- :func:`read_safetensors_header`: a safetensors file's own JSON header, read strictly (a tensor named twice is
  refused; the ``safetensors`` library keeps the last one silently).

JSON is read by :func:`medinr.jsonsafe.loads`: bounded depth and size, no duplicate keys, no NaN. Parsing checks
JSON types with the field's path in the message ("output.scale must be a number"); the dataclasses then check
meaning. Every refusal is one :class:`MedinrError` line that names the file.

Header format 2 names the coordinate frame ``frame`` (as the attribute); format 1 called it ``coords``, which is
still read (both may be given if they agree).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medinr import jsonsafe
from medinr.errors import MedinrError
from medinr.geometry import Geometry, WorldBox
from medinr.textsafe import dumps_strict
from medinr.validation import MAX_IMAGE_AXIS, check_model_options, show

if TYPE_CHECKING:  # torch only where a displacement is evaluated: reading a header needs none (medinr info)
    import torch

FORMAT = "medinr-inr"
#: 2: the frame is written as ``frame`` (format 1: ``coords``, still read).
FORMAT_VERSION = 2
LATTICE_FORMAT = "medinr-lattice"
LATTICE_VERSION = 1
#: What the output channels mean: a real intensity, a complex image (real, imaginary) or a displacement in mm.
OUTPUT_KINDS = ("intensity", "complex", "displacement")
#: How world millimetres become network coordinates: through the training grid ('network'), through a world
#: box ('world_box', registration fields), or not at all ('identity', a bare model in its own coordinates).
FRAMES = ("network", "world_box", "identity")
#: Deepest nesting of a header's JSON (a checkpoint needs 4 plus what ``extra`` holds).
MAX_DEPTH = jsonsafe.MAX_DEPTH
#: Largest medinr header, characters (a real one is a few kB).
MAX_HEADER_CHARS = 4 << 20
#: Largest safetensors header read (the tensor table and the metadata), bytes.
MAX_FILE_HEADER = 16 << 20


class _Bad(Exception):
    """A field that is not what the schema says (becomes one MedinrError line naming the file)."""


def kind_channels(kind: str, ndim: int) -> int | None:
    """Channels an output of ``kind`` needs in ``ndim`` dimensions (None: any, for intensities)."""
    return {"complex": 2, "displacement": ndim}.get(kind)


def homogeneous(matrix: Any, what: str, n: int | None = None) -> np.ndarray:
    """``matrix`` as a finite ``(n+1, n+1)`` array whose last row is ``[0, ..., 0, 1]`` (n = 2 or 3; None: either).

    Raises
    ------
    MedinrError
        For anything else, naming ``what``.
    """
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise MedinrError(f"{what} must be a matrix of numbers") from None
    sizes = (3, 4) if n is None else (n + 1,)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] not in sizes:
        want = " or ".join(f"{s}x{s}" for s in sizes)
        raise MedinrError(f"{what} must be a {want} matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise MedinrError(f"{what} must be finite")
    bottom = np.eye(m.shape[0])[-1]
    if not np.array_equal(m[-1], bottom):
        raise MedinrError(f"{what} must end with the row {bottom.astype(int).tolist()}, got {m[-1].tolist()}")
    return m


@dataclass
class OutputMeaning:
    """``value = network * scale + offset`` is in the units of the data the network was fitted to.

    Attributes
    ----------
    kind : {'intensity', 'complex', 'displacement'}
    scale, offset : float
        Back to input units (intensities), or mm per network unit (displacements; offset 0).
    units : str or None
        Free text for displays ('mm' for displacements).
    affine : list of lists or None
        Displacements only: a homogeneous ``(ndim + 1, ndim + 1)`` world-mm matrix ``M`` of a global (affine)
        stage, so that the value at ``x`` is ``M x - x + network * scale``: the full displacement, affine
        part included (registration's ``--affine``). None: no global part.
    """

    kind: str = "intensity"
    scale: float = 1.0
    offset: float = 0.0
    units: str | None = None
    affine: list[list[float]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise MedinrError(f"unknown output kind {show(self.kind)} ({', '.join(OUTPUT_KINDS)})")
        try:
            self.scale, self.offset = float(self.scale), float(self.offset)
        except (TypeError, ValueError):
            raise MedinrError(f"output scale and offset must be numbers, got {show(self.scale)}, "
                              f"{show(self.offset)}") from None
        if not (math.isfinite(self.scale) and math.isfinite(self.offset)) or self.scale == 0:
            raise MedinrError(
                f"output scale must be finite and non-zero, offset finite (got {self.scale}, {self.offset})")
        if self.units is not None and (not isinstance(self.units, str) or len(self.units) > 64):
            raise MedinrError(f"output units must be a short string, got {show(self.units)}")
        if self.affine is not None:
            if self.kind != "displacement":
                raise MedinrError("output.affine is only for a displacement")
            self.affine = homogeneous(self.affine, "output.affine").tolist()

    def affine_displacement(self, xyz: torch.Tensor) -> torch.Tensor:
        """``M x - x`` at world points ``(..., ndim)`` mm, in their dtype (zero when there is no affine part)."""
        import torch

        if self.affine is None:
            return torch.zeros_like(xyz)
        m = torch.as_tensor(self.affine, dtype=xyz.dtype, device=xyz.device)
        n = m.shape[0] - 1
        return xyz @ (m[:n, :n] - torch.eye(n, dtype=xyz.dtype, device=xyz.device)).T + m[:n, n]

    def channels(self, ndim: int) -> int | None:
        """Channels this kind needs (None: any, for intensities)."""
        return kind_channels(self.kind, ndim)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "scale": self.scale, "offset": self.offset}
        if self.units is not None:
            out["units"] = self.units
        if self.affine is not None:
            out["affine"] = self.affine
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OutputMeaning":
        """From a header's ``output`` object (keys other than the attributes are ignored, e.g. format 1's
        ``channels``)."""
        if not isinstance(data, dict):
            raise MedinrError("output metadata must be an object")
        return cls(kind=data.get("kind", "intensity"), scale=data.get("scale", 1.0), offset=data.get("offset", 0.0),
                   units=data.get("units"), affine=data.get("affine"))


def check_layout(frame: str, geometry: Geometry | None, world_box: WorldBox | None, output: OutputMeaning,
                 in_features: int, out_features: int) -> int:
    """The rules between the parts of a continuous image; returns its world dimension (2 or 3).

    A 'network' frame needs the training geometry and a 'world_box' frame a world box; geometry, box and the
    model's coordinates have one dimension; a complex output has 2 channels and a displacement one per axis;
    a displacement's affine part is ``(ndim+1, ndim+1)``.
    """
    if frame not in FRAMES:
        raise MedinrError(f"unknown coordinate frame {show(frame)} ({', '.join(FRAMES)})")
    if frame == "network" and geometry is None:
        raise MedinrError("a 'network' frame needs the training geometry")
    if frame == "world_box" and world_box is None:
        raise MedinrError("a 'world_box' frame needs a world box")
    ndim = geometry.ndim if geometry is not None else world_box.ndim if world_box is not None else int(in_features)
    if geometry is not None and world_box is not None and world_box.ndim != geometry.ndim:
        raise MedinrError(f"the world box is {world_box.ndim}D but the geometry is {geometry.ndim}D")
    if in_features != ndim:
        where = "geometry" if geometry is not None else "world box"
        raise MedinrError(f"the model takes {in_features}D coordinates but the {where} is {ndim}D")
    need = output.channels(ndim)
    if need is not None and out_features != need:
        raise MedinrError(f"a {output.kind} output needs {need} channels, the model has {out_features}")
    if output.affine is not None:
        homogeneous(output.affine, f"output.affine of a {ndim}D displacement", ndim)
    return ndim


# -- JSON field readers: the JSON type of each field, named by its path --------------------------------------
def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be an object, got {show(value)}")
    return value


def _number(value: Any, what: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{what} must be a number, got {show(value)}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise _Bad(f"{what} must be a finite{' positive' if positive else ''} number, got {show(value)}")
    return float(value)


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what} must be an integer, got {show(value)}")
    if not low <= value <= high:
        raise _Bad(f"{what} must be in [{low}, {high}], got {value}")
    return value


def _numbers(value: Any, what: str, lengths: tuple[int, ...], positive: bool = False) -> list[float]:
    if not isinstance(value, list) or len(value) not in lengths:
        raise _Bad(f"{what} must be a list of {' or '.join(map(str, lengths))} items, got {show(value)}")
    return [_number(v, f"{what} item", positive) for v in value]


def _matrix(value: Any, what: str) -> list[list[float]]:
    """A square 3x3 or 4x4 list of number lists (its meaning is checked by :func:`homogeneous`)."""
    if not isinstance(value, list) or len(value) not in (3, 4):
        raise _Bad(f"{what} must be a list of 3 or 4 rows, got {show(value)}")
    return [_numbers(row, f"{what} row", (len(value),)) for row in value]


def _geometry(data: Any) -> Geometry | None:
    if data is None:
        return None
    geo = _dict(data, "geometry")
    shape = geo.get("shape")
    if not isinstance(shape, list) or len(shape) not in (2, 3):
        raise _Bad(f"geometry.shape must be a list of 2 or 3 items, got {show(shape)}")
    shape = [_int(n, "geometry.shape item", 1, MAX_IMAGE_AXIS) for n in shape]
    if "affine" not in geo:
        raise _Bad("geometry has no affine (the voxel-to-world matrix)")
    rows = geo["affine"]
    if not isinstance(rows, list) or len(rows) != 4:
        raise _Bad(f"geometry.affine must be a list of 4 rows, got {show(rows)}")
    affine = homogeneous([_numbers(r, "geometry.affine row", (4,)) for r in rows], "geometry.affine", 3)
    geometry = Geometry(shape, affine)
    if "spacing_mm" in geo:
        spacing = _numbers(geo["spacing_mm"], "geometry.spacing_mm", (len(shape),), positive=True)
        if not np.allclose(spacing, geometry.spacing, rtol=1e-3, atol=1e-6):
            raise _Bad(f"geometry.spacing_mm {spacing} does not match the affine")
    return geometry


def _world_box(data: Any) -> WorldBox | None:
    if data is None:
        return None
    box = _dict(data, "world_box")
    lo = _numbers(box.get("lo"), "world_box.lo", (2, 3))
    hi = _numbers(box.get("hi"), "world_box.hi", (len(lo),))
    if any(h < low for low, h in zip(lo, hi)):
        raise _Bad(f"world_box.hi {hi} lies below world_box.lo {lo}")
    return WorldBox(np.asarray(lo), np.asarray(hi))


def _output(data: Any) -> OutputMeaning:
    out = _dict({} if data is None else data, "output")
    kind = out.get("kind", "intensity")
    if kind not in OUTPUT_KINDS:
        raise _Bad(f"output.kind must be one of {', '.join(OUTPUT_KINDS)}, got {show(kind)}")
    scale = _number(out.get("scale", 1.0), "output.scale")
    if scale == 0:
        raise _Bad("output.scale must be non-zero")
    units = out.get("units")
    if units is not None and (not isinstance(units, str) or len(units) > 64):
        raise _Bad(f"output.units must be a short string, got {show(units)}")
    affine = out.get("affine")
    return OutputMeaning(kind, scale, _number(out.get("offset", 0.0), "output.offset"), units,
                         None if affine is None else _matrix(affine, "output.affine"))


def _frame(meta: Mapping[str, Any]) -> str:
    """``frame`` (format 2) or its format-1 name ``coords``; both must agree when both are given."""
    given = {key: meta[key] for key in ("frame", "coords") if key in meta}
    for key, value in given.items():
        if value not in FRAMES:
            raise _Bad(f"{key} must be one of {', '.join(FRAMES)}, got {show(value)}")
    if len(set(given.values())) > 1:
        raise _Bad(f"frame {given['frame']!r} and its format-1 name coords {given['coords']!r} disagree")
    return next(iter(given.values()), "network")


def _version(meta: Mapping[str, Any], source: str, tag: str, newest: int, key: str = "format_version") -> int:
    if not isinstance(meta, dict) or meta.get("format") != tag:
        what = "checkpoint" if tag == FORMAT else "lattice cache"
        raise MedinrError(f"{source} is not a medinr {what} (format tag missing)")
    version = meta.get(key)
    if isinstance(version, bool) or not isinstance(version, int):
        raise MedinrError(f"{source} has damaged metadata: {key} must be an integer, got {show(version)}")
    if version > newest:
        raise MedinrError(f"{source} was written by a newer medinr (format {version}); please upgrade")
    if version < 1:
        raise MedinrError(f"{source} has an unknown format version {version} (this medinr reads 1 to {newest})")
    return version


@dataclass(frozen=True)
class ModelSpec:
    """A model by name and config (``build_model(family, **config)``; the config holds in/out features)."""

    family: str
    config: dict[str, Any]

    @property
    def in_features(self) -> int:
        return int(self.config["in_features"])

    @property
    def out_features(self) -> int:
        return int(self.config["out_features"])

    def options(self) -> dict[str, Any]:
        """The config without in/out features: the family's own options."""
        return {k: v for k, v in self.config.items() if k not in ("in_features", "out_features")}


def _model(data: Any, families: Mapping[str, type]) -> ModelSpec:
    model = _dict(data, "model")
    family, config = model.get("family"), _dict(model.get("config"), "model.config")
    if not isinstance(family, str) or family not in families:
        raise _Bad(f"unknown model family {show(family)}")
    for key in ("in_features", "out_features"):
        _int(config.get(key), f"model.config.{key}", 1, 64)
    spec = ModelSpec(family, dict(config))
    check_model_options(families[family], spec.in_features, spec.out_features, spec.options())
    return spec


@dataclass(frozen=True)
class CheckpointHeader:
    """The JSON header of a ``.inr`` checkpoint: everything about a continuous image except its weights.

    Attributes
    ----------
    model : ModelSpec
        Family and config (checked against the family's typed config when read).
    output : OutputMeaning
    frame : {'network', 'world_box', 'identity'}
        How world mm become network coordinates (format 1 wrote it as ``coords``).
    geometry : Geometry or None
        The training grid (shape, voxel-to-world affine).
    world_box : WorldBox or None
        The box of a 'world_box' frame.
    extra : dict
        Free JSON (settings and metrics of the fit), at most :data:`MAX_DEPTH` deep as a whole.
    medinr_version : str
    format_version : int
    """

    model: ModelSpec
    output: OutputMeaning = field(default_factory=OutputMeaning)
    frame: str = "network"
    geometry: Geometry | None = None
    world_box: WorldBox | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    medinr_version: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check_layout(self.frame, self.geometry, self.world_box, self.output, self.model.in_features,
                     self.model.out_features)

    def to_json(self) -> dict[str, Any]:
        """The header as written (format :data:`FORMAT_VERSION`)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "medinr_version": self.medinr_version,
            "model": {"family": self.model.family, "config": self.model.config},
            "output": self.output.to_dict(),
            "geometry": None if self.geometry is None else self.geometry.to_dict(),
            "frame": self.frame,
            "world_box": None if self.world_box is None else self.world_box.to_dict(),
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, meta: Any, source: str, families: Mapping[str, type]) -> "CheckpointHeader":
        """Check a parsed header against the schema (every field, then the rules between them).

        ``families`` are the model families this medinr knows (``MODEL_REGISTRY``); a config is checked against
        its family's typed config. Unknown top-level keys are ignored.
        """
        version = _version(meta, source, FORMAT, FORMAT_VERSION)
        try:
            if not isinstance(meta.get("medinr_version", ""), str):
                raise _Bad(f"medinr_version must be a string, got {show(meta['medinr_version'])}")
            return cls(model=_model(meta.get("model"), families), output=_output(meta.get("output")),
                       frame=_frame(meta), geometry=_geometry(meta.get("geometry")),
                       world_box=_world_box(meta.get("world_box")), extra=_dict(meta.get("extra") or {}, "extra"),
                       medinr_version=meta.get("medinr_version", ""), format_version=version)
        except (_Bad, MedinrError) as exc:
            raise MedinrError(f"{source} has damaged metadata: {exc}") from None

    @classmethod
    def parse(cls, text: str, source: str, families: Mapping[str, type]) -> "CheckpointHeader":
        """Read header text (strict JSON, :data:`MAX_DEPTH` deep at most) and check it (:meth:`from_json`)."""
        meta = jsonsafe.loads(text, f"the metadata of {source}", MAX_DEPTH, MAX_HEADER_CHARS)
        return cls.from_json(meta, source, families)


def header_text(header: Mapping[str, Any], what: str) -> str:
    """Strict JSON of a header to write; refuses what :meth:`CheckpointHeader.parse` would refuse to read back
    (nesting beyond :data:`MAX_DEPTH`, more than :data:`MAX_HEADER_CHARS`)."""
    text = dumps_strict(header)  # non-finite metrics in ``extra`` are written as "inf"/"nan"
    depth = jsonsafe.nesting_depth(text)
    if depth > MAX_DEPTH or len(text) > MAX_HEADER_CHARS:
        raise MedinrError(f"{what}: the metadata is nested {depth} deep in {len(text)} characters (at most "
                          f"{MAX_DEPTH} deep and {MAX_HEADER_CHARS} characters); keep extra metadata shallow")
    return text


# -- lattice caches ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatticeHeader:
    """The JSON header of a lattice cache (``NAME.inr.lattice``): what its ``values`` tensor holds.

    Attributes
    ----------
    checkpoint_sha256 : str
        SHA-256 of the checkpoint file the lattice was computed from (64 hex digits).
    geometry : Geometry
        The lattice; its affine places each point in world mm.
    kind : str
        The image's output kind; the tensor has :func:`kind_channels` channels (any for intensities).
    to_network : ndarray
        Homogeneous, invertible ``(ndim+1, ndim+1)`` world-mm -> network matrix of the image.
    margin : ndarray or None
        Per-axis margin past [-1, 1] (network units, finite, >= 0); None: no limit.
    seconds : float
        Time the build took.
    """

    checkpoint_sha256: str
    geometry: Geometry
    kind: str
    to_network: np.ndarray
    margin: np.ndarray | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        sha = self.checkpoint_sha256
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise MedinrError(f"checkpoint_sha256 must be 64 hex digits, got {show(sha)}")
        if self.kind not in OUTPUT_KINDS:
            raise MedinrError(f"kind must be one of {', '.join(OUTPUT_KINDS)}, got {show(self.kind)}")
        n = self.geometry.ndim
        m = homogeneous(self.to_network, f"to_network of a {n}D lattice", n)
        if abs(np.linalg.det(m)) < 1e-12:
            raise MedinrError("to_network is singular")
        object.__setattr__(self, "to_network", m)
        if self.margin is not None:
            margin = np.asarray(self.margin, dtype=np.float64)
            if margin.shape != (n,) or not np.isfinite(margin).all() or (margin < 0).any():
                raise MedinrError(f"margin must be {n} finite non-negative numbers, got {show(self.margin)}")
            object.__setattr__(self, "margin", margin)
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise MedinrError(f"seconds must be a finite non-negative number, got {show(self.seconds)}")

    def values_shape(self, channels: int) -> tuple[int, ...]:
        """The shape the ``values`` tensor must have: ``(C, *geometry.shape)``, C fixed by the kind."""
        need = kind_channels(self.kind, self.geometry.ndim)
        if need is not None and channels != need:
            raise MedinrError(f"a {self.kind} lattice needs {need} channels, it has {channels}")
        if not 1 <= channels <= 64:
            raise MedinrError(f"a lattice has 1 to 64 channels, it has {channels}")
        return (channels, *self.geometry.shape)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LATTICE_FORMAT,
            "version": LATTICE_VERSION,
            "checkpoint_sha256": self.checkpoint_sha256,
            "geometry": self.geometry.to_dict(),
            "kind": self.kind,
            "to_network": self.to_network.tolist(),
            "margin": None if self.margin is None else self.margin.tolist(),
            "seconds": float(self.seconds),
        }

    @classmethod
    def parse(cls, text: str, source: str) -> "LatticeHeader":
        """Read and check a cache header (every field present and typed, then its meaning)."""
        meta = jsonsafe.loads(text, f"{source} is a damaged lattice cache", MAX_DEPTH, MAX_HEADER_CHARS)
        _version(meta, source, LATTICE_FORMAT, LATTICE_VERSION, key="version")
        try:
            if meta.get("geometry") is None:
                raise _Bad("it has no geometry")
            sha, kind = meta.get("checkpoint_sha256"), meta.get("kind")
            margin = meta.get("margin")
            return cls(checkpoint_sha256=sha, geometry=_geometry(meta["geometry"]), kind=kind,
                       to_network=_matrix(meta.get("to_network"), "to_network"),
                       margin=None if margin is None else _numbers(margin, "margin", (2, 3)),
                       seconds=_number(meta.get("seconds", 0.0), "seconds"))
        except (_Bad, MedinrError) as exc:
            raise MedinrError(f"{source} is a damaged lattice cache: {exc}") from None


# -- safetensors files -------------------------------------------------------------------------------------
def _header_length(head: bytes, size: int) -> int | None:
    """The JSON header length that a safetensors file of ``size`` bytes declares in its first 8 bytes ``head``;
    None when it is not one (too short, or a length outside ``2 .. min(MAX_FILE_HEADER, size - 8)``)."""
    n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else -1
    return n if 2 <= n <= min(MAX_FILE_HEADER, size - 8) else None


def starts_as_safetensors(path: str | os.PathLike) -> bool:
    """Whether ``path`` begins as a safetensors file does: a header length it can hold, then a JSON object (only
    its first 9 bytes are read; :func:`read_safetensors_header` checks the rest)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return _header_length(head, size) is not None and head[8:9] == b"{"


def read_safetensors_header(path: str | os.PathLike, what: str) -> tuple[dict[str, str], dict[str, dict]]:
    """The metadata (text by key) and tensor table of a safetensors file, read from its JSON header only.

    The header is parsed strictly (:func:`medinr.jsonsafe.loads`): a tensor or metadata key given twice is
    refused, where the ``safetensors`` library would keep the last one silently.

    Raises
    ------
    MedinrError
        ``"{path} is not a {what} (...)"`` for a file that is not safetensors (a pickle, a zip, truncated) or
        whose header is damaged.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
            n = _header_length(head, size)
            if n is None:
                declared = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
                raise MedinrError(f"{p} is not a {what} (not a safetensors file: a header of {declared} bytes in a "
                                  f"file of {size})")
            raw = f.read(n)
    except OSError as exc:
        raise MedinrError(f"{p} cannot be read ({exc.strerror or type(exc).__name__})") from None
    table = jsonsafe.loads(raw, f"{p} has a damaged safetensors header", max_depth=4, max_chars=n)
    if not isinstance(table, dict):
        raise MedinrError(f"{p} is not a {what} (its safetensors header is not an object)")
    metadata = table.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise MedinrError(f"{p} is not a {what} (its safetensors metadata is not text)")
    if not all(isinstance(v, dict) for v in table.values()):
        raise MedinrError(f"{p} is not a {what} (a tensor entry is not an object)")
    return metadata, table
