"""The SVF stage's numerics: the box filter of local NCC and its adjoint, the closed-form Jacobian determinant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medinr.registration.losses import box_mean
from medinr.registration.regularizers import deformation_det


def test_box_mean_equals_clipped_average_pooling_and_its_backward_is_the_adjoint():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 9, 6, 3, generator=g, dtype=torch.float64)
    ref = x
    for axis, width in enumerate([5, 5, 3]):  # the thin axis (3 slices) gets a 3-wide box
        kernel, pad = [1, 1, 1], [0, 0, 0]
        kernel[axis], pad[axis] = width, width // 2
        ref = F.avg_pool3d(ref, tuple(kernel), stride=1, padding=tuple(pad), count_include_pad=False)
    assert torch.allclose(box_mean(x, 5), ref, atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: box_mean(z, 5), (x.clone().requires_grad_(True),))
    assert torch.autograd.gradcheck(lambda z: box_mean(z, 3), (torch.rand(1, 7, 4, dtype=torch.float64,
                                                                          requires_grad=True),))


def test_closed_form_determinant_and_its_gradient_match_torch():
    grad_u = (0.3 * torch.randn(50, 3, 3, dtype=torch.float64)).requires_grad_(True)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(deformation_det(grad_u), torch.linalg.det(eye + grad_u), atol=1e-12)
    (ours,) = torch.autograd.grad(deformation_det(grad_u).sum(), grad_u)
    (ref,) = torch.autograd.grad(torch.linalg.det(eye + grad_u).sum(), grad_u)
    assert torch.allclose(ours, ref, atol=1e-10)


def test_local_ncc_on_the_textured_box_equals_the_whole_lattice():
    """A level evaluated on the box around its textured nodes gives the loss and the gradient of the whole lattice
    (a blob on a flat background, moved by a random field)."""
    import numpy as np
    from scipy import ndimage

    from medinr.geometry import Geometry
    from medinr.registration.svf import Level, level_loss, network_map, straight_through

    rng = np.random.default_rng(0)
    image = np.zeros((40, 44, 36), np.float32)
    image[12:30, 10:34, 8:26] = ndimage.gaussian_filter(rng.random((18, 24, 18)), 1.5) * 4
    moving = np.roll(image, 2, axis=0)
    g = Geometry(image.shape, np.diag([2.0, 2.0, 2.0, 1.0]))
    spec = (2, 1, 0.5, 1.0)
    whole = Level.build(spec, (image, g), (moving, g), network_map(g, g, None))
    part = Level.build(spec, (image, g), (moving, g), network_map(g, g, None))
    part.crop_to_trust(5)
    assert part.crop is not None and part.fixed.numel() < 0.6 * whole.fixed.numel()
    v = (0.02 * torch.randn(3, *whole.nodes, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    out = []
    for level in (whole, part):
        v.grad = None
        loss = level_loss(level, straight_through(v, 6), torch.eye(3), "lncc", 5, 0.0)
        loss.backward()
        out.append((loss.detach(), v.grad.clone()))
    assert torch.allclose(out[0][0], out[1][0], rtol=1e-5)
    assert torch.allclose(out[0][1], out[1][1], atol=1e-6 * float(out[0][1].abs().max()))


def test_corner_dets_are_the_exact_jacobian_of_the_interpolated_field_at_every_cell_corner():
    """det(I + grad u) of the (bi/tri)linear field, by autograd at points just inside each corner of each cell,
    equals corner_dets (which the folding penalty and the fold repair use), in 2D and 3D."""
    import itertools

    from medinr.geometry import sample_grid
    from medinr.registration.svf import corner_dets, lattice_gradient

    gen = torch.Generator().manual_seed(1)
    for nodes in ((5, 7), (4, 5, 6)):
        nd = len(nodes)
        d = 0.15 * torch.randn(nd, *nodes, generator=gen, dtype=torch.float64)
        dets = corner_dets(d)
        assert dets.shape == (2**nd, int(torch.tensor([n - 1 for n in nodes]).prod()))
        assert torch.allclose(dets[0], deformation_det(lattice_gradient(d)))  # the lower corner
        assert (dets < 0).any() and (dets > 0).any()
        step = [2.0 / (n - 1) for n in nodes]  # network units per cell
        lower = torch.stack(torch.meshgrid(*[torch.arange(n - 1, dtype=torch.float64) * s - 1 for n, s in
                                             zip(nodes, step)], indexing="ij"), -1).reshape(-1, nd)
        for k, corner in enumerate(itertools.product((0, 1), repeat=nd)):
            inside = torch.tensor([s * (1 - 1e-6) if c else s * 1e-6 for c, s in zip(corner, step)],
                                  dtype=torch.float64)
            x = (lower + inside).requires_grad_(True)
            u = sample_grid(d, x, padding_mode="border")
            grad = torch.stack([torch.autograd.grad(u[:, i].sum(), x, retain_graph=True)[0] for i in range(nd)], 1)
            assert torch.allclose(deformation_det(grad), dets[k], atol=1e-5), corner


def test_unfold_lifts_every_corner_above_the_floor_and_moves_only_the_folded_region():
    """A velocity that folds inside a 4^3 patch (det J down to -1.2 .. -2.5) comes out of the repair with every
    cell corner above UNFOLD_FLOOR, changed only at nodes within one of the patch; a fold-free field is returned
    as it is, in zero rounds."""
    from medinr.registration.svf import UNFOLD_FLOOR, corner_dets, integrate, unfold

    for seed in range(3):
        v = torch.zeros(3, 16, 16, 16)
        v[:, 6:10, 6:10, 6:10] = 0.25 * torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(seed))
        assert float(corner_dets(integrate(v, 6)).min()) < -1.0
        out, rounds = unfold(v, 6)
        assert rounds > 0
        assert float(corner_dets(integrate(out, 6)).min()) >= UNFOLD_FLOOR
        changed = (out != v).any(0).nonzero()
        assert int(changed.min()) >= 5 and int(changed.max()) <= 10
    smooth = 0.02 * torch.ones(3, 8, 9, 10)
    out, rounds = unfold(smooth, 6)
    assert rounds == 0 and torch.equal(out, smooth)


def test_unfold_widens_where_smoothing_the_folded_cells_alone_folds_them_deeper():
    """A 12^3 crop of the velocity of a 1 mm registration (bench/register.py --panel 1mm, seed 1, after three
    rounds of the repair; network units of the crop, squarings 4) whose folded cells folded deeper with every round
    of smoothing at their own nodes (50 rounds, min det -0.26): widening the smoothed region clears them."""
    from pathlib import Path

    from medinr.registration.svf import UNFOLD_FLOOR, UNFOLD_ROUNDS, corner_dets, integrate, unfold

    v = torch.from_numpy(np.load(Path(__file__).parent / "data" / "unfold_widening_velocity.npy"))
    assert float(corner_dets(integrate(v, 4)).min()) < -0.05
    out, rounds = unfold(v, 4)
    assert 0 < rounds < UNFOLD_ROUNDS // 5
    assert float(corner_dets(integrate(out, 4)).min()) >= UNFOLD_FLOOR
    changed = float((out != v).any(0).float().mean())
    assert changed < 0.5  # still a repair of a region, not of the whole crop


def test_interpolation_matrices_equal_the_upsampling_on_a_crop_values_and_gradients():
    """The fine level's velocity -> evaluation-crop interpolation (one matrix per axis) is the trilinear
    upsampling of the whole lattice, cropped: values and the gradient of any loss of them."""
    from medinr.models.lattice import resize_lattice
    from medinr.models.separable import axis_matrix, interpolate_matrices

    torch.manual_seed(0)
    nodes, points, crop = (7, 9, 5), (13, 17, 9), (slice(2, 11), slice(0, 17), slice(3, 6))
    v = torch.randn(3, *nodes, requires_grad=True)
    weights = torch.randn(3, 9, 17, 3)
    mats = [axis_matrix(torch.linspace(-1, 1, n)[c], m) for n, c, m in zip(points, crop, nodes)]
    got = interpolate_matrices(v, mats)
    ref = resize_lattice(v, points)[(slice(None),) + crop]
    assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-5)
    (g_got,) = torch.autograd.grad((got * weights).sum(), v)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), v)
    assert torch.allclose(g_got, g_ref, atol=1e-5)
    assert torch.allclose(axis_matrix(torch.linspace(-1, 1, 5), 5), torch.eye(5))  # nodes on nodes: the identity


@pytest.mark.parametrize("shape,sigma", [((5, 40, 7), 3.0), ((23, 19, 17), 1.0), ((24, 30), 0.5), ((30, 3), 1.5)])
def test_smoothing_is_scipys_gaussian_filter(shape, sigma) -> None:
    """The registration's Gaussian (torch, shifted sums) is scipy.ndimage.gaussian_filter's: its 4-sigma kernel and
    'reflect' edges, also where the kernel reaches past a short axis more than once."""
    from scipy import ndimage

    from medinr.registration.svf import smoothed

    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours = smoothed(image, sigma)
    assert ours.dtype == np.float32 and ours.shape == image.shape
    np.testing.assert_allclose(ours, ndimage.gaussian_filter(image, sigma), rtol=0, atol=1e-6)
    assert smoothed(image, 0.0) is image
