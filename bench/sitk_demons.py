"""SimpleITK's affine + fast symmetric-forces demons, the registration benchmarks' classical anchor, as a library and
as a whole command.

``bench/register.py`` calls :func:`affine` and :func:`demons` on images it holds (the algorithm's time);
``bench/speed.py`` runs this file as the command a SimpleITK user would write, to set beside ``medinr register``'s
whole command (Python's start-up, SimpleITK's import, reading both images, registering, writing the warped image
and the displacement field as ``.nii.gz``)::

    python bench/sitk_demons.py FIXED MOVING OUT_DIR

Only SimpleITK is imported here (no medinr, no torch), so the command's time is SimpleITK's own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import SimpleITK as sitk


def affine(f: sitk.Image, m: sitk.Image, seed: int) -> sitk.Transform:
    """SimpleITK affine: moments start, correlation, regular-step gradient descent, three levels."""
    moments = sitk.CenteredTransformInitializerFilter.MOMENTS
    init = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(3), moments)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(init, inPlace=True)
    reg.Execute(f, m)
    return init


def demons(f: sitk.Image, m: sitk.Image, start: sitk.Transform) -> sitk.Transform:
    """Fast symmetric-forces demons after ``start`` (histogram-matched, three levels): the composite transform,
    the displacement first, then ``start``."""
    m_on_f = sitk.Resample(m, f, start, sitk.sitkLinear, 0.0)
    m_on_f = sitk.HistogramMatching(m_on_f, f, 256, 7, True)
    filt = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    filt.SetStandardDeviations(1.0)
    field = None
    for shrink, iters in ((4, 100), (2, 70), (1, 50)):
        fs, ms = f, m_on_f
        if shrink > 1:
            sig = 0.5 * shrink * f.GetSpacing()[0]
            fs = sitk.Shrink(sitk.SmoothingRecursiveGaussian(f, sig), [shrink] * 3)
            ms = sitk.Shrink(sitk.SmoothingRecursiveGaussian(m_on_f, sig), [shrink] * 3)
        filt.SetNumberOfIterations(iters)
        if field is None:
            field = filt.Execute(fs, ms)
        else:
            init = sitk.Resample(field, fs, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = filt.Execute(fs, ms, init)
    disp = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    return sitk.CompositeTransform([start, disp])


def same_grid(f: sitk.Image, m: sitk.Image) -> bool:
    """medinr's ``affine='auto'`` rule: no affine stage when both images lie on one grid."""
    close = (lambda a, b: all(abs(x - y) < 1e-4 for x, y in zip(a, b)))  # noqa: E731
    return f.GetSize() == m.GetSize() and close(f.GetSpacing(), m.GetSpacing()) and \
        close(f.GetOrigin(), m.GetOrigin()) and close(f.GetDirection(), m.GetDirection())


def main(argv: list[str]) -> int:
    fixed_path, moving_path, out = argv
    f = sitk.ReadImage(fixed_path, sitk.sitkFloat32)
    m = sitk.ReadImage(moving_path, sitk.sitkFloat32)
    start = sitk.Transform(3, sitk.sitkIdentity) if same_grid(f, m) else affine(f, m, seed=0)
    transform = demons(f, m, start)
    Path(out).mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.Resample(m, f, transform, sitk.sitkLinear, 0.0), f"{out}/warped.nii.gz")
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, f.GetSize(), f.GetOrigin(),
                                              f.GetSpacing(), f.GetDirection())
    sitk.WriteImage(field, f"{out}/displacement.nii.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
