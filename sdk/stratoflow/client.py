"""``get_client()``: read back flows, runs, state history and logs (and set states).

With the store backend (embedded or AWS) the client reads DynamoDB directly; an HTTP client for
``STRATOFLOW_API_URL`` implements the same methods (see the API issue).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from stratoflow.models import Flow, FlowRun, Log, TaskRun
from stratoflow.orchestration import OrchestrationResult, RunKind
from stratoflow.services import set_run_state
from stratoflow.states import State, StateType
from stratoflow.storage.base import LogPage, Store


class StratoflowClient:
    def __init__(self, store: Store) -> None:
        self.store = store

    # flows
    def read_flow(self, name: str) -> Flow:
        return self.store.read_flow(name)

    # flow runs
    def read_flow_run(self, flow_run_id: str) -> FlowRun:
        run = self.store.read_run(RunKind.FLOW, flow_run_id)
        assert isinstance(run, FlowRun)
        return run

    def read_flow_runs(
        self,
        *,
        flow_name: str | None = None,
        deployment_id: str | None = None,
        state_types: Sequence[StateType | str] | None = None,
        scheduled_before: datetime | None = None,
        limit: int = 200,
    ) -> list[FlowRun]:
        types = [StateType(t) for t in state_types] if state_types else None
        return self.store.list_flow_runs(flow_name=flow_name, deployment_id=deployment_id, state_types=types,
                                         scheduled_before=scheduled_before, limit=limit)

    def read_flow_run_parameters(self, flow_run_id: str) -> dict[str, object]:
        """The run's parameters, loaded from S3 when they were too large for the run item."""
        import json

        run = self.read_flow_run(flow_run_id)
        if run.parameters_ref:
            return dict(json.loads(self.store.get_blob(run.parameters_ref)))
        return run.parameters

    def read_flow_run_states(self, flow_run_id: str) -> list[State]:
        return self.read_flow_run(flow_run_id).state_history

    def set_flow_run_state(self, flow_run_id: str, state: State, force: bool = False) -> OrchestrationResult:
        result, _ = set_run_state(self.store, RunKind.FLOW, flow_run_id, state, force=force)
        return result

    # task runs
    def read_task_run(self, task_run_id: str) -> TaskRun:
        run = self.store.read_run(RunKind.TASK, task_run_id)
        assert isinstance(run, TaskRun)
        return run

    def read_task_runs(self, flow_run_id: str) -> list[TaskRun]:
        return sorted(self.store.list_task_runs(flow_run_id), key=lambda r: (r.start_time or r.created, r.created))

    def read_task_run_states(self, task_run_id: str) -> list[State]:
        return self.read_task_run(task_run_id).state_history

    def set_task_run_state(self, task_run_id: str, state: State, force: bool = False) -> OrchestrationResult:
        result, _ = set_run_state(self.store, RunKind.TASK, task_run_id, state, force=force)
        return result

    # logs
    def read_logs(self, flow_run_id: str, *, task_run_id: str | None = None, min_level: int = 0,
                  cursor: str | None = None, limit: int = 1000) -> LogPage:
        return self.store.read_logs(flow_run_id, cursor=cursor, limit=limit, task_run_id=task_run_id,
                                    min_level=min_level)

    def iter_logs(self, flow_run_id: str, **kwargs: object) -> Iterator[Log]:
        """Every stored log line of the run, oldest first, across pages."""
        cursor: str | None = None
        while True:
            page = self.read_logs(flow_run_id, cursor=cursor, **kwargs)  # type: ignore[arg-type]
            yield from page.logs
            if not page.logs or page.next_cursor is None:
                return
            cursor = page.next_cursor

    def __enter__(self) -> StratoflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def get_client() -> StratoflowClient:
    """A client for the configured backend. Usable as a context manager, like Prefect's."""
    from stratoflow.storage import get_store

    return StratoflowClient(get_store())
