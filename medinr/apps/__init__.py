"""The commands as library calls: every app is ``run(request) -> AppResult``, and one :func:`publish` writes it.

A request (:mod:`medinr.apps.requests`) holds every choice of one run; its app (``medinr.apps.fit``,
``reconstruct``, ``register``) does the work and returns an :class:`~medinr.apps.result.AppResult`: the images
to write with their geometry and dtype, the continuous images to save, the record of every choice and metric,
the timing of every stage, the figures and a one-line summary. :func:`execute` is what a command line (or a
batch worker) calls: check the output folder, run, publish. Importing this package, or a request, imports no
torch; :func:`run` loads the app, and torch with it.
"""

from __future__ import annotations

import importlib
from typing import Any

from medinr.outputs import OutputDir


def run(request: Any) -> Any:
    """Carry ``request`` out with its app (``request.app``); returns its :class:`~medinr.apps.result.AppResult`."""
    return importlib.import_module(request.app).run(request)


def publish(result: Any, out: OutputDir) -> None:
    """Write ``result`` into the staged output folder ``out`` (:func:`medinr.apps.writer.publish`)."""
    importlib.import_module("medinr.apps.writer").publish(result, out)


def publish_file(result: Any, path: Any) -> None:
    """Write a one-image result (a render) to the file ``path`` (:func:`medinr.apps.writer.publish_file`)."""
    importlib.import_module("medinr.apps.writer").publish_file(result, path)


def execute(request: Any, out: str, force: bool = False) -> Any:
    """Check the output folder ``out`` (before any work), run ``request``, and publish its result as one step.

    The run holds the output's (locked) staging folder while it works, as every command did: an interrupted or
    terminated run removes it, and nothing is published.
    """
    with OutputDir(out, request.outputs(), force=force) as folder:
        result = run(request)
        publish(result, folder)
    return result
