"""Registration quality: NCC, Dice per label, landmark TRE, folding and Jacobian statistics."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medinr.continuous import ContinuousImage
from medinr.errors import MedinrError
from medinr.geometry import Geometry
from medinr.registration.field import warp_image


def image_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Global normalised cross-correlation of two images on the same grid (inside ``mask`` if given)."""
    sel = mask > 0 if mask is not None else np.ones(a.shape, dtype=bool)
    x = a[sel].astype(np.float64) - a[sel].mean()
    y = b[sel].astype(np.float64) - b[sel].mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else 0.0


def _label_pairs(fixed_labels: np.ndarray, warped_labels: np.ndarray):
    """``(label, fixed == label, warped == label)`` for every non-zero label present in either image."""
    a = np.rint(fixed_labels).astype(np.int64)
    b = np.rint(warped_labels).astype(np.int64)
    for lab in sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist())):
        if lab != 0:
            yield int(lab), a == lab, b == lab


def dice_per_label(fixed_labels: np.ndarray, warped_labels: np.ndarray) -> dict[str, float]:
    """Dice overlap for every non-zero label present in either image, keyed by the label value."""
    out: dict[str, float] = {}
    for lab, sa, sb in _label_pairs(fixed_labels, warped_labels):
        den = sa.sum() + sb.sum()
        out[str(int(lab))] = float(2.0 * np.logical_and(sa, sb).sum() / den) if den else float("nan")
    return out


def jacobian_stats(det: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Percentage of voxels with det J <= 0 (folding), and min / max / mean det J (inside ``mask``)."""
    d = det[mask > 0] if mask is not None else det.ravel()
    return {
        "folded_percent": float(100.0 * np.mean(d <= 0)),
        "det_min": float(d.min()),
        "det_max": float(d.max()),
        "det_mean": float(d.mean()),
    }


#: Largest landmarks file read (a CSV of a million 3D points is about 30 MiB).
MAX_LANDMARK_BYTES = 64 << 20


def read_landmarks(path: str | Path, ndim: int) -> np.ndarray:
    """Landmarks CSV: a header row, then one point per row, ``x,y[,z]`` world coordinates in RAS mm.

    Extra columns (e.g. a name) after the coordinates are ignored; rows pair up by order. A file over
    :data:`MAX_LANDMARK_BYTES`, a field over the csv module's limit (131,072 characters) or a row that is not
    CSV is refused with one line.
    """
    p = Path(path)
    if not p.is_file():
        raise MedinrError(f"landmarks file not found: {p}")
    if p.stat().st_size > MAX_LANDMARK_BYTES:
        raise MedinrError(f"{p} is larger than {MAX_LANDMARK_BYTES >> 20} MiB: not a landmarks CSV")
    rows = []
    try:
        with open(p, newline="") as f:
            reader = csv.reader(f)
            next(reader, None)  # header
            for n, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) < ndim:
                    raise MedinrError(
                        f"{p}:{n}: expected {ndim} coordinates (x,y{',z' if ndim == 3 else ''} in RAS mm)"
                    )
                rows.append([float(c) for c in row[:ndim]])
    except UnicodeDecodeError:
        raise MedinrError(f"{p} is not a text CSV file") from None
    except ValueError as exc:
        raise MedinrError(f"{p}: not a number in the landmarks ({str(exc)[:80]})") from None
    except csv.Error as exc:  # e.g. "field larger than field limit (131072)"
        raise MedinrError(f"{p} is not a landmarks CSV file: {str(exc)[:80]}") from None
    if not rows:
        raise MedinrError(f"{p} holds no landmarks")
    points = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(points)):
        raise MedinrError(f"{p}: landmark coordinates must be finite numbers (found NaN or infinity)")
    return points


def target_registration_error(
    fixed_points: np.ndarray, moving_points: np.ndarray, displacement_at_fixed: np.ndarray
) -> dict[str, float]:
    """TRE in mm: distance between ``fixed + u(fixed)`` and the paired moving landmarks (and before: no u)."""
    if fixed_points.shape != moving_points.shape:
        raise MedinrError(f"fixed and moving landmarks differ in number ({len(fixed_points)} vs {len(moving_points)})")
    before = np.linalg.norm(moving_points - fixed_points, axis=1)
    after = np.linalg.norm(moving_points - (fixed_points + displacement_at_fixed), axis=1)
    return {
        "tre_before_mean_mm": float(before.mean()),
        "tre_mean_mm": float(after.mean()),
        "tre_max_mm": float(after.max()),
        "tre_per_point_mm": [float(v) for v in after],
    }


def displacement_error(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Mean and 95th percentile of |u_est - u_true| in mm (inside ``mask``), for benchmarks."""
    err = np.linalg.norm(estimate - truth, axis=-1)
    e = err[mask > 0] if mask is not None else err.ravel()
    return {"mean_mm": float(e.mean()), "p95_mm": float(np.percentile(e, 95))}


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95_per_label(fixed_labels: np.ndarray, warped_labels: np.ndarray, spacing: np.ndarray) -> dict[str, float]:
    """95th percentile of the symmetric surface distance (mm) per non-zero label of either image.

    Surfaces are the label voxels with a neighbour outside the label; distances come from Euclidean distance
    transforms with the voxel ``spacing`` (mm). A label missing from one image gives ``inf``.
    """
    from scipy import ndimage

    out: dict[str, float] = {}
    for lab, fa, fb in _label_pairs(fixed_labels, warped_labels):
        sa, sb = _surface(fa), _surface(fb)
        if not sa.any() or not sb.any():
            out[str(int(lab))] = float("inf")
            continue
        da = ndimage.distance_transform_edt(~sa, sampling=spacing)
        db = ndimage.distance_transform_edt(~sb, sampling=spacing)
        out[str(int(lab))] = float(np.percentile(np.concatenate([db[sa], da[sb]]), 95))
    return out


def label_metrics(fixed_labels: np.ndarray, fg: Geometry, moving_labels: np.ndarray, mg: Geometry,
                  u: np.ndarray) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """Warped moving labels (on the fixed grid, under ``u``), and Dice and 95 % Hausdorff distance per label
    before and after."""
    warped = warp_image(moving_labels, mg, u, fg, mode="nearest")
    before = warp_image(moving_labels, mg, np.zeros_like(u), fg, mode="nearest")
    spacing = fg.spacing[: fg.ndim]
    return warped, {
        "dice_before": dice_per_label(fixed_labels, before),
        "dice": dice_per_label(fixed_labels, warped),
        "hd95_before_mm": hausdorff95_per_label(fixed_labels, before, spacing),
        "hd95_mm": hausdorff95_per_label(fixed_labels, warped, spacing),
    }


def inverse_consistency(forward: ContinuousImage, inverse: ContinuousImage, geometry: Geometry,
                        mask: np.ndarray | None = None) -> dict[str, float]:
    """``|x + u(x) + w(x + u(x)) - x|`` over the fixed grid (inside ``mask``): mean and max, mm."""
    x = geometry.world_grid().reshape(-1, geometry.ndim).double().numpy()
    y = x + forward.sample(x)
    err = np.linalg.norm(y + inverse.sample(y) - x, axis=-1)
    if mask is not None:
        err = err[mask.reshape(-1) > 0]
    return {"mean_mm": float(err.mean()), "max_mm": float(err.max())}
