"""A child process that draws a command's figures, started before the work so that matplotlib loads beside it.

A short command spends its first second importing torch on one core; importing matplotlib's figure API takes
another 0.4-0.6 s, and drawing and saving a report 0.2-0.3 s more, all on the command's critical path. A
:class:`Drawer` starts ``python -m medinr.apps.drawer`` first: the child imports matplotlib on the other core
while this process imports torch and works, then waits for its jobs on stdin. :func:`medinr.apps.writer.publish`
hands it the result's figures (pickled: arrays, geometries and module-level drawing functions, between two
processes of the same command, never from a file) and writes the images meanwhile; the child answers with the
names of the figures it drew.

The child is only a shortcut: a figure it could not draw (it failed to start, it died, the drawing raised) is
drawn again in this process, which raises the real error. A command that fails before publishing closes the
child's stdin and the child exits without drawing anything.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


class Drawer:
    """The child process (see the module docstring); a context manager that always ends it."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])  # this medinr, wherever the child's cwd is
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                                          os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        try:
            self._child: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-m", "medinr.apps.drawer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, env=env)
        except OSError:  # no process to spare: every figure is drawn here
            self._child = None

    def __enter__(self) -> "Drawer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def draw(self, jobs: Sequence[tuple[str, object, dict]]) -> set[str]:
        """Draw ``jobs`` (name, module-level function, keyword arguments with the output path) in the child;
        the names of the figures it drew (an empty set when it could not)."""
        child, self._child = self._child, None
        if child is None:
            return set()
        try:
            answer, _ = child.communicate(pickle.dumps(list(jobs), protocol=pickle.HIGHEST_PROTOCOL))
            return set(json.loads(answer)) if child.returncode == 0 else set()
        except (OSError, ValueError, pickle.PicklingError, AttributeError, TypeError):
            _end(child)
            return set()
        except BaseException:  # interrupted or terminated meanwhile: the child must not outlive the command
            _end(child)
            raise

    def close(self) -> None:
        """End the child if :meth:`draw` did not (it exits when its stdin closes)."""
        child, self._child = self._child, None
        if child is not None:
            _end(child)


def _end(child: subprocess.Popen) -> None:
    try:
        child.kill()
        child.wait()
    except OSError:
        pass
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def _warm_up() -> None:
    """Draw a small figure into memory: matplotlib loads its fonts, colour maps and PNG writer on the first one
    (0.2-0.3 s), which is then done before the parent's figures arrive."""
    import io

    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    ax = fig.subplots()
    fig.colorbar(ax.imshow(np.eye(4), cmap="gray"), ax=ax)
    ax.plot([0, 1], [0, 1])
    ax.set_title("warm-up")
    fig.savefig(io.BytesIO(), format="png", dpi=40)


def _serve() -> int:
    """The child: warm matplotlib up, read one pickled list of jobs from stdin, draw each, print what was drawn."""
    _warm_up()
    data = sys.stdin.buffer.read()
    if not data:  # the command failed before publishing
        return 0
    drawn = []
    for name, draw, kwargs in pickle.loads(data):
        try:
            draw(**kwargs)
        except Exception:  # the parent draws it again and raises the real error
            continue
        drawn.append(name)
    sys.stdout.write(json.dumps(drawn))
    return 0


if __name__ == "__main__":
    code = _serve()
    sys.stdout.flush()
    # no interpreter teardown (0.1-0.2 s of matplotlib's and NumPy's objects) while the parent waits for the exit
    os._exit(code)
