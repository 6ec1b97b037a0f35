"""ISMRMRD / MRD files written with the ``ismrmrd`` package itself, for the reader's tests (and the CLI's).

:func:`write_mrd` writes one readout per acquisition, optionally with a trajectory, encoding counters,
noise-adjustment scans before the data, and whatever a test wants to break (per-acquisition overrides).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np


def header_xml(matrix: tuple[int, int, int], fov_mm: tuple[float, float, float], trajectory: str, coils: int,
               center: tuple[int, int] | None = None, recon_matrix: tuple[int, int, int] | None = None,
               recon_fov_mm: tuple[float, float, float] | None = None) -> str:
    """The XML header of one encoding: encoded (and recon) space, limits with their centres, the coil count."""
    def space(m, f):
        return xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=m[0], y=m[1], z=m[2]),
                                     fieldOfView_mm=xsd.fieldOfViewMm(x=f[0], y=f[1], z=f[2]))

    c1, c2 = center if center is not None else (matrix[1] // 2, matrix[2] // 2)
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=matrix[1] - 1, center=c1),
        kspace_encoding_step_2=xsd.limitType(minimum=0, maximum=max(matrix[2] - 1, 0), center=c2),
    )
    encoding = xsd.encodingType(encodedSpace=space(matrix, fov_mm),
                                reconSpace=space(recon_matrix or matrix, recon_fov_mm or fov_mm),
                                encodingLimits=limits, trajectory=xsd.trajectoryType(trajectory))
    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(receiverChannels=coils),
        encoding=[encoding],
    )
    return xsd.ToXML(header)


def _acquisition(data: np.ndarray, traj: np.ndarray | None, **fields: Any) -> ismrmrd.Acquisition:
    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, np.complex64),
                                         None if traj is None else np.ascontiguousarray(traj, np.float32))
    flags = fields.pop("flags", ())
    for flag in flags:
        acq.set_flag(flag)
    for name, value in fields.items():
        if name in ("kspace_encode_step_1", "kspace_encode_step_2", "slice", "average", "repetition"):
            setattr(acq.idx, name, value)
        else:
            setattr(acq, name, value)
    return acq


def write_mrd(
    path: str | Path,
    readouts: np.ndarray,
    matrix: tuple[int, int, int],
    fov_mm: tuple[float, float, float],
    traj: np.ndarray | None = None,
    steps: np.ndarray | None = None,
    noise: np.ndarray | None = None,
    trajectory: str | None = None,
    center_sample: int | None = None,
    overrides: dict[int, dict[str, Any]] | None = None,
    xml: str | None = None,
    dwell_us: tuple[float, float] = (5.0, 5.0),
) -> Path:
    """Write an ISMRMRD dataset (group ``dataset``) with one acquisition per readout.

    Parameters
    ----------
    readouts : complex ``(coils, readouts, samples)``
    traj : ``(readouts, samples, dims)`` in the file's units, or None (Cartesian: ``steps`` give the lines)
    steps : int ``(readouts,)`` or ``(readouts, 2)``: kspace_encode_step_1 (and _2) of each readout
    noise : complex ``(coils, n)``: one noise-adjustment acquisition written first
    overrides : acquisition index (among readouts) -> header fields or ``data``/``traj`` arrays to substitute
    dwell_us : sample time of the noise scan and of the readouts (microseconds)
    """
    path = Path(path)
    coils = readouts.shape[0]
    kind = trajectory or ("cartesian" if traj is None else "radial")
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dset:
        dset.write_xml_header(xml if xml is not None else header_xml(matrix, fov_mm, kind, coils))
        if noise is not None:
            dset.append_acquisition(_acquisition(noise, None, flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,),
                                                 sample_time_us=dwell_us[0]))
        for r in range(readouts.shape[1]):
            extra = dict((overrides or {}).get(r, {}))
            data = extra.pop("data", readouts[:, r])
            t = extra.pop("traj", None if traj is None else traj[r])
            fields: dict[str, Any] = {"sample_time_us": dwell_us[1], "scan_counter": r}
            if steps is not None:
                s = np.atleast_1d(steps[r])
                fields["kspace_encode_step_1"] = int(s[0])
                if s.size > 1:
                    fields["kspace_encode_step_2"] = int(s[1])
            fields["center_sample"] = readouts.shape[2] // 2 if center_sample is None else center_sample
            fields.update(extra)
            dset.append_acquisition(_acquisition(data, t, **fields))
    return path
