"""``stratoflow dev``: the local cloud over HTTP (moto server, the stack's resources, the API, the
executor, schedules) until Ctrl-C or SIGTERM. It prints the ``export`` lines that point the SDK and
the CLI at it, then ``ready`` (what tests and scripts wait for), and ``stopped`` when it is done."""

import gc
import signal
import threading
import time
from typing import Annotated, Any

import typer

from stratoflow.cli.config import export_line


def dev(
    port: Annotated[int, typer.Option(help="Port of the API (0 picks a free one).")] = 4200,
    moto_port: Annotated[int, typer.Option(help="Port of the moto server (0: a free one).")] = 0,
    handler: Annotated[str | None, typer.Option(
        metavar="PATH:ATTR", help="The API's Lambda handler (default <repo>/functions/api/app.py:lambda_handler).")]
    = None,
    timeout: Annotated[float, typer.Option(help="The function's timeout in seconds.")] = 30.0,
    no_executor: Annotated[bool, typer.Option(
        "--no-executor", help="Do not consume work pools, fire schedules or send due runs (the API alone).")] = False,
    executor_concurrency: Annotated[int, typer.Option(
        help="Flow runs the local executor function runs at once.")] = 4,
) -> int:
    """Run the local cloud over HTTP: moto server, provisioned resources, the API."""
    # cold start: the local cloud loads moto and boto3 (about a second); no other command needs them
    from stratoflow.local.devstack import DevStack

    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = DevStack(port=port, moto_port=moto_port, handler=handler, function_timeout=timeout,
                     executor=not no_executor, executor_concurrency=executor_concurrency)
    try:
        started = time.perf_counter()
        stack.start()
        _banner(stack, time.perf_counter() - started)
        while not stop.wait(1.0):  # a signal wakes it at once on POSIX (within the second on Windows)
            pass
    finally:
        try:
            stack.stop()  # bounded (every join has a timeout); a repeated signal does not cut it short
        finally:
            for sig, previous_handler in previous.items():
                signal.signal(sig, previous_handler)
            # The process ends next: spare it a last collection over moto's and botocore's many
            # objects (about half a second).
            gc.freeze()
    print("stopped", flush=True)
    return 0


def _banner(stack: Any, seconds: float) -> None:
    """Where everything is, the ``export`` lines for another shell, then ``ready``."""
    urls = stack.urls
    print(f"Stratoflow dev stack (up in {seconds:.1f}s)")
    print(f"  API       {urls.api}  <- {stack.handler_spec}")
    print(f"  UI        {urls.api}/ui/")
    print(f"  AWS       {urls.moto}  (moto: tables {stack.table_prefix}-*, bucket {stack.bucket})")
    if stack.executor_enabled:
        print(f"  executor  {stack.executor_config.handler_path}  <- the SQS queues of every `lambda` work "
              f"pool (up to {stack.executor_config.max_concurrency} at once); schedules fire on time")
    print("\nPoint the SDK and the CLI in another shell at it:")
    for name, value in stack.env().items():
        print(f"  {export_line(name, value)}")
    print("\nCtrl-C stops it.")
    print("ready", flush=True)
