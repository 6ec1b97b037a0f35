"""OutputDir publishes a run's outputs as one step: all files or none, old outputs replaced as a set, leftovers of
killed runs reclaimed, and nothing that medinr did not write is ever deleted."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from medinr import outputs
from medinr.errors import MedinrError
from medinr.io import atomic_path
from medinr.outputs import MANIFEST, OutputDir, check_output_file

NAMES = ["a.txt", "b.txt"]


def _publish(path: Path, files: dict[str, str], force: bool = False, names: list[str] | None = None) -> None:
    with OutputDir(path, names or sorted(files), force=force) as out:
        for name, text in files.items():
            (out / name).write_text(text)


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.medinr-"))


def test_files_appear_together_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "deep" / "out"
    umask = os.umask(0o022)
    try:
        with OutputDir(target, NAMES) as out:
            (out / "a.txt").write_text("1")
            assert not target.exists()  # nothing is visible while the run works
            assert out / "a.txt" != target / "a.txt" and (out / "a.txt").parent.parent == target.parent
            (out / "b.txt").write_text("2")
    finally:
        os.umask(umask)
    assert sorted(os.listdir(target)) == sorted([MANIFEST, *NAMES])
    assert json.loads((target / MANIFEST).read_text())["files"] == NAMES
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert _siblings(target) == []


def test_a_failed_run_writes_nothing_and_removes_the_folders_it_made(tmp_path):
    target = tmp_path / "new" / "out"
    with pytest.raises(ValueError):
        with OutputDir(target, NAMES) as out:
            (out / "a.txt").write_text("1")
            raise ValueError("the fit failed")
    assert not (tmp_path / "new").exists()
    assert sorted(os.listdir(tmp_path)) == []


def test_existing_outputs_need_force_and_are_then_replaced_as_a_set(tmp_path):
    target = tmp_path / "reg"
    _publish(target, {"warped.nii.gz": "old", "warped_labels.nii.gz": "old labels"})
    with pytest.raises(MedinrError, match="already exists; use --force"):
        OutputDir(target, ["warped.nii.gz"], force=False)
    # a rerun without labels: the old warped_labels does not survive next to the new warped image
    _publish(target, {"warped.nii.gz": "new"}, force=True)
    assert sorted(os.listdir(target)) == [MANIFEST, "warped.nii.gz"]
    assert (target / "warped.nii.gz").read_text() == "new"
    assert _siblings(target) == []


def test_a_folder_with_other_files_is_never_replaced(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "scan.nii.gz").write_text("precious")
    for force in (False, True):
        with pytest.raises(MedinrError, match="not outputs of a medinr run"):
            OutputDir(target, NAMES, force=force)
    assert os.listdir(target) == ["scan.nii.gz"]


def test_a_file_put_into_the_folder_during_the_run_stops_the_publish(tmp_path):
    target = tmp_path / "out"
    _publish(target, {"a.txt": "old"})
    with pytest.raises(MedinrError, match="not outputs"):
        with OutputDir(target, NAMES, force=True) as out:
            (out / "a.txt").write_text("new")
            (target / "notes.txt").write_text("mine")
    assert (target / "a.txt").read_text() == "old" and (target / "notes.txt").exists()


@pytest.mark.parametrize("failure", ["exchange", "fallback_rename"])
def test_a_failing_publish_keeps_the_old_outputs_whole(tmp_path, monkeypatch, failure):
    target = tmp_path / "out"
    _publish(target, {"a.txt": "old a", "b.txt": "old b"})
    if failure == "exchange":
        def broken(a, b):
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(outputs, "_exchange", broken)
    else:  # no atomic exchange here, and the second of the two renames fails
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
        real_rename = os.rename

        def rename(src, dst):
            if ".medinr-staging-" in str(src):
                raise OSError(28, "No space left on device")
            return real_rename(src, dst)
        monkeypatch.setattr(outputs.os, "rename", rename)
    with pytest.raises(MedinrError, match="cannot publish"):
        _publish(target, {"a.txt": "new a", "b.txt": "new b"}, force=True)
    assert (target / "a.txt").read_text() == "old a" and (target / "b.txt").read_text() == "old b"
    assert _siblings(target) == []


def test_without_an_atomic_exchange_two_renames_still_replace_the_set(tmp_path, monkeypatch):
    target = tmp_path / "out"
    _publish(target, {"a.txt": "old", "b.txt": "stale"})
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    _publish(target, {"a.txt": "new"}, force=True)
    assert sorted(os.listdir(target)) == [MANIFEST, "a.txt"] and _siblings(target) == []


def test_a_folder_named_like_an_output_is_never_replaced(tmp_path):
    """A folder named comparison.png among the old outputs once made a later rename fail; medinr never writes a
    folder there, so it may hold anything: refused (issue 20, J17), not deleted with the rest."""
    target = tmp_path / "fit"
    _publish(target, {"model.inr": "old"}, names=["model.inr", "comparison.png"])
    (target / "comparison.png").mkdir()
    (target / "comparison.png" / "notes.txt").write_text("mine")
    with pytest.raises(MedinrError, match="not outputs of a medinr run .*'comparison.png'"):
        _publish(target, {"model.inr": "new", "comparison.png": "png"}, force=True)
    assert (target / "comparison.png" / "notes.txt").read_text() == "mine"


def test_staging_of_a_killed_run_is_reclaimed_by_the_next_run(tmp_path):
    target = tmp_path / "out"
    code = (
        "import os, signal, sys\n"
        "from medinr.outputs import OutputDir\n"
        "out = OutputDir(sys.argv[1], ['a.txt']).__enter__()\n"
        "(out / 'a.txt').write_text('half')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=Path(__file__).parents[1], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = _siblings(target)
    assert len(left) == 1 and "-staging-" in left[0] and not target.exists()
    _publish(target, {"a.txt": "whole"})
    assert _siblings(target) == [] and (target / "a.txt").read_text() == "whole"


def test_a_live_run_keeps_its_staging_while_another_run_starts(tmp_path):
    target = tmp_path / "out"
    first = OutputDir(target, NAMES).__enter__()
    try:
        _publish(tmp_path / "out", {"a.txt": "second"})  # reclaims only unlocked leftovers
        assert (first / "a.txt").parent.is_dir()
    finally:
        first.__exit__(RuntimeError, RuntimeError("stop"), None)
    assert _siblings(target) == []


def test_a_swap_interrupted_between_its_renames_is_undone(tmp_path):
    target = tmp_path / "out"
    backup = tmp_path / ".out.medinr-replaced-x1"
    backup.mkdir()
    (backup / "a.txt").write_text("old")  # killed after moving the old outputs away, before the new came in
    _publish(target, {"b.txt": "new"}, force=True, names=["a.txt", "b.txt"])
    assert sorted(os.listdir(target)) == [MANIFEST, "b.txt"] and _siblings(target) == []


def test_an_existing_empty_folder_and_a_legacy_output_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _publish(empty, {"a.txt": "1"})  # no --force needed: nothing is overwritten
    legacy = tmp_path / "legacy"  # written by an older medinr: no manifest, only this command's names
    legacy.mkdir()
    (legacy / "a.txt").write_text("old")
    (legacy / ".medinr-staging-abc").mkdir()
    _publish(legacy, {"a.txt": "new", "b.txt": "new"}, force=True)
    assert sorted(os.listdir(legacy)) == [MANIFEST, "a.txt", "b.txt"]


@pytest.mark.parametrize("case", ["empty", "cwd", "parent_is_file", "is_file", "dangling_link"])
def test_bad_output_paths_are_refused_before_any_work(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    path, message = {
        "empty": ("", "--out is empty"),
        "cwd": (".", "current folder"),
        "parent_is_file": ("file/out", "is a file, not a folder"),
        "is_file": ("file", "not a folder"),
        "dangling_link": ("link", "dangling symbolic link"),
    }[case]
    with pytest.raises(MedinrError, match=message):
        OutputDir(path, NAMES, force=True)
    assert sorted(os.listdir(tmp_path)) == ["file", "link"]


def test_a_symlinked_output_folder_is_published_at_its_target(tmp_path):
    """J16, decided: ``--out`` naming a link to a folder follows it, like any path the user names; the folder it
    points to is held to the same rules (new, empty or an earlier run's outputs), and the link stays a link."""
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "alias")
    _publish(tmp_path / "alias", {"a.txt": "1"})
    assert (real / "a.txt").read_text() == "1" and (tmp_path / "alias").is_symlink()
    _publish(tmp_path / "alias", {"a.txt": "2"}, force=True)  # replaced as a set, at the target
    assert (real / "a.txt").read_text() == "2" and (tmp_path / "alias").is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["alias", "real"]
    data = tmp_path / "data"
    data.mkdir()
    (data / "scan.nii.gz").write_text("precious")
    os.symlink(data, tmp_path / "to_data")
    with pytest.raises(MedinrError, match="not outputs of a medinr run"):
        OutputDir(tmp_path / "to_data", NAMES, force=True)
    os.symlink(data / "scan.nii.gz", tmp_path / "to_file")
    with pytest.raises(MedinrError, match="not a folder"):
        OutputDir(tmp_path / "to_file", NAMES, force=True)
    assert (data / "scan.nii.gz").read_text() == "precious"


def _plant(folder: Path, manifest: object) -> None:
    (folder / MANIFEST).write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))


@pytest.mark.parametrize("case", ["names_only", "forged_size", "path_outside", "absolute", "modified_output"])
def test_a_planted_or_stale_manifest_never_makes_force_delete_a_file(tmp_path, case):
    """J17: the manifest is not trusted as written. ``--force`` deletes only files medinr published, checked
    against the folder's real contents (regular file, size and time recorded at publishing); a name with a
    path is never looked up."""
    outside = tmp_path / "precious.txt"
    outside.write_text("outside")
    target = tmp_path / "out"
    _publish(target, {"a.txt": "old"})
    record = json.loads((target / MANIFEST).read_text())
    if case == "modified_output":  # the user edited an output after the run: it is theirs now
        (target / "a.txt").write_text("edited by hand")
        victim = target / "a.txt"
    else:
        victim = target / "precious.txt"
        victim.write_text("the user's")
        info = victim.stat()
        entry = {"size": info.st_size, "mtime_ns": info.st_mtime_ns + 1} if case == "forged_size" else {}
        listed = {"names_only": "precious.txt", "forged_size": "precious.txt", "path_outside": "../precious.txt",
                  "absolute": str(outside)}[case]
        record["files"].append(listed)
        record["entries"][listed] = entry or {"size": 0, "mtime_ns": 0}
        if case == "names_only":
            del record["entries"][listed]
        _plant(target, record)
    with pytest.raises(MedinrError, match="not outputs of a medinr run"):
        _publish(target, {"a.txt": "new"}, force=True)
    assert victim.exists() and outside.read_text() == "outside" and _siblings(target) == []


def test_manifests_that_are_links_folders_or_fifos_are_not_trusted_and_never_block(tmp_path):
    target = tmp_path / "out"
    _publish(target, {"a.txt": "old"})
    (target / MANIFEST).unlink()
    os.mkfifo(target / MANIFEST)  # reading it would wait forever
    with pytest.raises(MedinrError, match="not outputs of a medinr run"):
        OutputDir(target, NAMES, force=True)
    (target / MANIFEST).unlink()
    os.symlink(tmp_path / "elsewhere.json", target / MANIFEST)
    (tmp_path / "elsewhere.json").write_text(json.dumps({"files": ["a.txt"], "entries": {}}))
    with pytest.raises(MedinrError, match="not outputs of a medinr run"):
        OutputDir(target, NAMES, force=True)
    assert (target / "a.txt").read_text() == "old"


def test_a_republished_folder_is_replaced_by_its_checked_manifest(tmp_path):
    """The manifest records what was published, so a rerun with --force still replaces a whole earlier run."""
    target = tmp_path / "out"
    _publish(target, {"a.txt": "1", "b.txt": "2"})
    record = json.loads((target / MANIFEST).read_text())
    assert sorted(record["entries"]) == ["a.txt", "b.txt"]
    assert record["entries"]["a.txt"]["size"] == 1
    _publish(target, {"x.txt": "3"}, force=True)  # different names: the old ones were checked, then replaced
    assert sorted(os.listdir(target)) == [MANIFEST, "x.txt"]


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_names_too_long_for_the_file_system_are_refused_up_front(tmp_path, kind):
    """Issue 20: a 300-character --out name was an internal error (ENAMETOOLONG from a later step)."""
    name = "o" * 300
    with pytest.raises(MedinrError, match="too long"):
        if kind == "folder":
            OutputDir(tmp_path / name, NAMES)
        else:
            check_output_file(tmp_path / f"{name}.png", force=False)
    with pytest.raises(MedinrError, match="too long"):  # 250 fits a file name, not the staging name beside it
        OutputDir(tmp_path / ("o" * 250), NAMES)
    assert os.listdir(tmp_path) == []


def test_a_long_single_file_output_name_is_written(tmp_path):
    """The temporary name beside a single output is short, so any name the file system holds can be written."""
    out = check_output_file(tmp_path / ("s" * 240 + ".nii.gz"), force=False)
    with atomic_path(out) as tmp:
        assert len(tmp.name) < 60 and tmp.name.endswith(".nii.gz")
        tmp.write_text("x")
    assert out.read_text() == "x"


def test_write_failures_become_one_line_naming_the_output(tmp_path, monkeypatch):
    """Disk full (ENOSPC), a file-size limit (EFBIG) or a read-only folder while writing: one line naming the
    published path, never the staging folder, and nothing published (the subprocess tests hit the real ones)."""
    import errno

    target = tmp_path / "out"
    cases = [(errno.ENOSPC, "no space left on device"), (errno.EFBIG, r"file too large for the file-size limit")]
    for number, text in cases:
        with pytest.raises(MedinrError, match=f"{text}.* writing {target}/a.txt; nothing was published"):
            with OutputDir(target, NAMES) as out:
                raise OSError(number, os.strerror(number), str(out / "a.txt"))
        assert not target.exists() and _siblings(target) == []
    from safetensors import SafetensorError

    message = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left" })'
    with pytest.raises(MedinrError, match="no space left on device writing the outputs in"):
        with OutputDir(target, NAMES):
            raise SafetensorError(message)
    with pytest.raises(MedinrError, match=f"no space left on device writing {tmp_path}/x.png"):
        with atomic_path(tmp_path / "x.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert os.listdir(tmp_path) == []


def test_undeclared_names_and_use_outside_the_block_are_bugs(tmp_path):
    out = OutputDir(tmp_path / "o", NAMES)
    with pytest.raises(RuntimeError, match="context manager"):
        out / "a.txt"
    with pytest.raises(RuntimeError, match="not declared"):
        with out:
            out / "c.txt"
    assert not (tmp_path / "o").exists()


def test_single_file_outputs_replace_a_link_but_never_follow_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    link = tmp_path / "slice.png"
    os.symlink(victim, link)
    with pytest.raises(MedinrError, match="already exists"):
        check_output_file(link, force=False)
    os.symlink(tmp_path / "missing", tmp_path / "dangling.png")
    with pytest.raises(MedinrError, match="already exists"):  # a dangling link is an existing entry too
        check_output_file(tmp_path / "dangling.png", force=False)
    with atomic_path(check_output_file(link, force=True)) as tmp:
        tmp.write_text("new")
    assert not link.is_symlink() and link.read_text() == "new" and victim.read_text() == "keep"
    for bad, message in [("", "empty"), (str(tmp_path), "is a folder"), (str(victim / "x.png"), "is a file")]:
        with pytest.raises(MedinrError, match=message):
            check_output_file(bad, force=True)


def _result():
    import numpy as np

    from medinr.apps.result import AppResult, Figure, ImageOutput
    from medinr.geometry import Geometry

    g = Geometry((6, 5, 4), np.diag([2.0, 2.0, 2.0, 1.0]))
    images = [ImageOutput("warped.nii.gz", np.ones(g.shape), g),
              ImageOutput("displacement.nii.gz", np.zeros(g.shape + (3,)), g, kind="displacement")]

    def draw(path):
        Path(path).write_text("figure")

    return AppResult(images, {}, {"metrics": {}}, {"total": 1.0}, [Figure("report.png", draw)], "done")


def test_the_writer_threads_write_every_part_or_the_run_publishes_nothing(tmp_path, monkeypatch):
    """Images go to writer threads while the figure is drawn; an error in a thread is raised and nothing appears."""
    from medinr.apps import writer

    names = ["warped.nii.gz", "displacement.nii.gz", "report.png", "metrics.json"]
    target = tmp_path / "ok"
    with OutputDir(target, names) as out:
        writer.publish(_result(), out)
    assert sorted(p.name for p in target.iterdir() if p.name != MANIFEST) == sorted(names)
    assert "writing" in json.loads((target / "metrics.json").read_text())["timing"]

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(writer, "write_displacement", full_disk)
    bad = tmp_path / "bad"
    with pytest.raises(MedinrError, match="no space left on device writing the outputs .*nothing was published"):
        with OutputDir(bad, names) as out:
            writer.publish(_result(), out)
    assert not bad.exists() and not _siblings(bad)


def test_a_displacement_field_cut_short_by_a_file_size_limit_is_refused(tmp_path, capfd):
    """SimpleITK's NIfTI writer reports a failed write only on stderr and returns: a field larger than the file-size
    limit (the smaller outputs fit) was published truncated, exit 0. Now the write raises the system's own error
    (one line through :func:`medinr.outputs.write_failure`), niftilib's stderr line is silenced, nothing is left."""
    import resource

    import numpy as np

    from medinr.geometry import Geometry
    from medinr.registration.field import write_displacement

    field = np.random.default_rng(0).normal(size=(20, 20, 20, 3))  # 192 kB uncompressed
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(OSError) as info:
            write_displacement(tmp_path / "u.nii.gz", field, Geometry((20, 20, 20), np.eye(4)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert outputs.write_failure(info.value)[0] == "file too large for the file-size limit (ulimit -f)"
    assert list(tmp_path.iterdir()) == []
    assert "NWAD" not in capfd.readouterr().err
