"""Cohorts: ``medinr batch`` runs one command per case of a manifest on Dask, from a laptop to a cluster.

Modules: :mod:`~medinr.batch.manifest` (reading a manifest strictly), :mod:`~medinr.batch.worker` (one case in a
worker: the single command's library call :func:`medinr.apps.execute`, its threads and memory budget),
:mod:`~medinr.batch.runner` (resume, submit, retry, record), :mod:`~medinr.batch.cluster` (local, an address,
SLURM/PBS), :mod:`~medinr.batch.status` (``status.jsonl``, ``summary.csv``, the settings hash),
:mod:`~medinr.batch.folder` (the batch folder and its lock), :mod:`~medinr.batch.preflight` (``--dry-run``'s
input checks) and :mod:`~medinr.batch.progress` (lines and a progress bar). Turning a row's arguments into a
request is the command line's business (``pipelines/batch_cases.py``: each command's own parser). Nothing here
imports torch or Dask until a case runs or a cluster is asked for.
"""
