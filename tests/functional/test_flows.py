"""Functional tests of ``@flow`` and its options, checked against what the engine stored."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import BaseModel

from stratoflow import flow, get_run_context, tags, task
from stratoflow.exceptions import ParameterValidationError
from stratoflow.models import FlowRun
from stratoflow.states import Failed, State, StateType


class Boom(ValueError):
    """Module level, so the persisted exception unpickles for any reader."""


def names(states: list[State]) -> list[str]:
    return [s.name for s in states]


# -- calling, return values and final states ------------------------------------------------------
def test_flow_call_returns_result_and_stores_completed_run(client: Any, only_flow_run: Any) -> None:
    @flow(name="adder")
    def adder(x: int, y: int = 2) -> int:
        time.sleep(0.05)
        return x + y

    assert adder(1) == 3

    run = only_flow_run("adder")
    assert run.flow_name == "adder"
    assert run.state is not None and run.state.type == StateType.COMPLETED
    assert names(run.state_history) == ["Pending", "Running", "Completed"]
    assert [s.type for s in client.read_flow_run_states(run.id)] == [
        StateType.PENDING, StateType.RUNNING, StateType.COMPLETED]
    assert run.run_count == 1
    assert run.start_time is not None and run.end_time is not None
    assert run.end_time > run.start_time
    assert run.total_run_time >= 0.04
    assert run.parameters == {"x": 1, "y": 2}
    # The result is persisted: reading the stored state back gives the value.
    assert run.state.result() == 3
    # The by-state index follows the final state.
    assert [r.id for r in client.read_flow_runs(state_types=["COMPLETED"])] == [run.id]
    assert client.read_flow_runs(state_types=[StateType.RUNNING]) == []
    assert [r.id for r in client.read_flow_runs()] == [run.id]


def test_return_state_gives_the_final_completed_state(only_flow_run: Any) -> None:
    @flow(name="stateful")
    def stateful() -> str:
        return "ok"

    state = stateful(return_state=True)
    assert isinstance(state, State)
    assert state.is_completed() and state.name == "Completed"
    assert state.result() == "ok"
    stored = only_flow_run("stateful").state
    assert stored.id == state.id
    assert stored.result() == "ok"


def test_failing_body_gives_failed_state_and_reraises_original_exception(client: Any, only_flow_run: Any) -> None:
    @flow(name="failing")
    def failing() -> None:
        raise Boom("it broke")

    state = failing(return_state=True)
    assert state.type == StateType.FAILED and state.name == "Failed"
    assert "it broke" in (state.message or "")
    with pytest.raises(Boom, match="it broke"):
        state.result()

    with pytest.raises(Boom, match="it broke"):
        failing()

    runs = client.read_flow_runs(flow_name="failing")
    assert len(runs) == 2
    for run in runs:
        assert names(run.state_history) == ["Pending", "Running", "Failed"]
        assert run.end_time is not None
        # The exception is persisted with the state: another reader re-raises it too.
        with pytest.raises(Boom, match="it broke"):
            client.read_flow_run(run.id).state.result()
    # The error and its traceback are in the run's logs.
    logs = list(client.iter_logs(runs[0].id))
    assert any(log.level >= 40 and "it broke" in log.message for log in logs)


def test_flow_returning_a_failed_state_ends_failed(only_flow_run: Any) -> None:
    @flow(name="returns-failed")
    def returns_failed() -> State:
        return Failed(message="chose to fail")

    state = returns_failed(return_state=True)
    assert state.is_failed()
    assert state.message == "chose to fail"
    run = only_flow_run("returns-failed")
    assert run.state.type == StateType.FAILED
    assert run.state.message == "chose to fail"
    with pytest.raises(Exception, match="chose to fail"):
        returns_failed()


def test_flow_returning_futures_with_one_failure_ends_failed(client: Any, only_flow_run: Any) -> None:
    @task
    def ok() -> int:
        return 1

    @task
    def bad() -> int:
        raise RuntimeError("task failed")

    @flow(name="futures-flow")
    def futures_flow() -> list[Any]:
        return [ok.submit(), bad.submit()]

    state = futures_flow(return_state=True)
    assert state.is_failed()
    assert state.message == "1/2 states failed."
    run = only_flow_run("futures-flow")
    assert run.state.type == StateType.FAILED and run.state.message == "1/2 states failed."
    task_states = sorted(r.state.type for r in client.read_task_runs(run.id))
    assert task_states == sorted([StateType.COMPLETED, StateType.FAILED])


def test_flow_returning_completed_futures_resolves_their_values(only_flow_run: Any) -> None:
    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(name="all-good")
    def all_good() -> list[Any]:
        return [double.submit(1), double.submit(2)]

    assert all_good() == [2, 4]
    assert only_flow_run("all-good").state.result() == [2, 4]


# -- naming options -------------------------------------------------------------------------------
def test_name_description_and_version_options(client: Any, only_flow_run: Any) -> None:
    @flow(name="custom-name", description="What it does", version="v7")
    def my_flow() -> int:
        return 1

    my_flow()
    run = only_flow_run("custom-name")
    assert run.flow_version == "v7"
    record = client.read_flow("custom-name")
    assert record.description == "What it does"
    assert run.flow_id == record.id


def test_default_name_and_description_come_from_the_function(client: Any, only_flow_run: Any) -> None:
    @flow
    def etl_job_daily() -> int:
        """Extracts, transforms, loads."""
        return 1

    etl_job_daily()
    run = only_flow_run("etl-job-daily")
    assert client.read_flow("etl-job-daily").description == "Extracts, transforms, loads."
    assert run.flow_version  # a hash of the source file by default


def test_flow_run_name_template_and_callable(client: Any, only_flow_run: Any) -> None:
    @flow(name="templated", flow_run_name="{x}-run")
    def templated(x: int) -> int:
        return x

    @flow(name="named-by-fn", flow_run_name=lambda: "from-callable")
    def named_by_fn() -> None:
        return None

    templated(5)
    named_by_fn()
    assert only_flow_run("templated").name == "5-run"
    assert only_flow_run("named-by-fn").name == "from-callable"


# -- tags -----------------------------------------------------------------------------------------
def test_tags_option_and_tags_context_apply_to_flow_and_task_runs(client: Any, only_flow_run: Any) -> None:
    @task(tags=["task-tag"])
    def tagged_task() -> int:
        return 1

    @task
    def plain_task() -> int:
        return 2

    @flow(name="tagged", tags=["flow-tag"])
    def tagged() -> None:
        tagged_task()
        plain_task.submit().wait()
        with tags("inner"):
            plain_task()

    with tags("outer"):
        tagged()

    run = only_flow_run("tagged")
    assert {"flow-tag", "outer"} <= set(run.tags)
    assert "inner" not in run.tags
    task_runs = client.read_task_runs(run.id)
    assert len(task_runs) == 3
    t_task = [r for r in task_runs if "tagged_task" in r.task_key]
    p_task = [r for r in task_runs if "plain_task" in r.task_key]
    assert len(t_task) == 1 and len(p_task) == 2
    assert {"task-tag", "outer"} <= set(t_task[0].tags)
    assert all("outer" in r.tags for r in p_task)  # submitted (other thread) and direct alike
    assert sorted("inner" in r.tags for r in p_task) == [False, True]


# -- parameters -----------------------------------------------------------------------------------
def test_parameters_are_coerced_and_stored(only_flow_run: Any) -> None:
    seen: list[Any] = []

    @flow(name="coerce")
    def coerce(x: int) -> int:
        seen.append(x)
        return x * 2

    assert coerce("3") == 6  # type: ignore[arg-type]
    assert seen == [3] and type(seen[0]) is int
    run = only_flow_run("coerce")
    assert run.parameters == {"x": 3}

    # validate_parameters=False passes values through untouched.
    unchecked = coerce.with_options(name="coerce-unchecked", validate_parameters=False)
    assert unchecked("3") == "33"  # type: ignore[arg-type]
    assert seen[-1] == "3"
    assert only_flow_run("coerce-unchecked").parameters == {"x": "3"}


def test_invalid_parameter_raises_naming_field_and_creates_no_run(client: Any) -> None:
    calls: list[Any] = []

    @flow(name="strict")
    def strict(x: int) -> None:
        calls.append(x)

    with pytest.raises(ParameterValidationError) as info:
        strict("abc")  # type: ignore[arg-type]
    assert "x" in info.value.fields
    assert "x" in str(info.value)
    assert "strict" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert calls == []
    assert client.read_flow_runs(flow_name="strict") == []
    assert client.read_flow_runs() == []


def test_unknown_parameter_raises_naming_the_field(client: Any) -> None:
    @flow(name="known-only")
    def known_only(x: int) -> None:
        return None

    with pytest.raises(ParameterValidationError, match="surprise"):
        known_only(x=1, surprise=2)  # type: ignore[call-arg]
    assert client.read_flow_runs(flow_name="known-only") == []


def test_unknown_parameter_error_lists_the_field_in_fields(client: Any) -> None:
    """``ParameterValidationError.fields`` names the bad fields for invalid and missing values;
    an unexpected keyword should be named there too, not as an empty location."""

    @flow(name="known-only-fields")
    def known_only(x: int) -> None:
        return None

    with pytest.raises(ParameterValidationError) as info:
        known_only(x=1, surprise=2)  # type: ignore[call-arg]
    assert info.value.fields == ["surprise"]


def test_missing_parameter_raises_naming_the_field(client: Any) -> None:
    @flow(name="needs-two")
    def needs_two(first: int, second: str) -> None:
        return None

    with pytest.raises(ParameterValidationError) as info:
        needs_two(1)  # type: ignore[call-arg]
    assert info.value.fields == ["second"]
    assert "second" in str(info.value)
    assert client.read_flow_runs(flow_name="needs-two") == []


def test_large_parameters_are_stored_by_reference(only_flow_run: Any) -> None:
    big = "x" * 40_000  # over parameters_inline_max_bytes (32 KiB)

    @flow(name="big-params")
    def big_params(text: str) -> int:
        return len(text)

    assert big_params(big) == 40_000
    run = only_flow_run("big-params")
    assert run.parameters_ref is not None and run.parameters_ref.startswith("s3://")
    assert run.parameters == {}
    from stratoflow import get_client

    assert get_client().read_flow_run_parameters(run.id) == {"text": big}


class Point(BaseModel):
    x: int
    label: str = "p"


def test_pydantic_model_parameters_are_validated_and_stored(client: Any, only_flow_run: Any) -> None:
    seen: list[Any] = []

    @flow(name="model-param")
    def model_param(point: Point) -> int:
        seen.append(point)
        return point.x

    assert model_param({"x": "4", "label": "four"}) == 4  # type: ignore[arg-type]
    assert isinstance(seen[0], Point) and seen[0] == Point(x=4, label="four")
    assert model_param(Point(x=5)) == 5
    runs = client.read_flow_runs(flow_name="model-param")
    assert sorted((r.parameters["point"]["x"], r.parameters["point"]["label"]) for r in runs) == [
        (4, "four"), (5, "p")]

    with pytest.raises(ParameterValidationError) as info:
        model_param({"x": "not-a-number"})  # type: ignore[arg-type]
    assert any(f.startswith("point") and "x" in f for f in info.value.fields)
    assert len(client.read_flow_runs(flow_name="model-param")) == 2


# -- retries and timeouts -----------------------------------------------------------------------
def test_flow_retries_rerun_the_body_after_the_delay(only_flow_run: Any) -> None:
    attempts: list[float] = []

    @flow(name="flaky-flow", retries=2, retry_delay_seconds=0.3)
    def flaky_flow() -> str:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return "second time lucky"

    assert flaky_flow() == "second time lucky"
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.3

    run = only_flow_run("flaky-flow")
    assert run.state.type == StateType.COMPLETED
    assert run.run_count == 2
    assert names(run.state_history) == ["Pending", "Running", "AwaitingRetry", "Retrying", "Completed"]
    awaiting = run.state_history[2]
    retrying = run.state_history[3]
    assert awaiting.type == StateType.SCHEDULED
    gap = (awaiting.state_details.scheduled_time - awaiting.timestamp).total_seconds()
    assert 0.3 - 0.03 <= gap <= 0.3 + 0.002
    assert retrying.timestamp >= awaiting.state_details.scheduled_time


def test_flow_retries_exhausted_end_failed(only_flow_run: Any) -> None:
    calls: list[int] = []

    @flow(name="always-fails", retries=1)
    def always_fails() -> None:
        calls.append(1)
        raise RuntimeError("nope")

    state = always_fails(return_state=True)
    assert state.is_failed()
    assert len(calls) == 2
    run = only_flow_run("always-fails")
    assert run.run_count == 2
    assert names(run.state_history) == ["Pending", "Running", "AwaitingRetry", "Retrying", "Failed"]


def test_flow_timeout_stops_a_sleeping_body(client: Any, only_flow_run: Any) -> None:
    progressed: list[int] = []

    @flow(name="too-slow", timeout_seconds=0.3)
    def too_slow() -> None:
        for i in range(500):  # 5 s if not stopped
            time.sleep(0.01)
            progressed.append(i)

    start = time.monotonic()
    state = too_slow(return_state=True)
    elapsed = time.monotonic() - start
    assert elapsed < 3.0, f"timeout did not stop the body ({elapsed:.2f}s)"
    assert len(progressed) < 300
    assert state.type == StateType.FAILED and state.name == "TimedOut"
    with pytest.raises(TimeoutError):
        state.result()
    run = only_flow_run("too-slow")
    assert run.state.name == "TimedOut" and run.state.type == StateType.FAILED
    assert "timeout" in (run.state.message or "").lower()
    assert names(run.state_history) == ["Pending", "Running", "TimedOut"]


# -- hooks --------------------------------------------------------------------------------------
def test_on_completion_hook_fires_with_flow_run_and_state(only_flow_run: Any) -> None:
    completed: list[tuple[Any, FlowRun, State]] = []
    failed: list[Any] = []

    @flow(name="hooked-ok", on_completion=[lambda f, r, s: completed.append((f, r, s))],
          on_failure=[lambda f, r, s: failed.append(s)])
    def hooked_ok() -> int:
        return 1

    hooked_ok()
    assert failed == []
    assert len(completed) == 1
    fl, fr, st = completed[0]
    assert fl.name == "hooked-ok"
    run = only_flow_run("hooked-ok")
    assert isinstance(fr, FlowRun) and fr.id == run.id
    assert fr.state is not None and fr.state.id == run.state.id  # the hook sees the final record
    assert st.is_completed() and st.id == run.state.id


def test_on_failure_hook_fires_only_on_failure(only_flow_run: Any) -> None:
    completed: list[Any] = []
    failed: list[tuple[Any, FlowRun, State]] = []

    @flow(name="hooked-bad", on_completion=[lambda f, r, s: completed.append(s)],
          on_failure=[lambda f, r, s: failed.append((f, r, s))])
    def hooked_bad() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError):
        hooked_bad()
    assert completed == []
    assert len(failed) == 1
    fl, fr, st = failed[0]
    run = only_flow_run("hooked-bad")
    assert fl.name == "hooked-bad" and fr.id == run.id
    assert st.is_failed() and st.id == run.state.id


def test_hook_exception_does_not_break_the_run(client: Any, only_flow_run: Any) -> None:
    later: list[State] = []

    def exploding_hook(f: Any, r: Any, s: State) -> None:
        raise RuntimeError("hook blew up")

    @flow(name="bad-hook", on_completion=[exploding_hook, lambda f, r, s: later.append(s)])
    def bad_hook() -> str:
        return "still fine"

    assert bad_hook() == "still fine"
    assert len(later) == 1  # hooks after the failing one still run
    run = only_flow_run("bad-hook")
    assert run.state.type == StateType.COMPLETED
    logs = list(client.iter_logs(run.id))
    assert any("exploding_hook" in log.message and log.level >= 40 for log in logs)


def test_on_crashed_fires_on_keyboard_interrupt(only_flow_run: Any) -> None:
    crashed: list[State] = []
    failed: list[State] = []

    @flow(name="interrupted", on_crashed=[lambda f, r, s: crashed.append(s)],
          on_failure=[lambda f, r, s: failed.append(s)])
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert failed == []
    assert len(crashed) == 1 and crashed[0].is_crashed()
    run = only_flow_run("interrupted")
    assert run.state.type == StateType.CRASHED
    assert names(run.state_history) == ["Pending", "Running", "Crashed"]
    assert "KeyboardInterrupt" in (run.state.message or "")


# -- subflows -----------------------------------------------------------------------------------
def test_subflow_links_parent_and_child(client: Any, only_flow_run: Any) -> None:
    @flow(name="child")
    def child(x: int) -> int:
        return x * 10

    @flow(name="parent")
    def parent() -> int:
        return child(4) + 1

    assert parent() == 41
    parent_run = only_flow_run("parent")
    child_run = only_flow_run("child")
    assert child_run.parent_flow_run_id == parent_run.id
    assert parent_run.parent_flow_run_id is None

    placeholders = [r for r in client.read_task_runs(parent_run.id) if r.child_flow_run_id]
    assert len(placeholders) == 1
    placeholder = placeholders[0]
    assert placeholder.child_flow_run_id == child_run.id
    assert child_run.parent_task_run_id == placeholder.id
    assert placeholder.flow_run_id == parent_run.id
    assert placeholder.state.type == StateType.COMPLETED == child_run.state.type
    assert placeholder.state.result() == 40  # the child's result, read back from the store
    assert client.read_task_runs(child_run.id) == []


def test_failed_subflow_is_mirrored_in_the_parent(client: Any, only_flow_run: Any) -> None:
    @flow(name="bad-child")
    def bad_child() -> None:
        raise ValueError("child failed")

    @flow(name="tolerant-parent")
    def tolerant_parent() -> str:
        state = bad_child(return_state=True)
        assert state.is_failed()
        return "handled"

    assert tolerant_parent() == "handled"
    parent_run = only_flow_run("tolerant-parent")
    child_run = only_flow_run("bad-child")
    assert parent_run.state.type == StateType.COMPLETED
    assert child_run.state.type == StateType.FAILED
    placeholder = client.read_task_run(child_run.parent_task_run_id)
    assert placeholder.child_flow_run_id == child_run.id
    assert placeholder.state.type == StateType.FAILED
    assert placeholder.state.name == child_run.state.name
    assert placeholder.state.message == child_run.state.message
    with pytest.raises(ValueError, match="child failed"):
        placeholder.state.result()


# -- log_prints -----------------------------------------------------------------------------------
def test_log_prints_captures_prints_in_flow_and_task(client: Any, only_flow_run: Any,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    task_ids: list[str] = []

    @task
    def chatty_task() -> None:
        task_ids.append(get_run_context().task_run.id)  # type: ignore[union-attr]
        print("hello from task")

    @flow(name="printer", log_prints=True)
    def printer() -> None:
        print("hello from flow", 42)
        chatty_task()

    @flow(name="quiet")
    def quiet() -> None:
        print("not captured")

    printer()
    quiet()
    print("outside any flow")

    out = capsys.readouterr().out
    assert "outside any flow" in out
    assert "not captured" in out
    assert "hello from flow" not in out and "hello from task" not in out

    run = only_flow_run("printer")
    logs = list(client.iter_logs(run.id))
    flow_lines = [log for log in logs if log.message == "hello from flow 42"]
    task_lines = [log for log in logs if log.message == "hello from task"]
    assert len(flow_lines) == 1 and flow_lines[0].task_run_id is None and flow_lines[0].level == 20
    assert len(task_lines) == 1 and task_lines[0].task_run_id == task_ids[0]
    quiet_logs = list(client.iter_logs(only_flow_run("quiet").id))
    assert not any("not captured" in log.message for log in quiet_logs)


# -- async ----------------------------------------------------------------------------------------
def test_async_flow_with_async_task(client: Any, only_flow_run: Any) -> None:
    @task
    async def async_double(x: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * x

    @flow(name="async-flow")
    async def async_flow(x: int) -> int:
        await asyncio.sleep(0.01)
        return await async_double(x) + 1

    assert asyncio.run(async_flow(5)) == 11
    run = only_flow_run("async-flow")
    assert run.state.type == StateType.COMPLETED
    assert run.parameters == {"x": 5}
    assert run.state.result() == 11
    task_runs = client.read_task_runs(run.id)
    assert len(task_runs) == 1 and task_runs[0].state.result() == 10
