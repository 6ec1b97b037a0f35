"""The commands as library calls: every app is ``run(request) -> AppResult``, and one :func:`publish` writes it.

A request (:mod:`medinr.apps.requests`) holds every choice of one run; its app (``medinr.apps.fit``,
``reconstruct``, ``register``) does the work and returns an :class:`~medinr.apps.result.AppResult`: the images
to write with their geometry and dtype, the continuous images to save, the record of every choice and metric,
the timing of every stage, the figures and a one-line summary. :func:`execute` is what a command line (or a
batch worker) calls: check the output folder, run, publish. Importing this package, or a request, imports no
torch; :func:`run` loads the app, and torch with it.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from medinr.outputs import OutputDir


def run(request: Any) -> Any:
    """Carry ``request`` out with its app (``request.app``); returns its :class:`~medinr.apps.result.AppResult`."""
    return importlib.import_module(request.app).run(request)


def publish(result: Any, out: OutputDir, drawer: Any = None) -> None:
    """Write ``result`` into the staged output folder ``out`` (:func:`medinr.apps.writer.publish`), its figures
    by ``drawer`` (a :class:`medinr.apps.drawer.Drawer`) where given."""
    importlib.import_module("medinr.apps.writer").publish(result, out, drawer)


def publish_file(result: Any, path: Any) -> None:
    """Write a one-image result (a render) to the file ``path`` (:func:`medinr.apps.writer.publish_file`)."""
    importlib.import_module("medinr.apps.writer").publish_file(result, path)


def execute(request: Any, out: str, force: bool = False, draw_aside: bool = False) -> Any:
    """Check the output folder ``out`` (before any work), run ``request``, and publish its result as one step.

    The run holds the output's (locked) staging folder while it works, as every command did: an interrupted or
    terminated run removes it, and nothing is published. ``draw_aside`` starts a
    :class:`~medinr.apps.drawer.Drawer` before the work, so that matplotlib loads in another process meanwhile
    (a command line's half second; a batch worker, which loads it once for many cases, draws in its own process).
    """
    from medinr.apps.drawer import Drawer

    with OutputDir(out, request.outputs(), force=force) as folder:
        with Drawer() if draw_aside else contextlib.nullcontext() as drawer:
            result = run(request)
            publish(result, folder, drawer)
    return result
