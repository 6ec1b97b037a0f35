"""Geometry: voxel <-> world <-> network conversions and grid sampling follow CONVENTIONS.md."""

import numpy as np
import pytest
import torch

from medinr.errors import MedinrError
from medinr.geometry import Geometry, WorldBox, sample_grid


def oblique_affine() -> np.ndarray:
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.8, 1.5, 2.5])
    a[:3, 3] = [10.0, -20.0, 5.0]
    return a


def test_round_trips_voxel_world_network():
    g = Geometry((7, 9, 5), oblique_affine())
    ijk = np.random.default_rng(0).uniform(0, 4, size=(50, 3))
    world = g.voxel_to_world(ijk)
    np.testing.assert_allclose(world, ijk @ g.affine[:3, :3].T + g.affine[:3, 3])
    np.testing.assert_allclose(g.world_to_voxel(world), ijk, atol=1e-10)
    np.testing.assert_allclose(g.network_to_world(g.world_to_network(world)), world, atol=1e-10)
    np.testing.assert_allclose(g.spacing, [0.8, 1.5, 2.5])


def test_network_coordinates_hit_voxel_centres_at_the_ends():
    g = Geometry((7, 9, 5))
    grid = g.network_grid()
    assert grid.shape == (7, 9, 5, 3)
    assert torch.allclose(grid[0, 0, 0], torch.tensor([-1.0, -1.0, -1.0]))
    assert torch.allclose(grid[-1, -1, -1], torch.tensor([1.0, 1.0, 1.0]))
    assert torch.allclose(g.network_to_voxel(grid), g.voxel_grid(), atol=1e-5)


def test_torch_and_numpy_agree():
    g = Geometry((4, 6), np.diag([2.0, 3.0, 1.0, 1.0]))
    pts = np.array([[1.0, 2.0], [3.0, 5.0]])
    np.testing.assert_allclose(g.voxel_to_world(torch.tensor(pts)).numpy(), g.voxel_to_world(pts))


def test_sample_grid_reads_the_voxel_at_its_index_2d_and_3d():
    vol = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(4, 5, 6)
    g = Geometry(vol.shape)
    ijk = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 5.0]])
    out = sample_grid(vol, g.voxel_to_network(ijk))
    assert torch.allclose(out, torch.stack([vol[1, 2, 3], vol[3, 0, 5]]))
    img = vol[:, :, 0]
    g2 = Geometry(img.shape)
    out2 = sample_grid(img[None], g2.voxel_to_network(torch.tensor([[2.0, 4.0], [2.5, 4.0]])))
    assert out2.shape == (2, 1)
    assert torch.allclose(out2[:, 0], torch.stack([img[2, 4], 0.5 * (img[2, 4] + img[3, 4])]))


def test_2d_slice_of_another_plane_gets_in_plane_millimetres():
    a = np.zeros((4, 4))
    a[0, 0], a[2, 1], a[1, 2], a[1, 3], a[3, 3] = 2.0, 3.0, 1.0, 40.0, 1.0  # coronal-like plane (x, z)
    g = Geometry((5, 6), a)
    world = g.voxel_to_world(np.array([[0.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(np.linalg.norm(world[1] - world[0]), np.hypot(2.0, 3.0))
    np.testing.assert_allclose(g.spacing, [2.0, 3.0])


def test_world_box_maps_onto_unit_cube():
    g = Geometry((5, 5, 3), oblique_affine())
    box = g.world_box()
    world = g.voxel_to_world(np.array([[0.0, 0, 0], [4, 4, 2]]))
    net = box.to_network(world)
    assert np.all(np.abs(net) <= 1 + 1e-9)
    np.testing.assert_allclose(box.from_network(net), world)
    assert WorldBox.from_dict(box.to_dict()).to_dict() == box.to_dict()


def test_resized_keeps_field_of_view():
    g = Geometry((10, 20), np.diag([1.0, 0.5, 1.0, 1.0]))
    h = g.resized((19, 39))
    np.testing.assert_allclose(h.voxel_to_world(np.array([18.0, 38.0])), g.voxel_to_world(np.array([9.0, 19.0])))


@pytest.mark.parametrize("shape,affine", [((4,), None), ((3, 3), np.zeros((4, 4))), ((3, 3), np.full((4, 4), np.nan))])
def test_bad_geometry_is_refused(shape, affine):
    with pytest.raises(MedinrError):
        Geometry(shape, affine)


def test_two_grids_of_one_oblique_plane_share_its_in_plane_frame():
    """A sagittal slice and its 2x block mean: the coarse voxel centre is where the fine grid says it is."""
    fine = np.array([[0, 0, 1.0, 12.0], [1.0, 0, 0, -30.0], [0, 1.0, 0, 7.0], [0, 0, 0, 1]])  # axes along y, z
    coarse = fine @ np.array([[2, 0, 0, 0.5], [0, 2, 0, 0.5], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    g_fine, g_coarse = Geometry((40, 30), fine), Geometry((20, 15), coarse)
    np.testing.assert_allclose(g_coarse.voxel_to_world(np.array([0.0, 0.0])),
                               g_fine.voxel_to_world(np.array([0.5, 0.5])), atol=1e-9)
    np.testing.assert_allclose(g_coarse.voxel_to_world(np.array([3.0, 2.0])),
                               g_fine.voxel_to_world(np.array([6.5, 4.5])), atol=1e-9)


@pytest.mark.parametrize("shape", [(300, 257), (41, 47, 39)])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_sample_grid_split_over_threads_gives_the_same_values_and_gradients(monkeypatch, shape, mode):
    """Many points are sampled as one batch item per thread: bit for bit what one batch item gives."""
    import medinr.geometry as geometry

    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, *shape, generator=gen)
    n = int(np.prod(shape)) + 1  # odd: the last part is padded
    coords = 2.4 * torch.rand(n, len(shape), generator=gen) - 1.2
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for split in (10**12, 1000):
            monkeypatch.setattr(geometry, "SPLIT_POINTS", split)
            c = coords.clone().requires_grad_(True)
            values = sample_grid(image, c, mode=mode)
            (values * torch.arange(2.0)).sum().backward()
            results.append((values, c.grad))
        assert results[0][0].shape == (n, 2)
        assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
        # an image that needs its own gradient (a lattice being fitted) is sampled whole
        learnt = image.clone().requires_grad_(True)
        sample_grid(learnt, coords).sum().backward()
        assert learnt.grad is not None and learnt.grad.shape == image.shape
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("channels", [None, 3])
def test_points_on_a_voxel_plane_sample_as_the_3d_interpolation(channels):
    """Without gradients, points sharing one coordinate (an axial, coronal or sagittal plane) are sampled from the
    blend of the two slices either side (bilinear): the trilinear values to rounding, on any axis, at the border
    and beyond it (clamped), on a single slice, with and without a channel axis."""
    gen = torch.Generator().manual_seed(3)
    for shape in [(9, 12, 7), (1, 6, 5), (6, 1, 2)]:
        image = torch.rand(*(([channels] if channels else []) + list(shape)), generator=gen)
        for axis in range(3):
            for value in (-1.0, -0.37, 0.0, 0.61, 1.0, 1.2, -3.0):
                coords = 2.4 * torch.rand(5, 40, 3, generator=gen) - 1.2
                coords[..., axis] = value
                with torch.no_grad():
                    planar = sample_grid(image, coords)
                with torch.enable_grad():  # the 3D sampler (the plane's shortcut is for rendering only)
                    full = sample_grid(image, coords)
                assert planar.shape == full.shape == (5, 40, *([channels] if channels else []))
                torch.testing.assert_close(planar, full, rtol=0, atol=2e-6)
    # an oblique set of points takes the 3D sampler: the same values as with gradients on
    coords = 2 * torch.rand(100, 3, generator=gen) - 1
    with torch.no_grad():
        oblique = sample_grid(image, coords)
    assert torch.equal(oblique, sample_grid(image, coords))
