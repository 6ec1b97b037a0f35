"""The SVF stage's numerics: the box filter of local NCC and its adjoint, the closed-form Jacobian determinant."""

from __future__ import annotations

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
