# ruff: noqa: F811 - pytest fixtures imported from test_api_handler are redefined as parameters
"""Log writes are all or nothing and idempotent.

``POST /logs`` checks every line before it writes one (a line dated 9999 used to overflow the TTL
arithmetic half-way through the batch: a 500 after most lines were stored), and lines are stored
by their id, so a batch sent again (the SDK's transport retries when an answer is lost) stores no
second copy. The SDK gives each line its id when it is emitted; the direct DynamoDB path keys
lines the same way.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

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
from stratoflow.logs import get_log_buffer, run_logger
from stratoflow.models import Log
from stratoflow.settings import Settings
from stratoflow.storage.api_store import ApiStore

Api = Callable[..., Reply]
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _line(run_id: str, i: int, **extra: Any) -> dict[str, Any]:
    return {"flow_run_id": run_id, "message": f"line {i}", "id": f"client-{i:04d}",
            "timestamp": (T0 + timedelta(milliseconds=i)).isoformat(), **extra}


def _plain(run_id: str, i: int, **extra: Any) -> dict[str, Any]:
    """A line as clients sent them before ids."""
    return {k: v for k, v in _line(run_id, i, **extra).items() if k != "id"}


def _messages(api: Api, run_id: str) -> list[str]:
    reply = api("GET", f"/flow_runs/{run_id}/logs", query={"limit": 1000})
    assert reply.status == 200, reply.body
    return [log["message"] for log in reply.body["logs"]]


# -- all or nothing -------------------------------------------------------------------------------
@pytest.mark.parametrize("timestamp", [
    "9999-12-31T23:59:59Z",          # overflowed timestamp + retention in the batch write
    "9999-12-31T23:00:00-05:00",     # overflows turning it into UTC
    "0001-01-01T00:00:00+01:00",
    "1999-12-31T23:59:59Z",
    "3000-01-01T00:00:00Z",
])
def test_a_bad_line_refuses_the_whole_batch(api: Api, journal: Callable[[], int], timestamp: str) -> None:
    run = create_run(api)
    batch = [_plain(run["id"], i) for i in range(6)]
    batch[3]["timestamp"] = timestamp
    writes = journal()
    reply = api("POST", "/logs", body=batch)
    assert_error(reply, 422, "body.3.timestamp", "out of range")
    assert journal() == writes
    assert _messages(api, run["id"]) == []


def test_timestamps_just_inside_the_range_are_stored(api: Api) -> None:
    run = create_run(api)
    stamps = ["2000-01-01T00:00:00Z", "2999-12-31T23:59:59Z", "2026-01-02T03:04:05"]  # the last: no zone, UTC
    batch = [_plain(run["id"], i, timestamp=stamp) for i, stamp in enumerate(stamps)]
    assert api("POST", "/logs", body=batch).body == {"written": 3}
    logs = api("GET", f"/flow_runs/{run['id']}/logs").body["logs"]
    assert [log["message"] for log in logs] == ["line 0", "line 2", "line 1"]  # by time
    assert logs[1]["timestamp"].startswith("2026-01-02T03:04:05")


@pytest.mark.parametrize(("change", "needles"), [
    ({"timestamp": None}, ["body.2.id", "needs its timestamp"]),
    ({"id": "client-0000"}, ["body.2.id", "'client-0000'", "body.0"]),
    ({"id": "has#hash"}, ["body.2.id"]),
    ({"id": "x" * 65}, ["body.2.id"]),
])
def test_ids_are_checked_before_anything_is_written(api: Api, journal: Callable[[], int],
                                                     change: dict[str, Any], needles: list[str]) -> None:
    run = create_run(api)
    batch = [_line(run["id"], i) for i in range(4)]
    batch[2] = {k: v for k, v in {**batch[2], **change}.items() if v is not None}
    writes = journal()
    assert_error(api("POST", "/logs", body=batch), 422, *needles)
    assert journal() == writes


# -- idempotent -----------------------------------------------------------------------------------
def test_posting_the_same_batch_twice_stores_each_line_once(api: Api) -> None:
    run = create_run(api)
    # Lines 1-3 share a timestamp: their ids keep them in the order they were sent.
    batch = [_line(run["id"], i, timestamp=T0.isoformat() if i else (T0 - timedelta(seconds=1)).isoformat())
             for i in range(4)]
    assert api("POST", "/logs", body=batch).body == {"written": 4}
    assert api("POST", "/logs", body=batch).body == {"written": 4}
    logs = api("GET", f"/flow_runs/{run['id']}/logs").body["logs"]
    assert [log["message"] for log in logs] == ["line 0", "line 1", "line 2", "line 3"]
    assert [log["id"] for log in logs] == [f"client-{i:04d}" for i in range(4)]

    # Resent in a later batch with a new line, it still replaces itself.
    assert api("POST", "/logs", body=[batch[2], _line(run["id"], 9)]).body == {"written": 2}
    assert _messages(api, run["id"]) == ["line 0", "line 1", "line 2", "line 3", "line 9"]


# -- the SDK: its log handler over the API, with the transport's retries ---------------------------
class Gateway:
    """An HTTP front for the API's Lambda handler that loses its answer to the first ``POST /logs``
    *after* the handler wrote the lines: with a 503 (a gateway timeout) or by closing the
    connection without a reply. The SDK's transport retries both."""

    def __init__(self, module: ModuleType, lose: str) -> None:
        self.posts = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else None
                path, _, query = self.path.partition("?")
                raw = module.lambda_handler(http_event(self.command, path, raw_body=body,
                                                       query=dict(parse_qsl(query))), FakeLambdaContext())
                if self.command == "POST" and path == "/logs":
                    gateway.posts += 1
                    if gateway.posts == 1 and lose == "dropped":
                        self.close_connection = True
                        return
                    if gateway.posts == 1:
                        raw = {"statusCode": 503, "body": json.dumps({"message": "Service Unavailable"})}
                data = raw["body"].encode()
                self.send_response(raw["statusCode"])
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sdk_over_api(handler: ModuleType, client: Any) -> Iterator[Callable[[str], tuple[ApiStore, Gateway]]]:
    gateways: list[Gateway] = []

    def make(lose: str) -> tuple[ApiStore, Gateway]:
        gateway = Gateway(handler, lose)
        gateways.append(gateway)
        transport = HttpTransport(gateway.url, sign=False, backoff_base=0.001, timeout=10)
        return ApiStore(Settings(api_url=gateway.url), transport=transport), gateway

    yield make
    for gateway in gateways:
        gateway.stop()


@pytest.mark.parametrize("lose", ["503", "dropped"])
def test_the_sdk_log_handler_retrying_a_lost_answer_stores_no_duplicates(
        api: Api, sdk_over_api: Callable[[str], tuple[ApiStore, Gateway]], lose: str) -> None:
    store, gateway = sdk_over_api(lose)
    run = create_run(api)
    logger = run_logger(store, flow_run_id=run["id"], task_run_id=None, label="Flow run 'x'", kind="flow")
    for word in ("one", "two", "three"):
        logger.info(word)
    get_log_buffer(store).flush()
    assert gateway.posts >= 2  # the first answer was lost: the batch was sent again
    assert _messages(api, run["id"]) == ["one", "two", "three"]


def test_the_sdk_cuts_an_oversized_message_instead_of_losing_its_batch(
        api: Api, sdk_over_api: Callable[[str], tuple[ApiStore, Gateway]]) -> None:
    store, _ = sdk_over_api("nothing")
    run = create_run(api)
    logger = run_logger(store, flow_run_id=run["id"], task_run_id=None, label="Flow run 'x'", kind="flow")
    logger.info("before")
    logger.info("é" * 50_000)  # 100,000 bytes: over the API's 64 KiB per message
    logger.info("after")
    buffer = get_log_buffer(store)
    errors = buffer.errors
    buffer.flush()
    assert buffer.errors == errors
    messages = _messages(api, run["id"])
    assert messages[0] == "before" and messages[2] == "after"
    assert messages[1].startswith("é" * 1000) and messages[1].endswith("[cut: the message was 100000 bytes]")
    assert len(messages[1].encode()) <= 64 * 1024


# -- the direct DynamoDB path (the engine's own writes) ---------------------------------------------
def test_the_store_keys_lines_by_id_whoever_writes_them(client: Any) -> None:
    """Two store instances (two processes) writing the same lines store them once; the SDK's
    records carry ids from the moment they are emitted."""
    from stratoflow.storage.dynamodb import DynamoDBStore

    run_id = f"run-{uuid.uuid4().hex[:8]}"
    lines = [Log(flow_run_id=run_id, message=f"m{i}", timestamp=T0, seq=i + 1, id=f"tag-{i + 1:010d}")
             for i in range(3)]
    client.store.write_logs(lines)
    DynamoDBStore(client.store.settings).write_logs([*lines[1:], *lines])  # again, and twice in one call
    page = client.store.read_logs(run_id)
    assert [(log.message, log.id, log.seq) for log in page.logs] == [
        ("m0", "tag-0000000001", 1), ("m1", "tag-0000000002", 2), ("m2", "tag-0000000003", 3)]


def test_the_store_writes_nothing_of_a_batch_with_a_line_it_cannot_store(client: Any) -> None:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    lines = [Log(flow_run_id=run_id, message=f"m{i}", timestamp=T0) for i in range(3)]
    lines.append(Log(flow_run_id=run_id, message="late", timestamp=datetime(9999, 12, 31, tzinfo=UTC)))
    with pytest.raises(ValueError, match="out of range"):
        client.store.write_logs(lines)
    assert client.store.read_logs(run_id).logs == []


def test_lines_stored_before_ids_still_read_back(client: Any) -> None:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    m = client.store.models.LogItem
    m(run_id, "2026-01-02T03:04:05.000000Z#abcd1234#0000000007", level=20, name="stratoflow", message="old",
      ts="2026-01-02T03:04:05.000000Z").save()  # sk = time#writer#seq, no seq attribute
    client.store.write_logs([Log(flow_run_id=run_id, message="new", timestamp=T0, seq=3, id="tag-0000000003")])
    logs = client.store.read_logs(run_id).logs
    assert [(log.message, log.id, log.seq) for log in logs] == [("old", "abcd1234#0000000007", 7),
                                                                ("new", "tag-0000000003", 3)]


def test_emitted_records_get_ordered_unique_ids(client: Any) -> None:
    from stratoflow.models import log_id, new_log_id

    first, second = new_log_id(), new_log_id()
    assert first != second and first < second
    tag, _, number = first.rpartition("-")
    assert len(number) == 10 and log_id(int(number)) == first and tag


def test_a_failed_log_write_is_tried_again_and_then_said_lost(capsys: Any) -> None:
    """Writes are idempotent, so the buffer retries a failed batch (with the next write) instead of
    dropping it; after WRITE_ATTEMPTS it gives up and says so."""
    from stratoflow.logs import WRITE_ATTEMPTS, LogBuffer
    from stratoflow.models import Log, new_log_id

    class Flaky:
        def __init__(self, failures: int) -> None:
            self.failures = failures
            self.stored: list[str] = []

        def write_logs(self, items: list[Log]) -> None:
            if self.failures:
                self.failures -= 1
                raise OSError("connection reset")
            self.stored += [i.message for i in items]

    def line(message: str) -> Log:
        return Log(flow_run_id="r", message=message, level=20, id=new_log_id())

    store = Flaky(failures=1)
    buffer = LogBuffer(store, interval=60, batch_size=1000)  # type: ignore[arg-type]
    buffer.add(line("a"))
    buffer.flush()
    assert store.stored == [] and "tried again" in capsys.readouterr().err
    buffer.add(line("b"))
    buffer.flush()
    assert store.stored == ["a", "b"]  # the failed line went first, in order

    store = Flaky(failures=WRITE_ATTEMPTS)
    buffer = LogBuffer(store, interval=60, batch_size=1000)  # type: ignore[arg-type]
    buffer.add(line("c"))
    for _ in range(WRITE_ATTEMPTS):
        buffer.flush()
    assert store.stored == [] and f"gave up on 1 after {WRITE_ATTEMPTS} tries" in capsys.readouterr().err
    buffer.flush()
    assert store.stored == []
