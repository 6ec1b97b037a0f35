"""KAN family: B-spline basis, fitting the coronal slice, sparsification, pruning, grid extension, checkpoints, plot."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from medinr.checkpoint import load_checkpoint, save_checkpoint
from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.fit import fit, seed_everything
from medinr.geometry import Geometry
from medinr.image_fit import fit_image
from medinr.metrics import psnr
from medinr.models import build_model
from medinr.models.kan import KAN, KANLayer, bspline_basis, cubic_basis_uniform, uniform_knots
from medinr.models.kan_plot import plot_activations

# A small KAN for the sparsification tests: it fits in a few seconds and has hidden nodes to spare.
SMALL = {"widths": [16, 16], "encoding_options": {"n_frequencies": 8, "sigma": 3.0}}


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


# ---- fitting --------------------------------------------------------------------------------------------------


def test_default_kan_fits_coronal_slice(coronal_64: np.ndarray) -> None:
    """The default "kan" (Fourier features -> KAN [64, 32, 32, 1], grid 8) reaches 28 dB in 100 steps at 64x64."""
    geometry = _grid_64()
    fitted = fit_image(coronal_64, geometry, model="kan", steps=100, seed=0, progress=False, batch_size=64 * 64)
    values = fitted.on_grid()[..., 0]
    assert psnr(coronal_64, values) >= 28.0


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
    with pytest.raises(MedinrError, match="bad options"):
        build_model("kan", 2, 1, hidden=64)


# ---- plot -----------------------------------------------------------------------------------------------------


def test_plot_activations_writes_png(sparse_fit: dict, tmp_path) -> None:
    path = tmp_path / "activations.png"
    plot_activations(sparse_fit["model"], path, coords=sparse_fit["coords"])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
