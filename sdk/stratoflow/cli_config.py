"""``stratoflow config from-stack NAME``: the SDK's settings from a deployed stack's outputs.

Reads the CloudFormation stack's outputs (``DescribeStacks``) and turns them into the
``STRATOFLOW_*`` variables the SDK and CLI read (see ``OUTPUT_SETTINGS``):

* default: writes ``$STRATOFLOW_HOME/profiles/NAME.env`` (``~/.stratoflow/profiles/NAME.env``),
  ``export`` lines a shell sources: ``source ~/.stratoflow/profiles/NAME.env``;
* ``--print``: prints the same lines to stdout instead: ``eval "$(stratoflow config from-stack NAME --print)"``;
* ``--output PATH``: writes them to PATH.

``--profile P`` reads the stack with that AWS profile and also exports ``AWS_PROFILE=P``, so the
SDK signs its requests with the same credentials; ``--region R`` (default: the profile's or the
environment's region) also becomes ``AWS_REGION``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from stratoflow.exceptions import StratoflowError

# Stack output -> setting. TablePrefix and BucketName are required (they name the stack's data).
OUTPUT_SETTINGS: dict[str, str] = {
    "ApiUrl": "STRATOFLOW_API_URL",
    "TablePrefix": "STRATOFLOW_TABLE_PREFIX",
    "BucketName": "STRATOFLOW_BUCKET",
    "Region": "STRATOFLOW_REGION",
    "SchedulerTargetArn": "STRATOFLOW_SCHEDULER_TARGET_ARN",
    "SchedulerRoleArn": "STRATOFLOW_SCHEDULER_ROLE_ARN",
    "ResultKeySecretArn": "STRATOFLOW_RESULT_KEY_SECRET",
}
REQUIRED_OUTPUTS = ("TablePrefix", "BucketName")


class StackConfigError(StratoflowError):
    """The stack cannot be read, or is not a Stratoflow stack."""


def read_stack_outputs(stack_name: str, *, region: str | None = None, profile: str | None = None) -> dict[str, str]:
    """``{OutputKey: OutputValue}`` of the stack (any boto3 credentials source; ``profile`` wins)."""
    import boto3

    session = boto3.session.Session(profile_name=profile, region_name=region)
    client = session.client("cloudformation")
    try:
        stacks = client.describe_stacks(StackName=stack_name)["Stacks"]
    except Exception as exc:
        raise StackConfigError(f"cannot read stack {stack_name!r}: {exc}") from exc
    if not stacks:
        raise StackConfigError(f"no stack named {stack_name!r}")
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def settings_from_outputs(outputs: Mapping[str, str], *, region: str | None = None,
                          profile: str | None = None) -> dict[str, str]:
    """The environment the SDK needs for the stack with these outputs."""
    missing = [key for key in REQUIRED_OUTPUTS if not outputs.get(key)]
    if missing:
        raise StackConfigError(f"the stack has no output {', '.join(missing)}: not a Stratoflow stack "
                               "(deploy template.yaml with `sam deploy`)")
    env = {"STRATOFLOW_BACKEND": "aws"}
    for output, variable in OUTPUT_SETTINGS.items():
        if outputs.get(output):
            env[variable] = outputs[output]
    stack_region = outputs.get("Region") or region
    if stack_region:
        env["AWS_REGION"] = stack_region
    if profile:
        env["AWS_PROFILE"] = profile
    return env


def export_line(name: str, value: str) -> str:
    """``export NAME=value``, quoted for a POSIX shell (``parse_exports`` reads it back)."""
    return f"export {name}={shlex.quote(value)}"


def parse_exports(lines: Iterable[str]) -> dict[str, str]:
    """The variables of the ``export`` lines among ``lines`` (what ``stratoflow dev`` and
    ``config from-stack --print`` print), unquoted as a shell would."""
    env: dict[str, str] = {}
    for line in lines:
        text = line.strip()
        if text.startswith("export ") and "=" in text:
            name, _, value = text[len("export "):].partition("=")
            env[name.strip()] = " ".join(shlex.split(value)) if value else ""
    return env


def render_exports(env: Mapping[str, str], stack_name: str) -> str:
    lines = [f"# Stratoflow settings from CloudFormation stack {stack_name} (stratoflow config from-stack)"]
    lines += [export_line(key, value) for key, value in env.items()]
    return "\n".join(lines) + "\n"


def profile_path(name: str, home: Path | None = None) -> Path:
    if home is None:
        from stratoflow.settings import Settings

        home = Settings().home
    return home / "profiles" / f"{name}.env"


def cmd_from_stack(args: argparse.Namespace) -> int:
    outputs = read_stack_outputs(args.stack, region=args.region, profile=args.profile)
    env = settings_from_outputs(outputs, region=args.region, profile=args.profile)
    text = render_exports(env, args.stack)
    if args.print:
        sys.stdout.write(text)
        return 0
    path = Path(args.output) if args.output else profile_path(args.name or args.stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    print(f"wrote {path} ({len(env)} settings from stack {args.stack})")
    print(f"use it with:  source {shlex.quote(str(path))}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``stratoflow config from-stack`` to the CLI's subcommands."""
    config = subparsers.add_parser("config", help="configure the SDK and CLI")
    actions = config.add_subparsers(dest="action", required=True)
    p = actions.add_parser("from-stack", help="write the settings of a deployed stack (from its outputs)",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stack", metavar="NAME", help="the CloudFormation stack name (sam deploy's --stack-name)")
    p.add_argument("--region", help="the stack's region (default: the profile's or AWS_REGION)")
    p.add_argument("--profile", help="AWS profile to read the stack with (also exported as AWS_PROFILE)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--print", action="store_true", help="print export lines instead of writing a file")
    where.add_argument("--output", metavar="PATH", help="write to PATH (default ~/.stratoflow/profiles/NAME.env)")
    p.add_argument("--name", help="profile file name (default: the stack name)")
    p.set_defaults(fn=cmd_from_stack)
