"""The ``medinr`` console script: one subcommand per pipeline, one clear error line for bad input.

Exit status: 0 success; 2 bad input or arguments (one ``medinr: error:`` line); 1 a bug (one
``medinr: internal error:`` line, ``--debug`` for the traceback); 130 interrupted (Ctrl-C); 143 terminated
(SIGTERM) and 129 hung up (SIGHUP), staged outputs removed; 141 the reader of stdout went away
(``medinr info | head``), quietly.

Warnings raised while a command runs are held back: printed (one ``medinr: warning:`` line each) after a
command that succeeds, dropped when it fails, so that an error is always one line alone. Everything printed
on stdout passes through :class:`medinr.textsafe.TerminalSafeWriter`: no path or string from a file reaches
the terminal as a control sequence.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence

from medinr import __version__
from medinr.errors import MedinrError

# subcommand -> module in ``pipelines`` exposing HELP, add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "fit": "pipelines.fit_image",
    "reconstruct": "pipelines.reconstruct",
    "register": "pipelines.register",
    "render": "pipelines.render",
    "info": "pipelines.info",
    "batch": "pipelines.batch",
}


RERAISE_S = 2.0  # seconds between raises of a SIGTERM that has not ended the run yet
IMPORT_RETRY_S = 0.05  # a SIGTERM that arrives during an import is raised once the import is done


#: Signals that end a run like SIGTERM does (outputs unwound), with their exit status and last line.
ENDING_SIGNALS = {signal.SIGTERM: (143, "medinr: terminated"), signal.SIGHUP: (129, "medinr: hung up (SIGHUP)")}


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP, so that ``with OutputDir(...)`` blocks unwind and clean up."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


def _one_line(text: object) -> str:
    from medinr.textsafe import terminal_safe

    return terminal_safe(" ".join(str(text).split()), limit=1000)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the whole usage block
        self.exit(2, f"medinr: error: {_one_line(message)} (see '{self.prog} --help')\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> object:
        # argparse drops a value '--' ("--steps=--") and stores [] without calling the option's type
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected one argument")
        return super()._get_values(action, arg_strings)


def build_parser() -> argparse.ArgumentParser:
    from pipelines.common import memory_size

    parser = _Parser(prog="medinr", description="Implicit neural representations for medical images.")
    parser.add_argument("--version", action="version", version=f"medinr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a pipeline not shipped in this build
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.add_argument(
            "--memory-limit", type=memory_size, default=argparse.SUPPRESS, metavar="SIZE",
            help="memory this run may plan to use, e.g. 4G or 'none' (default: 80%% of the available memory, "
            "or $MEDINR_MEMORY_LIMIT); work estimated above it is refused before it starts",
        )
        p.add_argument(
            "--allow-detached-data", action="store_true", default=argparse.SUPPRESS,
            help="read an image whose text header (MetaImage .mhd, NRRD .nhdr) keeps its voxels in a separate "
            "file beside it; without it such headers are refused, and a data file elsewhere always is",
        )
        p.set_defaults(_run=module.run)
    return parser


def _print_warnings(held: list[str]) -> None:
    for message in dict.fromkeys(held):  # once each, in order
        print(f"medinr: warning: {_one_line(message)}", file=sys.stderr)


@contextlib.contextmanager
def _process_handlers(held: list[str]) -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated`; warnings are appended to ``held``; stdout is terminal-safe
    (all restored after).

    An exception raised by a signal handler is dropped when it lands in a finaliser or an import lock's
    callback ("Exception ignored in ..."), and the run then went on to the end; so the handler also arms a
    repeating alarm that raises it again every RERAISE_S seconds until this context is left. One that arrives
    while a module is being imported is raised when the import is over (an import cut short leaves a
    half-initialised module behind: torch then failed on ``sympy.printing``, an internal error).
    """
    from medinr.textsafe import TerminalSafeWriter

    first: list[int] = []

    def terminate(signum: int, frame: object) -> None:
        first.append(signum)
        if _importing(frame):  # an exception inside an import leaves a half-imported module (torch's sympy)
            signal.setitimer(signal.ITIMER_REAL, IMPORT_RETRY_S, RERAISE_S)
            return
        signal.setitimer(signal.ITIMER_REAL, RERAISE_S, RERAISE_S)
        raise Terminated(first[0] if first[0] in ENDING_SIGNALS else signal.SIGTERM)

    def hold(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        held.append(str(message))

    main_thread = threading.current_thread() is threading.main_thread()
    handled = (*ENDING_SIGNALS, signal.SIGALRM) if main_thread else ()
    previous = {signum: signal.signal(signum, terminate) for signum in handled}
    shown, stdout = warnings.showwarning, sys.stdout
    warnings.showwarning = hold
    sys.stdout = TerminalSafeWriter(stdout)
    try:
        yield
    finally:
        if main_thread:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        warnings.showwarning = shown
        if isinstance(sys.stdout, TerminalSafeWriter):
            sys.stdout = stdout


def _importing(frame: object) -> bool:
    """True if ``frame`` runs inside an import (a frame of importlib's bootstrap on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):  # type: ignore[attr-defined]
            return True
        frame = frame.f_back  # type: ignore[attr-defined]
    return False


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the exit-time flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _run(argv: Sequence[str] | None, debug_env: bool) -> int:
    from medinr.filecheck import detached_data_allowed
    from medinr.resources import memory_budget_set_to
    from medinr.runtime import configure_threads

    try:
        configure_threads()  # before anything loads torch or NumPy's BLAS: thread counts and OpenMP wait policy
    except MedinrError as exc:  # a bad $MEDINR_THREADS
        print(f"medinr: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: bad arguments (its one line is printed), --help, --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    debug = args.debug or debug_env
    budget = memory_budget_set_to(args.memory_limit) if hasattr(args, "memory_limit") else contextlib.nullcontext()
    try:
        with budget, detached_data_allowed(getattr(args, "allow_detached_data", False)):
            code = int(args._run(args) or 0)
        sys.stdout.flush()
        return code
    except MedinrError as exc:
        if debug:
            raise
        print(f"medinr: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            raise
        print(f"medinr: error: {OUT_OF_MEMORY}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if debug:
            raise
        known = _machine_error(exc)
        if known is not None:
            print(f"medinr: error: {_one_line(known)}", file=sys.stderr)
            return 2
        print(f"medinr: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for details)",
              file=sys.stderr)
        return 1


OUT_OF_MEMORY = ("out of memory: use smaller inputs or options (or a lower --memory-limit, so that such work is "
                 "refused before it starts)")
#: How torch and its allocators say that an allocation failed (CPU, CUDA, MPS).
_ALLOCATION_FAILURES = ("DefaultCPUAllocator: not enough memory", "DefaultCPUAllocator: can't allocate memory",
                        "CUDA out of memory", "MPS backend out of memory", "Cannot allocate memory")


def _machine_error(exc: Exception) -> str | None:
    """The one-line message for a failure of the machine rather than of medinr: a failed allocation or a
    failed write (disk full, quota, file-size limit, read-only, permission); None for anything else."""
    from medinr.outputs import public_path, write_failure

    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or any(pattern in text for pattern in _ALLOCATION_FAILURES):
        return OUT_OF_MEMORY
    failure = write_failure(exc)
    if failure is not None:
        reason, filename = failure
        return f"{reason}" + (f": {public_path(filename)}" if filename else "")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``medinr`` command; returns the exit status (2 for arguments argparse refuses, too)."""
    held: list[str] = []
    try:
        with _process_handlers(held):
            code = _run(argv, bool(os.environ.get("MEDINR_DEBUG")))
    except KeyboardInterrupt:
        return _last_words("medinr: interrupted", 130)
    except Terminated as exc:
        return _last_words(*ENDING_SIGNALS[exc.signum][::-1])
    except BrokenPipeError:
        _silence_stdout()
        return 141
    if code == 0:
        _print_warnings(held)
    return code


def _last_words(line: str, code: int) -> int:
    try:  # after SIGHUP the terminal may be gone
        print(line, file=sys.stderr)
    except (OSError, ValueError):
        pass
    return code


def console() -> None:
    """The ``medinr`` console script: :func:`main` with rare full collections, then exit without the interpreter's
    last full collection.

    Everything the command made lives until the process ends, so that collection finds nothing to free, yet it
    walks every object torch and the other libraries created: 0.1-0.25 s of each command (after ``import torch``
    a bare process takes 1.45 s to finish, 1.22 s with its objects frozen). Only here, not in :func:`main`,
    which tests and other Python code call repeatedly in one process.
    """
    # a full collection only every 1000 middle ones (CPython's default: 10): while a command starts, the 10^6
    # objects that importing torch makes set off three, which walk them all (0.12 s of a 4 s registration); young
    # cycles are still collected as before
    threshold0, threshold1, _ = gc.get_threshold()
    gc.set_threshold(threshold0, threshold1, 1000)
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
