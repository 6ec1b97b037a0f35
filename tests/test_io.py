"""Image I/O keeps geometry: NIfTI and SimpleITK formats agree in RAS millimetres; bad files give clear errors."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.io import array_to_sitk, load_image, save_image, take_slice


def oblique_geometry(shape=(6, 7, 8)) -> Geometry:
    a = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    a[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.2, 0.9, 2.0])
    a[:3, 3] = [-30.0, 12.0, 7.5]
    return Geometry(shape, a)


def test_nifti_round_trip_keeps_data_and_affine(tmp_path):
    g = oblique_geometry()
    data = np.random.default_rng(0).random(g.shape).astype(np.float32)
    save_image(tmp_path / "a.nii.gz", data, g)
    back, g2 = load_image(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(g2.affine, g.affine, atol=1e-5)


def test_simpleitk_formats_give_the_same_world_positions(tmp_path):
    g = oblique_geometry()
    data = np.random.default_rng(1).random(g.shape).astype(np.float32)
    save_image(tmp_path / "a.nii.gz", data, g)
    save_image(tmp_path / "a.mha", data, g)
    a_nii, g_nii = load_image(tmp_path / "a.nii.gz")
    a_mha, g_mha = load_image(tmp_path / "a.mha")
    np.testing.assert_array_equal(a_nii, a_mha)
    np.testing.assert_allclose(g_nii.affine, g_mha.affine, atol=1e-5)
    # SimpleITK's own LPS physical point of a voxel is our RAS point with x and y negated
    img = sitk.ReadImage(str(tmp_path / "a.mha"))
    lps = np.array(img.TransformIndexToPhysicalPoint((1, 2, 3)))
    ras = g_mha.voxel_to_world(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(lps * [-1, -1, 1], ras, atol=1e-5)


def test_nibabel_reads_what_simpleitk_wrote(tmp_path):
    g = oblique_geometry()
    data = np.arange(np.prod(g.shape), dtype=np.float32).reshape(g.shape)
    sitk.WriteImage(array_to_sitk(data, g), str(tmp_path / "b.nii.gz"))
    img = nib.load(tmp_path / "b.nii.gz")
    np.testing.assert_allclose(img.affine, g.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), data)


def test_vector_image_round_trip(tmp_path):
    g = oblique_geometry((4, 5, 6))
    field = np.random.default_rng(2).normal(size=g.shape + (3,)).astype(np.float32)
    save_image(tmp_path / "f.nii.gz", field, g)
    back, g2 = load_image(tmp_path / "f.nii.gz", allow_vector=True)
    np.testing.assert_allclose(back, field)
    assert g2.shape == g.shape


def test_compressed_outputs_hold_the_uncompressed_files_bytes(tmp_path):
    """medinr.gzipfile writes .nii.gz itself (ISA-L): one plain gzip stream around exactly the bytes of the .nii
    that nibabel (images) or SimpleITK (the displacement field) writes, and no temporary file is left behind."""
    import gzip

    from medinr.registration.field import displacement_to_sitk, write_displacement

    g = oblique_geometry((9, 8, 7))
    data = np.random.default_rng(4).normal(size=g.shape).astype(np.float32)
    save_image(tmp_path / "a.nii.gz", data, g)
    save_image(tmp_path / "a.nii", data, g)
    assert gzip.decompress((tmp_path / "a.nii.gz").read_bytes()) == (tmp_path / "a.nii").read_bytes()
    field = np.random.default_rng(5).normal(size=g.shape + (3,))
    write_displacement(tmp_path / "u.nii.gz", field, g)
    sitk.WriteImage(displacement_to_sitk(field, g), str(tmp_path / "u_itk.nii"))
    assert gzip.decompress((tmp_path / "u.nii.gz").read_bytes()) == (tmp_path / "u_itk.nii").read_bytes()
    read = sitk.ReadImage(str(tmp_path / "u.nii.gz"))
    assert read.GetPixelID() == sitk.sitkVectorFloat64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii", "a.nii.gz", "u.nii.gz", "u_itk.nii"]


def test_slice_keeps_world_position(tmp_path):
    g = oblique_geometry()
    data = np.random.default_rng(3).random(g.shape).astype(np.float32)
    sl, gs = take_slice(data, g, 3, axis=1)
    np.testing.assert_array_equal(sl, data[:, 3, :])
    np.testing.assert_allclose(gs.affine @ [2, 4, 0, 1], g.affine @ [2, 3, 4, 1])


def test_missing_corrupt_and_nan_files_raise_clear_errors(tmp_path):
    with pytest.raises(MedinrError, match="not found"):
        load_image(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(MedinrError, match="cannot read"):
        load_image(bad)
    nan = np.ones((4, 4), np.float32)
    nan[1, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(MedinrError, match="NaN"):
        load_image(tmp_path / "nan.npy")
    np.save(tmp_path / "one_d.npy", np.ones(5))
    with pytest.raises(MedinrError, match="2D or 3D"):
        load_image(tmp_path / "one_d.npy")


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MedinrError):
        load_image(tmp_path / "obj.npy")


def test_2d_slice_outside_the_xy_plane_is_written_in_its_plane_frame(tmp_path):
    # a coronal slice: axis 0 along x, axis 1 along z
    a = np.array([[1.5, 0, 0, -10.0], [0, 0, 1.0, 4.0], [0, 2.0, 0, -20.0], [0, 0, 0, 1]])
    g = Geometry((5, 6), a)
    data = np.arange(30, dtype=np.float32).reshape(5, 6)
    save_image(tmp_path / "c.mha", data, g)
    back, g2 = load_image(tmp_path / "c.mha")
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(g2.spacing, [1.5, 2.0])
    # positions measured in the plane are kept: the same in-plane millimetres for every voxel
    ij = np.array([[0.0, 0.0], [4.0, 5.0], [2.0, 1.0]])
    np.testing.assert_allclose(g2.voxel_to_world(ij), g.voxel_to_world(ij), atol=1e-6)


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = save_image(tmp_path / "p.nii.gz", np.zeros((3, 3), np.float32), Geometry((3, 3)))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_headers_declaring_more_voxels_than_the_file_holds_are_refused_unread(tmp_path):
    """A small file cannot make medinr allocate what its header claims (issue 13: 1.4 kB -> 4.2 GB RSS)."""
    import gzip
    import tracemalloc

    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((1000, 1000, 1000))
    blob = header.binaryblock + b"\0" * 68
    (tmp_path / "a.nii").write_bytes(blob)
    (tmp_path / "a.nii.gz").write_bytes(gzip.compress(blob))
    with open(tmp_path / "a.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1000,) * 3})
    (tmp_path / "a.mha").write_text("ObjectType = Image\nNDims = 3\nDimSize = 1000 1000 1000\n"
                                    "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    tracemalloc.start()
    try:
        for name, message in [("a.nii", "truncated"), ("a.nii.gz", "truncated"), ("a.npy", "truncated"),
                              ("a.mha", "truncated")]:
            with pytest.raises(MedinrError, match=message):
                load_image(tmp_path / name)
        assert tracemalloc.get_traced_memory()[1] < 50 << 20  # numpy allocations are traced: none was large
    finally:
        tracemalloc.stop()


def test_a_large_image_beyond_the_memory_budget_is_refused(tmp_path, monkeypatch):
    save_image(tmp_path / "v.nii", np.zeros((64, 64, 64), np.float32), Geometry((64, 64, 64)))
    monkeypatch.setenv("MEDINR_MEMORY_LIMIT", "2M")
    with pytest.raises(MedinrError, match="would need about 4.0 MiB"):
        load_image(tmp_path / "v.nii")


def test_reader_warnings_are_held_back_and_reissued_when_the_file_loads(tmp_path, capfd):
    import struct
    import warnings

    nib.save(nib.Nifti1Image(np.ones((12, 12), np.float32), np.eye(4)), tmp_path / "z.nii")
    raw = bytearray((tmp_path / "z.nii").read_bytes())
    struct.pack_into("<f", raw, 80, 0.0)  # pixdim[1] = 0: nibabel logs that it sets it to 1
    (tmp_path / "z.nii").write_bytes(bytes(raw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        array, geometry = load_image(tmp_path / "z.nii")
    assert array.shape == (12, 12) and geometry.spacing[0] == 1.0
    assert any("z.nii: pixdim" in str(w.message) for w in caught)
    assert capfd.readouterr().err == ""  # nothing printed by nibabel itself


def test_simpleitk_messages_lose_source_paths_and_addresses():
    from medinr.io import _reason

    itk = RuntimeError(
        "Exception thrown in SimpleITK ImageFileReader_Execute: /tmp/ITK/Modules/IO/Meta/src/itkMetaImageIO.cxx:490:\n"
        "ITK ERROR: MetaImageIO(0x55e4b00ee3c0): File cannot be read: /d/x.mha for reading.\n"
        "Reason: No such file or directory"
    )
    assert _reason(itk) == "File cannot be read: /d/x.mha for reading."
    assert _reason(RuntimeError("")) == "RuntimeError"
