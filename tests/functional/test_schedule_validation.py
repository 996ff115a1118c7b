# ruff: noqa: F811 - pytest fixtures imported from test_api_handler are redefined as parameters
"""A schedule that fires more often than the minimum interval, or whose slots cannot be computed
within the limits, is refused by the API handler with a 422 naming the field, and nothing is
stored; an every-second rrule (the minimum) is accepted and starts at once; a deployment stored
before the checks with such a schedule does not hold the scheduler tick, which skips it saying why."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_api_handler import (  # noqa: F401 - fixtures shared with the handler tests
    Reply,
    api,
    assert_error,
    flow_name,
    handler,
    journal,
    shared_home,
    stratoflow_home,
)

from stratoflow.control import schedules as service
from stratoflow.control.records import deployment_id
from stratoflow.models import Deployment, Flow
from stratoflow.schedules.models import DeploymentSchedule, RRuleSchedule
from stratoflow.settings import get_settings
from stratoflow.storage import get_store

pytestmark = pytest.mark.store_only("reads the embedded journal and writes a record past the API")

Api = Callable[..., Reply]
TWICE_A_SECOND = "DTSTART:20300101T000000\nRRULE:FREQ=SECONDLY\nRDATE:20300101T000000.500000"
NEVER = "FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30"  # no 30 February: dateutil spins to year 9999
# Matches nothing either, and dateutil scans a day of seconds for 23:59:59 between two of its steps.
SLOW_NEVER = "FREQ=SECONDLY;BYHOUR=23;BYMINUTE=59;BYSECOND=59;BYMONTH=2;BYMONTHDAY=30"


@pytest.fixture
def schedule_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The schedules logger's records (the ``stratoflow`` logger may not propagate to the root)."""
    logger = logging.getLogger("stratoflow.schedules")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="stratoflow.schedules")
    yield caplog
    logger.removeHandler(caplog.handler)


def refused(api: Api, journal: Callable[[], int], flow: str, schedule: dict[str, Any], *needles: str) -> None:
    """POST /deployments with ``schedule`` is a 422 naming ``needles``; nothing is written and the
    deployment cannot be read afterwards."""
    writes = journal()
    reply = api("POST", "/deployments", body={"name": "nightly", "flow_name": flow,
                                              "schedules": [{"id": "s", "schedule": schedule}]})
    assert_error(reply, 422, *needles)
    assert journal() == writes, "a refused deployment was written"
    assert api("GET", f"/deployments/{deployment_id(flow, 'nightly')}").status == 404
    assert api("POST", "/deployments/filter", body={"flow_name": flow}).body == []


def test_an_rrule_firing_more_often_than_every_second_is_422_and_not_stored(
        api: Api, journal: Callable[[], int], flow_name: str) -> None:
    refused(api, journal, flow_name, {"type": "rrule", "rrule": TWICE_A_SECOND}, "schedules.0.schedule.rrule",
            "not on a whole second", "less than 1 s apart")


def test_an_interval_under_a_second_is_422_and_not_stored(api: Api, journal: Callable[[], int],
                                                          flow_name: str) -> None:
    refused(api, journal, flow_name, {"type": "interval", "interval": 0.5}, "schedules.0.schedule.interval",
            "greater than or equal to 1")


@pytest.mark.timeout(120)  # before slot computation was bounded, this request spun inside dateutil
@pytest.mark.parametrize("rule", [NEVER, "DTSTART:20200101T000000\nRRULE:FREQ=SECONDLY;COUNT=1000000000"])
def test_an_rrule_too_costly_to_compute_is_422_and_not_stored(api: Api, journal: Callable[[], int], flow_name: str,
                                                              rule: str) -> None:
    refused(api, journal, flow_name, {"type": "rrule", "rrule": rule}, "schedules.0.schedule.rrule",
            "too much work to compute", "use a coarser FREQ")


@pytest.mark.timeout(120)  # before, every slot walked the rule again from 3 h back: minutes, then a 503
def test_an_every_second_rrule_is_accepted_and_its_first_minute_created_at_once(api: Api, flow_name: str) -> None:
    reply = api("POST", "/deployments", body={"name": "nightly", "flow_name": flow_name, "schedules": [
        {"id": "s", "schedule": {"type": "rrule", "rrule": "FREQ=SECONDLY;INTERVAL=1"}}]})
    assert reply.status == 201, reply.body
    runs = get_store().list_flow_runs(deployment_id=reply.body["id"], limit=1000)
    slots = sorted(r.expected_start_time for r in runs if r.expected_start_time is not None)
    assert len(slots) == 60 and all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots))


@pytest.mark.timeout(120)  # before, the tick spun on these schedules for seconds to hours
def test_a_stored_schedule_that_cannot_be_computed_is_skipped_by_the_tick_saying_why(
        api: Api, flow_name: str, schedule_log: pytest.LogCaptureFixture) -> None:
    store, settings = get_store(), get_settings()
    # Written as an older version stored it: the checks new schedules get are not the record's.
    old = Deployment(id=deployment_id(flow_name, "legacy"), name="legacy", flow_name=flow_name,
                     flow_id=store.ensure_flow(Flow(name=flow_name)).id, schedules=[
                         DeploymentSchedule(id="never", schedule=RRuleSchedule(rrule=NEVER)),
                         DeploymentSchedule(id="slow", schedule=RRuleSchedule(rrule=SLOW_NEVER)),
                         DeploymentSchedule(id="ok", schedule=RRuleSchedule(rrule="FREQ=MINUTELY"))])
    store.put_object("deployment", old.id, old.model_dump(mode="json"), must_not_exist=True)

    now = datetime.now(UTC)
    created = [r for r in service.tick(store, settings, now, timedelta(minutes=2)) if r.deployment_id == old.id]
    # The computable schedule of the same deployment still fires.
    assert len(created) >= 2 and {(r.idempotency_key or "").split(":")[2] for r in created} == {"ok"}
    skipped = {r.getMessage() for r in schedule_log.records if r.levelno == logging.ERROR}
    assert f"schedule never of deployment {old.id} skipped: its slots take too much work to compute " \
           "(50000 steps for 0 slots)" in skipped
    assert any(m.startswith(f"schedule slow of deployment {old.id} skipped: its slots take too long to compute")
               for m in skipped), skipped

    # EventBridge cannot fire an rrule, but a stray invocation is refused the same way.
    assert service.fire(store, settings, old.id, "never", now + timedelta(minutes=1)) is None
    # The record still loads: it can be read, and fixed or deleted.
    assert api("GET", f"/deployments/{old.id}").body["schedules"][0]["schedule"]["rrule"] == NEVER
