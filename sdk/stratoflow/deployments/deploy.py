"""``deploy()``: package a flow, upload the package, create or update its deployment.

Everything that can refuse a deployment (the entrypoint, default parameters against the flow's
signature, schedules, the work pool and queue, an existing package) is checked before the first
upload or write, so a refused deploy leaves nothing behind.
"""

from __future__ import annotations

import inspect
import json
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from stratoflow.client import get_client
from stratoflow.deployments.packaging import (
    DeploymentError,
    Package,
    PackagingError,
    Progress,
    build_package,
    check_entrypoint,
    load_entrypoint,
    parse_entrypoint,
    upload_package,
)
from stratoflow.exceptions import ObjectNotFound, ParameterValidationError
from stratoflow.packages import package_uri_for, package_uri_problem
from stratoflow.schedules.checks import check_new_schedule
from stratoflow.schedules.models import (
    CronSchedule,
    DeploymentSchedule,
    IntervalSchedule,
    RRuleSchedule,
    Schedule,
)
from stratoflow.storage.blobs import S3Blobs

if TYPE_CHECKING:
    from stratoflow.client import StratoflowClient
    from stratoflow.flows import Flow
    from stratoflow.models import Deployment

ScheduleLike = DeploymentSchedule | CronSchedule | IntervalSchedule | RRuleSchedule | Mapping[str, Any]
# Schedule ids follow from the deployment and the schedule, so an unchanged redeploy keeps them.
_SCHEDULE_IDS = uuid.UUID("6f1d3c52-5b1e-4a43-9d0e-3f5a3e2b7c10")


@dataclass
class DeploymentPlan:
    """One deployment, checked and ready: what ``deploy`` uploads and writes."""

    flow: Flow[..., Any]
    name: str
    entrypoint: str
    source_dir: Path
    parameters: dict[str, Any]
    schedules: list[DeploymentSchedule]
    work_pool: str | None = None
    work_queue: str | None = None
    tags: list[str] = field(default_factory=list)
    description: str | None = None
    paused: bool = False
    requirements: list[str] | Path | None = None
    ignore_file: str = ".stratoflowignore"
    package_uri: str | None = None
    package_sha256: str | None = None
    lambda_platform: bool = False
    pip_args: tuple[str, ...] = ()

    def package_key(self) -> tuple[Any, ...]:
        """Plans with equal keys share one package."""
        reqs = self.requirements
        return (self.source_dir, str(reqs) if isinstance(reqs, Path) else tuple(reqs) if reqs is not None else None,
                self.ignore_file, self.lambda_platform, self.pip_args)


# -- resolving the flow and its entrypoint -------------------------------------------------------
def _attribute_name(flow: Flow[..., Any]) -> str:
    """The module attribute holding ``flow`` (usually the function's name)."""
    module = sys.modules.get(flow.fn.__module__)
    for attr, value in vars(module).items() if module is not None else ():
        if value is flow:
            return attr
    return flow.fn.__name__


def _resolve(flow_or_entrypoint: Flow[..., Any] | str, source_dir: Path | str | None) -> tuple[
        Flow[..., Any], str, Path]:
    """(flow, entrypoint relative to the source dir, source dir)."""
    if not isinstance(flow_or_entrypoint, str):
        flow = flow_or_entrypoint
        try:
            file = Path(inspect.getsourcefile(flow.fn) or "").resolve()
        except TypeError:
            file = Path()
        if not file.is_file():
            raise DeploymentError(f"flow {flow.name!r} has no source file to package (defined interactively?): "
                                  "deploy it by entrypoint instead")
        root = Path(source_dir).resolve() if source_dir is not None else file.parent
        if not file.is_relative_to(root):
            raise DeploymentError(f"the file of flow {flow.name!r} ({file}) is not inside the source directory {root}")
        return flow, f"{file.relative_to(root).as_posix()}:{_attribute_name(flow)}", root

    if not isinstance(flow_or_entrypoint, str):
        raise DeploymentError(f"deploy() takes a flow or an entrypoint string, not {type(flow_or_entrypoint).__name__}")
    rel_path, attr = parse_entrypoint(flow_or_entrypoint)
    path = Path(rel_path)
    if path.is_absolute():
        root = Path(source_dir).resolve() if source_dir is not None else path.resolve().parent
    else:
        root = Path(source_dir).resolve() if source_dir is not None else Path.cwd()
        # Relative to the source directory (as in stratoflow.yaml), else to the current
        # directory (as a path typed on the command line beside --source-dir).
        path = root / path if (root / path).is_file() or not (Path.cwd() / path).is_file() else Path.cwd() / path
    path = path.resolve()
    if not path.is_file():
        raise DeploymentError(f"entrypoint file {path} does not exist")
    if not path.is_relative_to(root):
        raise DeploymentError(f"entrypoint file {path} is not inside the source directory {root}")
    entrypoint = f"{path.relative_to(root).as_posix()}:{attr}"
    return load_entrypoint(root, entrypoint), entrypoint, root


# -- parameters and schedules ---------------------------------------------------------------------
def check_parameters(flow: Flow[..., Any], parameters: Mapping[str, Any], what: str = "parameters") -> dict[str, Any]:
    """Defaults checked against the signature; required parameters may be left to each run.
    Returns the given parameters, coerced, as JSON values."""
    try:
        validated = flow.validate_parameters(dict(parameters))
    except ParameterValidationError as exc:
        # A required parameter without a default is left to each run.
        errors = [e for e in exc.errors
                  if not (e.get("type") == "missing" and e.get("loc", ("",))[0] not in parameters)]
        if errors:
            lines = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or '<parameters>'}: {e.get('msg')}"
                              for e in errors)
            raise DeploymentError(f"flow {flow.name!r}: invalid default {what}: {lines}") from None
        validated = dict(parameters)
    return {k: to_jsonable_python(validated.get(k, v), fallback=repr) for k, v in parameters.items()}


_schedule_adapter: TypeAdapter[Any] = TypeAdapter(Schedule)


def schedule_from(item: ScheduleLike) -> DeploymentSchedule:
    """A ``DeploymentSchedule`` from a schedule model, a ``DeploymentSchedule``, or a mapping
    ``{cron|interval|rrule, timezone, active, parameters, ...}`` (the stratoflow.yaml form)."""
    if isinstance(item, DeploymentSchedule):
        return item
    if isinstance(item, CronSchedule | IntervalSchedule | RRuleSchedule):
        return DeploymentSchedule(schedule=item)
    if not isinstance(item, Mapping):
        raise DeploymentError(f"a schedule is a cron/interval/rrule mapping or model, not {type(item).__name__}")
    data = dict(item)
    if "schedule" in data:
        return DeploymentSchedule.model_validate(data)
    kinds = [k for k in ("cron", "interval", "rrule") if k in data]
    if len(kinds) != 1:
        raise DeploymentError(f"a schedule needs exactly one of cron, interval, rrule; got {sorted(data)}")
    outer = {k: data.pop(k) for k in ("active", "parameters", "id") if k in data}
    return DeploymentSchedule.model_validate({**outer, "schedule": {"type": kinds[0], **data}})


def build_schedules(flow: Flow[..., Any], deployment_name: str, parameters: Mapping[str, Any],
                    schedules: Sequence[ScheduleLike] | None, cron: str | None, interval: float | None,
                    timezone: str | None) -> list[DeploymentSchedule]:
    items: list[ScheduleLike] = list(schedules or [])
    if cron is not None and interval is not None:
        raise DeploymentError("give cron or interval, not both (use schedules=[...] for several)")
    if cron is not None:
        items.append({"cron": cron, **({"timezone": timezone} if timezone else {})})
    elif interval is not None:
        items.append({"interval": interval, **({"timezone": timezone} if timezone else {})})
    elif timezone is not None:
        raise DeploymentError("timezone applies to cron or interval; neither was given")
    out = []
    for n, item in enumerate(items):
        try:
            schedule = check_new_schedule(schedule_from(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            raise DeploymentError(f"schedule {n}: {loc}: {first.get('msg')}") from None
        check_parameters(flow, {**parameters, **schedule.parameters}, what=f"parameters of schedule {n}")
        if "id" not in schedule.model_fields_set:
            key = json.dumps([flow.name, deployment_name, n, schedule.schedule.model_dump(mode="json")], sort_keys=True)
            schedule = schedule.model_copy(update={"id": str(uuid.uuid5(_SCHEDULE_IDS, key))})
        out.append(schedule)
    return out


# -- planning, packaging, registering --------------------------------------------------------------
def plan_deployment(
    flow_or_entrypoint: Flow[..., Any] | str,
    *,
    name: str,
    work_pool: str | None = None,
    work_queue: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    schedules: Sequence[ScheduleLike] | None = None,
    cron: str | None = None,
    interval: float | None = None,
    timezone: str | None = None,
    tags: Sequence[str] | None = None,
    description: str | None = None,
    source_dir: Path | str | None = None,
    package_uri: str | None = None,
    package_sha256: str | None = None,
    requirements: list[str] | Path | str | None = None,
    ignore_file: str = ".stratoflowignore",
    paused: bool = False,
    lambda_platform: bool = False,
    pip_args: Sequence[str] = (),
) -> DeploymentPlan:
    """Every check ``deploy`` makes that needs no backend; raises ``DeploymentError``."""
    if not name or not isinstance(name, str):
        raise DeploymentError("a deployment needs a name")
    if (package_uri is None) != (package_sha256 is None):
        raise DeploymentError("package_uri and package_sha256 go together")
    if package_uri is not None and not package_uri.startswith("s3://"):
        raise DeploymentError(f"package_uri {package_uri!r} is not an s3:// URI")
    if package_sha256 is not None:
        package_sha256 = package_sha256.lower()
        if len(package_sha256) != 64 or any(c not in "0123456789abcdef" for c in package_sha256):
            raise DeploymentError(f"package_sha256 {package_sha256!r} is not 64 hex digits")
    if work_queue is not None and work_pool is None:
        raise DeploymentError(f"work queue {work_queue!r} needs a work pool")
    flow, entrypoint, root = _resolve(flow_or_entrypoint, source_dir)
    check_entrypoint(entrypoint)  # what the API and the executor require, checked before any upload
    params = check_parameters(flow, parameters or {})
    return DeploymentPlan(
        flow=flow, name=name, entrypoint=entrypoint, source_dir=root, parameters=params,
        schedules=build_schedules(flow, name, params, schedules, cron, interval, timezone),
        work_pool=work_pool, work_queue=work_queue, tags=sorted(set(tags or ())),
        description=description if description is not None else flow.description, paused=paused,
        requirements=Path(requirements) if isinstance(requirements, str) else requirements,
        ignore_file=ignore_file, package_uri=package_uri, package_sha256=package_sha256,
        lambda_platform=lambda_platform, pip_args=tuple(pip_args))


def blobs_of(client: StratoflowClient) -> S3Blobs:
    """The client's S3 side (packages go to S3 directly, never through the API)."""

    store = client.store
    if not isinstance(store, S3Blobs):
        raise DeploymentError(f"the store {type(store).__name__} cannot hold packages (no S3 access)")
    return store


def check_backend(plan: DeploymentPlan, client: StratoflowClient) -> None:
    """The checks that read the backend: the work pool/queue, an existing package."""
    if plan.work_pool is not None:
        try:
            client.read_work_pool(plan.work_pool)
        except ObjectNotFound:
            raise DeploymentError(f"work pool {plan.work_pool!r} does not exist "
                                  f"(create it: stratoflow work-pool create {plan.work_pool})") from None
        if plan.work_queue is not None and plan.work_queue not in {
                q.name for q in client.read_work_queues(plan.work_pool)}:
            raise DeploymentError(f"work queue {plan.work_queue!r} does not exist in work pool {plan.work_pool!r}")
    if plan.package_uri is not None and plan.package_sha256 is not None:
        # Executors fetch only the stack's own packages (s3://<bucket>/packages/<sha256>.zip):
        # another bucket is refused before it is even asked about the key.
        store = blobs_of(client)
        bucket = store.settings.bucket
        if not plan.package_uri.startswith(f"s3://{bucket}/"):
            raise DeploymentError(f"package_uri {plan.package_uri} is not in this stack's bucket: deployments run "
                                  f"only packages at {package_uri_for(bucket, plan.package_sha256)}")
        if not store.has_blob(plan.package_uri):
            raise DeploymentError(f"package {plan.package_uri} does not exist")
        problem = package_uri_problem(plan.package_uri, plan.package_sha256, bucket)
        if problem is not None:
            raise DeploymentError(problem)


def build_for(plans: Sequence[DeploymentPlan], progress: Progress | None = None) -> Package:
    """One package for plans that share a source directory, requirements and ignore file."""
    first = plans[0]
    return build_package(first.source_dir, entrypoint=[p.entrypoint for p in plans], requirements=first.requirements,
                         ignore_file=first.ignore_file, progress=progress, lambda_platform=first.lambda_platform,
                         pip_args=first.pip_args)


def register(plan: DeploymentPlan, client: StratoflowClient, package_uri: str, package_sha256: str) -> Deployment:
    return client.create_deployment(
        plan.flow.name, plan.name, entrypoint=plan.entrypoint, package_uri=package_uri,
        package_sha256=package_sha256, parameters=plan.parameters,
        parameter_openapi_schema=_schema(plan.flow), work_pool_name=plan.work_pool,
        work_queue_name=plan.work_queue, tags=plan.tags, description=plan.description,
        schedules=plan.schedules, paused=plan.paused, path=".")


def _schema(flow: Flow[..., Any]) -> dict[str, Any]:
    try:
        return flow.parameter_schema()
    except Exception as exc:  # a type pydantic cannot describe in JSON Schema
        raise DeploymentError(f"flow {flow.name!r}: its parameters have no JSON schema: {exc}") from None


def deploy_plans(plans: Sequence[DeploymentPlan], *, client: StratoflowClient | None = None,
                 progress: Progress | None = None) -> list[Deployment]:
    """Check all plans against the backend, build each distinct package once, upload, register."""
    if client is None:

        client = get_client()
    for plan in plans:
        _schema(plan.flow)
        check_backend(plan, client)
    packages: dict[tuple[Any, ...], tuple[str, str]] = {}
    groups: dict[tuple[Any, ...], list[DeploymentPlan]] = {}
    for plan in plans:
        if plan.package_uri is None:
            groups.setdefault(plan.package_key(), []).append(plan)
    built = {key: build_for(group, progress) for key, group in groups.items()}  # every build before any upload
    for key, package in built.items():
        uri = upload_package(package, store=blobs_of(client), progress=progress)
        packages[key] = (uri, package.sha256)
    out = []
    for plan in plans:
        if plan.package_uri is not None and plan.package_sha256 is not None:
            uri, sha = plan.package_uri, plan.package_sha256
        else:
            uri, sha = packages[plan.package_key()]
        out.append(register(plan, client, uri, sha))
    return out


def deploy(
    flow_or_entrypoint: Flow[..., Any] | str,
    *,
    name: str,
    work_pool: str | None = None,
    work_queue: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    schedules: Sequence[ScheduleLike] | None = None,
    cron: str | None = None,
    interval: float | None = None,
    timezone: str | None = None,
    tags: Sequence[str] | None = None,
    description: str | None = None,
    source_dir: Path | str | None = None,
    package_uri: str | None = None,
    package_sha256: str | None = None,
    requirements: list[str] | Path | str | None = None,
    ignore_file: str = ".stratoflowignore",
    paused: bool = False,
    client: StratoflowClient | None = None,
    progress: Progress | None = None,
    lambda_platform: bool = False,
    pip_args: Sequence[str] = (),
) -> Deployment:
    """Deploy a flow (or ``path/to/file.py:flow_fn``) as deployment ``name`` of its flow.

    The source directory (default: the flow file's directory for a flow, the current directory
    for an entrypoint) is zipped with its requirements and uploaded once per content to
    ``packages/<sha256>.zip``; or ``package_uri``/``package_sha256`` name a package already in
    S3. Deploying again updates the deployment and bumps its version.
    """
    plan = plan_deployment(
        flow_or_entrypoint, name=name, work_pool=work_pool, work_queue=work_queue, parameters=parameters,
        schedules=schedules, cron=cron, interval=interval, timezone=timezone, tags=tags, description=description,
        source_dir=source_dir, package_uri=package_uri, package_sha256=package_sha256, requirements=requirements,
        ignore_file=ignore_file, paused=paused, lambda_platform=lambda_platform, pip_args=pip_args)
    return deploy_plans([plan], client=client, progress=progress)[0]


__all__ = ["DeploymentError", "DeploymentPlan", "PackagingError", "deploy", "deploy_plans", "plan_deployment",
           "schedule_from"]
