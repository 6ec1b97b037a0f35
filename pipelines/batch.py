"""``medinr batch``: run one command per case of a manifest on Dask, each case isolated, recorded, resumable.

Thin: the manifest is read by :mod:`medinr.batch.manifest`, each row becomes its command's request through that
command's own parser (:mod:`pipelines.batch_cases`), and :mod:`medinr.batch.runner` runs them.

Exit status: 0 every case succeeded (or, with ``--dry-run``, every row is valid); 2 the batch itself was refused
(a bad manifest, option or output folder: every problem listed, one ``medinr: error:`` line each, nothing
written); 3 the batch ran and some cases failed (each with its error line, in ``DIR/status.jsonl`` too; the
other cases' outputs are published).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medinr.textsafe import terminal_safe
from pipelines.common import number

HELP = ("run fit, reconstruct, register or render on every case of a manifest (CSV or JSON lines) with Dask: "
        "one folder per case, status.jsonl, summary.csv, --resume")
FAILED_CASES = 3
#: Batch options (they may come before or after MANIFEST); everything else after MANIFEST is a shared case option.
OPTIONS = ("out", "scheduler", "threads_per_case", "retries", "resume", "force", "dry_run", "quiet")


def _add_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The batch's options, on the subcommand (for --help and options before MANIFEST) and on the parser of the
    arguments after MANIFEST (``defaults`` False: only what was given)."""
    d = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--out", default=d(None), metavar="DIR",
                        help="batch folder: DIR/<case_id>/ per case, DIR/status.jsonl, DIR/summary.csv (required)")
    parser.add_argument("--scheduler", default=d("local"), metavar="SPEC",
                        help="local (default: one worker per T cores), local:N, tcp://HOST:PORT, "
                             "slurm:jobs=J,cpus=C,memory=M,queue=Q,walltime=T or pbs:... (needs dask-jobqueue)")
    parser.add_argument("--threads-per-case", type=number(1, 256, integer=True), default=d(1), metavar="T",
                        help="torch threads of each case (default 1)")
    parser.add_argument("--retries", type=number(0, 100, integer=True), default=d(2), metavar="R",
                        help="times a case whose worker died is tried again (default 2)")
    parser.add_argument("--resume", action="store_true", default=d(False),
                        help="skip cases whose outputs are complete and whose settings are unchanged")
    parser.add_argument("--force", action="store_true", default=d(False),
                        help="replace the outputs of cases run before")
    parser.add_argument("--dry-run", action="store_true", default=d(False),
                        help="check every row (options, inputs read, output folders) and run nothing")
    parser.add_argument("--quiet", action="store_true", default=d(False), help="print failures only")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", metavar="MANIFEST",
                        help="CSV with columns case_id,command,args (or JSON lines with those keys); args is the "
                             "rest of the case's command line without --out, paths relative to the manifest")
    _add_options(parser, defaults=True)
    parser.add_argument("shared", nargs=argparse.REMAINDER, metavar="CASE OPTIONS",
                        help="options shared by every case (e.g. --steps 500 --device cpu), before each case's own")
    parser.set_defaults(_batch_parser=parser)


def _options(args: argparse.Namespace) -> tuple[argparse.Namespace, list[str]]:
    """Batch options given before or after MANIFEST, and the shared case options."""
    from pipelines.cli import _Parser

    late = _Parser(prog="medinr batch", add_help=False, allow_abbrev=False)
    _add_options(late, defaults=False)
    given, shared = late.parse_known_args(args.shared)
    merged = argparse.Namespace(**{name: getattr(given, name, getattr(args, name)) for name in OPTIONS})
    for name in ("memory_limit", "allow_detached_data"):  # the console script's options: for every case too
        if name in vars(args):
            flag = "--" + name.replace("_", "-")
            shared = ([flag] if name == "allow_detached_data" else [flag, _size(args.memory_limit)]) + shared
    if not merged.out:
        late.error("the following arguments are required: --out")
    return merged, shared


def _size(value: int | None) -> str:
    return "none" if value is None else str(value)


def _problems(lines: list[str]) -> int:
    for line in lines:
        text = line if line.startswith("medinr: ") else f"medinr: error: {line}"
        print(terminal_safe(text, limit=1200), file=sys.stderr)
    return 2


def dry_run(cases: list, out: Path, resume: bool, force: bool) -> int:
    """Check every case without running anything; list all problems at once."""
    from medinr.batch.preflight import check_inputs
    from medinr.batch.runner import plan
    from medinr.outputs import OutputDir
    from pipelines.batch_cases import error_line

    to_run, skipped = plan(cases, out, resume, force)
    problems = []
    for case in to_run:
        line = case.error
        if case.task is not None:
            try:
                OutputDir(case.task.out, list(case.expected), force=case.task.force)  # checks, writes nothing
                check_inputs(case.task.request)
            except Exception as exc:  # the case's own failure, as it would be reported
                line = error_line(exc)
        if line:
            problems.append(f"case {terminal_safe(case.case_id)}: {line.removeprefix('medinr: error: ')}")
    if problems:
        _problems(problems)
        print(f"medinr: error: {len(problems)} of {len(cases)} cases would fail; nothing was run", file=sys.stderr)
        return 2
    note = f", {len(skipped)} complete (skipped by --resume)" if skipped else ""
    print(f"{len(cases)} cases checked: {len(to_run)} would run{note}; nothing was run")
    return 0


def run(args: argparse.Namespace) -> int:
    from medinr.batch.cluster import connect, parse_scheduler, require_distributed
    from medinr.batch.folder import check_batch_folder
    from medinr.batch.manifest import ManifestError, read_manifest
    from medinr.batch.progress import Progress
    from medinr.batch.runner import run_batch
    from pipelines.batch_cases import build_cases

    try:
        options, shared = _options(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    spec = parse_scheduler(options.scheduler)
    try:
        rows = read_manifest(args.manifest)
    except ManifestError as exc:
        return _problems(exc.problems)
    out = check_batch_folder(options.out, options.resume, options.force)
    cases = build_cases(rows, Path(args.manifest), out, shared, options.threads_per_case)
    if options.dry_run:
        return dry_run(cases, out, options.resume, options.force)
    require_distributed()  # before anything is written
    outcome = run_batch(cases, out, lambda: connect(spec, options.threads_per_case), retries=options.retries,
                        resume=options.resume, force=options.force, progress=Progress(options.quiet))
    where = terminal_safe(os.path.relpath(out) if not os.path.isabs(options.out) else out)
    if not options.quiet:
        print(f"{len(cases)} cases: {len(outcome.ok)} ok, {len(outcome.failed)} failed, {len(outcome.skipped)} "
              f"skipped in {outcome.seconds:.1f} s; records in {where}/status.jsonl, metrics in {where}/summary.csv")
    if outcome.failed:
        names = ", ".join(terminal_safe(c, limit=40) for c in outcome.failed[:5])
        more = f" and {len(outcome.failed) - 5} more" if len(outcome.failed) > 5 else ""
        print(f"medinr: error: {len(outcome.failed)} of {len(cases)} cases failed ({names}{more}); their error lines "
              f"are in {where}/status.jsonl", file=sys.stderr)
        return FAILED_CASES
    return 0
