"""``medinr batch`` (issue 18): a manifest of cases run on Dask, each case the single command's library call.

One batch of six small cases (fit, register, reconstruct, render, a corrupt input, a bad option) runs on a
LocalCluster of two workers while the worker running the fit is killed mid-case: the four good cases give the
files the single commands give (to float rounding: see :func:`_same_outputs`), the two bad ones fail alone
with the single command's error line, the killed case is tried again. The same manifest runs through a real
``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1. The rest checks the manifest reader, the
routing of shared options and paths, --dry-run, --resume and the records without a cluster.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medinr.batch import cluster as batch_cluster
from medinr.batch.manifest import ManifestError, case_id_problem, read_manifest
from medinr.batch.status import read_status, settings_hash
from medinr.batch.worker import DEFAULT_MEMORY, WORKER_SHARE, case_budget
from medinr.errors import MedinrError
from pipelines.cli import main

pytest.importorskip("distributed")
ROOT = Path(__file__).resolve().parents[1]
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
#: The cases: (case_id, command, args as in the manifest, the single command's arguments without --out).
CASES = [
    ("fit-a", "fit", "img.nii.gz --model mrgrid --steps 150", ["fit", "{d}/img.nii.gz", "--model", "mrgrid",
                                                                "--steps", "150", "--quiet"]),
    ("reg-b", "register", "fixed.nii.gz moving.nii.gz --fixed-labels fl.nii.gz --moving-labels ml.nii.gz "
     "--fixed-landmarks fp.csv --moving-landmarks mp.csv --preset fast --steps 20",
     ["register", "{d}/fixed.nii.gz", "{d}/moving.nii.gz", "--fixed-labels", "{d}/fl.nii.gz", "--moving-labels",
      "{d}/ml.nii.gz", "--fixed-landmarks", "{d}/fp.csv", "--moving-landmarks", "{d}/mp.csv", "--preset", "fast",
      "--steps", "20", "--quiet"]),
    ("rec-c", "reconstruct", "img.nii.gz --accel 2 --coils 2 --baselines zf --preset fast --steps 20",
     ["reconstruct", "{d}/img.nii.gz", "--accel", "2", "--coils", "2", "--baselines", "zf", "--preset", "fast",
      "--steps", "20", "--quiet"]),
    ("render-d", "render", "model.inr --zoom 2", ["render", "{d}/model.inr", "--zoom", "2"]),
    ("corrupt", "fit", "corrupt.nii.gz --steps 5", ["fit", "{d}/corrupt.nii.gz", "--steps", "5", "--quiet"]),
    ("badopt", "fit", "img.nii.gz --steps -3", ["fit", "{d}/img.nii.gz", "--steps", "-3", "--quiet"]),
]
GOOD = ("fit-a", "reg-b", "rec-c", "render-d")


def _blob(x: np.ndarray, y: np.ndarray, cx: float, cy: float) -> np.ndarray:
    return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) * 4).astype(np.float32)


def _write_manifest(path: Path, rows) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "command", "args"])
        writer.writerows(rows)
    return path


def _single(argv: list[str], threads: int = 1) -> tuple[int, str]:
    """The single command in this process with ``threads`` torch threads, as a batch case runs; (status, stderr)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return main(argv), err.getvalue()
    finally:
        torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Small inputs for every command, a corrupt image and the manifest, in one folder (relative paths)."""
    d = tmp_path_factory.mktemp("cohort")
    x, y = np.meshgrid(np.linspace(-1, 1, 24), np.linspace(-1, 1, 24), indexing="ij")
    noise = 0.05 * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(_blob(x, y, 0, 0) + noise, AFFINE), d / "img.nii.gz")
    fixed, moving = _blob(x, y, 0.1, 0), _blob(x, y, -0.05, 0.05)
    nib.save(nib.Nifti1Image(fixed, AFFINE), d / "fixed.nii.gz")
    nib.save(nib.Nifti1Image(moving, AFFINE), d / "moving.nii.gz")
    nib.save(nib.Nifti1Image((fixed > 0.5).astype(np.int16), AFFINE), d / "fl.nii.gz")
    nib.save(nib.Nifti1Image((moving > 0.5).astype(np.int16), AFFINE), d / "ml.nii.gz")
    (d / "fp.csv").write_text("x,y\n10,20\n24,24\n30,12\n")
    (d / "mp.csv").write_text("x,y\n9,21\n23,25\n29,13\n")
    (d / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"not an image" * 10)
    assert _single(["fit", str(d / "img.nii.gz"), "--steps", "5", "--quiet", "--out", str(d / "ckpt")])[0] == 0
    shutil.copy(d / "ckpt" / "model.inr", d / "model.inr")
    _write_manifest(d / "manifest.csv", [(c, cmd, args) for c, cmd, args, _ in CASES])
    return d


@pytest.fixture(scope="module")
def reference(cohort: Path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The single commands' outputs (one torch thread, like a case) and error lines."""
    ref = tmp_path_factory.mktemp("single")
    errors = {}
    for case_id, command, _, argv in CASES:
        argv = [a.format(d=cohort) for a in argv]
        out = ref / case_id / "slice.png" if command == "render" else ref / case_id
        code, err = _single(argv + ["--out", str(out)])
        if case_id in GOOD:
            assert code == 0, err
        else:
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            errors[case_id] = err.strip()
    return ref, errors


def _close(a, b, path: str) -> None:
    """``a`` and ``b`` (parsed JSON) equal, numbers to a relative 1e-4."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert np.isclose(a, b, rtol=1e-4, atol=1e-9), (path, a, b)
    else:
        assert a == b, (path, a, b)


def _same_outputs(batch: Path, single: Path) -> None:
    """The single command's files, the same to float rounding: metrics.json equal but for ``timing`` (numbers to
    1e-4), images with the same header and voxels, checkpoints of the same network and field, figures within
    half a grey level on average. Not byte for byte: MKL's products on an AVX-512 machine gave a fit 1e-7 apart in
    a worker process and in this one (the same code, the same seed, one thread each)."""
    from PIL import Image

    from medinr.checkpoint import load_checkpoint

    names = sorted(p.name for p in single.iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in batch.iterdir() if not p.name.startswith(".")) == names
    for name in names:
        a, b = batch / name, single / name
        where = f"{batch.name}/{name} differs from the single command's"
        if name.endswith(".json"):
            _close(*({k: v for k, v in json.loads(p.read_text()).items() if k != "timing"} for p in (a, b)), where)
        elif name.endswith(".nii.gz"):
            x, y = nib.load(a), nib.load(b)
            assert x.header.get_data_dtype() == y.header.get_data_dtype() and np.allclose(x.affine, y.affine), where
            u, v = np.asarray(x.dataobj, dtype=np.float64), np.asarray(y.dataobj, dtype=np.float64)
            assert u.shape == v.shape and np.allclose(u, v, rtol=1e-4, atol=1e-4 * max(np.abs(v).max(), 1e-6)), where
        elif name.endswith(".inr"):
            x, y = load_checkpoint(a), load_checkpoint(b)
            assert x.model.family == y.model.family and x.geometry == y.geometry, where
            assert sorted(x.model.state_dict()) == sorted(y.model.state_dict()), where
            # the field, not each weight: Adam's normalised steps magnify rounding in weights the loss barely sees
            points = torch.rand(4096, x.geometry.ndim, generator=torch.Generator().manual_seed(0)) * 2 - 1
            with torch.no_grad():
                fx, fy = x.model(points), y.model(points)
            assert torch.allclose(fx, fy, atol=1e-4 * float(fy.abs().max().clamp_min(1e-6))), where
        elif name.endswith(".png"):
            u, v = (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in (a, b))
            assert u.shape == v.shape and np.abs(u - v).mean() < 0.5, where
        else:
            assert a.read_bytes() == b.read_bytes(), where


def _staging_holder(out: Path, case_id: str) -> int | None:
    """The pid of a process (a worker) holding the case's staging folder open, or None."""
    import psutil

    staging = [p for p in out.glob(f".{case_id}.medinr-staging-*")] if out.is_dir() else []
    if not staging:
        return None
    targets = {str(p) for p in staging}
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(OSError, psutil.Error):
            for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{proc.pid}/fd/{fd}") in targets:
                        return proc.pid
    return None


def _kill_when_running(out: Path, case_id: str, killed: list[int], stop: threading.Event) -> None:
    while not stop.is_set() and not killed:
        pid = _staging_holder(out, case_id)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.02)


@pytest.fixture(scope="module")
def local_run(cohort: Path, tmp_path_factory) -> dict:
    """The batch on a LocalCluster of two workers; the worker running fit-a is killed once, mid-case."""
    out = tmp_path_factory.mktemp("batch") / "out"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_when_running, args=(out, "fit-a", killed, stop), daemon=True)
    killer.start()
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["batch", str(cohort / "manifest.csv"), "--out", str(out), "--scheduler", "local:2",
                         "--threads-per-case", "1", "--retries", "2"])
    finally:
        stop.set()
        killer.join()
    return {"out": out, "code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "killed": killed}


def test_local_cluster_runs_the_single_commands_and_isolates_failures(local_run, reference):
    ref, errors = reference
    out = local_run["out"]
    assert local_run["killed"], "the worker running fit-a was not found to kill"
    assert local_run["code"] == 3, local_run["stderr"]
    for case_id in GOOD:
        _same_outputs(out / case_id, ref / case_id)
    records = read_status(out)
    last = {r["case"]: r for r in records}
    for case_id, line in errors.items():  # failed alone, with the single command's line
        assert last[case_id]["status"] == "failed" and last[case_id]["error"] == line
        assert not (out / case_id).exists()
        assert line in local_run["stdout"]
    assert {c for c, r in last.items() if r["status"] == "ok"} == set(GOOD)
    assert "2 of 6 cases failed" in local_run["stderr"].strip().splitlines()[-1]
    assert not list(out.glob(".*medinr-staging*")) and not list(out.glob(".*medinr-creating*"))


def test_a_killed_worker_is_retried(local_run):
    attempts = [r for r in read_status(local_run["out"]) if r["case"] == "fit-a"]
    assert [(r["status"], r["attempt"]) for r in attempts] == [("crashed", 1), ("ok", 2)]
    assert "died" in attempts[0]["error"]
    assert "tried again" in local_run["stdout"]


def test_status_and_summary_record_every_attempt(local_run):
    out = local_run["out"]
    records = read_status(out)
    assert len(records) == 7  # six cases, one of them twice
    ok = next(r for r in records if r["case"] == "reg-b")
    for key in ("case", "status", "attempt", "seconds", "peak_memory_bytes", "worker", "medinr_version",
                "settings_hash", "error"):
        assert key in ok
    assert ok["peak_memory_bytes"] > 50e6 and ok["worker"].startswith("tcp://") and ok["threads"] == 1
    assert ok["memory_budget_bytes"] is not None
    rows = {r["case_id"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert list(rows) == [c[0] for c in CASES]
    fit = json.loads((out / "fit-a" / "metrics.json").read_text())
    assert float(rows["fit-a"]["psnr"]) == pytest.approx(fit["metrics"]["psnr"], rel=1e-5)
    assert float(rows["reg-b"]["dice"]) > float(rows["reg-b"]["dice_before"])
    assert float(rows["reg-b"]["tre_mm"]) > 0 and float(rows["rec-c"]["psnr_tissue"]) > 20
    assert rows["corrupt"]["status"] == "failed" and rows["corrupt"]["error"].startswith("medinr: error:")


def test_resume_does_nothing_when_every_case_is_complete(local_run, cohort, monkeypatch, capsys):
    out = local_run["out"]
    good = _write_manifest(cohort / "good.csv", [(c, cmd, a) for c, cmd, a, _ in CASES if c in GOOD])
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "summary.csv"}
    status = (out / "status.jsonl").read_bytes()

    def no_cluster(*args, **kwargs):
        raise AssertionError("a resume with nothing to do started a cluster")

    monkeypatch.setattr(batch_cluster, "connect", no_cluster)
    leftover = out / ".rec-c.medinr-staging-killed1"  # what an interrupted batch's killed worker leaves
    leftover.mkdir()
    assert main(["batch", str(good), "--out", str(out), "--resume"]) == 0
    assert not leftover.exists()
    assert "4 complete with the same settings: skipped" in capsys.readouterr().out
    assert (out / "status.jsonl").read_bytes() == status
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # a changed option changes the settings hash: that case would run again, and needs --force to replace
    changed = _write_manifest(cohort / "changed.csv", [("fit-a", "fit", "img.nii.gz --model mrgrid --steps 151")])
    assert main(["batch", str(changed), "--out", str(out), "--resume", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "case fit-a:" in err and "already exists; use --force" in err
    assert main(["batch", str(changed), "--out", str(out), "--resume", "--force", "--dry-run"]) == 0
    assert "1 would run" in capsys.readouterr().out


def test_an_earlier_batch_is_not_overwritten_without_resume_or_force(local_run, cohort, capsys):
    assert main(["batch", str(cohort / "manifest.csv"), "--out", str(local_run["out"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "--force" in err[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def dask_cluster():
    """A real ``dask scheduler`` and two ``dask worker`` processes (one thread, 2 GiB each) on 127.0.0.1."""
    from distributed import Client

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen(dask + ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)]
    try:
        time.sleep(1.0)
        procs += [subprocess.Popen(dask + ["worker", address, "--nthreads", "1", "--memory-limit", "2GiB",
                                           "--no-dashboard", "--host", "127.0.0.1"],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
                  for _ in range(2)]
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_a_real_dask_scheduler_and_workers_run_the_manifest(dask_cluster, cohort, reference, tmp_path, capsys):
    ref, errors = reference
    rows = [(c, cmd, a) for c, cmd, a, _ in CASES] + [("big", "fit", "img.nii.gz --steps 5 --memory-limit 64G")]
    manifest = _write_manifest(cohort / "with_big.csv", rows)
    out = tmp_path / "out"
    code = main(["batch", str(manifest), "--out", str(out), "--scheduler", dask_cluster])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    for case_id in GOOD:
        _same_outputs(out / case_id, ref / case_id)
    last = {r["case"]: r for r in read_status(out)}
    assert {c: last[c]["error"] for c in errors} == errors
    assert "more than its worker's memory limit of 2.0 GiB" in last["big"]["error"]
    assert all(last[c]["worker"].startswith("tcp://127.0.0.1") for c in GOOD)


# -- without a cluster ---------------------------------------------------------------------------------------
def test_manifest_csv_and_json_lines_give_the_same_cases(tmp_path):
    csv_path = _write_manifest(tmp_path / "m.csv", [("s1", "fit", "a.nii.gz --steps 5"),
                                                    ("s2", "render", "'my model.inr' --zoom 2")])
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"case_id": "s1", "command": "fit", "args": "a.nii.gz --steps 5"}\n\n'
                     '{"case_id": "s2", "command": "render", "args": ["my model.inr", "--zoom", "2"]}\n')
    a, b = read_manifest(csv_path), read_manifest(jsonl)
    assert [(r.case_id, r.command, r.args) for r in a] == [(r.case_id, r.command, r.args) for r in b]
    assert a[1].args == ("my model.inr", "--zoom", "2")


def test_manifest_problems_are_all_listed_terminal_safe(tmp_path, capsys):
    rows = [("../up", "fit", "a"), ("a/b", "fit", "a"), ("red\x1b[31m", "fit", "a"), ("sub-01", "fit", "a"),
            ("SUB-01", "fit", "a"), ("x1", "frobnicate", "a"), ("x2", "fit", "'unclosed"),
            ("summary.csv", "fit", "a"), ("-opt", "fit", "a"), ("=cmd", "fit", "a"), ("", "fit", "a")]
    manifest = _write_manifest(tmp_path / "bad.csv", rows)
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    assert len(info.value.problems) == 10  # all but sub-01
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 10 and all(line.startswith("medinr: error: bad.csv line ") for line in err)
    assert "\x1b" not in "".join(err) and "\\x1b" in "".join(err)
    assert not out.exists()


@pytest.mark.parametrize("text,message", [
    ('{"case_id": "a", "command": "fit", "args": [["deep"]]}\n', "nested 3 deep"),
    ('{"case_id": "a", "case_id": "b", "command": "fit"}\n', "appears twice"),
    ('{"case_id": "a", "command": "fit", "extra": 1}\n', "JSON object with the keys"),
    ('{"case_id": 7, "command": "fit"}\n', "must be strings"),
])
def test_json_lines_are_read_strictly(tmp_path, text, message):
    path = tmp_path / "m.jsonl"
    path.write_text(text)
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_manifest_file_limits(tmp_path, monkeypatch):
    from medinr.batch import manifest

    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"case_id,command,args\na,fit,x\0\n")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("case_id,command,args\ncafé,fit,x\n".encode("latin-1"))
    big = _write_manifest(tmp_path / "big.csv", [("a", "fit", "x " * 600)])
    for path, message in ((nul, "NUL"), (latin, "not UTF-8"), (tmp_path / "none.csv", "cannot read"),
                          (tmp_path, "not a regular file")):
        with pytest.raises(MedinrError, match=message):
            read_manifest(path)
    with pytest.raises(ManifestError, match="600 arguments"):
        read_manifest(big)
    monkeypatch.setattr(manifest, "MAX_BYTES", 100)
    with pytest.raises(MedinrError, match="at most 100"):
        read_manifest(big)


def test_case_ids_are_safe_folder_names():
    for good in ("sub-01", "sub-01_ses-02", "001", "_x", "patient.7"):
        assert case_id_problem(good) is None
    for bad in ("..", ".hidden", "a..b", "a/b", "a\\b", "a b", "tab\t", "x" * 129, "status.jsonl", "a:b", "é\u202e"):
        assert case_id_problem(bad) is not None, bad


def test_shared_options_and_relative_paths(tmp_path, monkeypatch):
    from pipelines.batch_cases import build_cases

    (tmp_path / "data").mkdir()
    manifest = _write_manifest(tmp_path / "data" / "m.csv", [
        ("f", "fit", "img.nii.gz --steps 7"), ("r", "render", "sub/model.inr --out view.nii.gz"),
        ("g", "reconstruct", "k.npy --mask poisson"), ("bad", "fit", "img.nii.gz --out elsewhere")])
    monkeypatch.chdir(tmp_path)
    rows = read_manifest(manifest)
    cases = build_cases(rows, manifest, tmp_path / "out", ["--steps", "50", "--seed", "3", "--offset", "-5",
                                                           "--prior", "prior.nii.gz"], threads=2)
    fit, render, recon, bad = cases
    assert fit.task.request.image == str(tmp_path / "data" / "img.nii.gz")
    assert fit.task.request.steps == 7 and fit.task.request.seed == 3  # the case's own value wins
    assert fit.task.threads == 2 and fit.task.memory == DEFAULT_MEMORY and not fit.task.request.progress
    assert render.task.file_name == "view.nii.gz" and render.task.request.offset == -5
    assert render.task.request.checkpoint == str(tmp_path / "data" / "sub" / "model.inr")
    assert not render.task.request.png and render.expected == ("view.nii.gz",)
    assert recon.task.request.prior == str(tmp_path / "prior.nii.gz")  # a shared path: from the current folder
    assert recon.task.request.acquisition.mask == "poisson"
    assert bad.task is None and "no --out" in bad.error
    with pytest.raises(MedinrError, match="--frobnicate"):
        build_cases(rows, manifest, tmp_path / "out", ["--frobnicate", "1"], threads=1)


def test_dry_run_lists_every_problem_and_writes_nothing(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["batch", str(cohort / "manifest.csv"), "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "case corrupt: cannot read image" in err[0] and "case badopt: argument --steps" in err[1]
    assert "2 of 6 cases would fail" in err[2]
    assert not out.exists()
    good = _write_manifest(cohort / "good_dry.csv", [(c, cmd, a) for c, cmd, a, _ in CASES if c in GOOD])
    assert main(["batch", str(good), "--out", str(out), "--dry-run"]) == 0
    assert "4 would run" in capsys.readouterr().out and not out.exists()


def test_missing_dask_is_one_line(cohort, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)
    good = _write_manifest(cohort / "good_nodask.csv", [(c, cmd, a) for c, cmd, a, _ in CASES if c in GOOD])
    assert main(["batch", str(good), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Dask distributed" in err[0] and not (tmp_path / "out").exists()


def test_scheduler_specs(monkeypatch):
    assert batch_cluster.parse_scheduler("local").workers is None
    assert batch_cluster.parse_scheduler("local:3").workers == 3
    assert batch_cluster.parse_scheduler("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    spec = batch_cluster.parse_scheduler("slurm:jobs=20,cpus=8,memory=32GB,queue=normal,walltime=04:00:00")
    assert spec.options == {"jobs": 20, "cpus": 8, "memory": "32GB", "queue": "normal", "walltime": "04:00:00"}
    for bad in ("local:0", "local:x", "tcp://host", "slurm:cores=8", "slurm:jobs=-1", "slurm:memory=lots", "k8s"):
        with pytest.raises(MedinrError):
            batch_cluster.parse_scheduler(bad)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "dask_jobqueue", None)
        with pytest.raises(MedinrError, match="needs dask-jobqueue"):
            batch_cluster.jobqueue_cluster(spec, threads=2)
    pytest.importorskip("dask_jobqueue")
    cluster = batch_cluster.jobqueue_cluster(spec, threads=2)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "--cpus-per-task=8" in script and "-p normal" in script and "-t 04:00:00" in script
    assert "--nthreads 1" in script and "--nworkers 4" in script  # 4 one-thread workers of 2 cores each


def test_memory_budget_of_a_case_against_its_worker(monkeypatch):
    monkeypatch.delenv("MEDINR_MEMORY_LIMIT", raising=False)
    gib = 1 << 30
    with pytest.raises(MedinrError, match="more than its worker's memory limit"):
        case_budget(8 * gib, 4 * gib)
    assert case_budget(2 * gib, 4 * gib) == 2 * gib
    assert case_budget(DEFAULT_MEMORY, 4 * gib) <= int(4 * gib * WORKER_SHARE)
    assert case_budget(None, 4 * gib) is None  # 'none' asked for
    monkeypatch.setenv("MEDINR_MEMORY_LIMIT", "8G")
    with pytest.raises(MedinrError):
        case_budget(DEFAULT_MEMORY, 4 * gib)


def test_settings_hash_follows_options_and_inputs(tmp_path):
    image = tmp_path / "a.nii"
    image.write_bytes(b"x" * 10)
    settings = {"image": str(image), "steps": 5, "progress": True}
    first = settings_hash("fit", settings)
    assert settings_hash("fit", {**settings, "progress": False}) == first
    assert settings_hash("fit", {**settings, "steps": 6}) != first
    os.utime(image, ns=(1, 1))
    assert settings_hash("fit", settings) != first


def test_status_reader_skips_a_cut_last_line(tmp_path):
    (tmp_path / "status.jsonl").write_text('{"case": "a", "status": "ok"}\n{"case": "b", "sta')
    assert [r["case"] for r in read_status(tmp_path)] == ["a"]
