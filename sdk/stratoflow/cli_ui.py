"""``stratoflow ui``: the web UI of a deployed stack, in the browser, through the local signing
proxy of ``stratoflow.local.ui_proxy`` (which says what it forwards and what it refuses)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stratoflow.local.ui_proxy import DEFAULT_PORT, SigningProxy


def cmd_ui(args: argparse.Namespace) -> int:
    from stratoflow.exceptions import StratoflowError
    from stratoflow.settings import get_settings

    settings = get_settings()
    api_url = args.api_url or settings.api_url
    if not api_url:
        raise StratoflowError("set STRATOFLOW_API_URL (the stack's API endpoint) or pass --api-url")
    try:
        proxy = SigningProxy(api_url, host=args.host, port=args.port, region=settings.region)
    except OSError as exc:
        raise StratoflowError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc} "
                              "(choose another port with --port; 0 picks a free one)") from exc
    proxy.verbose = args.verbose  # type: ignore[attr-defined]
    if proxy.transport._get_credentials() is None:
        print("warning: no AWS credentials found; requests go unsigned (an IAM-protected API refuses them)",
              file=sys.stderr)
    print(f"Stratoflow UI of {proxy.api_url} (requests signed with SigV4, region {settings.region})")
    print(f"  open {proxy.address}/ui/")
    print("  Ctrl-C stops it", flush=True)
    try:
        proxy.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.server_close()
    return 0


def register(subparsers: Any) -> None:
    """Add ``stratoflow ui`` to the CLI's subcommands."""
    p = subparsers.add_parser("ui", help="open the web UI of a deployed stack through a local SigV4-signing proxy")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"local port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; keep it local)")
    p.add_argument("--api-url", help="the stack's API endpoint (default: STRATOFLOW_API_URL)")
    p.add_argument("--verbose", "-v", action="store_true", help="print every forwarded request")
    p.set_defaults(fn=cmd_ui)
