"""Manifest rows -> runnable cases, through each command's own argument parser and request builder.

A case is parsed exactly as ``medinr <command> ARGS --out DIR/<case_id>`` would be (the same parser, the same
checks, the same one-line errors), its relative input paths taken from the manifest's folder, and becomes the
same request (``pipelines.<command>.request``) that the single command hands to :func:`medinr.apps.execute`.
Options shared by every case (given after the batch's own options) go to each command that knows them, before
the case's own arguments (so a case's own value wins); their relative paths are taken from the current folder.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

from medinr.batch.manifest import COMMANDS, Row
from medinr.batch.runner import Case
from medinr.batch.status import settings_hash
from medinr.batch.worker import DEFAULT_MEMORY, CaseTask
from medinr.errors import MedinrError
from medinr.textsafe import terminal_safe

#: Arguments (argparse ``dest``) that name input files, per command: a relative one is taken from the manifest's
#: folder (from the current folder for a shared option).
PATH_ARGS = {
    "fit": ("image",),
    "reconstruct": ("input", "prior", "mask"),
    "register": ("fixed", "moving", "fixed_mask", "fixed_labels", "moving_labels", "fixed_landmarks",
                 "moving_landmarks"),
    "render": ("checkpoint",),
}
#: The file a render case writes in its folder unless its arguments name another (``--out slice.nii.gz``).
RENDER_FILE = "slice.png"
RENDER_SUFFIXES = (".png", ".nii", ".nii.gz")
MODULES = {"fit": "pipelines.fit_image", "reconstruct": "pipelines.reconstruct", "register": "pipelines.register",
           "render": "pipelines.render"}
#: Mask kinds of ``reconstruct --mask`` that are not files.
MASK_KINDS = ("random", "equispaced", "poisson")


class CaseRefused(Exception):
    """A case that cannot run: ``line`` is its one error line, as the single command would print it."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


def error_line(exc: BaseException) -> str:
    """The one line ``medinr <command>`` prints for ``exc`` (see ``pipelines.cli``)."""
    from pipelines.cli import OUT_OF_MEMORY, _machine_error, _one_line

    if isinstance(exc, CaseRefused):
        return exc.line
    if isinstance(exc, MedinrError):
        return f"medinr: error: {_one_line(exc)}"
    if isinstance(exc, MemoryError):
        return f"medinr: error: {OUT_OF_MEMORY}"
    known = _machine_error(exc)  # type: ignore[arg-type]
    if known is not None:
        return f"medinr: error: {_one_line(known)}"
    return (f"medinr: internal error: {type(exc).__name__}: {_one_line(exc)} (run the case alone with --debug for "
            "details)")


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """The parsers of ``medinr fit``, ``reconstruct``, ``register`` and ``render``, as the console script has them
    (``--memory-limit`` and ``--allow-detached-data`` included)."""
    from pipelines.cli import build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: action.choices[name] for name in COMMANDS}


def _is_option(token: str) -> bool:
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)
        return False  # a negative number
    except ValueError:
        return True


def shared_groups(tokens: Sequence[str], parsers: dict[str, argparse.ArgumentParser],
                  commands: set[str]) -> list[tuple[str, list[str]]]:
    """Split the shared options into (option, its tokens); one line for a token that is not an option of any
    command in the manifest."""
    groups: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name = token.split("=", 1)[0]
        if not _is_option(token):
            raise MedinrError(f"'{terminal_safe(token, limit=60)}' after the batch's options is not an option; give "
                              "each case's inputs in the manifest")
        actions = [parsers[c]._option_string_actions[name] for c in sorted(commands)
                   if name in parsers[c]._option_string_actions]
        if not actions or name in ("--out", "--help", "-h"):
            raise MedinrError(f"{terminal_safe(name, limit=60)} is not an option that every case can share "
                              f"(commands in the manifest: {', '.join(sorted(commands))})")
        nargs = actions[0].nargs
        end = i + 1
        if "=" not in token and nargs != 0:
            if nargs is None:
                end = min(i + 2, len(tokens))
            else:
                while end < len(tokens) and not _is_option(tokens[end]):
                    end += 1
        groups.append((name, list(tokens[i:end])))
        i = end
    return groups


def _is_mask_file(value: str) -> bool:
    return value not in MASK_KINDS and (os.path.sep in value or bool(Path(value).suffix))


def _absolute(dest: str, value: str, base: Path) -> str:
    if dest == "mask" and not _is_mask_file(value):
        return value
    return value if os.path.isabs(value) else os.path.normpath(base / value)


def shared_tokens(command: str, groups: list[tuple[str, list[str]]], parser: argparse.ArgumentParser) -> list[str]:
    """The shared options ``command`` knows, their input paths made absolute from the current folder."""
    out: list[str] = []
    cwd = Path.cwd()
    for name, tokens in groups:
        action = parser._option_string_actions.get(name)
        if action is None:
            continue
        if action.dest in PATH_ARGS[command]:
            if "=" in tokens[0]:
                tokens = [f"{name}={_absolute(action.dest, tokens[0].split('=', 1)[1], cwd)}"]
            else:
                tokens = [tokens[0], *(_absolute(action.dest, v, cwd) for v in tokens[1:])]
        out += tokens
    return out


def _render_file(args: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """A render case's file name (its own ``--out NAME``, a plain file name, or :data:`RENDER_FILE`) and the
    arguments without it."""
    name, rest, i = RENDER_FILE, [], 0
    while i < len(args):
        token = args[i]
        if token == "--out" or token.startswith("--out="):
            name = token.split("=", 1)[1] if "=" in token else (args[i + 1] if i + 1 < len(args) else "")
            i += 1 if "=" in token else 2
            continue
        rest.append(token)
        i += 1
    if not name or "/" in name or name.startswith(".") or not name.lower().endswith(RENDER_SUFFIXES):
        raise CaseRefused(f"medinr: error: a render case's --out names a file in its folder, ending in .png, .nii "
                          f"or .nii.gz, got '{terminal_safe(name, limit=60)}'")
    return name, tuple(rest)


def _check_own_options(command: str, args: tuple[str, ...]) -> None:
    for token in args:
        name = token.split("=", 1)[0]
        if name == "--out":
            raise CaseRefused("medinr: error: a case gives no --out: the batch writes it into DIR/<case_id>/")
        if name == "--force":
            raise CaseRefused("medinr: error: a case gives no --force: the batch's --force (or --resume) decides")
        if name in ("--help", "-h"):
            raise CaseRefused(f"medinr: error: --help is not an argument of a case (see 'medinr {command} --help')")


def parse_case(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, its one error line (as the console script prints it) raised as
    :class:`CaseRefused`."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return parser.parse_args(argv)
        except SystemExit:
            lines = [line for line in err.getvalue().splitlines() if line.strip()]
            raise CaseRefused(lines[-1] if lines else "medinr: error: the arguments were refused") from None


def case_request(row: Row, parser: argparse.ArgumentParser, shared: list[str], base: Path, out: Path
                 ) -> tuple[object, argparse.Namespace, str | None]:
    """The request of one row, its parsed arguments and (render) its file name; :class:`CaseRefused` if the row's
    arguments or options are refused."""
    file_name, args = None, row.args
    if row.command == "render":
        file_name, args = _render_file(args)
    _check_own_options(row.command, args)
    out_arg = str(out / file_name) if file_name else str(out)
    quiet = [] if row.command == "render" else ["--quiet"]
    ns = parse_case(parser, [*shared, *args, "--out", out_arg, *quiet])
    for dest in PATH_ARGS[row.command]:
        value = getattr(ns, dest, None)
        if isinstance(value, str) and value:
            setattr(ns, dest, _absolute(dest, value, base))
    module = importlib.import_module(MODULES[row.command])
    try:
        if row.command == "render":
            request = module.request(ns, file_name.lower().endswith(".png"))  # type: ignore[union-attr]
        else:
            request = module.request(ns)
    except MedinrError as exc:
        raise CaseRefused(error_line(exc)) from None
    return request, ns, file_name


def build_case(index: int, row: Row, parsers: dict[str, argparse.ArgumentParser],
               groups: list[tuple[str, list[str]]], base: Path, out: Path, threads: int) -> Case:
    """One manifest row as a :class:`~medinr.batch.runner.Case` (a failed one carries its error line)."""
    parser = parsers[row.command]
    folder = out / row.case_id
    try:
        request, ns, file_name = case_request(row, parser, shared_tokens(row.command, groups, parser), base, folder)
    except CaseRefused as refused:
        return Case(index, row.case_id, row.command, None, refused.line)
    expected = (file_name,) if file_name else tuple(request.outputs())  # type: ignore[attr-defined]
    digest = settings_hash(row.command, request.to_dict(), {"file": file_name})  # type: ignore[attr-defined]
    task = CaseTask(row.case_id, row.command, request, str(folder), file_name, False, threads,
                    getattr(ns, "memory_limit", DEFAULT_MEMORY), bool(getattr(ns, "allow_detached_data", False)),
                    digest, 1, error_line)
    return Case(index, row.case_id, row.command, task, None, expected, digest)


def build_cases(rows: list[Row], manifest: Path, out: Path, shared: Sequence[str], threads: int) -> list[Case]:
    """Every row of the manifest as a case; one line (MedinrError) if the shared options are refused."""
    parsers = command_parsers()
    groups = shared_groups(shared, parsers, {r.command for r in rows})
    base = Path(os.path.abspath(manifest)).parent
    return [build_case(i, row, parsers, groups, base, out, threads) for i, row in enumerate(rows)]
