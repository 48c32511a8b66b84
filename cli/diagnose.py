"""``sdbctl diagnose``: where a run's boundary is weak, and what to do about it."""

from __future__ import annotations

from typing import Annotated

import typer

from sdbctl.cli._options import JsonOption, StoreOption


def diagnose(
    run: Annotated[str, typer.Argument(metavar="RUN", help="A candidate run that has been diffed.")],
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Name where the divergences of a run concentrate (action, field, reason, pattern), with advice.

    Example: sdbctl diff base cand && sdbctl diagnose cand
    """
    import sdbctl.fixtures.workloads
    from sdbctl.cli._render import console, data, print_json
    from sdbctl.patterns.catalog import CATALOG
    from sdbctl.sdb.diagnose import diagnose as run_diagnose
    from sdbctl.sdb.store import Store

    sdbctl.fixtures.workloads.register_all()  # the diffs are recomputed: the workloads' code, as diff's
    report = run_diagnose(Store.open(store), run, known_patterns=CATALOG)
    if json:
        print_json(report)
        return
    if not report["divergences"]:
        against = ", ".join(report["bases"])
        console.print(f"[bold]{data(report['run'])}[/]: 0 divergences against {data(against)}: nothing to diagnose")
        return
    console.print(f"[bold]{data(report['run'])}[/]: {report['divergences']} divergences", highlight=False)
    for i, f in enumerate(report["findings"], 1):  # unwrapped: a command in the advice pastes whole
        console.print(f"{i}. {data(f['evidence'])}\n   -> {data(f['recommendation'])}", highlight=False, soft_wrap=True)
