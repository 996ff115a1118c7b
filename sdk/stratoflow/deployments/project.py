"""``stratoflow.yaml``: several deployments of one project, deployed together.

```yaml
requirements: requirements.txt        # optional, default for every deployment (a file or a list)
ignore_file: .stratoflowignore        # optional
deployments:
  - name: prod
    entrypoint: flows/etl.py:etl      # relative to the directory of stratoflow.yaml
    work_pool: {name: default, work_queue_name: high}
    parameters: {n: 10}
    schedules:
      - {cron: "0 6 * * *", timezone: Europe/Paris}
      - {interval: 3600, active: false, parameters: {n: 1}}
    tags: [etl]
```

Every key is checked (a typo is an error naming the deployment and the field, never dropped),
and every deployment is planned and checked before the first upload. Deployments sharing the
source directory and requirements share one package, built once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stratoflow.deployments.deploy import DeploymentError, DeploymentPlan, deploy_plans, plan_deployment
from stratoflow.deployments.packaging import Progress

if TYPE_CHECKING:
    from stratoflow.client import StratoflowClient
    from stratoflow.models import Deployment

PROJECT_FILE = "stratoflow.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkPoolSpec(_Strict):
    name: str
    work_queue_name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        """``work_pool: default`` is short for ``work_pool: {name: default}``."""
        return {"name": value} if isinstance(value, str) else value


class ScheduleSpec(_Strict):
    cron: str | None = None
    interval: float | None = None
    rrule: str | None = None
    timezone: str | None = None
    day_or: bool | None = None
    anchor_date: datetime | None = None
    active: bool = True
    parameters: dict[str, Any] = Field(default_factory=dict)

    def as_mapping(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class DeploymentSpec(_Strict):
    name: str
    entrypoint: str
    work_pool: WorkPoolSpec | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    requirements: list[str] | str | None = None
    paused: bool = False


class ProjectSpec(_Strict):
    deployments: list[DeploymentSpec] = Field(min_length=1)
    requirements: list[str] | str | None = None
    ignore_file: str = ".stratoflowignore"


def _where(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if part in ("str", "list[str]"):  # union branches pydantic names
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def load_project(path: Path | str) -> tuple[ProjectSpec, Path]:
    """The parsed file and the project directory (the file's directory). ``path`` is the file
    or a directory holding ``stratoflow.yaml``."""
    # cold start: PyYAML loads only when a project file is read (stratoflow deploy)
    import yaml

    file = Path(path)
    if file.is_dir():
        file = file / PROJECT_FILE
    if not file.is_file():
        raise DeploymentError(f"project file {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DeploymentError(f"{file}: not valid YAML: {str(exc).splitlines()[0]}") from None
    try:
        return ProjectSpec.model_validate(data if data is not None else {}), file.parent.resolve()
    except ValidationError as exc:
        # A typo is reported as the unknown key rather than as the required key it misspelt.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise DeploymentError(f"{file}: {_where(first['loc'])}: {msg}{more}") from None


def _requirements(value: list[str] | str | None, root: Path) -> list[str] | Path | None:
    if isinstance(value, str):
        return root / value
    return value


def plan_project(spec: ProjectSpec, root: Path, names: Sequence[str] | None = None) -> list[DeploymentPlan]:
    """Plans of the named deployments (all when ``names`` is None); a name is ``name`` or ``flow/name``."""
    chosen = list(enumerate(spec.deployments))
    plans: list[DeploymentPlan] = []
    for index, dep in chosen:
        pool = dep.work_pool.name if dep.work_pool else None
        queue = dep.work_pool.work_queue_name if dep.work_pool else None
        if names is not None and dep.name not in names and not any("/" in n for n in names):
            continue
        try:
            plan = plan_deployment(
                dep.entrypoint, name=dep.name, work_pool=pool, work_queue=queue, parameters=dep.parameters,
                schedules=[s.as_mapping() for s in dep.schedules], tags=dep.tags, description=dep.description,
                source_dir=root, requirements=_requirements(
                    dep.requirements if dep.requirements is not None else spec.requirements, root),
                ignore_file=spec.ignore_file, paused=dep.paused)
        except DeploymentError as exc:
            raise DeploymentError(f"deployments[{index}] ({dep.name}): {exc}") from exc
        if names is not None and dep.name not in names and f"{plan.flow.name}/{dep.name}" not in names:
            continue
        plans.append(plan)
    seen: set[tuple[str, str]] = set()
    for plan in plans:
        key = (plan.flow.name, plan.name)
        if key in seen:
            raise DeploymentError(f"deployment {key[0]}/{key[1]} is declared twice")
        seen.add(key)
    if names is not None:
        found = {p.name for p in plans} | {f"{p.flow.name}/{p.name}" for p in plans}
        missing = [n for n in names if n not in found]
        if missing:
            raise DeploymentError(f"no deployment {missing[0]!r} in the project (it has: "
                                  f"{', '.join(d.name for d in spec.deployments)})")
    return plans


def deploy_project(path: Path | str, names: Sequence[str] | None = None, client: StratoflowClient | None = None,
                   progress: Progress | None = None) -> list[Deployment]:
    """Deploy every deployment of the project file (or the ``names``), in file order."""
    spec, root = load_project(path)
    return deploy_plans(plan_project(spec, root, names), client=client, progress=progress)
