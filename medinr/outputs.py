"""Output folders that never hold half-written results and never overwrite without ``--force``.

Files are written into a hidden staging folder inside the output folder and moved into place together
when the whole run has succeeded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from medinr.errors import MedinrError


class OutputDir:
    """Stage a run's outputs and publish them only when the run succeeds.

    Parameters
    ----------
    path : path-like
        The output folder (created if needed).
    names : list of str
        The files the run will write; checked up front so a run fails before any work is done.
    force : bool
        Allow replacing existing files of the same names.

    Examples
    --------
    >>> with OutputDir("out", ["recon.nii.gz"], force=False) as out:  # doctest: +SKIP
    ...     save_image(out / "recon.nii.gz", image, geometry)
    """

    def __init__(self, path: str | os.PathLike, names: list[str], force: bool = False) -> None:
        self.path = Path(path)
        self.names = list(names)
        self.force = force
        if self.path.exists() and not self.path.is_dir():
            raise MedinrError(f"output path {self.path} exists and is not a folder")
        existing = [n for n in self.names if (self.path / n).exists()]
        if existing and not force:
            raise MedinrError(f"{self.path / existing[0]} already exists; use --force to overwrite")
        self._created = False
        self._staging: Path | None = None

    def __enter__(self) -> "OutputDir":
        if not self.path.exists():
            self.path.mkdir(parents=True)
            self._created = True
        self._staging = Path(tempfile.mkdtemp(prefix=".medinr-staging-", dir=self.path))
        return self

    def __truediv__(self, name: str) -> Path:
        """The staging path for output ``name`` (must be one of the declared names)."""
        if self._staging is None:
            raise RuntimeError("OutputDir must be used as a context manager")
        if name not in self.names:
            raise RuntimeError(f"output '{name}' was not declared")
        return self._staging / name

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._staging is not None
        try:
            if exc_type is None:
                for name in self.names:
                    staged = self._staging / name
                    if staged.exists():
                        os.replace(staged, self.path / name)
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
            if exc_type is not None and self._created and not any(self.path.iterdir()):
                self.path.rmdir()
