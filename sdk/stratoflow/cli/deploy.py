"""``stratoflow deploy``: one flow by entrypoint, or the deployments of ``stratoflow.yaml``.

Progress goes to stderr while the package is built and uploaded (on a terminal with a spinner
naming the step under way); the summary table (or JSON with ``--json``) goes to stdout. Bad input
exits 2 with one line on stderr, before anything is uploaded or written.
"""

from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.status import Status

from stratoflow.cli import _output
from stratoflow.cli._output import safe
from stratoflow.cli._params import CliUsageError, JsonOption, parse_params
from stratoflow.deployments import DeploymentError, PackagingError, deploy, deploy_project
from stratoflow.exceptions import ParameterValidationError
from stratoflow.models import Deployment


class _Progress:
    """``deploy()``'s progress callback: each step a line on stderr, and the spinner's text."""

    def __init__(self, console: Console, spinner: Status | None) -> None:
        self.console = console
        self.spinner = spinner

    def __call__(self, line: str) -> None:
        self.console.print(safe(line))
        if self.spinner is not None:
            self.spinner.update(safe(line))


def _schedule_text(schedule: Any) -> str:
    inner = schedule.schedule
    if inner.type == "cron":
        text = f"cron {inner.cron}"
    elif inner.type == "interval":
        text = f"every {inner.interval:g}s"
    else:
        text = f"rrule {inner.rrule}"
    if inner.timezone != "UTC":
        text += f" ({inner.timezone})"
    return text if schedule.active else text + " [inactive]"


def summary_table(deployments: Sequence[Any]) -> str:
    rows = [(f"{d.flow_name}/{d.name}", d.version,
             (d.work_pool_name or "-") + (f"/{d.work_queue_name}" if d.work_queue_name else ""),
             (d.package_sha256 or "-")[:12], "; ".join(_schedule_text(s) for s in d.schedules) or "-",
             "paused" if d.paused else "active") for d in deployments]
    return _output.table(rows, ["DEPLOYMENT", "VERSION", "WORK POOL", "PACKAGE", "SCHEDULES", "STATUS"])


def _check_project_options(single: dict[str, Any], all_: bool, name: str | None) -> None:
    """Without an entrypoint the file sets everything: options of a single flow are refused."""
    given = [option for option, value in single.items() if value not in (None, [], False)]
    if given:
        raise CliUsageError(f"{given[0]} needs an entrypoint (PATH:FLOW); stratoflow.yaml sets it per deployment")
    if all_ and name:
        raise CliUsageError("give --all or --name, not both")


def deploy_command(
    entrypoint: Annotated[str | None, typer.Argument(
        metavar="PATH:FLOW", help="path/to/file.py:flow_function, relative to --source-dir (default: the current "
                                  "directory); omit it to deploy the deployments of stratoflow.yaml.")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", "-n", help="The deployment's name (with no entrypoint: only this deployment of the file).")] = None,
    pool: Annotated[str | None, typer.Option("--pool", "--work-pool", help="Work pool the runs go to.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "--work-queue", help="Work queue within the pool.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        metavar="KEY=VALUE", help="A default parameter (repeatable); VALUE is JSON when it parses, else a string.")]
    = None,
    cron: Annotated[str | None, typer.Option(help='A cron schedule, e.g. "0 6 * * *".')] = None,
    interval: Annotated[float | None, typer.Option(metavar="SECONDS", help="An interval schedule.")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA timezone of --cron/--interval, e.g. Europe/Paris.")]
    = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeatable).")] = None,
    description: Annotated[str | None, typer.Option(help="The deployment's description.")] = None,
    requirements: Annotated[str | None, typer.Option(metavar="FILE", help="Requirements file to vendor (default: "
                                                     "requirements.txt of the source directory when it exists).")]
    = None,
    ignore_file: Annotated[str, typer.Option(metavar="FILE", help="gitignore-style file of paths to leave out.")]
    = ".stratoflowignore",
    source_dir: Annotated[str | None, typer.Option(
        metavar="DIR", help="Directory to package (default: the current directory).")] = None,
    package_uri: Annotated[str | None, typer.Option(
        metavar="S3_URI", help="Use this existing package instead of building one.")] = None,
    package_sha256: Annotated[str | None, typer.Option(metavar="HEX", help="sha256 of --package-uri.")] = None,
    lambda_platform: Annotated[bool, typer.Option(
        "--lambda-platform", help="Vendor wheels for Lambda (python3.13, manylinux x86_64) whatever this machine is.")]
    = False,
    pip_arg: Annotated[list[str] | None, typer.Option(
        metavar="ARG", help="An extra argument for pip when vendoring (repeatable), e.g. --pip-arg=--no-index.")]
    = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create the deployment paused.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Deploy every deployment of stratoflow.yaml.")] = False,
    file: Annotated[str | None, typer.Option(
        "--file", "-f", metavar="YAML", help="Project file (default ./stratoflow.yaml).")] = None,
    json_: JsonOption = False,
) -> int:
    """Package a flow to S3 and create/update its deployment (or deploy stratoflow.yaml).

    stratoflow deploy path/to/file.py:flow_fn --name prod --pool default ...  |
    stratoflow deploy (--all | --name X) (--file stratoflow.yaml)
    """
    console = _output.stderr()
    try:
        if entrypoint:
            if all_ or file:
                raise CliUsageError("--all and --file deploy stratoflow.yaml; they do not go with an entrypoint")
            if not name:
                raise CliUsageError("--name is required with an entrypoint")
            params = parse_params(param)
            with _output.status(console, "deploying") as spinner:
                deployments = [deploy(
                    entrypoint, name=name, work_pool=pool, work_queue=queue, parameters=params, cron=cron,
                    interval=interval, timezone=timezone, tags=tag, description=description, source_dir=source_dir,
                    package_uri=package_uri, package_sha256=package_sha256, requirements=requirements,
                    ignore_file=ignore_file, paused=paused, progress=_Progress(console, spinner),
                    lambda_platform=lambda_platform, pip_args=pip_arg or [])]
        else:
            _check_project_options({
                "--pool": pool, "--queue": queue, "--param": param, "--cron": cron, "--interval": interval,
                "--timezone": timezone, "--tag": tag, "--description": description, "--requirements": requirements,
                "--package-uri": package_uri, "--package-sha256": package_sha256, "--source-dir": source_dir,
                "--paused": paused}, all_, name)
            with _output.status(console, "deploying") as spinner:
                deployments = deploy_project(file or "stratoflow.yaml", names=[name] if name else None,
                                             progress=_Progress(console, spinner))
    except (DeploymentError, PackagingError, ParameterValidationError) as exc:
        raise CliUsageError(" ".join(str(exc).split())) from exc
    _print_deployments(deployments, _output.wants_json(json_))
    return 0


def _print_deployments(deployments: Sequence[Deployment], as_json: bool) -> None:
    if as_json:
        _output.print_json([d.model_dump(mode="json") for d in deployments])
    else:
        print(summary_table(deployments))
