"""``stratoflow worker --pool P``: run the flow runs of a work pool in this process, for flows
longer than Lambda's 15 minutes (``process`` pools). SIGTERM lets running flows finish for
``--grace`` seconds, then releases them to run again elsewhere."""

import logging
from typing import Annotated

import typer
from rich.text import Text

from stratoflow.cli._output import echo, safe
from stratoflow.cli._params import CliUsageError


def worker(
    pool: Annotated[str, typer.Option("--pool", help="The work pool to poll.")],
    queue: Annotated[list[str] | None, typer.Option(
        "--queue", help="Only this queue of the pool (repeatable; default all).")] = None,
    limit: Annotated[int, typer.Option(help="Flow runs at once.")] = 4,
    grace: Annotated[float, typer.Option(
        help="On SIGTERM, seconds to let running flows finish before releasing them.")] = 30.0,
) -> int:
    """Execute the runs of a work pool in this process (flows longer than Lambda's 15 minutes)."""
    if limit < 1:
        raise CliUsageError("--limit must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)-7s | %(message)s")
    # cold start: the worker loads the executor, the sandbox and the API's routes; no other command does
    from stratoflow.worker import Worker, install_signal_handlers

    runner = Worker(pool, queues=queue or (), limit=limit, grace_seconds=grace)
    install_signal_handlers(runner)
    queues: list[str | Text] = [" (queues ", safe(", ".join(queue)), ")"] if queue else []
    echo("Worker polling work pool ", safe(repr(pool)), *queues, f", up to {limit} run(s) at once")
    runner.serve()
    echo(f"Worker stopped: {len(runner.finished)} run(s) finished, {len(runner.released)} released")
    return 0
