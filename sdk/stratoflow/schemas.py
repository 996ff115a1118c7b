"""Request and response bodies of the control-plane API.

Pure pydantic: the handler validates requests against these models and Powertools generates the
OpenAPI schema from them. Responses reuse the domain records (``FlowRun``, ``TaskRun``, ``State``,
``Log``) so the API returns exactly what the store keeps.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

from stratoflow.exceptions import BANNED_CHARACTERS, raise_on_name_with_banned_characters
from stratoflow.models import Log, WorkPoolType
from stratoflow.orchestration import OrchestrationResult, ResponseStatus
from stratoflow.packages import entrypoint_problem, relative_path_problem
from stratoflow.schedules.checks import DeploymentScheduleIn
from stratoflow.states import State, StateDetails, StateType, now

# Limits. API Gateway accepts up to 10 MB and Lambda 6 MB; the API keeps requests far below both.
MAX_BODY_BYTES = 1024 * 1024
MAX_LOG_MESSAGE_BYTES = 64 * 1024
MAX_LOGS_PER_REQUEST = 1000
MAX_NAME_LENGTH = 256
MAX_STATE_MESSAGE_LENGTH = 16 * 1024

_LEVEL_NAMES = {"CRITICAL": 50, "FATAL": 50, "ERROR": 40, "WARNING": 30, "WARN": 30, "INFO": 20, "DEBUG": 10,
                "NOTSET": 0}


# A level name in any case ("INFO", "info"), spelled as ASCII classes so the pattern means the
# same to Python, to pydantic and to JSON Schema (ECMA-262) clients: the one definition of a name.
LEVEL_NAME_PATTERN = "^(?:" + "|".join("".join(f"[{c}{c.lower()}]" for c in n) for n in _LEVEL_NAMES) + ")$"
_LEVEL_NAME = re.compile(LEVEL_NAME_PATTERN)


def _level(value: Any) -> Any:
    """Accept a level as a number or as a logging level name ("INFO")."""
    if isinstance(value, str) and _LEVEL_NAME.fullmatch(value):
        return _LEVEL_NAMES[value.upper()]
    return value


# The JSON schema says both forms (what ``_level`` accepts), not only the integer it becomes.
LogLevel = Annotated[int, Field(ge=0, le=100), BeforeValidator(_level), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 0, "maximum": 100},
              {"type": "string", "pattern": LEVEL_NAME_PATTERN}],
    "description": "10 DEBUG ... 50 CRITICAL, or a level name"})]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
# A name that becomes a URL path segment (a flow's, a deployment's, a concurrency limit's tag):
# none of Prefect's banned characters (``/ % & > <``), or it could be created but never read or
# deleted by its route. Run names, tags in general and ids stay ``Name``, as in Prefect. The
# validator words the refusal as Prefect does; the pattern tells the same rule to the schema.
OBJECT_NAME_PATTERN = "^[^" + "".join(BANNED_CHARACTERS) + "]*$"  # none needs escaping in a class
ObjectName = Annotated[Name, AfterValidator(raise_on_name_with_banned_characters),
                       Field(json_schema_extra={"pattern": OBJECT_NAME_PATTERN})]


# ``packaging.relative_path_problem`` and ``check_entrypoint`` as regular expressions, for the
# schema (tests/unit/test_schema_patterns.py holds them equal; packaging is not imported here: its
# package pulls in deploy, too slow for a cold start). Only negated ASCII classes and plain
# groups: they mean the same in Python and in JSON Schema's ECMA-262. A component is anything but
# "..", without "/", "\\" or NUL; the first is not empty (absolute) nor a drive ("C:").
_CHAR = r"[^/\\\x00]"
_COMPONENT = rf"(?:[^/\\\x00.]{_CHAR}*|\.(?:[^/\\\x00.]{_CHAR}*)?|\.\.{_CHAR}+)"
_FIRST = rf"(?:[^/\\\x00.A-Za-z]{_CHAR}*|[A-Za-z](?:[^/\\\x00:]{_CHAR}*)?|\.(?:[^/\\\x00.]{_CHAR}*)?|\.\.{_CHAR}+)"
RELATIVE_PATH_PATTERN = rf"^{_FIRST}(?:/{_COMPONENT}?)*$"
_ONLY_FILE = rf"(?:[^/\\\x00A-Za-z]{_CHAR}*|[A-Za-z](?:[^/\\\x00:]{_CHAR}*)?)?\.py"
ENTRYPOINT_PATTERN = rf"^(?:{_FIRST}(?:/{_COMPONENT}?)*/{_CHAR}*\.py|{_ONLY_FILE}):[^:]+$"


def _utc(value: datetime | None) -> datetime | None:
    """Timestamps without a zone are taken as UTC (not the server's local time)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# Cursors are opaque: only one a page returned is read (else 422). The schema cannot say "one
# this API returned", so it names the kind of token with a format of its own (OpenAPI formats are
# open-ended); a client never builds one.
FLOW_RUN_CURSOR_FORMAT = "stratoflow-flow-run-cursor"
LOG_CURSOR_FORMAT = "stratoflow-log-cursor"
FlowRunCursor = Annotated[str, Field(max_length=2048, json_schema_extra={"format": FLOW_RUN_CURSOR_FORMAT})]
LogCursor = Annotated[str, Field(max_length=2048, json_schema_extra={"format": LOG_CURSOR_FORMAT})]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StateIn(_Body):
    """A proposed state. The server sets its id and timestamp; a SCHEDULED state without a
    ``scheduled_time`` is scheduled for now. Pass ``state_details.transition_id`` to make a retried
    request safe: a transition already recorded is answered with the current state."""

    type: StateType
    name: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=MAX_STATE_MESSAGE_LENGTH)
    state_details: StateDetails = Field(default_factory=StateDetails)

    def to_state(self) -> State:
        details = self.state_details.model_copy()
        for attr in ("scheduled_time", "cache_expiration", "pause_timeout"):
            setattr(details, attr, _utc(getattr(details, attr)))
        if self.type == StateType.SCHEDULED and details.scheduled_time is None:
            details.scheduled_time = now()
        return State(type=self.type, name=self.name or "", message=self.message, state_details=details)


class SetStateIn(_Body):
    state: StateIn
    # IAM sees paths, never bodies: forcing (skipping the orchestration rules) is its own route,
    # ``.../set_state/force``, so it can be granted apart. Kept for clients that send false.
    force: bool = Field(default=False, description=(
        "must be false here: to skip the orchestration rules (an administrative override) POST the "
        "same body to .../set_state/force, a route IAM grants separately; true is refused with 403"))


class SetStateForceIn(SetStateIn):
    """The body of ``.../set_state/force``: ``force`` may be left out or true, never false."""

    force: Literal[True] = Field(default=True, description="true or left out: this route always forces")


class SetStateOut(BaseModel):
    status: ResponseStatus
    state: State | None = Field(description="the state the run is in afterwards")
    reason: str | None = None
    rule: str | None = None
    delay_seconds: float | None = None

    @classmethod
    def from_result(cls, result: OrchestrationResult) -> SetStateOut:
        return cls(status=result.status, state=result.state, reason=result.reason, rule=result.rule,
                   delay_seconds=result.delay_seconds)


class FlowRunCreate(_Body):
    flow_name: ObjectName
    name: Name | None = Field(default=None, description="the run's name; generated when omitted")
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[Name] = Field(default_factory=list, max_length=100)
    state: StateIn | None = Field(default=None, description="initial state; default Scheduled for now")
    idempotency_key: Name | None = Field(
        default=None, description="a second create with the same flow name and key returns the first run")


class FlowRunFilter(_Body):
    flow_name: Name | None = None
    deployment_id: Name | None = None
    state_types: list[StateType] | None = Field(default=None, max_length=len(StateType))
    tags: list[Name] | None = Field(default=None, max_length=50, description="runs carrying all of these tags")
    created_after: datetime | None = Field(default=None, description="created at or after (inclusive)")
    created_before: datetime | None = Field(default=None, description="created before (exclusive)")
    scheduled_before: datetime | None = Field(
        default=None, description="with state_types: runs that entered their state (scheduled runs: whose "
        "scheduled time is) at or before this, oldest first — the due runs")
    cursor: FlowRunCursor | None = Field(default=None, description="the x-next-cursor header of the previous page")
    limit: int = Field(default=200, ge=1, le=1000)


# Log timestamps the API accepts: dated [2000, 3000). Before 2000 is a broken clock (and before
# 1970 a TTL in the past); near year 9999 the TTL (timestamp + retention) overflows. Up to 3000
# leaves centuries of retention and keeps fixed future dates (tests, replays) working.
LOG_TIME_MIN = datetime(2000, 1, 1, tzinfo=UTC)
LOG_TIME_MAX = datetime(3000, 1, 1, tzinfo=UTC)


class LogIn(_Body):
    """One log line. Lines are stored by flow run, timestamp and ``id``: a line sent again with
    the same id and timestamp (a retried batch) replaces itself instead of being stored twice."""

    # ``_id_needs_timestamp`` in the schema: no id, or a timestamp beside it.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"properties": {"id": {"type": "null"}}},
        {"required": ["timestamp"], "properties": {"timestamp": {"type": "string"}}}]})

    flow_run_id: Name
    task_run_id: Name | None = None
    name: Name = "stratoflow"
    level: LogLevel = 20
    message: str
    timestamp: Annotated[datetime, Field(json_schema_extra={"pattern": "^2[0-9]{3}-"})] | None = Field(
        default=None, description="when it was emitted, dated (as written) from 2000-01-01 to 2999-12-31; "
                                  "default now (UTC)")
    id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$",
        description="unique within the flow run, chosen by the client when the line is emitted; with "
                    "`timestamp` it makes writing the line idempotent. Generated when omitted (then a "
                    "retried request stores the line again)")

    @field_validator("message")
    @classmethod
    def _message_size(cls, value: str) -> str:
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_LOG_MESSAGE_BYTES:
            raise ValueError(f"message is {size} bytes; the limit is {MAX_LOG_MESSAGE_BYTES} (64 KiB)")
        return value

    @field_validator("timestamp")
    @classmethod
    def _timestamp_in_range(cls, value: datetime | None) -> datetime | None:
        # The date as written, which the schema's pattern can state (an offset can move the UTC
        # instant a few hours past either end: still centuries from a TTL overflow).
        if value is None:
            return None
        if not LOG_TIME_MIN.year <= value.year < LOG_TIME_MAX.year:
            raise ValueError(f"{value.isoformat()} is out of range: from 2000-01-01 to 2999-12-31")
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC)

    @field_validator("id")
    @classmethod
    def _id_needs_timestamp(cls, value: str | None, info: Any) -> str | None:
        # The key is time#id: stamped on arrival instead, a resent line would be a new one.
        if value is not None and "timestamp" in info.data and info.data["timestamp"] is None:
            raise ValueError("a line with an id needs its timestamp too (the two identify it)")
        return value

    def to_log(self) -> Log:
        return Log(flow_run_id=self.flow_run_id, task_run_id=self.task_run_id, name=self.name, level=self.level,
                   message=self.message, timestamp=self.timestamp or now(), id=self.id)


class LogsWritten(BaseModel):
    written: int


class LogPageOut(BaseModel):
    logs: list[Log]
    next_cursor: LogCursor | None = Field(
        description="pass back as `cursor` for the logs after this page (also to follow a running flow); "
                    "null when the run has no logs yet. An empty page means nothing more has been written yet.")


class Health(BaseModel):
    status: str = "ok"
    version: str


class ErrorOut(BaseModel):
    """Every error response: one line in ``error``, sometimes with details beside it."""

    model_config = ConfigDict(extra="allow")

    error: str


# -- deployments, work pools, concurrency limits, task-run filters ---------------------------------
# Work pool and queue names become SQS queue names (a later issue), so they keep to SQS's alphabet.
PoolName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
                                description="letters, digits, '-' and '_' (it names the pool's SQS queue)")]


def _these_together(*names: str) -> dict[str, Any]:
    """JSON Schema for "all of ``names`` are null (or left out), or all are strings"."""
    return {"anyOf": [{"properties": {n: {"type": "null"} for n in names}},
                      {"required": list(names), "properties": {n: {"type": "string"} for n in names}}]}


class DeploymentCreate(_Body):
    """Create the deployment of ``flow_name`` called ``name``, or update it (bumping ``version``)."""

    # What the operation checks across fields, where the schema can say it: package_uri and
    # package_sha256 go together; work_queue_name needs work_pool_name.
    model_config = ConfigDict(json_schema_extra={"allOf": [
        _these_together("package_uri", "package_sha256"),
        {"anyOf": [{"properties": {"work_queue_name": {"type": "null"}}},
                   {"required": ["work_pool_name"], "properties": {"work_pool_name": {"type": "string"}}}]}]})

    name: ObjectName
    flow_name: ObjectName
    description: str | None = Field(default=None, max_length=MAX_STATE_MESSAGE_LENGTH)
    entrypoint: str | None = Field(default=None, max_length=1024, description="path/to/file.py:flow_function",
                                   json_schema_extra={"pattern": ENTRYPOINT_PATTERN})
    package_uri: str | None = Field(default=None, max_length=2048,
                                    description="where this stack keeps the package of package_sha256")
    package_sha256: str | None = Field(default=None, max_length=64, json_schema_extra={"pattern": "^[0-9a-fA-F]{64}$"})
    parameters: dict[str, Any] = Field(default_factory=dict, description="defaults for every run")
    parameter_openapi_schema: dict[str, Any] = Field(
        default_factory=dict, description="JSON Schema the merged parameters of a run must satisfy")
    work_pool_name: PoolName | None = None
    work_queue_name: PoolName | None = None
    tags: list[Name] = Field(default_factory=list, max_length=100)
    paused: bool = False
    concurrency_limit: int | None = Field(default=None, ge=0)
    schedules: list[DeploymentScheduleIn] = Field(default_factory=list, max_length=50)
    path: str | None = Field(default=None, max_length=1024, description="root the entrypoint is relative to",
                             json_schema_extra={"pattern": f"^$|{RELATIVE_PATH_PATTERN}"})

    # Executors import the entrypoint from the package and fetch only the stack's own packages:
    # a file outside the package (absolute, `..`) is refused here; package_uri is checked against
    # the stack's bucket in the operation (the bucket is a setting, not known to the schema).
    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_inside_the_package(cls, value: str | None) -> str | None:
        problem = None if value is None else entrypoint_problem(value)
        if problem is not None:
            raise ValueError(problem)  # a 422 naming body.entrypoint
        return value

    @field_validator("path")
    @classmethod
    def _path_inside_the_package(cls, value: str | None) -> str | None:
        if value:
            problem = relative_path_problem(value)
            if problem is not None:
                raise ValueError(f"path {value!r} {problem}")
        return value

    @field_validator("package_sha256")
    @classmethod
    def _sha256_hex(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value)):
            raise ValueError(f"package_sha256 {value!r} is not 64 hex digits")
        return value.lower() if value is not None else None


class DeploymentFilter(_Body):
    flow_name: Name | None = None
    work_pool_name: PoolName | None = None
    paused: bool | None = None
    tags: list[Name] | None = Field(default=None, max_length=100, description="deployments with all of these tags")
    limit: int = Field(default=200, ge=1, le=1000)


class DeploymentRunCreate(_Body):
    name: Name | None = Field(default=None, description="the run's name; generated when omitted")
    parameters: dict[str, Any] = Field(default_factory=dict, description="merged over the deployment's defaults")
    tags: list[Name] = Field(default_factory=list, max_length=100, description="added to the deployment's tags")
    state: StateIn | None = Field(default=None, description="initial state; default Scheduled for now")
    idempotency_key: Name | None = Field(
        default=None, description="a second create with the same flow name and key returns the first run")


class TaskRunFilter(_Body):
    flow_run_id: Name
    state_types: list[StateType] | None = Field(default=None, max_length=len(StateType))
    limit: int = Field(default=1000, ge=1, le=10000)


class WorkPoolCreate(_Body):
    name: PoolName
    type: WorkPoolType = WorkPoolType.LAMBDA
    description: str | None = Field(default=None, max_length=MAX_STATE_MESSAGE_LENGTH)
    concurrency_limit: int | None = Field(default=None, ge=0)


class WorkQueueCreate(_Body):
    name: PoolName
    priority: int = Field(default=1, ge=1, le=1000, description="1 is served first")
    concurrency_limit: int | None = Field(default=None, ge=0)


class ConcurrencyLimitCreate(_Body):
    tag: ObjectName = Field(description="the tag (it names the limit's path: no '/', '%', '&', '>' or '<')")
    limit: int = Field(ge=0, description="task runs with this tag that may run at once (0 blocks them)")


class ResumeIn(_Body):
    run_input: dict[str, Any] | None = Field(default=None, description="input for a pause that waits for it")


class SlotsRequest(_Body):
    """Take (increment) or give back (decrement) a slot of each tag's limit for ``holder``."""

    tags: list[Name] = Field(min_length=1, max_length=50)
    holder: Name = Field(description="the task run that holds the slots")


class SlotsAnswer(BaseModel):
    acquired: bool
    full: str | None = Field(default=None, description="the first tag whose limit is full (nothing was taken)")


class Deleted(BaseModel):
    deleted: str
