"""``sdbctl record``: run a workload's agent against a model and record every episode."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.options import JsonOption, StoreOption

WORKLOADS_HELP = "contract-renewal, support-triage, research"


def record(
    agent: Annotated[
        str,
        typer.Argument(
            metavar="AGENT",
            help=f"A workload ({WORKLOADS_HELP}), MODULE:ATTR, or PATH.py:ATTR naming a workload object.",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model spec; default: the workload's baseline simulator. Simulators (not real models): "
            "sim:renewal@v1..v3, sim:triage@v1..v3, sim:research@v1..v3, each with ?noise=X.",
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
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Record a workload's episodes into a new run, with a progress bar and a summary.

    The bundled models are SIMULATORS (sim:...): seeded functions of the request with documented drift,
    so that everything runs offline. The run manifest names the agent and its arguments.

    Example: sdbctl record contract-renewal --model sim:renewal@v1 --sessions 100 --spine p5
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import fixtures.workloads
    from cli.render import err_console, print_json, print_table
    from recorders.workload import record_workload
    from sdb.agents import load_agent
    from sdb.errors import UsageError
    from sdb.providers import resolve

    fixtures.workloads.register_all()
    if sessions is not None and sessions < 1:
        raise UsageError("--sessions must be 1 or more")
    workload = load_agent(agent)
    resolve(model or workload.baseline_model)  # an unknown spec fails here, before anything is written
    versions = {}
    for ref in prompt or []:
        name, _, version = ref.partition("@")
        workload.prompts.check(ref)
        versions[name] = version
    options = workload.options({"spine": spine} if spine is not None else {})  # refuse bad options up front
    with Progress(
        TextColumn("[bold]recording[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=json,
    ) as progress:
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
        print_json(summary.as_dict())
        return
    typer.echo(summary.run_id)
    err_console.print(
        f"{summary.sessions} sessions, {summary.events} events in {summary.seconds:.2f} s", highlight=False
    )
    print_table(["terminal state", "sessions"], [[state, n] for state, n in sorted(summary.terminal.items())])
