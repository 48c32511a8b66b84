"""The ``sdbctl`` entry point: the typer app, ``--version``, and the one place errors become exit 2
(:func:`execute`, which the console script and the in-process tests both run)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

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
from sdbctl.cli.view import view
from sdbctl.sdb import __version__
from sdbctl.sdb.errors import SdbError, UsageError
from sdbctl.sdb.text import visible

# click's exceptions as the typer in use raises them (its own copy of click since typer 0.2x, click's
# before): found through the public typer.BadParameter, whichever copy it is
_click = sys.modules[typer.BadParameter.__module__]


class _Commands(TyperGroup):
    """A group (sdbctl, and its groups import and patterns) whose unknown command is the one-line error
    every error is, naming the nearest command, rather than click's usage, hint and error lines."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and not ctx.resilient_parsing and self.get_command(ctx, name) is None:
            from sdbctl.sdb.names import did_you_mean

            near = did_you_mean(name, self.list_commands(ctx))
            raise UsageError(f"no such command {name!r}{near or f' ({ctx.command_path} -h lists the commands)'}")
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="sdbctl",
    cls=_Commands,
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
app.command()(view)
app.add_typer(patterns.app, name="patterns", cls=_Commands)
app.add_typer(import_.app, name="import", cls=_Commands)


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
    place errors become exit 2. An :class:`SdbError`, an :class:`OSError` on a path the user gave, or a
    command line click cannot parse (a typo, a missing argument, a value of the wrong type: see
    :func:`_usage_line`) is one line ``sdbctl: error: ...`` on stderr and status 2; with ``SDB_DEBUG=1``
    an SdbError or OSError is raised instead (a traceback). ``--help``, and a group given no command,
    print the help as click does. A closed pipe is never one line: click ends its own writes to a
    closed pipe with status 1, and a :class:`BrokenPipeError` raised past click is the process's
    business (:func:`run`). The console script calls this once; the tests call it in their own process.
    """
    debug = os.environ.get("SDB_DEBUG") == "1"
    try:  # not standalone: click's errors reach the handlers below instead of printing three lines
        status = app(args=argv, prog_name="sdbctl", standalone_mode=False)
    except SystemExit as exc:  # sys.exit, or click's end of a write to a closed pipe (status 1)
        return _status(exc.code)
    except BrokenPipeError:
        raise
    except _click.NoArgsIsHelpError as exc:  # `sdbctl`, `sdbctl patterns`: the help, as click shows it
        exc.show()
        return int(exc.exit_code)
    except _click.ClickException as exc:
        sys.stderr.write(f"sdbctl: error: {_usage_line(exc)}\n")
        return 2
    except typer.Abort:  # end of input at a prompt
        sys.stderr.write("Aborted!\n")
        return 1
    except SdbError as exc:
        if debug:
            raise
        sys.stderr.write(f"sdbctl: error: {visible(str(exc))}\n")  # names from a store: escaped, one line
        return 2
    except OSError as exc:  # a path the user gave that cannot be read or written
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"sdbctl: error: {visible(f'{where}{exc.strerror or exc}')}\n")
        return 2
    return status if isinstance(status, int) else 0  # typer.Exit's status (--help: 0), else 0


def _usage_line(exc: Any) -> str:
    """What click says of a command line it cannot parse, on one line: an unknown option with the
    nearest one (:func:`sdb.names.did_you_mean`), a bad value with the value given, else click's words
    and where the usage is (``sdbctl CMD -h``)."""
    ctx = getattr(exc, "ctx", None)
    help_command = f"{ctx.command_path} -h" if ctx is not None else "sdbctl -h"
    see = f" (see {help_command})" if ctx is not None else ""
    if isinstance(exc, _click.NoSuchOption):
        from sdbctl.sdb.names import did_you_mean

        name = str(exc.option_name)
        known = [o for p in ctx.command.get_params(ctx) for o in (*p.opts, *p.secondary_opts)] if ctx else []
        near = did_you_mean(name, [o for o in known if o.startswith("--")]) if name.startswith("--") else ""
        return f"no such option {name!r}{near or f' ({help_command} lists them)'}"
    text = " ".join(str(exc.format_message()).split()).rstrip(".")
    text = text[:1].lower() + text[1:]
    from pydantic import ValidationError  # how typer checks a typed value: the error holds the value

    cause = exc.__cause__
    if isinstance(cause, ValidationError) and cause.errors():  # "invalid value for '--limit': Input should ..."
        head, _, why = text.partition(": ")
        value = cause.errors()[0].get("input")
        text = f"{head.replace('invalid value', f'invalid value {value!r}', 1)}: {why[:1].lower()}{why[1:]}"
    return text + see


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
