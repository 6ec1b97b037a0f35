"""Output folders published as one step: all of a run's files appear together, or none do.

A run writes into a hidden staging folder *beside* its output folder and, when the whole run has
succeeded, the staging folder becomes the output folder in one rename (an atomic exchange with
``--force``, so the old outputs are replaced as a set: a file of the earlier run that this run does not
write does not survive). A run that fails, is interrupted or terminated (SIGTERM) removes its staging
folder; one killed outright (SIGKILL) leaves it behind, unlocked, and the next run into the same folder
reclaims it. An output folder holds one run's outputs and the manifest ``.medinr-outputs.json``; a folder
holding anything else is never replaced (medinr does not delete files it did not write).

The manifest is not trusted as written: a file counts as an earlier run's output only if the manifest names it
as a plain file name *and* the folder holds a regular file of that name with the size and modification time
recorded when it was published. A planted or stale manifest therefore cannot make ``--force`` delete a file
medinr did not write (audit J17), and names with a path (``../x``, ``/x``) are never looked up.

``--out`` may be a symbolic link to a folder: like any path the user names, it is followed, and the outputs
are published in the folder it points to (the link itself stays). Inside an output folder, and for a single
output file (``render --out``), links are entries like any other: replaced, never followed.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from types import TracebackType

from medinr.errors import MedinrError

#: Written into every published output folder: the files of the run, so a rerun with ``--force`` knows them.
MANIFEST = ".medinr-outputs.json"
_LEGACY_STAGING = ".medinr-staging-"  # staging folders inside the output folder, from medinr before 0.2
_MANIFEST_MAX_BYTES = 1 << 20
#: Room a staging folder's name needs beyond the output folder's own name (``.NAME.medinr-creating-XXXXXXXX``).
_SIBLING_EXTRA = 32

#: Errors of writing a file that are the machine's state, not a bug: reported as one line (exit 2).
_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file-size limit (ulimit -f)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
}
#: The same errors as libraries that wrap them spell them (safetensors: ``IoError(Os { code: 28, ... })``).
_WRITE_TEXTS = {
    "No space left on device": errno.ENOSPC, "StorageFull": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
    "File too large": errno.EFBIG, "FileTooLarge": errno.EFBIG, "Read-only file system": errno.EROFS,
    "ReadOnlyFilesystem": errno.EROFS, "Permission denied": errno.EACCES,
}


def write_failure(exc: BaseException) -> tuple[str, str | None] | None:
    """``(reason, file name or None)`` if ``exc`` (or what caused it) is a failed write of the machine's making
    (disk full, quota, file-size limit, read-only, permission); None for anything else."""
    if isinstance(exc, MedinrError):
        return None  # already one line
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            return _WRITE_ERRNOS[exc.errno], exc.filename if isinstance(exc.filename, str) else None
        text = str(exc)
        code = re.search(r"\bcode: (\d+)", text)
        if code and int(code.group(1)) in _WRITE_ERRNOS:
            return _WRITE_ERRNOS[int(code.group(1))], None
        for pattern, number in _WRITE_TEXTS.items():
            if pattern in text:
                return _WRITE_ERRNOS[number], None
        exc = exc.__cause__ or exc.__context__
    return None


def public_path(path: str | os.PathLike) -> Path:
    """Where a staged file will appear: ``.out.medinr-staging-x/a.nii.gz`` -> ``out/a.nii.gz``."""
    p = Path(path)
    m = re.fullmatch(r"\.(.+)\.medinr-(?:staging|creating)-[^/]*", p.parent.name)
    return p.parent.parent / m.group(1) / p.name if m else p


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
    _check_name_lengths(target, _existing_ancestor(target, raw), raw, _SIBLING_EXTRA)
    if os.path.islink(target):  # --out names a link: published in the folder it points to (see the module doc)
        if not os.path.exists(target):
            raise MedinrError(f"--out {raw} is a dangling symbolic link; remove it or name another folder")
        target = Path(os.path.realpath(target))
        _check_name_lengths(target, _existing_ancestor(target, raw), raw, _SIBLING_EXTRA)
    cwd = Path.cwd()
    if target == cwd or target in cwd.parents:
        raise MedinrError(f"--out {raw} is the current folder or one above it: name a new folder for the outputs")
    ancestor = _existing_ancestor(target, raw)
    if not ancestor.is_dir():
        raise MedinrError(f"cannot create the output folder {raw}: {ancestor} is a file, not a folder")
    _check_writable(ancestor, f"cannot create the output folder {raw}")
    return target


def _existing_ancestor(target: Path, raw: object) -> Path:
    ancestor = target.parent
    try:
        while not os.path.lexists(ancestor):
            ancestor = ancestor.parent
    except OSError as exc:
        raise MedinrError(f"--out {raw}: {exc.strerror}") from None
    return ancestor


def _check_name_lengths(target: Path, ancestor: Path, raw: object, extra: int) -> None:
    """Refuse a path whose names (plus the staging name's ``extra`` characters) the file system cannot hold."""
    try:
        name_max = os.pathconf(ancestor, "PC_NAME_MAX")
        path_max = os.pathconf(ancestor, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    lengths = [len(os.fsencode(part)) for part in target.parts]
    if max(lengths[:-1], default=0) > name_max or lengths[-1] + extra > name_max:
        limit = f"at most {name_max - extra} bytes here" + (", as medinr stages outputs under a longer name"
                                                               if extra else "")
        raise MedinrError(f"--out {_short(raw)}: a name of {max(lengths)} bytes is too long ({limit})")
    if len(os.fsencode(str(target))) + extra + 64 > path_max:
        raise MedinrError(f"--out {_short(raw)}: the path is too long for this file system")


def _short(raw: object, limit: int = 60) -> str:
    text = str(raw)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_writable(folder: Path, what: str) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        try:
            readonly = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError:
            readonly = False
        reason = "it is on a read-only file system" if readonly else "no permission to write in it"
        raise MedinrError(f"{what}: {folder}: {reason}")


def _is_plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _read_manifest(folder: Path) -> dict | None:
    """The manifest of an output folder as a dict; None if there is none, or it is not a small regular file."""
    path = folder / MANIFEST
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MANIFEST_MAX_BYTES:
            return None
        data = json.loads(os.read(fd, _MANIFEST_MAX_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def _stat_record(path: Path) -> dict[str, int]:
    info = os.lstat(path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _published_files(folder: Path) -> set[str]:
    """Names the manifest records *and* the folder still holds as the same regular files (size, mtime)."""
    data = _read_manifest(folder)
    records = data.get("entries") if data else None
    if not isinstance(records, dict):
        return set()
    owned = set()
    for name, record in records.items():
        if not _is_plain_name(name) or not isinstance(record, dict):
            continue  # never look up a name with a path in it
        try:
            info = os.lstat(folder / name)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and record == {"size": info.st_size, "mtime_ns": info.st_mtime_ns}:
            owned.add(name)
    return owned


def recorded_files(folder: str | os.PathLike) -> set[str]:
    """The plain file names the manifest of ``folder`` records, whether or not they are still there."""
    data = _read_manifest(Path(folder))
    records = data.get("entries") if data else None
    return {n for n in records if _is_plain_name(n)} if isinstance(records, dict) else set()


def published_files(folder: str | os.PathLike) -> set[str]:
    """The files a medinr run published in ``folder`` that are still as it wrote them (size and modification time
    as its manifest records); empty for a folder without a manifest. ``medinr batch --resume`` asks this."""
    return _published_files(Path(folder))


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


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
        ours = self._earlier_outputs(target)
        foreign = [e for e in entries if e not in ours]
        if foreign:
            raise MedinrError(
                f"{self.path} holds files that are not outputs of a medinr run (e.g. '{foreign[0]}'); "
                "outputs replace the whole folder, so name a new or empty folder"
            )
        if entries and not self.force:
            clash = [n for n in self.names if n in entries] or entries
            raise MedinrError(f"{self.path / clash[0]} already exists; use --force to overwrite")

    def _earlier_outputs(self, target: Path) -> set[str]:
        """What ``--force`` may delete in ``target``: the files an earlier run published, as checked by
        :func:`_published_files`. A folder without a manifest (written by an older medinr) may hold this
        command's output names, as files. A folder is never an output."""
        if _read_manifest(target) is not None:
            return _published_files(target) | {MANIFEST}
        if os.path.lexists(target / MANIFEST):
            return set()  # a manifest that is a folder, a link or unreadable is not ours
        return {n for n in self.names if os.path.lexists(target / n) and not _is_folder(target / n)}

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
        except Exception as error:
            self._cleanup(failed)
            self._raise_write_failure(error)
            raise
        self._cleanup(failed)
        if exc is not None and not isinstance(exc, MedinrError):
            self._raise_write_failure(exc)

    def _raise_write_failure(self, exc: BaseException) -> None:
        """A disk-full, quota, file-size or permission error while writing the outputs becomes one line."""
        failure = write_failure(exc)
        if failure is None:
            return
        reason, filename = failure
        where = f"{public_path(filename)}" if filename else f"the outputs in {self.path}"
        raise MedinrError(f"{reason} writing {where}; nothing was published") from None

    def _publish(self) -> None:
        assert self._staging is not None
        target, staging = self._target, self._staging
        self.check()  # the folder may have changed while the run worked
        files = sorted(os.listdir(staging))
        entries = {name: _stat_record(staging / name) for name in files}
        (staging / MANIFEST).write_text(json.dumps({"files": files, "entries": entries}, indent=1) + "\n")
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
    full = Path(os.path.abspath(out))
    ancestor = _existing_ancestor(full, raw)
    _check_name_lengths(full, ancestor, raw, 0)
    if _is_folder(full):
        raise MedinrError(f"{out} is a folder; --out names a file")
    if os.path.lexists(full) and not force:
        raise MedinrError(f"{out} already exists; use --force to overwrite")
    if not ancestor.is_dir():
        raise MedinrError(f"cannot write {out}: {ancestor} is a file, not a folder")
    _check_writable(ancestor, f"cannot write {out}")
    return out
