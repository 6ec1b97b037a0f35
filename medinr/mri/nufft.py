"""THE non-uniform SENSE forward model: image -> multi-coil k-space at arbitrary trajectory points, differentiable.

Trajectory convention (one for all of medinr, the one SigPy's ``coord`` uses): ``traj[..., a]`` is the k-space
position along image array axis ``a`` in cycles per field of view (units of 1/FOV), so a Cartesian grid of
integers ``k_a`` in ``[-N_a/2, N_a/2)`` reproduces :func:`medinr.mri.fft.fftc` exactly (its sample at array index
``k_a + N_a // 2``): same sign, same centre, same orthonormal scaling. Readers convert other units at the
boundary (:mod:`medinr.mri.mrd_io`); the operator converts to the radians per voxel ``2 pi k_a / N_a`` that the
NUFFT libraries take, in :func:`to_radians` only.

Backends (measured in ``bench/nufft.py``): ``finufft`` (the Flatiron library that mri-nufft's CPU backend runs;
called through its guru ``Plan``, with our own autograd: the gradient of a linear map is its adjoint) is the
default on the CPU; ``torchkbnufft`` (pure torch, native autograd) is the fallback for tensors on a GPU or when
finufft is missing. finufft computes in complex arithmetic inside its C library; it is wrapped as two torch
custom operators on real views (``medinr::finufft_forward`` / ``finufft_adjoint``, each the other's backward),
so :meth:`NufftSenseOp.forward_real` keeps a loss in real arithmetic that ``torch.compile`` takes as one graph.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence

import numpy as np
import torch

from medinr.errors import MedinrError
from medinr.mri.operators import Linop, coil_op

BACKENDS = ("auto", "finufft", "torchkbnufft")
#: finufft's settings per precision: requested accuracy ``eps`` and grid oversampling ``upsampfac``. In single
#: precision a wider kernel on a 1.25x grid is several times faster than the usual 2x grid for radial
#: 256 x 256 x 8 coils on this CPU (``bench/nufft.py``) at a relative error of 5e-5 (2x grid, eps 1e-6: 1.2e-5),
#: far below the noise of any acquisition; eps 2e-5 is the finest that 1.25 reaches without finufft narrowing
#: the kernel itself (and printing a warning). Double precision (the tests) keeps the 2x grid at 1e-12.
#: Forward and adjoint share the kernel, so they stay exact adjoints of each other either way.
FINUFFT_SETTINGS = {
    torch.complex64: {"eps": 2e-5, "upsampfac": 1.25},
    torch.complex128: {"eps": 1e-12, "upsampfac": 2.0},
}


def to_radians(traj: np.ndarray, grid: Sequence[int]) -> np.ndarray:
    """Trajectory in 1/FOV units ``(..., d)`` -> radians per voxel ``2 pi k_a / N_a`` (float64), as NUFFTs want."""
    traj = np.asarray(traj, np.float64)
    return 2 * np.pi * traj / np.asarray(grid, np.float64)


class _FinufftEngine:
    """Batched type 2 (grid -> points) and type 1 (points -> grid) finufft plans, built per precision on demand."""

    def __init__(self, omega: np.ndarray, grid: tuple[int, ...], batch: int) -> None:
        self.omega, self.grid, self.batch = omega, grid, batch
        self.settings = {dtype: dict(options) for dtype, options in FINUFFT_SETTINGS.items()}
        self._plans: dict[tuple[int, torch.dtype], object] = {}

    def _plan(self, kind: int, dtype: torch.dtype):
        key = (kind, dtype)
        if key not in self._plans:
            import finufft

            name = "complex128" if dtype == torch.complex128 else "complex64"
            real = np.float64 if dtype == torch.complex128 else np.float32
            plan = finufft.Plan(kind, self.grid, n_trans=self.batch, dtype=name,
                                nthreads=max(1, torch.get_num_threads()), **self.settings[dtype])
            plan.setpts(*(np.ascontiguousarray(self.omega[:, a], real) for a in range(len(self.grid))))
            self._plans[key] = plan
        return self._plans[key]

    def _run(self, kind: int, data: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
        dtype = data.dtype if data.dtype in FINUFFT_SETTINGS else torch.complex64
        array = np.ascontiguousarray(data.detach().to("cpu", dtype).numpy())
        if self.batch == 1:
            array = array[0]
        result = self._plan(kind, dtype).execute(array)
        scale = 1.0 / np.sqrt(float(np.prod(self.grid)))
        return (torch.from_numpy(np.asarray(result)).reshape(out_shape) * scale).to(data.device)

    def prepare(self, dtype: torch.dtype, device: torch.device) -> None:
        self._plan(1, dtype), self._plan(2, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(2, x, (self.batch, self.omega.shape[0]))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._run(1, y, (self.batch, *self.grid))


# finufft as two torch custom operators on real views ``(..., 2)``: differentiable (the backward of each is the
# other), and opaque nodes that torch.compile keeps in its graph (no graph break; complex tensors are not compiled,
# so the operators take and give real views). Engines are found by an integer key, as custom operators take no
# Python objects; an engine leaves the registry when its operator is garbage-collected.
_ENGINES: weakref.WeakValueDictionary[int, _FinufftEngine] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


def _register(engine: _FinufftEngine) -> int:
    key = next(_KEYS)
    _ENGINES[key] = engine
    return key


@torch.library.custom_op("medinr::finufft_forward", mutates_args=())
def finufft_forward(x: torch.Tensor, key: int) -> torch.Tensor:
    """Type 2 NUFFT of real-view images ``(B, *grid, 2)`` -> real-view samples ``(B, M, 2)`` (scaled, see NufftOp)."""
    return torch.view_as_real(_ENGINES[key].forward(torch.view_as_complex(x.contiguous()))).contiguous()


@torch.library.custom_op("medinr::finufft_adjoint", mutates_args=())
def finufft_adjoint(y: torch.Tensor, key: int) -> torch.Tensor:
    """Type 1 NUFFT (the adjoint): real-view samples ``(B, M, 2)`` -> real-view images ``(B, *grid, 2)``."""
    return torch.view_as_real(_ENGINES[key].adjoint(torch.view_as_complex(y.contiguous()))).contiguous()


@finufft_forward.register_fake
def _(x: torch.Tensor, key: int) -> torch.Tensor:
    engine = _ENGINES[key]
    return x.new_empty((engine.batch, engine.omega.shape[0], 2))


@finufft_adjoint.register_fake
def _(y: torch.Tensor, key: int) -> torch.Tensor:
    engine = _ENGINES[key]
    return y.new_empty((engine.batch, *engine.grid, 2))


def _keep_key(ctx, inputs, output) -> None:
    ctx.key = inputs[1]


finufft_forward.register_autograd(lambda ctx, grad: (finufft_adjoint(grad, ctx.key), None), setup_context=_keep_key)
finufft_adjoint.register_autograd(lambda ctx, grad: (finufft_forward(grad, ctx.key), None), setup_context=_keep_key)


class _KbnufftEngine:
    """torchkbnufft's Kaiser-Bessel NUFFT (6-point kernel, 2x grid), native autograd, any device."""

    def __init__(self, omega: np.ndarray, grid: tuple[int, ...], batch: int) -> None:
        self.omega, self.grid, self.batch = omega, grid, batch
        self._ops: dict[tuple[str, torch.dtype, str], object] = {}

    def _op(self, kind: str, dtype: torch.dtype, device: torch.device):
        key = (kind, dtype, str(device))
        if key not in self._ops:
            import torchkbnufft as tkbn

            cls = tkbn.KbNufft if kind == "forward" else tkbn.KbNufftAdjoint
            real = torch.float64 if dtype == torch.complex128 else torch.float32
            omega = torch.as_tensor(self.omega.T.copy(), dtype=real, device=device)
            self._ops[key] = (cls(im_size=self.grid, dtype=dtype, device=device), omega)
        return self._ops[key]

    def prepare(self, dtype: torch.dtype, device: torch.device) -> None:
        self._op("forward", dtype, device), self._op("adjoint", dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op, omega = self._op("forward", x.dtype, x.device)
        return op(x[None], omega)[0] / float(np.sqrt(np.prod(self.grid)))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        op, omega = self._op("adjoint", y.dtype, y.device)
        return op(y[None], omega)[0] / float(np.sqrt(np.prod(self.grid)))


def _finufft_available() -> bool:
    try:
        import finufft  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: str | torch.device = "cpu") -> str:
    """The backend a NUFFT runs with: ``auto`` is finufft on the CPU (when installed), torchkbnufft otherwise."""
    if backend not in BACKENDS:
        raise MedinrError(f"unknown NUFFT backend '{backend}' ({', '.join(BACKENDS)})")
    if backend == "auto":
        return "finufft" if torch.device(device).type == "cpu" and _finufft_available() else "torchkbnufft"
    if backend == "finufft" and not _finufft_available():
        raise MedinrError("the finufft NUFFT backend is not installed: pip install finufft (or use torchkbnufft)")
    return backend


def _complex(x: torch.Tensor) -> torch.Tensor:
    """Real input becomes complex of the matching precision (float64 -> complex128, else complex64)."""
    if x.is_complex():
        return x
    return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)


def _check_traj(traj: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    traj = np.asarray(traj)
    if traj.ndim < 2 or traj.shape[-1] != len(grid):
        raise MedinrError(f"a trajectory for a {len(grid)}D grid must have shape (..., {len(grid)}), got {traj.shape}")
    if not np.all(np.isfinite(traj)):
        raise MedinrError("the trajectory contains NaN or infinite positions")
    return traj


class NufftOp(Linop):
    """Batched non-uniform FFT: ``(B, *grid)`` images -> ``(B, *traj.shape[:-1])`` k-space samples.

    Parameters
    ----------
    traj : ndarray ``(..., d)``
        Sample positions in 1/FOV units (see the module docstring), e.g. ``(readouts, samples, 2)``.
    grid : sequence of int
        Image matrix ``(N_0, ..., N_{d-1})``.
    batch : int
        Images transformed together (the coils).
    backend : {'auto', 'finufft', 'torchkbnufft'}
    device : str or torch.device
        Where the tensors will live (chooses the ``auto`` backend).

    Notes
    -----
    Scaled by ``1 / sqrt(prod(grid))``, so on a Cartesian grid it is :func:`~medinr.mri.fft.fftc` and the
    adjoint is its inverse. Both directions are differentiable.
    """

    def __init__(self, traj: np.ndarray, grid: Sequence[int], batch: int = 1, backend: str = "auto",
                 device: str | torch.device = "cpu") -> None:
        grid = tuple(int(n) for n in grid)
        traj = _check_traj(traj, grid)
        self.traj, self.grid, self.batch = traj, grid, int(batch)
        self.backend = resolve_backend(backend, device)
        omega = to_radians(traj.reshape(-1, len(grid)), grid)
        engine_cls = _FinufftEngine if self.backend == "finufft" else _KbnufftEngine
        self.engine = engine_cls(omega, grid, self.batch)
        kshape = (self.batch, *traj.shape[:-1])
        flat = (self.batch, omega.shape[0])
        if self.backend == "finufft":
            self._key = _register(self.engine)
            fwd = lambda x: torch.view_as_complex(self.forward_real(torch.view_as_real(_complex(x))))  # noqa: E731
            adj = lambda y: torch.view_as_complex(  # noqa: E731
                self.adjoint_real(torch.view_as_real(_complex(y).reshape(flat))))
        else:
            fwd = lambda x: self.engine.forward(_complex(x))  # noqa: E731
            adj = lambda y: self.engine.adjoint(_complex(y).reshape(flat))  # noqa: E731
        super().__init__(kshape, (self.batch, *grid), lambda x: fwd(x).reshape(kshape), adj, f"NUFFT[{self.backend}]")

    def forward_real(self, x: torch.Tensor) -> torch.Tensor:
        """The forward on real views: ``(B, *grid, 2)`` -> ``(B, M, 2)`` (flat samples), for compiled real code."""
        if self.backend == "finufft":
            return finufft_forward(x, self._key)
        return torch.view_as_real(self.engine.forward(torch.view_as_complex(x.contiguous())))

    def adjoint_real(self, y: torch.Tensor) -> torch.Tensor:
        """The adjoint on real views: ``(B, M, 2)`` -> ``(B, *grid, 2)``."""
        if self.backend == "finufft":
            return finufft_adjoint(y, self._key)
        return torch.view_as_real(self.engine.adjoint(torch.view_as_complex(y.contiguous())))

    def prepare(self, dtype: torch.dtype = torch.complex64, device: str | torch.device = "cpu") -> None:
        """Build the plans (interpolation tables) of both directions now rather than on first use."""
        self.engine.prepare(dtype, torch.device(device))


class NufftSenseOp(Linop):
    """Non-Cartesian SENSE model ``A = F_nu S``: complex image ``grid`` -> k-space ``(C, *traj.shape[:-1])``.

    Parameters
    ----------
    maps : complex tensor ``(C, *grid)``
        Coil sensitivities (unit RSS; whitened maps ``W S`` for whitened data).
    traj : ndarray ``(readouts, samples, d)``
        Trajectory in 1/FOV units.
    backend : {'auto', 'finufft', 'torchkbnufft'}

    Notes
    -----
    ``A.H`` is the coil-combined adjoint (no density compensation: see :mod:`medinr.mri.gridding` for the
    gridding reconstruction). A coil mixing (whitening) commutes with the NUFFT, as in :class:`SenseOp`.
    """

    def __init__(self, maps: torch.Tensor, traj: np.ndarray, backend: str = "auto") -> None:
        if not maps.is_complex():
            maps = maps.to(torch.complex64)
        self.maps = maps
        self.grid = tuple(maps.shape[1:])
        self.nufft = NufftOp(traj, self.grid, maps.shape[0], backend, maps.device)
        self.traj, self.backend = self.nufft.traj, self.nufft.backend
        chain = self.nufft @ coil_op(maps)
        super().__init__(chain.oshape, chain.ishape, chain._forward, chain._adjoint, "NufftSense")

    def coil_kspace(self, x: torch.Tensor) -> torch.Tensor:
        """``F_nu S x`` at every trajectory sample, differentiable (the INR loss reads its samples here)."""
        return self(x)

    def with_readouts(self, readouts: np.ndarray) -> "NufftSenseOp":
        """The same coils on a subset of readouts (a bool mask or indices over the first trajectory axis)."""
        return NufftSenseOp(self.maps, self.traj[np.asarray(readouts)], self.backend)

    def forward_real(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` in real arithmetic: image ``(*grid, 2)`` -> samples ``(C, readouts, samples, 2)``.

        The coil multiplication is written out in real and imaginary parts and the NUFFT is a custom operator on
        real views, so a loss built on this compiles with torch.compile as one graph (complex tensors do not).
        """
        m = torch.view_as_real(self.maps)
        re = m[..., 0] * x[..., 0] - m[..., 1] * x[..., 1]
        im = m[..., 0] * x[..., 1] + m[..., 1] * x[..., 0]
        return self.nufft.forward_real(torch.stack([re, im], dim=-1)).reshape(*self.oshape, 2)

    def with_maps(self, maps: torch.Tensor) -> "NufftSenseOp":
        """The same trajectory with other (e.g. whitened) coil maps."""
        return NufftSenseOp(maps, self.traj, self.backend)
