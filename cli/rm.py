"""``sdbctl rm``: remove runs, with their diffs and cached answers."""

from __future__ import annotations

from typing import Annotated

import typer

from sdbctl.cli._options import JsonOption, StoreOption
from sdbctl.sdb.results import as_json


def rm(
    runs: Annotated[list[str] | None, typer.Argument(metavar="RUN...", help="Run ids to remove (@latest too).")] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Also every run created longer ago than this: 30d, 12h, 2w.")
    ] = None,
    keep_last: Annotated[
        int | None, typer.Option("--keep-last", min=0, help="Also every run but the newest N.")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Remove what --older-than / --keep-last choose (else a dry run).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be removed.")] = False,
    store: StoreOption = None,
    json: JsonOption = False,
) -> None:
    """Remove runs, each whole: the run, the diffs that compared it, the cache entries its replay wrote.

    Runs named by id are removed at once; the bulk forms (--older-than, --keep-last) only list what
    they would remove unless --yes is given.

    Example: sdbctl rm old-nightly  ·  sdbctl rm --older-than 30d --keep-last 10 --yes
    """
    from sdbctl.cli._render import note, print_json, print_table
    from sdbctl.sdb.errors import UsageError
    from sdbctl.sdb.removal import choose, remove_runs
    from sdbctl.sdb.store import Store

    if not runs and older_than is None and keep_last is None:
        raise UsageError("rm needs RUN ids, --older-than AGE or --keep-last N")
    st = Store.open(store)
    chosen = choose(st, list(runs or []), older_than=older_than, keep_last=keep_last)
    bulk = older_than is not None or keep_last is not None
    result = remove_runs(st, chosen, dry_run=dry_run or (bulk and not yes))
    if json:
        print_json(as_json(result))
        return
    verb = "would remove" if result.dry_run else "removed"
    print_table(["run", verb], [[r, "run, its diffs and cache entries"] for r in result.runs])
    note(f"{verb} {len(result.runs)} runs, {len(result.diffs)} diffs, {result.cache_entries} cache entries")
    if result.dry_run and bulk and not dry_run:
        note("a dry run: add --yes to remove them")
