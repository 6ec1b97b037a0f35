"""What a command is asked to do: one typed, checked, picklable request per app, and the files it will write.

A request holds every choice of one run (inputs, settings, seed, device) and nothing of how it was asked
(the output folder is :func:`medinr.apps.publish`'s business). Building one checks every value and imports no
torch, so that ``medinr <command> --help`` and a bad argument answer at once; :func:`medinr.apps.run` hands it
to its app (``medinr.apps.fit``, ``reconstruct``, ``register``), which is where torch comes in. A batch
(one request per case) pickles requests to its workers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from medinr.errors import MedinrError
from medinr.mri.config import CS_METHODS, DEFAULT_BASELINES, DENSITY_METHODS, TRAJECTORIES, InrReconConfig
from medinr.registration.settings import RegistrationSettings

MASK_KINDS = ("random", "equispaced", "poisson")
MAP_KINDS = ("simulated", "espirit")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise MedinrError(message)


def _require_npz_grid(path: str, matrix: tuple | None, fov: tuple | None) -> None:
    """``--matrix``/``--fov`` only for a non-Cartesian ``.npz`` (reconstruct and info read the same files)."""
    _require((matrix is None and fov is None) or path.lower().endswith(".npz"),
             "--matrix and --fov give the image grid of a non-Cartesian .npz file; other inputs carry their own")


@dataclass(frozen=True)
class Request:
    """What every request holds: the seed, the device ('cpu', 'cuda' or 'auto') and whether to show progress."""

    seed: int = 0
    device: str = "auto"
    progress: bool = False

    #: The module whose ``run(request)`` carries the request out.
    app = ""

    def _check_common(self) -> None:
        _require(isinstance(self.seed, int) and 0 <= self.seed < 2**63, f"the seed must be an integer in [0, 2^63), "
                 f"got {self.seed}")

    def outputs(self) -> list[str]:
        """The files the run writes (checked against the output folder before any work)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Every choice, for metrics.json (``settings``) and the checkpoint."""
        return asdict(self)


@dataclass(frozen=True)
class FitRequest(Request):
    """``medinr fit``: an INR fitted to one image (:func:`medinr.image_fit.fit_image`).

    Attributes
    ----------
    image : str
        The image file.
    model, model_options : str, dict
        The family and options over its image defaults.
    steps, lr, batch_size, holdout, footprint
        See :func:`~medinr.image_fit.fit_image` (None: the defaults there, from the family and the image size).
    slice, axis : int or None, int
        Fit one slice of a 3D image.
    """

    image: str = ""
    model: str = "mrgrid"
    model_options: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    holdout: float = 0.1
    footprint: int = 2
    slice: int | None = None
    axis: int = 2

    app = "medinr.apps.fit"

    def __post_init__(self) -> None:
        self._check_common()
        _require(bool(self.image), "an image to fit is needed")
        _require(all(v is None or v >= 1 for v in (self.steps, self.batch_size)),
                 "steps and batch size must be at least 1")
        _require(self.lr is None or (math.isfinite(self.lr) and self.lr > 0), "the learning rate must be positive")
        _require(0.0 <= self.holdout < 1.0, f"the held-out fraction must lie in [0, 1), got {self.holdout}")
        _require(1 <= self.footprint <= 4, f"the footprint must be 1 to 4 points per axis, got {self.footprint}")
        _require(self.axis in (0, 1, 2), f"the axis must be 0, 1 or 2, got {self.axis}")

    def outputs(self) -> list[str]:
        return ["model.inr", "fitted.nii.gz", "metrics.json", "comparison.png"]


@dataclass(frozen=True)
class Acquisition:
    """How k-space is made from an image input (simulated) or taken from measured k-space.

    ``mask`` None: 'random' for 2D images, 'poisson' for volumes; measured undersampled k-space keeps its own
    mask. ``maps`` None: 'simulated' for images, 'espirit' for k-space. ``snr`` in dB (None: no noise).

    Non-Cartesian: ``trajectory`` ('radial': golden-angle spokes, 'spiral': variable-density interleaves)
    samples an image or fully sampled Cartesian k-space along ``readouts`` spokes or interleaves (None: 48
    spokes, 16 interleaves) instead of a mask; measured non-Cartesian k-space (ISMRMRD, ``.npz``) keeps its
    own trajectory. ``density`` is the density compensation ('voronoi' or 'pipe'); ``matrix`` and ``fov`` (mm)
    give the image grid of an ``.npz`` file. ``keep_oversampling`` keeps the readout oversampling that an
    ISMRMRD or fastMRI header declares (removed by default: :func:`medinr.mri.kspace_io.load_kspace`).
    """

    accel: float = 4.0
    mask: str | None = None
    center_fraction: float = 0.08
    coils: int = 8
    maps: str | None = None
    snr: float | None = None
    phase: bool = True
    slice: int | None = None
    axis: int = 2
    trajectory: str | None = None
    readouts: int | None = None
    density: str = "voronoi"
    matrix: tuple[int, ...] | None = None
    fov: tuple[float, ...] | None = None
    keep_oversampling: bool = False

    #: Spokes (radial) or interleaves (spiral) when ``readouts`` is None.
    DEFAULT_READOUTS = {"radial": 48, "spiral": 16}

    def __post_init__(self) -> None:
        _require(math.isfinite(self.accel) and self.accel >= 1, f"the acceleration must be >= 1, got {self.accel}")
        _require(0.0 <= self.center_fraction < 1.0, "the centre fraction must lie in [0, 1)")
        _require(1 <= self.coils <= 256, f"the number of coils must be 1 to 256, got {self.coils}")
        _require(self.maps is None or self.maps in MAP_KINDS, f"unknown --maps '{self.maps}' ({', '.join(MAP_KINDS)})")
        _require(self.snr is None or math.isfinite(self.snr), "the SNR must be a finite number of dB")
        _require(self.axis in (0, 1, 2), f"the axis must be 0, 1 or 2, got {self.axis}")
        self._check_non_cartesian()

    def _check_non_cartesian(self) -> None:
        _require(self.trajectory is None or self.trajectory in TRAJECTORIES,
                 f"unknown --trajectory '{self.trajectory}' ({', '.join(TRAJECTORIES)})")
        _require(self.density in DENSITY_METHODS, f"unknown --density '{self.density}' ({', '.join(DENSITY_METHODS)})")
        _require(self.readouts is None or self.trajectory is not None,
                 "--spokes / --interleaves set the readouts of a simulated --trajectory radial or spiral")
        _require(self.readouts is None or 1 <= self.readouts <= 65536,
                 f"the number of spokes or interleaves must be 1 to 65536, got {self.readouts}")
        _require(self.trajectory is None or self.mask is None,
                 "--mask undersamples Cartesian k-space; a --trajectory samples along its own readouts")
        _require(self.matrix is None or (len(self.matrix) in (2, 3) and all(4 <= n <= 65536 for n in self.matrix)),
                 f"--matrix needs 2 or 3 sizes of 4 to 65536 samples, got {self.matrix}")
        _require(self.fov is None or (len(self.fov) in (2, 3) and all(math.isfinite(f) and 1e-3 <= f <= 1e6
                                                                       for f in self.fov)),
                 f"--fov needs 2 or 3 positive sizes in mm (0.001 to 1e6), got {self.fov}")

    @property
    def spokes(self) -> int | None:
        """Readouts of the simulated trajectory (None: Cartesian)."""
        if self.trajectory is None:
            return None
        return self.readouts if self.readouts is not None else self.DEFAULT_READOUTS[self.trajectory]


@dataclass(frozen=True)
class ReconstructRequest(Request):
    """``medinr reconstruct``: a self-calibrated INR and the baselines on one undersampled acquisition.

    Attributes
    ----------
    input : str
        An image (k-space is simulated) or measured k-space (.npy, .h5).
    acquisition : Acquisition
    inr : InrReconConfig
        The preset with the user's overrides (:func:`medinr.mri.config.preset_config`).
    preset : str
        The preset's name (recorded).
    baselines : tuple of str
        CS methods run beside zero filling (of :data:`medinr.mri.config.CS_METHODS`; default
        :data:`~medinr.mri.config.DEFAULT_BASELINES`).
    prior : str or None
        A prior image of the same anatomy and grid (NeRP).
    """

    input: str = ""
    acquisition: Acquisition = field(default_factory=Acquisition)
    inr: InrReconConfig = field(default_factory=InrReconConfig)
    preset: str = "default"
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    prior: str | None = None

    app = "medinr.apps.reconstruct"

    def __post_init__(self) -> None:
        self._check_common()
        _require(bool(self.input), "an input to reconstruct is needed")
        unknown = [b for b in self.baselines if b not in CS_METHODS]
        _require(not unknown, f"unknown baseline '{unknown[0] if unknown else ''}' ({', '.join(CS_METHODS)})")
        self.inr.check()
        a = self.acquisition
        _require_npz_grid(self.input, a.matrix, a.fov)
        _require(not (self.inr.data_consistency and a.trajectory is not None),
                 "--data-consistency needs Cartesian k-space (non-Cartesian samples have no grid to be put back on)")

    @property
    def methods(self) -> tuple[str, ...]:
        """Zero filling (gridding for non-Cartesian data), the CS baselines and the INR."""
        return ("zero_filled", *self.baselines, "inr")

    def outputs(self) -> list[str]:
        """Every file the run may write: Cartesian runs write ``zero_filled`` and ``mask``, non-Cartesian ones
        ``gridding`` (and draw the trajectory in the report)."""
        names = ["recon.nii.gz", "zero_filled.nii.gz", "gridding.nii.gz", "mask.nii.gz", "recon.inr", "metrics.json",
                 "report.png"]
        return names + [f"{m}.nii.gz" for m in self.baselines]


@dataclass(frozen=True)
class RegisterRequest(Request):
    """``medinr register``: a moving image registered to a fixed one, evaluated on labels and landmarks.

    Attributes
    ----------
    fixed, moving : str
        The image files.
    fixed_mask, fixed_labels, moving_labels, fixed_landmarks, moving_landmarks : str or None
        Optional inputs (labels and landmarks in pairs).
    settings : RegistrationSettings
        Every stage's settings (:mod:`medinr.registration.settings`).
    preset : str
        The preset's name (recorded).
    """

    fixed: str = ""
    moving: str = ""
    fixed_mask: str | None = None
    fixed_labels: str | None = None
    moving_labels: str | None = None
    fixed_landmarks: str | None = None
    moving_landmarks: str | None = None
    settings: RegistrationSettings = field(default_factory=RegistrationSettings)
    preset: str = "default"

    app = "medinr.apps.register"

    def __post_init__(self) -> None:
        self._check_common()
        _require(bool(self.fixed) and bool(self.moving), "a fixed and a moving image are needed")
        for what in ("labels", "landmarks"):
            a, b = getattr(self, f"fixed_{what}"), getattr(self, f"moving_{what}")
            _require((a is None) == (b is None), f"--fixed-{what} and --moving-{what} must be given together")
        self.settings.check()

    def paths(self) -> dict[str, str | None]:
        names = ("fixed", "moving", "fixed_mask", "fixed_labels", "moving_labels", "fixed_landmarks",
                 "moving_landmarks")
        return {n: getattr(self, n) for n in names}

    def outputs(self) -> list[str]:
        names = ["warped.nii.gz", "displacement.nii.gz", "jacobian.nii.gz", "transform.inr", "metrics.json",
                 "report.png"]
        names += ["warped_labels.nii.gz"] if self.fixed_labels else []
        return names + (["inverse_displacement.nii.gz", "inverse_transform.inr"] if self.settings.deformable.symmetric
                        else [])

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "settings"}, "settings": self.settings.to_dict()}


@dataclass(frozen=True)
class RenderRequest(Request):
    """``medinr render``: one plane of a checkpoint, exact (the network at every pixel) or from its cached lattice.

    Attributes
    ----------
    checkpoint : str
    plane : str
        'axial', 'coronal', 'sagittal' or a normal 'NX,NY,NZ' in RAS mm.
    offset, zoom : float
        Along the normal (mm), and the magnification about the plane centre.
    size : (int, int) or None
        Output pixels (None: the training voxel size at zoom 1).
    component : str
        What to show ('auto', a product name or a channel number).
    tier : {'exact', 'lattice'}
    cache : bool
        With the lattice tier: read and write the lattice cache beside the checkpoint.
    png : bool
        A display PNG (windowed to 8 bits) rather than a NIfTI of the values.
    """

    checkpoint: str = ""
    plane: str = "axial"
    offset: float = 0.0
    zoom: float = 1.0
    size: tuple[int, int] | None = None
    component: str = "auto"
    tier: str = "exact"
    cache: bool = True
    png: bool = True

    app = "medinr.apps.render"

    def __post_init__(self) -> None:
        self._check_common()
        _require(bool(self.checkpoint), "a checkpoint to render is needed")
        _require(math.isfinite(self.zoom) and self.zoom > 0, f"--zoom must be a positive number, got {self.zoom}")
        _require(math.isfinite(self.offset), f"--offset must be a finite number, got {self.offset}")
        _require(self.tier in ("exact", "lattice"), f"unknown tier '{self.tier}' (exact, lattice)")
        _require(self.size is None or all(1 <= int(n) <= 16384 for n in self.size),
                 "--size must be between 1 and 16384 pixels per side")

    def outputs(self) -> list[str]:
        return ["slice"]


@dataclass(frozen=True)
class InfoRequest(Request):
    """``medinr info``: what a file holds (``raw``: as JSON): a checkpoint's metadata, read without running it, or
    an image's or k-space file's grid and values or sampling."""

    path: str = ""
    raw: bool = False
    matrix: tuple[int, ...] | None = None  # a non-Cartesian .npz that stores no grid (as ReconstructRequest)
    fov_mm: tuple[float, ...] | None = None

    app = "medinr.apps.info"

    def __post_init__(self) -> None:
        _require_npz_grid(self.path, self.matrix, self.fov_mm)

    def outputs(self) -> list[str]:
        return []
