"""``stratoflow work-pool ls|create|inspect|pause|resume`` and ``work-pool queue create|pause|resume``.

A pool's queues are SQS queues: ``inspect`` shows their depth (waiting, in flight, delayed) and the
pool's dead letters; pausing a pool or a queue leaves its messages waiting in SQS.
"""

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from stratoflow.cli import _output
from stratoflow.cli._output import echo, safe
from stratoflow.cli._params import JsonOption
from stratoflow.client import get_client
from stratoflow.models import WorkPoolType

app = typer.Typer(help="Work pools and their queues.")
queue_app = typer.Typer(help="Work queues of a pool.")

PoolName = Annotated[str, typer.Argument(metavar="NAME", help="The work pool's name.")]
PoolOfQueue = Annotated[str, typer.Argument(metavar="POOL", help="The work pool the queue belongs to.")]
QueueName = Annotated[str, typer.Argument(metavar="NAME", help="The queue's name.")]


def _limit(value: int | None) -> Any:
    return "-" if value is None else value


def _pool_rows(pools: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [(p.name, p.type.value, "paused" if p.paused else "active", _limit(p.concurrency_limit),
             _output.dt(p.created)) for p in pools]


@app.command("ls")
def ls(json_: JsonOption = False) -> int:
    """List work pools."""
    pools = get_client().read_work_pools()
    if _output.wants_json(json_):
        _output.print_json([p.model_dump(mode="json") for p in pools])
    else:
        _output.print_table(_pool_rows(pools), ["NAME", "TYPE", "STATUS", "LIMIT", "CREATED"])
    return 0


@app.command("create")
def create(
    name: PoolName,
    pool_type: Annotated[WorkPoolType, typer.Option("--type", help="lambda: the executor function consumes it; "
                                                    "process: a `stratoflow worker`.")] = WorkPoolType.LAMBDA,
    limit: Annotated[int | None, typer.Option(help="Concurrency limit of the pool.")] = None,
    json_: JsonOption = False,
) -> int:
    """Create a work pool (its `default` queue and dead-letter queue on SQS)."""
    pool = get_client().create_work_pool(name, type=pool_type.value, concurrency_limit=limit)
    if _output.wants_json(json_):
        _output.print_json(pool.model_dump(mode="json"))
        return 0
    limit_text = f", limit {pool.concurrency_limit}" if pool.concurrency_limit is not None else ""
    echo("Created work pool ", safe(repr(pool.name)), f" (type {pool.type.value}{limit_text})")
    return 0


@app.command("inspect")
def inspect(name: PoolName, json_: JsonOption = False) -> int:
    """A pool with its queues, their depth and dead letters."""
    status = get_client().read_work_pool_status(name)
    if _output.wants_json(json_):
        _output.print_json(status)
        return 0
    pool = status["pool"]
    state = "paused" if pool["paused"] else "active"
    echo("Work pool ", safe(repr(pool["name"])), " (", safe(pool["type"]), f", {state})")
    print(f"  concurrency limit  {_limit(pool.get('concurrency_limit'))}")
    print(f"  dead letters       {status['dead_letter_messages']}")
    rows = [(q["name"], q["priority"], "paused" if q["paused"] else "active", _limit(q.get("concurrency_limit")),
             q.get("messages_visible", "-"), q.get("messages_in_flight", "-"), q.get("messages_delayed", "-"))
            for q in status["queues"]]
    _output.print_table(rows, ["QUEUE", "PRIORITY", "STATUS", "LIMIT", "WAITING", "IN FLIGHT", "DELAYED"])
    return 0


def _pool_paused(name: str, pause: bool, as_json: bool) -> int:
    client = get_client()
    pool = client.pause_work_pool(name) if pause else client.resume_work_pool(name)
    if as_json:
        _output.print_json(pool.model_dump(mode="json"))
    else:
        echo("Work pool ", safe(repr(pool.name)), f" is {'paused' if pool.paused else 'active'}")
    return 0


@app.command("pause")
def pause(name: PoolName, json_: JsonOption = False) -> int:
    """Pause a work pool (its messages wait in SQS; nothing is lost)."""
    return _pool_paused(name, True, _output.wants_json(json_))


@app.command("resume")
def resume(name: PoolName, json_: JsonOption = False) -> int:
    """Resume a work pool."""
    return _pool_paused(name, False, _output.wants_json(json_))


# -- queues ---------------------------------------------------------------------------------------
app.add_typer(queue_app, name="queue", help="Work queues of a pool.")


@queue_app.command("create")
def queue_create(
    pool: PoolOfQueue,
    name: QueueName,
    priority: Annotated[int, typer.Option(help="1 is served first.")] = 1,
    limit: Annotated[int | None, typer.Option(help="Concurrency limit of the queue.")] = None,
    json_: JsonOption = False,
) -> int:
    """Create a queue (an SQS queue) in a pool."""
    queue = get_client().create_work_queue(pool, name, priority=priority, concurrency_limit=limit)
    if _output.wants_json(json_):
        _output.print_json(queue.model_dump(mode="json"))
    else:
        echo("Created work queue ", safe(f"{queue.work_pool_name}/{queue.name}"), f" (priority {queue.priority})")
    return 0


def _queue_paused(pool: str, name: str, pause: bool, as_json: bool) -> int:
    client = get_client()
    queue = client.pause_work_queue(pool, name) if pause else client.resume_work_queue(pool, name)
    if as_json:
        _output.print_json(queue.model_dump(mode="json"))
    else:
        state = "paused" if queue.paused else "active"
        echo("Work queue ", safe(f"{queue.work_pool_name}/{queue.name}"), f" is {state}")
    return 0


@queue_app.command("pause")
def queue_pause(pool: PoolOfQueue, name: QueueName, json_: JsonOption = False) -> int:
    """Pause a queue (its messages wait in SQS)."""
    return _queue_paused(pool, name, True, _output.wants_json(json_))


@queue_app.command("resume")
def queue_resume(pool: PoolOfQueue, name: QueueName, json_: JsonOption = False) -> int:
    """Resume a queue."""
    return _queue_paused(pool, name, False, _output.wants_json(json_))
