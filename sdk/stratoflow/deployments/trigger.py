"""Triggering deployments from code: ``run_deployment``, as Prefect users call it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stratoflow.client import get_client
from stratoflow.exceptions import StratoflowError
from stratoflow.settings import get_settings

if TYPE_CHECKING:
    from stratoflow.client import StratoflowClient
    from stratoflow.models import FlowRun


def wait_for_flow_run(flow_run_id: str, *, timeout: float | None = None, poll_interval: float = 2.0,
                      client: StratoflowClient | None = None,
                      on_update: Callable[[FlowRun], None] | None = None) -> FlowRun:
    """Poll the run until it is final (or ``timeout`` seconds pass) and return it as it is then.

    Polling starts fast (0.1 s) and backs off to ``poll_interval``: short runs return quickly
    without a long-running caller hammering the API."""

    client = client or get_client()
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.1
    while True:
        run = client.read_flow_run(flow_run_id)
        if on_update is not None:
            on_update(run)
        if run.state is not None and run.state.is_final():
            return run
        if deadline is not None and time.monotonic() >= deadline:
            return run
        pause = delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))
        time.sleep(pause)
        delay = min(delay * 1.5, poll_interval)


def run_deployment(
    name: str,
    *,
    parameters: dict[str, Any] | None = None,
    scheduled_time: datetime | None = None,
    idempotency_key: str | None = None,
    tags: Sequence[str] = (),
    flow_run_name: str | None = None,
    timeout: float | None = None,
    poll_interval: float = 2.0,
    client: StratoflowClient | None = None,
) -> FlowRun:
    """Create a run of deployment ``name`` (``flow-name/deployment-name`` or an id) and, by
    default, wait for it to finish; returns the flow run (``run.state.result()`` gives its value).

    ``timeout=0`` returns the new run at once; ``timeout=None`` waits as long as it takes;
    otherwise the run is returned as it is after ``timeout`` seconds. Parameters are checked
    against the deployment's schema before anything is created (422 naming the field). With the
    same ``idempotency_key`` a second call returns the first call's run.
    """

    settings = get_settings()
    if timeout != 0 and client is None and settings.resolved_backend == "embedded" and not settings.api_url:
        raise StratoflowError("nothing executes deployment runs on the embedded backend (no executor consumes "
                              "work pools in this process): start `stratoflow dev` and use its settings, or "
                              "pass timeout=0 to only create the run")
    client = client or get_client()
    run = client.create_flow_run_from_deployment(name, parameters=parameters, tags=tags, name=flow_run_name,
                                                 idempotency_key=idempotency_key, scheduled_time=scheduled_time)
    if timeout == 0:
        return run
    return wait_for_flow_run(run.id, timeout=timeout, poll_interval=poll_interval, client=client)
