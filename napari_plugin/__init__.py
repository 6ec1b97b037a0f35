"""napari plugin for medinr: open ``.inr`` checkpoints and browse them at any slice orientation and zoom.

Everything napari calls is declared in ``napari.yaml`` (npe2); the maths lives in :mod:`medinr.render`.

The viewer's work is many small torch operations in worker threads while the UI waits for them. With OpenMP's
default active waiting, each of them makes every intra-op thread spin for a core; on a machine whose cores are
busy with other work that made an exact frame of the sample take 3 s instead of 0.28 s (2 cores, load 5:
``OMP_WAIT_POLICY=PASSIVE`` gave 0.28 s with 2 threads, the same as 1 thread, and keeps the 2-thread speed on a
quiet machine). OpenMP reads the variable when torch loads, so it is set here, before the plugin imports torch,
unless torch is already loaded or the user chose a policy. Freed frame buffers stay in the heap for the next frame
(:func:`medinr.runtime.configure_allocator`) instead of coming back as fresh pages the kernel zeroes.
"""

import os
import sys

from medinr.runtime import configure_allocator

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
configure_allocator()

__all__: list[str] = []
