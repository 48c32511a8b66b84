"""``sdbctl patterns``: the six runtime patterns and the method that picks among them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdbctl.cli._options import JsonOption
from sdbctl.sdb.results import as_json

app = typer.Typer(
    help="The six runtime patterns (P1-P6) and the five-step selection method.\n\n"
    "Example: sdbctl patterns recommend --runtime long-horizon --specialists 4 --human-approval",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("list")
def list_patterns(json: JsonOption = False) -> None:
    """List the six patterns: tag, name, concern, one line.

    Example: sdbctl patterns list --json | jq -r '.[].tag'
    """
    from sdbctl.cli._render import print_json, print_table
    from sdbctl.patterns.catalog import CATALOG

    if json:
        print_json(as_json(list(CATALOG.values())))
        return
    print_table(
        ["tag", "pattern", "concern", "in one line"], [[p.tag, p.name, p.concern, p.summary] for p in CATALOG.values()]
    )


@app.command("show")
def show_pattern(
    tag: Annotated[str, typer.Argument(metavar="TAG", help="P1 .. P6.")],
    json: JsonOption = False,
) -> None:
    """What a pattern is, when to use it, its failure modes, and what a divergence means for it.

    Example: sdbctl patterns show P5
    """
    from sdbctl.cli._render import console, print_json
    from sdbctl.patterns.catalog import pattern

    info = pattern(tag)
    if json:
        print_json(as_json(info))
        return
    console.print(f"[bold]{info.tag} {info.name}[/]  ({info.concern})  — {info.summary}", highlight=False)
    for label, text in (
        ("When", info.when),
        ("Failure modes", info.failure_modes),
        ("What a divergence means", info.divergence),
        ("Code", info.module),
    ):
        console.print(f"\n[bold]{label}[/]\n{text}", highlight=False)


@app.command("recommend")
def recommend_patterns(
    from_file: Annotated[
        Path | None, typer.Option("--from", help="TOML file with a [workload] table (keys as the flags).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Name of the workload.")] = "workload",
    runtime: Annotated[
        str, typer.Option("--runtime", help="conversational (seconds), autonomous (minutes), long-horizon (days).")
    ] = "autonomous",
    external_events: Annotated[bool, typer.Option("--external-events", help="Facts arrive mid-episode.")] = False,
    audit_log: Annotated[bool, typer.Option("--audit-log", help="History must replay event by event.")] = False,
    concurrent_writers: Annotated[
        bool, typer.Option("--concurrent-writers", help="Several workers update one entity.")
    ] = False,
    deadlines: Annotated[bool, typer.Option("--deadlines", help="Something must happen by a date.")] = False,
    specialists: Annotated[int, typer.Option("--specialists", help="Kinds of expertise or tools.")] = 0,
    fan_out: Annotated[bool, typer.Option("--fan-out", help="Sources asked at once; some may fail.")] = False,
    multi_system_writes: Annotated[
        bool, typer.Option("--multi-system-writes", help="Writes to several systems, undone together.")
    ] = False,
    side_effects: Annotated[
        bool, typer.Option("--side-effects/--no-side-effects", help="The agent acts on the world.")
    ] = True,
    policy: Annotated[bool, typer.Option("--policy", help="A written policy bounds the side effects.")] = False,
    human_approval: Annotated[bool, typer.Option("--human-approval", help="Some decisions are a person's.")] = False,
    json: JsonOption = False,
) -> None:
    """Walk the five-step method and print a six-line architecture decision record.

    Steps: (1) classify the runtime, (2) choose the state spine (P3 or P5), (3) wrap it with
    coordination (P1, P2), (4) bound it with control (P4, P6), (5) sequence the build.

    Example: sdbctl patterns recommend --name renewal --runtime long-horizon --external-events
    --deadlines --specialists 4 --fan-out --multi-system-writes --policy --human-approval
    """
    from sdbctl.cli._render import print_json
    from sdbctl.patterns.recommend import WorkloadProfile, load_profile, recommend

    if from_file is not None:
        profile = load_profile(from_file)
    else:
        profile = WorkloadProfile(
            name=name,
            runtime=runtime,
            external_events=external_events,
            audit_log=audit_log,
            concurrent_writers=concurrent_writers,
            deadlines=deadlines,
            specialists=specialists,
            fan_out=fan_out,
            multi_system_writes=multi_system_writes,
            side_effects=side_effects,
            policy=policy,
            human_approval=human_approval,
        )
    rec = recommend(profile)
    if json:
        print_json(rec.as_dict())
        return
    for line in rec.record():
        typer.echo(line)
