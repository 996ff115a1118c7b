"""Stratoflow: Prefect-style flows and tasks, orchestrated serverlessly on AWS.

    from stratoflow import flow, task, get_run_logger

The names below are imported lazily so ``import stratoflow`` stays cheap (Lambda cold starts).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "flow": "stratoflow.flows",
    "Flow": "stratoflow.flows",
    "task": "stratoflow.tasks",
    "Task": "stratoflow.tasks",
    "unmapped": "stratoflow.tasks",
    "exponential_backoff": "stratoflow.tasks",
    "get_run_logger": "stratoflow.logs",
    "get_client": "stratoflow.client",
    "tags": "stratoflow.context",
    "get_run_context": "stratoflow.context",
    "State": "stratoflow.states",
    "StateType": "stratoflow.states",
    "wait": "stratoflow.futures",
    "get_settings": "stratoflow.settings",
    "run_deployment": "stratoflow.deployments.trigger",
    "pause_flow_run": "stratoflow.pause",
    "suspend_flow_run": "stratoflow.pause",
    "resume_flow_run": "stratoflow.pause",
}

if TYPE_CHECKING:
    from stratoflow.client import get_client
    from stratoflow.context import get_run_context, tags
    from stratoflow.deployments.trigger import run_deployment
    from stratoflow.flows import Flow, flow
    from stratoflow.futures import wait
    from stratoflow.logs import get_run_logger
    from stratoflow.pause import pause_flow_run, resume_flow_run, suspend_flow_run
    from stratoflow.settings import get_settings
    from stratoflow.states import State, StateType
    from stratoflow.tasks import Task, exponential_backoff, task, unmapped


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stratoflow' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Flow",
    "State",
    "StateType",
    "Task",
    "exponential_backoff",
    "flow",
    "get_client",
    "get_run_context",
    "get_run_logger",
    "get_settings",
    "pause_flow_run",
    "resume_flow_run",
    "run_deployment",
    "suspend_flow_run",
    "tags",
    "task",
    "unmapped",
    "wait",
]
