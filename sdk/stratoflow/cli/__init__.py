"""``stratoflow`` command line (Typer + Rich): coloured tables on a terminal, ``--json`` for scripts.

One module per noun: flow_runs, task_runs, logs (``flow-run logs`` and ``--watch``), deployments,
schedules (``deployment schedule``), deploy, work_pools (pools and queues), worker,
concurrency_limits, config (``config from-stack`` and ``version``), dev, ui; ``_output`` is what they
all print with. ``main()`` turns every error a user can cause into one line on stderr and an exit
code (1: the request was refused; 2: the command line was malformed; 3: ``--watch`` timed out;
130: Ctrl-C), never a traceback. Shell completion: ``stratoflow --install-completion``.
"""

import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from stratoflow.api.errors import describe_validation_errors
from stratoflow.cli import (
    _output,
    concurrency_limits,
    config,
    deploy,
    deployments,
    dev,
    flow_runs,
    task_runs,
    ui,
    work_pools,
    worker,
)
from stratoflow.cli._output import table, terminal_safe
from stratoflow.cli._params import CliUsageError
from stratoflow.exceptions import StratoflowError

__all__ = ["app", "main", "table", "terminal_safe"]

app = typer.Typer(
    name="stratoflow",
    help="Stratoflow: serverless workflow orchestration.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables (every command that prints "
                                        "data; also accepted after the command).")] = False,
) -> None:
    """Stratoflow: serverless workflow orchestration."""
    _output.JSON_DEFAULT.set(json_)


app.command("version")(config.version)
app.add_typer(flow_runs.app, name="flow-run", no_args_is_help=True)
app.command("dev")(dev.dev)
app.add_typer(task_runs.app, name="task-run", no_args_is_help=True)
app.add_typer(deployments.app, name="deployment", no_args_is_help=True)
app.add_typer(work_pools.app, name="work-pool", no_args_is_help=True)
app.add_typer(concurrency_limits.app, name="concurrency-limit", no_args_is_help=True)
app.add_typer(config.app, name="config", no_args_is_help=True)
app.command("worker")(worker.worker)
app.command("deploy")(deploy.deploy_command)
app.command("ui")(ui.ui)


def _report(exc: BaseException) -> int:
    """The exit code for an error a user can cause, after its one line on stderr."""
    if isinstance(exc, typer.TyperException):  # the command line did not parse (click's UsageError & co.)
        message = " ".join(exc.format_message().split())  # blank when the help was shown instead (no command)
        ctx = getattr(exc, "ctx", None)
        if message:
            _output.error(message + (f" (see {ctx.command_path} --help)" if ctx is not None else ""))
        return exc.exit_code
    if isinstance(exc, CliUsageError):
        _output.error(str(exc))
        return 2
    if isinstance(exc, StratoflowError):  # refused: not found, conflict, an invalid transition...
        _output.error(str(exc))
        return 1
    errors = getattr(exc, "errors", None)  # pydantic's ValidationError: an argument the API would refuse (422)
    _output.error(describe_validation_errors(errors())[0] if callable(errors) else str(exc))
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); the exit code, never a traceback
    for a user's mistake."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    # A shell asking for completions (``_STRATOFLOW_COMPLETE`` set) is answered here and exits.
    command._main_shell_completion({}, "stratoflow", None)
    token = _output.JSON_DEFAULT.set(False)
    try:
        return _run(command, args)
    finally:
        _output.JSON_DEFAULT.reset(token)


def _run(command: Any, args: list[str]) -> int:
    try:
        with command.make_context("stratoflow", args) as ctx:
            result = command.invoke(ctx)
        sys.stdout.flush()  # a reader that went away shows here, not as an error at interpreter exit
        return int(result or 0)
    except typer.Exit as exc:  # --help, --install-completion, a group without its command
        return int(exc.exit_code)
    except typer.Abort:
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`stratoflow flow-run logs ID | head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (typer.TyperException, CliUsageError, StratoflowError) as exc:
        return _report(exc)
    except ValueError as exc:  # pydantic's ValidationError; any other ValueError is a bug: its traceback
        if not callable(getattr(exc, "errors", None)):
            raise
        return _report(exc)
