"""Options shared by several commands, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="SDB_STORE",
        help="Store: a directory (default: .sdb under the current directory) or s3://BUCKET/PREFIX.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
LayersOption = Annotated[
    str | None,
    typer.Option(
        "--layers",
        help="Layers the headline rates and the gate count: write, read, speech, comma-separated "
        "(default: [diff] layers, else write).",
        show_default=False,
    ),
]
AllowPartialOption = Annotated[
    bool,
    typer.Option("--allow-partial", help="Compare a partial (interrupted) run anyway; every output says so."),
]
AlignOption = Annotated[
    str,
    typer.Option(
        "--align",
        help="auto: by commit over whole sessions when both runs ran the agent, else by step; session; step.",
    ),
]
IgnoreOption = Annotated[
    list[str] | None, typer.Option("--ignore", help="ACTION.FIELD never compared (repeatable; * = any action).")
]
UnorderedOption = Annotated[
    list[str] | None, typer.Option("--unordered", help="ACTION.FIELD: a list compared as a multiset.")
]
NumericToleranceOption = Annotated[
    list[str] | None, typer.Option("--numeric-tolerance", help="ACTION=X: numbers within X are equal.")
]
TextOption = Annotated[
    list[str] | None, typer.Option("--text", help="ACTION=case,whitespace: text normalised before comparing.")
]
NoiseOption = Annotated[str | None, typer.Option("--noise", help="A self-replay of the base model: the noise floor.")]
