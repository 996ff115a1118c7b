"""``stratoflow version`` (what the SDK is configured with) and ``stratoflow config from-stack NAME``
(the SDK's settings from a deployed stack's outputs).

``from-stack`` reads the CloudFormation stack's outputs (``DescribeStacks``) and turns them into the
``STRATOFLOW_*`` variables the SDK and CLI read (see ``OUTPUT_SETTINGS``):

* default: writes ``$STRATOFLOW_HOME/profiles/NAME.env`` (``~/.stratoflow/profiles/NAME.env``),
  ``export`` lines a shell sources: ``source ~/.stratoflow/profiles/NAME.env``;
* ``--print``: prints the same lines to stdout instead: ``eval "$(stratoflow config from-stack NAME --print)"``;
* ``--output PATH``: writes them to PATH;
* ``--json``: the settings as one JSON object (and the file written, unless ``--print``).

``--profile P`` reads the stack with that AWS profile and also exports ``AWS_PROFILE=P``, so the
SDK signs its requests with the same credentials; ``--region R`` (default: the profile's or the
environment's region) also becomes ``AWS_REGION``.
"""

import os
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated

import typer

from stratoflow import __version__
from stratoflow.cli import _output
from stratoflow.cli._output import echo, safe
from stratoflow.cli._params import JsonOption, exclusive
from stratoflow.exceptions import StratoflowError
from stratoflow.settings import Settings, get_settings

app = typer.Typer(help="Configure the SDK and CLI.")

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
    # cold start: boto3 takes a fifth of a second to import and only this command uses it directly.
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
    return (home or Settings().home) / "profiles" / f"{name}.env"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (it names the stack's resources), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


@app.command("from-stack")
def from_stack(
    stack: Annotated[str, typer.Argument(metavar="NAME", help="The CloudFormation stack name (sam deploy's "
                                         "--stack-name).")],
    region: Annotated[str | None, typer.Option(help="The stack's region (default: the profile's or AWS_REGION).")]
    = None,
    profile: Annotated[str | None, typer.Option(
        help="AWS profile to read the stack with (also exported as AWS_PROFILE).")] = None,
    print_: Annotated[bool, typer.Option("--print", help="Print export lines instead of writing a file.")] = False,
    output: Annotated[str | None, typer.Option(
        metavar="PATH", help="Write to PATH (default ~/.stratoflow/profiles/NAME.env).")] = None,
    name: Annotated[str | None, typer.Option(help="Profile file name (default: the stack name).")] = None,
    json_: JsonOption = False,
) -> int:
    """Write the settings of a deployed stack (from its outputs) to a profile a shell sources.

    --print prints the export lines instead: eval "$(stratoflow config from-stack NAME --print)".
    --profile P reads the stack with that AWS profile and exports AWS_PROFILE=P too.
    """
    exclusive({"--print": print_, "--output": output})
    outputs = read_stack_outputs(stack, region=region, profile=profile)
    env = settings_from_outputs(outputs, region=region, profile=profile)
    text = render_exports(env, stack)
    as_json = _output.wants_json(json_)
    if print_:
        if as_json:
            _output.print_json({"stack": stack, "path": None, "settings": env})
        else:
            sys.stdout.write(text)
        return 0
    path = Path(output) if output else profile_path(name or stack)
    _write_private(path, text)
    if as_json:
        _output.print_json({"stack": stack, "path": str(path), "settings": env})
        return 0
    echo(safe(f"wrote {path} ({len(env)} settings from stack {stack})"))
    echo(safe(f"use it with:  source {shlex.quote(str(path))}"))
    return 0


def version(json_: JsonOption = False) -> int:
    """Show the version and the configuration the SDK and CLI use."""
    s = get_settings()
    info = {"version": __version__, "backend": s.resolved_backend, "home": str(s.home), "region": s.region,
            "table_prefix": s.table_prefix, "bucket": s.bucket, "api_url": s.api_url,
            "python": sys.version.split()[0]}
    if _output.wants_json(json_):
        _output.print_json(info)
    else:
        for key, value in info.items():
            echo(f"{key:<13} ", safe(f"{value}"))
    return 0
