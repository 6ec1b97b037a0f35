"""Output folders published as one step: all of a run's files appear together, or none do.

A run writes into a hidden staging folder *beside* its output folder and, when the whole run has
succeeded, the staging folder becomes the output folder in one rename (an atomic exchange with
``--force``, so the old outputs are replaced as a set: a file of the earlier run that this run does not
write does not survive). A run that fails, is interrupted or terminated (SIGTERM) removes its staging
folder; one killed outright (SIGKILL) leaves it behind, unlocked, and the next run into the same folder
reclaims it. An output folder holds one run's outputs and the manifest ``.medinr-outputs.json``; a folder
holding anything else is never replaced (medinr does not delete files it did not write).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from medinr.errors import MedinrError

#: Written into every published output folder: the files of the run, so a rerun with ``--force`` knows them.
MANIFEST = ".medinr-outputs.json"
_LEGACY_STAGING = ".medinr-staging-"  # staging folders inside the output folder, from medinr before 0.2


def _sibling_prefix(target: Path) -> str:
    return f".{target.name}.medinr-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _try_lock(path: Path) -> int | None:
    """An open, exclusively flock'ed descriptor of folder ``path``; None if a live process holds the lock."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def reclaim_leftovers(target: Path) -> None:
    """Remove what killed runs left beside ``target`` (unlocked staging folders); restore a half-done swap."""
    parent, prefix = target.parent, _sibling_prefix(target)
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for entry in entries:
        kind, path = entry.name[len(prefix):].split("-", 1)[0], parent / entry.name
        if kind == "creating" and time.time() - entry.stat(follow_symlinks=False).st_mtime < 60:
            continue  # a run that is just starting locks it within microseconds; leave young ones alone
        try:
            fd = _try_lock(path)
        except OSError:
            continue
        if fd is None:
            continue  # a live run
        try:
            if kind == "replaced" and not os.path.lexists(target):
                os.rename(path, target)  # killed between the two renames of a swap: the old outputs come back
            else:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_by_renames(staging: Path, target: Path) -> None:
    """Where no atomic exchange exists: old -> locked backup, new -> target, drop backup (or put it back)."""
    backup = Path(tempfile.mkdtemp(prefix=_sibling_prefix(target) + "replaced-", dir=target.parent))
    os.rmdir(backup)
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(target, backup)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(backup, target)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        os.close(fd)


def _validate_path(path: str | os.PathLike) -> Path:
    raw = os.fspath(path)
    if not str(raw).strip():
        raise MedinrError("--out is empty: name a folder for the outputs")
    target = Path(os.path.abspath(raw))
    cwd = Path.cwd()
    if target == cwd or target in cwd.parents:
        raise MedinrError(f"--out {raw} is the current folder or one above it: name a new folder for the outputs")
    if target.is_symlink():
        if not target.exists():
            raise MedinrError(f"--out {raw} is a dangling symbolic link; remove it or name another folder")
        target = Path(os.path.realpath(target))
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise MedinrError(f"cannot create the output folder {raw}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise MedinrError(f"cannot create the output folder {raw}: no permission to write in {ancestor}")
    return target


def _manifest_files(folder: Path) -> set[str]:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return {str(n) for n in data.get("files", [])} if isinstance(data, dict) else set()
    except (OSError, ValueError):
        return set()


class OutputDir:
    """Stage a run's outputs and publish them, as one step, only when the run succeeds.

    Parameters
    ----------
    path : path-like
        The output folder (created if needed, with its parents). It must be new, empty, or hold the outputs
        of an earlier medinr run (replaced as a whole with ``force``).
    names : list of str
        The files the run may write; checked up front so a run fails before any work is done.
    force : bool
        Replace the outputs of an earlier run in ``path``.

    Examples
    --------
    >>> with OutputDir("out", ["recon.nii.gz"], force=False) as out:  # doctest: +SKIP
    ...     save_image(out / "recon.nii.gz", image, geometry)
    """

    def __init__(self, path: str | os.PathLike, names: list[str], force: bool = False) -> None:
        self.path = Path(path)
        self.names = list(names)
        self.force = force
        bad = [n for n in self.names if not n or "/" in n or n.startswith(".") or n in (MANIFEST,)]
        if bad:
            raise RuntimeError(f"output names must be plain file names, got {bad}")
        self._target = _validate_path(path)
        self._staging: Path | None = None
        self._lock: int | None = None
        self._created: list[Path] = []
        self.check()

    def check(self) -> None:
        """Refuse (MedinrError) an output path that is a file, holds other files, or outputs without ``force``."""
        target = self._target
        if not os.path.lexists(target):
            return
        if not target.is_dir():
            raise MedinrError(f"output path {self.path} exists and is not a folder")
        entries = sorted(e for e in os.listdir(target) if not e.startswith(_LEGACY_STAGING))
        ours = set(self.names) | _manifest_files(target) | {MANIFEST}
        foreign = [e for e in entries if e not in ours]
        if foreign:
            raise MedinrError(
                f"{self.path} holds files that are not outputs of a medinr run (e.g. '{foreign[0]}'); "
                "outputs replace the whole folder, so name a new or empty folder"
            )
        if entries and not self.force:
            clash = [n for n in self.names if n in entries] or entries
            raise MedinrError(f"{self.path / clash[0]} already exists; use --force to overwrite")

    def __enter__(self) -> "OutputDir":
        target = self._target
        reclaim_leftovers(target)
        missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
        try:
            for folder in reversed(missing):
                folder.mkdir()
                self._created.append(folder)
            creating = Path(tempfile.mkdtemp(prefix=_sibling_prefix(target) + "creating-", dir=target.parent))
            self._lock = _try_lock(creating)
            self._staging = creating.with_name(creating.name.replace("-creating-", "-staging-", 1))
            os.rename(creating, self._staging)
        except OSError as exc:
            self._cleanup(failed=True)
            raise MedinrError(f"cannot create the output folder {self.path}: {exc.strerror}") from None
        return self

    def __truediv__(self, name: str) -> Path:
        """The staging path for output ``name`` (must be one of the declared names)."""
        if self._staging is None:
            raise RuntimeError("OutputDir must be used as a context manager")
        if name not in self.names:
            raise RuntimeError(f"output '{name}' was not declared")
        return self._staging / name

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        failed = True
        try:
            if exc_type is None:
                self._publish()
                failed = False
        finally:
            self._cleanup(failed)

    def _publish(self) -> None:
        assert self._staging is not None
        target, staging = self._target, self._staging
        self.check()  # the folder may have changed while the run worked
        files = sorted(os.listdir(staging))
        (staging / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n")
        try:
            mode = target.stat().st_mode & 0o7777 if target.is_dir() else 0o777 & ~_umask()
            os.chmod(staging, mode)
            if not os.path.lexists(target) or not os.listdir(target):
                os.rename(staging, target)  # onto nothing or onto an empty folder: one atomic rename
            elif not _exchange(staging, target):
                _swap_by_renames(staging, target)
        except OSError as exc:
            raise MedinrError(f"cannot publish the outputs to {self.path}: {exc.strerror or exc}") from None

    def _cleanup(self, failed: bool) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)  # after an exchange it holds the old outputs
            self._staging = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        if failed:
            for folder in reversed(self._created):
                try:
                    folder.rmdir()
                except OSError:
                    break
        self._created = []


def check_output_file(path: str | os.PathLike, force: bool, suffixes: tuple[str, ...] = ()) -> Path:
    """Check a single-file output (``render --out FILE``) before any work; returns the path.

    Refuses an empty name, a folder, a parent that is a file, and an existing entry without ``force``
    (a dangling symbolic link counts as existing: it is replaced, never followed).
    """
    raw = os.fspath(path)
    if not str(raw).strip():
        raise MedinrError("--out is empty: name an output file")
    out = Path(raw)
    if suffixes and not out.name.lower().endswith(suffixes):
        raise MedinrError(f"--out must end in {', '.join(suffixes)}, got '{out.name}'")
    if out.is_dir():
        raise MedinrError(f"{out} is a folder; --out names a file")
    if os.path.lexists(out) and not force:
        raise MedinrError(f"{out} already exists; use --force to overwrite")
    ancestor = Path(os.path.abspath(out)).parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise MedinrError(f"cannot write {out}: {ancestor} is a file, not a folder")
    return out
