"""KAN family: B-spline basis, fitting the coronal slice, sparsification, pruning, grid extension, checkpoints, plot."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from medinr.checkpoint import load_checkpoint, save_checkpoint
from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.image_fit import fit_image
from medinr.metrics import psnr
from medinr.models import build_model
from medinr.models import kan as kan_module
from medinr.models.kan import (
    KAN,
    KANLayer,
    bspline_basis,
    cubic_basis_cardinal,
    cubic_basis_uniform,
    uniform_knots,
)
from medinr.models.kan_plot import plot_activations
from medinr.training import fit, seed_everything

# A small KAN for the sparsification tests: it fits in a few seconds and has hidden nodes to spare.
SMALL = {"widths": [16, 16], "encoding": "fourier", "encoding_options": {"n_frequencies": 8, "sigma": 3.0}}


def _grid_64() -> Geometry:
    return Geometry((64, 64), np.diag([4.0, 4.0, 4.0, 1.0]))


def _coords_and_target(image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    coords = _grid_64().network_grid().reshape(-1, 2).float()
    target = torch.as_tensor(image / image.max(), dtype=torch.float32).reshape(-1, 1)
    return coords, target


def _psnr(model: KAN, coords: torch.Tensor, target: torch.Tensor) -> float:
    return psnr(target.numpy()[:, 0], model.evaluate(coords).numpy()[:, 0])


# ---- basis ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid,order", [(5, 1), (8, 2), (8, 3), (3, 3), (16, 4)])
def test_bspline_partition_of_unity_inside_range(grid: int, order: int) -> None:
    x = torch.linspace(-1.0, 1.0, 1001, dtype=torch.float64)
    basis = bspline_basis(x, uniform_knots(grid, order, dtype=torch.float64), order)
    assert basis.shape == (1001, grid + order)
    assert torch.all(basis >= 0)
    torch.testing.assert_close(basis.sum(-1), torch.ones_like(x), rtol=0, atol=1e-12)
    # Each point has at most order + 1 non-zero bases (local support).
    assert int((basis > 0).sum(-1).max()) <= order + 1


@pytest.mark.parametrize("grid,lo,hi", [(8, -1.0, 1.0), (5, -2.0, 0.5)])
def test_closed_form_cubic_equals_cox_de_boor(grid: int, lo: float, hi: float) -> None:
    # Inside, in the extended margins and beyond them (where both are zero), including exact knots.
    h = (hi - lo) / grid
    x = torch.cat(
        [
            torch.linspace(lo - 5 * h, hi + 5 * h, 3001, dtype=torch.float64),
            uniform_knots(grid, 3, (lo, hi), dtype=torch.float64),
        ]
    )
    reference = bspline_basis(x, uniform_knots(grid, 3, (lo, hi), dtype=torch.float64), 3)
    closed = cubic_basis_uniform(x, grid, (lo, hi))
    torch.testing.assert_close(closed, reference, rtol=0, atol=1e-12)
    assert float(closed[x < lo - 3 * h].abs().max()) == 0.0 and float(closed[x >= hi + 3 * h].abs().max()) == 0.0
    # Same derivative too (the closed form is what training differentiates).
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    w = torch.randn(grid + 3, dtype=torch.float64)
    (cubic_basis_uniform(xa, grid, (lo, hi)) @ w).sum().backward()
    (bspline_basis(xb, uniform_knots(grid, 3, (lo, hi), dtype=torch.float64), 3) @ w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-9)


@pytest.mark.parametrize("grid,lo,hi", [(8, -1.0, 1.0), (5, -2.0, 0.5)])
def test_the_element_wise_cubic_basis_equals_the_closed_form_of_the_clamped_input(grid: int, lo: float,
                                                                                 hi: float) -> None:
    """The compiled pass's basis (cardinal B-splines, no scatter) is the layer's: the basis of the input clamped
    to the range, with its slope inside the range and none outside, knots and ends included."""
    h = (hi - lo) / grid
    x = torch.cat([torch.linspace(lo - 2 * h, hi + 2 * h, 2001, dtype=torch.float64),
                   uniform_knots(grid, 3, (lo, hi), dtype=torch.float64)])
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    cardinal = cubic_basis_cardinal(xa, grid, (lo, hi)).T  # points last
    closed = cubic_basis_uniform(xb.clamp(lo, hi), grid, (lo, hi))
    torch.testing.assert_close(cardinal, closed, rtol=0, atol=1e-12)
    w = torch.randn(grid + 3, dtype=torch.float64)
    (cardinal @ w).sum().backward()
    (closed @ w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-9)
    assert float(xa.grad[(x < lo) | (x > hi)].abs().max()) == 0.0


def test_layer_gemm_path_equals_sum_of_edge_activations() -> None:
    torch.manual_seed(0)
    for order in (2, 3):
        layer = KANLayer(5, 4, grid=6, order=order).double()
        x = torch.rand(300, 5, dtype=torch.float64) * 2 - 1
        torch.testing.assert_close(layer(x), layer.edge_activations(x).sum(-1), rtol=0, atol=1e-12)
    # Initialisation of the paper: w_s = 1, small coefficients, w_b ~ N(0, 2 / (n_in + n_out)).
    big = KANLayer(200, 300, grid=8, noise_scale=0.1)
    assert torch.all(big.spline_scale == 1)
    assert abs(float(big.spline_coef.std()) - 0.1) < 0.005
    assert abs(float(big.base_weight.std()) - (2 / 500) ** 0.5) < 0.005


def _layer_and_inputs(seed: int = 0) -> tuple[KANLayer, torch.Tensor]:
    torch.manual_seed(seed)
    layer = KANLayer(6, 5, grid=7).double()
    with torch.no_grad():
        layer.spline_scale.uniform_(0.5, 2.0)  # w_s != 1 so that a path forgetting it fails
    # inside the range, exactly on knots, at both ends, and beyond them (the spline part clamps)
    x = torch.cat([torch.rand(400, 6, dtype=torch.float64) * 2 - 1,
                   torch.linspace(-1, 1, 8, dtype=torch.float64)[:, None].expand(8, 6),
                   torch.tensor([[-1.3, 1.2, -1.0, 1.0, 0.0, 2.0]], dtype=torch.float64)])
    return layer, x


@pytest.mark.parametrize("method", ["gather", "fused"])
def test_gather_and_fused_layers_equal_the_dense_basis_layer(method: str) -> None:
    """Values and gradients (inputs and every parameter) to 1e-6: the fast paths compute the same function."""
    layer, x0 = _layer_and_inputs()
    results = {}
    for m in ("dense", method):
        x = x0.clone().requires_grad_()
        y = layer(x, method=m)
        grads = torch.autograd.grad((y * torch.linspace(-1, 2, 5, dtype=y.dtype)).square().sum(),
                                    [x, layer.base_weight, layer.spline_coef, layer.spline_scale])
        results[m] = (y, *grads)
    for ref, got in zip(results["dense"], results[method]):
        assert float((ref - got).abs().max()) <= 1e-6 * max(1.0, float(ref.abs().max()))
    # and in float32, as trained
    layer32, x32 = layer.float(), x0.float()
    torch.testing.assert_close(layer32(x32, method=method), layer32(x32, method="dense"), rtol=1e-5, atol=1e-6)


def test_fused_layer_has_exact_second_derivatives() -> None:
    """Registration differentiates the displacement twice (Jacobian / bending regularisers): the fused path
    agrees with autograd through the dense basis, and passes torch's double-backward check."""
    layer, x0 = _layer_and_inputs(1)
    x0 = x0[:64]
    second = {}
    for m in ("dense", "fused", "gather"):
        x = x0.clone().requires_grad_()
        (gx,) = torch.autograd.grad(layer(x, method=m).pow(3).sum(), x, create_graph=True)
        second[m] = torch.autograd.grad(gx.square().sum(), [x, layer.spline_coef, layer.base_weight])
    for m in ("fused", "gather"):
        for ref, got in zip(second["dense"], second[m]):
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    from medinr.models.kan import _CubicSplineLinear

    w = torch.randn(3, 4 * 10, dtype=torch.float64, requires_grad=True)
    xs = (torch.rand(7, 4, dtype=torch.float64) * 2 - 1).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, b: _CubicSplineLinear.apply(a, b, 7, -1.0, 1.0), (xs, w))


def test_kan_deformation_model_starts_at_zero_with_coordinate_gradients() -> None:
    """What ``register --model kan`` needs: zero output, gradients w.r.t. coordinates, trainable from zero."""
    model = build_model("kan", 3, 3, encoding=None, widths=[8, 8])
    model.zero_output_()
    x = (torch.rand(50, 3) * 2 - 1).requires_grad_()
    u = model(x)
    assert torch.count_nonzero(u) == 0
    (jac,) = torch.autograd.grad(u[:, 0].sum(), x, create_graph=True)
    assert jac.shape == (50, 3)
    loss = (model(x) - 0.1).square().mean() + jac.square().mean()
    loss.backward()
    assert model.layers[-1].spline_coef.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(23, 9), (13, 40, 7)])
def test_grid_encoded_kan_on_a_lattice_equals_the_points(shape: tuple[int, ...]) -> None:
    """The whole-lattice path (the grid encoding resampled onto the lattice, as a registration velocity runs
    it) gives the values and every parameter's gradient of the KAN at the lattice points, on lattices coarser
    and finer than the encoding's levels."""
    from medinr.models.base import lattice_coords

    seed_everything(0)
    model = build_model("kan", len(shape), 2, widths=[8],
                        encoding_options={"levels": 3, "base_resolution": 8, "max_resolution": 32, "init": 0.5})
    weights = torch.randn(*shape, 2)
    grads = []
    for out in (model.forward_lattice(shape), model(lattice_coords(shape))):
        model.zero_grad()
        (out * weights).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        grads[-1].append(out.detach())
    for lattice, points in zip(*grads):  # sums over ~4000 points in another order: float32 rounding
        assert (lattice - points).abs().max() <= 1e-5 * max(1.0, float(points.abs().max()))


def test_a_training_pass_over_a_large_lattice_runs_compiled_and_equals_the_eager_one(monkeypatch) -> None:
    """A lattice pass with gradients over many points runs in chunks through the compiled ``kan_points`` (its
    short last chunk eagerly): the same values and parameter gradients as the eager layers. Without gradients
    (rendering), with a regulariser to record, or switched off, the eager layers run."""
    monkeypatch.setattr(kan_module, "LATTICE_CHUNK", 512)
    monkeypatch.setattr(kan_module, "COMPILED_LATTICE_MIN", 1024)
    seed_everything(0)
    model = build_model("kan", 2, 2, widths=[8], grid=6,
                        encoding_options={"levels": 3, "base_resolution": 8, "max_resolution": 32, "init": 0.5})
    shape = (45, 37)  # 1665 points: three chunks of 512 and 129 eager ones
    weights = torch.randn(*shape, 2)
    calls = []
    real = kan_module.kan_points
    monkeypatch.setattr(kan_module, "kan_points", lambda *a: calls.append(a[0].shape) or real(*a))
    monkeypatch.setattr(kan_module, "_POINTS_PASS", None)
    results = {}
    for compiled in (False, True):
        model.compile_lattice = compiled
        model.zero_grad()
        out = model.forward_lattice(shape)
        (out * weights).sum().backward()
        results[compiled] = [out.detach(), *(p.grad.clone() for p in model.parameters())]
    assert calls and all(c == (12, 512) for c in calls)  # traced on the chunk's shape only (channel first)
    assert kan_module._compiled_points().compiled
    for eager, compiled in zip(results[False], results[True]):
        assert (eager - compiled).abs().max() <= 1e-5 * max(1.0, float(eager.abs().max()))
    calls.clear()
    with torch.no_grad():
        model.forward_lattice(shape)
    model.compile_lattice, model.config["reg_lambda"] = True, 1.0
    model.train()
    model.forward_lattice(shape)
    assert not calls and model.regularization() is not None
    # where compiling fails (no compiler, no triton), the failing call runs eagerly and the eager layers after it
    model.config["reg_lambda"] = 0.0
    monkeypatch.setattr(kan_module, "_POINTS_PASS", None)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: (lambda *a: (_ for _ in ()).throw(RuntimeError("no cc"))))
    with pytest.warns(UserWarning, match="torch.compile failed"):
        failed = model.forward_lattice(shape)
    assert not kan_module._compiled_points().compiled and len(calls) == 3  # the three chunks, eagerly
    assert not model._compiles(10**6)
    torch.testing.assert_close(failed, model.forward_lattice(shape))


def test_by_default_a_fit_compiles_once_it_has_shown_that_it_is_long(monkeypatch) -> None:
    """``compile_lattice='auto'``: a model's training passes over large lattices run eagerly until they add up to
    ``COMPILE_AFTER_WORK`` points (a short fit, as a registration's finest level, never pays for the compile),
    then compiled; a model of the same layers compiles from its first pass once one has (the refit after a
    reconstruction's walk), one of other layers waits again. Passes without gradients do not count."""
    monkeypatch.setattr(kan_module, "LATTICE_CHUNK", 512)
    monkeypatch.setattr(kan_module, "COMPILED_LATTICE_MIN", 1024)
    monkeypatch.setattr(kan_module, "COMPILE_AFTER_WORK", 3000)
    monkeypatch.setattr(kan_module, "_COMPILED_SIGNATURES", set())
    compiled = []
    real = KAN._compiled_lattice
    monkeypatch.setattr(KAN, "_compiled_lattice", lambda self, c: compiled.append(self) or real(self, c))
    options = {"encoding_options": {"levels": 3, "base_resolution": 8, "max_resolution": 32}}
    first, again, other = (build_model("kan", 2, 1, widths=w, grid=6, **options) for w in ([8], [8], [4]))
    assert first.compile_lattice == "auto"
    shape = (45, 37)  # 1665 points a pass

    def passes(model: KAN, n: int) -> list[bool]:
        done = []
        for _ in range(n):
            before = len(compiled)
            model.forward_lattice(shape).sum().backward()
            done.append(len(compiled) > before)
        return done

    with torch.no_grad():
        first.forward_lattice(shape)
    assert passes(first, 3) == [False, False, True]  # 1665, 3330 >= 3000
    assert passes(again, 1) == [True]
    assert passes(other, 2) == [False, False]


def test_grid_encoded_kan_switches_its_levels_on_coarse_to_fine() -> None:
    """The KAN's capacity levels are its grid encoding's: with the ``k`` coarsest active, the finer levels give
    zero features, as if their grids were zero (the reconstruction's coarse-to-fine path, as ``mrgrid``)."""
    seed_everything(0)
    model = build_model("kan", 2, 2, widths=[8],
                        encoding_options={"levels": 3, "base_resolution": 8, "max_resolution": 32, "init": 0.5})
    assert model.capacity_levels == 3
    coarse = model.forward_lattice((20, 24), active_levels=1)
    axes = [torch.linspace(-1, 1, 20), torch.linspace(-1, 1, 24)]
    torch.testing.assert_close(model.forward_axes(axes, active_levels=1), coarse, atol=1e-5, rtol=1e-4)
    assert [model.levels_within(n) for n in (7, 8, 16, 32)] == [0, 1, 2, 3]
    with torch.no_grad():
        for grid in model.encoding.grids[1:]:
            grid.zero_()
    torch.testing.assert_close(coarse, model.forward_lattice((20, 24)))
    fourier = build_model("kan", 2, 2, encoding="fourier")
    assert fourier.capacity_levels == 1 and fourier.levels_within(4) == 1


def test_grid_extension_during_training_keeps_the_function_at_the_switch(coronal_64: np.ndarray) -> None:
    """A scheduled extension (grid 4 -> 8 at half of the steps) refits the splines exactly; training goes on."""
    coords, target = _coords_and_target(coronal_64)
    seed_everything(0)
    model = build_model("kan", 2, 1, grid=4, grid_schedule=[[0.5, 8]], **SMALL).train()
    seen = {}

    def before(step: int):
        f = model.evaluate(coords[:500])
        if model.training_progress(step / 40):
            seen.update(step=step, before=f, after=model.evaluate(coords[:500]))
            return list(model.parameters())
        return None

    result = fit(model.parameters(), lambda step: torch.mean((model(coords) - target) ** 2), steps=40, lr=3e-3,
                 progress=False, before_step=before)
    assert seen["step"] == 20 and model.config["grid"] == 8 and model.layers[0].n_basis == 11
    torch.testing.assert_close(seen["after"], seen["before"], rtol=0, atol=2e-6)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[15:20])  # the new splines keep training


# ---- fitting --------------------------------------------------------------------------------------------------


#: Odd pixels predicted from the even ones by the default KAN (seed 0, 200 steps, 1 thread): 28.1 dB, where
#: linear interpolation of the even pixels (scipy griddata) scores 28.0 dB. The default KAN before issue 10
#: (Fourier features, fitted at voxel centres) scored about 12 dB: a noise field between its training pixels.
ODD_PIXEL_PSNR = 26.0


def test_default_kan_predicts_the_odd_pixels_from_the_even_ones(coronal_64: np.ndarray) -> None:
    """Fitted to the pixels with even (i + j) of a 64x64 slice, the KAN predicts the others (a checkerboard)."""
    i, j = np.indices(coronal_64.shape)
    even = (i + j) % 2 == 0
    fitted = fit_image(coronal_64, _grid_64(), model="kan", steps=200, seed=0, progress=False, known=even)
    from medinr.image_fit import fitted_voxels

    predicted = fitted_voxels(fitted)[..., 0]
    assert psnr(coronal_64[~even], predicted[~even]) >= ODD_PIXEL_PSNR
    assert psnr(coronal_64[even], predicted[even]) > psnr(coronal_64[~even], predicted[~even])  # it did fit


@pytest.fixture(scope="module")
def sparse_fit(coronal_64: np.ndarray) -> dict:
    """A small KAN trained with the sparsification regulariser, then pruned and briefly fine-tuned."""
    coords, target = _coords_and_target(coronal_64)
    seed_everything(0)
    model = build_model("kan", 2, 1, reg_lambda=1e-2, reg_samples=512, **SMALL)
    model.train()

    def loss_fn(step: int) -> torch.Tensor:
        loss = torch.mean((model(coords) - target) ** 2)
        return loss + model.regularization()

    fit(model.parameters(), loss_fn, steps=150, lr=3e-3, schedule="constant", progress=False)
    before = _psnr(model, coords, target)
    params_before = model.num_parameters()
    widths = model.prune(coords, threshold=1e-2)
    # The pruned parameters are new tensors: a fresh optimiser, gently, as the paper continues training.
    fit(model.parameters(), loss_fn, steps=40, lr=3e-4, schedule="constant", progress=False)
    after = _psnr(model, coords, target)
    return {
        "model": model,
        "coords": coords,
        "before": before,
        "after": after,
        "widths": widths,
        "params_before": params_before,
    }


def test_regularisation_and_pruning_remove_nodes_keep_psnr(sparse_fit: dict) -> None:
    model = sparse_fit["model"]
    # At least a quarter of the 32 hidden nodes go, physically (smaller layers) and in the config.
    assert sum(sparse_fit["widths"]) <= 24
    assert model.config["widths"] == sparse_fit["widths"]
    assert [layer.n_out for layer in model.layers[:-1]] == sparse_fit["widths"]
    assert model.num_parameters() < sparse_fit["params_before"]
    # The pruned, fine-tuned network is within 1 dB of the unpruned regularised one (about 16-17 dB here).
    assert sparse_fit["before"] > 14.0
    assert sparse_fit["after"] >= sparse_fit["before"] - 1.0


def test_regularisation_terms(coronal_64: np.ndarray) -> None:
    coords, _ = _coords_and_target(coronal_64)
    plain = build_model("kan", 2, 1, **SMALL).train()
    plain(coords).sum().backward()
    assert plain.regularization() is None  # lambda = 0: no per-edge work, nothing to add

    torch.manual_seed(0)
    model = build_model("kan", 2, 1, reg_lambda=0.5, reg_mu1=1.0, reg_mu2=0.3, reg_samples=256, **SMALL).train()
    model(coords)
    recorded = model.regularization()
    assert model.regularization() is None  # the record is consumed
    explicit = model.regularization_loss(coords[:256])
    torch.testing.assert_close(recorded, explicit)
    # By hand for the paper's definitions: L1 = mean |phi| over samples, entropy of the normalised L1 norms.
    inputs, _ = model.layer_inputs(coords[:256])
    total = 0.0
    for layer, x in zip(model.layers, inputs):
        l1 = layer.edge_activations(x).abs().mean(0)
        p = l1 / l1.sum()
        total = total + l1.sum() + 0.3 * -(p * torch.log(p)).sum()
    torch.testing.assert_close(explicit, 0.5 * total, rtol=1e-5, atol=1e-6)
    explicit.backward()
    assert all(p.grad is not None for p in model.layers.parameters())


# ---- grid extension and checkpoints ---------------------------------------------------------------------------


def test_grid_extension_keeps_function(sparse_fit: dict) -> None:
    model = copy.deepcopy(sparse_fit["model"])
    coords = sparse_fit["coords"]
    before = model.evaluate(coords)
    error = model.extend_grid(16)  # a multiple of 8: the old splines lie in the new space
    assert model.config["grid"] == 16 and all(layer.n_basis == 19 for layer in model.layers)
    assert error < 1e-6
    torch.testing.assert_close(model.evaluate(coords), before, rtol=0, atol=1e-5)
    # A grid that is not a multiple is a least-squares approximation: close, not exact.
    model.extend_grid(20)
    assert float((model.evaluate(coords) - before).abs().max()) < 2e-2


def test_grid_extension_does_not_rescale_twice() -> None:
    torch.manual_seed(1)
    layer = KANLayer(3, 2, grid=5).double()
    with torch.no_grad():
        layer.spline_scale.mul_(3.0)  # w_s far from 1 would be applied twice by a careless refit
    x = torch.rand(500, 3, dtype=torch.float64) * 2 - 1
    before = layer(x)
    layer.extend_grid(10)
    torch.testing.assert_close(layer(x), before, rtol=0, atol=1e-10)


def test_checkpoint_round_trip_after_pruning_and_grid_extension(sparse_fit: dict, tmp_path) -> None:
    model = copy.deepcopy(sparse_fit["model"]).eval()
    model.extend_grid(12)
    coords = sparse_fit["coords"]
    path = save_checkpoint(tmp_path / "kan.inr", ContinuousImage(model, _grid_64()))
    loaded = load_checkpoint(path).model
    assert isinstance(loaded, KAN)
    assert loaded.config == model.config
    assert torch.equal(loaded.evaluate(coords), model.evaluate(coords))
    # The config alone rebuilds the pruned, extended shapes.
    rebuilt = build_model("kan", **model.config)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


def test_hashgrid_and_raw_encodings_rebuild(tmp_path) -> None:
    coords = torch.rand(500, 3) * 2 - 1
    for options in (
        {"encoding": "hashgrid", "encoding_options": {"levels": 4, "log2_table_size": 12}},
        {"encoding": None},
    ):
        model = build_model("kan", 3, 2, widths=[4], **options)
        out = model(coords)
        assert out.shape == (500, 2) and torch.isfinite(out).all()
        path = save_checkpoint(tmp_path / "m.inr", ContinuousImage.bare(model))
        assert torch.equal(load_checkpoint(path).model.evaluate(coords), model.evaluate(coords))


def test_bad_options_give_clear_errors() -> None:
    with pytest.raises(MedinrError, match="encoding"):
        build_model("kan", 2, 1, encoding="wavelet")
    with pytest.raises(MedinrError, match="widths"):
        build_model("kan", 2, 1, widths=[8, 0])
    with pytest.raises(MedinrError, match="model 'kan' has no option 'hidden'; its options are: widths, grid"):
        build_model("kan", 2, 1, hidden=64)


# ---- plot -----------------------------------------------------------------------------------------------------


def test_plot_activations_writes_png(sparse_fit: dict, tmp_path) -> None:
    path = tmp_path / "activations.png"
    plot_activations(sparse_fit["model"], path, coords=sparse_fit["coords"])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_the_activation_plot_leaves_the_users_matplotlib_backend_alone() -> None:
    """Importing it in a notebook or under napari's Qt backend must not switch the backend to Agg."""
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import medinr.models.kan_plot; "
            "import matplotlib as m; print(m.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"
