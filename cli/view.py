"""``sdbctl view``: the two runs of a diff side by side in the browser, served from this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdbctl.cli._options import (
    AlignOption,
    AllowPartialOption,
    IgnoreOption,
    LayersOption,
    NoiseOption,
    NumericToleranceOption,
    StoreOption,
    TextOption,
    UnorderedOption,
)


def view(
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="BASE CANDIDATE | RUN",
            help="Two runs to compare, or one run compared with the run it was replayed from (default: @latest).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (default: a free one).")] = 0,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL only; do not open a browser.")
    ] = False,
    noise: NoiseOption = None,
    ignore: IgnoreOption = None,
    unordered: UnorderedOption = None,
    numeric_tolerance: NumericToleranceOption = None,
    text: TextOption = None,
    layers: LayersOption = None,
    align: AlignOption = "auto",
    allow_partial: AllowPartialOption = False,
    store: StoreOption = None,
) -> None:
    """Open the diff of two runs in the browser: the verdict's figures, the sessions sorted by severity
    (pass -> fail first) with filters, and one session's two runs side by side, aligned as the differ
    aligned them, with the changed fields lit and each step's model call one click away.

    The diff is computed afresh, as `sdbctl diff` computes it with the same options (a diff saved in
    the store is not trusted for the page's figures); progress goes to stderr. The page is served on
    127.0.0.1 only, to requests that carry the random token of the URL printed as the first line of
    stdout; the browser opens on it unless --no-browser. Ctrl-C stops the server (exit 0).

    Keys on the page: j/k next/previous session, n/p next/previous divergence, / to filter; the address
    (#session=ID&rep=K&seq=N) reopens the same view. For a file to keep (a CI artifact), use
    `sdbctl diff BASE CANDIDATE --html FILE` or `sdbctl gate RUN --html FILE`.

    Example: sdbctl view base @latest --layers write,speech --no-browser --port 8765
    """
    import webbrowser

    import sdbctl.fixtures.workloads
    from sdbctl.cli._render import err_console
    from sdbctl.sdb.diff import load_config, tolerance_flags
    from sdbctl.sdb.store import Store
    from sdbctl.sdb.view import ViewData, ViewServer, diff_to_view, redirect_file, runs_to_view

    sdbctl.fixtures.workloads.register_all()  # the workloads a run may name: their code, never a store's
    st = Store.open(store)
    base, candidate = runs_to_view(st, runs or ["@latest"])
    config = tolerance_flags(
        load_config(), ignore=ignore, unordered=unordered, numeric=numeric_tolerance, text=text
    ).with_layers(layers)
    data: ViewData | None = None
    server: ViewServer | None = None
    page: Path | None = None
    try:  # Ctrl-C, while the diff is computed or while the page is served, stops it: one line, exit 0
        with err_console.status(f"comparing {base} -> {candidate} ...", spinner="dots"):
            result = diff_to_view(
                st, base, candidate, config=config, alignment=align, noise_run=noise, allow_partial=allow_partial
            )
            data = ViewData.for_diff(st, result, config=config)
        server = ViewServer(data, port=port)
        print(server.url, flush=True)
        err_console.print(f"serving {result.base_run} -> {result.candidate_run}; Ctrl-C stops", highlight=False)
        if not no_browser:
            page = redirect_file(server.url)  # the token never on the browser's command line
            webbrowser.open(page.as_uri())
        server.serve_forever()
    except KeyboardInterrupt:
        err_console.print("stopped", highlight=False)
    finally:
        if page is not None:
            page.unlink(missing_ok=True)
        if server is not None:
            server.server_close()
        if data is not None:
            data.close()
