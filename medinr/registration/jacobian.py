"""The Jacobian determinant det(I + du/dx) of a displacement image at world points, exact by autograd.

The one such function: the CLI's jacobian.nii.gz, the report, the viewer's 'jacobian' display and the folding
statistics all call it (finite differences of a dense field of another method are ``jacobian_map_fd``).
"""

from __future__ import annotations

import numpy as np
import torch

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.registration.regularizers import deformation_det, displacement_jacobian


def jacobian_determinant(field: ContinuousImage, xyz: np.ndarray | torch.Tensor, chunk: int = 8192) -> np.ndarray:
    """``det(I + du/dx)`` of a displacement image at world points ``(..., ndim)`` mm: ``(...)`` float32.

    Values <= 0 mark folding. Derivatives are exact (autograd through the network), taken with respect to
    world millimetres, in chunks of ``chunk`` points so that memory stays bounded.
    """
    if field.kind != "displacement":
        raise MedinrError("a Jacobian determinant needs a displacement (registration) image")
    pts = xyz if isinstance(xyz, torch.Tensor) else torch.from_numpy(np.asarray(xyz, dtype=np.float64))
    lead = pts.shape[:-1]
    flat = pts.reshape(-1, pts.shape[-1]).to(field.model.device, torch.float32)
    was_training = field.model.training
    field.model.eval()
    # derivatives in x only: frozen weights spare their gradient in every backward pass (and let a lattice field be
    # sampled over all threads, :func:`medinr.geometry.sample_grid`)
    trained = [p for p in field.model.parameters() if p.requires_grad]
    for p in trained:
        p.requires_grad_(False)
    parts = []
    try:
        for s in range(0, flat.shape[0], chunk):
            x = flat[s : s + chunk].clone().requires_grad_(True)
            with torch.enable_grad():
                grad_u = displacement_jacobian(field(x), x, create_graph=False)
            parts.append(deformation_det(grad_u.detach()))
    finally:
        field.model.train(was_training)
        for p in trained:
            p.requires_grad_(True)
    out = torch.cat(parts) if parts else flat.new_zeros(0)
    return out.reshape(lead).cpu().numpy().astype(np.float32)
