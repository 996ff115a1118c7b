"""Errors users and handlers see. Each names what was wrong so it can be shown as one line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stratoflow.models import FlowRun, TaskRun
    from stratoflow.orchestration import OrchestrationResult


class StratoflowError(Exception):
    """Base class for every error Stratoflow raises on purpose."""


class ObjectNotFound(StratoflowError):
    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class ObjectAlreadyExists(StratoflowError):
    pass


class ObjectVersionConflict(StratoflowError):
    """A conditional write of an object found another version than the one expected."""

    def __init__(self, kind: str, key: str, expected: int | None) -> None:
        super().__init__(f"{kind} {key!r} changed concurrently (expected version {expected}); read it and retry")
        self.kind = kind
        self.key = key
        self.expected = expected


class StaleRunError(StratoflowError):
    """A conditional write lost a race: someone else changed the run first.

    Carries the run as it is now so the caller can re-apply the policy to the fresh state.
    """

    def __init__(self, current: FlowRun | TaskRun) -> None:
        super().__init__(f"run {current.id} changed concurrently (now version {current.version}, "
                         f"state {current.state!r})")
        self.current = current


class TransitionRefused(StratoflowError):
    """The orchestration policy refused a transition (ABORT), with the rule's reason."""

    def __init__(self, result: OrchestrationResult) -> None:
        super().__init__(f"{result.rule}: {result.reason}")
        self.result = result


class ParameterValidationError(StratoflowError, ValueError):
    """Flow parameters did not validate against the flow's signature; no run was created."""

    def __init__(self, flow_name: str, errors: list[dict[str, Any]]) -> None:
        lines = []
        for err in errors:
            loc = ".".join(str(p) for p in err.get("loc", ())) or "<parameters>"
            lines.append(f"  - {loc}: {err.get('msg')}")
        super().__init__(f"Flow {flow_name!r} received invalid parameters:\n" + "\n".join(lines))
        self.errors = errors
        self.fields = [".".join(str(p) for p in e.get("loc", ())) for e in errors]


class Abort(StratoflowError):
    """Raised inside the engine when the policy aborted the run's transition."""


class UpstreamTaskError(StratoflowError):
    """A task's upstream (argument or wait_for) did not complete."""


class TaskRunTimeout(TimeoutError):
    pass


class FlowRunTimeout(TimeoutError):
    pass


class MissingResult(StratoflowError):
    """The state has no persisted result to return (persist_result was off or it was dropped)."""


# Prefect's banned characters (``prefect._internal.schemas.validators.BANNED_CHARACTERS``): names
# of flows, deployments and concurrency-limit tags become URL path segments (``/flows/<name>``,
# ``/concurrency_limits/<tag>``, ``FLOW/NAME``); API Gateway decodes ``%2F`` before routing, so a
# name with ``/`` could be created but never read or deleted again.
BANNED_CHARACTERS = ["/", "%", "&", ">", "<"]


class InvalidNameError(StratoflowError, ValueError):
    """Raised when a name contains characters that are not permitted (as Prefect's)."""


def raise_on_name_with_banned_characters(name: str | None) -> str | None:
    """``name`` unchanged, or ``InvalidNameError`` with Prefect's message when it holds a banned
    character. A ``ValueError``, so pydantic reports it as the field's error (422 on the API)."""
    if name is not None and any(c in name for c in BANNED_CHARACTERS):
        raise InvalidNameError(f"Name {name!r} contains an invalid character. "
                               f"Must not contain any of: {BANNED_CHARACTERS}.")
    return name


# -- requests the service layer refuses ------------------------------------------------------------
class RequestRefused(StratoflowError):
    """A request the service layer (``stratoflow.control``) refuses, with nothing written.

    ``details`` go into the API's error body beside the one-line message. ``status_code`` is the
    HTTP status the API answers with, so a client raises the same class over HTTP as in process
    (as Prefect's client errors carry the response's status)."""

    status_code = 400

    def __init__(self, message: str, *, status_code: int | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.extra = details

    def body(self) -> dict[str, Any]:
        # One line, always: callers show it as is.
        return {"error": " ".join(self.message.split()), **self.extra}


class BadRequest(RequestRefused):
    status_code = 400


class Forbidden(RequestRefused):
    status_code = 403


class NotFound(RequestRefused):
    status_code = 404


class Conflict(RequestRefused):
    status_code = 409


class PayloadTooLarge(RequestRefused):
    status_code = 413


class UnsupportedMediaType(RequestRefused):
    status_code = 415


class Unprocessable(RequestRefused):
    status_code = 422


class UpstreamRefused(RequestRefused):
    """An AWS service the request needs refused it (e.g. Lambda would not map a queue to the
    executor): nothing was recorded."""

    status_code = 502

