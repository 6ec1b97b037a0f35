"""The cached-lattice tier without Qt: equal to the exact frame at its points, interpolated between, cache files
tied to their checkpoint, and the viewer's tier decision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medinr.checkpoint import save_checkpoint
from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.errors import MedinrError
from medinr.geometry import Geometry, WorldBox
from medinr.models import INR, build_model
from medinr.registration.jacobian import jacobian_determinant
from medinr.render import Plane, default_plane, render_plane
from medinr.render.lattice import (
    build_lattice,
    cached_lattice_steps,
    file_sha256,
    jacobian_steps,
    load_lattice,
    plan_lattice,
    render_fast,
    run_steps,
)
from pipelines.cli import main

# anisotropic voxels, x flipped: 1.5 x 2 x 2.5 mm
SHAPE = (18, 14, 10)
AFFINE = np.diag([-1.5, 2.0, 2.5, 1.0]) + np.array([[0, 0, 0, 25.0], [0, 0, 0, -18.0], [0, 0, 0, 4.0], [0, 0, 0, 0]])


@pytest.fixture(scope="module")
def siren() -> ContinuousImage:
    """A small untrained SIREN: structured, non-linear between lattice points."""
    torch.manual_seed(0)
    model = build_model("siren", 3, 1, hidden=32, layers=2, omega_0=6.0).eval()
    return ContinuousImage(model, Geometry(SHAPE, AFFINE), OutputMeaning("intensity", scale=100.0, offset=5.0))


def _plane_on_voxels(k: int) -> Plane:
    """An axial plane whose pixel centres are exactly the voxel centres of slice k (14 rows of 2 mm along -y,
    18 columns of 1.5 mm along +x)."""
    centre = AFFINE[:3, :3] @ np.array([8.5, 6.5, k]) + AFFINE[:3, 3]
    return Plane(centre, [0, -1, 0], [1, 0, 0], (14 * 2.0, 18 * 1.5))


def test_cached_frame_equals_the_exact_frame_at_the_lattice_points(siren):
    lattice = build_lattice(siren, plan_lattice(siren, seconds=None, finer=1))
    assert lattice.geometry == siren.geometry and lattice.values.shape == (1, *SHAPE)
    plane = _plane_on_voxels(5)
    fast, exact = lattice.render(plane, (14, 18)), render_plane(siren, plane, (14, 18))
    # float32 rounding of the coordinates only: 1e-5 of the value range
    assert np.max(np.abs(fast - exact)) <= 1e-5 * np.ptp(exact) and np.ptp(exact) > 1.0
    # between lattice points the cached frame is the trilinear interpolant, not the network
    tilted = default_plane(siren, "1,2,3").zoomed(1.5)
    fast, exact = lattice.render(tilted, (40, 40)), render_plane(siren, tilted, (40, 40))
    inside = exact != 0
    assert np.array_equal(fast != 0, inside) and inside.mean() > 0.3
    err = np.abs(fast - exact)[inside]
    assert 1e-4 * np.ptp(exact) < err.mean() < 0.05 * np.ptp(exact)


def test_corner_test_skips_the_mask_only_where_every_pixel_is_inside(siren, monkeypatch):
    import medinr.render.lattice as lattice_module

    lattice = build_lattice(siren, plan_lattice(siren, seconds=None, finer=1))
    planes = {"inside": default_plane(siren, "axial", 3.0).zoomed(1.3), "across": default_plane(siren, "1,2,3")}
    corners, real = [], lattice_module._corners_inside
    monkeypatch.setattr(lattice_module, "_corners_inside", lambda *args: corners.append(real(*args)) or corners[-1])
    fast = {name: lattice.render(plane, (31, 27)) for name, plane in planes.items()}
    assert corners == [True, False]
    monkeypatch.setattr(lattice_module, "_corners_inside", lambda *args: False)  # the per-pixel mask everywhere
    for name, plane in planes.items():
        assert np.array_equal(fast[name], lattice.render(plane, (31, 27))), name
    assert (fast["inside"] != 0).all() and 0.05 < (fast["across"] == 0).mean() < 0.9


def test_lattice_planning_keeps_the_training_grid_unless_a_budget_says_otherwise(siren):
    assert plan_lattice(siren, seconds=None, finer=1) == siren.geometry
    # by default twice as fine as the finest voxel size (1.5 mm) over the same box, within the voxel budget
    fine = plan_lattice(siren, seconds=None)
    assert np.allclose(fine.spacing, 0.75, atol=0.02) and np.allclose(
        fine.world_box().lo, siren.geometry.world_box().lo
    )
    assert plan_lattice(siren, seconds=None, max_voxels=10_000) == siren.geometry  # 39k finer voxels do not fit
    small = plan_lattice(siren, max_voxels=500, seconds=None)
    assert np.prod(small.shape) <= 500 and np.allclose(small.world_box().lo, siren.geometry.world_box().lo)
    # a time budget far below the model's cost gives a coarser grid over the same box
    quick = plan_lattice(siren, seconds=1e-6)
    assert np.prod(quick.shape) < np.prod(SHAPE)
    given = plan_lattice(siren, seconds=None, spacing_mm=3.0)
    assert np.allclose(given.spacing, 3.0, rtol=0.1) and np.allclose(
        given.world_box().hi, siren.geometry.world_box().hi
    )


def _displacement() -> ContinuousImage:
    a = np.array([[0.1, 0.05, 0.0], [-0.02, -0.1, 0.03], [0.0, 0.04, 0.2]])

    class Linear(INR):
        def forward(self, coords):
            return (20.0 * coords) @ torch.as_tensor(a.T, dtype=coords.dtype)

    box = WorldBox(np.full(3, -20.0), np.full(3, 20.0))
    geom = Geometry((11, 11, 11), np.diag([4.0, 4.0, 4.0, 1.0]) + np.array([[0, 0, 0, -20]] * 3 + [[0, 0, 0, 0]]))
    return ContinuousImage(Linear(3, 3), geom, OutputMeaning("displacement", scale=1.0), "world_box", box)


def test_displacement_lattice_components_and_jacobian():
    field = _displacement()
    lattice = build_lattice(field, plan_lattice(field, seconds=None))
    plane = default_plane(field, "sagittal", offset_mm=4.0)
    world = plane.world_points((10, 10))
    mag = render_fast(lattice, field, plane, (10, 10))
    assert np.allclose(mag, np.linalg.norm(field.sample(world), axis=-1), atol=1e-4)
    assert np.allclose(
        render_fast(lattice, field, plane, (10, 10), component=1), field.sample(world)[..., 1], atol=1e-4
    )
    assert not lattice.has("jacobian")
    run_steps(jacobian_steps(field, lattice))
    jac = lattice.render(plane, (10, 10), "jacobian")
    assert np.allclose(jac, jacobian_determinant(field, world), atol=1e-4)
    with pytest.raises(MedinrError, match="complex"):
        render_fast(lattice, field, plane, (10, 10), component="phase")


def _count_steps(steps) -> tuple[object, int]:
    n = 0
    while True:
        try:
            next(steps)
            n += 1
        except StopIteration as end:
            return end.value, n


def test_a_stale_or_foreign_cache_file_is_refused_and_rebuilt(tmp_path, siren):
    path = save_checkpoint(tmp_path / "a.inr", siren)
    cache = tmp_path / "a.inr.lattice"
    first, n = _count_steps(cached_lattice_steps(siren, path, cache, siren.geometry))
    assert n == SHAPE[0] and cache.is_file()  # built a slab at a time, then written
    again, n = _count_steps(cached_lattice_steps(siren, path, cache, siren.geometry))
    assert n == 0 and np.array_equal(again.values, first.values)  # read back, not rebuilt

    # stale: the checkpoint changed (other weights) -> the old file is refused and replaced
    torch.manual_seed(5)
    other = ContinuousImage(build_model("siren", 3, 1, hidden=32, layers=2, omega_0=6.0).eval(), siren.geometry)
    save_checkpoint(path, other)
    with pytest.raises(MedinrError, match="stale"):
        load_lattice(cache, file_sha256(path))
    rebuilt, n = _count_steps(cached_lattice_steps(other, path, cache, siren.geometry))
    assert n == SHAPE[0] and not np.allclose(rebuilt.values, first.values)
    assert np.array_equal(load_lattice(cache, file_sha256(path)).values, rebuilt.values)

    # foreign: not a lattice at all (a pickled NumPy file, random bytes) -> refused, rebuilt, overwritten
    for payload in (b"\x93NUMPY\x01\x00v\x00{'descr': '|O'", b"\x80\x04garbage"):
        cache.write_bytes(payload)
        with pytest.raises(MedinrError, match="not a medinr lattice"):
            load_lattice(cache, file_sha256(path))
        _, n = _count_steps(cached_lattice_steps(other, path, cache, siren.geometry))
        assert n == SHAPE[0] and load_lattice(cache, file_sha256(path)).kind == "intensity"


def test_cli_fast_tier_matches_the_exact_tier_at_lattice_resolution(tmp_path, siren, capsys):
    import nibabel as nib

    path = save_checkpoint(tmp_path / "s.inr", siren)
    outs = {}
    for tier in ("exact", "lattice"):
        out = tmp_path / f"{tier}.nii.gz"
        assert main(["render", str(path), "--plane", "axial", "--tier", tier, "--out", str(out)]) == 0
        assert f"({tier})" in capsys.readouterr().out
        outs[tier] = np.asarray(nib.load(str(out)).dataobj)
    assert (tmp_path / "s.inr.lattice").is_file()
    # default axial render: pixels of the finest voxel size (1.5 mm) over the box, mostly between lattice points
    diff = np.abs(outs["lattice"] - outs["exact"])
    assert diff.max() < 0.2 * np.ptp(outs["exact"]) and diff.mean() < 0.02 * np.ptp(outs["exact"])
