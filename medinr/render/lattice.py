"""The cached-lattice tier: a continuous image evaluated once on a grid, then any plane drawn by interpolation.

Building the lattice is a generator (one slab of the grid per step) so that a viewer runs it in a worker thread
with bounded memory and can stop it; planes are then sampled by trilinear interpolation of the stored values
(``grid_sample``, as fast as ``scipy.ndimage.map_coordinates``), which costs the same for every model family.
A lattice can be kept in a cache file beside its checkpoint: safetensors (raw float32 and a JSON header in the one
header schema, :class:`medinr.schema.LatticeHeader`; never pickle), tied to the checkpoint by its SHA-256 so that a
stale, foreign or damaged file is refused (and rebuilt by :func:`cached_lattice_steps`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.geometry import Geometry, sample_grid
from medinr.io import atomic_path
from medinr.models.base import DEFAULT_CHUNK
from medinr.registration.jacobian import jacobian_determinant
from medinr.render.planes import Plane, shape2
from medinr.render.products import check_plane, resolve_component, to_component, volume_geometry
from medinr.schema import LATTICE_FORMAT, LATTICE_VERSION, LatticeHeader, header_text, read_safetensors_header
from medinr.validation import show

#: Largest lattice (voxels per channel): 2^24 float32 is 64 MB, a 1 mm brain fits (8.7 M voxels).
LATTICE_VOXELS = 1 << 24
#: Seconds a lattice build may take (estimated from a probe); a slower model gets a uniformly coarser lattice.
LATTICE_SECONDS = 10.0
CACHE_FORMAT = LATTICE_FORMAT
CACHE_VERSION = LATTICE_VERSION
CACHE_SUFFIX = ".lattice"
_META_KEY = "medinr_lattice"


@dataclass(eq=False)
class CachedLattice:
    """Values of a continuous image at every point of ``geometry`` and how to interpolate them.

    Attributes
    ----------
    geometry : Geometry
        The lattice (usually the training grid); its affine places each point in world mm.
    values : ndarray
        ``(C, *shape)`` float32 in output units, channels first (one contiguous array per channel).
    kind : str
        The image's output kind ('intensity', 'complex', 'displacement').
    to_network : ndarray
        ``(ndim+1, ndim+1)`` world-mm -> network matrix of the image, for the same "inside" test as the
        exact path (points further than ``margin`` past [-1, 1] are blank).
    margin : ndarray or None
        Per-axis margin in network units; None: no limit (bare models).
    checkpoint_sha256 : str or None
        The checkpoint file this lattice was computed from (what a cache file is checked against).
    seconds : float
        Time the build took.
    """

    geometry: Geometry
    values: np.ndarray
    kind: str
    to_network: np.ndarray
    margin: np.ndarray | None
    checkpoint_sha256: str | None = None
    seconds: float = 0.0
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # derived scalar lattices, e.g. 'jacobian'

    @property
    def ndim(self) -> int:
        return self.geometry.ndim

    @property
    def spacing_mm(self) -> float:
        """The coarsest lattice step, mm: a view with finer pixels needs more than the lattice holds."""
        return float(self.geometry.spacing[: self.ndim].max())

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + sum(v.nbytes for v in self.extra.values()))

    def holds(self, pixel_mm: float) -> bool:
        """True when pixels of ``pixel_mm`` mm need no more detail than the lattice has."""
        return float(pixel_mm) >= self.spacing_mm * (1 - 1e-6)

    def has(self, component: str | int) -> bool:
        """True if :meth:`render` can draw ``component`` now ('jacobian' needs :func:`jacobian_steps` first)."""
        return component != "jacobian" or "jacobian" in self.extra

    def render(self, plane: Plane, shape: Sequence[int], component: str | int = "auto") -> np.ndarray:
        """``plane`` sampled on ``shape`` = (H, W) by trilinear interpolation: ``(H, W)`` float32 (the fast frame).

        Interpolation is ``grid_sample`` through :func:`medinr.geometry.sample_grid` (torch releases the GIL, so
        a worker thread leaves the UI responsive); points past the image's margin are blank, as in the exact path.
        """
        if plane.ndim != self.ndim:
            raise MedinrError(f"a {plane.ndim}D plane cannot slice a {self.ndim}D lattice")
        h, w = shape2(shape)
        pix = plane.pixel_matrix((h, w))  # (nd+1, 3): (r, c, 1) -> world
        to_lattice = self.geometry.world_to_network_affine @ pix
        grid = _plane_grid(to_lattice, h, w)
        source = self.extra["jacobian"][None] if component == "jacobian" else self.values
        sampled = sample_grid(torch.from_numpy(source), grid).numpy()
        out = sampled[..., 0] if component == "jacobian" else to_component(sampled, self.kind, component)
        if self.margin is not None:
            to_net, bound = self.to_network @ pix, 1.0 + self.margin + 1e-6
            if not _corners_inside(to_net, h, w, bound):
                net = _plane_grid(to_net, h, w).abs_()
                inside = (net <= torch.as_tensor(bound, dtype=net.dtype)).all(-1).numpy()
                out = np.where(inside, out, np.float32(0.0))
        return np.ascontiguousarray(out, dtype=np.float32)

    def volume(self, component: str | int = "auto") -> np.ndarray:
        """The lattice itself as one scalar volume ``shape`` (what a 3D view renders)."""
        if component == "jacobian":
            return self.extra["jacobian"]
        return to_component(np.moveaxis(self.values, 0, -1), self.kind, component)


def _corners_inside(matrix: np.ndarray, h: int, w: int, bound: np.ndarray) -> bool:
    """Whether every pixel of the plane is within ``bound`` in each axis: the test at its four corners suffices
    (the pixels are an affine image of a rectangle, the box is convex), and spares the per-pixel mask."""
    rc = np.array([[0, 0, 1], [0, w - 1, 1], [h - 1, 0, 1], [h - 1, w - 1, 1]], dtype=np.float64)
    corners = rc @ np.asarray(matrix[:-1], dtype=np.float64).T
    return bool((np.abs(corners) <= np.asarray(bound, dtype=np.float64)).all())


def _plane_grid(matrix: np.ndarray, h: int, w: int) -> torch.Tensor:
    """``matrix @ (r, c, 1)`` for every pixel: ``(H, W, nd)`` float32 (``matrix`` is ``(nd+1, 3)``)."""
    m = torch.as_tensor(matrix[:-1], dtype=torch.float32)
    r = torch.arange(h, dtype=torch.float32)[:, None, None]
    c = torch.arange(w, dtype=torch.float32)[None, :, None]
    return r * m[:, 0] + c * m[:, 1] + m[:, 2]


# -- planning and building -------------------------------------------------------------------------------
def _world_to_network(image: ContinuousImage) -> np.ndarray:
    """The image's world -> network map as a matrix (every frame is affine)."""
    n = image.ndim
    pts = np.vstack([np.zeros(n), np.eye(n)])
    net = np.asarray(image.to_network(pts), dtype=np.float64)
    m = np.eye(n + 1)
    m[:n, n] = net[0]
    m[:n, :n] = (net[1:] - net[0]).T
    return m


def seconds_per_point(image: ContinuousImage, probe: int = DEFAULT_CHUNK) -> float:
    """Seconds per world point of :meth:`ContinuousImage.sample` on one chunk (after a warm-up).

    The smaller of wall time and CPU time per torch thread: on a machine shared with other work the wall time
    overstates what the model costs, and the lattice would be planned coarser than it needs to be.
    """
    lo, hi = image.bounds()
    pts = lo + (hi - lo) * np.random.default_rng(0).random((probe, image.ndim))
    image.sample(pts[:256])
    wall, cpu = time.perf_counter(), time.process_time()
    image.sample(pts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return min(wall, cpu / max(1, torch.get_num_threads())) / probe


def plan_lattice(
    image: ContinuousImage,
    max_voxels: int = LATTICE_VOXELS,
    seconds: float | None = LATTICE_SECONDS,
    spacing_mm: float | None = None,
    finer: int = 2,
    point_seconds: float | None = None,
) -> Geometry:
    """The lattice to cache: ``finer`` times the training grid's resolution where the budgets allow, else the
    training grid (or ``spacing_mm``), made uniformly coarser only to fit them.

    ``max_voxels`` bounds memory; ``seconds`` bounds the build time estimated from ``point_seconds`` (seconds
    per world point; measured by :func:`seconds_per_point` when not given; None ``seconds``: no time limit).
    Measure once, in a quiet thread: a probe taken while the same process draws frames overstates the cost and
    would plan a coarser lattice than the model needs (the viewer plans when a file opens, before it draws).
    A lattice-bound family (Conv-INR) always uses its own lattice, which holds all it has.
    """
    if image.lattice_bound and image.geometry is not None:
        return image.geometry
    base = volume_geometry(image, spacing_mm=spacing_mm)
    if seconds is not None:
        per_point = point_seconds if point_seconds is not None else seconds_per_point(image)
        max_voxels = min(max_voxels, max(512, int(seconds / max(per_point, 1e-12))))
    if finer > 1 and spacing_mm is None:
        fine = volume_geometry(image, spacing_mm=float(base.spacing[: base.ndim].min()) / finer)
        if np.prod(fine.shape) <= max_voxels:
            return fine
    if np.prod(base.shape) <= max_voxels:
        return base
    return volume_geometry(image, max_voxels=max_voxels, spacing_mm=spacing_mm)


def lattice_steps(
    image: ContinuousImage, geometry: Geometry | None = None, chunk: int | None = None
) -> Generator[float, None, CachedLattice]:
    """Build a :class:`CachedLattice` one slab (first-axis plane) at a time: yields the fraction done.

    Memory stays bounded by one slab of world points and network batches besides the lattice itself. Drive it
    with :func:`build_lattice`, or in a worker thread that may stop between slabs.
    """
    image = ContinuousImage.of(image)
    geom = geometry if geometry is not None else plan_lattice(image)
    if geom.ndim != image.ndim:
        raise MedinrError(f"a {geom.ndim}D lattice cannot hold a {image.ndim}D image")
    start = time.perf_counter()
    values = np.empty((image.model.out_features, *geom.shape), dtype=np.float32)
    vox = torch.stack(
        torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in geom.shape[1:]], indexing="ij"), -1
    )
    for i in range(geom.shape[0]):
        ijk = torch.cat([torch.full((*vox.shape[:-1], 1), float(i), dtype=torch.float64), vox], -1)
        values[:, i] = np.moveaxis(image.sample(geom.voxel_to_world(ijk), chunk=chunk, outside=None), -1, 0)
        yield (i + 1) / geom.shape[0]
    return CachedLattice(
        geometry=geom,
        values=values,
        kind=image.kind,
        to_network=_world_to_network(image),
        margin=image.inside_margin(),
        seconds=time.perf_counter() - start,
    )


def jacobian_steps(image: ContinuousImage, lattice: CachedLattice, chunk: int = 8192) -> Generator[float, None, None]:
    """Add det(I + du/dx) (:func:`jacobian_determinant`) at every lattice point, a slab at a time."""
    resolve_component(image, "jacobian")
    geom = lattice.geometry
    out = np.empty(geom.shape, dtype=np.float32)
    vox = geom.voxel_grid(dtype=torch.float64)
    for i in range(geom.shape[0]):
        out[i] = jacobian_determinant(image, geom.voxel_to_world(vox[i]), chunk=chunk)
        yield (i + 1) / geom.shape[0]
    lattice.extra["jacobian"] = out


def run_steps(steps: Generator[Any, None, Any]) -> Any:
    """Drive a step generator to its end and return its value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def build_lattice(
    image: ContinuousImage, geometry: Geometry | None = None, chunk: int | None = None
) -> CachedLattice:
    """:func:`lattice_steps` run to the end in the calling thread."""
    return run_steps(lattice_steps(image, geometry, chunk))


def render_fast(
    lattice: CachedLattice, image: ContinuousImage, plane: Plane, shape: Sequence[int], component: str | int = "auto"
) -> np.ndarray:
    """The cached-tier frame of ``plane`` (checks the plane and the component against ``image``)."""
    check_plane(image, plane)
    comp = resolve_component(image, component)
    if not lattice.has(comp):
        run_steps(jacobian_steps(image, lattice))
    return lattice.render(plane, shape, comp)


# -- cache files -----------------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_path_for(checkpoint: str | os.PathLike, fallback_dir: str | os.PathLike | None = None) -> Path:
    """Where a checkpoint's lattice is cached: beside it (``NAME.inr.lattice``), else in ``fallback_dir``.

    The fallback (for a read-only folder such as installed package data) names the file by the checkpoint's hash.
    """
    ckpt = Path(checkpoint)
    beside = ckpt.with_name(ckpt.name + CACHE_SUFFIX)
    if fallback_dir is None or os.access(ckpt.parent, os.W_OK):
        return beside
    return Path(fallback_dir) / f"{file_sha256(ckpt)}{CACHE_SUFFIX}"


def save_lattice(path: str | os.PathLike, lattice: CachedLattice) -> Path:
    """Write ``lattice`` (channels only) as a safetensors cache file, atomically, with the one header schema
    (:class:`medinr.schema.LatticeHeader`): what it writes, :func:`load_lattice` reads back."""
    from safetensors.numpy import save_file

    if not lattice.checkpoint_sha256:
        raise MedinrError("only a lattice of a checkpoint file can be cached (its SHA-256 ties the two)")
    header = LatticeHeader(checkpoint_sha256=lattice.checkpoint_sha256, geometry=lattice.geometry, kind=lattice.kind,
                           to_network=lattice.to_network, margin=lattice.margin, seconds=float(lattice.seconds))
    header.values_shape(int(lattice.values.shape[0]))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = header_text(header.to_json(), f"{target} was not written")
    with atomic_path(target) as tmp:
        save_file({"values": np.ascontiguousarray(lattice.values, dtype=np.float32)}, str(tmp),
                  metadata={_META_KEY: text})
    return target


def _values_entry(p: Path, tensors: dict[str, dict], header: LatticeHeader) -> None:
    """The one tensor must be float32 ``values`` of the header's grid and channels (checked before reading)."""
    entry = tensors.get("values")
    if set(tensors) != {"values"} or entry.get("dtype") != "F32" or not isinstance(entry.get("shape"), list):
        raise MedinrError(f"{p} is a damaged lattice cache: it must hold one float32 tensor 'values', "
                          f"it holds {show(sorted(tensors))}")
    shape = tuple(entry["shape"])
    try:
        expected = header.values_shape(shape[0]) if shape and isinstance(shape[0], int) else None
    except MedinrError as exc:
        raise MedinrError(f"{p} is a damaged lattice cache: {exc}") from None
    if shape != expected:
        raise MedinrError(f"{p} is a damaged lattice cache: values {show(list(shape))} do not match its grid "
                          f"{list(header.geometry.shape)}")


def load_lattice(path: str | os.PathLike, checkpoint_sha256: str) -> CachedLattice:
    """Read a cache file written by :func:`save_lattice` for the checkpoint with ``checkpoint_sha256``.

    The header is checked in full against :class:`medinr.schema.LatticeHeader` (geometry, kind, an invertible
    homogeneous ``to_network``, margin) and the tensor's name, dtype and shape against it before any value is read.

    Raises
    ------
    MedinrError
        If the file is not a medinr lattice (foreign, damaged, pickled) or belongs to another checkpoint (stale).
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    meta, tensors = read_safetensors_header(p, "medinr lattice cache")
    if _META_KEY not in meta:
        raise MedinrError(f"{p} is not a medinr lattice cache (no {_META_KEY} header)")
    header = LatticeHeader.parse(meta[_META_KEY], str(p))
    if header.checkpoint_sha256 != checkpoint_sha256:
        raise MedinrError(f"{p} is stale: it was computed from another checkpoint")
    try:
        _values_entry(p, tensors, header)
        with safe_open(str(p), framework="numpy") as f:
            values = f.get_tensor("values")
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError, MedinrError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MedinrError(reason if isinstance(exc, MedinrError) else f"{p} is a damaged lattice cache ({reason})") \
            from None
    if not np.isfinite(values).all():
        raise MedinrError(f"{p} is a damaged lattice cache: its values are not all finite")
    return CachedLattice(geometry=header.geometry, values=values, kind=header.kind, to_network=header.to_network,
                         margin=header.margin, checkpoint_sha256=checkpoint_sha256, seconds=header.seconds)


def cached_lattice_steps(
    image: ContinuousImage,
    checkpoint: str | os.PathLike,
    cache: str | os.PathLike | None,
    geometry: Geometry | None = None,
) -> Generator[float, None, CachedLattice]:
    """The lattice of a checkpoint file: read from ``cache`` when valid, else built (yielding progress) and written.

    A stale or foreign cache file is refused (and replaced); a cache that cannot be written is skipped.
    """
    sha = file_sha256(checkpoint)
    if cache is not None and Path(cache).is_file():
        try:
            return load_lattice(cache, sha)
        except MedinrError:
            pass  # rebuilt below and written over
    lattice = yield from lattice_steps(image, geometry)
    lattice.checkpoint_sha256 = sha
    if cache is not None:
        try:
            save_lattice(cache, lattice)
        except Exception:  # the cache is optional: a read-only place, a full disk, a file-size limit or a
            pass  # writer error (SafetensorError) all just skip caching; the lattice still lives in memory
    return lattice
