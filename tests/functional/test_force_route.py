# ruff: noqa: F811 - pytest fixtures imported from test_api_handler are redefined as parameters
"""Forcing a state is its own route, so IAM can grant it apart from proposing one.

``POST /<kind>_runs/<id>/set_state`` only proposes: ``force: true`` there is refused (403, naming
the force route) and writes nothing; ``POST .../set_state/force`` skips the rules. The SDK sends a
forced state to the force route; docs/api.md's policy lets an operator propose but not force.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_api_handler import (  # noqa: F401 - fixtures shared with the handler tests
    FakeLambdaContext,
    Reply,
    api,
    assert_error,
    create_run,
    handler,
    http_event,
    journal,
    shared_home,
    stratoflow_home,
)

from stratoflow._http import HttpTransport
from stratoflow.orchestration import ResponseStatus, RunKind
from stratoflow.settings import Settings
from stratoflow.states import Completed, Running, StateType

Api = Callable[..., Reply]
ROOT = Path(__file__).resolve().parents[2]


def _finished_run(api: Api) -> dict[str, Any]:
    """A Completed flow run: the rules refuse any move out of it."""
    run = create_run(api, f"force-{uuid.uuid4().hex[:8]}", state={"type": "RUNNING"})
    assert api("POST", f"/flow_runs/{run['id']}/set_state",
               body={"state": {"type": "COMPLETED"}}).body["status"] == "ACCEPT"
    return run


def _task_run_id(api: Api, client: Any, flow_run_id: str) -> str:
    """A Completed task run of ``flow_run_id``, written through the store (as the engine does)."""
    from stratoflow.models import TaskRun

    task = TaskRun(name="t-1", task_key="t", flow_run_id=flow_run_id, state=Completed(),
                   state_history=[Completed()])
    return str(client.store.create_run(RunKind.TASK, task).id)


@pytest.mark.parametrize("kind", ["flow", "task"])
def test_the_propose_route_refuses_force_and_names_the_force_route(api: Api, client: Any, kind: str,
                                                                  journal: Callable[[], int]) -> None:
    run = _finished_run(api)
    run_id = run["id"] if kind == "flow" else _task_run_id(api, client, run["id"])
    writes = journal()
    reply = api("POST", f"/{kind}_runs/{run_id}/set_state", body={"state": {"type": "RUNNING"}, "force": True})
    assert_error(reply, 403, "body.force", f"/{kind}_runs/<id>/set_state/force")
    assert reply.body["force_route"] == f"/{kind}_runs/{run_id}/set_state/force"
    assert journal() == writes
    stored = client.read_flow_run(run_id) if kind == "flow" else client.read_task_run(run_id)
    assert stored.state.type == StateType.COMPLETED


@pytest.mark.parametrize("kind", ["flow", "task"])
def test_the_force_route_skips_the_rules(api: Api, client: Any, kind: str) -> None:
    run = _finished_run(api)
    run_id = run["id"] if kind == "flow" else _task_run_id(api, client, run["id"])
    # Proposed, it is refused: a finished run does not run again.
    refused = api("POST", f"/{kind}_runs/{run_id}/set_state", body={"state": {"type": "RUNNING"}})
    assert refused.status == 409 and refused.body["status"] == "ABORT"
    forced = api("POST", f"/{kind}_runs/{run_id}/set_state/force", body={"state": {"type": "RUNNING"}})
    assert forced.status == 200, forced.body
    assert forced.body["status"] == "ACCEPT" and forced.body["reason"] == "forced"
    assert forced.body["state"]["type"] == "RUNNING"
    stored = client.read_flow_run(run_id) if kind == "flow" else client.read_task_run(run_id)
    assert stored.state.type == StateType.RUNNING
    # "force": true is redundant there but accepted; an explicit false contradicts the route.
    again = api("POST", f"/{kind}_runs/{run_id}/set_state/force", body={"state": {"type": "COMPLETED"}, "force": True})
    assert again.body["status"] == "ACCEPT"
    assert_error(api("POST", f"/{kind}_runs/{run_id}/set_state/force",
                     body={"state": {"type": "RUNNING"}, "force": False}), 422, "body.force")


def test_the_propose_route_still_takes_force_false(api: Api) -> None:
    run = create_run(api, f"force-{uuid.uuid4().hex[:8]}")
    reply = api("POST", f"/flow_runs/{run['id']}/set_state", body={"state": {"type": "PENDING"}, "force": False})
    assert reply.status == 200 and reply.body["status"] == "ACCEPT"


def test_forcing_an_unknown_run_is_404(api: Api) -> None:
    assert_error(api("POST", "/flow_runs/nope/set_state/force", body={"state": {"type": "RUNNING"}}), 404, "nope")
    assert_error(api("POST", "/task_runs/nope/set_state/force", body={"state": {"type": "RUNNING"}}), 404, "nope")


def test_openapi_documents_both_routes(api: Api) -> None:
    paths = api("GET", "/openapi.json").body["paths"]
    for kind in ("flow", "task"):
        plain = paths[f"/{kind}_runs/{{{kind}_run_id}}/set_state"]["post"]
        assert "403" in plain["responses"]
        assert "post" in paths[f"/{kind}_runs/{{{kind}_run_id}}/set_state/force"]


# -- the SDK --------------------------------------------------------------------------------------
class HandlerTransport(HttpTransport):
    """The SDK's transport, delivering each request to the in-process Lambda handler (with the
    handler's answer decoded and its errors raised exactly as over HTTP). Records the paths."""

    def __init__(self, module: ModuleType) -> None:
        super().__init__("https://api.example.test", sign=False)
        self.module = module
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, *, json_body: Any = None, query: Any = None,
                response_headers: dict[str, str] | None = None) -> Any:
        self.sent.append((method, path, json_body))
        raw = self.module.lambda_handler(http_event(method, path, body=json_body, query=query), FakeLambdaContext())
        return self._decode(method, path, raw["statusCode"], raw["body"].encode())


def test_the_sdk_forces_through_the_force_route(api: Api, handler: ModuleType) -> None:
    from stratoflow.client import StratoflowClient
    from stratoflow.storage.api_store import ApiStore

    run = _finished_run(api)
    transport = HandlerTransport(handler)
    sdk = StratoflowClient(store=ApiStore(Settings(api_url="https://api.example.test"), transport=transport))

    refused = sdk.set_flow_run_state(run["id"], Running())
    assert refused.status == ResponseStatus.ABORT
    assert transport.sent[-1][1] == f"/flow_runs/{run['id']}/set_state"
    assert "force" not in transport.sent[-1][2]  # older servers took false; newer ones need nothing

    forced = sdk.set_flow_run_state(run["id"], Running(), force=True)
    assert forced.status == ResponseStatus.ACCEPT and forced.state is not None
    assert forced.state.type == StateType.RUNNING
    assert transport.sent[-1][1] == f"/flow_runs/{run['id']}/set_state/force"
    assert sdk.set_flow_run_state(run["id"], Completed(), force=True).status == ResponseStatus.ACCEPT
    assert transport.sent[-1][1].endswith("/set_state/force")


# -- the IAM policy of docs/api.md -----------------------------------------------------------------
def _policy(name: str) -> dict[str, Any]:
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, flags=re.S)]
    (policy,) = [b for b in blocks if b.get("Sid") == name or any(s.get("Sid") == name for s in b["Statement"])]
    return policy


def _allowed(policy: dict[str, Any], arn: str) -> bool:
    """IAM's evaluation of one identity policy for execute-api:Invoke on ``arn``: an explicit Deny
    wins, then any Allow; ``*`` in a resource matches any run of characters, ``/`` included."""
    def matches(statement: dict[str, Any]) -> bool:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        return statement["Action"] == "execute-api:Invoke" and any(fnmatchcase(arn, r) for r in resources)

    statements = policy["Statement"]
    if any(s["Effect"] == "Deny" and matches(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and matches(s) for s in statements)


@pytest.mark.parametrize("kind", ["flow", "task"])
def test_the_documented_policies_separate_proposing_from_forcing(kind: str) -> None:
    base = "arn:aws:execute-api:REGION:ACCOUNT:API_ID/$default"
    propose = f"{base}/POST/{kind}_runs/0b7c4f6e-1d2a-4c59-9b0e-3f2e8a1d7c55/set_state"
    force = propose + "/force"
    operator, admin = _policy("StratoflowOperate"), _policy("StratoflowForceStates")
    assert _allowed(operator, propose) and _allowed(operator, f"{base}/POST/flow_runs")
    assert _allowed(operator, f"{base}/GET/flow_runs/abc")
    assert not _allowed(operator, force)
    assert _allowed(admin, force)
