"""How a command runs: its event loop, its store, and what an error turns into.

Every command's work is a coroutine given to ``run``, which runs it with
``asyncio.run`` and turns what it raises into one line on stderr and an exit code:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     ok (also: ``tail -f`` ended by Ctrl-C, output closed early as by ``| head``)
1     unexpected error (set ``TIDINGS_DEBUG=1`` to see its traceback)
2     bad usage or invalid input: unknown option, bad JSON, ``InvalidInput``,
      a bad store URL (``ConfigurationError``); nothing was written
3     conflict: ``WrongExpectedVersion`` or ``DuplicateEventId``; nothing was written
4     not found: ``NotFound``, or a SQLite file that does not exist for a read
5     store unavailable: ``StoreUnavailable`` (or ``NotifierUnavailable``)
6     access denied by a remote store (``AccessDenied``)
7     a backup or restore refused (``BackupError``): the backup file exists, a backup
      file that is incomplete, damaged or newer, a non-empty target; nothing written
130   interrupted by Ctrl-C (other than ``tail -f``)
====  ==========================================================================
"""

from __future__ import annotations

import asyncio
import enum
import os
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, NoReturn
from urllib.parse import urlsplit

import typer

from tidings.errors import (
    AccessDenied,
    BackupError,
    ConfigurationError,
    DuplicateEventId,
    InvalidInput,
    NotFound,
    NotifierUnavailable,
    StoreUnavailable,
    WrongExpectedVersion,
)
from tidings.store import StoreFront
from tidings.wiring import connect

DEFAULT_STORE = "sqlite:///./tidings.db"
"""The store a command opens when neither ``--store`` nor ``TIDINGS_STORE`` names one."""


class ExitCode(enum.IntEnum):
    """The exit codes of the ``tidings`` command (the module docstring explains each)."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    CONFLICT = 3
    NOT_FOUND = 4
    UNAVAILABLE = 5
    ACCESS_DENIED = 6
    BACKUP_REFUSED = 7
    INTERRUPTED = 130


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code that stands for ``exc``."""
    if isinstance(exc, NotFound):  # before InvalidInput, which it derives from
        return ExitCode.NOT_FOUND
    if isinstance(exc, InvalidInput | ConfigurationError):
        return ExitCode.USAGE
    if isinstance(exc, WrongExpectedVersion | DuplicateEventId):
        return ExitCode.CONFLICT
    if isinstance(exc, StoreUnavailable | NotifierUnavailable):
        return ExitCode.UNAVAILABLE
    if isinstance(exc, AccessDenied):
        return ExitCode.ACCESS_DENIED
    if isinstance(exc, BackupError):
        return ExitCode.BACKUP_REFUSED
    return ExitCode.UNEXPECTED


def one_line(text: str) -> str:
    """``text`` with its lines joined, for a one-line message."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def fail(code: ExitCode, message: str) -> NoReturn:
    """Print ``error: message`` on stderr and end the command with ``code``."""
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    raise typer.Exit(int(code))


def run(work: Callable[[], Coroutine[Any, Any, None]], *, interrupt_ok: bool = False) -> None:
    """Run a command's coroutine; map what it raises to a message and an exit code.

    Ctrl-C ends the command with 130, or quietly with 0 when ``interrupt_ok`` (a
    command that runs until stopped, like ``tail -f``).
    """
    try:
        asyncio.run(work())
    except KeyboardInterrupt:
        if interrupt_ok:
            raise typer.Exit(int(ExitCode.OK)) from None
        fail(ExitCode.INTERRUPTED, "interrupted")
    except BrokenPipeError:
        _quiet_stdout()
        raise typer.Exit(int(ExitCode.OK)) from None
    except Exception as exc:
        code = exit_code(exc)
        if os.environ.get("TIDINGS_DEBUG"):
            traceback.print_exc()
        message = str(exc) or type(exc).__name__
        if code is ExitCode.UNEXPECTED:
            message = f"unexpected {type(exc).__name__}: {message} (TIDINGS_DEBUG=1 shows more)"
        fail(code, message)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def require_existing(url: str) -> None:
    """Raise ``NotFound`` when ``url`` names a SQLite file that does not exist.

    Opening a SQLite store creates its file: commands that only read check first, so a
    mistyped path is reported instead of leaving an empty database behind.
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc not in ("", "localhost"):
        return  # other stores, and URLs SQLite refuses itself (with a better message)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if path and path != ":memory:" and not os.path.exists(path):
        raise NotFound(f"no SQLite store at {path} (an append creates it)")


@asynccontextmanager
async def opened(url: str, *, create: bool = False) -> AsyncIterator[StoreFront]:
    """The store at ``url`` (``memory://``, ``sqlite://``, ``postgresql://``, or the
    ``http(s)://`` URL of a tidings server, all through ``tidings.connect``), closed on exit.

    Without ``create``, a SQLite file that does not exist is ``NotFound``.
    """
    if not create:
        require_existing(url)
    store = await connect(url)
    try:
        yield store
    finally:
        await store.close()
