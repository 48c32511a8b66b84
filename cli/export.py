"""``sdbctl export``: a run's events to one file (JSONL or Parquet), or its sessions as chat conversations."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sdbctl.cli._options import StoreOption


class ExportFormat(enum.StrEnum):
    """What --format accepts: an enum, so that --help lists the choices and a typo is refused."""

    jsonl = "jsonl"
    parquet = "parquet"
    chat = "chat"


def export(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id to export.")],
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", help="jsonl (events), parquet (events) or chat (one conversation per session)."),
    ] = ExportFormat.jsonl,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output file (its extension must fit --format); JSONL and chat go to stdout when omitted or -.",
        ),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Export every event of a run to one JSONL or Parquet file (Parquet keeps the event schema), or
    every session as one OpenAI chat-format conversation per JSON line (--format chat).

    A chat line is {"id", "messages"} (+ "outcome", "model", "tools", and "repeat": K for a session
    ID#rK): the session's last llm request, its answer, then the tool results recorded after it; a
    failed tool result carries "is_error": true. The outcome is an imported one, else 1.0 or 0.0: the
    terminal state, a success or not (the project's [outcome] success, else the workload's code).
    `sdbctl import chat` reads it back with no map. An error leaves no file behind.

    Example: sdbctl export RUN --format parquet --out run.parquet  ·  sdbctl export RUN --format chat -o chat.jsonl
    """
    from sdbctl.cli._render import note
    from sdbctl.sdb.errors import UsageError
    from sdbctl.sdb.store import Store

    if out is not None and str(out) == "-":  # the usual spelling of standard output
        out = None
    if out is not None and out.suffix.lower() in (".parquet", ".jsonl", ".json", ".ndjson"):
        is_parquet = out.suffix.lower() == ".parquet"
        if is_parquet != (fmt == ExportFormat.parquet):
            raise UsageError(f"--out {out}: a {out.suffix} file for --format {fmt.value}; name the format that fits")
    if out is None and fmt == ExportFormat.parquet:
        raise UsageError("--format parquet needs --out FILE (Parquet is not written to a terminal or a pipe)")
    target: Any = out if out is not None else sys.stdout.buffer
    if fmt == ExportFormat.chat:
        import sdbctl.fixtures.workloads
        from sdbctl.recorders.importers import write_chat

        sdbctl.fixtures.workloads.register_all()  # the workloads a run may name: their success states
        report = write_chat(Store.open(store), run_id, target)
        skipped = f"; {len(report.skipped)} sessions with no chat call skipped" if report.skipped else ""
        partial = (
            f"; {report.left_out_calls} model calls of {len(report.partial)} sessions left out: a session's "
            "line holds only the last call (its history, answer and tool results), and they are not in it"
            if report.partial
            else ""
        )
        if out is not None or skipped or partial:
            note(
                f"wrote {report.conversations} conversations"
                + (f" to {out}" if out is not None else "")
                + skipped
                + partial
            )
        return
    from sdbctl.sdb.store import export_run

    n = export_run(Store.open(store), run_id, "parquet" if fmt == ExportFormat.parquet else "jsonl", target)
    if out is not None:
        note(f"wrote {n} events to {out}")
