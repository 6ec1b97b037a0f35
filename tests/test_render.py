"""Rendering core and ``medinr render`` without Qt: planes land where they should, values are the network's."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pytest
import torch

from medinr.checkpoint import save_checkpoint
from medinr.continuous import ContinuousImage, OutputMeaning
from medinr.geometry import Geometry, WorldBox
from medinr.models import INR, MODEL_REGISTRY, register_model
from medinr.models.config import FamilyConfig, option
from medinr.registration.jacobian import jacobian_determinant
from medinr.render import (
    PLANE_PRESETS,
    Plane,
    default_plane,
    deformed_grid,
    exact_blocks,
    parse_plane_spec,
    plane_from_frame,
    render_plane,
    render_volume,
    slice_geometry,
)
from pipelines.cli import main

# A volume with anisotropic voxels and a flipped x axis, as in a real scan.
SHAPE = (20, 16, 12)
AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, 2.0, 0, -20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
FREQ = np.array([0.05, -0.08, 0.11])
FAMILY = "test_world_function"


def analytic(world: np.ndarray) -> np.ndarray:
    """A smooth function of world mm with no symmetry a wrong axis order or sign could hide behind."""
    return np.sin(world @ FREQ) + 0.01 * world[..., 0] - 0.02 * world[..., 2]


@dataclass(frozen=True)
class WorldFunctionConfig(FamilyConfig):
    shape: list[int] = option(list(SHAPE), 1, 1 << 16, doc="the grid the function's network coordinates span")
    affine: list[list[float]] | None = option(None, doc="voxel-to-world matrix (None: AFFINE)")


class WorldFunction(INR):
    """Evaluates :func:`analytic` after mapping network coordinates back to world mm by hand.

    Registered as a family only while this module's tests run (:func:`world_function_family`): the registry that
    other test modules parametrise over at collection time never sees it.
    """

    config_type = WorldFunctionConfig

    def __init__(self, in_features: int, out_features: int, shape=SHAPE, affine=None) -> None:
        affine = AFFINE.tolist() if affine is None else np.asarray(affine).tolist()
        super().__init__(in_features, out_features)
        self.register_buffer("n", torch.tensor(shape, dtype=torch.float64))
        self.register_buffer("affine", torch.tensor(affine, dtype=torch.float64))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        voxel = (coords.double() + 1) / 2 * (self.n - 1)  # -1 / +1 at the first / last voxel centre
        world = voxel @ self.affine[:3, :3].T + self.affine[:3, 3]
        values = torch.as_tensor(analytic(world.cpu().numpy()), dtype=torch.float32)
        return values.unsqueeze(-1).repeat(1, self.out_features)


def _box() -> tuple[list[float], list[float]]:
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in SHAPE], indexing="ij")).reshape(3, -1).T
    world = corners @ AFFINE[:3, :3].T + AFFINE[:3, 3]
    return world.min(0).tolist(), world.max(0).tolist()


@pytest.fixture(scope="module", autouse=True)
def world_function_family():
    """The test family in the model registry for this module's tests only (checkpoints of it load by name)."""
    register_model(FAMILY)(WorldFunction)
    try:
        yield FAMILY
    finally:
        del MODEL_REGISTRY[FAMILY]


def test_the_test_family_is_registered_only_while_this_module_runs(world_function_family):
    assert MODEL_REGISTRY[world_function_family] is WorldFunction
    others = {name for name, cls in MODEL_REGISTRY.items() if not cls.__module__.startswith("medinr.")}
    assert others == {FAMILY}


@pytest.fixture(scope="module")
def analytic_ckpt() -> ContinuousImage:
    return ContinuousImage(WorldFunction(3, 1), Geometry(SHAPE, AFFINE), OutputMeaning("intensity", scale=1.0))


def _pixel_world(centre, row, col, fov, shape) -> np.ndarray:
    """Pixel centres by the definition (independent of Plane.world_points)."""
    h, w = shape
    r = (np.arange(h) - (h - 1) / 2) * fov[0] / h
    c = (np.arange(w) - (w - 1) / 2) * fov[1] / w
    return np.asarray(centre) + r[:, None, None] * np.asarray(row) + c[None, :, None] * np.asarray(col)


def test_oblique_render_matches_the_analytic_function(analytic_ckpt):
    normal = np.array([1.0, 2.0, 3.0]) / np.sqrt(14)
    n, row, col = parse_plane_spec("1,2,3")
    assert np.allclose(n, normal) and abs(row @ col) < 1e-12 and abs(row @ n) < 1e-12
    lo, hi = _box()
    centre = (np.asarray(lo) + np.asarray(hi)) / 2 + 2.0 * normal  # 2 mm off-centre
    plane = plane_from_frame(centre, n, row, col, (18.0, 24.0))
    image = render_plane(analytic_ckpt, plane, (36, 48))
    expected = analytic(_pixel_world(centre, row, col, (18.0, 24.0), (36, 48)))
    assert image.shape == (36, 48)
    assert np.max(np.abs(image - expected)) < 1e-4
    # the default plane with an offset moves along the normal
    shifted = default_plane(analytic_ckpt, "1,2,3", offset_mm=2.0)
    assert np.allclose(shifted.centre, centre) and np.allclose(shifted.normal, normal)


def test_points_outside_the_fitted_box_are_blank_not_extrapolated(analytic_ckpt):
    plane = default_plane(analytic_ckpt, "axial").zoomed(0.25)  # 4x the field of view
    image = render_plane(analytic_ckpt, plane, (64, 64))
    assert image[0, 0] == 0.0 and image[32, 32] != 0.0
    full = render_plane(analytic_ckpt, plane, (64, 64), outside=None)
    assert full[0, 0] != 0.0


def test_exact_bands_assemble_the_direct_render(analytic_ckpt):
    plane = default_plane(analytic_ckpt, "coronal").rotated(20, -10)
    direct = render_plane(analytic_ckpt, plane, (50, 37))
    bands = list(exact_blocks(analytic_ckpt, plane, (50, 37), block_points=37 * 8))
    assert [r0 for r0, _ in bands] == [0, 8, 16, 24, 32, 40, 48] and bands[-1][1].shape == (2, 37)
    assert np.array_equal(np.concatenate([rows for _, rows in bands]), direct)
    expected = analytic(_pixel_world(plane.centre, plane.row_axis, plane.col_axis, plane.fov_mm, (50, 37)))
    inside = direct != 0
    assert inside.mean() > 0.5 and np.max(np.abs(direct[inside] - expected[inside])) < 1e-4


def test_plane_presets_are_right_handed_display_frames():
    # the presets are the frames the CLI and the viewer name: normal = +(row x col) or its mirror, unit axes
    assert sorted(PLANE_PRESETS) == ["axial", "coronal", "sagittal"]
    for name, (normal, row, col) in PLANE_PRESETS.items():
        n, r, c = parse_plane_spec(name)
        assert np.allclose(n, normal) and np.allclose(r, row) and np.allclose(c, col)
        assert abs(abs(np.cross(r, c) @ n) - 1) < 1e-12
    # superior is up in coronal and sagittal views (rows run downwards), anterior up in axial
    assert (
        PLANE_PRESETS["coronal"][1][2] < 0 and PLANE_PRESETS["sagittal"][1][2] < 0 and PLANE_PRESETS["axial"][1][1] < 0
    )


def test_axial_render_of_a_fitted_volume_matches_the_training_volume():
    pytest.importorskip("medinr.models.encodings")
    if "hashgrid" not in MODEL_REGISTRY:
        pytest.skip("hashgrid family not registered")
    from medinr.image_fit import fit_image
    from medinr.io import load_image
    from medinr.metrics import psnr

    image, geom = load_image("sample_scans/mni152_t1_2mm.nii.gz")
    start = [s // 2 - 12 for s in image.shape]
    crop = image[start[0] : start[0] + 24, start[1] : start[1] + 24, start[2] : start[2] + 24]
    affine = geom.affine.copy()
    affine[:3, 3] = geom.voxel_to_world(np.asarray(start, dtype=np.float64))
    cgeom = Geometry(crop.shape, affine)
    options = dict(levels=4, log2_table_size=15, base_resolution=4, max_resolution=24, hidden=16, layers=1)
    fitted = fit_image(
        crop, cgeom, "hashgrid", steps=100, lr=5e-3, progress=False, model_options=options
    )  # the default batch: every footprint point of this 24^3 crop each step
    ckpt = fitted

    k = 13
    plane = default_plane(ckpt, "axial")
    plane = plane_from_frame(
        cgeom.voxel_to_world(np.array([11.5, 11.5, k])), [0, 0, 1], plane.row_axis, plane.col_axis, plane.fov_mm
    )
    rendered = render_plane(ckpt, plane, (24, 24))
    # which voxel each pixel landed on, found through the geometry's inverse: all on voxel centres of slice k
    ijk = cgeom.world_to_voxel(plane.world_points((24, 24)))
    assert np.allclose(ijk, np.round(ijk), atol=1e-6) and np.all(np.round(ijk[..., 2]) == k)
    idx = np.round(ijk).astype(int)
    truth = crop[idx[..., 0], idx[..., 1], idx[..., 2]]
    value = psnr(truth, rendered)
    # placed on slice k, not beside it: the fit matches its own slice better than the neighbouring ones
    others = [psnr(crop[idx[..., 0], idx[..., 1], idx[..., 2] + d], rendered) for d in (-3, 3)]
    assert value > 18.0 and value > max(others) + 1.0, f"axial render {value:.1f} dB, neighbours {others}"
    # and the render is exactly the network on its own grid (no shift, no interpolation)
    grid, _ = render_volume(ckpt)
    assert np.allclose(rendered, grid[idx[..., 0], idx[..., 1], idx[..., 2]], atol=1e-3 * crop.max())


def _linear_displacement() -> tuple[ContinuousImage, np.ndarray]:
    """u(x) = A x mm, so det(I + du/dx) = det(I + A) everywhere."""
    a = np.array([[0.1, 0.05, 0.0], [-0.02, -0.1, 0.03], [0.0, 0.04, 0.2]])

    class Linear(INR):
        def forward(self, coords):  # world-box coords with a [-50, 50] mm box: world = 50 * coords
            return (50.0 * coords) @ torch.as_tensor(a.T, dtype=coords.dtype) / 5.0  # scale 5 below

    box = WorldBox(np.full(3, -50.0), np.full(3, 50.0))
    output = OutputMeaning("displacement", scale=5.0)
    ckpt = ContinuousImage(Linear(3, 3), None, output, frame="world_box", world_box=box)
    return ckpt, a


def test_displacement_magnitude_jacobian_and_deformed_grid():
    ckpt, a = _linear_displacement()
    plane = default_plane(ckpt, "sagittal", offset_mm=7.0).with_fov((60.0, 80.0))
    world = plane.world_points((30, 40))
    mag = render_plane(ckpt, plane, (30, 40))
    assert np.allclose(mag, np.linalg.norm(world @ a.T, axis=-1), atol=1e-3)
    assert np.allclose(ckpt.sample(world, outside=0.0), world @ a.T, atol=1e-3)
    jac = render_plane(ckpt, plane, (30, 40), component="jacobian")
    assert np.allclose(jac, np.linalg.det(np.eye(3) + a), atol=1e-3)
    assert np.allclose(jacobian_determinant(ckpt, world[:2, :2]), np.linalg.det(np.eye(3) + a), atol=1e-3)
    lines = deformed_grid(ckpt, plane, (30, 40), spacing_mm=10.0)
    assert len(lines) == 6 + 8  # every 5 pixels of 2 mm over 30 rows and 40 columns
    # a point of a line moves by the in-plane part of u, in pixels of 2 mm
    rc = lines[0][5]
    m = plane.pixel_matrix((30, 40))
    start = np.array([0.0, np.linspace(0, 39, lines[0].shape[0])[5]])
    x = m[:3, 0] * start[0] + m[:3, 1] * start[1] + m[:3, 2]
    u = a @ x
    assert np.allclose(rc, start + [u @ plane.row_axis / 2.0, u @ plane.col_axis / 2.0], atol=1e-3)


def test_two_d_checkpoint_zoom_and_slice_geometry():
    affine = np.array([[0.5, 0, 0, -10.0], [0, 0.8, 0, 4.0], [0, 0, 1.0, 7.0], [0, 0, 0, 1]])
    geom = Geometry((40, 30), affine)
    lo, hi = geom.world_box().lo, geom.world_box().hi

    class Fn(INR):
        def forward(self, coords):
            world = torch.as_tensor(lo) + (coords.double() + 1) / 2 * torch.as_tensor(hi - lo)
            return (torch.sin(world[..., :1] * 0.3) + world[..., 1:] * 0.1).float()

    ckpt = ContinuousImage(Fn(2, 1), geom)
    plane = default_plane(ckpt).zoomed(4.0)
    image = render_plane(ckpt, plane, (40, 30))
    g = slice_geometry(ckpt, plane, (40, 30))
    pts = g.voxel_to_world(np.stack(np.meshgrid(np.arange(40.0), np.arange(30.0), indexing="ij"), -1))
    assert np.allclose(image, np.sin(pts[..., 0] * 0.3) + pts[..., 1] * 0.1, atol=1e-4)
    assert np.allclose(g.affine[2, 3], 7.0) and np.allclose(g.spacing[:2], [0.125, 0.2])


def test_lattice_bound_models_are_interpolated_from_their_grid():
    geom = Geometry((9, 7, 5), np.diag([2.0, 3.0, 4.0, 1.0]))
    torch.manual_seed(0)
    model = MODEL_REGISTRY["conv_inr"](3, 1, lattice=list(geom.shape), channels=8, layers=2)
    ckpt = ContinuousImage(model.eval(), geom)
    plane = Plane([8.0, 9.0, 8.0], [1, 0, 0], [0, 1, 0], (16.0, 18.0))  # pixel centres between lattice points
    image = render_plane(ckpt, plane, (8, 6))
    from scipy.ndimage import map_coordinates

    with torch.no_grad():
        lattice = model.forward_lattice(geom.shape)[..., 0].numpy()
    ijk = geom.world_to_voxel(plane.world_points((8, 6)))
    assert np.allclose(image, map_coordinates(lattice, np.moveaxis(ijk, -1, 0), order=1), atol=1e-5)
    # on its own grid the image is the lattice pass itself
    assert np.allclose(ckpt.on_grid()[..., 0], lattice, atol=1e-6)


# -- the CLI ---------------------------------------------------------------------------------------------
@pytest.fixture()
def analytic_file(tmp_path, analytic_ckpt):
    return save_checkpoint(tmp_path / "fn.inr", analytic_ckpt)


def test_cli_writes_nifti_whose_affine_places_every_pixel(tmp_path, analytic_file, capsys):
    out = tmp_path / "slice.nii.gz"
    rc = main(
        [
            "render",
            str(analytic_file),
            "--plane",
            "0.3,-1,0.5",
            "--offset",
            "3",
            "--zoom",
            "1.5",
            "--size",
            "40x50",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert "40x50" in capsys.readouterr().out
    img = nib.load(str(out))
    data = np.asarray(img.dataobj)
    data = data[..., 0] if data.ndim == 3 else data
    assert data.shape == (40, 50)
    rcz = np.stack(np.meshgrid(np.arange(40.0), np.arange(50.0), [0.0], indexing="ij"), -1)[:, :, 0]
    world = rcz @ img.affine[:3, :3].T + img.affine[:3, 3]
    voxel = (world - AFFINE[:3, 3]) @ np.linalg.inv(AFFINE[:3, :3]).T
    inside = np.all((voxel > -0.49) & (voxel < np.asarray(SHAPE) - 0.51), axis=-1)
    assert inside.mean() > 0.3
    assert np.allclose(data[inside], analytic(world[inside]), atol=1e-4)
    assert np.all(data[~inside & ~np.all((voxel > -0.51) & (voxel < np.asarray(SHAPE) - 0.49), -1)] == 0)
    # the plane is offset 3 mm along the unit normal from the box centre
    lo, hi = _box()
    n = np.array([0.3, -1, 0.5]) / np.linalg.norm([0.3, -1, 0.5])
    assert np.allclose((world.mean(axis=(0, 1)) - (np.asarray(lo) + np.asarray(hi)) / 2) @ n, 3.0, atol=1e-6)


def test_cli_writes_png(tmp_path, analytic_file, capsys):
    import matplotlib.image

    out = tmp_path / "slice.png"
    assert main(["render", str(analytic_file), "--plane", "coronal", "--out", str(out)]) == 0
    png = matplotlib.image.imread(str(out))
    # field of view: 12 x 3 mm by 20 x 1.5 mm, sampled at the finest voxel size (1.5 mm); one 8-bit grey channel
    assert png.shape == (24, 20) and png.std() > 0.05
    assert main(["render", str(analytic_file), "--out", str(out)]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    assert main(["render", str(analytic_file), "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("missing", ["--plane", "axial"], "not found"),
        ("damaged", ["--plane", "axial"], "not a medinr checkpoint"),
        ("ok", ["--plane", "oblique"], "--plane must be"),
        ("ok", ["--plane", "1,2"], "--plane must be"),
        ("ok", ["--plane", "0,0,0"], "not all zero"),
        ("ok", ["--size", "12"], "--size must be"),
        ("ok", ["--zoom", "0"], "--zoom"),
        ("ok", ["--component", "phase"], "complex"),
    ],
)
def test_cli_bad_input_gives_one_line_and_writes_nothing(tmp_path, analytic_file, capsys, case, args, message):
    ckpt = {"missing": tmp_path / "nope.inr", "ok": analytic_file}.get(case)
    if case == "damaged":
        ckpt = tmp_path / "bad.inr"
        ckpt.write_bytes(b"\x80\x04garbage that is not safetensors")
    out = tmp_path / "o" / "slice.nii.gz"
    rc = main(["render", str(ckpt), *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not any(p.name.startswith(".") for p in tmp_path.rglob("*"))


def test_cli_rejects_unknown_output_suffix(tmp_path, analytic_file, capsys):
    assert main(["render", str(analytic_file), "--out", str(tmp_path / "x.jpg")]) == 2
    assert ".png, .nii or .nii.gz" in capsys.readouterr().err
