"""Every INR family fits the real coronal slice, evaluates in chunks, and rebuilds exactly from config/checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medinr.checkpoint import load_checkpoint, save_checkpoint
from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.metrics import psnr
from medinr.models import MODEL_REGISTRY, build_model
from medinr.training import fit, seed_everything

SIZE = 32

# family -> (small options for CPU tests, steps, learning rate, PSNR in dB the fit must reach on the 32x32 slice).
# A constant image (the mean) scores about 10 dB. Each threshold sits 3-10 dB under what the fit reached with seed 0
# on one thread (siren 34, wire 39, fourier 52, hashgrid 27, conv_inr 21, kan 26, mrgrid 72 dB: its finest grid is
# the image lattice; lattice 27 dB at half resolution), so a broken activation, initialisation or encoding fails
# while thread-count rounding does not.
FIT_CASES: dict[str, tuple[dict, int, float, float]] = {
    "siren": ({"hidden": 32, "layers": 3}, 100, 1e-3, 28.0),
    "wire": ({"hidden": 64, "layers": 2}, 100, 5e-3, 30.0),
    "fourier": ({"n_frequencies": 64, "sigma": 3.0, "hidden": 64, "layers": 2}, 100, 5e-3, 35.0),
    "hashgrid": ({"levels": 8, "log2_table_size": 10, "max_resolution": 32}, 60, 1e-3, 24.0),
    "conv_inr": ({"lattice": [SIZE, SIZE], "channels": 16, "layers": 3}, 100, 5e-3, 17.0),
    "kan": ({"widths": [8], "encoding_options": {"levels": 2, "base_resolution": 8, "max_resolution": 32}}, 100,
            1e-2, 22.0),
    "mrgrid": ({"levels": 3, "max_resolution": SIZE, "hidden": 32}, 100, 2e-2, 50.0),
    # the registration transform's node lattice, half the image's resolution: only bilinear interpolation
    "lattice": ({"lattice": [SIZE // 2, SIZE // 2]}, 100, 5e-2, 18.0),
}


def families() -> list[str]:
    """Every family medinr itself registers (tests may register throw-away models of their own)."""
    return sorted(name for name, cls in MODEL_REGISTRY.items() if cls.__module__.startswith("medinr."))


def small_model(family: str, seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    options = FIT_CASES[family][0] if family in FIT_CASES else {}
    return build_model(family, in_features=2, out_features=1, **options)


@pytest.fixture(scope="module")
def coronal_32(coronal_64: np.ndarray) -> np.ndarray:
    """The coronal slice area-averaged to 32x32 (8x8 blocks of the original)."""
    return coronal_64.reshape(32, 2, 32, 2).mean(axis=(1, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def grid() -> torch.Tensor:
    """Network coordinates of the 32x32 lattice, (32, 32, 2) in [-1, 1]."""
    return Geometry((SIZE, SIZE)).network_grid()


def test_every_family_has_a_fit_case() -> None:
    assert {"siren", "wire", "fourier", "hashgrid", "conv_inr"} <= set(MODEL_REGISTRY)
    missing = set(families()) - set(FIT_CASES)
    assert not missing, f"families without a fit test: {missing}"


@pytest.mark.parametrize("family", families())
def test_fit_reaches_psnr(family: str, coronal_32: np.ndarray, grid: torch.Tensor) -> None:
    _, steps, lr, min_psnr = FIT_CASES[family]
    model = small_model(family)
    target = torch.from_numpy(coronal_32).reshape(-1, 1)
    coords = grid.reshape(-1, 2)

    def loss_fn(step: int) -> torch.Tensor:
        return torch.mean((model(coords) - target) ** 2)

    fit(model.param_groups(lr), loss_fn, steps=steps, lr=lr, progress=False)
    estimate = model.evaluate(grid)[..., 0].numpy()
    assert np.isfinite(estimate).all()
    score = psnr(coronal_32, estimate)
    assert score >= min_psnr, f"{family}: {score:.1f} dB after {steps} steps, expected >= {min_psnr} dB"


@pytest.mark.parametrize("family", families())
def test_chunked_evaluate_matches_forward(family: str, grid: torch.Tensor) -> None:
    model = small_model(family).eval()
    with torch.no_grad():
        direct = model(grid.reshape(-1, 2))
    chunked = model.evaluate(grid, chunk=300)  # not a divisor of 1024: a short last chunk
    assert chunked.shape == (SIZE, SIZE, 1)
    torch.testing.assert_close(chunked.reshape(-1, 1), direct, rtol=1e-5, atol=1e-6)


def _perturb(model: torch.nn.Module) -> None:
    """Move every parameter away from its initial value so that a rebuild cannot match by re-seeding alone."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))


@pytest.mark.parametrize("family", families())
def test_rebuild_from_config_and_state_dict(family: str, grid: torch.Tensor) -> None:
    model = small_model(family, seed=1).eval()
    _perturb(model)
    config = dict(model.config)
    rebuilt = build_model(family, **config)  # a different seed state: only the state dict can make it equal
    state = model.state_dict()
    prepare = getattr(rebuilt, "prepare_state", None)
    if prepare is not None:
        prepare(state)
    rebuilt.load_state_dict(state)
    rebuilt.eval()
    assert torch.equal(rebuilt.evaluate(grid), model.evaluate(grid))


@pytest.mark.parametrize("family", families())
def test_checkpoint_round_trip(family: str, grid: torch.Tensor, tmp_path: Path) -> None:
    model = small_model(family, seed=2).eval()
    _perturb(model)
    path = save_checkpoint(tmp_path / f"{family}.inr", ContinuousImage.bare(model))
    loaded = load_checkpoint(path)
    assert loaded.model.family == family
    assert loaded.model.config == model.config
    assert torch.equal(loaded.model.evaluate(grid), model.evaluate(grid))


def test_unknown_family_is_a_clear_error() -> None:
    with pytest.raises(MedinrError, match="unknown model 'nerf'"):
        build_model("nerf", in_features=2, out_features=1)


def test_fourier_features_are_seeded_and_stored() -> None:
    a = build_model("fourier", 2, 1, n_frequencies=8, seed=3)
    b = build_model("fourier", 2, 1, n_frequencies=8, seed=3)
    c = build_model("fourier", 2, 1, n_frequencies=8, seed=4)
    assert torch.equal(a.encoding.B, b.encoding.B)
    assert not torch.equal(a.encoding.B, c.encoding.B)
    assert "encoding.B" in a.state_dict()


def test_hashgrid_dense_and_hashed_levels_in_3d() -> None:
    from medinr.models.encodings import HashGridEncoding

    torch.manual_seed(0)
    # Level resolutions 4 and 32 with a 2^10 table: level 0 (5^3 vertices) is dense, level 1 (33^3) is hashed.
    enc = HashGridEncoding(3, levels=2, features_per_level=1, log2_table_size=10, base_resolution=4, max_resolution=32)
    assert enc.hashed.tolist() == [False, True]
    assert enc.table.shape == (5**3 + 2**10, 1)
    with torch.no_grad():
        enc.table.normal_()
    # At a lattice vertex the interpolated feature is that vertex's table entry.
    v0 = torch.tensor([1, 2, 3])
    out = enc((-1.0 + 2.0 * v0 / 4)[None])
    torch.testing.assert_close(out[0, 0], enc.table[1 + 2 * 5 + 3 * 25, 0])
    v1 = torch.tensor([5, 7, 9])
    out = enc((-1.0 + 2.0 * v1 / 32)[None])
    slot = (5 * 1 ^ 7 * 2654435761 ^ 9 * 805459861) % 2**10
    torch.testing.assert_close(out[0, 1], enc.table[125 + slot, 0])
    # Half-way along an edge of a level-0 cell the feature is the mean of the edge's two vertices.
    mid = (-1.0 + 2.0 * torch.tensor([1.5, 2.0, 3.0]) / 4)[None]
    expected = 0.5 * (enc.table[1 + 2 * 5 + 3 * 25, 0] + enc.table[2 + 2 * 5 + 3 * 25, 0])
    torch.testing.assert_close(enc(mid)[0, 0], expected)
    # Gradients reach the table.
    enc(torch.rand(100, 3) * 2 - 1).sum().backward()
    assert enc.table.grad is not None and enc.table.grad.abs().sum() > 0


def test_conv_inr_is_exact_on_its_lattice_and_interpolates_between(grid: torch.Tensor) -> None:
    model = small_model("conv_inr").eval()
    with torch.no_grad():
        lattice = model.lattice_output()[0]  # (32, 32)
        at_points = model(grid)[..., 0]
        torch.testing.assert_close(at_points, lattice, rtol=0, atol=1e-5)
        # Half-way between lattice points (i=10.5, j=20) the value is the mean of the two neighbours.
        step = 2.0 / (SIZE - 1)
        mid = torch.tensor([[-1 + 10.5 * step, -1 + 20 * step]])
        torch.testing.assert_close(model(mid)[0, 0], 0.5 * (lattice[10, 20] + lattice[11, 20]), rtol=0, atol=1e-5)
    # Train and eval mode give the same output (no running statistics).
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model(grid)[..., 0], lattice, rtol=0, atol=1e-5)


def test_conv_inr_requires_a_lattice() -> None:
    with pytest.raises(MedinrError, match="lattice"):
        build_model("conv_inr", in_features=2, out_features=1)


def test_conv_inr_cache_follows_parameter_updates(grid: torch.Tensor) -> None:
    model = small_model("conv_inr").eval()
    before = model.evaluate(grid)
    _perturb(model)
    after = model.evaluate(grid)
    assert not torch.equal(before, after)
    with torch.no_grad():
        torch.testing.assert_close(after[..., 0], model.lattice_output()[0], rtol=0, atol=1e-5)


# -- the explicit family hooks, one parametrised test over every family -------------------------------------
@pytest.mark.parametrize("family", families())
@pytest.mark.parametrize("ndim", [2, 3])
def test_family_hooks(family: str, ndim: int) -> None:
    """zero_output_ gives exactly 0 and still trains; param_groups holds every parameter once; forward_lattice
    equals forward on the lattice; the recorded config rebuilds the same architecture."""
    seed_everything(0)
    options = dict(FIT_CASES[family][0])
    if "lattice" in options:
        options["lattice"] = [8] * ndim
    model = build_model(family, ndim, ndim, **options)
    shape = (8,) * ndim
    coords = torch.rand(50, ndim) * 2 - 1

    lattice = model.forward_lattice(shape)
    assert lattice.shape == (*shape, ndim)
    from medinr.models.base import lattice_coords

    assert torch.allclose(lattice, model(lattice_coords(shape)), atol=1e-5)

    groups = model.param_groups(1e-3)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters()) and len(set(grouped)) == len(grouped)

    rebuilt = build_model(family, **model.config)
    assert rebuilt.config == model.config
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]

    model.zero_output_()
    out = model(coords)
    assert torch.count_nonzero(out) == 0
    target = torch.ones_like(out)
    ((out - target) ** 2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), "no gradient after zero"


def test_config_is_recorded_from_the_constructor_once() -> None:
    model = build_model("siren", 3, 2, hidden=16)
    assert model.config == {"in_features": 3, "out_features": 2, "hidden": 16, "layers": 3, "omega_0": 30.0,
                            "hidden_omega": 30.0}
    with pytest.raises(MedinrError, match="model 'siren' has no option 'hidden_size'; its options are: hidden, "
                                          "layers, omega_0, hidden_omega"):
        build_model("siren", 2, 1, hidden_size=3)


#: interpolate_axes' two paths: gathers along each axis (lattices of more than MATRIX_VERTICES nodes per axis) and
#: dense per-axis matrices (smaller ones); each test runs both
INTERPOLATION_PATHS = pytest.mark.parametrize("matrix_vertices", [0, 1 << 20], ids=["gathers", "matrices"])


@INTERPOLATION_PATHS
@pytest.mark.parametrize("grid_shape,sizes", [((3, 7, 5), (9, 4)), ((2, 4, 6, 3), (5, 3, 7))])
def test_interpolate_axes_equals_sampling_every_lattice_point(grid_shape, sizes, matrix_vertices, monkeypatch) -> None:
    """The per-axis path (any axis order) is bilinear/trilinear sampling with border padding at every point of
    the separable lattice, including points outside [-1, 1]."""
    from medinr.geometry import sample_grid
    from medinr.models import separable
    from medinr.models.separable import interpolate_axes, lattice_points

    monkeypatch.setattr(separable, "MATRIX_VERTICES", matrix_vertices)
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn(grid_shape, generator=gen, dtype=torch.float64)
    axes = [torch.rand(n, generator=gen, dtype=torch.float64) * 2.4 - 1.2 for n in sizes]
    lattice = interpolate_axes(grid, axes)
    points = sample_grid(grid, lattice_points(axes))  # (*sizes, F)
    torch.testing.assert_close(lattice, points.movedim(-1, 0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("grid_shape,sizes", [((3, 7, 5), (9, 4)), ((2, 4, 6, 3), (5, 3, 7)),
                                              ((2, 5, 1, 4), (3, 2, 6))])
def test_interpolate_axes_derivative_is_the_interpolants_slope(grid_shape, sizes) -> None:
    """``derivative=a`` equals autograd of the sampled field along axis a at every point off the nodes (also
    beyond the border, where it is 0); on a node it is the next cell's slope, the last cell's at the last node."""
    from medinr.geometry import sample_grid
    from medinr.models.separable import interpolate_axes, lattice_points

    gen = torch.Generator().manual_seed(2)
    grid = torch.randn(grid_shape, generator=gen, dtype=torch.float64)
    axes = [torch.rand(n, generator=gen, dtype=torch.float64) * 2.4 - 1.2 for n in sizes]
    points = lattice_points(axes).requires_grad_()
    values = sample_grid(grid, points)  # (*sizes, F)
    for a in range(len(sizes)):
        slope = interpolate_axes(grid, axes, derivative=a)
        for f in range(grid_shape[0]):
            (auto,) = torch.autograd.grad(values[..., f].sum(), points, retain_graph=True)
            torch.testing.assert_close(slope[f], auto[..., a], rtol=1e-10, atol=1e-10)
    # on the nodes of the first axis (ends included): the one-sided slopes, into the lattice at both ends
    nodes = torch.linspace(-1.0, 1.0, grid_shape[1], dtype=torch.float64)
    slope = interpolate_axes(grid, [nodes, *axes[1:]], derivative=0)
    on_rest = interpolate_axes(grid, [nodes, *axes[1:]])  # node values along the first axis
    steps = (on_rest[:, 1:] - on_rest[:, :-1]) * (0.5 * (grid_shape[1] - 1))
    torch.testing.assert_close(slope[:, :-1], steps, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(slope[:, -1], steps[:, -1], rtol=1e-10, atol=1e-10)


@INTERPOLATION_PATHS
@pytest.mark.parametrize("grid_shape,ranges,untouched", [
    ((2, 40, 33, 20), ((-0.5, -0.1), (0.2, 0.9), (-1.0, 1.0)), 9),  # nodes 9..18 of the first axis reached
    ((3, 64, 1), ((0.6, 1.3), (-0.3, 0.3)), 50),  # nodes 50..63, beyond the border clamped; a one-node axis
])
def test_interpolate_axes_on_a_tile_of_the_grid(grid_shape, ranges, untouched, matrix_vertices, monkeypatch) -> None:
    """A lattice that reaches only a block of the grid (a volume's tile) is interpolated on that block: the same
    values as sampling every point, and the gradient of the grid the same too (zero outside the block)."""
    from medinr.geometry import sample_grid
    from medinr.models import separable
    from medinr.models.separable import interpolate_axes, lattice_points

    monkeypatch.setattr(separable, "MATRIX_VERTICES", matrix_vertices)

    gen = torch.Generator().manual_seed(1)
    axes = [torch.linspace(lo, hi, 7, dtype=torch.float64) for lo, hi in ranges]
    weights = torch.randn(grid_shape[0], *[7] * len(axes), generator=gen, dtype=torch.float64)
    values = torch.randn(grid_shape, generator=gen, dtype=torch.float64)
    grids = [values.clone().requires_grad_() for _ in range(2)]
    lattice = interpolate_axes(grids[0], axes)
    points = sample_grid(grids[1], lattice_points(axes)).movedim(-1, 0)
    torch.testing.assert_close(lattice, points, rtol=1e-10, atol=1e-10)
    (lattice * weights).sum().backward()
    (points * weights).sum().backward()
    torch.testing.assert_close(grids[0].grad, grids[1].grad, rtol=1e-10, atol=1e-10)
    assert grids[0].grad[:, :untouched].abs().max() == 0 and grids[0].grad[:, untouched].abs().max() > 0
