"""Ctrl-C during a command that writes to a store: one line on stderr saying what it left there and the
command that goes on from there, and exit status 130 (as a shell reports a process ended by SIGINT)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from sdbctl.sdb.errors import Interrupted

INTERRUPTED_STATUS = 130  # 128 + SIGINT


def interrupted_line(exc: Interrupted, store: str | None) -> str:
    """The line for ``exc``: what was left, what to do and the whole command, with ``--store`` when the
    user named one (the command must work as printed)."""
    line = f"sdbctl: interrupted: {exc.left}"
    if exc.then:
        line += f"; {exc.then}"
    if exc.command:
        words = ["sdbctl", *exc.command, *(["--store", store] if store else [])]
        line += f": {shlex.join(words)}"
    return line


@contextmanager
def say_when_interrupted(store: str | None) -> Iterator[None]:
    """Around a command's work: an :class:`Interrupted` becomes its one line on stderr and status 130
    (written plainly, never wrapped, so that the command in it pastes whole)."""
    try:
        yield
    except Interrupted as exc:
        sys.stderr.write(interrupted_line(exc, store) + "\n")
        sys.stderr.flush()
        raise typer.Exit(INTERRUPTED_STATUS) from None
