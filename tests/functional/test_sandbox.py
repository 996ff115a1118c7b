"""Issue 11, finding 7: a deployment's flow code gets less than the executor's runtime.

A real flow is deployed and executed by the executor's ``handle_message``; its code probes what
it can reach from its process: environment, the runtime's memory, and the gateway with its own
token. It reports what it saw as its (JSON) result, which the test reads through the client.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from stratoflow.client import get_client
from stratoflow.deployments import deploy
from stratoflow.settings import get_settings, reset_settings
from stratoflow.states import StateType
from stratoflow.storage import get_server_store
from stratoflow.workpools.sqs import QueueTarget, SqsQueues

PROBE = '''
import json
import os
import urllib.request
import urllib.error

from stratoflow import flow, task


def call(method, path, body=None, raw=None):
    url = os.environ["STRATOFLOW_API_URL"] + path
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": "Bearer " + os.environ["STRATOFLOW_RUNTIME_TOKEN"], "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def readable(path):
    try:
        with open(path, "rb") as fh:
            fh.read(16)
        return True
    except OSError:
        return False


@task
def big() -> str:
    return "x" * 100_000


@flow
def probe(other_run: str = "", deployment: str = "") -> dict:
    env = dict(os.environ)
    zygote = os.getppid()
    seen = {
        "aws_keys": sorted(k for k in env if k.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_SESSION"))),
        "access_key": env.get("AWS_ACCESS_KEY_ID"),
        "result_key_vars": sorted(k for k in env if k.startswith("STRATOFLOW_RESULT_KEY")),
        "dumpable": __import__("ctypes").CDLL(None).prctl(3, 0, 0, 0, 0),  # PR_GET_DUMPABLE
        "zygote_environ_readable": readable(f"/proc/{zygote}/environ"),
        "zygote_mem_readable": readable(f"/proc/{zygote}/mem"),
        "commit_other_run": call("POST", f"/runs/flow/{other_run}/commit", {"run": {}, "new_states": [],
                                 "expected_version": 1, "allowed_from": []}),
        "set_state_other_run": call("POST", f"/flow_runs/{other_run}/set_state", {"state": {"type": "FAILED"}}),
        "create_deployment": call("POST", "/deployments", {"name": "evil", "flow_name": "probe"}),
        "delete_run": call("DELETE", f"/flow_runs/{other_run}"),
        "write_package": call("PUT", "/_runtime/blobs/packages/evil.zip", raw=b"PK"),
        "read_package": call("GET", "/_runtime/blobs?uri=s3://" + env["STRATOFLOW_BUCKET"] + "/packages/x.zip"),
        "read_other_run": call("GET", f"/runs/flow/{other_run}"),
    }
    seen["big_len"] = len(big())
    return seen
'''


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("STRATOFLOW_PACKAGE_CACHE_DIR", str(tmp_path / "package-cache"))
    # What a Lambda environment holds: the runtime's credentials, and here the result key too.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "RUNTIME-KEY-ID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "runtime-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "runtime-token")
    monkeypatch.setenv("STRATOFLOW_RESULT_KEY_SECRET", "")
    reset_settings()
    client = get_client()
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(pool)
    src = tmp_path / "src"
    src.mkdir()
    (src / "probe.py").write_text(PROBE)
    deployment = deploy("probe.py:probe", name="d", work_pool=pool, source_dir=src, client=client)
    return {"pool": pool, "name": f"{deployment.flow_name}/{deployment.name}", "id": deployment.id}


def _execute(pool: str) -> Any:
    from stratoflow.executor import handle_message

    client = get_client()
    record = next(q for q in client.read_work_queues(pool) if q.name == "default")
    sqs = SqsQueues(get_settings())
    assert record.queue_url is not None
    target = QueueTarget(record.queue_url, sqs.queue_arn(record.queue_url), pool, "default")
    (message,) = sqs.receive(target, 1, 0)
    result = handle_message(message.body, store=get_server_store(), settings=get_settings())
    sqs.delete(target.url, message.receipt_handle)
    return result


def test_flow_code_gets_no_credentials_no_key_and_only_its_own_run(deployed: dict[str, Any]) -> None:
    client = get_client()
    other = client.create_flow_run_from_deployment(deployed["name"], parameters={"other_run": "x"})
    run = client.create_flow_run_from_deployment(deployed["name"], parameters={"other_run": other.id})
    _execute(deployed["pool"])  # the first message is `other`'s: let it run (its probes target "x")
    outcome = _execute(deployed["pool"])
    assert outcome.outcome.value == "ran", outcome
    done = client.read_flow_run(run.id)
    assert done.state_type == StateType.COMPLETED, done.state
    seen = done.state.result()
    assert done.state.result_ref["serializer"] == "json"  # signed through the gateway, readable here

    assert seen["aws_keys"] == [] and seen["access_key"] is None
    assert seen["result_key_vars"] == []
    # Non-dumpable (inherited from the zygote): processes of the same user can neither ptrace it
    # nor read its /proc memory or environment. Root can; the runtime does not run as root on Lambda.
    assert seen["dumpable"] == 0
    if os.geteuid() != 0:
        assert seen["zygote_environ_readable"] is False and seen["zygote_mem_readable"] is False
    assert seen["commit_other_run"] == 403
    assert seen["set_state_other_run"] == 403
    assert seen["create_deployment"] == 403
    assert seen["delete_run"] == 403
    assert seen["write_package"] == 403
    assert seen["read_package"] == 403
    assert seen["read_other_run"] == 200  # reads are open: run_deployment waits on other runs
    assert seen["big_len"] == 100_000  # a result too large to inline went through the gateway to S3
    (task_run,) = client.read_task_runs(run.id)
    assert "uri" in task_run.state.result_ref and task_run.state.result() == "x" * 100_000
    # The other run was not touched.
    assert client.read_flow_run(other.id).state_type == StateType.COMPLETED


def test_the_flow_run_role_gives_flow_code_its_own_credentials(deployed: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATOFLOW_FLOW_RUN_ROLE_ARN", "arn:aws:iam::123456789012:role/stratoflow-flow-run")
    reset_settings()
    client = get_client()
    run = client.create_flow_run_from_deployment(deployed["name"], parameters={"other_run": "x"})
    _execute(deployed["pool"])
    seen = client.read_flow_run(run.id).state.result()
    assert seen["aws_keys"] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    assert seen["access_key"] not in (None, "RUNTIME-KEY-ID", "stratoflow-local")


def test_a_token_is_needed_and_dies_with_its_run(deployed: dict[str, Any]) -> None:
    import urllib.error
    import urllib.request

    from stratoflow.sandbox.gateway import get_gateway

    gateway = get_gateway(get_server_store(), get_settings())
    request = urllib.request.Request(gateway.url + "/runs/flow/x", method="GET")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 401
    grant = gateway.grant("some-run")
    gateway.revoke(grant)
    request.add_header("Authorization", f"Bearer {grant.token}")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 401


def test_a_flow_process_that_outlives_its_deadline_is_killed_and_crashed(deployed: dict[str, Any], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from stratoflow.executor import handle_message
    from stratoflow.sandbox import runtime

    monkeypatch.setattr(runtime, "KILL_GRACE_SECONDS", 0.5)
    src = tmp_path / "stuck"
    src.mkdir()
    # The whole process stops (as one wedged in a C call would): only the runtime can end it.
    (src / "stuck.py").write_text(
        "import os, signal\nfrom stratoflow import flow\n\n@flow\ndef stuck() -> None:\n"
        "    os.kill(os.getpid(), signal.SIGSTOP)\n")
    client = get_client()
    deployment = deploy("stuck.py:stuck", name="d", work_pool=deployed["pool"], source_dir=src, client=client)
    run = client.create_flow_run_from_deployment(f"{deployment.flow_name}/d")
    record = next(q for q in client.read_work_queues(deployed["pool"]) if q.name == "default")
    sqs = SqsQueues(get_settings())
    assert record.queue_url is not None
    target = QueueTarget(record.queue_url, sqs.queue_arn(record.queue_url), deployed["pool"], "default")
    (message,) = sqs.receive(target, 1, 0)
    outcome = handle_message(message.body, store=get_server_store(), settings=get_settings(),
                             remaining_seconds=lambda: get_settings().executor_deadline_margin + 1.0)
    done = client.read_flow_run(run.id)
    assert done.state_type == StateType.CRASHED, done.state
    assert "killed past its deadline" in (done.state.message or "")
    assert outcome.outcome.value == "ran"


def test_the_zygote_holds_no_credentials(deployed: dict[str, Any]) -> None:
    from stratoflow.sandbox.runtime import get_zygote, scrubbed_env

    zygote = get_zygote()
    environ = Path(f"/proc/{zygote.process.pid}/environ").read_bytes().decode(errors="replace").split("\0")
    names = {item.split("=", 1)[0] for item in environ if "=" in item}
    assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "STRATOFLOW_RESULT_KEY_SECRET", "STRATOFLOW_RESULT_KEY"}
    assert json.dumps(zygote.process.args).count("stratoflow.sandbox.runner") == 1
    assert "AWS_ACCESS_KEY_ID" not in scrubbed_env({"AWS_ACCESS_KEY_ID": "x", "PATH": "/bin"})


FANOUT = '''
from stratoflow import flow, task


@task
def square(x: int) -> int:
    return x * x


@flow
def fanout(n: int = 60) -> int:
    return sum(square.map(range(n)).result())
'''


def test_concurrent_runs_and_tasks_through_one_gateway_do_not_mix_requests(deployed: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    """Four sandboxed runs at once, 60 concurrent task runs each, all through the runtime's one
    gateway: every request is served as itself (Powertools keeps the current event on a class
    attribute; resolved concurrently, requests read each other's bodies)."""
    import threading

    src = tmp_path / "fanout"
    src.mkdir()
    (src / "fanout.py").write_text(FANOUT)
    client = get_client()
    deployment = deploy("fanout.py:fanout", name="d", work_pool=deployed["pool"], source_dir=src, client=client)
    from stratoflow.executor import handle_message

    runs = [client.create_flow_run_from_deployment(f"{deployment.flow_name}/d") for _ in range(4)]
    record = next(q for q in client.read_work_queues(deployed["pool"]) if q.name == "default")
    sqs = SqsQueues(get_settings())
    assert record.queue_url is not None
    target = QueueTarget(record.queue_url, sqs.queue_arn(record.queue_url), deployed["pool"], "default")
    messages = sqs.receive(target, 10, 0)
    assert len(messages) == 4
    threads = [threading.Thread(target=handle_message, args=(m.body,),
                                kwargs={"store": get_server_store(), "settings": get_settings()}) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for run in runs:
        done = client.read_flow_run(run.id)
        assert done.state_type == StateType.COMPLETED, done.state
        assert done.state.result() == sum(x * x for x in range(60))
        assert len(client.read_task_runs(run.id)) == 60
