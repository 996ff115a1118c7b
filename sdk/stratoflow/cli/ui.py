"""``stratoflow ui``: the web UI of a deployed stack, in the browser, through the local signing
proxy of ``stratoflow.local.ui_proxy`` (which says what it forwards and what it refuses)."""

from typing import Annotated

import typer

from stratoflow.cli import _output
from stratoflow.cli._output import echo, safe
from stratoflow.exceptions import StratoflowError
from stratoflow.local.ui_proxy import DEFAULT_PORT, SigningProxy
from stratoflow.settings import get_settings


def ui(
    port: Annotated[int, typer.Option(help="Local port to listen on (0 picks a free one).")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Address to listen on (keep it local).")] = "127.0.0.1",
    api_url: Annotated[str | None, typer.Option(
        help="The stack's API endpoint (default: STRATOFLOW_API_URL).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every forwarded request.")] = False,
) -> int:
    """Open the web UI of a deployed stack through a local SigV4-signing proxy."""
    settings = get_settings()
    api_url = api_url or settings.api_url
    if not api_url:
        raise StratoflowError("set STRATOFLOW_API_URL (the stack's API endpoint) or pass --api-url")
    try:
        proxy = SigningProxy(api_url, host=host, port=port, region=settings.region)
    except OSError as exc:
        raise StratoflowError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                              "(choose another port with --port; 0 picks a free one)") from exc
    proxy.verbose = verbose  # type: ignore[attr-defined]
    if proxy.transport._get_credentials() is None:
        _output.stderr().print("warning: no AWS credentials found; requests go unsigned (an IAM-protected API "
                               "refuses them)")
    echo("Stratoflow UI of ", safe(proxy.api_url), f" (requests signed with SigV4, region {settings.region})")
    echo("  open ", safe(f"{proxy.address}/ui/"))
    echo("  Ctrl-C stops it")
    try:
        proxy.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.server_close()
    return 0
