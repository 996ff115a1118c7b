"""Runs a Lambda handler in this process the way the Lambda service runs it.

* The handler is a file and an attribute (``functions/api/app.py:lambda_handler``). Its folder
  goes on ``sys.path`` first, like Lambda's task root, so the handler's sibling modules import.
* **Execution environments.** Lambda never runs two invocations in one environment (one
  process) at a time, and handlers rely on that: Powertools' resolver keeps the current event on
  a process-wide ``app`` object. So by default (``max_concurrency=1``) invocations run one at a
  time, in a worker thread of the environment; concurrent requests wait their turn (for as long
  as the caller is willing to wait). With ``max_concurrency > 1`` more environments start on
  demand (a cold start each: the handler module is imported afresh), but they are threads of one
  process: only state kept in the handler's own module is per environment, modules it imports
  are shared, so that is safe only for handlers that keep per-request state in their module.
* **Timeouts.** An invocation that runs past the function's timeout fails with Lambda's
  ``Task timed out after N seconds``; its environment is thrown away (Lambda would stop it; a
  thread cannot be stopped, so it finishes in the background and is not reused).
* **Payloads** go through JSON as they do on Lambda: the return value is serialized the way the
  Python runtime does it (``Decimal`` as a number; anything else unserializable is a
  ``Runtime.MarshalError``), and responses over Lambda's 6 MB limit fail.
* The **context** object has the runtime's attributes; ``memory_limit_in_mb`` is a string, as
  the real runtime reads it from ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``.
"""

from __future__ import annotations

import contextlib
import decimal
import importlib.util
import itertools
import json
import queue
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from stratoflow.exceptions import StratoflowError

ACCOUNT_ID = "123456789012"  # moto's default account: ARNs here match what the moto server reports
# Lambda's limit for a synchronous invocation's request and response (the error names this number).
MAX_PAYLOAD_BYTES = 6_291_556
DEFAULT_HANDLER_ATTR = "lambda_handler"


class HandlerError(StratoflowError):
    """The handler cannot be loaded: no such file, no such attribute, or its module failed to import."""


def parse_handler_spec(spec: str) -> tuple[Path, str]:
    """``path/to/app.py:lambda_handler`` -> (path, attribute); the attribute defaults to
    ``lambda_handler`` (``C:\\app.py`` alone is a path, not a path and an attribute)."""
    path, sep, attr = spec.rpartition(":")
    if sep and path and attr.isidentifier():
        return Path(path).expanduser(), attr
    return Path(spec).expanduser(), DEFAULT_HANDLER_ATTR


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def load_handler(path: Path, attr: str, module_name: str) -> tuple[ModuleType, Callable[..., Any]]:
    """Import ``path`` as module ``module_name`` and return it with its ``attr`` callable."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise HandlerError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic and dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        detail = str(exc) if isinstance(exc, SyntaxError) else f"{exc}{_where(exc)}"
        raise HandlerError(f"importing the handler module {path} failed: {type(exc).__name__}: {detail}") from exc
    handler = getattr(module, attr, None)
    if handler is None or not callable(handler):
        sys.modules.pop(module_name, None)
        what = "is not callable" if handler is not None else "is not defined"
        raise HandlerError(f"handler {attr!r} {what} in {path}")
    return module, handler


@dataclass
class FunctionConfig:
    handler_path: Path
    handler_attr: str = DEFAULT_HANDLER_ATTR
    name: str = "stratoflow-dev-api"
    memory_mb: int = 512
    timeout: float = 30.0  # seconds, Lambda's ``Timeout``
    region: str = "us-east-1"
    max_concurrency: int = 1
    version: str = "$LATEST"

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.name}"


class LambdaContext:
    """The context object of the Python runtime (same attributes and method)."""

    def __init__(self, config: FunctionConfig, request_id: str, environment: int, deadline: float) -> None:
        self.function_name = config.name
        self.function_version = config.version
        self.invoked_function_arn = config.arn
        self.memory_limit_in_mb = str(config.memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{config.name}"
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        self.log_stream_name = f"{day}/[{config.version}]local{environment:04d}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = deadline  # time.monotonic()

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(function_name={self.function_name!r}, aws_request_id={self.aws_request_id!r})"


@dataclass
class InvocationResult:
    request_id: str
    payload: Any = None  # the return value as the caller sees it: after Lambda's JSON round trip
    payload_json: str = "null"  # the serialized return value (API Gateway's body for simple responses)
    error: dict[str, Any] | None = None  # Lambda's error shape: errorType, errorMessage, stackTrace
    timed_out: bool = False  # the function ran past its timeout
    abandoned: bool = False  # the caller stopped waiting first (the function keeps running)
    duration_ms: float = 0.0
    init_ms: float | None = None  # set when this invocation started a new environment


def _decimal_default(value: Any) -> Any:
    # What the Lambda Python runtime does with Decimals (DynamoDB numbers) in a return value.
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _error(exc: BaseException, error_type: str | None = None, skip: int = 0) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)[skip:]
    return {"errorMessage": str(exc), "errorType": error_type or type(exc).__name__,
            "stackTrace": traceback.format_list(frames)}


@dataclass
class _Job:
    event: Any
    context: LambdaContext
    done: threading.Event = field(default_factory=threading.Event)
    completed: bool = False  # set under the function's lock, before the environment is released
    payload: Any = None
    payload_json: str = "null"
    error: dict[str, Any] | None = None
    fatal: bool = False  # the environment must not be reused (e.g. the handler called sys.exit)
    started: float = 0.0
    finished: float = 0.0

    def run(self, handler: Callable[..., Any]) -> None:
        self.started = time.perf_counter()
        try:
            value = handler(self.event, self.context)
        except Exception as exc:
            self.error = _error(exc, skip=1)  # the trace starts in the handler, as on Lambda
        except BaseException as exc:  # SystemExit and the like end the environment on Lambda
            self.error = _error(exc, "Runtime.ExitError", skip=1)
            self.fatal = True
        else:
            try:
                text = json.dumps(value, default=_decimal_default)
            except (TypeError, ValueError) as exc:
                self.error = {"errorMessage": f"Unable to marshal response: {exc}", "errorType": "Runtime.MarshalError",
                              "stackTrace": []}
            else:
                if len(text.encode()) > MAX_PAYLOAD_BYTES:
                    self.error = {"errorMessage": "Response payload size exceeded maximum allowed payload size "
                                  f"({MAX_PAYLOAD_BYTES} bytes).", "errorType": "Function.ResponseSizeTooLarge",
                                  "stackTrace": []}
                else:
                    self.payload_json = text
                    self.payload = json.loads(text)
        self.finished = time.perf_counter()


class _Environment:
    def __init__(self, function: LocalFunction, number: int, module: ModuleType, handler: Callable[..., Any]) -> None:
        self.function = function
        self.number = number
        self.module = module
        self.handler = handler
        self.discarded = False
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=f"lambda-{function.config.name}-env{number}",
                                       daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            job.run(self.handler)
            if not self.function._finished(self, job):
                return


class LocalFunction:
    """One Lambda function served from this process; see the module docstring."""

    def __init__(self, config: FunctionConfig) -> None:
        self.config = config
        self._cond = threading.Condition()
        self._idle: list[_Environment] = []
        self._environments: list[_Environment] = []  # every environment ever started (for close)
        self._live = 0  # environments not discarded (busy or idle)
        self._numbers = itertools.count(1)
        self._module_names: list[str] = []
        self._sys_path_entry: str | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Check the handler and start the first environment: an import error surfaces here."""
        path = self.config.handler_path
        if not path.is_file():
            raise HandlerError(f"no handler file at {path}")
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
            self._sys_path_entry = folder
        with self._cond:
            self._live += 1
        try:
            environment = self._new_environment()
        except BaseException:
            self.close()
            raise
        with self._cond:
            self._idle.append(environment)

    def close(self, timeout: float = 5.0) -> list[threading.Thread]:
        """Stop every environment's worker; returns the threads still busy after ``timeout``."""
        with self._cond:
            self._closed = True
            environments = list(self._environments)
            self._idle.clear()
            self._cond.notify_all()
        for environment in environments:
            environment.jobs.put(None)
        deadline = time.monotonic() + timeout
        for environment in environments:
            environment.thread.join(max(0.0, deadline - time.monotonic()))
        for name in self._module_names:
            sys.modules.pop(name, None)
        self._module_names.clear()
        if self._sys_path_entry is not None:
            with contextlib.suppress(ValueError):
                sys.path.remove(self._sys_path_entry)
            self._sys_path_entry = None
        return [e.thread for e in environments if e.thread.is_alive()]

    # -- environments -------------------------------------------------------------------------
    def _new_environment(self) -> _Environment:
        number = next(self._numbers)
        stem = self.config.handler_path.stem
        name = stem if number == 1 and stem not in sys.modules else f"{stem}__lambda_env{number}"
        module, handler = load_handler(self.config.handler_path, self.config.handler_attr, name)
        self._module_names.append(name)
        environment = _Environment(self, number, module, handler)
        with self._cond:
            self._environments.append(environment)
        return environment

    def _acquire(self, deadline: float | None) -> tuple[_Environment | None, float | None]:
        """An idle environment, else a new one (and its init time), else None at ``deadline``."""
        with self._cond:
            while True:
                if self._closed:
                    raise StratoflowError(f"function {self.config.name} is shut down")
                if self._idle:
                    return self._idle.pop(), None
                if self._live < self.config.max_concurrency:
                    self._live += 1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None, None
                self._cond.wait(remaining)
        started = time.perf_counter()
        try:
            environment = self._new_environment()
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise
        return environment, (time.perf_counter() - started) * 1000

    def _finished(self, environment: _Environment, job: _Job) -> bool:
        """Called by an environment's worker after each job; False ends the worker."""
        with self._cond:
            job.completed = True
            keep = not (environment.discarded or job.fatal or self._closed)
            if keep:
                self._idle.append(environment)
            elif not environment.discarded:
                environment.discarded = True
                self._live -= 1
            self._cond.notify()
        job.done.set()
        return keep

    # -- invoking -----------------------------------------------------------------------------
    def invoke(self, event: Any, *, wait_limit: float | None = None) -> InvocationResult:
        """Run one invocation. ``wait_limit`` is how long the caller waits (API Gateway gives up
        after 30 s even when the function's timeout is longer)."""
        request_id = str(uuid.uuid4())
        arrived = time.monotonic()
        try:
            environment, init_ms = self._acquire(None if wait_limit is None else arrived + wait_limit)
        except HandlerError as exc:
            return InvocationResult(request_id, error=_error(exc, "Runtime.ImportModuleError"))
        if environment is None:  # every environment stayed busy for as long as the caller waits
            return InvocationResult(request_id, abandoned=True, duration_ms=0.0)
        if wait_limit is not None:
            wait_limit = max(0.0, wait_limit - (time.monotonic() - arrived))
        timeout = self.config.timeout
        context = LambdaContext(self.config, request_id, environment.number, time.monotonic() + timeout)
        job = _Job(event, context)
        environment.jobs.put(job)
        waited = timeout if wait_limit is None else min(timeout, wait_limit)
        job.done.wait(waited)
        with self._cond:
            completed = job.completed
            if not completed and waited >= timeout:
                environment.discarded = True  # Lambda stops the environment; this one is never reused
                self._live -= 1
                self._cond.notify()
        if completed:
            return InvocationResult(request_id, payload=job.payload, payload_json=job.payload_json, error=job.error,
                                    duration_ms=(job.finished - job.started) * 1000, init_ms=init_ms)
        if waited >= timeout:
            error = {"errorMessage": f"Task timed out after {timeout:.2f} seconds", "errorType": "Sandbox.Timedout",
                     "stackTrace": []}
            return InvocationResult(request_id, error=error, timed_out=True, duration_ms=timeout * 1000,
                                    init_ms=init_ms)
        return InvocationResult(request_id, abandoned=True, duration_ms=waited * 1000, init_ms=init_ms)

    def __enter__(self) -> LocalFunction:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
