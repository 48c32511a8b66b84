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
