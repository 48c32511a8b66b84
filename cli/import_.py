"""``sdbctl import``: runs from logs other tools wrote."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sdbctl.cli._options import JsonOption, StoreOption
from sdbctl.sdb.results import as_json

if TYPE_CHECKING:
    from sdbctl.recorders.importers import ImportSummary

app = typer.Typer(
    help="Import runs from logs and traces other tools wrote.\n\n"
    "Examples: sdbctl import otel traces.jsonl  ·  sdbctl import jsonl agent.log --map map.toml  ·  "
    "sdbctl import chat results.json --map map.toml",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("jsonl")
def import_jsonl(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A JSON-lines log, one event per line.")],
    map_file: Annotated[Path, typer.Option("--map", help="The TOML map: JSON field of each column, [kinds].")],
    run_id: Annotated[str | None, typer.Option("--run-id", help="Id of the new run (default: generated).")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Import the good lines, count the bad ones.")] = False,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Import a JSON-lines log as a run, all or nothing: a bad line is FILE:LINE and exit 2.

    Example: sdbctl import jsonl agent.log --map map.toml --run-id prod-2026-11
    """
    from sdbctl.recorders.importers import import_jsonl as run_import

    with _all_or_nothing(store):
        summary = run_import(str(store) if store else None, file, map_file, run_id=run_id, skip_bad=skip_bad)
    _report(summary, json, "bad lines")


@app.command("otel")
def import_otel(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            help="OTLP/JSON trace files: the Collector file exporter's lines, or single export objects.",
        ),
    ],
    run_id: Annotated[str | None, typer.Option("--run-id", help="Id of the new run (default: generated).")] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Import the good lines and spans, count the bad ones.")
    ] = False,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Import OpenTelemetry GenAI traces as a run: one session per trace, all or nothing.

    Inference spans (gen_ai.operation.name chat, text_completion, generate_content, or the older
    gen_ai.prompt.N / gen_ai.completion.N attributes and span events) become llm events and the
    actions in their answers; execute_tool spans and tool results become effects; invoke_agent spans
    become inputs and name the actor. Spans recorded without content import with the content marked
    missing (replay skips them). A bad line or span is FILE:LINE and exit 2. Payloads are redacted
    by [tool.sdbctl.redact].

    Example: sdbctl import otel otel-traces.jsonl --run-id prod-2026-11 && sdbctl replay prod-2026-11
    """
    from sdbctl.recorders.importers import import_otel as run_import

    with _all_or_nothing(store):
        summary = run_import(str(store) if store else None, files, run_id=run_id, skip_bad=skip_bad)
    _report(summary, json, "bad lines or spans")


@app.command("chat")
def import_chat(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE...",
            help="Conversations: a JSON array of objects, JSON lines of objects, or one (pretty-printed) object.",
        ),
    ],
    map_file: Annotated[
        Path | None,
        typer.Option(
            "--map",
            help="TOML map: dotted paths of conversations, messages, session, repeat, outcome, model, tools, "
            "tool_error; effect_error.",
        ),
    ] = None,
    tools_file: Annotated[
        Path | None,
        typer.Option(
            "--tools",
            metavar="FILE",
            help="JSON tool definitions (an OpenAI tools list, Anthropic's, or an object with one under "
            '"tools") put in every imported request, instead of any the log holds.',
        ),
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Id of the new run (default: generated).")] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Import the good conversations, count the bad ones.")
    ] = False,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Import OpenAI chat-format conversations (messages lists) as one run, all or nothing.

    Each assistant message is an llm event (step call-NNN) and its actions: one per tool call, or
    `message` for a text answer (JSON in a text answer is speech, unless the project's
    [tool.sdbctl.boundary] says actions = "json_text"); each
    tool message is the effect of its call (by tool_call_id, or id; a reused call id answers the
    earliest unanswered call with it). Tool calls are read in the OpenAI shape, flat ({"id", "name",
    "arguments"}, arguments an object or a JSON string), and as Anthropic tool_use / tool_result
    blocks. Several
    FILEs make one run. A bad item is FILE:LINE (JSON lines), FILE[i] (an array element) or FILE, exit 2,
    no run written. Payloads are redacted by [tool.sdbctl.redact].

    The map (optional; every key too) names dotted paths in each conversation object:

    \b
        conversations = "simulations"  # the list of conversations in each file's object (default: none)
        messages = "traj"        # the messages list        (default "messages")
        session = "task_id"      # the session id           (default "id"; none: conv-N, N its position)
        repeat = "trial"         # trial number: ID, ID#r1, ID#r2 ... by rank (default "repeat")
        outcome = "reward"       # a number in [0, 1] or a boolean: a state event `outcome` (default "outcome")
        model = "info.model"     # the model: llm events are openai:MODEL (default "model"; else in the file)
        tools = "info.tools"     # tool definitions for every request (default "tools"; else in the file)
        effect_error = "^Error"  # a regular expression: a tool result whose text matches it failed
        tool_error = "error"     # a tool result whose value there is truthy failed
        actions = "json_text"    # must match the project's [tool.sdbctl.boundary] actions, if given

    A key set to "" is not read. A path the map names that matches nothing in any conversation is an
    error; one line on stderr says which default paths were found. The defaults are what
    `sdbctl export RUN --format chat` writes. Two
    conversations that would be one session (the same id and repeat; `x#r1` beside `x`) are an error.

    \b
    Example: sdbctl import chat trial-a.jsonl trial-b.jsonl --map map.toml --run-id airline
    Example: sdbctl import chat results.json --map tau2-map.toml --tools tools.json
    """
    from sdbctl.cli._render import note
    from sdbctl.recorders.importers import import_chat as run_import

    with _all_or_nothing(store):
        summary = run_import(
            str(store) if store else None,
            files,
            map_file,
            run_id=run_id,
            skip_bad=skip_bad,
            note=note,
            tools_path=tools_file,
        )
    _report(summary, json, "bad conversations")


@contextmanager
def _all_or_nothing(store: str | None) -> Iterator[None]:
    """Ctrl-C during an import: one line and status 130. An import is all or nothing: whenever the
    signal lands (reading, or writing the run, which is then removed), nothing was imported."""
    from sdbctl.cli._interrupted import say_when_interrupted
    from sdbctl.sdb.errors import Interrupted

    with say_when_interrupted(store):
        try:
            yield
        except KeyboardInterrupt:
            raise Interrupted("nothing was imported (an import is all or nothing)", "run the command again") from None


def _report(summary: ImportSummary, json: bool, what: str) -> None:
    from sdbctl.cli._render import err_console, print_json

    if json:
        print_json(as_json(summary))
        return
    typer.echo(summary.run_id)
    err_console.print(
        f"{summary.events} events in {summary.sessions} sessions"
        + (f"; {summary.skipped} {what} skipped" if summary.skipped else ""),
        highlight=False,
    )
