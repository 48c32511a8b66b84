"""The ``sdbctl`` entry point: the typer app, ``--version``, and the one place errors become exit 2
(:func:`execute`, which the console script and the in-process tests both run)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer

from sdbctl.cli import import_, patterns
from sdbctl.cli.demo import demo
from sdbctl.cli.diagnose import diagnose
from sdbctl.cli.diff import diff
from sdbctl.cli.export import export
from sdbctl.cli.gate import gate
from sdbctl.cli.proxy import proxy
from sdbctl.cli.query import query
from sdbctl.cli.record import CommandAfterDashes, record
from sdbctl.cli.replay import replay
from sdbctl.cli.rm import rm
from sdbctl.cli.runs import runs
from sdbctl.cli.show import show
from sdbctl.sdb import __version__
from sdbctl.sdb.errors import SdbError

app = typer.Typer(
    name="sdbctl",
    help=(
        "Replay and divergence auditor for LLM agents.\n\n"
        "Records what crosses the agent's stochastic-deterministic boundary (model output turned into "
        "an action) to Parquet, so that runs can be listed, inspected and queried with SQL. The bundled "
        "workloads run against SIMULATED models (sim:...), so everything works offline.\n\n"
        "Example:  sdbctl record contract-renewal --sessions 100  ·  sdbctl runs  ·  "
        "sdbctl show @latest --session 7590-VHVEG  ·  "
        'sdbctl query "SELECT kind, count(*) FROM events GROUP BY kind"'
    ),
    no_args_is_help=True,
    add_completion=False,
    # plain help: typer's rich help imports rich.markdown and markdown-it (~60 ms), and
    # `sdbctl --help` must answer in under 150 ms
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sdbctl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            "--s3-endpoint",
            envvar="SDB_S3_ENDPOINT",
            help="Endpoint of an S3-compatible server (MinIO, ...) for s3:// stores; default: "
            "$AWS_ENDPOINT_URL. Give it before the command: sdbctl --s3-endpoint URL runs --store s3://b/p",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Replay and divergence auditor for LLM agents."""
    if s3_endpoint:
        os.environ["SDB_S3_ENDPOINT"] = s3_endpoint  # read where an s3:// store is opened


app.command()(runs)
app.command()(show)
app.command()(query)
app.command()(export)
app.command(cls=CommandAfterDashes)(record)
app.command()(proxy)
app.command()(replay)
app.command()(diff)
app.command()(gate)
app.command()(diagnose)
app.command()(demo)
app.command()(rm)
app.add_typer(patterns.app, name="patterns")
app.add_typer(import_.app, name="import")


# commands that only read the store (or write files the user named) and print: a closed pipe may end them
# at once. record, proxy and replay talk to sockets, where Python's ignored SIGPIPE must stay ignored
# (a client or server that hangs up is an error to handle, not a reason to die).
_OUTPUT_COMMANDS = frozenset(
    {"runs", "show", "query", "export", "diff", "gate", "diagnose", "patterns", "demo", "import", "rm"}
)


_COMMANDS = _OUTPUT_COMMANDS | {"record", "proxy", "replay"}


def _command(args: list[str]) -> str | None:
    """The command named in ``args`` (the first word that names one)."""
    return next((a for a in args if not a.startswith("-") and a in _COMMANDS), None)


def execute(argv: list[str]) -> int:
    """Run the command line ``argv`` (without the program's name) and return its exit status: the one
    place errors become exit 2. An :class:`SdbError`, or an :class:`OSError` on a path the user gave, is
    one line ``sdbctl: error: ...`` on stderr and status 2; with ``SDB_DEBUG=1`` it is raised instead
    (a traceback). A closed pipe is never one line: click ends its own writes to a closed pipe with
    status 1, and a :class:`BrokenPipeError` raised past click is the process's business
    (:func:`run`). The console script calls this once; the tests call it in their own process.
    """
    debug = os.environ.get("SDB_DEBUG") == "1"
    try:
        app(args=argv, prog_name="sdbctl", standalone_mode=True)
    except SystemExit as exc:  # standalone click always ends so: the status, or a usage error's 2
        return _status(exc.code)
    except BrokenPipeError:
        raise
    except SdbError as exc:
        if debug:
            raise
        sys.stderr.write(f"sdbctl: error: {exc}\n")
        return 2
    except OSError as exc:  # a path the user gave that cannot be read or written
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"sdbctl: error: {where}{exc.strerror or exc}\n")
        return 2
    return 0


def _status(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives: None is 0, a number itself, anything else printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def run() -> None:
    """Console-script entry: :func:`execute` on the process's arguments, exiting with its status.

    A closed pipe (``sdbctl export RUN | head``) ends an output command as it ends any Unix tool:
    killed by SIGPIPE, quietly, exit status 141 in the shell. record, proxy and replay keep SIGPIPE
    ignored (they use sockets): there click prints nothing and exits 1; a :class:`BrokenPipeError`
    that gets past click ends the process quietly with status 0."""
    if hasattr(signal, "SIGPIPE") and _command(sys.argv[1:]) in _OUTPUT_COMMANDS:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        status = execute(sys.argv[1:])
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    sys.exit(status)


if __name__ == "__main__":
    run()
