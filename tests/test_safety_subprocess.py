"""Issue 13 in real processes: memory bombs under an address-space limit (each refused with one line, below
1 GB and 10 s), SIGTERM during a reconstruction (staging removed), Ctrl-C during start-up (no traceback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from hostile_files import nifti_claiming, rewrite_metadata, write_checkpoint, write_image

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
ENV.pop("MEDINR_MEMORY_LIMIT", None)  # the default budget, derived here from the address-space limit

# Runs each command line through pipelines.cli.main in one process whose address space is capped at what the
# imports took plus 1 GiB (so the default budget is ~0.8 GiB); reports exit status, stderr, time and the peak
# resident memory above the post-import baseline. A case with "terminate" gets SIGTERM from a watcher thread
# once a staging folder appears in that folder (one process start serves every case).
CHILD = r"""
import contextlib, io, json, os, resource, signal, sys, threading, time
from pipelines.cli import main
import pipelines.fit_image, pipelines.render, pipelines.reconstruct, SimpleITK, matplotlib.pyplot  # noqa
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def terminate_when_staged(folder):
    while not any(".medinr-staging-" in name for name in os.listdir(folder)):
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


results = []
for case in json.loads(sys.argv[1]):
    if case.get("terminate"):
        threading.Thread(target=terminate_when_staged, args=(case["terminate"],), daemon=True).start()
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(case["args"])
        except SystemExit as exc:
            rc = exc.code
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    results.append({"rc": rc, "err": err.getvalue(), "seconds": time.perf_counter() - start, "rss": peak})
print(json.dumps(results))
"""


def _bombs(tmp: Path) -> list[tuple[list[str], str]]:
    big = tmp / "big.mha"
    big.write_text("ObjectType = Image\nNDims = 3\nDimSize = 1000 1000 1000\nElementType = MET_FLOAT\n"
                   "ElementDataFile = LOCAL\n" + "\0" * 64)
    with open(tmp / "big.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1000,) * 3})
        f.write(b"\0" * 64)
    ck = write_checkpoint(tmp / "ck.inr")
    wide = rewrite_metadata(ck, tmp / "wide.inr", lambda m: m["model"]["config"].update(hidden=60000))
    huge = rewrite_metadata(ck, tmp / "huge.inr", lambda m: m["model"]["config"].update(hidden=10**9))
    conv = write_checkpoint(tmp / "conv.inr", family="conv_inr", lattice=[12, 12, 12], channels=4, layers=1)
    conv = rewrite_metadata(conv, tmp / "lattice.inr", lambda m: m["model"]["config"].update(lattice=[2000] * 3))
    img = write_image(tmp / "img.nii.gz", (24, 24))
    img256 = write_image(tmp / "img256.nii.gz", (256, 256))
    out = str(tmp / "out")
    cases = [
        (["fit", nifti_claiming(tmp / "bomb.nii.gz", (1000, 1000, 1000)), "--out", out], "truncated or damaged"),
        (["fit", big, "--out", out], "truncated or damaged"),
        (["fit", tmp / "big.npy", "--out", out], "truncated or damaged"),
        (["info", huge], "model option 'hidden' must be in"),
        (["render", wide, "--out", tmp / "w.png"], "the weights of model 'siren' would need more than"),
        (["render", conv, "--out", tmp / "c.png"], "lattice would need about"),
        (["render", ck, "--size", "16384x16384", "--out", tmp / "s.png"], "16384x16384 render would need about"),
        (["reconstruct", img256, "--coils", "256", "--out", out, "--quiet"], "simulating 256 coils"),
        (["fit", img, "--model", "hashgrid", "--model-options", '{"log2_table_size": 30, "max_resolution": 65536}',
          "--out", out, "--quiet"], "the weights of model 'hashgrid' would need"),
        (["fit", img, "--model", "siren", "--model-options", '{"hidden": 30000}', "--out", out, "--quiet"],
         "the weights of model 'siren' would need"),
    ]
    return [([str(a) for a in args], message) for args, message in cases]


def _run_child(cases: list[dict]) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_memory_bombs_and_sigterm_in_one_capped_process(tmp_path):
    bombs = tmp_path / "bombs"
    bombs.mkdir()
    cases = _bombs(bombs)
    before = sorted(os.listdir(bombs))
    recon = tmp_path / "recon"
    recon.mkdir()
    img = write_image(recon / "img.nii.gz", (48, 48))
    sigterm = {"args": ["reconstruct", str(img), "--steps", "100000", "--baselines", "zf", "--out",
                        str(recon / "out"), "--quiet"], "terminate": str(recon)}
    results = _run_child([{"args": args} for args, _ in cases] + [sigterm])
    for (args, message), r in zip(cases, results):
        err = r["err"].strip().splitlines()
        assert r["rc"] == 2 and len(err) == 1 and err[0].startswith("medinr: error:"), (args, r)
        assert message in err[0], (args, err[0])
        assert r["seconds"] < 10 and r["rss"] < 1 << 30, (args, r)
    assert sorted(os.listdir(bombs)) == before  # nothing written, no staging folder left
    # SIGTERM during the reconstruction: one line, exit 143, its staging folder removed, nothing published
    assert results[-1]["rc"] == 143 and results[-1]["err"] == "medinr: terminated\n", results[-1]
    assert sorted(os.listdir(recon)) == ["img.nii.gz"]


def _loading_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_ctrl_c_during_start_up_prints_one_line(tmp_path):
    ck = tmp_path / "x.inr"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "info", str(ck)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # torch is imported inside main() (building the parser), never at module level: interrupt it there
    end = time.monotonic() + 60
    while not _loading_torch(proc.pid) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    finished = (2, f"medinr: error: checkpoint not found: {ck}\n")  # a machine fast enough to finish first
    assert (proc.returncode, err) in ((130, "medinr: interrupted\n"), finished), (proc.returncode, err)
    assert "Traceback" not in err
