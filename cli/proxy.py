"""``sdbctl proxy``: the recording proxy on its own, for agents sdbctl does not start."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sdbctl.cli._options import JsonOption, StoreOption
from sdbctl.sdb.results import as_json


def proxy(
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            help="Where the OpenAI API is forwarded (default: $OPENAI_BASE_URL, else https://api.openai.com/v1).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: a free one, printed).")] = 0,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Id of the new run (default: generated).")] = None,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Serve the recording proxy on 127.0.0.1 until Ctrl-C or SIGTERM, then close the run.

    Prints the base URL to give the agent (OPENAI_BASE_URL) as the first line on stdout. Every
    /chat/completions call through it is recorded (streamed or not); everything else is passed on
    untouched. Send an X-SDB-Session header to name a call's session. For a command that sdbctl can
    start itself, use sdbctl record -- CMD instead.

    Example: sdbctl proxy --port 8765 --run-id staging-agent  (then OPENAI_BASE_URL=http://127.0.0.1:8765/v1)
    """
    from sdbctl.cli._render import err_console, print_json
    from sdbctl.recorders.command import serve_proxy

    def started(server: Any, rid: str) -> None:
        typer.echo(server.url)
        if not json:
            err_console.print(f"recording {rid} -> {server.upstream}; Ctrl-C to stop", highlight=False)

    summary = serve_proxy(
        store=str(store) if store else None, upstream=upstream, run_id=run_id, port=port, on_start=started
    )
    if json:
        print_json(as_json(summary))
        return
    err_console.print(
        f"{summary.llm_calls} llm calls, {summary.actions} actions, {summary.effects} effects in "
        f"{summary.sessions} sessions ({summary.errors} upstream errors)",
        highlight=False,
    )
    typer.echo(summary.run_id)
