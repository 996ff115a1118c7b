"""``stratoflow deploy``: one flow by entrypoint, or the deployments of ``stratoflow.yaml``.

Progress goes to stderr while the package is built and uploaded; the summary table (or JSON
with ``--json``) goes to stdout. Bad input exits 2 with one line on stderr, before anything
is uploaded or written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

_SINGLE_ONLY = ("pool", "queue", "param", "cron", "interval", "timezone", "tag", "description", "requirements",
                "package_uri", "package_sha256", "source_dir")


def register(subparsers: Any) -> None:
    """Add the top-level ``deploy`` command to an argparse subparsers object."""
    p = subparsers.add_parser(
        "deploy", help="package a flow to S3 and create/update its deployment (or deploy stratoflow.yaml)",
        description="stratoflow deploy path/to/file.py:flow_fn --name prod --pool default ...  |  "
                    "stratoflow deploy [--all | --name X] [--file stratoflow.yaml]")
    p.add_argument("entrypoint", nargs="?", metavar="PATH:FLOW",
                   help="path/to/file.py:flow_function, relative to --source-dir (default: the current directory); "
                        "omit it to deploy the deployments of stratoflow.yaml")
    p.add_argument("--name", "-n", help="the deployment's name (with no entrypoint: only this deployment of the file)")
    p.add_argument("--pool", "--work-pool", dest="pool", help="work pool the runs go to")
    p.add_argument("--queue", "--work-queue", dest="queue", help="work queue within the pool")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a default parameter (repeatable); VALUE is JSON when it parses, else a string")
    p.add_argument("--cron", help='a cron schedule, e.g. "0 6 * * *"')
    p.add_argument("--interval", type=float, metavar="SECONDS", help="an interval schedule")
    p.add_argument("--timezone", help="IANA timezone of --cron/--interval, e.g. Europe/Paris")
    p.add_argument("--tag", action="append", help="a tag (repeatable)")
    p.add_argument("--description")
    p.add_argument("--requirements", metavar="FILE", help="requirements file to vendor (default: requirements.txt "
                                                          "of the source directory when it exists)")
    p.add_argument("--ignore-file", default=".stratoflowignore", metavar="FILE",
                   help="gitignore-style file of paths to leave out (default .stratoflowignore)")
    p.add_argument("--source-dir", metavar="DIR", help="directory to package (default: the current directory)")
    p.add_argument("--package-uri", metavar="S3_URI", help="use this existing package instead of building one")
    p.add_argument("--package-sha256", metavar="HEX", help="sha256 of --package-uri")
    p.add_argument("--lambda-platform", action="store_true",
                   help="vendor wheels for Lambda (python3.13, manylinux x86_64) whatever this machine is")
    p.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                   help="an extra argument for pip when vendoring (repeatable), e.g. --pip-arg=--no-index")
    p.add_argument("--paused", action="store_true", help="create the deployment paused")
    p.add_argument("--all", action="store_true", help="deploy every deployment of stratoflow.yaml")
    p.add_argument("--file", "-f", metavar="YAML", help="project file (default ./stratoflow.yaml)")
    p.set_defaults(fn=cmd_deploy)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
    from stratoflow.cli import table

    rows = [(f"{d.flow_name}/{d.name}", d.version,
             (d.work_pool_name or "-") + (f"/{d.work_queue_name}" if d.work_queue_name else ""),
             (d.package_sha256 or "-")[:12], "; ".join(_schedule_text(s) for s in d.schedules) or "-",
             "paused" if d.paused else "active") for d in deployments]
    return table(rows, ["DEPLOYMENT", "VERSION", "WORK POOL", "PACKAGE", "SCHEDULES", "STATUS"])


def _usage(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def cmd_deploy(args: argparse.Namespace) -> int:
    from stratoflow.cli import _parse_params, _UsageError
    from stratoflow.deployments.deploy import DeploymentError, deploy
    from stratoflow.deployments.packaging import PackagingError
    from stratoflow.deployments.project import deploy_project
    from stratoflow.exceptions import ParameterValidationError

    try:
        if args.entrypoint:
            if args.all or args.file:
                return _usage("--all and --file deploy stratoflow.yaml; they do not go with an entrypoint")
            if not args.name:
                return _usage("--name is required with an entrypoint")
            deployments = [deploy(
                args.entrypoint, name=args.name, work_pool=args.pool, work_queue=args.queue,
                parameters=_parse_params(args.param), cron=args.cron, interval=args.interval,
                timezone=args.timezone, tags=args.tag, description=args.description, source_dir=args.source_dir,
                package_uri=args.package_uri, package_sha256=args.package_sha256, requirements=args.requirements,
                ignore_file=args.ignore_file, paused=args.paused, progress=_say,
                lambda_platform=args.lambda_platform, pip_args=args.pip_arg)]
        else:
            given = [f"--{opt.replace('_', '-')}" for opt in _SINGLE_ONLY if getattr(args, opt) not in (None, [])]
            if args.paused:
                given.append("--paused")
            if given:
                return _usage(f"{given[0]} needs an entrypoint (PATH:FLOW); stratoflow.yaml sets it per deployment")
            if args.all and args.name:
                return _usage("give --all or --name, not both")
            deployments = deploy_project(args.file or "stratoflow.yaml", names=[args.name] if args.name else None,
                                         progress=_say)
    except (DeploymentError, PackagingError, ParameterValidationError, _UsageError) as exc:
        return _usage(str(exc))
    if getattr(args, "json", False):
        print(json.dumps([d.model_dump(mode="json") for d in deployments], indent=2, default=str))
    else:
        print(summary_table(deployments))
    return 0
