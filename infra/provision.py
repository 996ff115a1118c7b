"""Provision template.yaml's tables, bucket, queues and schedule group into a local cloud.

    python infra/provision.py --endpoint-url http://127.0.0.1:5000   # a running moto server
    python infra/provision.py --moto                                  # a throwaway moto server: check + timing

Thin CLI over ``stratoflow.local.provision.provision_from_template`` (what ``stratoflow dev``
uses). It never provisions real AWS: ``sam deploy`` owns the stack there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint-url", help="the local cloud's endpoint (a moto server)")
    target.add_argument("--moto", action="store_true", help="start a moto server in this process, provision, stop")
    parser.add_argument("--template", type=Path, default=REPO_ROOT / "template.yaml")
    parser.add_argument("--table-prefix", default="stratoflow-dev")
    parser.add_argument("--bucket", default="stratoflow-dev")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="template parameter override (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "stratoflow-local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "stratoflow-local")
    import logging

    from stratoflow.local.provision import provision_from_template
    from stratoflow.settings import Settings

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    overrides = dict(p.split("=", 1) for p in args.param)
    server = None
    started = time.perf_counter()
    if args.moto:
        from stratoflow.local.moto_server import MotoServer

        server = MotoServer()
        server.start()
        endpoint = f"http://127.0.0.1:{server.port}"
    else:
        endpoint = args.endpoint_url
    moto_seconds = time.perf_counter() - started
    try:
        settings = Settings(backend="aws", aws_endpoint_url=endpoint, table_prefix=args.table_prefix,
                            bucket=args.bucket, region=args.region)
        report = provision_from_template(settings, args.template, parameters=overrides)
    finally:
        if server is not None:
            server.stop(5.0)
    if args.json:
        print(json.dumps({**report.as_dict(), "endpoint": endpoint, "moto_start_seconds": round(moto_seconds, 3)}))
    else:
        print(report.format())
        if server is not None:
            print(f"(moto server started in {moto_seconds:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
