"""``stratoflow dev``: the local cloud over real HTTP, on one machine, without Docker.

``DevStack`` is the stack: it composes the local stand-ins for the AWS services, provisions the
stack's resources, wires the functions to their event sources and owns their lifecycle (start in
order, stop everything, restore the environment). It starts four things in this process:

1. **moto in server mode** on 127.0.0.1, the AWS endpoint (``moto_server.py``: DynamoDB, S3,
   SQS, ...; requests applied one at a time, so conditional writes are atomic as on AWS).
2. **The stack's resources** provisioned into it from ``template.yaml`` (``provision.py``): the
   tables, the bucket, the queues, named as the SAM stack names them (``stratoflow-dev-*``).
3. **The executor function** (``functions/executor/app.py``) fed from the SQS queues of every
   `lambda` work pool by a local event source mapping (``event_sources.py``: batch size 1,
   partial batch responses, paused pools and queues skipped), the scheduler loop that fires
   deployment schedules on time (``scheduler_loop.py``), and the janitor's tick every 2 seconds
   (``janitor.py``: late runs, lost executors, cancellations, dead slots, due runs sent), as the
   scheduled functions do on AWS.
4. **The API function** served on localhost the way API Gateway (HTTP API, payload format 2.0)
   and Lambda serve it: the HTTP server (``api_server.py``: size limits, cross-site refusal) turns
   each request into API Gateway's event and the result into its response (``api_gateway.py``),
   and the handler runs in a Lambda-like runtime (``lambda_runtime.py``: execution environments,
   context, timeout). The handler sees the stack's settings in its environment (``STRATOFLOW_*``,
   dummy credentials, ``AWS_ENDPOINT_URL``), so it talks to the moto server. A failing function's
   traceback is written to the stack's log stream.

Moto's backends are process-global: run a ``DevStack`` in a process of its own (``stratoflow
dev`` does), not beside the embedded backend.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TextIO

from stratoflow.exceptions import StratoflowError
from stratoflow.janitor import tick
from stratoflow.local.api_gateway import INTEGRATION_TIMEOUT
from stratoflow.local.api_server import ApiServer
from stratoflow.local.event_sources import SqsEventSource, lambda_pool_targets
from stratoflow.local.lambda_runtime import (
    FunctionConfig,
    HandlerError,
    InvocationResult,
    LocalFunction,
    parse_handler_spec,
)
from stratoflow.local.moto_server import MotoServer
from stratoflow.local.provision import ProvisionReport, default_template_path, provision_from_template
from stratoflow.local.scheduler_loop import SchedulerLoop
from stratoflow.local.threaded_server import STOP_TIMEOUT
from stratoflow.settings import Settings, get_settings, reset_settings
from stratoflow.storage import aws as _aws
from stratoflow.storage import get_server_store
from stratoflow.storage.dynamodb import DynamoDBStore
from stratoflow.storage.keys import ensure_result_key_secret, home_key
from stratoflow.workpools.sqs import ReceivedMessage, SqsQueues

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_HANDLER = Path("functions") / "api" / "app.py"
EXECUTOR_HANDLER = Path("functions") / "executor" / "app.py"
CONTROL_LOOP_INTERVAL = 2.0
LOCAL_CREDENTIAL = "stratoflow-local"  # moto accepts any credentials; these never reach AWS

# Removed from the function's environment: they would point its AWS clients elsewhere.
_CLEARED_VARS = ("STRATOFLOW_API_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


def default_handler(relative: Path = DEFAULT_HANDLER) -> Path:
    """``functions/api/app.py`` (or another function's file) of the Stratoflow checkout this
    package runs from (else of the current directory)."""
    for root in (REPO_ROOT, Path.cwd()):
        if (root / relative).is_file():
            return root / relative
    return REPO_ROOT / relative


# -- the stack -------------------------------------------------------------------------------------
class StackUrls(NamedTuple):
    api: str
    moto: str


class DevStack:
    """moto server + provisioned resources + the API function on localhost. See the module docstring.

    ``start()``/``stop()`` or ``with DevStack(...) as stack:``. While it runs, this process's
    environment carries the function's settings (``handler_env()``); ``stop()`` restores it.
    """

    def __init__(
        self,
        *,
        port: int = 4200,
        moto_port: int = 0,
        host: str = "127.0.0.1",
        handler: str | None = None,
        table_prefix: str = "stratoflow-dev",
        bucket: str = "stratoflow-dev",
        region: str = "us-east-1",
        function_name: str = "stratoflow-dev-api",
        function_timeout: float = 30.0,
        memory_mb: int = 512,
        max_concurrency: int = 1,
        integration_timeout: float = INTEGRATION_TIMEOUT,
        log_stream: TextIO | None = sys.stderr,
        executor: bool = True,
        executor_timeout: float = 900.0,
        executor_concurrency: int = 4,
    ) -> None:
        if handler:
            path, attr = parse_handler_spec(handler)
        else:
            path, attr = default_handler(), "lambda_handler"
        self.handler_path = path.resolve() if path.exists() else path
        self.handler_attr = attr
        self.host = host
        self.port = port
        self.moto_port = moto_port
        self.table_prefix = table_prefix
        self.bucket = bucket
        self.region = region
        self.integration_timeout = integration_timeout
        self.function_config = FunctionConfig(handler_path=self.handler_path, handler_attr=attr, name=function_name,
                                              memory_mb=memory_mb, timeout=function_timeout, region=region,
                                              max_concurrency=max_concurrency)
        self.log_stream = log_stream
        self.executor_enabled = executor
        self.executor_config = FunctionConfig(
            handler_path=default_handler(EXECUTOR_HANDLER), name=function_name.replace("-api", "") + "-executor",
            memory_mb=1024, timeout=executor_timeout, region=region, max_concurrency=executor_concurrency)
        self._executor: LocalFunction | None = None
        self._event_source: SqsEventSource | None = None
        self._control: threading.Thread | None = None
        self._control_stop = threading.Event()
        self._scheduler: SchedulerLoop | None = None
        self.provisioned: ProvisionReport | None = None
        self._explicit_handler = bool(handler)
        self._log_lock = threading.Lock()
        self._moto: MotoServer | None = None
        self._api: ApiServer | None = None
        self._api_thread: threading.Thread | None = None
        self._function: LocalFunction | None = None
        self._saved_env: dict[str, str | None] | None = None
        self._werkzeug_level: int | None = None
        self._running = False

    @property
    def handler_spec(self) -> str:
        return f"{self.handler_path}:{self.handler_attr}"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> DevStack:
        if self._running or self._moto is not None:
            raise StratoflowError("this DevStack is already started")
        if not self.handler_path.is_file():
            hint = "" if self._explicit_handler else " (the default API handler); pass --handler PATH:ATTR"
            raise HandlerError(f"no handler file at {self.handler_path}{hint}")
        try:
            try:  # bind first: a busy port fails before anything else starts
                self._api = ApiServer((self.host, self.port), self.invoke, self._log, self.integration_timeout)
            except OSError as exc:
                raise StratoflowError(f"cannot serve the API on {self.host}:{self.port}: {exc.strerror or exc} "
                                      "(choose another port; 0 picks a free one)") from exc
            self.port = self._api.server_address[1]
            self._quiet_werkzeug()
            self._moto = MotoServer(self.host, self.moto_port)
            try:
                self._moto.start()
            except OSError as exc:
                raise StratoflowError(f"cannot serve moto on {self.host}:{self.moto_port}: {exc.strerror or exc} "
                                      "(choose another port; 0 picks a free one)") from exc
            self.moto_port = self._moto.port
            self._apply_env()
            self._provision()
            self._function = LocalFunction(self.function_config)
            self._function.start()
            if self.executor_enabled:
                self._start_executor()
            self._api_thread = threading.Thread(target=self._api.serve_forever, kwargs={"poll_interval": 0.1},
                                                name="stratoflow-dev-api", daemon=True)
            self._api_thread.start()
        except BaseException:
            self.stop()
            raise
        self._running = True
        return self

    def stop(self) -> None:
        """Stop serving, end connections, stop the function's environments and moto, restore the
        environment. Safe to call twice and after a failed start."""
        self._running = False
        leftovers: list[threading.Thread] = []
        if self._api is not None:
            if self._api_thread is not None:
                self._api.shutdown()
                self._api_thread.join()
                self._api_thread = None
            leftovers += self._api.close_connections(STOP_TIMEOUT)
            self._api.server_close()
            self._api = None
        leftovers += self._stop_executor()
        if self._function is not None:
            leftovers += self._function.close(STOP_TIMEOUT)
            self._function = None
        if self._moto is not None:
            leftovers += self._moto.stop(STOP_TIMEOUT)
            self._moto = None
        self._restore_env()
        if self._werkzeug_level is not None:
            logging.getLogger("werkzeug").setLevel(self._werkzeug_level)
            self._werkzeug_level = None
        if leftovers:
            self._log(f"still running after stop (left behind): {', '.join(t.name for t in leftovers)}")

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._running

    # -- what it offers ---------------------------------------------------------------------------
    @property
    def urls(self) -> StackUrls:
        return StackUrls(api=f"http://{self.host}:{self.port}", moto=f"http://{self.host}:{self.moto_port}")

    def env(self) -> dict[str, str]:
        """The variables a shell needs to point the SDK and the CLI at this stack."""
        urls = self.urls
        return {
            "STRATOFLOW_BACKEND": "aws",
            "STRATOFLOW_API_URL": urls.api,
            "STRATOFLOW_AWS_ENDPOINT_URL": urls.moto,
            "STRATOFLOW_TABLE_PREFIX": self.table_prefix,
            "STRATOFLOW_BUCKET": self.bucket,
            "STRATOFLOW_REGION": self.region,
            "STRATOFLOW_RESULT_KEY_SECRET": self.result_key_secret,
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIAL,
        }

    @property
    def result_key_secret(self) -> str:
        """The secret holding the key results are signed with (the template's ``ResultKey``)."""
        return f"{self.table_prefix}-result-key"

    def handler_env(self) -> dict[str, str]:
        """The function's environment: the stack's settings (not the API URL: the function is the
        API) and, as on Lambda, the region; every AWS client it makes goes to moto."""
        env = {k: v for k, v in self.env().items() if k != "STRATOFLOW_API_URL"}
        env.update({"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL": self.urls.moto})
        return env

    def invoke(self, event: dict[str, Any]) -> InvocationResult:
        """Invoke the API function with an event (the HTTP server does this for each request)."""
        if self._function is None:
            raise StratoflowError("the DevStack is not running")
        return self._function.invoke(event, wait_limit=self.integration_timeout)

    def control_tick(self) -> dict[str, int]:
        """One pass of the control loop: the janitor's tick (late runs, lost executors, finished
        cancellations, dead slots, runs that came due sent to their queues). Returns its counts."""
        return tick(get_server_store(), get_settings()).counts()

    # -- internals --------------------------------------------------------------------------------
    def _start_executor(self) -> None:
        self._executor = LocalFunction(self.executor_config)
        self._executor.start()
        queues = SqsQueues(get_settings())
        self._event_source = SqsEventSource(
            lambda event: self._executor.invoke(event) if self._executor else InvocationResult("stopped"),
            queues, lambda: lambda_pool_targets(get_server_store, queues), region=self.region, batch_size=1,
            concurrency=self.executor_config.max_concurrency, wait_seconds=1, on_result=self._log_execution)
        self._event_source.start()
        self._scheduler = SchedulerLoop(get_settings(), store_factory=get_server_store)
        self._scheduler.start()
        self._control_stop.clear()
        self._control = threading.Thread(target=self._control_loop, name="stratoflow-dev-control", daemon=True)
        self._control.start()

    def _stop_executor(self) -> list[threading.Thread]:
        leftovers: list[threading.Thread] = []
        self._control_stop.set()
        if self._control is not None:
            self._control.join(STOP_TIMEOUT)
            if self._control.is_alive():
                leftovers.append(self._control)
            self._control = None
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        if self._event_source is not None:
            leftovers += self._event_source.stop(STOP_TIMEOUT)
            self._event_source = None
        if self._executor is not None:
            leftovers += self._executor.close(STOP_TIMEOUT)
            self._executor = None
        return leftovers

    def _control_loop(self) -> None:
        while not self._control_stop.wait(CONTROL_LOOP_INTERVAL):
            try:
                counts = self.control_tick()
            except Exception as exc:  # the loop must outlive a failed pass; the next one retries
                self._log(f"janitor: {type(exc).__name__}: {exc}")
                continue
            done = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
            if done:
                self._log(f"janitor: {done}")

    def _log_execution(self, messages: list[ReceivedMessage], result: InvocationResult) -> None:
        for message in messages:
            try:
                run_id = json.loads(message.body).get("flow_run_id", "?")
            except ValueError:
                run_id = "?"
            line = f"executor: flow run {run_id} from {message.target.pool}/{message.target.queue}"
            if result.error is not None:
                line += f" -> {result.error.get('errorType')}: {result.error.get('errorMessage')}"
            elif isinstance(result.payload, dict) and result.payload.get("batchItemFailures"):
                line += " -> left in the queue"
            else:
                line += f" -> done ({result.duration_ms:.0f} ms)"
            self._log(line)

    def _apply_env(self) -> None:
        env = self.handler_env()
        cleared = [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL_")] + list(_CLEARED_VARS)
        self._saved_env = {k: os.environ.get(k) for k in [*env, *cleared]}
        for key in cleared:
            os.environ.pop(key, None)
        os.environ.update(env)
        self._reset_sdk()

    def _restore_env(self) -> None:
        if self._saved_env is None:
            return
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = None
        self._reset_sdk()

    @staticmethod
    def _reset_sdk() -> None:
        reset_settings()
        _aws.clear_clients()

    def _provision(self) -> None:
        """The stack's resources from template.yaml (one topology with the deployed stack); a
        package installed without the template provisions what the code needs directly."""
        settings = Settings(backend="aws", aws_endpoint_url=self.urls.moto, table_prefix=self.table_prefix,
                            bucket=self.bucket, region=self.region)
        template = default_template_path()
        if template is not None:
            self.provisioned = provision_from_template(settings, template)
            return
        self._log("no template.yaml to provision from (an installed package); creating the tables and bucket")
        ensure_result_key_secret(settings, self.result_key_secret, home_key(settings.home).hex())
        store = DynamoDBStore(settings)
        try:
            store.ensure_resources()
        finally:
            store.close()

    def _quiet_werkzeug(self) -> None:
        # moto's server logs every request through werkzeug at INFO; the stack logs its own.
        logger = logging.getLogger("werkzeug")
        self._werkzeug_level = logger.level
        logger.setLevel(logging.WARNING)

    def _log(self, message: str) -> None:
        if self.log_stream is None:
            return
        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        with self._log_lock:
            try:
                self.log_stream.write(f"{stamp} | {message}\n")
                self.log_stream.flush()
            except (OSError, ValueError):
                pass
