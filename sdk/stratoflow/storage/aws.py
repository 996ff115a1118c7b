"""Creates the AWS clients Stratoflow uses, lazily, for the configured backend.

Nothing here runs at import time: moto (tests, the embedded backend) must be set up before the
first client is made.
"""

from __future__ import annotations

import threading
from typing import Any

from stratoflow.settings import Settings

EMBEDDED_CREDENTIALS = {"aws_access_key_id": "stratoflow-local", "aws_secret_access_key": "stratoflow-local"}  # nosec B105  # moto's placeholder keys for the in-process cloud, not a secret

_lock = threading.Lock()
_clients: dict[tuple[str, str, str | None, str], Any] = {}


def embedded_cloud(settings: Settings) -> Any | None:
    """The embedded cloud when the embedded backend is active, else None."""
    if settings.resolved_backend != "embedded":
        return None
    # cold start: moto loads only for the embedded backend
    from stratoflow.storage.embedded import get_embedded_cloud

    return get_embedded_cloud(settings.home / "embedded", fsync=settings.embedded_fsync)


def client(service: str, settings: Settings) -> Any:
    """A cached botocore client for ``service`` with Stratoflow's endpoint and region."""
    cloud = embedded_cloud(settings)
    key = (service, settings.region, settings.aws_endpoint_url, str(id(cloud)))
    with _lock:
        # Clients attached to an embedded cloud that was replaced (tests switch homes) are dead
        # weight holding that cloud's objects: drop them.
        for stale in [k for k in _clients if k[3] != key[3]]:
            del _clients[stale]
        existing = _clients.get(key)
        if existing is not None:
            return existing
        # cold start: boto3 loads on the first AWS call, not at import
        import boto3
        from botocore.config import Config

        # Checksums only where required: S3 bodies then stay plain bytes (journaled and replayed
        # as they are) instead of aws-chunked streams.
        config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=50,
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
        if cloud is not None:
            made = boto3.session.Session(**EMBEDDED_CREDENTIALS, region_name=settings.region).client(
                service, config=config)
            cloud.attach(made)
        else:
            made = boto3.session.Session(region_name=settings.region).client(
                service, endpoint_url=settings.aws_endpoint_url, config=config)
        _clients[key] = made
        return made


def clear_clients() -> None:
    with _lock:
        _clients.clear()
