"""``stratoflow concurrency-limit create|ls|delete``: at most N task runs at once per tag."""

from typing import Annotated

import typer

from stratoflow.cli import _output
from stratoflow.cli._output import echo, safe
from stratoflow.cli._params import JsonOption
from stratoflow.client import get_client

app = typer.Typer(help="Concurrency limits by tag.")

Tag = Annotated[str, typer.Argument(metavar="TAG", help="The tag whose task runs are limited.")]


# ignore_unknown_options: a negative LIMIT reaches the API's check (one line naming `limit`) instead
# of being taken for an unknown option.
@app.command("create", context_settings={"ignore_unknown_options": True})
def create(
    tag: Tag,
    limit: Annotated[int, typer.Argument(metavar="LIMIT", help="Task runs of the tag at once.")],
    json_: JsonOption = False,
) -> int:
    """Create the limit of a tag, or change it."""
    created = get_client().create_concurrency_limit(tag, limit)
    if _output.wants_json(json_):
        _output.print_json(created.model_dump(mode="json"))
    else:
        echo("Concurrency limit of tag ", safe(repr(created.tag)), f": {created.limit} (version {created.version})")
    return 0


@app.command("ls")
def ls(json_: JsonOption = False) -> int:
    """List concurrency limits."""
    limits = get_client().read_concurrency_limits()
    if _output.wants_json(json_):
        _output.print_json([c.model_dump(mode="json") for c in limits])
        return 0
    rows = [(c.tag, c.limit, len(c.active_slots), _output.dt(c.updated)) for c in limits]
    _output.print_table(rows, ["TAG", "LIMIT", "ACTIVE", "UPDATED"])
    return 0


@app.command("delete")
def delete(tag: Tag, json_: JsonOption = False) -> int:
    """Delete the limit of a tag."""
    get_client().delete_concurrency_limit(tag)
    if _output.wants_json(json_):
        _output.print_json({"deleted": tag})
    else:
        echo("Deleted the concurrency limit of tag ", safe(repr(tag)))
    return 0
